"""The benchmark harness: attacks do what they say, metrics give known values, a run reports."""
from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps
from skimage import data

from bench import calibrate, run
from bench.attacks import ATTACK_NAMES, ATTACKS, Polygon, rect
from bench.dataset import Benchmark, Item, attack_rng, build_benchmark
from bench.metrics import (
    Outcome,
    SystemResult,
    micro_ap,
    outcome,
    polygon_iou,
    recall_at_precision,
    summarise,
)
from bench.report import read_raw
from bench.systems import Hit, PDQBaseline, PHashBaseline, SystemUnavailable, load_system

# Attacks whose result says where the reference went; the others keep the frame.
WITH_REGION = {"crop_centre_60", "crop_corner_40", "rotate_7", "caption_bar", "border_screenshot",
               "perspective", "paste_logo", "collage_2x2", "mark_in_scene"}
# Of those, the ones that paste the reference unrotated at an axis-aligned box.
AXIS_ALIGNED = WITH_REGION - {"rotate_7", "perspective", "mark_in_scene"}


def _photo(name: str, side: int = 200) -> Image.Image:
    image = Image.fromarray(getattr(data, name)()).convert("RGB")
    image.thumbnail((side, side))
    return image


def _logo(i: int) -> Image.Image:
    """A flat brand-like mark on a tile, different for each ``i``."""
    rng = np.random.default_rng(i)
    tile = Image.new("RGB", (128, 128), tuple(int(v) for v in rng.integers(150, 256, 3)))
    draw = ImageDraw.Draw(tile)
    ink = tuple(int(v) for v in rng.integers(0, 110, 3))
    if i % 3 == 0:
        draw.ellipse((20 + i, 24, 108, 104 - i), fill=ink)
    elif i % 3 == 1:
        draw.polygon([(64, 12 + i), (116, 110), (12, 110 - 2 * i)], fill=ink)
    else:
        draw.rectangle((16, 30 + i, 70, 100), fill=ink)
        draw.ellipse((60, 20, 112, 72 + i), fill=ink)
    return tile


def _item(key: str, kind: str, image: Image.Image) -> Item:
    return Item(key, kind, lambda: image)


@pytest.fixture(scope="module")
def reference() -> Image.Image:
    # Not square (so rotations and squashes show), and no near-black pixel, so the
    # black fill of rotate_7 / perspective marks exactly where the picture is not.
    pixels = np.asarray(_photo("chelsea", 180), dtype=np.int16)
    return Image.fromarray(np.clip(pixels, 40, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def backgrounds() -> list[Image.Image]:
    return [_photo(name, 240) for name in ("coffee", "rocket", "astronaut")]


def _distractor(backgrounds: list[Image.Image]):  # type: ignore[no-untyped-def]
    return lambda rng: backgrounds[int(rng.integers(0, len(backgrounds)))]


def _region_mask(region: Polygon, size: tuple[int, int]) -> np.ndarray:
    canvas = Image.new("1", size, 0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in region], fill=1)
    return np.asarray(canvas, dtype=bool)


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_attack_returns_a_valid_image_and_a_sane_region(name: str, reference: Image.Image,
                                                        backgrounds: list[Image.Image]) -> None:
    result = ATTACKS[name](reference, np.random.default_rng(3), _distractor(backgrounds))
    image = result.image
    assert image.mode == "RGB" and min(image.size) >= 8
    again = ATTACKS[name](reference, np.random.default_rng(3), _distractor(backgrounds))
    assert np.array_equal(np.asarray(image), np.asarray(again.image)), "not deterministic"
    assert again.region == result.region
    if name not in WITH_REGION:
        assert result.region is None
        return
    region = result.region
    assert region is not None and len(region) == 4
    xs, ys = [p[0] for p in region], [p[1] for p in region]
    assert min(xs) >= -1 and min(ys) >= -1 and max(xs) <= image.width + 1 and max(ys) <= image.height + 1
    if name in AXIS_ALIGNED:
        x0, y0, x1, y1 = round(min(xs)), round(min(ys)), round(max(xs)), round(max(ys))
        inside = np.asarray(image.crop((x0, y0, x1, y1)), dtype=np.float32)
        if name.startswith("crop_"):
            expected = inside  # the whole result is the reference: checked by size below
            assert (x0, y0, x1, y1) == (0, 0, image.width, image.height)
        else:
            expected = np.asarray(reference.resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR),
                                  dtype=np.float32)
        assert np.abs(inside - expected).mean() < 12, "the box is not where the reference is"
    elif name != "mark_in_scene":  # its region is checked in tests/bench/test_suites.py
        picture = np.asarray(image, dtype=np.int16).max(axis=2) > 20
        assert polygon_iou(region, [[0, 0]], image.size) == 0.0
        mask = _region_mask(region, image.size)
        assert (mask & picture).sum() / (mask | picture).sum() > 0.97


