"""Image -> 256-d L2-normalised embedding for copy detection (docs/cnn.md, docs/matching.md).

One :class:`Embedder` per process and per (backbone weights, head) pair, built
under a lock by :func:`get_embedder`. The model is one ``tf.function``
(EfficientNet-Lite0 cut at ``block15_project_conv``, then the trained head of
:mod:`.head`). In float32 it runs as that function converted once to a LiteRT
flatbuffer, on XNNPACK (:class:`_LiteRunner`: the same vectors within 1e-6,
1.5x faster than TensorFlow on an AVX2 CPU; docs/training/embedder.md); in
bfloat16 it runs in TensorFlow, whose oneDNN does the mixed precision.
TensorFlow is imported on first use; its thread pools (and the interpreters'
threads) are set from ``CnnConfig.tf_threads`` (:mod:`.config`; default 1: one
worker process per core, the deployment the throughput target is stated for)
before the first model is built.

Inputs are RGB PIL images of any size: the whole frame is resized to 224x224
(``backbone.preprocess``), so a tiny image is simply upscaled. An aspect ratio
beyond 1:8 is padded first (mean colour, centred) so a 1x400 strip does not
become a 224-pixel smear; an image with no pixels raises ``ImageTooSmall``.
"""
from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ..errors import ImageTooSmall
from .config import PRECISIONS, current
from .efficientnet_lite import INPUT_SHAPE
from .head import DEFAULT_HEAD_PATH, EMBEDDING_DIM, FEATURE_LAYER, META_KEY, HeadWeights, head_tf, read_head
from .weights import PTH_SHA256, WeightsError, default_weights_path

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

__all__ = [
    "RUNTIMES",
    "CORNER_THIRDS",
    "CROP_WINDOWS",
    "MAX_ASPECT",
    "THIRDS",
    "Embedder",
    "configure_tf_threads",
    "precision",
    "resolve_precision",
    "crop_boxes",
    "feature_maps",
    "get_embedder",
    "model_id",
    "prepare",
]

log = logging.getLogger(__name__)

MAX_ASPECT = 8.0
DEFAULT_BATCH_SIZE = 32
Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive), pixels of the image given

# Windows of embed_crops as (x0, y0, x1, y1) shares of width and height, the
# whole image first. Chosen by measurement (docs/training/report.md, "Partial
# copies"): with a held-out logo pasted at 15-25 % of the width into a photo,
# a 3x3 grid of thirds puts the logo at 45-75 % of one tile's width and ranks
# it first among 719 originals 67 % of the time (top 10: 89 %), against 42 %
# for 9 overlapping half-size tiles (same cost) and 36 % for a 2x2 grid (half
# the cost); 25 overlapping thirds reach 77 % but cost 2.6x the passes. Four
# more thirds, centred on the grid's inner corners, catch a logo that straddles
# a tile border: on the service benchmark (120 references) pasted logos found
# at rank 1 by the CNN alone went from 81 % to 84 %, by the whole cascade from
# 89 % to 91 % (docs/benchmarks.md), for 4 more passes in the partial-copy pass.
THIRDS = tuple((x / 3, y / 3, (x + 1) / 3, (y + 1) / 3) for y in range(3) for x in range(3))
CORNER_THIRDS = tuple((x / 6, y / 6, x / 6 + 1 / 3, y / 6 + 1 / 3) for y in (1, 3) for x in (1, 3))
CROP_WINDOWS: tuple[tuple[float, float, float, float], ...] = ((0.0, 0.0, 1.0, 1.0), *THIRDS, *CORNER_THIRDS)

# What runs the model: "litert" (the tf.function converted to a LiteRT flatbuffer, on XNNPACK;
# float32) or "tensorflow" (the tf.function itself; float32 or oneDNN's bfloat16).
RUNTIMES = ("litert", "tensorflow")

_threads_lock = threading.Lock()
_threads_set: int | None = None
_precision_set: str | None = None
_lock = threading.Lock()  # guards _truncated
_embedders_lock = threading.Lock()  # guards _embedders (held while an Embedder builds, which takes _lock)
_embedders: dict[tuple[str, str], "Embedder"] = {}
_truncated: dict[tuple[str, str], Callable[[npt.NDArray[Any]], Any]] = {}


