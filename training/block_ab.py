"""Should training reach into the backbone? The head as trained today against the same head with the
backbone's last block fine-tuned too, on the validation split (docs/training/model_selection.md,
"2026-12-07: the last block fine-tuned").

    python -m training.block_ab [--map-steps 300] [--arms frozen,block] [--cache-dir DIR] [--seed 0]
                                [--views ab|recipe]

The backbone's maps are cached at ``block14_add`` (7x7x192: the input of EfficientNet-Lite0's last
MBConv block, ``block15``: 1x1 expansion to 1152 channels, 3x3 depthwise, 1x1 projection to 320,
BatchNorm folded), for a third of ``train.VIEWS``' views (``AB_VIEWS``: photos 8 random and 1 paste
window, logos 3 random, 1 paste window and 1 mark composite, besides the clean one; ``--views recipe``
takes ``train.VIEWS`` whole, three times the views and the time). Every 10th
training image is held back (``Config.val_every``). Both arms then train exactly as
``training.train`` does (phase 1 on the maps: GeM p, the last 1x1 convolution and the projection;
phase 2 on the pooled vectors), with ``block15`` applied to the cached maps on the fly:

- ``frozen``: ``block15`` at its ImageNet values (the recipe of today, less its views);
- ``block``: ``block15``'s weights trained in phase 1 too (about 0.6 M more parameters).

Reported: rank-1 of the held-back images' views (random edit chains, logos pasted into photos seen
through a window, marks composited into photos) against their clean versions, as
``_Trainer.val_metrics`` measures them. Nothing is written but the cache and the printed table.

With ``--out HEAD`` the block arm is trained on every training image instead (no validation split)
and its head written, the block's arrays included (``matching/core/cnn/head.py``: such a head
takes the backbone's maps at ``block14_add``); with ``--report-dir`` also the held-out report of
``training.train`` against the head the service ships.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from matching.core.cnn.head import BLOCK_INPUT_LAYER, HeadWeights

from . import train

BLOCK_LAYERS = ("block15_expand_conv", "block15_dw_conv", "block15_project_conv")
AB_VIEWS = {"photo": (8, 1, 0), "logo": (3, 1, 1)}
ARMS = ("frozen", "block")
VIEW_SETS = {"ab": AB_VIEWS, "recipe": train.VIEWS}


def block_weights() -> dict[str, np.ndarray]:
    """``block15``'s fused ImageNet weights: expansion (192, 1152), depthwise (3, 3, 1152, 1),
    projection (1152, 320), with their biases."""
    from matching.core.cnn.backbone import load_backbone

    full = load_backbone(None, fused=True)
    (ek, eb), (dk, db), (pk, pb) = ([np.asarray(w) for w in full.get_layer(n).get_weights()] for n in BLOCK_LAYERS)
    return {"block/expand_kernel": ek[0, 0], "block/expand_bias": eb, "block/dw_kernel": dk, "block/dw_bias": db,
            "block/project_kernel": pk[0, 0], "block/project_bias": pb}


class BlockTrainer(train._Trainer):
    """``train._Trainer`` on maps cached before ``block15``, which it applies first; with
    ``train_block`` its weights are phase 1 variables too."""

    def __init__(self, *args: Any, train_block: bool, **kwargs: Any) -> None:
        self.train_block = train_block
        super().__init__(*args, **kwargs)

    def _init_variables(self) -> None:
        import tensorflow as tf

        self.block = {name: tf.Variable(value) for name, value in block_weights().items()}
        super()._init_variables()

    def _block(self, x: Any) -> Any:
        """``head.block_tf`` with this trainer's variables, on the cached maps flattened to (n, 49, 192)."""
        import tensorflow as tf

        from matching.core.cnn.head import block_tf

        out = block_tf(tf.reshape(tf.cast(x, tf.float32), (-1, 7, 7, x.shape[-1])), self.block)
        return tf.reshape(out, (-1, 49, out.shape[-1]))

    def _maps(self, x: Any, conv: tuple[Any, Any] | None = None) -> Any:
        import tensorflow as tf

        k, b = conv if conv is not None else (self.v["conv/kernel"], self.v["conv/bias"])
        return tf.nn.relu6(tf.tensordot(self._block(x), k, 1) + b)

    def _run_phase(self, name: str, steps: int, b: int, data: np.ndarray, variables: list[Any],
                   embed: Any) -> None:
        if self.train_block and name.startswith("phase 1"):
            variables = [*variables, *self.block.values()]
        super()._run_phase(name, steps, b, data, variables, embed)

    def train(self) -> tuple[HeadWeights, train.History, dict[str, float]]:
        """As ``train._Trainer.train``; the head carries the block's arrays (``head.py``: it then
        takes the maps at ``BLOCK_INPUT_LAYER``), trained or at their ImageNet values."""
        head, hist, metrics = super().train()
        arrays = {**head.arrays, **{name: v.numpy() for name, v in self.block.items()}}
        return HeadWeights(arrays=arrays, meta={**head.meta, "block_trained": self.train_block}), hist, metrics


