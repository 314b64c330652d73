"""Train the ranking head on copy augmentations, then measure it on a held-out split.

    python -m training.train --seed 0 [--out matching/core/cnn/weights/head.npz]

One seeded command, CPU only, one TensorFlow thread by default:

1. Data (the list lives in :mod:`.data`): the photos and logos of
   ``../shared/datasets`` and a few of scikit-image's photos (those the tests
   use are left out, so the tests embed unseen pictures). Every 5th photo and
   every 5th logo (by sorted name) is held out for evaluation and never seen
   in training.
2. Views: for each training image its clean version, random chains of copy
   attacks (``augment.random_view``) and windows around it pasted into a
   photo (``augment.paste_view``) and, for logos, the mark alone composited
   into a photo (``augment.mark_view``). The backbone is frozen up to
   ``block14_add``, so each view goes through it once; that map (7x7x192,
   float16; ``block15_project_conv``'s 7x7x320 with ``--frozen-block``) is
   cached under ``$IMGPROTECT_DATA_DIR/cache/cnn_train`` keyed by a digest of
   the data list, the view recipe and the layer.
3. Head (see ``matching/core/cnn/head.py``): the backbone's last MBConv block
   ``block15`` and its last 1x1 convolution, both fine-tuned from their
   ImageNet values, GeM with learnt p, a projection to 256-d; trained with InfoNCE over
   in-batch negatives and a KoLeo entropy term (the SSCD recipe) on pairs of
   views of the same image, in two phases (:class:`_Trainer`). Why these
   choices: ``docs/training/model_selection.md``.
4. Evaluation on the held-out split: every attack of ``augment.ATTACKS``
   applied to each held-out original, rank-1 recall against all held-out
   originals, for ImageNet features (GAP + L2) and for the trained head; and
   logos pasted into held-out photos, found through ``embed_crops`` windows.
5. Output: the head ``.npz`` (checksummed), ``docs/training/report.md`` and
   ``docs/training/loss.png``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from matching.core.cnn.embedder import CORNER_THIRDS, THIRDS
from matching.core.cnn.head import (
    BLOCK_INPUT_CHANNELS,
    BLOCK_INPUT_LAYER,
    DEFAULT_HEAD_PATH,
    EMBEDDING_DIM,
    FEATURE_LAYER,
    HeadWeights,
    write_head,
)

from . import augment
from .data import DEFAULT_DATASETS, HOLDOUT_EVERY, SKIMAGE_TRAIN, Item, Split, list_items

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REPORT_DIR = REPO_ROOT / "docs" / "training"
# Views per training image: (random edit chains, paste windows, mark composites), besides the clean one.
VIEWS = {"photo": (24, 3, 0), "logo": (10, 2, 4)}
VIEW_RECIPE_VERSION = 2  # bump when augment.py or the view recipe changes: invalidates caches
CLEAN, RANDOM, PASTE, MARK = 0, 1, 2, 3
# The backbone's last MBConv block (input block14_add, output FEATURE_LAYER), fused convolutions.
BLOCK_LAYERS = ("block15_expand_conv", "block15_dw_conv", "block15_project_conv")
# Windows whose partial-copy recall the report measures (shares of width/height).
_HALF = tuple((x / 4, y / 4, x / 4 + 0.5, y / 4 + 0.5) for y in range(3) for x in range(3))
_QUARTERS = tuple((x / 2, y / 2, x / 2 + 0.5, y / 2 + 0.5) for y in range(2) for x in range(2))
_CENTRE = ((0.25, 0.25, 0.75, 0.75),)
_FOURTHS_O = tuple((x / 6, y / 6, x / 6 + 0.5, y / 6 + 0.5) for y in range(4) for x in range(4))
_THIRD_O = tuple((x / 6, y / 6, x / 6 + 1 / 3, y / 6 + 1 / 3) for y in range(5) for x in range(5))
WHOLE = ((0.0, 0.0, 1.0, 1.0),)
CROP_SETS: dict[str, tuple[tuple[float, float, float, float], ...]] = {
    "whole": WHOLE,
    "whole+2x2": WHOLE + _QUARTERS,
    "whole+2x2+centre": WHOLE + _QUARTERS + _CENTRE,
    "whole+3x3 thirds": WHOLE + THIRDS,
    "whole+3x3 halves (overlap)": WHOLE + _HALF,
    "whole+4x4 halves (overlap)": WHOLE + _FOURTHS_O,
    "whole+3x3 halves+3x3 thirds": WHOLE + _HALF + THIRDS,
    "whole+5x5 thirds (overlap)": WHOLE + _THIRD_O,
    "whole+3x3 thirds+4 corner thirds": WHOLE + THIRDS + CORNER_THIRDS,
}
_INIT_NAMES = {"pca": "PCA-whitening", "lw": "learned-whitening", "random": "random"}
PASTE_QUERIES = 200  # held-out logos pasted into held-out photos for the partial-copy table
CHAIN_LENGTHS = (1, 2, 3)  # held-out rows: every original under a chain of this many random edits


# ---------------------------------------------------------------- view cache

@dataclass
class Cache:
    maps: np.ndarray  # (N, 7, 7, C) float16 (memmap): C 320 at FEATURE_LAYER, 192 at block14_add
    owner: np.ndarray  # (N,) int32: index into the training items
    kind: np.ndarray  # (N,) int8: CLEAN / RANDOM / PASTE
    seconds: float = 0.0  # time it took to build
    reused: bool = False  # read from an earlier run's cache


def _views(item: Item, index: int, backgrounds: Sequence[Image.Image], seed: int,
           views_per_kind: dict[str, tuple[int, int, int]] | None = None) -> list[tuple[int, Image.Image]]:
    rng = np.random.default_rng([seed, index])
    original = item.load()
    n_random, n_paste, n_mark = (views_per_kind or VIEWS)[item.kind]
    views = [(CLEAN, original)]
    views += [(RANDOM, augment.random_view(original, rng, backgrounds=backgrounds)) for _ in range(n_random)]
    views += [(PASTE, augment.paste_view(original, backgrounds, rng)) for _ in range(n_paste)]
    views += [(MARK, augment.mark_view(original, backgrounds, rng)) for _ in range(n_mark)]
    return views


def layer_maps(layer: str) -> tuple[Callable[[np.ndarray], np.ndarray], tuple[int, ...]]:
    """(preprocessed batch -> the backbone's maps at ``layer``, their shape without the batch axis).
    The embedder's own cut there (``embedder.truncated_backbone``; training caches the last block's
    input, ``BLOCK_INPUT_LAYER``, unless the block stays frozen)."""
    from matching.core.cnn.embedder import feature_maps, truncated_backbone

    shape = truncated_backbone(None, layer).get_concrete_function().structured_outputs.shape[1:]
    return (lambda batch: feature_maps(batch, layer=layer)), tuple(int(d) for d in shape)


def view_cache_dir(given: Path | None) -> Path:
    """``--cache-dir`` of the training commands, else ``$IMGPROTECT_DATA_DIR/cache/cnn_train``."""
    return given or Path(os.environ.get("IMGPROTECT_DATA_DIR") or "var") / "cache" / "cnn_train"


def build_cache(items: list[Item], *, seed: int, cache_dir: Path, log: Callable[[str], None],
                views: dict[str, tuple[int, int, int]] | None = None, layer: str = FEATURE_LAYER) -> Cache:
    """Backbone maps (at ``layer``) of every training view (``views`` per kind, default ``VIEWS``),
    computed once and reused by later runs."""
    from matching.core.cnn.backbone import preprocess

    views = views or VIEWS
    feature_maps, map_shape = layer_maps(layer)
    recipe = {"items": [it.name for it in items], "seed": seed, "views": views,
              "recipe": VIEW_RECIPE_VERSION, "layer": layer}
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    maps_path, index_path = cache_dir / f"views-{key}.f16.npy", cache_dir / f"views-{key}.index.npz"
    if maps_path.exists() and index_path.exists():
        with np.load(index_path, allow_pickle=False) as idx:
            cache = Cache(np.load(maps_path, mmap_mode="r"), idx["owner"], idx["kind"], float(idx["seconds"]),
                          reused=True)
        log(f"view cache: reusing {maps_path} ({len(cache.owner)} views)")
        return cache
    cache_dir.mkdir(parents=True, exist_ok=True)
    total = sum(1 + sum(views[it.kind]) for it in items)
    tmp = maps_path.with_suffix(".partial.npy")
    maps = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(total, *map_shape))
    owner, kind = np.empty(total, np.int32), np.empty(total, np.int8)
    backgrounds = [it.load() for it in items if it.name.startswith("photo:")]
    start, row, pending = time.perf_counter(), 0, []

    def flush() -> None:
        nonlocal row
        batch = np.stack([preprocess(im) for _, _, im in pending])
        maps[row : row + len(pending)] = feature_maps(batch).astype(np.float16)
        owner[row : row + len(pending)] = [i for i, _, _ in pending]
        kind[row : row + len(pending)] = [k for _, k, _ in pending]
        row += len(pending)
        pending.clear()

    for index, item in enumerate(items):
        own_photo = item.load() if item.kind == "photo" else None
        bgs = [b for b in backgrounds if own_photo is None or b.size != own_photo.size
               or not np.array_equal(np.asarray(b), np.asarray(own_photo))]
        for view_kind, image in _views(item, index, bgs, seed, views):
            pending.append((index, view_kind, image))
            if len(pending) == 32:
                flush()
        if index % 250 == 0:
            log(f"views: {index}/{len(items)} images, {row} views, {time.perf_counter() - start:.0f} s")
    if pending:
        flush()
    maps.flush()
    del maps
    seconds = time.perf_counter() - start
    os.replace(tmp, maps_path)
    np.savez(index_path, owner=owner, kind=kind, seconds=np.float64(seconds))
    log(f"view cache: {total} views in {seconds:.0f} s -> {maps_path}")
    return Cache(np.load(maps_path, mmap_mode="r"), owner, kind, seconds)


# ---------------------------------------------------------------- training

@dataclass
class Config:
    seed: int = 0
    map_steps: int = 800  # phase 1: p and the 1x1 convolution learnt on the maps (~0.7 s a step, one core)
    map_batch: int = 128  # images per phase-1 step; each contributes two views
    steps: int = 300  # phase 2: p fixed, GeM vectors precomputed once (fast: milliseconds a step)
    batch: int = 512  # images per phase-2 step
    lr: float = 5e-4
    p_lr_scale: float = 10.0  # p moves this much faster than the weights (it is one scalar)
    weight_decay: float = 1e-4
    temperature: float = 0.1
    koleo: float = 1.0
    mlp_hidden: int = 0  # 0: projection only
    init: str = "lw"  # projection start: "lw" learned whitening, "pca" whitening, "random"
    train_conv: bool = True  # adapt the backbone's last 1x1 convolution too (phase 1 only)
    # Fine-tune the backbone's last MBConv block, block15, in phase 1 too (the views' maps cached at
    # its input, block14_add; docs/training/model_selection.md, "2026-12-07: the last block fine-tuned").
    train_block: bool = True
    photo_share: float = 0.25  # of each batch; logos are 96 % of the images
    clean_share: float = 0.5  # pairs whose first view is the clean original (what the index stores)
    val_every: int = 0  # images held out of training for model selection (every n-th); 0: none


@dataclass
class History:
    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    nce: list[float] = field(default_factory=list)
    koleo: list[float] = field(default_factory=list)
    p: list[float] = field(default_factory=list)
    phase1_steps: int = 0
    seconds: float = 0.0


def block_weights() -> dict[str, np.ndarray]:
    """``block15``'s fused ImageNet weights, named as a head stores them (``head.py``): expansion
    (192, 1152), depthwise (3, 3, 1152, 1), projection (1152, 320), with their biases."""
    from matching.core.cnn.backbone import load_backbone

    full = load_backbone(None, fused=True)
    (ek, eb), (dk, db), (pk, pb) = ([np.asarray(w) for w in full.get_layer(n).get_weights()] for n in BLOCK_LAYERS)
    return {"block/expand_kernel": ek[0, 0], "block/expand_bias": eb, "block/dw_kernel": dk, "block/dw_bias": db,
            "block/project_kernel": pk[0, 0], "block/project_bias": pb}


def imagenet_conv() -> tuple[np.ndarray, np.ndarray]:
    """The backbone's own last 1x1 convolution (BatchNorm folded): (320, 1280) kernel, bias."""
    from matching.core.cnn.backbone import load_backbone

    layer = load_backbone(fused=True).get_layer("head_conv")
    kernel, bias = (np.asarray(w) for w in layer.get_weights())
    return kernel.reshape(kernel.shape[-2], kernel.shape[-1]), bias