@pytest.mark.parametrize(("name", "check"), [
    ("resize_30", lambda ref, out: out.size == (round(ref.width * 0.3), round(ref.height * 0.3))),
    ("crop_centre_60", lambda ref, out: abs(out.width * out.height / (ref.width * ref.height) - 0.6) < 0.02),
    ("crop_corner_40", lambda ref, out: abs(out.width * out.height / (ref.width * ref.height) - 0.4) < 0.02),
    ("rotate_90", lambda ref, out: out.size == (ref.height, ref.width)),
    ("mirror", lambda ref, out: np.array_equal(np.asarray(out), np.asarray(ImageOps.mirror(ref)))),
    ("grayscale", lambda ref, out: np.ptp(np.asarray(out, dtype=np.int16), axis=2).max() == 0),
    ("squash_1_3", lambda ref, out: abs((ref.width / ref.height) / (out.width / out.height) - 1.3) < 0.03
     or abs((out.width / out.height) / (ref.width / ref.height) - 1.3) < 0.03),
    ("caption_bar", lambda ref, out: out.width == ref.width and out.height > ref.height),
])
def test_attack_geometry(name: str, check, reference: Image.Image,  # type: ignore[no-untyped-def]
                         backgrounds: list[Image.Image]) -> None:
    for seed in range(3):
        out = ATTACKS[name](reference, np.random.default_rng(seed), _distractor(backgrounds)).image
        assert check(reference, out), (name, seed, out.size)


def test_sticker_covers_about_15_percent(reference: Image.Image, backgrounds: list[Image.Image]) -> None:
    out = ATTACKS["sticker_15"](reference, np.random.default_rng(0), _distractor(backgrounds)).image
    changed = np.abs(np.asarray(out, np.int16) - np.asarray(reference, np.int16)).max(axis=2) > 8
    assert 0.12 <= changed.mean() <= 0.17


def test_paste_logo_is_15_to_25_percent_of_the_width(backgrounds: list[Image.Image]) -> None:
    for seed in range(5):
        out = ATTACKS["paste_logo"](_logo(1), np.random.default_rng(seed), _distractor(backgrounds))
        assert out.region is not None
        share = (out.region[1][0] - out.region[0][0]) / out.image.width
        assert 0.15 <= share <= 0.25 + 1 / out.image.width


# -- dataset ------------------------------------------------------------------------------

def _tiny_dataset(root: Path) -> Path:
    for i, name in enumerate(("astronaut", "coffee", "chelsea", "rocket", "camera", "cat")):
        folder = root / "photos" / ("set_a" if i % 2 else "set_b")
        folder.mkdir(parents=True, exist_ok=True)
        _photo(name, 160).save(folder / f"{name}.png")
    (root / "logos").mkdir(parents=True)
    for i in range(6):
        _logo(i).save(root / "logos" / f"brand{i}.png")
    return root


def test_split_is_seeded_and_disjoint_and_paste_uses_logos_only(tmp_path: Path) -> None:
    root = _tiny_dataset(tmp_path / "datasets")
    bench = build_benchmark(root, refs=4, distractors=2, seed=0, held_out_only=False)
    refs = [i.key for i in bench.references]
    unrelated = [i.key for i in bench.unrelated]
    assert len(refs) == 4 and not set(refs) & set(unrelated)
    assert [i.kind for i in bench.references] == ["photo", "logo", "logo", "logo"]
    assert sum(i.kind == "logo" for i in bench.unrelated) == 2
    assert refs == [i.key for i in build_benchmark(root, refs=4, distractors=2, seed=0,
                                                   held_out_only=False).references]
    assert {tuple(i.key for i in build_benchmark(root, refs=4, distractors=2, seed=s,
                                                 held_out_only=False).references)
            for s in range(6)} != {tuple(refs)}
    queries = list(bench.attacked_queries(["paste_logo", "mirror"]))
    assert [q.attack for q in queries].count("paste_logo") == 3  # the three logo references
    assert [q.attack for q in queries].count("mirror") == 4
    # A copy depends only on (seed, attack, reference): a subset of attacks sees the same copies.
    alone = list(bench.attacked_queries(["mirror"]))
    both = [q for q in queries if q.attack == "mirror"]
    assert all(np.array_equal(np.asarray(a.image), np.asarray(b.image)) for a, b in zip(alone, both))


