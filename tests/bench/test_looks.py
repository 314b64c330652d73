"""`python -m bench.looks`: the aligned looks tried alone on a suite's unmatched copies and on its
distractors' candidates, counted consistently and printed as one table."""
from __future__ import annotations

from pathlib import Path

from bench import looks


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
