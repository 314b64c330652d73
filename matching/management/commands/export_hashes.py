"""export_hashes --org ORG --collection NAME [--format te|pdq|csv] [--variants] [--output FILE]  (docs/hash-exchange.md)."""
from __future__ import annotations

import sys

from django.core.management.base import BaseCommand, CommandError
from django.utils.text import slugify

from catalog.management.database import database_ready
from catalog.models import Collection, Organisation
from matching.core.hashlists import EXPORT_FORMATS, export_text
from matching.hashlists import collection_hash_rows


class Command(BaseCommand):
    help = "Write a collection's PDQ hashes in a format Hasher-Matcher-Actioner and threatexchange read."

    def add_arguments(self, parser):
        parser.add_argument("--org", required=True)
        parser.add_argument("--collection", required=True, help="name or slug")
        parser.add_argument("--format", choices=EXPORT_FORMATS, default="te",
                            help="te: 'pdq <hash>' lines (threatexchange's file exchange); pdq: one hash a line; "
                                 "csv: pdq,quality,image_id,key,collection,label")
        parser.add_argument("--variants", action="store_true", help="also each image's 7 flips and rotations")
        parser.add_argument("--output", "-o", help="file to write (default: standard output)")

    def handle(self, *args, **opts):
        database_ready()
        organisation = Organisation.objects.filter(slug=slugify(opts["org"])).first()
        if organisation is None:
            raise CommandError(f"no organisation {opts['org']!r}")
        name = opts["collection"]
        collection = (Collection.objects.filter(organisation=organisation, slug=slugify(name)).first()
                      or Collection.objects.filter(organisation=organisation, name=name).first())
        if collection is None:
            raise CommandError(f"no collection {opts['collection']!r} in {organisation.slug}")
        lines = export_text(collection_hash_rows(collection=collection, variants=opts["variants"]), opts["format"])
        out = open(opts["output"], "w", encoding="utf-8", newline="") if opts["output"] else sys.stdout
        try:
            for line in lines:
                out.write(line)
        finally:
            if out is not sys.stdout:
                out.close()
