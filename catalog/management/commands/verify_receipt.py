"""Check a downloaded deletion receipt's signature against this deployment's key (docs/receipts.md)."""
import json
import sys

from django.core.management.base import BaseCommand, CommandError

from catalog.receipts import receipt_verify


class Command(BaseCommand):
    help = ("Say whether a deletion receipt (the JSON downloaded from the portal, the admin or the API) is "
            "valid: signed with this deployment's SECRET_KEY (or one of SECRET_KEY_FALLBACKS) and unchanged. "
            "Prints 'valid' or 'invalid' and why; exits 1 when invalid. '-' reads standard input.")

    def add_arguments(self, parser):
        parser.add_argument("file", help="the receipt's JSON file, or - for standard input")

    def handle(self, *args, **opts):
        try:
            if opts["file"] == "-":
                text = sys.stdin.read()
            else:
                with open(opts["file"], encoding="utf-8") as handle:
                    text = handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"cannot read {opts['file']}: {exc}") from exc
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise CommandError(f"{opts['file']} is not JSON: {exc}") from exc
        result = receipt_verify(document)
        self.stdout.write(str(result))
        if not result.valid:
            sys.exit(1)
