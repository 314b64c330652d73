"""The ``chains`` and ``marks`` suites of ``python -m bench.run --suite ...`` (issues 14 and 15).

    python -m bench.run --suite chains --refs 60 --copies-per-ref 4 --distractors 100
    python -m bench.run --suite marks --refs 60 --copies-per-ref 2 --distractors 100

Both draw every image from the **held-out** part of ``training.data.list_items``
(every 5th photo and logo by sorted name), never from what the CNN head was
trained on: references, distractors and the photos used as backgrounds.

- **chains**: references are held-out photos and logos; each gets
  ``copies-per-ref`` copies, each made by ``bench.chains.random_chain`` (1-3
  edits) and named by it; every distractor (the other held-out photos, then
  held-out logos) is edited by a chain too. Figures per edit (every chain that
  contains it), per chain length and overall.
- **marks**: references are held-out logo tiles; each copy is the mark keyed
  out of its tile and composited into a held-out photo
  (``bench.attacks.composite_mark``, even copies) or printed on a procedural
  product-like surface: fabric, wood, paper, brushed metal
  (``bench.surfaces.print_on_surface``, odd copies); the distractors are other
  held-out logos composited the same ways, alternately (never indexed): a
  logo-rich unrelated set, each logo composited again when more are asked for
  than there are. Figures in photos, on surfaces, per condition (mark width,
  perspective, rotation, shading, blur, shadow, surface) and overall. None of
  this is ``training.augment``'s code (training makes its mark views with
  ``augment.mark_view``).

A copy is a function of (seed, suite, the image's name, copy number), so a
run's copies do not depend on the other images picked. Reports:
``benchmark-<suite>.md``, ``benchmark-<suite>-pr.png``,
``benchmark-<suite>-raw.json.gz`` in ``--out``.
"""
from __future__ import annotations

import sys
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from PIL import Image

from .attacks import Polygon, composite_mark, key_mark
from .chains import EDIT_NAMES, MAX_LENGTH, random_chain
from .metrics import Outcome, SystemResult, micro_ap, outcome, recall_at_precision
from .report import write_pr_plot, write_raw
from .surfaces import SURFACES, print_on_surface
from .systems import System, index_systems

__all__ = ["SUITES", "SuiteData", "SuiteQuery", "build_suite", "render_suite", "run_suite",
           "summarise_suite", "write_suite_report"]

SUITES = ("chains", "marks")
DEFAULT_REFS = 60
DEFAULT_COPIES = {"chains": 4, "marks": 2}
DEFAULT_DISTRACTORS = 100
# chains: a sixth of the references are photos (the held-out split has 25 photos, 694 logos),
# so that photos stay over for distractors and backgrounds.
PHOTO_SHARE = 1 / 6
MIN_OTHER_PHOTOS = 4
MARK_CONDITIONS = ("width 10-15 %", "width 15-20 %", "width 20-25 %", "perspective", "rotation",
                   "shading", "blur", "shadow", *(f"surface: {kind}" for kind in SURFACES))
ON_SURFACE = "on a surface"  # bench.surfaces.print_on_surface's tag; the other copies are in photos


@dataclass(frozen=True)
class Source:
    key: str  # "photo:kodak24/kodim05.png", "logo:adidas.png" (training.data's names)
    kind: str
    path: Path
    copy: int = 0  # a distractor's composite number (marks: a logo composited again, elsewhere)

    def image(self) -> Image.Image:
        with Image.open(self.path) as im:
            return im.convert("RGB")


@dataclass(frozen=True)
class SuiteQuery:
    key: str
    image: Image.Image
    attack: str | None  # the copy's name (``chain:crop+text``, ``mark_in_scene``); None: distractor
    ref_id: int | None
    region: Polygon | None
    kind: str
    tags: tuple[str, ...]  # what was done to it: a chain's edits, a composite's conditions