class _Trainer:
    """Two phases, because GeM's learnt p is what makes a step expensive.

    Phase 1 trains p (and the projection, and the 1x1 convolution when
    ``train_conv``) on the feature maps: every step raises 2B x 49 x 1280
    activations to the power p, forward and backward. Phase 2 fixes p (and
    the convolution), pools every cached view once, and trains the projection
    (and MLP) on the 1280-d vectors for many cheap steps.

    Maps cached at ``block14_add`` (192 channels) go through ``block15`` first
    (``head.block_tf``), trained in phase 1 with ``train_block``, else at its
    ImageNet values; the head then carries the block's arrays.
    """

    def __init__(self, cache: Cache, items: list[Item], cfg: Config, log: Callable[[str], None]) -> None:
        import tensorflow as tf

        self.cfg, self.log, self.items = cfg, log, items
        self.rng = np.random.default_rng([cfg.seed, 7])
        self.conv_k, self.conv_b = imagenet_conv()
        n = len(cache.owner)
        self.kinds = cache.kind
        self.has_block = cache.maps.shape[-1] == BLOCK_INPUT_CHANNELS
        if cfg.train_block and not self.has_block:
            raise ValueError(f"training the block needs the maps cached at {BLOCK_INPUT_LAYER}")
        if self.has_block and not cfg.train_conv:
            raise ValueError(f"a frozen convolution needs the maps cached at {FEATURE_LAYER}")
        flat = np.asarray(cache.maps).reshape(n, 49, cache.maps.shape[-1])
        # A frozen convolution is applied once to every view and kept as uint8
        # (ReLU6 output in [0, 6], step 6/255): a step reads 4x fewer bytes
        # than float32 and skips the 320x1280 product.
        self.scale = 6.0 / 255.0
        if cfg.train_conv:
            self.x_all: np.ndarray = flat
        else:
            self.x_all = np.empty((n, 49, self.conv_k.shape[1]), np.uint8)
            k, b, scale = self.conv_k, self.conv_b, self.scale
            conv = tf.function(lambda m: tf.cast(tf.round(
                tf.nn.relu6(tf.tensordot(tf.cast(m, tf.float32), k, 1) + b) / scale), tf.uint8))
            for s in range(0, n, 512):
                self.x_all[s : s + 512] = conv(flat[s : s + 512]).numpy()
        self.val = ((np.arange(len(items)) % cfg.val_every == cfg.val_every - 1) if cfg.val_every
                    else np.zeros(len(items), bool))
        order = np.argsort(cache.owner, kind="stable")
        bounds = np.searchsorted(cache.owner[order], np.arange(len(items) + 1))
        self.by_item = [order[bounds[i] : bounds[i + 1]] for i in range(len(items))]
        self.train_ids = np.flatnonzero(~self.val)
        is_photo = np.array([items[i].kind == "photo" for i in self.train_ids])
        w = np.where(is_photo, cfg.photo_share / is_photo.sum(), (1 - cfg.photo_share) / (~is_photo).sum())
        self.weights = w / w.sum()
        self.hist = History()
        # Model selection hook: called as probe(phase, step) every probe_every steps.
        self.probe: Callable[[str, int], None] | None = None
        self.probe_every = 100
        self._init_variables()

    # ---- model

    def _block(self, x: Any) -> Any:
        """``head.block_tf`` with this trainer's block, on cached maps flattened to (n, 49, 192)."""
        import tensorflow as tf

        from matching.core.cnn.head import block_tf

        out = block_tf(tf.reshape(tf.cast(x, tf.float32), (-1, 7, 7, x.shape[-1])), self.block)
        return tf.reshape(out, (-1, 49, out.shape[-1]))

    def _maps(self, x: Any, conv: tuple[Any, Any] | None = None) -> Any:
        import tensorflow as tf

        if self.has_block:
            x = self._block(x)
        if self.cfg.train_conv:
            k, b = conv if conv is not None else (self.v["conv/kernel"], self.v["conv/bias"])
            return tf.nn.relu6(tf.tensordot(tf.cast(x, tf.float32), k, 1) + b)
        return tf.cast(x, tf.float32) * self.scale

    @staticmethod
    def _gem(t: Any, p: Any) -> Any:
        import tensorflow as tf

        return tf.pow(tf.reduce_mean(tf.pow(tf.maximum(t, 1e-6), p), axis=1), 1.0 / p)

    def _project(self, g: Any) -> Any:
        import tensorflow as tf

        v = self.v
        if self.cfg.mlp_hidden:
            g = g + tf.nn.relu(g @ v["mlp/kernel1"] + v["mlp/bias1"]) @ v["mlp/kernel2"] + v["mlp/bias2"]
        return tf.math.l2_normalize(g @ v["proj/kernel"] + v["proj/bias"], axis=-1)

    def p(self) -> Any:
        return 3.0 + self.cfg.p_lr_scale * self.v["gem/theta"]

    def pooled(self, rows: np.ndarray, p: float | None = None, imagenet: bool = False) -> np.ndarray:
        """GeM vectors of cached views (p defaults to the learnt one), in chunks."""
        out = []
        for s in range(0, len(rows), 512):
            t = self._maps(self.x_all[rows[s : s + 512]],
                           (self.conv_k, self.conv_b) if imagenet else None)
            out.append(self._gem(t, self.p() if p is None else p).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.conv_k.shape[1]), np.float32)

    def _init_variables(self) -> None:
        import keras
        import tensorflow as tf

        cfg = self.cfg
        keras.utils.set_random_seed(cfg.seed)
        tf.config.experimental.enable_op_determinism()
        width = self.conv_k.shape[1]
        self.block = {k: tf.Variable(v) for k, v in block_weights().items()} if self.has_block else {}
        self.v: dict[str, Any] = {"gem/theta": tf.Variable(0.0, name="theta")}
        if cfg.train_conv:
            self.v["conv/kernel"] = tf.Variable(self.conv_k)
            self.v["conv/bias"] = tf.Variable(self.conv_b)
        clean = np.array([self.by_item[i][0] for i in self.train_ids])
        g0 = self.pooled(clean, 3.0)
        mean = g0.mean(axis=0)

        def eigh(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # descending; TF, so one thread
            values, vectors = tf.linalg.eigh(tf.constant(c, tf.float64))
            return values.numpy()[::-1], vectors.numpy()[:, ::-1]

        if cfg.init == "pca":
            # PCA whitening of the training images' GeM features: decorrelated,
            # unit-variance directions, the usual start of a retrieval projection.
            evals, evecs = eigh(np.cov(g0, rowvar=False))
            proj0 = evecs[:, :EMBEDDING_DIM] / np.sqrt(evals[:EMBEDDING_DIM] + 1e-3 * evals[0])
        elif cfg.init == "lw":
            # Learned whitening (Radenovic et al., TPAMI 2018): whiten by the
            # covariance of (copy - original) differences, so directions that
            # attacks move are shrunk, then keep the 256 directions along which
            # different originals differ most. Closed form, from matching pairs.
            views = np.concatenate([self.by_item[i][1:] for i in self.train_ids])
            owner_pos = {int(i): k for k, i in enumerate(self.train_ids)}
            src = np.concatenate([[owner_pos[int(i)]] * (len(self.by_item[i]) - 1) for i in self.train_ids])
            diff = self.pooled(views, 3.0) - g0[src]
            evals, evecs = eigh(tf.matmul(diff, diff, transpose_a=True).numpy() / len(diff))
            p1 = evecs / np.sqrt(evals + 1e-2 * evals[0])  # shrunk: the smallest eigenvalues are noise
            evals2, evecs2 = eigh(np.cov((g0 - mean) @ p1, rowvar=False))
            proj0 = p1 @ evecs2[:, :EMBEDDING_DIM]
        else:
            proj0 = self.rng.normal(0, 1 / np.sqrt(width), (width, EMBEDDING_DIM))
        self.v["proj/kernel"] = tf.Variable(proj0.astype(np.float32))
        self.v["proj/bias"] = tf.Variable((-mean @ proj0).astype(np.float32))
        if cfg.mlp_hidden:
            h = cfg.mlp_hidden
            self.v["mlp/kernel1"] = tf.Variable(self.rng.normal(0, np.sqrt(2 / width), (width, h)).astype(np.float32))
            self.v["mlp/bias1"] = tf.Variable(np.zeros(h, np.float32))
            self.v["mlp/kernel2"] = tf.Variable(np.zeros((h, width), np.float32))  # the block starts as identity
            self.v["mlp/bias2"] = tf.Variable(np.zeros(width, np.float32))

    # ---- training

    def _loss(self, z: Any, b: int) -> tuple[Any, Any, Any]:
        import tensorflow as tf

        labels = tf.concat([tf.range(b, 2 * b), tf.range(0, b)], 0)
        eye = tf.eye(2 * b)
        sim = tf.matmul(z, z, transpose_b=True)
        nce = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels, sim / self.cfg.temperature - 1e9 * eye))
        # KoLeo (Sablayrolles et al. 2019): push each embedding away from its
        # nearest non-matching neighbour, spreading the embeddings out.
        d2 = 2.0 - 2.0 * sim + 4.0 * (eye + tf.one_hot(labels, 2 * b))
        koleo = -tf.reduce_mean(tf.math.log(tf.sqrt(tf.maximum(tf.reduce_min(d2, axis=1), 1e-8)) + 1e-8))
        return nce + self.cfg.koleo * koleo, nce, koleo

    def _pairs(self, b: int) -> np.ndarray:
        """Row indices (2b,): b images, two distinct views each, the first often the clean one."""
        chosen = self.rng.choice(self.train_ids, size=b, replace=False, p=self.weights)
        ia, ib = np.empty(b, np.int64), np.empty(b, np.int64)
        for j, item in enumerate(chosen):
            rows = self.by_item[item]
            a = 0 if self.rng.random() < self.cfg.clean_share else int(self.rng.integers(1, len(rows)))
            other = int(self.rng.integers(0, len(rows) - 1))
            ia[j], ib[j] = rows[a], rows[other + (other >= a)]
        return np.concatenate([ia, ib])

    def _run_phase(self, name: str, steps: int, b: int, data: np.ndarray, variables: list[Any],
                   embed: Callable[[Any], Any]) -> None:
        import keras
        import tensorflow as tf

        if steps <= 0:
            return
        warm = max(1, steps // 20)
        schedule = keras.optimizers.schedules.CosineDecay(0.0, steps - warm, warmup_target=self.cfg.lr,
                                                          warmup_steps=warm)
        opt = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=self.cfg.weight_decay)
        opt.build(variables)

        # autograph=False: no tensor-dependent Python control flow here, and AutoGraph cannot
        # convert a closure over self anyway (it warns, then runs the function as is).
        @tf.function(input_signature=[tf.TensorSpec((2 * b, *data.shape[1:]), tf.as_dtype(data.dtype))],
                     autograph=False)
        def step(x: Any) -> Any:
            with tf.GradientTape() as tape:
                loss, nce, koleo = self._loss(embed(x), b)
            grads = tape.gradient(loss, variables)
            opt.apply_gradients(zip(grads, variables, strict=True))
            return loss, nce, koleo

        start, offset = time.perf_counter(), len(self.hist.step) and self.hist.step[-1] + 1
        for s in range(steps):
            loss, nce, kol = (float(t) for t in step(data[self._pairs(b)]))
            if s % 10 == 0 or s == steps - 1:
                for key, value in (("step", offset + s), ("loss", loss), ("nce", nce), ("koleo", kol),
                                   ("p", float(self.p()))):
                    getattr(self.hist, key).append(value)
            if self.probe is not None and (s + 1) % self.probe_every == 0:
                self.probe(name, s + 1)
            if s % max(1, steps // 10) == 0 or s == steps - 1:
                self.log(f"{name} step {s}/{steps}: loss {loss:.3f} (nce {nce:.3f}, koleo {kol:.3f}) "
                         f"p {float(self.p()):.3f}, {time.perf_counter() - start:.0f} s")

    def train(self) -> tuple[HeadWeights, History, dict[str, float]]:
        cfg = self.cfg
        start = time.perf_counter()
        head_vars = [v for k, v in self.v.items() if k.startswith(("proj/", "mlp/"))]
        conv_vars = [self.v["conv/kernel"], self.v["conv/bias"]] if cfg.train_conv else []
        block_vars = list(self.block.values()) if cfg.train_block else []
        self._run_phase("phase 1 (maps)", cfg.map_steps, cfg.map_batch, self.x_all,
                        [self.v["gem/theta"], *conv_vars, *head_vars, *block_vars],
                        lambda x: self._project(self._gem(self._maps(x), self.p())))
        self.hist.phase1_steps = cfg.map_steps
        if cfg.steps > 0:
            t = time.perf_counter()
            pooled = self.pooled(np.arange(len(self.x_all)))
            self.log(f"phase 2: pooled {len(pooled)} views at p={float(self.p()):.3f} in "
                     f"{time.perf_counter() - t:.0f} s")
            self._run_phase("phase 2 (vectors)", cfg.steps, cfg.batch, pooled, head_vars, self._project)
        self.hist.seconds = time.perf_counter() - start
        arrays = {k: v.numpy() for k, v in self.v.items() if k != "gem/theta"}
        arrays["gem/p"] = np.array(float(self.p()), np.float32)
        arrays.setdefault("conv/kernel", self.conv_k)
        arrays.setdefault("conv/bias", self.conv_b)
        arrays.update({k: v.numpy() for k, v in self.block.items()})
        meta: dict[str, Any] = {"config": asdict(cfg), "conv_trained": cfg.train_conv}
        if self.has_block:
            meta["block_trained"] = cfg.train_block
        head = HeadWeights(arrays=arrays, meta=meta)
        metrics: dict[str, float] = {}
        if cfg.val_every:
            metrics = self.val_metrics()
            self.log("validation: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
        return head, self.hist, metrics

    def val_metrics(self) -> dict[str, float]:
        """Model selection: rank-1 recall of held-back training images' views against their clean versions."""
        val_ids = np.flatnonzero(self.val)
        rows = np.concatenate([self.by_item[i] for i in val_ids])
        owners = np.concatenate([np.full(len(self.by_item[i]), k) for k, i in enumerate(val_ids)])
        new = self._project(self.pooled(rows)).numpy()
        g = self.pooled(rows, 1.0, imagenet=True)
        old = g / np.linalg.norm(g, axis=1, keepdims=True)
        out = {}
        kinds = self.kinds[rows]
        for label, emb in (("gap", old), ("head", new)):
            db, db_owner = emb[kinds == CLEAN], owners[kinds == CLEAN]
            best = db_owner[np.argmax(emb @ db.T, axis=1)]
            for kind_name, k in (("random", RANDOM), ("paste", PASTE), ("mark", MARK)):
                sel = kinds == k
                out[f"{label}_{kind_name}_r1"] = float(np.mean(best[sel] == owners[sel]))
        return out


def train_head(cache: Cache, items: list[Item], cfg: Config, log: Callable[[str], None],
               ) -> tuple[HeadWeights, History, dict[str, float]]:
    return _Trainer(cache, items, cfg, log).train()


# ---------------------------------------------------------------- evaluation

def _eval_model(head: HeadWeights, baseline: HeadWeights | None = None,
                ) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Batch -> (before, trained head (n, 256)) from one backbone pass; before is ImageNet GAP + L2
    (n, 1280), or ``baseline`` (an earlier head) when given."""
    import tensorflow as tf

    from matching.core.cnn.embedder import truncated_backbone
    from matching.core.cnn.head import head_tf

    # The backbone cut where each head starts (a head that owns the last block starts earlier);
    # ImageNet's GAP, the "before" without a baseline, takes the usual cut.
    layers = {head.feature_layer, baseline.feature_layer if baseline is not None else FEATURE_LAYER}
    cuts = {layer: truncated_backbone(None, layer) for layer in sorted(layers)}
    conv_k, conv_b = imagenet_conv()

    @tf.function(input_signature=[tf.TensorSpec((None, 224, 224, 3), tf.float32)])
    def run(batch: Any) -> Any:
        maps = {layer: cut(batch) for layer, cut in cuts.items()}
        if baseline is not None:
            return head_tf(maps[baseline.feature_layer], baseline), head_tf(maps[head.feature_layer], head)
        gap = tf.reduce_mean(tf.nn.relu6(tf.tensordot(maps[FEATURE_LAYER], conv_k, 1) + conv_b), axis=(1, 2))
        return tf.math.l2_normalize(gap, axis=-1), head_tf(maps[head.feature_layer], head)

    def evaluate(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        embedding, ranked = run(batch)
        return np.asarray(embedding), np.asarray(ranked)

    return evaluate


def _embed_all(images: list[Image.Image], run: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
               ) -> tuple[np.ndarray, np.ndarray]:
    from matching.core.cnn.backbone import preprocess
    from matching.core.cnn.embedder import prepare

    gaps, heads = [], []
    for s in range(0, len(images), 32):
        g, h = run(np.stack([preprocess(prepare(im)) for im in images[s : s + 32]]))
        gaps.append(g)
        heads.append(h)
    return np.concatenate(gaps), np.concatenate(heads)


def evaluate(heldout: list[Item], head: HeadWeights, *, seed: int, log: Callable[[str], None],
             paste_queries: int = PASTE_QUERIES, baseline: HeadWeights | None = None) -> dict[str, Any]:
    """Per-attack and chained-edit rank-1 recall on the held-out split (before vs head), partial
    copies by crop set, and marks composited alone into held-out photos."""
    run = _eval_model(head, baseline)
    start = time.perf_counter()
    names = list(augment.ATTACKS)
    originals = [it.load() for it in heldout]
    db_gap, db_head = _embed_all(originals, run)
    hits: dict[str, dict[str, list[Any]]] = {a: {"gap": [], "head": [], "kind": []} for a in names}
    for a_index, attack_name in enumerate(names):
        attack = augment.ATTACKS[attack_name]
        copies = [attack(im, np.random.default_rng([seed, 1009, a_index, i])) for i, im in enumerate(originals)]
        q_gap, q_head = _embed_all(copies, run)
        truth = np.arange(len(heldout))
        hits[attack_name]["gap"] = list(np.argmax(q_gap @ db_gap.T, axis=1) == truth)
        hits[attack_name]["head"] = list(np.argmax(q_head @ db_head.T, axis=1) == truth)
        hits[attack_name]["kind"] = [it.kind for it in heldout]
        log(f"eval {attack_name}: gap {np.mean(hits[attack_name]['gap']):.3f} "
            f"head {np.mean(hits[attack_name]['head']):.3f} ({time.perf_counter() - start:.0f} s)")

    # Chains of 1, 2 and 3 random edits (augment.random_view, other photos of the held-out split as the
    # backgrounds of insets and blends): the DISC21-style copies, on images the head never saw.
    photo_ids = [i for i, it in enumerate(heldout) if it.kind == "photo"]
    logo_ids = [i for i, it in enumerate(heldout) if it.kind == "logo"]
    for length in CHAIN_LENGTHS:
        name = f"chain of {length}"
        copies = []
        for i, im in enumerate(originals):
            rng_i = np.random.default_rng([seed, 1013, length, i])
            bgs = [originals[j] for j in photo_ids if j != i]
            out = im
            for _ in range(length):
                out = augment.random_view(out, rng_i, max_attacks=1, backgrounds=bgs)
            copies.append(out)
        q_gap, q_head = _embed_all(copies, run)
        truth = np.arange(len(heldout))
        hits[name] = {"gap": list(np.argmax(q_gap @ db_gap.T, axis=1) == truth),
                      "head": list(np.argmax(q_head @ db_head.T, axis=1) == truth),
                      "kind": [it.kind for it in heldout]}
        log(f"eval {name}: before {np.mean(hits[name]['gap']):.3f} head {np.mean(hits[name]['head']):.3f} "
            f"({time.perf_counter() - start:.0f} s)")

    # Partial copies: a held-out logo pasted at 15-25 % of the width into a held-out photo.
    rng = np.random.default_rng([seed, 2027])
    chosen = rng.choice(logo_ids, size=min(paste_queries, len(logo_ids)), replace=False)
    windows = sorted({w for ws in CROP_SETS.values() for w in ws})
    from matching.core.cnn.embedder import crop_boxes

    paste_rank: dict[str, dict[str, list[int]]] = {c: {"gap": [], "head": []} for c in CROP_SETS}
    for logo in chosen:
        bg = int(rng.choice(photo_ids))
        composite, _box = augment.paste(originals[bg], originals[logo], rng)
        crops = [composite.crop(b) for b in crop_boxes(composite.size, windows)]
        embs = dict(zip(("gap", "head"), _embed_all(crops, run), strict=True))
        for label, emb in embs.items():
            db = db_gap if label == "gap" else db_head
            scores = emb @ db.T  # (windows, db)
            scores[:, bg] = -np.inf  # the background photo is a true match too; rank the logo among the rest
            for cset, ws in CROP_SETS.items():
                best = scores[[windows.index(w) for w in ws]].max(axis=0)
                paste_rank[cset][label].append(int(np.sum(best > best[logo])) + 1)
    log(f"eval paste: {len(chosen)} queries, {time.perf_counter() - start:.0f} s")

    # Marks in scenes: the mark alone (background keyed out) composited at 10-25 % of the width into a
    # held-out photo, searched through the service's windows (whole + CROP_WINDOWS).
    from matching.core.cnn.embedder import CROP_WINDOWS

    mark_windows = WHOLE + tuple(CROP_WINDOWS)
    mark_rank: dict[str, list[int]] = {"gap": [], "head": []}
    rng = np.random.default_rng([seed, 2029])
    for logo in rng.choice(logo_ids, size=min(paste_queries, len(logo_ids)), replace=False):
        mark = augment.mark_of(originals[logo])
        if mark is None:
            continue
        bg = int(rng.choice(photo_ids))
        composite, _box = augment.composite_mark(mark, originals[bg], rng)
        crops = [composite.crop(b) for b in crop_boxes(composite.size, mark_windows)]
        for label, emb in zip(("gap", "head"), _embed_all(crops, run), strict=True):
            scores = emb @ (db_gap if label == "gap" else db_head).T
            scores[:, bg] = -np.inf
            best = scores.max(axis=0)
            mark_rank[label].append(int(np.sum(best > best[logo])) + 1)
    log(f"eval marks: {len(mark_rank['head'])} queries, {time.perf_counter() - start:.0f} s")
    return {"attacks": hits, "paste": paste_rank, "marks": mark_rank, "db_size": len(heldout),
            "seconds": time.perf_counter() - start, "n_photos": len(photo_ids), "n_logos": len(logo_ids),
            "paste_queries": len(chosen), "before": "an earlier head" if baseline is not None else "ImageNet"}


# ---------------------------------------------------------------- report

def _chosen_crop_set() -> str:
    from matching.core.cnn.embedder import CROP_WINDOWS

    chosen = sorted(CROP_WINDOWS)
    return next((name for name, ws in CROP_SETS.items() if sorted(ws) == chosen), f"{len(chosen)} windows")


def _plot(hist: History, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6), dpi=100)
    ax[0].plot(hist.step, hist.loss, label="total")
    ax[0].plot(hist.step, hist.nce, label="InfoNCE")
    ax[0].plot(hist.step, hist.koleo, label="KoLeo")
    if hist.phase1_steps:
        for a in ax:
            a.axvline(hist.phase1_steps, color="grey", linestyle=":", linewidth=1)
    ax[0].set_xlabel("step (phase 1: maps | phase 2: pooled vectors; batch sizes differ)")
    ax[0].set_title("training loss")
    ax[0].legend()
    ax[1].plot(hist.step, hist.p)
    ax[1].set_xlabel("step")
    ax[1].set_title("GeM p")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def _report(path: Path, *, split: Split, cfg: Config, cache: Cache, hist: History, head: HeadWeights,
            head_path: Path, ev: dict[str, Any], total_seconds: float, argv: list[str], tf_threads: int = 1,
            views: dict[str, tuple[int, int, int]] | None = None) -> None:
    views = views or VIEWS
    map_shape = "x".join(str(d) for d in cache.maps.shape[1:])
    import tensorflow as tf

    def pct(x: Sequence[bool] | np.ndarray) -> str:
        return f"{100 * float(np.mean(x)):.1f}"

    train_counts = {k: sum(1 for it in split.train if it.name.startswith(k)) for k in ("photo:", "logo:", "skimage:")}
    held_counts = {k: sum(1 for it in split.heldout if it.name.startswith(k)) for k in ("photo:", "logo:")}
    lines = [
        "# Ranking head: training report",
        "",
        f"Written by `python -m training.train {' '.join(argv)}` (seeded; rerunning it gives the same "
        "head on the same machine and library versions).",
        f"Head file: `{head_path.relative_to(REPO_ROOT) if head_path.is_relative_to(REPO_ROOT) else head_path}`, "
        f"SHA-256 of its arrays `{head.sha256}`.",
        "",
        "## Data",
        "",
        f"- Training: {train_counts['photo:']} photos and {train_counts['logo:']} logos of `../shared/datasets`, "
        f"and {train_counts['skimage:']} scikit-image pictures ({', '.join(SKIMAGE_TRAIN)}).",
        f"- Held out (never seen in training): every {HOLDOUT_EVERY}th photo and every {HOLDOUT_EVERY}th logo by "
        f"sorted name (indices {HOLDOUT_EVERY - 1}, {2 * HOLDOUT_EVERY - 1}, ...): {held_counts['photo:']} photos "
        f"and {held_counts['logo:']} logos.",
        "- scikit-image's astronaut, camera, chelsea/cat, coffee, rocket and coins are not trained on: the tests use them.",
        f"- Views per training image: the clean image, DISC21-style chains of 1-3 random edits "
        f"(`augment.random_view`: each edit drawn uniformly from the {len(augment.ATTACKS)} kinds of "
        f"`augment.ATTACKS` at random strengths and the {len(augment.CHAIN_EDITS)} of `augment.CHAIN_EDITS`: "
        f"{', '.join(augment.CHAIN_EDITS)}; training photos as the backgrounds of insets and opacity blends), "
        f"windows around the image pasted at 15-25 % width into a training photo (`augment.paste_view`) and, "
        f"for logos, windows around the mark alone (flat background keyed out) composited with its alpha at "
        f"10-25 % width into a training photo, sometimes tilted, recoloured, shadowed, blurred or re-encoded "
        f"(`augment.mark_view`): "
        f"photos {views['photo']}, logos {views['logo']} (random, paste, mark). {len(cache.owner)} views in all; "
        f"one backbone pass each, {cache.seconds:.0f} s (cached feature maps `{head.feature_layer}`, "
        f"{map_shape} float16).",
        "",
        "## Model and hyper-parameters",
        "",
        ("EfficientNet-Lite0 (ImageNet weights) frozen up to `block14_add` (7x7x192), then its last block "
         "`block15` (expansion 192->1152, 3x3 depthwise, projection to 320, BatchNorm folded) "
         + ("fine-tuned in phase 1 with the head" if head.meta.get("block_trained") else "at its ImageNet values")
         + "; the head is the "
         if head.has_block else
         "EfficientNet-Lite0 (ImageNet weights) frozen up to `block15_project_conv` (7x7x320); the head is the ")
        + "backbone's last 1x1 convolution (320->1280, BatchNorm folded, "
        + ("fine-tuned from its ImageNet values" if cfg.train_conv else "kept at its ImageNet values")
        + f"), ReLU6, GeM pooling with learnt p (start 3, final {head.p:.3f}), "
        + (f"residual MLP 1280-{cfg.mlp_hidden}-1280, " if cfg.mlp_hidden else "")
        + f"projection 1280->256 ({_INIT_NAMES[cfg.init]} initialisation), L2 normalisation. "
        "Training has two phases: phase 1 learns p, the convolution and the projection "
        + ("(and the block) " if head.meta.get("block_trained") else "") + "on the cached maps "
        f"({cfg.map_steps} steps of {cfg.map_batch} image pairs); phase 2 fixes them, pools every view once "
        f"and trains the projection on the 1280-d vectors ({cfg.steps} steps of {cfg.batch} pairs). "
        "Why these choices (frozen vs fine-tuned convolution, MLP, initialisation, temperature, number of views): "
        "[model_selection.md](model_selection.md).",
        "",
        "Loss: InfoNCE over the 2B views of a batch (the other view of the same image is the positive, every other "
        f"view a negative), temperature {cfg.temperature}, plus {cfg.koleo} x KoLeo entropy regulariser "
        "(distance to the nearest non-matching embedding), as in SSCD (Pizzi et al., 2022).",
        "",
        "| parameter | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in asdict(cfg).items()],
        f"| TensorFlow threads | {tf_threads} |",
        "",
        f"Time: views {cache.seconds:.0f} s, training {hist.seconds:.0f} s, evaluation {ev['seconds']:.0f} s; "
        + (f"this run reused the view cache of an earlier run with the same recipe and took "
           f"{total_seconds:.0f} s, so from scratch the command takes about "
           f"{total_seconds + cache.seconds:.0f} s" if cache.reused else f"whole command {total_seconds:.0f} s")
        + f" on {platform.processor() or platform.machine()} ({os.cpu_count()} cores shared with other jobs), "
        f"{tf_threads} TensorFlow thread{'s' if tf_threads > 1 else ''}, TensorFlow {tf.__version__}.",
        "",
        "![loss curve](loss.png)",
        "",
        "## Held-out evaluation: copies found at rank 1",
        "",
        f"Each attack of `augment.ATTACKS` applied once to each of the {ev['db_size']} held-out originals "
        f"({ev['n_photos']} photos, {ev['n_logos']} logos); the copy is searched among all {ev['db_size']} "
        "held-out originals by cosine similarity; a hit is its own original ranked first. "
        + ("Before: ImageNet features (the backbone's 7x7x1280 map averaged, L2-normalised, 1280-d). "
           if ev["before"] == "ImageNet" else
           f"Before: the head this run replaced (`--compare-previous`, SHA-256 `{ev.get('before_sha', '?')}`). ")
        + "After: the trained head (256-d). The `chain of n` rows put every original through n random edits "
        "in turn (`augment.random_view` with one edit each time, the other held-out photos as the backgrounds "
        "of insets and opacity blends): the DISC21-style copies, made by the training generator on pictures "
        "it never trained on.",
        "",
        "| attack | before: photos | before: logos | before: all | after: photos | after: logos | after: all |",
        "|---|---|---|---|---|---|---|",
    ]
    all_gap: list[np.ndarray] = []
    all_head: list[np.ndarray] = []
    for name, h in ev["attacks"].items():
        kinds = np.array(h["kind"])
        gap, hd = np.array(h["gap"]), np.array(h["head"])
        if name.startswith("chain of 1"):
            lines.append(f"| **all attacks** | | | **{pct(np.concatenate(all_gap))}** | | | "
                         f"**{pct(np.concatenate(all_head))}** |")
        if name in augment.ATTACKS:
            all_gap.append(gap)
            all_head.append(hd)
        lines.append(f"| {name} | {pct(gap[kinds == 'photo'])} | {pct(gap[kinds == 'logo'])} | {pct(gap)} | "
                     f"{pct(hd[kinds == 'photo'])} | {pct(hd[kinds == 'logo'])} | {pct(hd)} |")
    lines += [
        "",
        "## Partial copies: a logo pasted into a photo",
        "",
        f"{ev['paste_queries']} held-out logos, each pasted at 15-25 % of the width into a random held-out photo "
        "(`augment.paste`). Every window of a crop set is embedded and searched among the held-out originals; "
        "an original's score is its best over the windows. Rank of the pasted logo among all originals except "
        "the background photo (itself a true match). Windows are shares of the image: `2x2` quarters, "
        "`3x3 thirds`, `3x3 halves (overlap)` half-size tiles at quarter steps, `4x4 halves (overlap)` "
        "half-size tiles at sixth steps, `5x5 thirds (overlap)` third-size tiles at sixth steps, `centre` the "
        "middle half.",
        "",
        "| windows | count | before: rank 1 | before: top 10 | after: rank 1 | after: top 10 | after: top 50 |",
        "|---|---|---|---|---|---|---|",
    ]
    for cset, ranks in ev["paste"].items():
        g, h = np.array(ranks["gap"]), np.array(ranks["head"])
        lines.append(f"| {cset} | {len(CROP_SETS[cset])} | {pct(g == 1)} | {pct(g <= 10)} | {pct(h == 1)} | "
                     f"{pct(h <= 10)} | {pct(h <= 50)} |")
    lines += [
        "",
        f"`Embedder.embed_crops` uses the set `{_chosen_crop_set()}` (`CROP_WINDOWS` in "
        "`matching/core/cnn/embedder.py`).",
        "",
        "## Marks in scenes: a logo's mark alone composited into a photo",
        "",
        f"{len(ev['marks']['head'])} held-out logos: the mark alone (`augment.mark_of`: the flat background "
        "keyed out) composited with its alpha at 10-25 % of the width into a random held-out photo "
        "(`augment.composite_mark`: sometimes tilted, recoloured or shadowed), searched through the whole "
        "picture and `CROP_WINDOWS`; rank as above.",
        "",
        "| before: rank 1 | before: top 10 | after: rank 1 | after: top 10 | after: top 50 |",
        "|---|---|---|---|---|",
    ]
    mg, mh = np.array(ev["marks"]["gap"]), np.array(ev["marks"]["head"])
    lines += [f"| {pct(mg == 1)} | {pct(mg <= 10)} | {pct(mh == 1)} | {pct(mh <= 10)} | {pct(mh <= 50)} |", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


# ---------------------------------------------------------------- command

def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_HEAD_PATH, help="head weights file (.npz)")
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--report-dir", type=Path, default=DEFAULT_REPORT_DIR)
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="view cache (default $IMGPROTECT_DATA_DIR/cache/cnn_train)")
    parser.add_argument("--map-steps", type=int, default=Config.map_steps, help="phase 1 steps (p learnt)")
    parser.add_argument("--map-batch", type=int, default=Config.map_batch)
    parser.add_argument("--steps", type=int, default=Config.steps, help="phase 2 steps (p fixed)")
    parser.add_argument("--batch", type=int, default=Config.batch)
    parser.add_argument("--p-lr-scale", type=float, default=Config.p_lr_scale)
    parser.add_argument("--lr", type=float, default=Config.lr)
    parser.add_argument("--temperature", type=float, default=Config.temperature)
    parser.add_argument("--koleo", type=float, default=Config.koleo)
    parser.add_argument("--mlp-hidden", type=int, default=Config.mlp_hidden)
    parser.add_argument("--init", choices=sorted(_INIT_NAMES), default=Config.init)
    parser.add_argument("--frozen-conv", action="store_true",
                        help="keep the backbone's last 1x1 convolution at its ImageNet values (needs --frozen-block)")
    parser.add_argument("--frozen-block", action="store_true",
                        help="keep the backbone's last block (block15) at its ImageNet values: the head takes "
                             f"the maps at {FEATURE_LAYER}, as before 2026-12-07")
    parser.add_argument("--photo-share", type=float, default=Config.photo_share)
    parser.add_argument("--val-every", type=int, default=0,
                        help="model selection only: hold back every n-th training image and report on it; "
                             "writes nothing unless --out is given explicitly")
    parser.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation and the report")
    parser.add_argument("--tf-threads", type=int, default=1,
                        help="TensorFlow threads (the result is the same, only the speed differs)")
    parser.add_argument("--compare-previous", action="store_true",
                        help="evaluate the head found at --out before this run replaces it as 'before' "
                             "(instead of plain ImageNet features)")
    parser.add_argument("--eval-limit", type=int, default=0,
                        help="smoke tests only: evaluate on the first N held-out photos and N logos")
    args = parser.parse_args(argv)
    if args.frozen_conv and not args.frozen_block:
        parser.error("--frozen-conv needs --frozen-block")

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from matching.core.cnn.embedder import configure_tf_threads

    # the head learns, and is evaluated, on exact features
    configure_tf_threads(args.tf_threads, precision="float32")
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f} s] {msg}", flush=True)

    cfg = Config(seed=args.seed, map_steps=args.map_steps, map_batch=args.map_batch, steps=args.steps,
                 batch=args.batch, p_lr_scale=args.p_lr_scale, lr=args.lr, temperature=args.temperature,
                 koleo=args.koleo, mlp_hidden=args.mlp_hidden, init=args.init,
                 train_conv=not args.frozen_conv, train_block=not args.frozen_block,
                 photo_share=args.photo_share, val_every=args.val_every)
    split = list_items(args.datasets)
    log(f"data: {len(split.train)} training images, {len(split.heldout)} held out")
    cache = build_cache(split.train, seed=args.seed, cache_dir=view_cache_dir(args.cache_dir), log=log,
                        layer=BLOCK_INPUT_LAYER if cfg.train_block else FEATURE_LAYER)
    previous = None
    if args.compare_previous and args.out.exists():
        from matching.core.cnn.head import read_head

        previous = read_head(args.out)
    head, hist, _metrics = train_head(cache, split.train, cfg, log)
    if args.val_every and "--out" not in argv:
        return 0
    write_head(args.out, head)
    log(f"head written to {args.out} (sha256 {head.sha256})")
    if args.no_eval:
        return 0
    heldout = split.heldout
    if args.eval_limit:
        heldout = ([it for it in heldout if it.kind == "photo"][: args.eval_limit]
                   + [it for it in heldout if it.kind == "logo"][: args.eval_limit])
    ev = evaluate(heldout, head, seed=args.seed, log=log, baseline=previous,
                  paste_queries=min(PASTE_QUERIES, args.eval_limit or PASTE_QUERIES))
    if previous is not None:
        ev["before_sha"] = previous.sha256
    _plot(hist, args.report_dir / "loss.png")
    _report(args.report_dir / "report.md", split=split, cfg=cfg, cache=cache, hist=hist, head=head,
            head_path=args.out.resolve(), ev=ev, total_seconds=time.perf_counter() - t0, argv=argv,
            tf_threads=args.tf_threads)
    log(f"report written to {args.report_dir / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
