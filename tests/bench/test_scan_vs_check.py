"""`python -m bench.scan_vs_check` end to end on a tiny dataset: checks and a Spark scan, side by side."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from tests.images import PHOTOS, photo

ROOT = Path(__file__).resolve().parents[2]


def _logo(i: int) -> Image.Image:
    """A flat tile with a few coloured shapes, different for every ``i`` (corners for ORB to verify)."""
    rng = np.random.default_rng(500 + i)
    tile = Image.new("RGB", (200, 200), (255, 255, 255))
    draw = ImageDraw.Draw(tile)
    for _ in range(5):
        x, y = (int(v) for v in rng.integers(10, 140, 2))
        w, h = (int(v) for v in rng.integers(20, 60, 2))
        ink = tuple(int(v) for v in rng.integers(0, 200, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x, y, x + w, y + h), fill=ink)
    draw.text((20, 170), f"BRAND {i:02d}", fill=(0, 0, 0))
    return tile


def _dataset(root: Path) -> Path:
    """15 photos and 20 logos: the held-out fifth (training.data) is 3 photos and 4 logos."""
    (root / "photos" / "set").mkdir(parents=True)
    (root / "logos").mkdir()
    names = [*PHOTOS, *[f"extra{i}" for i in range(15 - len(PHOTOS))]]
    for i, name in enumerate(names):
        image = photo(name) if name in PHOTOS else photo(PHOTOS[i % len(PHOTOS)]).rotate(90 * (1 + i % 3),
                                                                                           expand=True)
        image.thumbnail((320, 320))
        image.save(root / "photos" / "set" / f"p{i:02d}-{name}.png")
    for i in range(20):
        _logo(i).save(root / "logos" / f"brand{i:02d}.png")
    return root


def test_scan_and_checks_answer_the_same_queries_side_by_side(tmp_path: Path) -> None:
    dataset = _dataset(tmp_path / "datasets")
    run = subprocess.run(
        [sys.executable, "-m", "bench.scan_vs_check", "--refs", "3", "--distractors", "3", "--attacks",
         "resize_30,paste_logo", "--master", "local[2]", "--dataset", str(dataset)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode in (0, 1), run.stdout + run.stderr
    rows = {m[0]: m[1:] for m in re.findall(r"^\| (check|scan) \| (\d+) \| (\d+) \|.*\| (\d+) \| ([\d.]+ %) \|",
                                              run.stdout, re.M)}
    assert set(rows) == {"check", "scan"}, run.stdout
    # 3 logo references x 2 attacks, and 3 unrelated photos, through both paths.
    assert rows["check"][:3] == rows["scan"][:3] == ("9", "6", "3"), run.stdout
    assert re.search(r"^\| resize_30 \| 3 \| [\d.]+ % \| [\d.]+ % \|$", run.stdout, re.M), run.stdout
    # The exit status is the verdict it prints.
    assert ("OK: the scan's recall and FPR are within 2 points" in run.stdout) == (run.returncode == 0)
    assert ("FAIL: scan" in run.stdout) == (run.returncode == 1)