@dataclass
class SuiteData:
    suite: str
    references: list[Source]
    distractors: list[Source]
    backgrounds: list[Source]
    copies_per_ref: int
    seed: int

    def __post_init__(self) -> None:
        self._cache: dict[int, Image.Image] = {}

    def background(self, rng: np.random.Generator) -> Image.Image:
        """A random held-out photo that is not a reference (decoded once, then shared)."""
        i = int(rng.integers(0, len(self.backgrounds)))
        if i not in self._cache:
            self._cache[i] = self.backgrounds[i].image()
        return self._cache[i]

    def rng(self, key: str, copy: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, zlib.crc32(self.suite.encode()), zlib.crc32(key.encode()),
                                      copy])

    def reference_images(self) -> list[tuple[int, Image.Image]]:
        # For marks, the protected image is the logo tile as its owner uploads it.
        return [(i, s.image()) for i, s in enumerate(self.references)]

    def _edit(self, source: Source, copy: int, *, surface: bool = False
              ) -> tuple[Image.Image, str, Polygon | None, tuple[str, ...]]:
        rng = self.rng(source.key, copy)
        if self.suite == "chains":
            chain = random_chain(source.image(), rng, self.background)
            return chain.image, chain.name, None, (*chain.edits, f"length {len(chain.steps)}")
        if surface:  # printed on a product-like surface (bench/surfaces.py)
            image, region, tags = print_on_surface(key_mark(source.image()), rng)
            return image, "mark_on_surface", region, tags
        image, region, tags = composite_mark(key_mark(source.image()), self.background(rng), rng)
        return image, "mark_in_scene", region, tags

    def queries(self) -> Iterator[SuiteQuery]:
        """Every copy of every reference, then every (edited) distractor. Marks: odd copies and every
        other distractor are printed on a surface, the others composited into a photo."""
        for ref_id, source in enumerate(self.references):
            for copy in range(self.copies_per_ref):
                image, name, region, tags = self._edit(source, copy, surface=copy % 2 == 1)
                yield SuiteQuery(f"{name}/{source.key}#{copy}", image, name, ref_id, region, source.kind, tags)
        for i, source in enumerate(self.distractors):
            image, name, _region, tags = self._edit(source, source.copy, surface=i % 2 == 1)
            suffix = f"#{source.copy}" if source.copy else ""
            yield SuiteQuery(f"{name}/{source.key}{suffix}", image, None, None, None, source.kind, tags)

    @property
    def n_queries(self) -> int:
        return len(self.references) * self.copies_per_ref + len(self.distractors)