def _cpu_has_bfloat16() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(requested: str) -> str:
    """``requested`` (one of ``PRECISIONS``) as the arithmetic to run: "auto" becomes
    "bfloat16" where the CPU has native bfloat16 instructions, else "float32"."""
    raw = requested.strip().lower() or "auto"
    if raw not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if raw == "auto":
        return "bfloat16" if _cpu_has_bfloat16() else "float32"
    return raw


def precision() -> str | None:
    """The arithmetic this process's models run in (``"bfloat16"``/``"float32"``), once configured."""
    return _precision_set


def configure_tf_threads(threads: int | None = None, *, precision: str | None = None) -> int:
    """Fix TensorFlow's intra- and inter-op pools and the convolutions' arithmetic (see
    ``config.PRECISIONS``), once per process; ``None`` takes this process's ``CnnConfig``.

    Must run before TensorFlow executes its first op; when something else in
    the process got there first the pools cannot change any more, which is
    logged, not raised (the embedding is the same, only the speed differs).
    The precision is a process-wide graph rewrite (oneDNN's automatic mixed
    precision), applied to every model the process builds afterwards.
    """
    global _threads_set, _precision_set
    with _threads_lock:
        if _threads_set is not None:
            return _threads_set
        config = current()
        wanted = threads if threads is not None else config.tf_threads
        if wanted < 1:
            raise ValueError(f"threads must be a positive integer, got {wanted!r}")
        arithmetic = resolve_precision(precision if precision is not None else config.precision)
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(wanted)
            tf.config.threading.set_inter_op_parallelism_threads(wanted)
        except RuntimeError as exc:
            log.warning("TensorFlow thread pools already initialised, keeping them (%s)", exc)
        tf.config.optimizer.set_experimental_options(
            {"auto_mixed_precision_onednn_bfloat16": arithmetic == "bfloat16"})
        _threads_set, _precision_set = wanted, arithmetic
        return wanted


