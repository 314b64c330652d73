"""index_images --org ORG --collection NAME SOURCE  (DESIGN.md §5)."""
from __future__ import annotations

import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from catalog import services
from catalog.models import ProtectedImage
from catalog.sources import SourceError, iter_source
from matching.core.errors import ImageError, RetryableError
from matching.core.loading import load_image


class Progress:
    """A one-line progress bar on a terminal; silent otherwise."""

    def __init__(self, stream, total: int | None = None) -> None:  # type: ignore[no-untyped-def]
        self.stream = stream
        self.enabled = stream.isatty()
        self.total = total
        self.started = time.monotonic()

    def update(self, done: int, failed: int) -> None:
        if not self.enabled:
            return
        rate = done / max(time.monotonic() - self.started, 1e-6)
        if self.total:
            width = 30
            filled = int(width * done / self.total)
            bar = "#" * filled + "-" * (width - filled)
            left = (self.total - done) / rate if rate else 0
            text = f"\r[{bar}] {done}/{self.total} {rate:.0f}/s failed {failed} eta {left:.0f}s"
        else:
            text = f"\r{done} files {rate:.0f}/s failed {failed}"
        self.stream.write(text)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")


class Command(BaseCommand):
    help = "Index every image under SOURCE (a directory or s3://bucket/prefix) into a collection."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--org", required=True, help="organisation slug (created when absent)")
        parser.add_argument("--collection", required=True, help="collection name or slug (created when absent)")
        parser.add_argument("source")

    def handle(self, *args, **opts):  # type: ignore[no-untyped-def]
        organisation = services.organisation_get_or_create(slug=opts["org"])
        collection = services.collection_get_or_create(organisation=organisation, name=opts["collection"])
        max_bytes = settings.IMGPROTECT_MAX_UPLOAD_BYTES
        try:
            items = list(iter_source(opts["source"], max_bytes=max_bytes))
        except SourceError as exc:
            raise CommandError(str(exc)) from exc
        existing = set(ProtectedImage.objects.filter(collection=collection).values_list("key", flat=True))
        progress = Progress(sys.stderr, total=len(items))
        indexed = unchanged = failed = 0
        started = time.monotonic()
        for n, item in enumerate(items, 1):
            if item.key in existing:
                unchanged += 1
            else:
                try:
                    data = item.read()
                    loaded = load_image(data, max_bytes=max_bytes, max_pixels=settings.IMGPROTECT_MAX_PIXELS)
                    services.protected_image_add(collection=collection, key=item.key, data=data, loaded=loaded,
                                                 filename=item.key.rsplit("/", 1)[-1], index_now=True)
                    indexed += 1
                except (ImageError, services.ServiceError, RetryableError, OSError) as exc:
                    failed += 1
                    message = getattr(exc, "reason", None) or getattr(exc, "message", None) or str(exc)
                    progress.close()  # keep the error on its own line
                    self.stderr.write(f"skipped {item.key}: {message}")
            progress.update(n, failed)
        progress.close()
        elapsed = time.monotonic() - started
        self.stdout.write(
            f"indexed {indexed}, unchanged {unchanged}, failed {failed} of {len(items)} files "
            f"into {organisation.slug}/{collection.slug} in {elapsed:.1f}s"
        )