def build_suite(suite: str, root: str | Path | None = None, *, refs: int = DEFAULT_REFS,
                copies_per_ref: int | None = None, distractors: int = DEFAULT_DISTRACTORS,
                seed: int = 0) -> SuiteData:
    """The seeded split of the dataset's held-out images for ``suite``."""
    from training.data import list_items

    from .dataset import default_dataset_root

    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r} (known: {', '.join(SUITES)})")
    base = Path(root) if root is not None else default_dataset_root()
    try:
        heldout = list_items(base).heldout
    except SystemExit as exc:  # list_items' way of saying the folder is empty
        raise FileNotFoundError(str(exc)) from None
    photos = [Source(i.name, "photo", i.path) for i in heldout if i.kind == "photo" and i.path]
    logos = [Source(i.name, "logo", i.path) for i in heldout if i.kind == "logo" and i.path]
    copies = DEFAULT_COPIES[suite] if copies_per_ref is None else copies_per_ref
    if refs < 1 or copies < 1 or distractors < 0:
        raise ValueError("--refs and --copies-per-ref must be at least 1, --distractors at least 0")
    rng = np.random.default_rng([seed, zlib.crc32(suite.encode())])
    photos = [photos[i] for i in rng.permutation(len(photos))]
    logos = [logos[i] for i in rng.permutation(len(logos))]
    if suite == "marks":
        if len(photos) < 1 or refs >= len(logos):
            raise ValueError(f"{refs} logos leave none of the {len(logos)} held-out logos for distractors "
                             f"(and at least one held-out photo is needed)")
        # More distractors than logos left: each is composited again (another place, size, photo),
        # so that --distractors 1000 gives a false-positive bound of about 0.3 % (95 %).
        pool = logos[refs:]
        unrelated = [replace(pool[i % len(pool)], copy=i // len(pool)) for i in range(distractors)]
        return SuiteData(suite, logos[:refs], unrelated, photos, copies, seed)
    n_photos = max(0, min(round(refs * PHOTO_SHARE), len(photos) - MIN_OTHER_PHOTOS))
    n_logos = refs - n_photos
    others = photos[n_photos:]
    if not others or n_logos >= len(logos):
        raise ValueError(f"{refs} references leave no distractors in the held-out "
                         f"{len(photos)} photos and {len(logos)} logos")
    references = photos[:n_photos] + logos[:n_logos]
    # The other held-out photos, then the other held-out logos; past the end of that pool each is
    # edited again by another chain (``Source.copy``), so that --distractors 1000 fits the held-out
    # fifth and a 0.5 % bound on false positives means something (issue 15 item 3).
    pool = others + logos[n_logos:]
    unrelated = [replace(pool[i % len(pool)], copy=i // len(pool)) for i in range(distractors)]
    return SuiteData(suite, references, unrelated, others, copies, seed)


def run_suite(data: SuiteData, systems: Sequence[System], *, top_k: int = 5,
              log: TextIO | None = sys.stderr) -> tuple[list[SystemResult], list[tuple[str, ...]]]:
    """Index the references, query every copy and distractor; the outcomes per system and
    each query's tags (in the outcomes' order)."""
    results = index_systems(data.reference_images(), systems, log=log)
    tags: list[tuple[str, ...]] = []
    total, started = data.n_queries, time.perf_counter()
    for query in data.queries():
        for system, result in zip(systems, results, strict=True):
            start = time.perf_counter()
            hits = system.query(query.image, top_k)
            ms = 1000 * (time.perf_counter() - start)
            result.outcomes.append(outcome(attack=query.attack, ref_id=query.ref_id, region=query.region,
                                           size=query.image.size, hits=hits[:top_k], ms=ms, kind=query.kind))
        tags.append(query.tags)
        if log and (len(tags) % 50 == 0 or len(tags) == total):
            print(f"[bench] {len(tags)}/{total} queries, {time.perf_counter() - started:.0f} s", file=log)
    return results, tags


def _mean(values: Sequence[bool] | Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _figures(copies: list[Outcome], unrelated_all: list[Outcome], unrelated_tagged: list[Outcome]) -> dict[str, Any]:
    ious = [o.iou for o in copies if o.has_region and o.iou is not None]
    return {
        "n": len(copies),
        "rank1": _mean([o.rank == 1 for o in copies]),
        "micro_ap": micro_ap(copies + unrelated_all) if copies else None,
        "recall_at_99p": recall_at_precision(copies + unrelated_all) if copies else None,
        "tpr": _mean([o.true_match for o in copies]),
        "n_unrelated": len(unrelated_tagged),
        "fpr": _mean([o.other_match for o in unrelated_tagged]),
        "mean_iou": _mean(ious) if ious else None,
        "boxed": _mean([o.true_match and (o.iou or 0.0) >= 0.5 for o in copies if o.has_region])
        if ious else None,
    }


def summarise_suite(suite: str, result: SystemResult, tags: Sequence[tuple[str, ...]]) -> dict[str, Any]:
    """Rows ``overall``, then per group (chain length), then per tag (edit / condition).

    rank-1, TPR, µAP and recall at 99 % precision are over the row's copies, µAP
    and recall pooled with *every* distractor; FPR is over the row's
    distractors (those edited with that edit or composited under that condition).
    """
    rows: list[tuple[str, str, list[int]]] = [("overall", "all", list(range(len(tags))))]
    if suite == "chains":
        rows += [(f"length {k}", "length", [i for i, t in enumerate(tags) if f"length {k}" in t])
                 for k in range(1, MAX_LENGTH + 1)]
        names: Sequence[str] = EDIT_NAMES
    else:
        photo = [i for i, t in enumerate(tags) if ON_SURFACE not in t]
        rows.append(("in a photo", "group", photo))
        plain = [i for i in photo if not set(tags[i]) & set(MARK_CONDITIONS[3:])]
        rows.append(("in a photo, no perspective, rotation, shading or blur", "group", plain))
        rows.append((ON_SURFACE, "group", [i for i, t in enumerate(tags) if ON_SURFACE in t]))
        names = MARK_CONDITIONS
    rows += [(name, "tag", [i for i, t in enumerate(tags) if name in t]) for name in names]
    unrelated_all = [o for o in result.outcomes if not o.is_copy]
    out = []
    for label, group, idx in rows:
        chosen = [result.outcomes[i] for i in idx]
        copies = [o for o in chosen if o.is_copy]
        out.append({"row": label, "group": group,
                    **_figures(copies, unrelated_all, [o for o in chosen if not o.is_copy])})
    return {"system": result.name, "rows": out,
            "query_ms_p50": float(np.percentile([o.ms for o in result.outcomes], 50)) if result.outcomes else None}


def _f(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f} %"


def render_suite(meta: dict[str, Any], summaries: Sequence[dict[str, Any]]) -> str:
    """The markdown report: an overall table of every system, then one table per system."""
    suite = meta["suite"]
    title = {"chains": "Chained edits", "marks": "Marks composited into scenes and printed on surfaces"}[suite]
    lines = [f"# {title}", "", f"Generated by `{meta['command']}` on {meta['created']}.", "",
             f"Data: {meta['dataset']}, held-out split of `training.data` only, seed {meta['seed']}: "
             f"{meta['n_refs']} references ({meta['refs_by_kind']}) indexed, {meta['copies_per_ref']} "
             f"copies each ({meta['n_copies']}), {meta['n_unrelated']} distractors "
             f"({meta['unrelated_by_kind']}, edited like the copies) queried; top {meta['top_k']} hits.", ""]
    lines += ["| system | copies | rank-1 | µAP | R@99P | TPR (verdict) | distractors | FPR | "
              "query ms p50 |", "| --- | --: | --: | --: | --: | --: | --: | --: | --: |"]
    for s in summaries:
        o = s["rows"][0]
        lines.append(f"| {s['system']} | {o['n']} | {_f(o['rank1'])} | {_f(o['micro_ap'], 3)} | "
                     f"{_f(o['recall_at_99p'])} | {_f(o['tpr'])} | {o['n_unrelated']} | {_pct(o['fpr'])} | "
                     f"{_f(s['query_ms_p50'], 1)} |")
    lines.append("")
    if meta.get("unavailable"):
        for name, why in meta["unavailable"].items():
            lines += [f"**{name}** did not run: {why}", ""]
    has_iou = any(r["mean_iou"] is not None for s in summaries for r in s["rows"])
    for s in summaries:
        lines += [f"## {s['system']}", ""]
        header = "| row | copies | rank-1 | µAP | R@99P | TPR | distractors | FPR |"
        align = "| --- | --: | --: | --: | --: | --: | --: | --: |"
        if has_iou:
            header += " IoU / boxed |"
            align += " --: |"
        lines += [header, align]
        for r in s["rows"]:
            label = f"**{r['row']}**" if r["group"] == "all" else (f"edit: {r['row']}" if r["group"] == "tag"
                                                                    and suite == "chains" else r["row"])
            line = (f"| {label} | {r['n']} | {_f(r['rank1'])} | {_f(r['micro_ap'], 3)} | "
                    f"{_f(r['recall_at_99p'])} | {_f(r['tpr'])} | {r['n_unrelated']} | {_pct(r['fpr'])} |")
            if has_iou:
                line += f" {_f(r['mean_iou'])} / {_f(r['boxed'])} |"
            lines.append(line)
        lines.append("")
    lines += [
        "## Definitions", "",
        "- *rank-1*: the top hit is the true reference, whatever the verdict.",
        "- *TPR (verdict)*: the system's own `match` is true on the true reference (any of its top hits).",
        "- *µAP* and *R@99P* (recall at 99 % precision): every copy of the row and **every** distractor "
        "contribute their top hit, ranked by score; correct when it is the true reference.",
        "- *FPR*: share of the row's distractors (edited with that edit, or composited under that "
        "condition) with any hit whose `match` is true.",
        "- *IoU / boxed*: mean IoU of the true reference's returned region with the mark's box / share "
        "of copies matched and boxed at IoU >= 0.5." if has_iou else "",
        "",
    ]
    return "\n".join(lines)


def write_suite_report(out: Path, meta: dict[str, Any], results: Sequence[SystemResult],
                       tags: Sequence[tuple[str, ...]], raw: Path | None = None) -> tuple[str, list[dict[str, Any]]]:
    suite = meta["suite"]
    summaries = [summarise_suite(suite, r, tags) for r in results]
    markdown = render_suite(meta, summaries)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"benchmark-{suite}.md").write_text(markdown)
    write_pr_plot(out / f"benchmark-{suite}-pr.png", results,
                  f"{suite}: {meta['n_copies']} copies, {meta['n_unrelated']} distractors, "
                  f"{meta['n_refs']} references (seed {meta['seed']})")
    # The raw file keys each copy by its name (a chain's name, or mark_in_scene).
    names = sorted({o.attack for o in results[0].outcomes if o.attack is not None}) if results else []
    write_raw(raw or out / f"benchmark-{suite}-raw.json.gz",
              meta={**meta, "attacks": names, "query_tags": [list(t) for t in tags]}, results=results)
    return markdown, summaries
