"""Writing a run down: the raw outcomes (JSON), the markdown tables and the PR plot.

The raw file is columnar (one list per field, one entry per query, the same
query order for every system) so a default run stays well under a megabyte
per system; ``read_raw`` gives back the ``SystemResult`` objects, so the
report can be redrawn without re-running:

    python -m bench.report --raw docs/benchmark-raw.json.gz --out docs/
"""
from __future__ import annotations

import argparse
import gzip
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .metrics import Outcome, SystemResult, pr_curve, summarise

__all__ = ["read_raw", "render_markdown", "write_markdown", "write_pr_plot", "write_raw"]

RAW_FORMAT = "imgprotect-bench-raw/1"
MARKDOWN_NAME = "benchmark-matching.md"
PLOT_NAME = "benchmark-pr.png"
RAW_NAME = "benchmark-raw.json.gz"


def _r(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(x, digits)


def _dump(path: Path, doc: dict[str, Any]) -> None:
    data = json.dumps(doc, separators=(",", ":")).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0: the same run gives the same bytes
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)


def _load(path: Path) -> Any:
    data = Path(path).read_bytes()
    return json.loads(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)


def write_raw(path: Path, *, meta: dict[str, Any], results: Sequence[SystemResult]) -> None:
    """Columnar JSON (gzip-compressed when ``path`` ends in ``.gz``)."""
    attacks: list[str] = list(meta["attacks"])
    first = results[0].outcomes if results else []
    kinds = sorted({o.kind for o in first})
    queries = {
        "attack": [attacks.index(o.attack) if o.attack is not None else -1 for o in first],
        "ref_id": [o.ref_id if o.ref_id is not None else -1 for o in first],
        "has_region": [int(o.has_region) for o in first],
        "kinds": kinds,
        "kind": [kinds.index(o.kind) for o in first],
    }
    systems: dict[str, Any] = {}
    for res in results:
        outs = res.outcomes
        if [(o.attack, o.ref_id) for o in outs] != [(o.attack, o.ref_id) for o in first]:
            raise ValueError(f"{res.name} answered a different list of queries")
        names_true = sorted({k for o in outs for k in o.true_components})
        names_other = sorted({k for o in outs for k in o.other_best})
        # The true hit's score is true_components["score"]; a column of nulls is left out.
        systems[res.name] = {
            "index_ms_per_image": _r(res.index_ms_per_image, 3),
            "ms": [_r(o.ms, 2) for o in outs],
            "top_score": [_r(o.top_score) for o in outs],
            "top_match": [int(o.top_match) for o in outs],
            "rank": [o.rank for o in outs],
            "true_match": [int(o.true_match) for o in outs],
            "other_match": [int(o.other_match) for o in outs],
            "true_components": {k: [_r(o.true_components.get(k)) for o in outs] for k in names_true},
            "other_best": {k: [_r(o.other_best.get(k)) for o in outs] for k in names_other},
        }
        if any(o.iou is not None for o in outs):
            systems[res.name]["iou"] = [_r(o.iou) for o in outs]
    _dump(path, {"format": RAW_FORMAT, "meta": meta, "queries": queries, "systems": systems})


def read_raw(path: Path) -> tuple[dict[str, Any], list[SystemResult]]:
    doc = _load(path)
    if not isinstance(doc, dict) or doc.get("format") != RAW_FORMAT:
        raise ValueError(f"{path} is not a benchmark raw file ({RAW_FORMAT})")
    meta, q = doc["meta"], doc["queries"]
    attacks, kinds = meta["attacks"], q["kinds"]
    results = []
    for name, s in doc["systems"].items():
        iou = s.get("iou") or [None] * len(q["attack"])
        scores = s["true_components"].get("score") or [None] * len(q["attack"])
        outcomes = []
        for i, a in enumerate(q["attack"]):
            outcomes.append(Outcome(
                attack=attacks[a] if a >= 0 else None,
                ref_id=q["ref_id"][i] if q["ref_id"][i] >= 0 else None,
                ms=s["ms"][i], kind=kinds[q["kind"][i]],
                top_score=s["top_score"][i], top_match=bool(s["top_match"][i]),
                rank=s["rank"][i], true_score=scores[i], true_match=bool(s["true_match"][i]),
                has_region=bool(q["has_region"][i]), iou=iou[i],
                other_match=bool(s["other_match"][i]),
                true_components={k: v[i] for k, v in s["true_components"].items() if v[i] is not None},
                other_best={k: v[i] for k, v in s["other_best"].items() if v[i] is not None},
            ))
        results.append(SystemResult(name, s["index_ms_per_image"], outcomes))
    return meta, results


