"""What each aligned look confirms, and what it wrongly accepts, on a suite's development seed.

    python -m bench.looks [--suite chains] [--seed 1] [--refs 60] [--copies-per-ref 4] [--distractors 500]

The calibration behind docs/geometry.md's tables of the aligned looks ("The aligned look", "The
median look and the turned look"), as a command: the suite's references are indexed by the
benchmark's ``ServiceSystem``; every query is checked by the matcher as it ships; then each look
of ``matching.core.geometry.aligned_verification`` (plain, median, turned) is tried alone on

- every copy the matcher left unmatched, against its true reference (what a look could add), and
- every distractor's ``--pairs`` best candidates (what a look could wrongly accept),

with the thresholds as shipped. Seed 1 is the development seed: the benchmarks of
docs/benchmarks.md run seed 0, and their copies must not be the ones looks are tuned on.
"""
from __future__ import annotations

import argparse
import io
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOOKS: dict[str, dict[str, bool]] = {"plain": {}, "median": {"median": True}, "turned": {"turned": True}}


@dataclass
class LookCount:
    copies: int = 0             # unmatched copies the look confirms on their true reference
    copies_looked_at: int = 0   # of them, with the true reference among the matcher's two best candidates
    false: int = 0              # distractor pairs the look accepts
    false_queries: set[int] = field(default_factory=set)
    seconds: float = 0.0
    looks: int = 0


def run(*, suite: str = "chains", seed: int = 1, refs: int = 60, copies_per_ref: int | None = None,
        distractors: int = 500, pairs: int = 5, dataset: str | Path | None = None,
        log: Any = None) -> dict[str, Any]:
    from bench.service import ServiceSystem
    from bench.suites import build_suite
    from matching.core import geometry
    from matching.core.loading import load_image
    from matching.core.matcher import query_features

    data = build_suite(suite, dataset, refs=refs, copies_per_ref=copies_per_ref, distractors=distractors, seed=seed)
    service = ServiceSystem()
    service.index(data.reference_images())
    matcher = service.matcher
    assert matcher is not None
    counts = {name: LookCount() for name in LOOKS}
    copies = matched = unrelated = false_positives = pair_count = 0
    started = time.perf_counter()
    for k, query in enumerate(data.queries()):
        buffer = io.BytesIO()
        query.image.convert("RGB").save(buffer, format="PNG")
        loaded = load_image(buffer.getvalue())
        decisions = matcher.match(loaded, top_k=5).decisions
        ranked = [d.reference_id for d in decisions]
        if query.ref_id is not None:
            copies += 1
            if any(d.reference_id == query.ref_id and d.is_match for d in decisions):
                matched += 1
                continue
            candidates = [query.ref_id]
        else:
            unrelated += 1
            false_positives += any(d.is_match for d in decisions)
            candidates = ranked[:pairs]
        whole = query_features(loaded, matcher.feature_kind)
        for ref_id in candidates:
            reference = matcher.store.features(ref_id)
            if reference is None:
                continue
            pair_count += 1
            for name, options in LOOKS.items():
                tick = time.perf_counter()
                found = geometry.aligned_verification(whole, reference, **options)
                count = counts[name]
                count.seconds += time.perf_counter() - tick
                count.looks += 1
                if found is None:
                    continue
                if query.ref_id is not None:
                    count.copies += 1
                    count.copies_looked_at += ref_id in ranked[:2]
                else:
                    count.false += 1
                    count.false_queries.add(k)
        if log and (k + 1) % 50 == 0:
            print(f"[looks] {k + 1}/{data.n_queries} queries, {time.perf_counter() - started:.0f} s", file=log)
    return {"suite": suite, "seed": seed, "copies": copies, "matched": matched, "unrelated": unrelated,
            "false_positives": false_positives, "pairs": pair_count, "looks": counts}


def table(result: dict[str, Any]) -> str:
    lines = [
        f"{result['suite']} suite, seed {result['seed']}: the matcher matched {result['matched']} of "
        f"{result['copies']} copies and {result['false_positives']} of {result['unrelated']} distractors; "
        f"{result['pairs']} pairs looked at ({result['copies'] - result['matched']} unmatched copies with their "
        f"true reference, the distractors' best candidates).",
        "",
        "| look | unmatched copies it confirms | of them, a candidate the matcher looks at | false looks "
        "(distractors) | ms a look (mean) |",
        "| --- | --: | --: | --: | --: |",
    ]
    for name, c in result["looks"].items():
        ms = 1000 * c.seconds / c.looks if c.looks else 0.0
        lines.append(f"| {name} | {c.copies} | {c.copies_looked_at} | {c.false} ({len(c.false_queries)}) | {ms:.0f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.looks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", choices=("chains", "marks"), default="chains")
    parser.add_argument("--seed", type=int, default=1, help="1, the development seed (default)")
    parser.add_argument("--refs", type=int, default=60)
    parser.add_argument("--copies-per-ref", type=int, default=None)
    parser.add_argument("--distractors", type=int, default=500)
    parser.add_argument("--pairs", type=int, default=5, help="candidates of each distractor looked at")
    parser.add_argument("--dataset", default=None)
    args = parser.parse_args(argv)
    result = run(suite=args.suite, seed=args.seed, refs=args.refs, copies_per_ref=args.copies_per_ref,
                 distractors=args.distractors, pairs=args.pairs, dataset=args.dataset, log=sys.stderr)
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
