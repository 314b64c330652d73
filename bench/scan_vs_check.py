"""Scan versus check on the same queries (issue 13): the bulk scan must find what checks find.

    python -m bench.scan_vs_check [--refs 20] [--distractors 30] [--seed 0] [--master local[2]]
        [--attacks resize_30,jpeg_q15,...] [--dataset PATH] [--keep]

Sets Django up on a fresh temporary ``IMGPROTECT_DATA_DIR`` (SQLite, files
under it, Celery tasks in-process, the CNN on; the backbone weights are linked
from ``<IMGPROTECT_DATA_DIR or var>/models``), then:

- references: ``--refs`` held-out images of ``training.data.list_items`` (a
  sixth photos, the rest logos, as ``bench.suites``), indexed by the product's
  ``index_images`` command into one collection;
- queries: every attack of ``--attacks`` (``bench.attacks``; logo-only ones on
  logo references) on every reference, and ``--distractors`` other held-out
  images (photos first, then logos), never indexed, all written as PNG into
  one directory;
- checks: each query file through ``check_submit`` (tasks eager: ``check_run``,
  then ``check_partial_run`` when the cheap passes found nothing: the complete
  check), its match reports read back from the database;
- scan: the same directory through ``scan_images --spark-master MASTER``, its
  match reports (``source_check`` empty, suspect = the file) read back.

Prints one markdown table (recall by verdict on the true reference, rank-1,
wrong-reference matches, FPR, query counts) with a row per path, per-attack
recall for both, and every query whose outcome differs. Exits 1 when the
scan's recall or FPR is more than 2 points from the check's.
"""
from __future__ import annotations

import argparse
import io
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ATTACKS = ("resize_30", "jpeg_q15", "crop_centre_60", "crop_corner_40", "rotate_7", "rotate_90", "mirror",
                   "caption_bar", "border_screenshot", "collage_2x2", "paste_logo", "mark_in_scene")
TOLERANCE_POINTS = 2.0
PHOTO_SHARE = 1 / 6  # as bench.suites: the held-out split has 25 photos and ~700 logos
MIN_BACKGROUNDS = 4  # held-out photos kept out of the references, as backgrounds of paste_logo and collages


@dataclass(frozen=True)
class QueryFile:
    key: str  # path relative to the query directory
    attack: str | None  # None: unrelated
    ref_key: str | None  # the true reference's key in the collection


@dataclass
class PathResult:
    name: str
    found: dict[str, list[tuple[str, float]]] = field(default_factory=dict)  # query key -> [(ref key, score)]
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _setup_django(data_dir: Path, models: Path | None) -> None:
    """A throwaway embedded instance: SQLite and media under ``data_dir``, tasks in-process, CNN on."""
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "AWS_STORAGE_BUCKET_NAME", "IMGPROTECT_BULK_WORK_DIR"):
        os.environ.pop(name, None)
    os.environ["IMGPROTECT_DATA_DIR"] = str(data_dir)
    os.environ["IMGPROTECT_CNN_ENABLED"] = "1"
    os.environ["DJANGO_SETTINGS_MODULE"] = "imgprotect.settings"
    data_dir.mkdir(parents=True, exist_ok=True)
    if models is not None and models.is_dir():
        (data_dir / "models").symlink_to(models.resolve(), target_is_directory=True)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    logging.disable(logging.INFO)  # one line per task and check otherwise; warnings still show