# -- markdown ---------------------------------------------------------------------------

def _f(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f} %"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    align = ["---"] + ["--:"] * (len(header) - 1)
    return [_row(header), _row(align), *(_row(r) for r in rows), ""]


def render_markdown(meta: dict[str, Any], summaries: Sequence[dict[str, Any]]) -> str:
    attacks: list[str] = meta["attacks"]
    names = [s["system"] for s in summaries]
    per = {s["system"]: s for s in summaries}

    def cell(system: str, attack: str, key: str) -> str:
        return _f(per[system]["attacks"][attack][key])

    def n_of(attack: str) -> str:
        return str(summaries[0]["attacks"][attack]["n"]) if summaries else "0"

    lines = [
        "# Copy-detection benchmark",
        "",
        f"Made by `{meta['command']}` ({meta['created']}). Dataset `{meta['dataset']}`, seed "
        f"{meta['seed']}: {meta['n_refs']} references ({meta['refs_by_kind']}) indexed; "
        f"{meta['n_attacked']} attacked copies of them and {meta['n_unrelated']} unrelated images "
        f"({meta['unrelated_by_kind']}, never indexed) queried; top {meta['top_k']} hits per query. "
        "Copies are made in memory from the seed; no image is stored.",
        "",
    ]
    for name, text in meta.get("systems", {}).items():
        lines.append(f"- **{name}**: {text}")
    for name, reason in meta.get("unavailable", {}).items():
        lines.append(f"- **{name}** did not run: {reason}")
    lines.append("")
    if meta.get("notes"):
        lines += [f"- {note}" for note in meta["notes"]] + [""]

    lines += ["## Copies found at rank 1", "",
              "Share of each attack's copies whose top hit is the reference they were made from; "
              "the summary rows below cover every query.", ""]
    rows = [[a, n_of(a), *(cell(s, a, "rank1") for s in names)] for a in attacks]
    ov = {s: per[s]["overall"] for s in names}
    kinds = sorted({k for s in names for k in ov[s]["fpr_by_kind"] if k})
    rows += [
        ["**all attacks: rank 1**", str(ov[names[0]]["n_copies"]) if names else "0",
         *(f"**{_f(ov[s]['rank1'])}**" for s in names)],
        ["all but paste_logo and collage_2x2: rank 1", "",
         *(_f(ov[s]["rank1_whole_frame"]) for s in names)],
        *([f"all attacks: rank 1 on copies of {k}s", "", *(_f(ov[s]["rank1_by_kind"].get(k)) for s in names)]
          for k in kinds),
        ["all attacks: matched by the system's verdict", "", *(_f(ov[s]["verdict_recall"]) for s in names)],
        ["micro-AP (top hit per query)", "", *(_f(ov[s]["micro_ap"], 3) for s in names)],
        ["recall at 99 % precision", "", *(_f(ov[s]["recall_at_99p"]) for s in names)],
        ["precision of matched top hits", "", *(_f(ov[s]["verdict_precision"], 3) for s in names)],
        ["false positives on unrelated images (any match)",
         str(ov[names[0]]["n_unrelated"]) if names else "0", *(_pct(ov[s]["fpr"]) for s in names)],
        *([f"false positives on unrelated {k}s", "", *(_pct(ov[s]["fpr_by_kind"].get(k)) for s in names)]
          for k in kinds),
        ["copies that also match a wrong reference", "",
         *(_pct(ov[s]["copies_matching_other"]) for s in names)],
        ["index time per reference (ms)", "", *(_f(ov[s]["index_ms_per_image"], 1) for s in names)],
        ["query ms: mean / p50 / p95", "", *(" / ".join(_f(ov[s]["query_ms"][k], 1)
                                                         for k in ("mean", "p50", "p95")) for s in names)],
    ]
    lines += _table(["attack", "n", *names], rows)

    lines += ["## Copies matched by the system's own verdict", "",
              "Share of each attack's copies on which the system says *match* for the right reference "
              "(at any of its top hits).", ""]
    rows = [[a, n_of(a), *(cell(s, a, "verdict_recall") for s in names)] for a in attacks]
    rows.append(["false positives on unrelated images", "", *(_pct(ov[s]["fpr"]) for s in names)])
    lines += _table(["attack", "n", *names], rows)

    lines += ["## Ranking quality per attack", "",
              "micro-AP / recall at 99 % precision over the attack's copies pooled with every "
              "unrelated query (one top hit each, ranked by score).", ""]
    rows = [[a, *(f"{cell(s, a, 'micro_ap')} / {cell(s, a, 'recall_at_99p')}" for s in names)]
            for a in attacks]
    lines += _table(["attack", *names], rows)

    boxed = [a for a in attacks if any(per[s]["attacks"][a]["mean_iou"] is not None for s in names)]
    lines += ["## Region accuracy", ""]
    if boxed:
        lines += ["Mean IoU of the returned region with the true one / share of the attack's copies "
                  "matched *and* boxed with IoU >= 0.5.", ""]
        rows = [[a, *(f"{cell(s, a, 'mean_iou')} / {cell(s, a, 'boxed')}" for s in names)] for a in boxed]
        lines += _table(["attack", *names], rows)
    else:
        lines += ["No system in this run returned regions (the baselines never do).", ""]

    lines += [
        "## Definitions", "",
        "- *rank 1*: the top hit is the true reference, whatever the verdict.",
        "- *matched by the verdict*: the system's own `match` is true on the true reference.",
        "- *micro-AP*: every query (copies and unrelated) contributes its top hit, ranked by score over "
        "all queries; correct when it is the true reference; recall counts every copy, so copies "
        "missed at rank 1 cap it. Tied scores enter together.",
        "- *false positives*: share of unrelated queries with any hit whose `match` is true.",
        "- Times are wall-clock in this process, one query at a time, excluding making the copy.",
        "",
    ]
    return "\n".join(lines)


