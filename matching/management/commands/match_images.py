"""match_images --org ORG [--collection NAME] [--top-k K] [--format jsonl] QUERY...  (docs/cli.md)."""
from __future__ import annotations

import json
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils.text import slugify

from catalog.management.database import database_ready
from catalog.models import Collection, Organisation
from catalog.sources import iter_source
from matching.core.errors import ImageError
from matching.core.loading import load_image
from matching.engine import find_candidates


class Command(BaseCommand):
    help = "Match query images (files or directories) against an organisation's protected images."

    def add_arguments(self, parser):
        parser.add_argument("--org", required=True)
        parser.add_argument("--collection", help="only match this collection (name or slug)")
        parser.add_argument("--top-k", type=int, default=5)
        parser.add_argument("--format", choices=["text", "jsonl"], default="text")
        parser.add_argument("queries", nargs="+", metavar="QUERY")

    def handle(self, *args, **opts):
        if opts["top_k"] < 1:
            raise CommandError("--top-k must be at least 1")
        database_ready()
        organisation = Organisation.objects.filter(slug=slugify(opts["org"])).first()
        if organisation is None:
            raise CommandError(f"no organisation {opts['org']!r}")
        collection_id = None
        if opts["collection"]:
            name = opts["collection"]
            collection = (Collection.objects.filter(organisation=organisation, slug=slugify(name)).first()
                          or Collection.objects.filter(organisation=organisation, name=name).first())
            if collection is None:
                raise CommandError(f"no collection {name!r} in {organisation.slug}")
            collection_id = collection.pk
        for label, read in self._queries(opts["queries"]):
            started = time.perf_counter()
            record: dict = {"query": label}
            try:
                loaded = load_image(read(), max_bytes=settings.IMGPROTECT_MAX_UPLOAD_BYTES,
                                    max_pixels=settings.IMGPROTECT_MAX_PIXELS)
                candidates, _ = find_candidates(organisation_id=organisation.pk, loaded=loaded,
                                                collection_id=collection_id, top_k=opts["top_k"])
                record["matches"] = [
                    {k: v for k, v in c.as_json().items() if k in {"key", "collection", "score", "match", "verdict",
                                                                   "region"}}
                    for c in candidates[: opts["top_k"]]
                ]
            except (ImageError, OSError) as exc:
                record["error"] = getattr(exc, "reason", None) or str(exc)
            record["elapsed_ms"] = round((time.perf_counter() - started) * 1000, 3)
            self._emit(record, opts["format"])

    def _queries(self, queries: list[str]):
        for query in queries:
            path = Path(query)
            if path.is_dir():
                for item in iter_source(query, max_bytes=settings.IMGPROTECT_MAX_UPLOAD_BYTES):
                    yield item.key, item.read
            else:
                yield query, path.read_bytes

    def _emit(self, record: dict, fmt: str) -> None:
        if fmt == "jsonl":
            self.stdout.write(json.dumps(record))
            return
        if "error" in record:
            self.stdout.write(f"{record['query']}: error: {record['error']}")
            return
        best = next((m for m in record["matches"] if m["match"]), None)
        summary = f"{best['verdict']} of {best['collection']}/{best['key']} ({best['score']:.3f})" if best else "no match"
        self.stdout.write(f"{record['query']}: {summary}  [{record['elapsed_ms']:.1f} ms]")
