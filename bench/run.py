"""Run the copy-detection benchmark and write its report.

    python -m bench.run [--dataset PATH] [--systems service,phash,pdq]
        [--attacks a,b,...] [--refs N] [--distractors M] [--seed 0] [--top-k 5] [--out docs/]
        [--raw PATH]
    python -m bench.run --suite chains|marks [--refs N] [--copies-per-ref K] [--distractors M] ...

``--suite attacks`` (the default) is the per-attack benchmark below; ``chains``
(chained edits) and ``marks`` (logos keyed out and composited into photos)
are described in ``bench.suites``: they print a markdown table and write
``benchmark-<suite>.md``, ``-pr.png`` and ``-raw.json.gz`` into ``--out``.

Every system indexes the same references (timed), then answers every attacked
copy and every unrelated image (each query timed); each copy is made once and
shown to all systems in turn. Writes ``benchmark-matching.md``,
``benchmark-pr.png`` and (unless ``--raw`` says elsewhere) ``benchmark-raw.json.gz``
into ``--out``. A system that cannot run here (``service`` when
``bench.service`` cannot be imported) is reported and skipped.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from matching.core.cnn.config import PRECISIONS, configure

from .attacks import ATTACK_NAMES
from .dataset import Benchmark, build_benchmark, default_dataset_root
from .metrics import SystemResult, outcome
from .report import MARKDOWN_NAME, PLOT_NAME, RAW_NAME, write_raw, write_report
from .suites import (DEFAULT_DISTRACTORS, DEFAULT_REFS, SUITES, SuiteData, build_suite, run_suite,
                     write_suite_report)
from .systems import SYSTEM_NAMES, System, SystemUnavailable, index_systems, load_system

__all__ = ["main", "run_benchmark"]

DEFAULT_SYSTEMS = ("service", "phash", "pdq")


def _kinds(items: Sequence[Any]) -> str:
    photos = sum(i.kind == "photo" for i in items)
    return f"{photos} photos, {len(items) - photos} logos"


def _describe(system: System) -> str:
    """A system's ``description`` if it has one, else the first paragraph of its class docstring."""
    if isinstance(getattr(system, "description", None), str):
        return str(getattr(system, "description"))
    doc = (type(system).__doc__ or "").strip()
    return " ".join(doc.split("\n\n")[0].split()) if doc else type(system).__name__


def run_benchmark(bench: Benchmark, systems: Sequence[System], *, attacks: Sequence[str],
                  top_k: int = 5, log: TextIO | None = sys.stderr) -> list[SystemResult]:
    """Index, query every copy and unrelated image, and return the outcomes per system."""
    results = index_systems(bench.reference_images(), systems, log=log)
    # the references are decoded again per attack; index_systems holds none of them afterwards

    total = bench.count_attacked(attacks) + len(bench.unrelated)
    done, started = 0, time.perf_counter()
    queries = (q for stream in (bench.attacked_queries(attacks), bench.unrelated_queries())
               for q in stream)
    for query in queries:
        for system, result in zip(systems, results, strict=True):
            start = time.perf_counter()
            hits = system.query(query.image, top_k)
            ms = 1000 * (time.perf_counter() - start)
            result.outcomes.append(outcome(attack=query.attack, ref_id=query.ref_id,
                                           region=query.region, size=query.image.size,
                                           hits=hits[:top_k], ms=ms, kind=query.kind))
        done += 1
        if log and (done % 500 == 0 or done == total):
            print(f"[bench] {done}/{total} queries, {time.perf_counter() - started:.0f} s", file=log)
    return results


def _names(value: str, known: Sequence[str] | None = None) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    if known is not None:
        unknown = [n for n in names if n not in known]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown: {', '.join(unknown)} (known: {', '.join(known)})")
    return names


