"""`python -m bench.load`: a few seconds against the embedded default, every check answered."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_load_benchmark_answers_checks_and_reports_figures(tmp_path):
    out = tmp_path / "load.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench.load", "--stack", "embedded", "--no-cnn", "--seconds", "4",
         "--concurrency", "2", "--web-workers", "1", "--warmup", "1", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "service: embedded default" in run.stdout
    figures = json.loads(out.read_text())
    assert figures["errors"] == 0 and figures["answered"] > 0
    assert figures["answered_per_s"] == pytest.approx(figures["answered"] / figures["seconds"], rel=0.02)
    assert figures["p50_ms"] <= figures["p95_ms"] <= figures["p99_ms"]
    web = [row for row in figures["memory"] if row["role"] == "web"]
    assert any(row["parent"] for row in web) and any(not row["parent"] for row in web)  # master and worker
    assert all(row["peak_mib"] > 10 for row in web)