def run_arm(arm: str, cache: train.Cache, items: list[train.Item], cfg: train.Config,
            log: Any) -> tuple[dict[str, float], float]:
    """(validation metrics, seconds of training) of one arm."""
    started = time.perf_counter()
    _head, _hist, metrics = BlockTrainer(cache, items, cfg, log, train_block=arm == "block").train()
    return metrics, time.perf_counter() - started


def report(results: dict[str, tuple[dict[str, float], float]], cfg: train.Config, views: int) -> str:
    lines = [f"{views} cached views, {cfg.map_steps} phase-1 steps of {cfg.map_batch} pairs, "
             f"{cfg.steps} phase-2 steps; validation: every {cfg.val_every}th training image", "",
             "| arm | random chains | paste windows | marks in photos | training s |",
             "| --- | --: | --: | --: | --: |"]
    for arm, (m, seconds) in results.items():
        lines.append(f"| {arm} | {m['head_random_r1']:.3f} | {m['head_paste_r1']:.3f} | "
                     f"{m['head_mark_r1']:.3f} | {seconds:.0f} |")
    return "\n".join(lines)


def write_block_head(args: argparse.Namespace, split: Any, cache: train.Cache, log: Any, t0: float,
                     argv: list[str]) -> int:
    """The block arm on every training image, its head written to ``args.out`` and the held-out
    evaluation (``train.evaluate``, before = the shipped head) to ``args.report_dir``."""
    from matching.core.cnn.head import DEFAULT_HEAD_PATH, read_head, write_head

    cfg = train.Config(seed=args.seed, map_steps=args.map_steps)
    head, hist, _metrics = BlockTrainer(cache, split.train, cfg, log, train_block=True).train()
    # The head the service ships, read before it may be overwritten: the report's "before".
    shipped = read_head(DEFAULT_HEAD_PATH) if args.report_dir is not None else None
    write_head(args.out, head)
    log(f"head written to {args.out} (sha256 {head.sha256})")
    if shipped is None:
        return 0
    ev = train.evaluate(split.heldout, head, seed=args.seed, log=log, baseline=shipped)
    ev["before_sha"] = shipped.sha256
    args.report_dir.mkdir(parents=True, exist_ok=True)
    train._plot(hist, args.report_dir / "loss.png")
    train._report(args.report_dir / "report.md", split=split, cfg=cfg, cache=cache, hist=hist, head=head,
                  head_path=args.out.resolve(), ev=ev, total_seconds=time.perf_counter() - t0, argv=argv,
                  tf_threads=args.tf_threads, views=VIEW_SETS[args.views])
    log(f"report written to {args.report_dir / 'report.md'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.block_ab", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--map-steps", type=int, default=300)
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of {', '.join(ARMS)}")
    parser.add_argument("--datasets", type=Path, default=train.DEFAULT_DATASETS)
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="view cache (default $IMGPROTECT_DATA_DIR/cache/cnn_train)")
    parser.add_argument("--tf-threads", type=int, default=1)
    parser.add_argument("--views", choices=sorted(VIEW_SETS), default="ab",
                        help="views cached per training image: ab (AB_VIEWS, a third of the recipe's) or recipe "
                             "(train.VIEWS)")
    parser.add_argument("--json", type=Path, help="also write the metrics here")
    parser.add_argument("--out", type=Path, default=None,
                        help="instead: train the block arm on every training image (no validation split) and "
                             "write its head here; with --report-dir, also the held-out report against the head "
                             "the service ships")
    parser.add_argument("--report-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.report_dir is not None and args.out is None:
        parser.error("--report-dir needs --out")
    arms = [a for a in args.arms.split(",") if a]
    if not arms or set(arms) - set(ARMS):
        parser.error(f"--arms takes {', '.join(ARMS)}")
    if args.map_steps < 1:
        parser.error("--map-steps must be at least 1")

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from matching.core.cnn.embedder import configure_tf_threads

    configure_tf_threads(args.tf_threads, precision="float32")
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f} s] {msg}", flush=True)

    split = train.list_items(args.datasets)
    cache_dir = args.cache_dir or Path(os.environ.get("IMGPROTECT_DATA_DIR") or "var") / "cache" / "cnn_train"
    cache = train.build_cache(split.train, seed=args.seed, cache_dir=cache_dir, log=log,
                              views=VIEW_SETS[args.views], layer=BLOCK_INPUT_LAYER)
    if args.out is not None:
        return write_block_head(args, split, cache, log, t0, list(sys.argv[1:] if argv is None else argv))
    cfg = train.Config(seed=args.seed, map_steps=args.map_steps, val_every=10)
    results = {arm: run_arm(arm, cache, split.train, cfg, log) for arm in arms}
    print(report(results, cfg, len(cache.owner)))
    if args.json:
        args.json.write_text(json.dumps({arm: m for arm, (m, _s) in results.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
