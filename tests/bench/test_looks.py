"""`python -m bench.looks`: the aligned looks tried alone on a suite's unmatched copies and on its
distractors' candidates, counted consistently and printed as one table."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from bench import looks


def _tile(i: int) -> Image.Image:
    rng = np.random.default_rng(700 + i)
    tile = Image.new("RGB", (128, 128), (255, 255, 255))
    draw = ImageDraw.Draw(tile)
    for _ in range(3):
        x, y = (int(v) for v in rng.integers(5, 80, 2))
        ink = tuple(int(v) for v in rng.integers(0, 200, 3))
        draw.ellipse((x, y, x + 40, y + 30), fill=ink)
    return tile


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 photos and 30 logos: the held-out fifth is 2 photos and 6 logos."""
    root = tmp_path_factory.mktemp("datasets")
    (root / "photos" / "set").mkdir(parents=True)
    (root / "logos").mkdir()
    for i in range(10):
        rng = np.random.default_rng(100 + i)
        Image.fromarray(rng.integers(0, 256, (6, 8, 3)).astype(np.uint8)).resize(
            (160, 120), Image.Resampling.BICUBIC).save(root / "photos" / "set" / f"p{i:02d}.png")
    for i in range(30):
        _tile(i).save(root / "logos" / f"brand{i:02d}.png")
    return root


def test_the_looks_are_counted_on_unmatched_copies_and_distractor_candidates(dataset: Path) -> None:
    result = looks.run(suite="chains", seed=1, refs=3, copies_per_ref=2, distractors=4, pairs=2, dataset=dataset)
    assert (result["copies"], result["unrelated"]) == (6, 4)
    unmatched = result["copies"] - result["matched"]
    # Each unmatched copy with its true reference, and at most 2 candidates of each distractor.
    assert unmatched <= result["pairs"] <= unmatched + 2 * result["unrelated"]
    assert set(result["looks"]) == {"plain", "median", "turned"}
    for count in result["looks"].values():
        assert count.looks == result["pairs"]
        assert 0 <= count.copies_looked_at <= count.copies <= unmatched
        assert len(count.false_queries) <= count.false <= result["pairs"] - unmatched
    text = looks.table(result)
    assert text.count("\n| plain |") == text.count("\n| median |") == text.count("\n| turned |") == 1
    assert f"matched {result['matched']} of 6 copies" in text