def test_split_takes_only_what_the_head_never_trained_on(tmp_path: Path) -> None:
    root = _tiny_dataset(tmp_path / "datasets")
    for i in range(6, 30):
        _logo(i).save(root / "logos" / f"brand{i:02d}.png")
    from training.data import list_items

    trained = {item.path for item in list_items(root).train if item.path is not None}
    bench = build_benchmark(root, refs=2, distractors=2, seed=0)
    used = {root / item.key for item in (*bench.references, *bench.unrelated)}
    assert used and not used & trained
    assert len(bench.references) == 2 and len([i for i in bench.unrelated if i.kind == "logo"]) == 2
    with pytest.raises(ValueError):  # the held-out fifth of 30 logos is 6: 2 references + 6 do not fit
        build_benchmark(root, refs=2, distractors=6, seed=0)


def test_attack_rng_differs_by_attack_and_reference() -> None:
    draws = {(a, r): attack_rng(0, a, r).random() for a in ("mirror", "blur") for r in (0, 1)}
    assert len(set(draws.values())) == 4
    assert attack_rng(0, "blur", 1).random() == draws[("blur", 1)]


# -- metrics ------------------------------------------------------------------------------

def _hit(ref_id: int, score: float, match: bool, region: Polygon | None = None, **components: float) -> Hit:
    return Hit(ref_id, score, match, "near_duplicate" if match else "none", region, dict(components))


def _hand_made() -> list[Outcome]:
    size = (100, 100)
    return [
        # copy of 1: found first, matched
        outcome(attack="x", ref_id=1, region=None, size=size, ms=1.0,
                hits=[_hit(1, 0.9, True, d=2), _hit(2, 0.5, False, d=20)]),
        # copy of 2: a wrong reference on top (and matched), the right one second (matched)
        outcome(attack="x", ref_id=2, region=None, size=size, ms=2.0,
                hits=[_hit(3, 0.8, True, d=5), _hit(2, 0.7, True, d=6)]),
        # copy of 3: nothing returned
        outcome(attack="y", ref_id=3, region=None, size=size, ms=3.0, hits=[]),
        # unrelated: a false positive, then a clean one
        outcome(attack=None, ref_id=None, region=None, size=size, ms=4.0, hits=[_hit(1, 0.6, True, d=7)]),
        outcome(attack=None, ref_id=None, region=None, size=size, ms=5.0, hits=[_hit(2, 0.3, False, d=30)]),
    ]


def test_metrics_on_hand_made_hits() -> None:
    outcomes = _hand_made()
    assert [o.rank for o in outcomes] == [1, 2, None, None, None]
    assert outcomes[1].true_components == {"score": 0.7, "d": 6.0}
    assert outcomes[1].other_best == {"score": 0.8, "d": 5.0}  # best = highest score, lowest distance
    # Ranked top hits: 0.9 right, 0.8 wrong, 0.6 wrong, 0.3 wrong; 3 copies in all.
    assert micro_ap(outcomes) == pytest.approx(1 / 3)
    assert recall_at_precision(outcomes, 0.99) == pytest.approx(1 / 3)
    s = summarise(SystemResult("s", 1.5, outcomes), ["x", "y"])
    o = s["overall"]
    assert o["rank1"] == pytest.approx(1 / 3)
    assert o["verdict_recall"] == pytest.approx(2 / 3)
    assert o["fpr"] == pytest.approx(0.5)
    assert o["verdict_precision"] == pytest.approx(1 / 3)  # 3 matched top hits, 1 right
    assert o["copies_matching_other"] == pytest.approx(1 / 3)
    assert o["query_ms"]["p50"] == 3.0 and o["query_ms"]["mean"] == 3.0
    assert s["attacks"]["x"]["rank1"] == 0.5 and s["attacks"]["y"]["rank1"] == 0.0
    # Per attack: x's two copies against both unrelated queries.
    assert s["attacks"]["x"]["micro_ap"] == pytest.approx(0.5)


