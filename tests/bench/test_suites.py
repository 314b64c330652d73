"""The chains and marks suites: the new attacks do what they say, and both suites run end to end."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter, ImageOps
from skimage import data

from bench import run
from bench.attacks import ATTACKS, composite_mark, key_mark
from bench.chains import EDIT_NAMES, EDITS, MAX_LENGTH, apply_steps, chain_name, random_chain
from bench.suites import build_suite
from tests.bench.synthetic import tile as _tile
from training.data import list_items


def _photo(name: str, side: int = 240) -> Image.Image:
    image = Image.fromarray(getattr(data, name)()).convert("RGB")
    image.thumbnail((side, side))
    return image


def _region_mask(region: list[list[float]], size: tuple[int, int]) -> np.ndarray:
    canvas = Image.new("L", size, 0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in region], fill=255)
    return np.asarray(canvas) > 0


@pytest.fixture(scope="module")
def background() -> Image.Image:
    return _photo("coffee")


# -- marks -------------------------------------------------------------------------------------

def test_key_mark_cuts_the_mark_out_of_its_tile_with_a_soft_edge() -> None:
    tile = Image.new("RGB", (100, 80), (250, 250, 250))
    ImageDraw.Draw(tile).ellipse((20, 10, 69, 59), fill=(200, 30, 40))
    # Antialias the edge as a rasteriser does: drawn at 4x, scaled down.
    big = Image.new("RGB", (400, 320), (250, 250, 250))
    ImageDraw.Draw(big).ellipse((80, 40, 279, 239), fill=(200, 30, 40))
    tile = big.resize((100, 80), Image.Resampling.LANCZOS)
    mark = key_mark(tile)
    assert mark.mode == "RGBA"
    assert abs(mark.width - 50) <= 2 and abs(mark.height - 50) <= 2  # the tight box of the disc
    alpha = np.asarray(mark.getchannel("A"))
    assert alpha[mark.height // 2, mark.width // 2] == 255 and alpha[0, 0] == 0  # centre / outside corner
    assert ((alpha > 0) & (alpha < 255)).sum() > 20  # a soft edge, not a hard cut
    rgb = np.asarray(mark.convert("RGB"), dtype=np.int16)
    edge = (alpha > 60) & (alpha < 200)
    # Un-blended from the tile: the edge keeps the mark's colour, not a pink fringe.
    assert np.abs(rgb[edge] - (200, 30, 40)).max() < 40


def test_key_mark_keeps_a_tile_without_a_mark_whole() -> None:
    flat = Image.new("RGB", (40, 30), (10, 120, 200))
    mark = key_mark(flat)
    assert mark.size == (40, 30) and np.asarray(mark.getchannel("A")).min() == 255


def test_print_on_surface_puts_the_mark_in_its_box_on_every_kind_of_surface() -> None:
    from bench.surfaces import SURFACES, print_on_surface

    mark = key_mark(_tile(0))
    kinds = set()
    for seed in range(16):
        image, box, tags = print_on_surface(mark, np.random.default_rng(seed))
        again = print_on_surface(mark, np.random.default_rng(seed))
        assert np.array_equal(np.asarray(image), np.asarray(again[0])) and box == again[1] and tags == again[2]
        assert "on a surface" in tags and sum(t.startswith("surface: ") for t in tags) == 1
        kinds |= {t[len("surface: "):] for t in tags if t.startswith("surface: ")}
        xs, ys = [p[0] for p in box], [p[1] for p in box]
        assert 0.08 <= (max(xs) - min(xs)) / image.width <= 0.3, (seed, tags)
        assert min(xs) >= -2 and min(ys) >= -2 and max(xs) <= image.width + 2 and max(ys) <= image.height + 2
        # The mark's colours are inside its box: the middle of the box differs from the surface around it.
        rgb = np.asarray(image, dtype=np.float32)
        x0, x1, y0, y1 = (int(v) for v in (min(xs), max(xs), min(ys), max(ys)))
        inside = rgb[max(0, y0):y1, max(0, x0):x1].reshape(-1, 3)
        assert np.abs(inside - np.median(rgb.reshape(-1, 3), axis=0)).sum(axis=1).max() > 60
    assert kinds == set(SURFACES)


@pytest.mark.parametrize("seed", range(6))
def test_mark_in_scene_changes_the_photo_inside_the_marks_region_only(seed: int,
                                                                        background: Image.Image) -> None:
    tile = _tile(seed)
    result = ATTACKS["mark_in_scene"](tile, np.random.default_rng(seed), lambda rng: background)
    again = ATTACKS["mark_in_scene"](tile, np.random.default_rng(seed), lambda rng: background)
    assert np.array_equal(np.asarray(result.image), np.asarray(again.image)) and result.region == again.region
    assert result.image.size == background.size
    region = result.region
    assert region is not None and len(region) == 4
    xs, ys = [p[0] for p in region], [p[1] for p in region]
    # The mark's box is 10-25 % of the photo's width; turned in 3D by <= 15 degrees its
    # sides shrink (cos) or grow (nearer the camera) by less than 8 %.
    width = max(float(np.hypot(*np.subtract(region[1], region[0]))),
                float(np.hypot(*np.subtract(region[2], region[3]))))
    assert 0.09 * background.width <= width <= 0.27 * background.width
    assert min(xs) >= 0 and min(ys) >= 0 and max(xs) <= background.width and max(ys) <= background.height
    diff = np.abs(np.asarray(result.image, np.int16) - np.asarray(background, np.int16)).max(axis=2)
    inside = _region_mask(region, background.size)
    # JPEG blocks (8 px) touch pixels just around the mark; the optional blur (0.5-1.5 px) is
    # laid over the whole picture and moves the photo's sharp edges a little everywhere.
    near = np.asarray(Image.fromarray(inside).filter(ImageFilter.MaxFilter(17)))
    assert (diff > 40)[inside].mean() > 0.3, "the mark is not inside its region"
    tags = composite_mark(key_mark(tile), background, np.random.default_rng(seed))[2]
    assert (diff > (80 if "blur" in tags else 40))[~near].mean() < 0.005, "the photo changed away from the mark"


def test_composite_mark_without_jpeg_or_blur_leaves_the_rest_of_the_photo_exact(
        background: Image.Image) -> None:
    mark = key_mark(_tile(3))
    for seed in range(20):
        image, region, tags = composite_mark(mark, background, np.random.default_rng(seed), jpeg=False)
        if "blur" in tags:
            continue
        outside = ~_region_mask(region, background.size)
        outside = ~np.asarray(Image.fromarray(~outside).filter(ImageFilter.MaxFilter(3)))  # 1 px edge
        same = np.asarray(image)[outside] == np.asarray(background)[outside]
        assert same.all(), seed
        assert tags[0].startswith("width ") and set(tags[1:]) <= {"perspective", "rotation", "shading"}


def test_composite_mark_draws_each_condition_sometimes(background: Image.Image) -> None:
    mark = key_mark(_tile(1))
    seen = {t for s in range(24) for t in composite_mark(mark, background, np.random.default_rng(s))[2]}
    assert {"perspective", "rotation", "shading", "blur", "width 10-15 %", "width 20-25 %"} <= seen


# -- chains ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", EDIT_NAMES)
def test_every_edit_is_deterministic_and_gives_a_picture(name: str, background: Image.Image) -> None:
    ref = _photo("astronaut", 200)
    other = _photo("rocket")
    a = EDITS[name](ref, np.random.default_rng(5), lambda rng: other)
    b = EDITS[name](ref, np.random.default_rng(5), lambda rng: other)
    assert a.mode == "RGB" and min(a.size) >= 8
    assert np.array_equal(np.asarray(a), np.asarray(b))
    if a.size == ref.size:
        assert not np.array_equal(np.asarray(a), np.asarray(ref)), "the edit did nothing"


@pytest.mark.parametrize(("name", "check"), [
    ("crop", lambda ref, out: 0.38 <= out.width * out.height / (ref.width * ref.height) <= 0.92),
    ("rotate", lambda ref, out: out.width > ref.width and out.height > ref.height),
    ("mirror", lambda ref, out: np.array_equal(np.asarray(out), np.asarray(ImageOps.mirror(ref)))),
    ("grey", lambda ref, out: np.ptp(np.asarray(out, dtype=np.int16), axis=2).max() == 0),
    ("pad", lambda ref, out: out.width >= ref.width and out.height >= ref.height),
    ("frame", lambda ref, out: out.width > ref.width and out.height > ref.height),
    ("inset", lambda ref, out: out.size == (240, 160)),  # the other photo's frame
    ("aspect", lambda ref, out: 1.2 < max(out.width / out.height / (ref.width / ref.height),
                                          (ref.width / ref.height) / (out.width / out.height)) < 1.65),
])
def test_edit_geometry(name: str, check, background: Image.Image) -> None:  # type: ignore[no-untyped-def]
    ref = _photo("astronaut", 200)
    other = _photo("rocket")  # 240 x 160
    for seed in range(4):
        out = EDITS[name](ref, np.random.default_rng(seed), lambda rng: other)
        assert check(ref, out), (name, seed, out.size)


def test_chains_have_one_to_three_distinct_edits_named_as_applied() -> None:
    ref = _photo("chelsea", 160)
    other = _photo("rocket", 160)
    lengths = set()
    for seed in range(30):
        chain = random_chain(ref, np.random.default_rng(seed), lambda rng: other)
        assert 1 <= len(chain.steps) <= MAX_LENGTH
        assert len(set(chain.edits)) == len(chain.edits) and set(chain.edits) <= set(EDIT_NAMES)
        assert chain.name == chain_name(chain.edits) == "chain:" + "+".join(chain.edits)
        lengths.add(len(chain.steps))
        again = random_chain(ref, np.random.default_rng(seed), lambda rng: other)
        assert again.steps == chain.steps and np.array_equal(np.asarray(again.image), np.asarray(chain.image))
        if seed < 6:
            # The name tells what was done: replaying its edits, in order, gives the copy.
            replay = apply_steps(ref, chain.steps, lambda rng: other)
            assert np.array_equal(np.asarray(replay), np.asarray(chain.image))
            step_by_step = ref
            for name, s in chain.steps:
                step_by_step = EDITS[name](step_by_step, np.random.default_rng(s), lambda rng: other)
            assert np.array_equal(np.asarray(step_by_step), np.asarray(chain.image))
    assert lengths == {1, 2, 3}


# -- the suites ----------------------------------------------------------------------------------

def test_suites_draw_only_held_out_images(dataset: Path) -> None:
    heldout = {i.name for i in list_items(dataset).heldout}
    for suite, refs, distractors in (("chains", 4, 5), ("marks", 3, 5)):
        data = build_suite(suite, dataset, refs=refs, distractors=distractors, seed=0)
        keys = [s.key for s in data.references + data.distractors + data.backgrounds]
        assert set(keys) <= heldout
        assert not {s.key for s in data.references} & {s.key for s in data.distractors + data.backgrounds}
        assert len(data.references) == refs and len(data.distractors) == distractors
    marks = build_suite("marks", dataset, refs=3, distractors=5, seed=0)
    assert {s.kind for s in marks.references + marks.distractors} == {"logo"}
    with pytest.raises(ValueError):
        build_suite("marks", dataset, refs=8, distractors=5)  # 10 logos: only 8 are held out, none left
    # More distractors than logos left: each logo is composited again, as a different picture.
    many = build_suite("marks", dataset, refs=5, distractors=7, seed=0)
    assert [s.copy for s in many.distractors] == [0, 0, 0, 1, 1, 1, 2]
    queries = [q for q in many.queries() if q.ref_id is None]
    assert len({q.key for q in queries}) == 7
    assert not np.array_equal(np.asarray(queries[0].image), np.asarray(queries[3].image))


def test_chains_distractors_past_the_held_out_pool_are_other_chains(dataset: Path) -> None:
    """3 photos and 8 logos held out; 4 references leave 7 distractors (2 photos, 5 logos), so a
    twelfth is the first again under another chain, named apart: issue 15 asks for >= 1,000."""
    few = build_suite("chains", dataset, refs=4, distractors=7, seed=0)
    many = build_suite("chains", dataset, refs=4, distractors=12, seed=0)
    assert many.distractors[:7] == few.distractors  # the first pass is the split as before
    assert [s.copy for s in many.distractors] == [0] * 7 + [1] * 5
    assert [s.key for s in many.distractors[7:]] == [s.key for s in few.distractors[:5]]
    queries = [q for q in many.queries() if q.ref_id is None]
    assert len({q.key for q in queries}) == 12
    assert queries[7].key.endswith("#1") and queries[0].key.split("/", 1)[1] == queries[7].key.split("/", 1)[1][:-2]
    assert not np.array_equal(np.asarray(queries[0].image), np.asarray(queries[7].image))
    with pytest.raises(ValueError):
        build_suite("chains", dataset, refs=11, distractors=1)  # every held-out logo a reference


def _table_row(md: str, system: str) -> list[str]:
    line = next(ln for ln in md.splitlines() if ln.startswith(f"| {system} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_chains_suite_end_to_end(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    argv = ["--suite", "chains", "--dataset", str(dataset), "--systems", "phash,pdq", "--refs", "4",
            "--copies-per-ref", "3", "--distractors", "4", "--out", str(out)]
    assert run.main(argv) == 0
    printed = capsys.readouterr().out
    md = (out / "benchmark-chains.md").read_text()
    assert md.strip() in printed.strip()
    assert (out / "benchmark-chains-pr.png").exists() and (out / "benchmark-chains-raw.json.gz").exists()
    row = _table_row(md, "phash")
    assert row[1] == "12" and row[6] == "4"  # 4 references x 3 copies, 4 distractors
    assert "| **overall** | 12 |" in md
    lengths = [ln for ln in md.split("## phash")[1].split("## ")[0].splitlines() if ln.startswith("| length ")]
    assert len(lengths) == 3 and sum(int(ln.split("|")[2]) for ln in lengths) == 12
    edits = [ln for ln in md.split("## phash")[1].split("## ")[0].splitlines() if ln.startswith("| edit: ")]
    assert len(edits) == len(EDIT_NAMES)
    # Every copy counts once per edit of its chain: 12 copies of 1-3 edits each.
    assert 12 <= sum(int(ln.split("|")[2]) for ln in edits) <= 36
    # Same command, same numbers (the query times aside).
    assert run.main(argv) == 0
    again = (out / "benchmark-chains.md").read_text()

    def figures(text: str) -> list[str]:
        return [ln for ln in text.splitlines() if ln.startswith("| ") and "query ms" not in ln
                and not ln.startswith(("| phash |", "| pdq |"))]
    assert figures(again) == figures(md)
    assert _table_row(again, "pdq")[:8] == _table_row(md, "pdq")[:8]


def test_marks_suite_end_to_end(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run.main(["--suite", "marks", "--dataset", str(dataset), "--systems", "phash", "--refs", "3",
                     "--copies-per-ref", "2", "--distractors", "4", "--out", str(out)]) == 0
    md = (out / "benchmark-marks.md").read_text()
    row = _table_row(md, "phash")
    assert row[1] == "6" and row[6] == "4"
    section = md.split("## phash")[1].split("## ")[0]
    widths = [ln for ln in section.splitlines() if ln.startswith("| width ")]
    assert len(widths) == 3 and sum(int(ln.split("|")[2]) for ln in widths) == 6
    for condition in ("perspective", "rotation", "shading", "blur", "in a photo", "on a surface"):
        assert f"| {condition} |" in section


def test_mark_window_sets_lie_in_the_picture_and_include_the_services() -> None:
    from bench.mark_windows import _covered, window_sets
    from matching.core.cnn.embedder import CROP_WINDOWS

    sets = window_sets()
    assert tuple(CROP_WINDOWS[1:]) in sets.values()
    for name, windows in sets.items():
        assert f"({len(windows)}" in name and all(0 <= a < c <= 1 and 0 <= b < d <= 1 for a, b, c, d in windows)
    region = [[10, 10], [30, 10], [30, 20], [10, 20]]
    assert _covered((0, 0, 100, 100), region) == 1.0 and _covered((20, 0, 100, 100), region) == 0.5