def prepare(image: "Image.Image") -> "Image.Image":
    """RGB (alpha composited over white), padded to an aspect ratio of at most 1:8."""
    from PIL import Image

    w, h = image.size
    if w < 1 or h < 1:
        raise ImageTooSmall(f"The image is {w}x{h}; it has no pixels to embed.")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        rgb = Image.new("RGB", image.size, (255, 255, 255))
        rgb.paste(rgba, mask=rgba.getchannel("A"))
    else:
        rgb = image if image.mode == "RGB" else image.convert("RGB")  # never modified: no copy needed
    tw, th = max(w, math.ceil(h / MAX_ASPECT)), max(h, math.ceil(w / MAX_ASPECT))
    if (tw, th) == (w, h):
        return rgb
    fill = tuple(int(c) for c in np.asarray(rgb, dtype=np.float32).reshape(-1, 3).mean(axis=0))
    canvas = Image.new("RGB", (tw, th), fill)
    canvas.paste(rgb, ((tw - w) // 2, (th - h) // 2))
    return canvas


def crop_boxes(size: tuple[int, int],
               windows: Sequence[tuple[float, float, float, float]] = CROP_WINDOWS) -> list[Box]:
    """Pixel boxes of ``windows`` (shares) on an image of ``size``; every box at least 1x1."""
    w, h = size
    boxes = []
    for fx0, fy0, fx1, fy1 in windows:
        x0, y0 = round(fx0 * w), round(fy0 * h)
        boxes.append((x0, y0, max(x0 + 1, round(fx1 * w)), max(y0 + 1, round(fy1 * h))))
    return boxes


def _pixels(image: "Image.Image") -> npt.NDArray[Any]:
    """``(224, 224, 3)`` uint8: ``backbone.preprocess`` without its float normalisation, which
    the graph does (same float32 operations, so the same values, at a quarter of the copying)."""
    from PIL import Image

    return np.asarray(prepare(image).resize(INPUT_SHAPE[1::-1], Image.Resampling.BILINEAR), dtype=np.uint8)


def _batches(images: Sequence["Image.Image"], batch_size: int) -> Any:
    for start in range(0, len(images), batch_size):
        yield np.stack([_pixels(im) for im in images[start : start + batch_size]])


def truncated_backbone(weights_path: str | Path | None, layer: str = FEATURE_LAYER) -> Callable[[npt.NDArray[Any]], Any]:
    """EfficientNet-Lite0 up to ``layer`` (default ``FEATURE_LAYER``): batch (n, 224, 224, 3) ->
    (n, 7, 7, 320); a head that owns the last block takes ``head.feature_layer`` (7x7x192)."""
    key = (str(Path(weights_path or default_weights_path()).resolve()), layer)
    with _lock:
        run = _truncated.get(key)
        if run is None:
            configure_tf_threads()
            import keras
            import tensorflow as tf

            from .backbone import load_backbone

            full = load_backbone(weights_path, fused=True)
            cut = keras.Model(full.input, full.get_layer(layer).output)
            run = tf.function(lambda batch: cut(batch, training=False),
                              input_signature=[tf.TensorSpec((None, *INPUT_SHAPE), tf.float32)])
            _truncated[key] = run
    return run


def feature_maps(batch: npt.NDArray[Any], *, weights_path: str | Path | None = None,
                 layer: str = FEATURE_LAYER) -> npt.NDArray[Any]:
    """The head's input for a preprocessed batch: ``(n, 7, 7, 320)`` float32 at ``FEATURE_LAYER``,
    or the maps at another ``layer`` (training uses it)."""
    return np.asarray(truncated_backbone(weights_path, layer)(batch.astype(np.float32, copy=False)))


class _LiteRunner:
    """A converted model on LiteRT's interpreter: ``run(batch)`` as the ``tf.function`` would.

    An interpreter is not thread-safe, so each thread that embeds gets its own
    (the flatbuffer is shared, read-only); each keeps its tensors for the last
    batch size it saw and reallocates only when the size changes.
    """

    def __init__(self, model: bytes, threads: int) -> None:
        self._model = model
        self._threads = threads
        self._local = threading.local()

    def _interpreter(self) -> Any:
        """This thread's interpreter; its input and output tensor indices are kept beside it."""
        interpreter = getattr(self._local, "interpreter", None)
        if interpreter is None:
            from ai_edge_litert.interpreter import Interpreter

            interpreter = Interpreter(model_content=self._model, num_threads=self._threads)
            (source,), (result,) = interpreter.get_input_details(), interpreter.get_output_details()
            self._local.interpreter = interpreter
            self._local.source, self._local.result = source["index"], result["index"]
            self._local.shape = None
        return interpreter

    def run(self, batch: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        interpreter = self._interpreter()
        local = self._local
        if local.shape != batch.shape:
            interpreter.resize_tensor_input(local.source, batch.shape)
            interpreter.allocate_tensors()
            local.shape = batch.shape
        interpreter.set_tensor(local.source, np.ascontiguousarray(batch))
        interpreter.invoke()
        out: npt.NDArray[np.float32] = interpreter.get_tensor(local.result).copy()
        return out


def _to_litert(run: Any) -> bytes:
    """The flatbuffer of a ``tf.function`` with one fixed input signature (float32 ops only)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_concrete_functions([run.get_concrete_function()], run)
    model: bytes = converter.convert()
    return model


def _npz_meta(path: Path) -> dict[str, Any]:
    """The ``__meta__`` record of a weights or head file, without reading its arrays."""
    import json
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz[META_KEY]))
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise WeightsError(f"{path} has no readable record of what it holds ({exc})") from exc
    if not isinstance(meta, dict):
        raise WeightsError(f"{path} has no readable record of what it holds")
    return meta


def _backbone_source(weights_path: str | Path | None) -> str:
    """The SHA-256 of the checkpoint the backbone's weights were converted from: the pinned one when
    the converted file is not there yet (it is converted from that checkpoint on first use)."""
    path = Path(weights_path or default_weights_path())
    if weights_path is None and not path.exists():
        return PTH_SHA256
    return str(_npz_meta(path).get("source_sha256") or "unknown")


def _network_id(head_sha256: str, weights_path: str | Path | None) -> str:
    """``model_id``'s form: 16 hex digits of the head's SHA-256, a dash, 8 of the backbone checkpoint's."""
    return f"{head_sha256[:16]}-{_backbone_source(weights_path)[:8]}"


_model_ids: dict[tuple[str, str, float, float], str] = {}


def model_id(head_path: str | Path | None = None, weights_path: str | Path | None = None) -> str:
    """Which network makes the vectors: ``"<head>-<backbone>"``, the first 16 hex digits of the head's
    SHA-256 (of its arrays, as ``head.npz`` records it and docs/training/report.md quotes it) and the
    first 8 of the backbone checkpoint's. Vectors made by different networks are not comparable: a
    stored vector is used only beside a query vector of the same id (docs/training/embedder.md,
    "Stored vectors and the network that made them"). Cheap (the files' records, not their arrays),
    so callers that never embed can ask; :class:`Embedder` gives the same id for the same files."""
    head = Path(head_path or DEFAULT_HEAD_PATH)
    weights = Path(weights_path or default_weights_path())
    key = (str(head.resolve()), str(weights.resolve()),
           head.stat().st_mtime if head.exists() else 0.0, weights.stat().st_mtime if weights.exists() else 0.0)
    found = _model_ids.get(key)
    if found is None:
        head_sha = str(_npz_meta(head).get("sha256") or "")
        if len(head_sha) < 16:
            raise WeightsError(f"ranking-head weights {head} have no SHA-256 record")
        found = _model_ids[key] = _network_id(head_sha, weights_path)
    return found


class Embedder:
    """Backbone + trained head, built once; use :func:`get_embedder` rather than constructing one."""

    dim = EMBEDDING_DIM

    def __init__(self, head_path: str | Path | None = None, weights_path: str | Path | None = None,
                 *, runtime: str | None = None) -> None:
        """``runtime`` (one of ``RUNTIMES``): by default LiteRT in float32, TensorFlow in bfloat16
        (LiteRT has no bfloat16 arithmetic on x86); naming one is for comparing them."""
        if runtime is not None and runtime not in RUNTIMES:  # before TensorFlow starts, as the head's check
            raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
        # Read the head first: a missing or corrupt file fails before TensorFlow starts.
        self.head: HeadWeights = read_head(Path(head_path) if head_path else None)
        # What a stored vector records as the network that made it (``model_id``).
        self.model_id = _network_id(self.head.sha256, weights_path)
        cut = truncated_backbone(weights_path, self.head.feature_layer)
        import tensorflow as tf

        head = self.head

        def forward(pixels: Any) -> Any:
            batch = (tf.cast(pixels, tf.float32) / 255.0 - 0.5) / 0.5  # as backbone.preprocess
            return head_tf(cut(batch), head)

        graph = tf.function(forward, input_signature=[tf.TensorSpec((None, *INPUT_SHAPE), tf.uint8)])
        arithmetic = precision()
        chosen = runtime or ("litert" if arithmetic == "float32" else "tensorflow")
        if chosen == "litert" and arithmetic != "float32":
            raise ValueError(f"the litert runtime runs float32 only; this process runs {arithmetic}")
        self.runtime = chosen
        self._run: Callable[[npt.NDArray[np.uint8]], Any]
        if chosen == "litert":
            self._run = _LiteRunner(_to_litert(graph), threads=_threads_set or 1).run
        else:
            self._run = graph

    def embed(self, images: Sequence["Image.Image"], *, batch_size: int = DEFAULT_BATCH_SIZE) -> npt.NDArray[Any]:
        """``(n, 256)`` float32, rows L2-normalised; the same image always gives the same row."""
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        out = [np.asarray(self._run(batch), dtype=np.float32) for batch in _batches(list(images), batch_size)]
        if not out:
            return np.zeros((0, self.dim), np.float32)
        vectors = np.concatenate(out)
        # Unit length in float32 whatever the graph's arithmetic (bfloat16 leaves norms ~0.3 % off).
        unit: npt.NDArray[np.float32] = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        return unit

    def embed_one(self, image: "Image.Image") -> npt.NDArray[Any]:
        """``(256,)`` float32 for one image (a check's latency path)."""
        row: npt.NDArray[Any] = self.embed([image])[0]
        return row

    def embed_crops(self, image: "Image.Image", *, whole: bool = True) -> tuple[list[Box], npt.NDArray[Any]]:
        """The whole image and the ``CROP_WINDOWS`` tiles: boxes (pixels, whole image first) and
        ``(len(boxes), 256)`` vectors, for partial-copy search (a logo pasted into a photo,
        a corner crop): query the index with every row and merge candidates by best score.
        ``whole=False`` leaves the whole image out (a caller that embedded it already)."""
        w, h = image.size
        if w < 1 or h < 1:
            raise ImageTooSmall(f"The image is {w}x{h}; it has no pixels to embed.")
        # Boxes on the image as given; each crop is prepared (RGB, padding) like any image.
        boxes = crop_boxes(image.size, CROP_WINDOWS if whole else CROP_WINDOWS[1:])
        return boxes, self.embed([image.crop(box) for box in boxes], batch_size=len(boxes))


def get_embedder(head_path: str | Path | None = None, weights_path: str | Path | None = None) -> Embedder:
    """The process-wide :class:`Embedder` for these files, built on first call (thread-safe)."""
    key = (str(Path(head_path or DEFAULT_HEAD_PATH).resolve()),
           str(Path(weights_path or default_weights_path()).resolve()))
    embedder = _embedders.get(key)
    if embedder is None:
        with _embedders_lock:
            embedder = _embedders.get(key)
            if embedder is None:
                embedder = _embedders[key] = Embedder(head_path, weights_path)
    return embedder


def main(argv: list[str] | None = None) -> int:
    """``python -m matching.core.cnn.embedder [--threads 1] [--seconds 5] [--runtime R]``: time the embedding.

    Bulk: ``embed`` on batches of 32 decoded photos (preprocessing included);
    check path: ``embed_one`` and ``embed_crops`` on one photo at a time.
    """
    import argparse
    import time

    from PIL import Image

    parser = argparse.ArgumentParser(prog="python -m matching.core.cnn.embedder")
    parser.add_argument("--threads", type=int, default=None, help="default: 1")
    parser.add_argument("--seconds", type=float, default=5.0, help="time spent on each measurement")
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--precision", choices=PRECISIONS, default=None, help="default: auto")
    parser.add_argument("--runtime", choices=RUNTIMES, default=None,
                        help="default: litert in float32, tensorflow in bfloat16")
    args = parser.parse_args(argv)
    threads = configure_tf_threads(args.threads, precision=args.precision)
    datasets = Path(__file__).resolve().parents[3].parent / "shared" / "datasets" / "photos"
    paths = sorted(datasets.rglob("*.png"))[:64]
    if paths:
        images = [Image.open(p).convert("RGB") for p in paths]
    else:  # no shared datasets: scikit-image's photos
        from skimage import data

        images = [Image.fromarray(getattr(data, n)()).convert("RGB")
                  for n in ("astronaut", "chelsea", "coffee", "rocket")] * 16
    embedder = get_embedder() if args.runtime is None else Embedder(runtime=args.runtime)

    def timed(fn: Callable[[], object]) -> list[float]:
        fn()
        fn()
        times: list[float] = []
        deadline = time.perf_counter() + args.seconds
        while time.perf_counter() < deadline or len(times) < 5:
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return times

    batch = images[: args.batch]
    bulk = timed(lambda: embedder.embed(batch, batch_size=args.batch))
    rotation = iter(range(10**9))
    one = timed(lambda: embedder.embed_one(images[next(rotation) % len(images)]))
    crops = timed(lambda: embedder.embed_crops(images[next(rotation) % len(images)]))
    size = f"{images[0].width}x{images[0].height}"
    print(f"threads={threads}, precision={precision()}, runtime={embedder.runtime}, images like {size} (decoded; preprocessing included)")
    print(f"bulk, batch {len(batch)}: {len(batch) / np.median(bulk):.0f} images/s "
          f"(median {1e3 * np.median(bulk):.0f} ms per batch, {len(bulk)} runs)")
    print(f"embed_one: median {1e3 * np.median(one):.1f} ms, p95 {1e3 * np.percentile(one, 95):.1f} ms")
    print(f"embed_crops ({len(CROP_WINDOWS)} windows): median {1e3 * np.median(crops):.1f} ms, "
          f"p95 {1e3 * np.percentile(crops, 95):.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
