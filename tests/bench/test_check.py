"""``python -m bench.check``: the check-latency benchmark runs end to end on a tiny
dataset (real embedder, indexes, verification), and its cache is reused on the next run."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench import check as bench_check

from .test_harness import _tiny_dataset


def test_bench_check_reports_latency_rank_and_memory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _tiny_dataset(tmp_path / "datasets")
    args = ["--n", "400", "--refs", "3", "--unrelated", "2", "--pool", "3", "--datasets", str(root),
            "--every", "4", "--cache", str(tmp_path / "cache"), "--include-training-images"]
    assert bench_check.main(args) == 0
    out = capsys.readouterr().out
    assert "400 protected images" in out and "vector index flat" in out
    for group in ("all queries", "whole-frame copy", "unrelated"):
        assert re.search(rf"{group}\s+p50\s+[\d.]+\s+p95\s+[\d.]+", out), out
    assert re.search(r"rank-1 among 400: whole-frame copy [01]\.\d{3}", out)
    assert "false positives: " in out and "memory per protected image" in out
    # The logos' marks are part of the protected set, as the service indexes them: their views in the
    # vector index (synthetic logos too), so that checks search marks at scale as they do for real.
    views = re.search(r"mark views: (\d+) of the real references, (\d+) synthetic", out)
    assert views and int(views[1]) > 0 and int(views[2]) > 0, out
    # By default the answer is timed apart from the partial-copy task that follows an answer with no copy.
    assert "the answer (no partial-copy pass)" in out and "cnn_tiles_ms" not in out.split("stage times")[1]
    assert re.search(r"partial-copy task.*\n\s+all that ran it\s+p50\s+[\d.]+", out), out
    # The synthetic set and the vector index come from the cache the second time.
    assert bench_check.main(args) == 0
    assert "loaded from" in capsys.readouterr().out


def test_synthetic_codes_are_near_the_pool_or_random() -> None:
    import numpy as np

    pool = np.zeros((1, 1), np.uint64)
    codes = bench_check.synthetic_codes(pool, 1000, 6, 14, seed=0)
    distances = np.array([bin(int(c)).count("1") for c in codes[:, 0]])
    assert codes.shape == (1000, 1)
    assert distances[:500].min() >= 1 and distances[:500].max() <= 14  # flipped copies of the pool code
    assert distances[500:].mean() == pytest.approx(32, abs=2)  # uniform random: 32 bits from anything