def test_tied_scores_do_not_depend_on_order() -> None:
    right = outcome(attack="x", ref_id=1, region=None, size=(10, 10), ms=1, hits=[_hit(1, 0.5, True)])
    wrong = outcome(attack=None, ref_id=None, region=None, size=(10, 10), ms=1, hits=[_hit(1, 0.5, True)])
    assert micro_ap([right, wrong]) == micro_ap([wrong, right]) == pytest.approx(0.5)
    assert recall_at_precision([right, wrong]) == recall_at_precision([wrong, right]) == 0.0
    assert recall_at_precision([right, wrong], 0.5) == 1.0


def test_region_iou() -> None:
    assert polygon_iou(rect(0, 0, 100, 100), rect(0, 0, 100, 100), (200, 100)) == pytest.approx(1.0)
    half = polygon_iou(rect(0, 0, 100, 100), rect(50, 0, 150, 100), (200, 100))
    assert half == pytest.approx(1 / 3, abs=0.02)
    assert polygon_iou(rect(0, 0, 10, 10), rect(50, 50, 60, 60), (100, 100)) == 0.0
    o = outcome(attack="paste_logo", ref_id=1, region=rect(0, 0, 100, 100), size=(200, 100), ms=1,
                hits=[_hit(1, 0.9, True, region=rect(50, 0, 150, 100))])
    assert o.iou == pytest.approx(1 / 3, abs=0.02) and o.has_region
    s = summarise(SystemResult("s", 0, [o]), ["paste_logo"])["attacks"]["paste_logo"]
    assert s["boxed"] == 0.0  # matched, but IoU < 0.5


# -- systems ------------------------------------------------------------------------------

def test_baselines_find_a_reencoded_copy_and_say_how_far() -> None:
    refs = [(i, _photo(n)) for i, n in enumerate(("astronaut", "coffee", "chelsea"))]
    for system in (PHashBaseline(), PDQBaseline()):
        system.index(refs)
        copy = ATTACKS["jpeg_q15"](refs[2][1], np.random.default_rng(0), lambda rng: refs[0][1]).image
        hits = system.query(copy, 2)
        assert [h.ref_id for h in hits][0] == 2 and hits[0].match
        distance = hits[0].components[f"{system.name}_distance"]
        assert hits[0].score == pytest.approx(1 - distance / system.bits)
        assert distance <= system.radius < hits[1].components[f"{system.name}_distance"]


def test_service_is_unavailable_until_its_module_provides_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bench.service", types.ModuleType("bench.service"))
    with pytest.raises(SystemUnavailable, match="benchmark_system"):
        load_system("service")
    with_factory = types.ModuleType("bench.service")
    with_factory.benchmark_system = PHashBaseline  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bench.service", with_factory)
    assert load_system("service").name == "phash"
    with pytest.raises(KeyError):
        load_system("nope")


# -- the command --------------------------------------------------------------------------

