"""Loading a bulk job's Parquet output into the database, in batches, idempotently.

Index jobs insert ``ProtectedImage`` rows: on PostgreSQL with ``COPY`` into a
temporary table and one ``INSERT ... ON CONFLICT (collection_id, key) DO
NOTHING``; elsewhere with ``bulk_create(ignore_conflicts=True)``. The
(collection, key) unique constraint is what makes a second load of the same
output a no-op. Scan jobs write the match reports the executors' matcher decided
(the whole cascade, spark/compute.py), with region, edit report and evidence,
skipping (suspect, protected image) pairs already reported, and link them to the
job, whose alerts go out once the whole output is in (one summary per collection).
"""
from __future__ import annotations

import functools
import io
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from django.core.files.base import ContentFile
from django.db import connection, models, transaction
from django.db.models import F

from catalog.models import Collection, ProtectedImage
from catalog.deletion import stored_files_delete
from catalog.services import index_generation_bump
from imgprotect.dispatch import enqueue_on_commit
from matching.bulk.models import BulkJob, BulkJobError, WatchKey
from matching.cases import cases_attach
from matching.engine import find_candidates
from matching.encodings import embedding_to_bytes
from matching.hashlists import HashListHit, hash_list_hits
from matching.models import HashListEntry, Match, Verdict
from matching.protection import ReferenceSignals, apply_reference_signals
from matching.retro import recheck_queue_since
from matching.review import review_auto_resolve
from matching.suspects import suspect_signals_keep_scan

log = logging.getLogger(__name__)

BATCH_ROWS = 2000
SCAN_TOP_K = 5


def output_files(work_dir: Path) -> list[Path]:
    """Committed Parquet files of every run (a killed run's unfinished tasks sit under ``_temporary``)."""
    return sorted(f for run in sorted((work_dir / "output").glob("run-*")) for f in run.glob("*.parquet"))


def output_batches(work_dir: Path, batch_rows: int = BATCH_ROWS) -> Iterator[list[dict[str, Any]]]:
    import pyarrow as pa  # lazy: only loaders need Arrow
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    files = output_files(work_dir)
    if not files:
        return
    # Every file's columns: a job resumed across an upgrade has runs written with fewer columns
    # (their rows read them as null), and the first file alone must not decide what the rest keep.
    schema = pa.unify_schemas([pq.read_schema(f) for f in files])
    dataset = ds.dataset([str(f) for f in files], format="parquet", schema=schema)
    for batch in dataset.to_batches(batch_size=batch_rows):
        if batch.num_rows:
            yield batch.to_pylist()


def suspect_key(source: str, key: str) -> str:
    """Where a scanned image came from: the source joined with its key, the key kept exactly."""
    return f"{source.rstrip('/')}/{key}"


def _record_errors(job: BulkJob, errors: list[tuple[str, str, str]]) -> None:
    if errors:
        BulkJobError.objects.bulk_create(
            [BulkJobError(job=job, key=key, code=code, reason=reason) for key, code, reason in errors],
            ignore_conflicts=True, batch_size=1000,
        )


def _split(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[tuple[str, str, str]]]:
    ok, errors, seen = [], [], set()
    for row in rows:
        if row["key"] in seen:  # a task retried after committing; the first copy counts
            continue
        seen.add(row["key"])
        if row["error_code"] is None:
            ok.append(row)
        else:
            errors.append((row["key"], row["error_code"], row["error_reason"] or row["error_code"]))
    return ok, errors


# --- index jobs ----------------------------------------------------------------------------

def _copy_text(field: models.Field, obj: ProtectedImage) -> str:
    """One value in PostgreSQL COPY text format."""
    if isinstance(field, models.JSONField):
        value = getattr(obj, field.attname)
        text = None if value is None else json.dumps(value, cls=field.encoder)
    elif isinstance(field, models.BinaryField):
        value = getattr(obj, field.attname)
        text = None if value is None else "\\x" + bytes(value).hex()
    else:
        value = field.get_db_prep_save(field.pre_save(obj, add=True), connection)
        text = None if value is None else str(value)
    if text is None:
        return "\\N"
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _insert_postgresql(images: list[ProtectedImage]) -> int:
    fields = [f for f in ProtectedImage._meta.concrete_fields if not f.primary_key]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in fields)
    table = quote(ProtectedImage._meta.db_table)
    buffer = io.StringIO()
    for image in images:
        buffer.write("\t".join(_copy_text(f, image) for f in fields))
        buffer.write("\n")
    buffer.seek(0)
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TEMP TABLE bulk_stage ON COMMIT DROP AS SELECT {columns} FROM {table} WITH NO DATA")
        cursor.cursor.copy_expert(f"COPY bulk_stage ({columns}) FROM STDIN", buffer)
        cursor.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM bulk_stage "
                       f"ON CONFLICT (collection_id, key) DO NOTHING")
        inserted = max(cursor.rowcount, 0)
        # ON COMMIT DROP alone leaves it for the next batch when an outer transaction holds the commit back.
        cursor.execute("DROP TABLE bulk_stage")
        return inserted