def pick_images(dataset: Path, refs: int, distractors: int, seed: int) -> tuple[list[Any], list[Any], list[Any]]:
    """References, distractors and backgrounds from the held-out split (as ``bench.suites``' chains)."""
    import numpy as np

    from training.data import list_items

    heldout = list_items(dataset).heldout
    rng = np.random.default_rng([seed, 13])
    photos = [i for i in heldout if i.kind == "photo" and i.path]
    logos = [i for i in heldout if i.kind == "logo" and i.path]
    photos = [photos[i] for i in rng.permutation(len(photos))]
    logos = [logos[i] for i in rng.permutation(len(logos))]
    n_photos = max(0, min(round(refs * PHOTO_SHARE), len(photos) - MIN_BACKGROUNDS))
    n_logos = refs - n_photos
    others = photos[n_photos:]
    n_logo_distractors = max(0, distractors - len(others))
    if refs < 1 or distractors < 0 or n_logos + n_logo_distractors > len(logos):
        raise SystemExit(f"{refs} references and {distractors} distractors do not fit the held-out split")
    references = photos[:n_photos] + logos[:n_logos]
    unrelated = others[:distractors] + logos[n_logos:n_logos + n_logo_distractors]
    return references, unrelated, others


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def build_queries(references: Sequence[Any], unrelated: Sequence[Any], backgrounds: Sequence[Any],
                  attacks: Sequence[str], seed: int, ref_dir: Path, query_dir: Path) -> list[QueryFile]:
    """Write the references (``ref-NNN.png``) and every query (PNG, lossless: both paths read the same bytes)."""
    from bench.dataset import Benchmark, Item, file_loader

    def item(source: Any) -> Item:
        return Item(source.name, source.kind, file_loader(source.path))

    bench = Benchmark([item(s) for s in references], [item(s) for s in unrelated], seed=seed,
                      backgrounds=[item(s) for s in backgrounds])
    ref_dir.mkdir(parents=True)
    ref_keys = []
    for ref_id, image in bench.reference_images():
        ref_keys.append(f"ref-{ref_id:03d}.png")
        image.save(ref_dir / ref_keys[-1])
    out = []
    for query in bench.attacked_queries(attacks):
        assert query.attack is not None and query.ref_id is not None
        key = f"copies/{query.attack}/{query.ref_id:03d}-{_safe(query.key.split('/', 1)[1])}.png"
        _write(query_dir / key, query.image)
        out.append(QueryFile(key, query.attack, ref_keys[query.ref_id]))
    for n, query in enumerate(bench.unrelated_queries()):
        key = f"unrelated/{n:03d}-{_safe(query.key)}.png"
        _write(query_dir / key, query.image)
        out.append(QueryFile(key, None, None))
    return out


def _write(path: Path, image: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "PNG")


def run_checks(org: Any, query_dir: Path, queries: Sequence[QueryFile]) -> PathResult:
    """Each query file through the product's check path, as the API submits it (tasks eager)."""
    from django.conf import settings

    from matching.core.loading import load_image
    from matching.models import Check, Match
    from matching.services import check_submit

    result = PathResult("check")
    started = time.perf_counter()
    for n, query in enumerate(queries, 1):
        data = (query_dir / query.key).read_bytes()
        loaded = load_image(data, max_bytes=settings.IMGPROTECT_MAX_UPLOAD_BYTES,
                            max_pixels=settings.IMGPROTECT_MAX_PIXELS)
        check = check_submit(organisation=org, data=data, loaded=loaded, filename=query.key.rsplit("/", 1)[-1])
        check.refresh_from_db()  # run_check and run_check_partial ran on commit, in this process
        if check.status != Check.Status.DONE or check.partial_search not in ("done", "skipped"):
            result.failed.append(f"{query.key}: check {check.status}, partial-copy search {check.partial_search}")
        result.found[query.key] = [
            (m.protected_image.key, m.score)
            for m in Match.objects.filter(source_check=check).select_related("protected_image")]
        if n % 25 == 0 or n == len(queries):
            print(f"[scan_vs_check] checks: {n}/{len(queries)}, {time.perf_counter() - started:.0f} s",
                  file=sys.stderr)
    result.seconds = time.perf_counter() - started
    return result


