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

- ``frozen``: ``block15`` at its ImageNet values (the recipe before 2026-12-07, less its views);
- ``block``: ``block15``'s weights trained in phase 1 too (about 0.6 M more parameters).

Reported: rank-1 of the held-back images' views (random edit chains, logos pasted into photos seen
through a window, marks composited into photos) against their clean versions, as
``_Trainer.val_metrics`` measures them. Nothing is written but the cache and the printed table.
Training the head with the block on every training image is ``python -m training.train``'s default
since this A/B (``--frozen-block`` trains the head alone, as before).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from matching.core.cnn.head import BLOCK_INPUT_LAYER

from . import train

AB_VIEWS = {"photo": (8, 1, 0), "logo": (3, 1, 1)}
ARMS = ("frozen", "block")
VIEW_SETS = {"ab": AB_VIEWS, "recipe": train.VIEWS}


def run_arm(arm: str, cache: train.Cache, items: list[train.Item], cfg: train.Config,
            log: Any) -> tuple[dict[str, float], float]:
    """(validation metrics, seconds of training) of one arm: ``train._Trainer`` on the maps cached
    at the block's input, the block trained (``block``) or kept at its ImageNet values (``frozen``)."""
    started = time.perf_counter()
    _head, _hist, metrics = train.train_head(cache, items, replace(cfg, train_block=arm == "block"), log)
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
    args = parser.parse_args(argv)
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
    cache = train.build_cache(split.train, seed=args.seed, cache_dir=train.view_cache_dir(args.cache_dir), log=log,
                              views=VIEW_SETS[args.views], layer=BLOCK_INPUT_LAYER)
    cfg = train.Config(seed=args.seed, map_steps=args.map_steps, val_every=10)
    results = {arm: run_arm(arm, cache, split.train, cfg, log) for arm in arms}
    print(report(results, cfg, len(cache.owner)))
    if args.json:
        args.json.write_text(json.dumps({arm: m for arm, (m, _s) in results.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