def _insert(collection: Collection, images: list[ProtectedImage]) -> int:
    """Insert what is not there yet; returns how many rows were new. Call inside a transaction."""
    if not images:
        return 0
    if connection.vendor == "postgresql":
        return _insert_postgresql(images)
    keys = [image.key for image in images]
    before = ProtectedImage.objects.filter(collection=collection, key__in=keys).count()
    ProtectedImage.objects.bulk_create(images, ignore_conflicts=True, batch_size=500)
    return ProtectedImage.objects.filter(collection=collection, key__in=keys).count() - before


def _image(collection: Collection, row: dict[str, Any]) -> ProtectedImage:
    image = ProtectedImage(
        organisation_id=collection.organisation_id, collection=collection, key=row["key"],
        size_bytes=row["size"], sha256_bytes=row["sha256_bytes"], sha256_pixels=row["sha256_pixels"],
        width=row["width"], height=row["height"], format=row["format"],
    )
    image.file.name = row["stored_name"]
    signals = json.loads(row["signals"])
    # The vector has its own column, in the matcher's byte format, not a JSON list in ``signals``.
    vector = signals.pop("embedding", None)
    embedding = embedding_to_bytes(np.asarray(vector, dtype=np.float32)) if vector is not None else None
    # The same columns the in-process path fills; the executors already stored the features file.
    # An output written before the network was recorded says "": its vectors wait for ``reembed``.
    apply_reference_signals(image, ReferenceSignals(signals=signals, embedding=embedding, features=None,
                                                    embedding_model=row.get("embedding_model") or ""))
    if row.get("features_name"):
        image.features.name = row["features_name"]
    if row.get("keypoints") is not None:  # absent from an output written before the column was
        image.keypoint_count = row["keypoints"]
    if row.get("flags") is not None:  # the picture's own flags; near-duplicates are not looked for in bulk
        image.protection_flags = json.loads(row["flags"])
    if row.get("mark_name") and row.get("mark_info"):  # the logo's mark, as the in-process path stores it
        image.mark.name = row["mark_name"]
        image.mark_info = json.loads(row["mark_info"])
        if row.get("mark_embeddings"):
            image.mark_embeddings = embedding_to_bytes(np.asarray(row["mark_embeddings"], dtype=np.float32))
    return image


def _delete_unreferenced(names: set[str]) -> None:
    used = set(ProtectedImage.objects.filter(file__in=names).values_list("file", flat=True))
    used |= set(ProtectedImage.objects.filter(features__in=names).values_list("features", flat=True))
    used |= set(ProtectedImage.objects.filter(mark__in=names).values_list("mark", flat=True))
    stored_files_delete(sorted(names - used))


