"""The protected set a scan job matches against, written for the executors (spark/references.py).

The database is read once, on the submitting machine, when the job starts:
the organisation's indexes (the registry's, current with the database), the
records of the images in scope (the organisation's, or one collection's) and
the settings' thresholds. Executors then run the whole matching cascade with
no database; the loader re-reads every reported image before writing a match
(matching/bulk/load.py), so an image deleted during the scan is never reported.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from catalog.models import ProtectedImage
from matching.bulk.models import BulkJob
from matching.encodings import to_unsigned64
from matching.engine import default_thresholds
from matching.index_registry import registry
from matching.cnn import embedding_model
from spark.references import write_snapshot

__all__ = ["scan_references_write"]


def scan_references_write(*, job: BulkJob) -> Path:
    """Write the snapshot of the job's protected set under its work directory; returns the directory."""
    dest = job.work_dir / f"references-{job.attempts}"
    shutil.rmtree(dest, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    indexes = registry.get(job.organisation_id)
    scope = ProtectedImage.objects.filter(organisation_id=job.organisation_id, status=ProtectedImage.Status.INDEXED)
    if job.collection_id:
        scope = scope.filter(collection_id=job.collection_id)
    rows = [
        {"id": pk, "sha256_bytes": sha_bytes, "sha256_pixels": sha_pixels,
         "phash": to_unsigned64(phash) if phash is not None else None, "pdq": pdq or None,
         "pdq_quality": quality, "phash_max": phash_max, "file": file, "features": features,
         "mark": mark or None, "mark_info": mark_info}
        for pk, sha_bytes, sha_pixels, phash, pdq, quality, phash_max, file, features, mark, mark_info
        in scope.values_list(
            "id", "sha256_bytes", "sha256_pixels", "phash", "pdq", "pdq_quality",
            "collection__phash_max_distance", "file", "features", "mark", "mark_info").iterator(chunk_size=10000)
    ]
    return write_snapshot(dest, rows=rows, indexes=indexes, thresholds=default_thresholds(),
                          embedding_model=embedding_model())
