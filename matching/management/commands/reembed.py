"""reembed [--org SLUG] [--limit N] [--dry-run]  (docs/cli.md).

Computes again the CNN vectors that another network made (a new head) or that were never made (the
CNN was off when the picture was indexed): until then such pictures are left out of the CNN index
and match on their digests and hashes only (matching/reembed.py).
"""
from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count

from catalog.management.database import database_ready
from catalog.models import Organisation
from matching.cnn import embedding_model
from matching.reembed import reembed, reembed_suspects, stale_images, stale_suspects


class Command(BaseCommand):
    help = "Compute again the CNN vectors of protected images that another network (or none) made."

    def add_arguments(self, parser):
        parser.add_argument("--org", default=None, help="only this organisation (slug)")
        parser.add_argument("--limit", type=int, default=None,
                            help="at most this many images (kept suspects are left for a run without it)")
        parser.add_argument("--dry-run", action="store_true", help="count them per organisation, change nothing")

    def handle(self, *args, **opts):
        database_ready()
        model = embedding_model()
        if model is None:
            raise CommandError("The CNN is disabled (IMGPROTECT_CNN_ENABLED=false): there is no network to embed "
                               "with, and no vector is used.")
        if opts["limit"] is not None and opts["limit"] < 1:
            raise CommandError("--limit must be a positive number.")
        organisation_id = None
        if opts["org"]:
            organisation_id = Organisation.objects.filter(slug=opts["org"]).values_list("pk", flat=True).first()
            if organisation_id is None:
                raise CommandError(f"No organisation {opts['org']!r}.")
        stale = stale_images(organisation_id=organisation_id, model=model)
        counts = {row["organisation__slug"]: row["n"] for row in
                  stale.order_by().values("organisation__slug").annotate(n=Count("pk"))}
        total = sum(counts.values())
        self.stdout.write(f"network {model}: {total} image(s) hold vectors of another network or none")
        for slug, n in sorted(counts.items()):
            self.stdout.write(f"  {slug}: {n}")
        suspects = stale_suspects(organisation_id=organisation_id, model=model).count()
        self.stdout.write(f"{suspects} kept suspect(s) hold vectors of another network")
        if opts["dry_run"]:
            return
        if suspects and opts["limit"] is None:
            done = reembed_suspects(organisation_id=organisation_id)
            self.stdout.write(f"re-embedded {done.done} suspect(s) from their stored uploads; {done.without_pixels} "
                              "without stored pixels are judged on their digests and hashes")
        if not total:
            return
        started = time.perf_counter()
        result = reembed(organisation_id=organisation_id, limit=opts["limit"])
        elapsed = time.perf_counter() - started
        slugs = dict(Organisation.objects.filter(pk__in=list(result.done)).values_list("pk", "slug"))
        self.stdout.write(f"re-embedded {result.total} image(s)"
                          + "".join(f"; {slugs.get(org, org)}: {n}" for org, n in sorted(result.done.items()))
                          + f" in {elapsed:.1f} s (the model's start included)")
        for image_id, key, why in result.failed:
            self.stderr.write(f"image {image_id} ({key}) not re-embedded: {why}")
        if result.failed:
            raise CommandError(f"{len(result.failed)} image(s) could not be re-embedded (listed above); they "
                               "still match on their digests and hashes.")