def load_index(job: BulkJob, heartbeat: Callable[[], None]) -> int:
    """Insert the job's images into its collection; returns how many rows were new."""
    collection = job.collection
    assert collection is not None
    inserted = 0
    # Rows made by an interrupted attempt count too: their re-check was never queued.
    since = job.created
    for rows in output_batches(job.work_dir):
        heartbeat()
        ok, errors = _split(rows)
        present = set(ProtectedImage.objects.filter(collection=collection, key__in=[r["key"] for r in ok])
                      .values_list("key", flat=True))
        ok = [r for r in ok if r["key"] not in present]  # loaded by an earlier attempt
        # As protected_image_add: one picture is protected once per collection, under its first key.
        digests = {r["sha256_pixels"] for r in ok}
        owner = dict(ProtectedImage.objects.filter(collection=collection, sha256_pixels__in=digests)
                     .values_list("sha256_pixels", "key"))
        images = []
        orphans: set[str] = set()
        for row in ok:
            first = owner.setdefault(row["sha256_pixels"], row["key"])
            if first != row["key"]:
                errors.append((row["key"], "duplicate_image",
                               f"The same picture is already protected in this collection as {first!r}."))
                orphans.update(name for name in (row["stored_name"], row["features_name"], row.get("mark_name")) if name)
                continue
            images.append(_image(collection, row))
        with transaction.atomic():
            new = _insert(collection, images)
            _record_errors(job, errors)
            if orphans:
                transaction.on_commit(functools.partial(_delete_unreferenced, orphans))
        inserted += new
    # One index generation for the whole load, not one per batch: every matching process reconciles
    # with the database when the generation moves, and a load of millions should cost them one pass.
    # Bumped even when this attempt inserted nothing, for rows an interrupted attempt left unannounced.
    index_generation_bump(organisation_id=collection.organisation_id)
    recheck_queue_since(collection=collection, since=since)
    return inserted


# --- scan jobs -------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Found:
    """One positive decision for a scanned image, with its evidence PNG when the executor drew one."""

    image: ProtectedImage
    verdict: str
    score: float
    signal_scores: dict[str, Any]
    region: dict[str, Any] | None
    edit_report: dict[str, Any] | None
    evidence: bytes | None = None


def _match(job: BulkJob, suspect: str, found: _Found) -> Match:
    return Match(
        source_check=None, suspect_key=suspect, organisation_id=job.organisation_id, protected_image=found.image,
        score=found.score, verdict=found.verdict, signal_scores=found.signal_scores, region=found.region,
        edit_report=found.edit_report,
    )


def _in_scope(job: BulkJob, ids: set[int]) -> dict[int, ProtectedImage]:
    """The reported images that still exist in the scan's scope: the database has the last word."""
    rows = ProtectedImage.objects.filter(pk__in=ids, organisation_id=job.organisation_id,
                                         status=ProtectedImage.Status.INDEXED)
    if job.collection_id:
        rows = rows.filter(collection_id=job.collection_id)
    return {image.pk: image for image in rows}


def _executor_decisions(job: BulkJob, rows: list[dict[str, Any]]) -> dict[str, list[_Found]]:
    """Row key -> the positives the executors' matcher decided (the whole cascade, as a check)."""
    decided = {row["key"]: json.loads(row["matches"]) for row in rows if row.get("matches") is not None}
    images = _in_scope(job, {int(d["reference_id"]) for ds in decided.values() for d in ds})
    out: dict[str, list[_Found]] = {}
    for row in rows:
        if row["key"] not in decided:
            continue
        evidence = row.get("evidence") or []
        found = []
        for n, d in enumerate(decided[row["key"]]):
            image = images.get(int(d["reference_id"]))
            if image is None:
                continue  # deleted, or moved out of scope, while the scan ran
            found.append(_Found(image, d["verdict"], float(d["score"]), d["signal_scores"], d.get("region"),
                                d.get("edit"), evidence[n] if n < len(evidence) else None))
        out[row["key"]] = found
    return out


def _signal_decisions(job: BulkJob, row: dict[str, Any]) -> list[_Found]:
    """Output of a job run without a reference snapshot (an older attempt): digests and hashes only."""
    candidates, _ = find_candidates(organisation_id=job.organisation_id, signals=json.loads(row["signals"]),
                                    collection_id=job.collection_id, top_k=SCAN_TOP_K)
    return [_Found(c.image, c.decision.verdict, c.decision.score, c.decision.signal_scores, c.decision.region,
                   c.decision.edit) for c in candidates if c.decision.is_match]


def _hash_list_match(job: BulkJob, suspect: str, hit: HashListHit) -> Match:
    return Match(source_check=None, suspect_key=suspect, organisation_id=job.organisation_id,
                 hash_list_entry=hit.entry, score=hit.score, verdict=Verdict.HASH_LIST,
                 signal_scores=hit.signal_scores())