def run_scan(org: Any, query_dir: Path, queries: Sequence[QueryFile], master: str) -> PathResult:
    """The query directory through ``scan_images`` on Spark; the match reports it wrote."""
    from django.core.management import call_command

    from matching.bulk.load import suspect_key
    from matching.bulk.models import BulkJob, BulkJobError
    from matching.models import Match

    result = PathResult("scan")
    started = time.perf_counter()
    call_command("scan_images", "--org", org.slug, "--spark-master", master, str(query_dir),
                 stdout=io.StringIO(), stderr=sys.stderr)
    result.seconds = time.perf_counter() - started
    job = BulkJob.objects.filter(organisation=org, kind="scan").latest("created")
    if job.status != "done":
        raise SystemExit(f"the scan did not finish ({job.status}): {job.error}\n{job.log_tail}")
    result.failed = [f"{e.key}: {e.code} {e.reason}" for e in BulkJobError.objects.filter(job=job)]
    prefix = suspect_key(job.source, "")
    result.found = {q.key: [] for q in queries}
    for m in Match.objects.filter(organisation=org, source_check__isnull=True).select_related("protected_image"):
        key = m.suspect_key[len(prefix):]
        result.found.setdefault(key, []).append((m.protected_image.key, m.score))
    return result


@dataclass
class Figures:
    copies: int
    recall: float | None  # copies with a match report on the true reference
    rank1: float | None  # copies whose best-scoring match report is the true reference
    wrong: int  # copies with a match report on another reference
    unrelated: int
    fpr: float | None  # unrelated queries with any match report
    per_attack: dict[str, tuple[int, int]]  # attack -> (found, copies)


def _share(hits: int, total: int) -> float | None:
    return hits / total if total else None


def figures(result: PathResult, queries: Sequence[QueryFile]) -> Figures:
    copies = [q for q in queries if q.attack is not None]
    unrelated = [q for q in queries if q.attack is None]
    per_attack: dict[str, tuple[int, int]] = {}
    true = rank1 = wrong = 0
    for q in copies:
        found = result.found.get(q.key, [])
        hit = any(ref == q.ref_key for ref, _ in found)
        true += hit
        rank1 += bool(found) and max(found, key=lambda f: f[1])[0] == q.ref_key
        wrong += any(ref != q.ref_key for ref, _ in found)
        done, total = per_attack.get(q.attack or "", (0, 0))
        per_attack[q.attack or ""] = (done + hit, total + 1)
    false = sum(bool(result.found.get(q.key)) for q in unrelated)
    return Figures(len(copies), _share(true, len(copies)), _share(rank1, len(copies)), wrong, len(unrelated),
                   _share(false, len(unrelated)), per_attack)


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f} %"


