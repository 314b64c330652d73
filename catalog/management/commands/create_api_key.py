"""Issue an API key for an organisation and print its secret once."""
from django.core.management.base import BaseCommand, CommandError
from django.utils.text import slugify

from catalog import services
from catalog.management.database import database_ready
from catalog.models import Organisation, Role


class Command(BaseCommand):
    help = "Create an API key; the secret is printed once and only its hash is stored."

    def add_arguments(self, parser):
        parser.add_argument("--org", required=True)
        parser.add_argument("--name", default="cli")
        parser.add_argument("--role", choices=[r.value for r in Role], default=Role.ADMIN)
        parser.add_argument("--create-org", action="store_true", help="create the organisation when absent")

    def handle(self, *args, **opts):
        database_ready()
        organisation = Organisation.objects.filter(slug=slugify(opts["org"])).first()
        if organisation is None:
            if not opts["create_org"]:
                raise CommandError(f"no organisation {opts['org']!r} (use --create-org)")
            organisation = services.organisation_create(slug=opts["org"], name=opts["org"])
        issued = services.api_key_create(organisation=organisation, name=opts["name"], role=opts["role"])
        self.stdout.write(issued.secret)
