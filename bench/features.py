"""Compare ORB, AKAZE and SIFT for geometric verification, on real images.

    python -m bench.features [--dataset ../shared/datasets] [--pairs N]
        [--refs N] [--kinds orb,akaze,sift] [--json out.json]

References are photos and logos from the dataset. Each gets the attacked
copies below, made with a known reference -> query transform so the edit
report can be scored; every copy is verified against its own reference (true
accept) and against two other references of its group (false accept). On top,
``--pairs`` unrelated original pairs (photo/photo, logo/logo, photo/logo in
equal shares) measure the false-accept rate. Verification runs as in the
service; ``--sweep`` runs it at a low inlier floor instead and tabulates the
rates at higher ``min_inliers``.
Times are single-threaded (``cv2.setNumThreads(1)``), as in a worker.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from matching.core import geometry as geo

ATTACKS = (
    "crop_center_60", "crop_corner_40", "rotate_7", "rotate_90", "mirror", "scale_30",
    "jpeg_15", "squash_1.3", "perspective", "caption", "sticker_15", "logo_in_photo",
    "collage_2x2",
)
SWEEP = (8, 10, 12, 15, 18, 20, 25, 30)
_FLOOR = SWEEP[0]
_DEFAULT_DATASET = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@dataclass
class Item:
    name: str
    group: str  # "photo" | "logo"
    image: Image.Image


# --------------------------------------------------------------------------
# Attacks: each returns the attacked picture and the true reference -> query
# homography in corner-convention pixel coordinates (see geometry.py).


def _warp(img: Image.Image, h: np.ndarray, size: tuple[int, int], fill: int = 0) -> Image.Image:
    import cv2

    # OpenCV puts pixel centres at integers: conjugate by a half-pixel shift.
    shift = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1.0]])
    h_cv = np.linalg.inv(shift) @ h @ shift
    out = cv2.warpPerspective(np.asarray(img), h_cv, size, flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=(fill, fill, fill))
    return Image.fromarray(out)


def _translate(x: float, y: float) -> np.ndarray:
    return np.array([[1, 0, x], [0, 1, y], [0, 0, 1.0]])


def _scale(sx: float, sy: float) -> np.ndarray:
    return np.diag([sx, sy, 1.0])


def _crop(img: Image.Image, box: tuple[int, int, int, int]) -> tuple[Image.Image, np.ndarray]:
    return img.crop(box), _translate(-box[0], -box[1])


def resized(img: Image.Image, size: tuple[int, int]) -> tuple[Image.Image, np.ndarray]:
    return img.resize(size, Image.Resampling.LANCZOS), _scale(size[0] / img.width, size[1] / img.height)


def jpeg_roundtrip(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # very old Pillow: bitmap font only
        return ImageFont.load_default()


def attack(name: str, ref: Image.Image, rng: np.random.Generator,
           others: Callable[[int], list[Image.Image]]) -> tuple[Image.Image, np.ndarray] | None:
    """The attacked copy of ``ref`` and the true transform; None if ``name``
    does not apply (a logo is pasted into a photo, so ``ref`` must be a logo:
    the caller asks only for logos). ``others(k)`` gives k unrelated pictures."""
    w, h = ref.size
    if name in ("crop_center_60", "crop_corner_40"):
        f = math.sqrt(0.6 if name == "crop_center_60" else 0.4)
        cw, ch = round(w * f), round(h * f)
        if name == "crop_center_60":
            x0, y0 = (w - cw) // 2, (h - ch) // 2
        else:
            x0, y0 = int(rng.integers(0, 2)) * (w - cw), int(rng.integers(0, 2)) * (h - ch)
        return _crop(ref, (x0, y0, x0 + cw, y0 + ch))
    if name == "rotate_7":
        a = math.radians(7)
        c, s = math.cos(a), math.sin(a)
        rot = np.array([[c, s, 0], [-s, c, 0], [0, 0, 1.0]])  # counter-clockwise as seen
        nw, nh = math.ceil(w * c + h * s), math.ceil(w * s + h * c)
        hm = _translate(nw / 2, nh / 2) @ rot @ _translate(-w / 2, -h / 2)
        return _warp(ref, hm, (nw, nh)), hm
    if name == "rotate_90":
        return ref.transpose(Image.Transpose.ROTATE_90), np.array([[0, 1, 0], [-1, 0, w], [0, 0, 1.0]])
    if name == "mirror":
        return ref.transpose(Image.Transpose.FLIP_LEFT_RIGHT), np.array([[-1, 0, w], [0, 1, 0], [0, 0, 1.0]])
    if name == "scale_30":
        return resized(ref, (max(8, round(w * 0.3)), max(8, round(h * 0.3))))
    if name == "jpeg_15":
        return jpeg_roundtrip(ref, 15), np.eye(3)
    if name == "squash_1.3":
        return resized(ref, (w, round(h / 1.3)))
    if name == "perspective":
        import cv2

        src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
        inset = rng.uniform(0.04, 0.14, size=(4, 2)) * [w, h]
        dst = (src + np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]]) * inset).astype(np.float32)
        hm = cv2.getPerspectiveTransform(src, dst).astype(np.float64)
        return _warp(ref, hm, (w, h)), hm
    if name == "caption":
        bar = max(16, round(h * 0.18))
        out = Image.new("RGB", (w, h + bar), "white")
        out.paste(ref, (0, bar))
        ImageDraw.Draw(out).text((w / 2, bar / 2), "WHEN YOU SEE IT", fill="black",
                                 font=_font(max(8, bar // 2)), anchor="mm")
        return out, _translate(0, bar)
    if name == "sticker_15":
        out = ref.copy()
        r = math.sqrt(0.15 * w * h / math.pi)
        if 2 * r >= min(w, h):
            r = min(w, h) / 2 - 1
        cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
        d = ImageDraw.Draw(out)
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(255, 204, 0), outline=(120, 80, 0), width=3)
        for ex in (-0.35, 0.35):  # an emoji-like face
            d.ellipse((cx + ex * r - r * 0.1, cy - r * 0.35, cx + ex * r + r * 0.1, cy - r * 0.05), fill="black")
        d.arc((cx - r * 0.55, cy - r * 0.4, cx + r * 0.55, cy + r * 0.6), 20, 160, fill="black", width=4)
        return out, np.eye(3)
    if name == "logo_in_photo":
        photo = others(1)[0].copy()
        pw, ph = photo.size
        lw = round(pw * rng.uniform(0.15, 0.25))
        lh = max(1, round(lw * h / w))
        small, hs = resized(ref, (lw, lh))
        x0, y0 = int(rng.integers(0, pw - lw + 1)), int(rng.integers(0, max(1, ph - lh + 1)))
        photo.paste(small, (x0, y0))
        return photo, _translate(x0, y0) @ hs
    if name == "collage_2x2":
        cw, ch = max(8, w // 2), max(8, h // 2)
        out = Image.new("RGB", (2 * cw, 2 * ch))
        slot = int(rng.integers(0, 4))
        pics = others(3)
        for i in range(4):
            pos = ((i % 2) * cw, (i // 2) * ch)
            if i == slot:
                small, hs = resized(ref, (cw, ch))
                hm = _translate(*pos) @ hs
                out.paste(small, pos)
            else:
                out.paste(pics.pop().resize((cw, ch), Image.Resampling.LANCZOS), pos)
        return out, hm
    raise ValueError(f"unknown attack {name!r}")


# --------------------------------------------------------------------------
# Data


def load_items(root: Path, n_photos: int, n_logos: int, rng: np.random.Generator) -> list[Item]:
    photos = sorted(p for p in (root / "photos").rglob("*") if p.suffix.lower() in (".png", ".tif", ".tiff", ".jpg"))
    logos = sorted((root / "logos").glob("*.png"))
    if not photos or not logos:
        raise SystemExit(f"no photos/logos under {root}; pass --dataset")
    pick_p = [photos[i] for i in sorted(rng.permutation(len(photos))[:n_photos])]
    pick_l = [logos[i] for i in sorted(rng.permutation(len(logos))[:n_logos])]
    items = []
    for group, paths in (("photo", pick_p), ("logo", pick_l)):
        for p in paths:
            with Image.open(p) as im:
                items.append(Item(f"{p.parent.name}/{p.name}", group, im.convert("RGB")))
    return items


# --------------------------------------------------------------------------
# Running


@dataclass
class Outcome:
    accepted: bool
    inliers: int
    reason: str
    seconds: float
    errors: dict[str, float] = field(default_factory=dict)
    pair: str = ""
    spread: float = 0.0
    ratio: float = 0.0
    appearance: float | None = None


def _iou(a: list[list[float]], b: list[list[float]]) -> float:
    import cv2

    pa, pb = np.array(a, np.float32), np.array(b, np.float32)
    if len(pa) < 3 or len(pb) < 3:
        return 0.0
    inter, _ = cv2.intersectConvexConvex(pa, pb)
    union = cv2.contourArea(pa) + cv2.contourArea(pb) - inter
    return float(inter / union) if union > 0 else 0.0


def _symmetric(img: Image.Image) -> bool:
    g = np.asarray(img.convert("L").resize((64, 64)), np.float32)
    return float(np.abs(g - g[:, ::-1]).mean()) < 6.0


def _errors(v: geo.Verification, truth: np.ndarray, ref: Item, query: Image.Image) -> dict[str, float]:
    assert v.edit is not None
    true_edit, true_poly = geo.edit_from_transform(truth, ref.image.size, query.size)
    rot = (v.edit.rotation_deg - true_edit.rotation_deg + 180) % 360 - 180
    return {
        "iou": _iou(v.query_polygon, true_poly),
        "scale": abs(v.edit.scale / true_edit.scale - 1),
        "rotation": abs(rot),
        # A left-right symmetric picture (many logos) is its own mirror image:
        # either answer is right there.
        "mirror_ok": float(v.edit.mirrored == true_edit.mirrored or _symmetric(ref.image)),
        "visible": abs(v.edit.visible_fraction - true_edit.visible_fraction),
        "coverage": abs(v.edit.query_coverage - true_edit.query_coverage),
    }


def _timed_verify(q: geo.Features, r: geo.Features, **kw: Any) -> tuple[geo.Verification, float]:
    t = time.perf_counter()
    v = geo.verify(q, r, **kw)
    return v, time.perf_counter() - t


def run_kind(kind: str, items: list[Item], queries: list[tuple[int, str, Image.Image, np.ndarray, list[int]]],
             pairs: list[tuple[int, int, str]], opts: argparse.Namespace) -> dict[str, Any]:
    ext: dict[str, Any] = dict(kind=kind, max_side=opts.max_side, max_features=opts.max_features, clahe=opts.clahe)
    qext: dict[str, Any] = dict(ext, max_features=opts.query_features)
    # --sweep verifies at a low floor so one run gives the rates at every
    # higher min_inliers; otherwise verification runs exactly as in service.
    need = opts.min_inliers or geo.MIN_INLIERS[kind]
    vkw = dict(method=opts.method, ratio=opts.ratio, min_inliers=_FLOOR if opts.sweep else need)
    # Reference features (cached in production) and query-side features with mirror.
    t = time.perf_counter()
    ref_feats = [geo.extract_features(it.image, **ext) for it in items]
    t_ref = (time.perf_counter() - t) / len(items)
    q_orig = {i: geo.extract_features(items[i].image, with_mirror=True, **qext)
              for i in sorted({i for i, _, _ in pairs})}
    per_attack: dict[str, list[Outcome]] = defaultdict(list)
    wrong: dict[str, list[Outcome]] = defaultdict(list)
    t_query: list[float] = []
    for qi, (ri, name, img, truth, wrong_refs) in enumerate(queries):
        t = time.perf_counter()
        qf = geo.extract_features(img, with_mirror=True, **qext)
        t_query.append(time.perf_counter() - t)
        v, dt = _timed_verify(qf, ref_feats[ri], **vkw)
        errs = _errors(v, truth, items[ri], img) if v.accepted else {}
        per_attack[name].append(Outcome(v.accepted, v.inliers, v.reason, dt, errs, items[ri].name,
                                        v.spread, v.inlier_ratio, v.appearance))
        for wi in wrong_refs:
            wv, wdt = _timed_verify(qf, ref_feats[wi], **vkw)
            wrong[name].append(Outcome(wv.accepted, wv.inliers, wv.reason, wdt,
                                       pair=f"{items[ri].name} {items[wi].name}", spread=wv.spread,
                                       ratio=wv.inlier_ratio, appearance=wv.appearance))
            if wv.accepted and wv.inliers >= need:
                print(f"  [{kind}] false accept: {name} of {items[ri].name} vs {items[wi].name} "
                      f"({wv.inliers} inliers)", file=sys.stderr)
        if opts.verbose and (qi + 1) % 200 == 0:
            print(f"  [{kind}] {qi + 1}/{len(queries)} queries", file=sys.stderr)
    unrelated: dict[str, list[Outcome]] = defaultdict(list)
    for i, j, stratum in pairs:
        v, dt = _timed_verify(q_orig[i], ref_feats[j], **vkw)
        unrelated[stratum].append(Outcome(v.accepted, v.inliers, v.reason, dt,
                                          pair=f"{items[i].name} {items[j].name}", spread=v.spread,
                                          ratio=v.inlier_ratio, appearance=v.appearance))
        if v.accepted and v.inliers >= need:
            print(f"  [{kind}] false accept: {items[i].name} vs {items[j].name} ({v.inliers} inliers)",
                  file=sys.stderr)
    return {"kind": kind, "t_ref": t_ref, "t_query": t_query, "attacks": per_attack,
            "wrong": wrong, "unrelated": unrelated}


def _rate(outs: list[Outcome], t: int) -> float:
    return sum(o.accepted and o.inliers >= t for o in outs) / max(len(outs), 1)


def _med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def report(results: list[dict[str, Any]], opts: argparse.Namespace) -> str:
    lines = [f"max_side = {opts.max_side}, max_features = {opts.max_features} (suspect images "
             f"{opts.query_features}), "
             f"method = {opts.method}, clahe = {opts.clahe}, ratio = {opts.ratio or 'default'}", ""]
    for res in results:
        kind = res["kind"]
        t = opts.min_inliers or geo.MIN_INLIERS[kind]
        lines += [f"### {kind} (min_inliers {t})", "",
                  "| attack | n | accepted | IoU (mean) | scale err (median) | rotation err ° (median) "
                  "| mirror ok | visible err (mean) | coverage err (mean) | verify ms (mean) | wrong-ref FA |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        all_true: list[Outcome] = []
        for name in ATTACKS:
            outs = res["attacks"].get(name, [])
            if not outs:
                continue
            all_true += outs
            ok = [o for o in outs if o.accepted and o.inliers >= t]
            e = lambda k: [o.errors[k] for o in ok]  # noqa: E731
            mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
            w = res["wrong"].get(name, [])
            lines.append(
                f"| {name} | {len(outs)} | {_rate(outs, t):.3f} | {mean(e('iou')):.3f} | {_med(e('scale')):.3f} "
                f"| {_med(e('rotation')):.2f} | {mean(e('mirror_ok')):.3f} | {mean(e('visible')):.3f} "
                f"| {mean(e('coverage')):.3f} | {1000 * mean([o.seconds for o in outs]):.2f} "
                f"| {sum(o.accepted and o.inliers >= t for o in w)}/{len(w)} |")
        un = [o for v in res["unrelated"].values() for o in v]
        wr = [o for v in res["wrong"].values() for o in v]
        tq = res["t_query"]
        lines += ["", f"- all attacks: true-accept rate {_rate(all_true, t):.3f} over {len(all_true)} copies",
                  f"- extract: reference {1000 * res['t_ref']:.1f} ms; query with mirror "
                  f"{1000 * _med(tq):.1f} ms median",
                  f"- verify: true pair {1000 * _med([o.seconds for o in all_true]):.2f} ms median, "
                  f"unrelated pair {1000 * _med([o.seconds for o in un]):.2f} ms median "
                  f"(unrelated pairs also try the mirrored features)"]
        for stratum, outs in sorted(res["unrelated"].items()):
            lines.append(f"- unrelated {stratum}: {sum(o.accepted and o.inliers >= t for o in outs)}"
                         f"/{len(outs)} accepted")
        n_fa = sum(o.accepted and o.inliers >= t for o in un + wr)
        lines += [f"- **false accepts: {n_fa}/{len(un) + len(wr)} "
                  f"({n_fa / max(len(un) + len(wr), 1):.5f})** (unrelated originals + attacked copies "
                  "against wrong references)", ""]
        if opts.sweep:
            lines += ["| min_inliers | " + " | ".join(str(s) for s in SWEEP) + " |",
                      "|---|" + "---|" * len(SWEEP),
                      "| true accept | " + " | ".join(f"{_rate(all_true, s):.3f}" for s in SWEEP) + " |",
                      "| false accept | " + " | ".join(f"{_rate(un + wr, s):.5f}" for s in SWEEP) + " |", ""]
        reasons: dict[str, int] = defaultdict(int)
        for o in un + wr:
            if not o.accepted:
                reasons[o.reason.split(" (")[0].split(":")[0]] += 1
        lines.append("rejection reasons (unrelated): " + ", ".join(
            f"{k} {v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])))
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", type=Path, default=_DEFAULT_DATASET)
    p.add_argument("--kinds", default="orb,akaze,sift")
    p.add_argument("--refs", type=int, default=60, help="photos and logos each used as references")
    p.add_argument("--pool-logos", type=int, default=600, help="logos in the unrelated-pair pool")
    p.add_argument("--pairs", type=int, default=3000, help="unrelated original pairs")
    p.add_argument("--wrong", type=int, default=2, help="wrong references per attacked copy")
    p.add_argument("--attacks", default=",".join(ATTACKS))
    p.add_argument("--min-inliers", type=int, default=None, help="default: per kind, geometry.MIN_INLIERS")
    p.add_argument("--max-side", type=int, default=geo.DEFAULT_MAX_SIDE)
    p.add_argument("--max-features", type=int, default=geo.DEFAULT_MAX_FEATURES)
    p.add_argument("--query-features", type=int, default=geo.DEFAULT_QUERY_MAX_FEATURES,
                   help="max features of suspect images")
    p.add_argument("--method", default=geo.DEFAULT_METHOD, choices=("magsac", "ransac"))
    p.add_argument("--ratio", type=float, default=None)
    p.add_argument("--clahe", action=argparse.BooleanOptionalAction, default=geo.DEFAULT_CLAHE)
    p.add_argument("--sweep", action="store_true", help="verify at min_inliers 8 and tabulate higher ones")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write raw per-kind figures here")
    p.add_argument("--verbose", action="store_true")
    opts = p.parse_args(argv)

    import cv2

    cv2.setNumThreads(1)
    rng = np.random.default_rng(opts.seed)
    n_photos = 10**6  # every photo: there are only ~125
    items = load_items(opts.dataset, n_photos, max(opts.refs, opts.pool_logos), rng)
    photos = [i for i, it in enumerate(items) if it.group == "photo"]
    logos = [i for i, it in enumerate(items) if it.group == "logo"]
    refs = [int(i) for i in rng.permutation(photos)[:opts.refs]] + [int(i) for i in rng.permutation(logos)[:opts.refs]]
    attacks = [a for a in opts.attacks.split(",") if a]
    queries: list[tuple[int, str, Image.Image, np.ndarray, list[int]]] = []
    for ri in refs:
        group = photos if items[ri].group == "photo" else logos
        for name in attacks:
            if name == "logo_in_photo" and items[ri].group != "logo":
                continue
            exclude = {ri}

            def others(k: int, group: list[int] = group, exclude: set[int] = exclude) -> list[Image.Image]:
                src = photos if name == "logo_in_photo" else group
                pick = [int(i) for i in rng.choice([i for i in src if i not in exclude], size=k, replace=False)]
                exclude.update(pick)  # pasted pictures are not "wrong" references below
                return [items[i].image for i in pick]

            made = attack(name, items[ri].image, rng, others)
            if made is None:
                continue
            cand = [i for i in group if i not in exclude]
            wrong = [int(i) for i in rng.choice(cand, size=min(opts.wrong, len(cand)), replace=False)]
            queries.append((ri, name, made[0], made[1], wrong))
    strata = (("photo/photo", photos, photos), ("logo/logo", logos, logos), ("photo/logo", photos, logos))
    pairs: list[tuple[int, int, str]] = []
    for k, (label, a, b) in enumerate(strata):
        want = opts.pairs // 3 + (1 if k < opts.pairs % 3 else 0)
        seen: set[tuple[int, int]] = set()
        while len(seen) < min(want, len(a) * len(b) - (len(a) if a is b else 0)):
            i, j = int(rng.choice(a)), int(rng.choice(b))
            if i != j:
                if label == "photo/logo" and rng.random() < 0.5:
                    i, j = j, i
                seen.add((i, j))
        pairs += [(i, j, label) for i, j in sorted(seen)]
    print(f"{len(items)} images, {len(refs)} references, {len(queries)} attacked copies, "
          f"{len(pairs)} unrelated pairs", file=sys.stderr)
    results = []
    for kind in opts.kinds.split(","):
        t = time.perf_counter()
        results.append(run_kind(kind, items, queries, pairs, opts))
        print(f"[{kind}] done in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    print(report(results, opts))
    if opts.json:
        raw = [{"kind": r["kind"], "t_ref": r["t_ref"], "t_query": r["t_query"],
                **{sec: {k: [o.__dict__ for o in v] for k, v in r[sec].items()}
                   for sec in ("attacks", "wrong", "unrelated")}} for r in results]
        opts.json.write_text(json.dumps(raw))


if __name__ == "__main__":
    main()
