"""Choose decision thresholds from a benchmark run, at a target false-positive rate.

    python -m bench.calibrate --raw docs/benchmark-raw.json.gz --fpr 0.005 \
        [--system service] [--components phash_distance,inliers] [--out /tmp/thresholds.json] \
        [--markdown PATH]

Each named score component (a key of ``Hit.components``, or ``score``) gets its
own threshold, chosen alone: the loosest value at which the share of unrelated
queries with *any* hit passing it stays <= the target, which is the value that
maximises recall under that constraint (both only grow as a threshold loosens).
Components named ``*distance`` pass at ``<=``, all others at ``>=`` (the run
already used that rule to keep each query's best value, so name them so). The
run's raw file keeps, per query, the true reference's components and the best
value over every other hit, which is all this needs. Also reported: the rate
when the chosen thresholds are OR-ed together (how a cascade uses them),
per-attack recall, and a 95 % upper bound on each false-positive rate, because
a few hundred unrelated queries only resolve it so finely. With one system
(``--system``), its values are also written at the top level under ``thresholds``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .metrics import Outcome, SystemResult, lower_is_better
from .report import read_raw

__all__ = ["calibrate_component", "calibrate_system", "main", "render_markdown"]


def _number(x: float | None) -> float | int | None:
    """Integral thresholds (hash distances, inlier counts) as ints in the JSON."""
    return int(x) if x is not None and float(x).is_integer() else x


def _passes(value: float | None, threshold: float | None, lower: bool) -> bool:
    if value is None or threshold is None:
        return False
    return value <= threshold if lower else value >= threshold


def fpr_upper_bound(false_positives: int, n: int, confidence: float = 0.95) -> float | None:
    """One-sided Clopper-Pearson upper bound of a rate seen as ``false_positives`` in ``n``."""
    if n == 0:
        return None
    if false_positives >= n:
        return 1.0
    from scipy.stats import beta  # lazy: only the calibration command needs it

    return float(beta.ppf(confidence, false_positives + 1, n - false_positives))


def choose_threshold(copy_values: Sequence[float], unrelated_values: Sequence[float], n_unrelated: int,
                     target_fpr: float, *, lower: bool) -> float | None:
    """The loosest observed value with FPR <= target; None when even the strictest fails.

    ``unrelated_values`` holds only the unrelated queries that have the component
    at all (the rest can never pass); ``n_unrelated`` counts every one.
    """
    sign = 1.0 if lower else -1.0  # work as "lower is better" throughout
    copies = np.sort(sign * np.asarray(copy_values, dtype=np.float64))
    unrelated = np.sort(sign * np.asarray(unrelated_values, dtype=np.float64))
    allowed = math.floor(target_fpr * n_unrelated + 1e-9)  # false positives we may keep
    candidates = np.union1d(copies, unrelated)
    if len(candidates) == 0:
        return None
    if allowed < len(unrelated):
        # Passing the (allowed+1)-th closest unrelated value would exceed the target.
        candidates = candidates[candidates < unrelated[allowed]]
    if len(candidates) == 0:
        return None
    return float(sign * candidates[-1])


def calibrate_component(outcomes: Sequence[Outcome], component: str, target_fpr: float) -> dict[str, Any]:
    lower = lower_is_better(component)
    copies = [o for o in outcomes if o.is_copy]
    unrelated = [o for o in outcomes if not o.is_copy]
    copy_values = [o.true_components[component] for o in copies if component in o.true_components]
    unrelated_values = [o.other_best[component] for o in unrelated if component in o.other_best]
    threshold = choose_threshold(copy_values, unrelated_values, len(unrelated), target_fpr, lower=lower)
    false_positives = sum(_passes(o.other_best.get(component), threshold, lower) for o in unrelated)
    found = [_passes(o.true_components.get(component), threshold, lower) for o in copies]
    by_attack: dict[str, list[bool]] = {}
    for o, ok in zip(copies, found, strict=True):
        by_attack.setdefault(str(o.attack), []).append(ok)
    return {
        "op": "<=" if lower else ">=",
        "threshold": _number(threshold),
        "fpr": false_positives / len(unrelated) if unrelated else None,
        "fpr_upper95": fpr_upper_bound(false_positives, len(unrelated)),
        "false_positives": false_positives,
        "n_unrelated": len(unrelated),
        "recall": float(np.mean(found)) if found else None,
        "n_copies": len(copies),
        "copies_matching_other": (float(np.mean([_passes(o.other_best.get(component), threshold, lower)
                                                 for o in copies])) if copies else None),
        "recall_by_attack": {a: float(np.mean(v)) for a, v in by_attack.items()},
    }


def _components_of(result: SystemResult) -> list[str]:
    names = {k for o in result.outcomes for k in (*o.true_components, *o.other_best)}
    return sorted(names)


def calibrate_system(result: SystemResult, target_fpr: float,
                     components: Sequence[str] | None = None) -> dict[str, Any]:
    available = _components_of(result)
    if components is None:
        # "score" is a ranking, not a rule, unless it is all the system reports.
        components = [c for c in available if c != "score"] or ["score"]
    missing = [c for c in components if c not in available]
    if missing:
        raise ValueError(f"{result.name} has no component {', '.join(missing)} "
                         f"(it has: {', '.join(available)})")
    chosen = {c: calibrate_component(result.outcomes, c, target_fpr) for c in components}
    copies = [o for o in result.outcomes if o.is_copy]
    unrelated = [o for o in result.outcomes if not o.is_copy]

    def any_pass(values: dict[str, float]) -> bool:
        return any(_passes(values.get(c), v["threshold"], lower_is_better(c)) for c, v in chosen.items())

    # Best-per-component over hits is enough: "some hit passes some threshold" is the
    # same as "some component's best passes its threshold".
    fp = sum(any_pass(o.other_best) for o in unrelated)
    return {
        "thresholds": {c: _number(v["threshold"]) for c, v in chosen.items()},
        "components": chosen,
        "combined": {
            "fpr": fp / len(unrelated) if unrelated else None,
            "fpr_upper95": fpr_upper_bound(fp, len(unrelated)),
            "false_positives": fp,
            "recall": float(np.mean([any_pass(o.true_components) for o in copies])) if copies else None,
        },
    }


def _f(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f} %"


def _value(x: float | None) -> str:
    if x is None:
        return "none passes"
    return str(int(x)) if float(x).is_integer() else f"{x:.4f}"


def render_markdown(doc: dict[str, Any]) -> str:
    lines = [f"Thresholds chosen for a false-positive rate <= {_pct(doc['target_fpr'])} on "
             f"{doc['n_unrelated']} unrelated queries (`{doc['command']}`), each component alone; "
             "recall over all attacked copies. The 95 % bound is one-sided Clopper-Pearson.", "",
             "| system | component | threshold | FPR | FPR 95 % bound | recall "
             "| copies matching a wrong reference |",
             "|---|---|--:|--:|--:|--:|--:|"]
    for name, s in doc["systems"].items():
        for comp, c in s["components"].items():
            lines.append(f"| {name} | {comp} | {c['op']} {_value(c['threshold'])} | {_pct(c['fpr'])} | "
                         f"{_pct(c['fpr_upper95'])} | {_f(c['recall'])} | "
                         f"{_pct(c['copies_matching_other'])} |")
        if len(s["components"]) > 1:
            k = s["combined"]
            lines.append(f"| {name} | any of the above | | {_pct(k['fpr'])} | {_pct(k['fpr_upper95'])} | "
                         f"{_f(k['recall'])} | |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.calibrate",
                                     description="Thresholds per score component at a target FPR.")
    parser.add_argument("--raw", type=Path, default=Path("docs/benchmark-raw.json.gz"))
    parser.add_argument("--fpr", type=float, default=0.005,
                        help="target false-positive rate (0.005 = 0.5 %%)")
    parser.add_argument("--system", action="append", default=None,
                        help="calibrate only this system (repeatable; default: every one in the file)")
    parser.add_argument("--components", default=None,
                        help="comma-separated components (default: all but 'score', or 'score' alone)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/thresholds.json"))
    parser.add_argument("--markdown", type=Path, default=None, help="also write the snippet here")
    args = parser.parse_args(argv)
    if not 0 <= args.fpr < 1:
        parser.error("--fpr must be in [0, 1)")

    meta, results = read_raw(args.raw)
    wanted = [r for r in results if args.system is None or r.name in args.system]
    if not wanted:
        parser.error(f"no system {args.system} in {args.raw} (it has: {', '.join(r.name for r in results)})")
    components = [c.strip() for c in args.components.split(",")] if args.components else None
    try:
        systems = {r.name: calibrate_system(r, args.fpr, components) for r in wanted}
    except ValueError as exc:
        parser.error(str(exc))
    doc = {
        "target_fpr": args.fpr,
        "command": "python -m bench.calibrate "
                   + " ".join(argv if argv is not None else sys.argv[1:]),
        "raw": str(args.raw),
        "n_unrelated": sum(o.attack is None for o in wanted[0].outcomes),
        "benchmark": {k: meta[k] for k in ("command", "created", "dataset", "seed", "n_refs", "n_attacked")
                      if k in meta},
        "systems": systems,
    }
    if len(systems) == 1:  # one system: its values also at the top, as a thresholds file keeps them
        doc["thresholds"] = next(iter(systems.values()))["thresholds"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    snippet = render_markdown(doc)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(snippet)
    print(snippet)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