def write_markdown(path: Path, meta: dict[str, Any], summaries: Sequence[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_markdown(meta, summaries))


def write_pr_plot(path: Path, results: Sequence[SystemResult], title: str) -> None:
    """Precision-recall of the pooled top hits per system, with each system's verdict as a dot."""
    import matplotlib

    matplotlib.use("Agg")  # no display on workers and CI
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
    for res in results:
        precision, recall, _ = pr_curve(res.outcomes)
        s = summarise(res, [])["overall"]
        line = ax.step(recall, precision, where="post",
                       label=f"{res.name} (µAP {s['micro_ap']:.3f})")[0]
        copies = [o for o in res.outcomes if o.is_copy]
        matched = [o for o in res.outcomes if o.top_match]
        if copies and matched:
            op_recall = sum(o.top_match and o.rank == 1 for o in copies) / len(copies)
            op_precision = sum(o.rank == 1 for o in matched) / len(matched)
            ax.plot([op_recall], [op_precision], "o", color=line.get_color())
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall (copies found at rank 1)")
    ax.set_ylabel("precision (top hit is the true reference)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8, title="dot: the system's own verdict", title_fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def write_report(out: Path, meta: dict[str, Any], results: Sequence[SystemResult]) -> list[dict[str, Any]]:
    summaries = [summarise(r, meta["attacks"]) for r in results]
    write_markdown(out / MARKDOWN_NAME, meta, summaries)
    write_pr_plot(out / PLOT_NAME, results,
                  f"{meta['n_attacked']} copies, {meta['n_unrelated']} unrelated, "
                  f"{meta['n_refs']} references (seed {meta['seed']})")
    return summaries


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Redraw the benchmark report from a raw file.")
    parser.add_argument("--raw", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args(argv)
    meta, results = read_raw(args.raw)
    write_report(args.out, meta, results)
    print(f"wrote {args.out / MARKDOWN_NAME} and {args.out / PLOT_NAME}")


if __name__ == "__main__":
    main()
