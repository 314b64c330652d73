"""import_hash_list --org ORG --name NAME [--description TEXT] [--alert-emails LIST] FILE  (docs/hash-exchange.md)."""
from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.utils.text import slugify

from catalog.management.database import database_ready
from catalog.models import Organisation
from imgprotect.errors import ServiceError
from matching.hashlists import MAX_IMPORT_BYTES, hash_list_import


class Command(BaseCommand):
    help = "Import a PDQ hash list (one hash a line, 'pdq <hash>' lines, or CSV) as a hash-only bank."

    def add_arguments(self, parser):
        parser.add_argument("--org", required=True)
        parser.add_argument("--name", required=True)
        parser.add_argument("--description", default="")
        parser.add_argument("--alert-emails", default="")
        parser.add_argument("file")

    def handle(self, *args, **opts):
        database_ready()
        organisation = Organisation.objects.filter(slug=slugify(opts["org"])).first()
        if organisation is None:
            raise CommandError(f"no organisation {opts['org']!r}")
        path = Path(opts["file"])
        try:
            if path.stat().st_size > MAX_IMPORT_BYTES:
                raise CommandError(f"{path}: over {MAX_IMPORT_BYTES // (1024 * 1024)} MB; split the list")
            data = path.read_bytes()
        except OSError as exc:
            raise CommandError(f"{path}: {exc.strerror or exc}") from None
        try:
            hash_list = hash_list_import(organisation=organisation, name=opts["name"], data=data,
                                         description=opts["description"], alert_emails=opts["alert_emails"])
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(f"imported {hash_list.entries.count()} hashes into hash list {hash_list.name!r} "
                          f"(id {hash_list.pk})")