def _run_suite(data: SuiteData, systems: Sequence[System], args: argparse.Namespace, *, command: str,
               created: str, unavailable: dict[str, str]) -> int:
    results, tags = run_suite(data, systems, top_k=args.top_k)
    meta: dict[str, Any] = {
        "suite": data.suite,
        "command": command,
        "created": created,
        "dataset": str(args.dataset) if args.dataset else "../shared/datasets",
        "seed": args.seed,
        "top_k": args.top_k,
        "n_refs": len(data.references),
        "refs_by_kind": _kinds(data.references),
        "copies_per_ref": data.copies_per_ref,
        "n_copies": len(data.references) * data.copies_per_ref,
        "n_unrelated": len(data.distractors),
        "unrelated_by_kind": _kinds(data.distractors),
        "references": [s.key for s in data.references],
        "distractors": [s.key for s in data.distractors],
        "unavailable": unavailable,
        "systems": {system.name: _describe(system) for system in systems},
    }
    markdown, _ = write_suite_report(args.out, meta, results, tags, raw=args.raw)
    print(markdown)
    print(f"wrote {args.out / f'benchmark-{data.suite}.md'}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run",
                                     description="Copy-detection benchmark: service beside baselines.")
    parser.add_argument("--dataset", type=Path, default=None,
                        help=f"dataset folder (default {default_dataset_root()})")
    parser.add_argument("--systems", type=lambda v: _names(v, SYSTEM_NAMES), default=list(DEFAULT_SYSTEMS),
                        help="comma-separated: service, phash, pdq, cnn (default service,phash,pdq)")
    parser.add_argument("--attacks", type=lambda v: _names(v, ATTACK_NAMES), default=list(ATTACK_NAMES),
                        help="comma-separated attack names (default: all)")
    parser.add_argument("--suite", choices=("attacks", *SUITES), default="attacks",
                        help="attacks (per attack, default), chains (chained edits) or marks "
                             "(logos composited into photos)")
    parser.add_argument("--refs", type=int, default=None,
                        help=f"number of references (default 120; {DEFAULT_REFS} for chains and marks)")
    parser.add_argument("--distractors", type=int, default=None,
                        help=f"unrelated logos (default 200); chains and marks: edited distractors "
                             f"(default {DEFAULT_DISTRACTORS})")
    parser.add_argument("--copies-per-ref", type=int, default=None,
                        help="chains and marks: copies of each reference (default 4 and 2)")
    parser.add_argument("--include-training-images", action="store_true",
                        help="attacks: draw from every image of the dataset, not only the fifth the CNN "
                             "head's training holds out (the figures then flatter the head)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--raw", type=Path, default=None, help=f"raw JSON (default OUT/{RAW_NAME})")
    parser.add_argument("--precision", choices=PRECISIONS, default=None,
                        help="the CNN's arithmetic (default: the process's, auto unless set: bfloat16 where "
                             "the CPU has it, else float32 on LiteRT); float32 compares runs across machines")
    args = parser.parse_args(argv)
    if args.precision is not None:  # else leave the process's setting (a test's float32, say) alone
        configure(precision=args.precision)
    if args.top_k < 1:
        parser.error("--top-k must be at least 1")
    if args.suite != "attacks":
        try:
            data = build_suite(args.suite, args.dataset, refs=args.refs or DEFAULT_REFS,
                               copies_per_ref=args.copies_per_ref,
                               distractors=DEFAULT_DISTRACTORS if args.distractors is None else args.distractors,
                               seed=args.seed)
        except (OSError, ValueError) as exc:
            parser.error(str(exc))
    else:
        try:
            bench = build_benchmark(args.dataset, refs=120 if args.refs is None else args.refs,
                                    distractors=200 if args.distractors is None else args.distractors,
                                    seed=args.seed, held_out_only=not args.include_training_images)
        except (OSError, ValueError) as exc:
            parser.error(str(exc))
    systems: list[System] = []
    unavailable: dict[str, str] = {}
    for name in args.systems:
        try:
            systems.append(load_system(name))
        except SystemUnavailable as exc:
            unavailable[name] = str(exc)
            print(f"[bench] {name} unavailable: {exc}", file=sys.stderr)
    if not systems:
        print("[bench] no system can run", file=sys.stderr)
        return 2

    command = "python -m bench.run " + shlex.join(argv if argv is not None else sys.argv[1:])
    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    if args.suite != "attacks":
        return _run_suite(data, systems, args, command=command, created=created, unavailable=unavailable)

    results = run_benchmark(bench, systems, attacks=args.attacks, top_k=args.top_k)
    meta: dict[str, Any] = {
        "command": command,
        "created": created,
        "dataset": (str(args.dataset) if args.dataset else "../shared/datasets")
        + (" (every image)" if args.include_training_images else " (the fifth the head's training holds out)"),
        "seed": args.seed,
        "top_k": args.top_k,
        "attacks": list(args.attacks),
        "n_refs": len(bench.references),
        "refs_by_kind": _kinds(bench.references),
        "n_unrelated": len(bench.unrelated),
        "unrelated_by_kind": _kinds(bench.unrelated),
        "n_attacked": bench.count_attacked(args.attacks),
        "references": [item.key for item in bench.references],
        "unavailable": unavailable,
        "systems": {system.name: _describe(system) for system in systems},
    }
    raw = args.raw or args.out / RAW_NAME
    write_raw(raw, meta=meta, results=results)
    summaries = write_report(args.out, meta, results)
    def f(x: float | None, scale: float = 1.0) -> str:
        return "n/a" if x is None else f"{scale * x:.3f}"

    for s in summaries:
        o = s["overall"]
        print(f"[bench] {s['system']}: rank-1 {f(o['rank1'])}, verdict recall {f(o['verdict_recall'])}, "
              f"µAP {f(o['micro_ap'])}, R@99P {f(o['recall_at_99p'])}, FPR {f(o['fpr'], 100)} %, "
              f"query p50 {f(o['query_ms']['p50'])} ms", file=sys.stderr)
    print(f"wrote {args.out / MARKDOWN_NAME}, {args.out / PLOT_NAME} and {raw}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