def _hash_list_pairs(job: BulkJob, scanned: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, HashListHit]]:
    """(suspect, hit) for each scanned image (its suspect key and decoded signals) whose PDQ is on one of
    the organisation's hash lists and not reported before; a scan limited to one collection leaves the
    lists out (as a check does)."""
    if job.collection_id:
        return []
    pairs = [(suspect, hit) for suspect, signals in scanned
             for hit in hash_list_hits(organisation_id=job.organisation_id, signals=signals)]
    reported = set(
        Match.objects.filter(organisation_id=job.organisation_id, source_check__isnull=True,
                             hash_list_entry__isnull=False, suspect_key__in=[s for s, _ in pairs])
        .values_list("suspect_key", "hash_list_entry_id"))
    return [(s, h) for s, h in pairs if (s, h.entry.pk) not in reported]


def load_scan(job: BulkJob, heartbeat: Callable[[], None]) -> None:
    """Write match reports (with region, edit report and evidence, as checks do) for every scanned image."""
    for rows in output_batches(job.work_dir):
        heartbeat()
        ok, errors = _split(rows)
        limit = Match._meta.get_field("suspect_key").max_length
        assert limit is not None
        by_executors = _executor_decisions(job, ok)
        found: list[tuple[str, list[_Found]]] = []
        scanned: list[tuple[str, dict[str, Any]]] = []  # kept for retroactive re-checks (matching/suspects.py)
        for row in ok:
            suspect = suspect_key(job.source, row["key"])
            if len(suspect) > limit:
                errors.append((row["key"], "invalid_key", "The image's location is longer than 1024 characters."))
                continue
            if row.get("signals"):
                scanned.append((suspect, json.loads(row["signals"])))
            positives = by_executors[row["key"]] if row["key"] in by_executors else _signal_decisions(job, row)
            if positives:
                found.append((suspect, positives))
        reported = set(
            Match.objects.filter(organisation_id=job.organisation_id, source_check__isnull=True,
                                 suspect_key__in=[s for s, _ in found])
            .values_list("suspect_key", "protected_image_id")
        )
        pairs = [(suspect, f) for suspect, positives in found for f in positives
                 if (suspect, f.image.pk) not in reported]
        listed = _hash_list_pairs(job, scanned)
        written: list[str] = []  # evidence files of this batch, removed if it rolls back
        try:
            with transaction.atomic():
                created = Match.objects.bulk_create([_match(job, suspect, f) for suspect, f in pairs])
                for match, (_, f) in zip(created, pairs, strict=True):
                    if f.evidence:
                        match.evidence.save("evidence.png", ContentFile(f.evidence), save=True)
                        written.append(match.evidence.name)
                alive = set(HashListEntry.objects.select_for_update().filter(pk__in=[h.entry.pk for _, h in listed])
                            .values_list("pk", flat=True))  # a list deleted during the scan reports nothing
                created += Match.objects.bulk_create([_hash_list_match(job, suspect, h) for suspect, h in listed
                                                      if h.entry.pk in alive])
                _record_errors(job, errors)
                suspect_signals_keep_scan(organisation_id=job.organisation_id, collection_id=job.collection_id,
                                          scanned=scanned)
                review_auto_resolve(matches=created)
                cases_attach(matches=created, scan_source=job.source)  # one case per scanned source
                suspects = {m.suspect_key for m in created}
                BulkJob.objects.filter(pk=job.pk).update(matched=F("matched") + len(suspects),
                                                         match_reports=F("match_reports") + len(created))
                job.matches.add(*created)
                if job.watch_id is not None:
                    _remember_keys(job.watch_id, rows)
        except BaseException:
            stored_files_delete(written)
            raise
    # One summary per scan and collection (an e-mail, a webhook event), once every batch is in:
    # not one alert per batch, nor per match (docs/bulk.md).
    enqueue_on_commit("workers.bulk.send_scan_summary", job.pk)


# Outcomes worth another try at the watch's next run (a passing network error, a bug since fixed).
RETRIED_CODES = frozenset({"read_error", "internal_error"})


def _remember_keys(watch_id: int, rows: list[dict[str, Any]]) -> None:
    """The watch's later runs skip these keys: scanned, or unusable for good (corrupt, too large...)."""
    limit = WatchKey._meta.get_field("key").max_length or 0
    keys = {row["key"] for row in rows if row["error_code"] not in RETRIED_CODES and len(row["key"]) <= limit}
    WatchKey.objects.bulk_create([WatchKey(watch_id=watch_id, key=key) for key in sorted(keys)],
                                 ignore_conflicts=True, batch_size=1000)
