"""cases_backfill [--org ORG]: put matches written before cases existed into their cases (docs/cases.md)."""
from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.utils.text import slugify

from catalog.management.database import database_ready
from catalog.models import Organisation
from matching.cases import cases_backfill
from matching.models import Case, Match


class Command(BaseCommand):
    help = ("Group existing matches into cases by the site or scanned source their copies came from. "
            "Idempotent: run it once after upgrading; matches already in a case are left alone.")

    def add_arguments(self, parser):
        parser.add_argument("--org", help="only this organisation (slug)")

    def handle(self, *args, **opts):
        database_ready()
        organisation = None
        if opts["org"]:
            organisation = Organisation.objects.filter(slug=slugify(opts["org"])).first()
            if organisation is None:
                raise CommandError(f"no organisation {opts['org']!r}")
        joined = cases_backfill(organisation=organisation)
        scope = Match.objects.filter(organisation=organisation) if organisation else Match.objects.all()
        cases = Case.objects.filter(organisation=organisation) if organisation else Case.objects.all()
        left = scope.filter(case__isnull=True).count()
        self.stdout.write(f"{joined} match(es) joined a case; {cases.count()} case(s) in all; "
                          f"{left} match(es) with no known source stay outside any case.")
