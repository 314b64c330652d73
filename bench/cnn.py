"""Time the backbone on CPU threads: one-image latency and batch throughput.

    python -m bench.cnn [--threads 1] [--batch 32] [--seconds 5]

Must run in a fresh process: TensorFlow's thread pools are fixed on first use.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def _time(fn, x: np.ndarray, seconds: float) -> list[float]:  # noqa: ANN001
    fn(x)  # warm-up: traces the graph
    fn(x)
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 5:
        start = time.perf_counter()
        np.asarray(fn(x))
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cnn")
    parser.add_argument("--threads", type=int, default=1, help="intra-op and inter-op threads")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0, help="time spent on each measurement")
    parser.add_argument("--weights", default=None, help="weights file (default: the standard location)")
    parser.add_argument("--unfused", action="store_true",
                        help="time the layer-for-layer model with BatchNorm layers instead")
    args = parser.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    from matching.core.cnn.backbone import load_loaded

    run = load_loaded(args.weights, include_top=False, fused=not args.unfused).run
    rng = np.random.default_rng(0)
    one = rng.uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)
    batch = rng.uniform(-1, 1, (args.batch, 224, 224, 3)).astype(np.float32)
    single = _time(run, one, args.seconds)
    batched = _time(run, batch, args.seconds)
    print(f"threads={args.threads} tensorflow={tf.__version__} "
          f"model={'unfused (BatchNorm layers)' if args.unfused else 'fused (BatchNorm folded)'}")
    print(f"single image: median {1e3 * np.median(single):.2f} ms, "
          f"p95 {1e3 * np.percentile(single, 95):.2f} ms over {len(single)} runs")
    print(f"batch {args.batch}: median {1e3 * np.median(batched):.1f} ms -> "
          f"{args.batch / np.median(batched):.0f} images/s over {len(batched)} runs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