def render(results: Sequence[PathResult], queries: Sequence[QueryFile], attacks: Sequence[str]) -> str:
    figs = [figures(r, queries) for r in results]
    lines = ["| path | queries | copies | recall (match on the true reference) | rank-1 (best match is the true "
             "reference) | copies matched to another reference | unrelated | FPR (unrelated with any match) | "
             "failed | wall s |", "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r, f in zip(results, figs, strict=True):
        lines.append(f"| {r.name} | {f.copies + f.unrelated} | {f.copies} | {_pct(f.recall)} | {_pct(f.rank1)} | "
                     f"{f.wrong} | {f.unrelated} | {_pct(f.fpr)} | {len(r.failed)} | {r.seconds:.0f} |")
    lines += ["", "| attack | copies | " + " | ".join(f"{r.name} recall" for r in results) + " |",
              "|---|--:|" + "--:|" * len(results)]
    for attack in attacks:
        if attack in figs[0].per_attack:
            total = figs[0].per_attack[attack][1]
            cells = " | ".join(f"{_pct(_share(*f.per_attack[attack]))}" for f in figs)
            lines.append(f"| {attack} | {total} | {cells} |")
    return "\n".join(lines)


def differences(check: PathResult, scan: PathResult, queries: Sequence[QueryFile]) -> list[str]:
    """Queries whose set of reported references differs between the two paths."""
    out = []
    for q in queries:
        a = sorted(ref for ref, _ in check.found.get(q.key, []))
        b = sorted(ref for ref, _ in scan.found.get(q.key, []))
        if a != b:
            truth = f"copy of {q.ref_key}" if q.ref_key else "unrelated"
            out.append(f"{q.key} ({truth}): check {a or 'nothing'}, scan {b or 'nothing'}")
    return out


def verdict(check: PathResult, scan: PathResult, queries: Sequence[QueryFile]) -> list[str]:
    """Why the scan is not within the tolerance of the check (empty: it is)."""
    a, b = figures(check, queries), figures(scan, queries)
    problems = []
    for label, x, y in (("recall", a.recall, b.recall), ("FPR", a.fpr, b.fpr)):
        if x is not None and y is not None and abs(x - y) * 100 > TOLERANCE_POINTS:
            problems.append(f"scan {label} {_pct(y)} is {abs(x - y) * 100:.1f} points from the check's {_pct(x)} "
                            f"(tolerance {TOLERANCE_POINTS:.0f})")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scan_vs_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--refs", type=int, default=20)
    parser.add_argument("--distractors", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--master", default="local[2]", help="Spark master of the scan (default local[2])")
    parser.add_argument("--attacks", default=",".join(DEFAULT_ATTACKS),
                        help="comma-separated bench.attacks names (default: a representative dozen)")
    parser.add_argument("--dataset", type=Path, default=None,
                        help="dataset folder (default: bench.dataset.default_dataset_root())")
    parser.add_argument("--models", type=Path,
                        default=Path(os.environ.get("IMGPROTECT_DATA_DIR") or REPO / "var") / "models",
                        help="the backbone weights' folder (default: the usual data dir's models/)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    args = parser.parse_args(argv)
    attacks = [a for a in args.attacks.split(",") if a]
    from bench.attacks import ATTACKS

    if unknown := [a for a in attacks if a not in ATTACKS]:
        parser.error(f"unknown attacks: {', '.join(unknown)}")

    tmp = Path(tempfile.mkdtemp(prefix="imgprotect-scan-vs-check-"))
    try:
        _setup_django(tmp / "data", args.models)
        from catalog import services as catalog_services
        from django.core.management import call_command

        from bench.dataset import default_dataset_root

        dataset = args.dataset or default_dataset_root()
        references, unrelated, backgrounds = pick_images(dataset, args.refs, args.distractors, args.seed)
        queries = build_queries(references, unrelated, backgrounds, attacks, args.seed, tmp / "references",
                                tmp / "queries")
        started = time.perf_counter()
        call_command("index_images", "--org", "bench", "--collection", "protected", str(tmp / "references"),
                     stdout=io.StringIO(), stderr=io.StringIO())
        org = catalog_services.organisation_get_or_create(slug="bench")
        print(f"[scan_vs_check] indexed {len(references)} references in {time.perf_counter() - started:.0f} s; "
              f"{len(queries)} queries", file=sys.stderr)
        check = run_checks(org, tmp / "queries", queries)
        scan = run_scan(org, tmp / "queries", queries, args.master)
        n_photos = sum(r.kind == "photo" for r in references)
        print(f"Scan vs check: {len(references)} held-out references ({n_photos} photos, "
              f"{len(references) - n_photos} logos), seed {args.seed}, scan on {args.master}, attacks "
              f"{', '.join(attacks)}; {len(unrelated)} unrelated held-out images.\n")
        print(render([check, scan], queries, attacks))
        for r in (check, scan):
            for line in r.failed:
                print(f"{r.name} failed: {line}")
        diff = differences(check, scan, queries)
        print(f"\n{len(diff)} queries where the two paths reported different references" + (":" if diff else "."))
        for line in diff:
            print(f"- {line}")
        problems = verdict(check, scan, queries)
        for line in problems:
            print(f"FAIL: {line}")
        if not problems:
            print(f"OK: the scan's recall and FPR are within {TOLERANCE_POINTS:.0f} points of the check's.")
        return 1 if problems else 0
    finally:
        if args.keep:
            print(f"[scan_vs_check] kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