def test_run_writes_report_plot_and_raw_then_calibrates(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bench.service", types.ModuleType("bench.service"))
    root = _tiny_dataset(tmp_path / "datasets")
    out = tmp_path / "out"
    code = run.main(["--dataset", str(root), "--systems", "service,phash,pdq", "--refs", "4",
                     "--distractors", "2", "--attacks", "jpeg_q15,mirror,paste_logo", "--out", str(out),
                     "--include-training-images"])
    assert code == 0
    md = (out / "benchmark-matching.md").read_text()
    assert "| attack | n | phash | pdq |" in md
    assert "| jpeg_q15 | 4 | 1.00 | 1.00 |" in md  # both hashes survive JPEG on 4 references
    assert "| paste_logo | 3 |" in md
    assert "**service** did not run" in md
    with Image.open(out / "benchmark-pr.png") as plot:
        assert plot.format == "PNG" and plot.width > 300
    meta, results = read_raw(out / "benchmark-raw.json.gz")
    assert [r.name for r in results] == ["phash", "pdq"]
    # 4 jpeg + 4 mirror + 3 paste (logos only); unrelated: the 5 other photos + 2 logos
    assert len(results[0].outcomes) == meta["n_attacked"] + meta["n_unrelated"] == 11 + 7

    thresholds = tmp_path / "thresholds.json"
    assert calibrate.main(["--raw", str(out / "benchmark-raw.json.gz"), "--fpr", "0.25",
                           "--out", str(thresholds)]) == 0
    doc = json.loads(thresholds.read_text())
    chosen = doc["systems"]["phash"]["components"]["phash_distance"]
    assert chosen["op"] == "<=" and chosen["fpr"] <= 0.25 and chosen["n_unrelated"] == 7


def test_precision_is_set_only_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--precision`` sets the CNN's arithmetic for the run; without it the process's setting
    (a test's float32, an operator's choice) is left as it was."""
    from matching.core.cnn import config

    monkeypatch.setattr(config, "_current", config.CnnConfig(precision="bfloat16"))  # restored after the test
    root = _tiny_dataset(tmp_path / "datasets")
    argv = ["--dataset", str(root), "--systems", "phash", "--refs", "2", "--distractors", "1",
            "--attacks", "jpeg_q15", "--include-training-images"]
    assert run.main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert config.current().precision == "bfloat16"
    assert run.main([*argv, "--out", str(tmp_path / "b"), "--precision", "float32"]) == 0
    assert config.current().precision == "float32"


class _FramingPHash(PHashBaseline):
    """A stand-in service: pHash hits that claim the whole query as the copied region."""

    name = "service"

    def query(self, image: Image.Image, top_k: int) -> list[Hit]:
        return [Hit(h.ref_id, h.score, h.match, h.verdict, rect(0, 0, *image.size), h.components)
                for h in super().query(image, top_k)]


def test_the_service_plugs_in_and_its_regions_are_scored(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    service = types.ModuleType("bench.service")
    service.benchmark_system = _FramingPHash  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bench.service", service)
    root = _tiny_dataset(tmp_path / "datasets")
    out = tmp_path / "out"
    assert run.main(["--dataset", str(root), "--systems", "service,phash", "--refs", "4", "--distractors",
                     "2", "--attacks", "crop_centre_60,collage_2x2,blur", "--out", str(out),
                     "--include-training-images"]) == 0
    md = (out / "benchmark-matching.md").read_text()
    assert "| attack | n | service | phash |" in md and "did not run" not in md
    region = md.split("## Region accuracy")[1].split("##")[0]
    # A crop fills the query, so the whole frame is exactly right; a collage tile is a
    # quarter of it (IoU ~0.23); blur has no true region, so no row; phash has no regions.
    assert "| crop_centre_60 | 1.00 / " in region
    row = next(line for line in region.splitlines() if line.startswith("| collage_2x2 |"))
    assert float(row.split("|")[2].split("/")[0]) == pytest.approx(0.23, abs=0.03)
    assert row.split("|")[2].split("/")[1].strip() == "0.00"  # never boxed at IoU >= 0.5
    assert "| blur |" not in region and row.split("|")[3].strip() == "— / —"


# -- calibration --------------------------------------------------------------------------

def _calibration_outcomes() -> list[Outcome]:
    outs = []
    for d, inliers in [(0, 80), (2, 40), (5, 25), (7, 12), (10, 9)]:  # copies: true reference's values
        outs.append(Outcome(attack="x", ref_id=1, ms=0, rank=1, true_match=True,
                            true_components={"phash_distance": d, "inliers": inliers}))
    unrelated = [(4, 30), (6, 11)] + [(30, 4)] * 197 + [(None, None)]  # 200 unrelated queries
    for d, inliers in unrelated:
        best = {} if d is None else {"phash_distance": d, "inliers": inliers}
        outs.append(Outcome(attack=None, ref_id=None, ms=0, other_best=best))
    return outs


def test_calibration_picks_the_loosest_threshold_under_the_target() -> None:
    result = calibrate.calibrate_system(SystemResult("s", 0, _calibration_outcomes()), 0.005)
    # 0.5 % of 200 allows one false positive: distance 4 may pass, 6 may not.
    d = result["components"]["phash_distance"]
    assert (d["op"], d["threshold"], d["false_positives"], d["recall"]) == ("<=", 5, 1, 0.6)
    # inliers pass at >=: 30 may pass (one unrelated), 11 may not; 12 is the loosest copy value.
    k = result["components"]["inliers"]
    assert (k["op"], k["threshold"], k["false_positives"], k["recall"]) == (">=", 12, 1, 0.8)
    # OR-ed, the two thresholds still share their one false positive (the same query).
    assert result["combined"]["false_positives"] == 1 and result["combined"]["recall"] == 0.8
    strict = calibrate.calibrate_system(SystemResult("s", 0, _calibration_outcomes()), 0.0)
    assert strict["thresholds"] == {"inliers": 40, "phash_distance": 2}
    assert strict["combined"]["fpr"] == 0.0
