"""Marks (matching/core/marks.py): extraction from transparency and from a flat background (never
from a photo), the mark found alone in a scene and boxed, two different simple marks not confused.

Pictures: a brand mark and two simple marks drawn here, scikit-image photos the CNN head was not
trained on (tests/test_fixtures_unseen.py)."""
from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image, ImageDraw

from bench.attacks import rect
from bench.metrics import polygon_iou
from matching.core import marks
from matching.core.loading import load_image
from tests.images import composite as _composite
from tests.images import drawn_logo, encode, transparent_logo



def _photo(name: str) -> Image.Image:
    from skimage import data

    return Image.fromarray(getattr(data, name)()).convert("RGB")


def _simple(shape: str) -> Image.Image:
    """Simple marks alike in colour and size: a ring and a letter T, dark blue on white."""
    tile = Image.new("RGB", (200, 200), (255, 255, 255))
    draw = ImageDraw.Draw(tile)
    if shape == "ring":
        draw.ellipse((30, 30, 170, 170), outline=(20, 40, 140), width=26)
    else:
        draw.rectangle((30, 30, 170, 62), fill=(20, 40, 140))
        draw.rectangle((84, 30, 116, 170), fill=(20, 40, 140))
    return tile


def test_an_rgba_logo_keeps_its_transparency_as_the_mask() -> None:
    loaded = load_image(encode(transparent_logo(), "PNG"))
    assert loaded.alpha is not None and loaded.alpha.size == loaded.image.size
    mark = marks.extract_mark(loaded.image, loaded.alpha, frame=(loaded.width, loaded.height))
    assert mark is not None and mark.source == "alpha"
    x0, y0, x1, y1 = mark.box
    assert abs(x0 - 30) <= 3 and abs(y0 - 20) <= 3 and abs(x1 - 211) <= 3  # the badge's left, top, right
    alpha = np.asarray(mark.mask)
    assert alpha.min() == 0 and alpha.max() == 255  # the ACME word's gaps are see-through


def test_a_logo_on_a_flat_background_is_keyed_out_and_a_photo_has_no_mark() -> None:
    loaded = load_image(encode(drawn_logo(), "PNG"))
    assert loaded.alpha is None
    mark = marks.extract_mark(loaded.image, loaded.alpha)
    assert mark is not None and mark.source == "background"
    assert np.asarray(mark.mask)[5:-5, 5:-5].mean() > 60  # mostly the badge, opaque
    for name in ("astronaut", "coffee"):
        assert marks.extract_mark(_photo(name)) is None


def test_mark_views_and_vector_ids_map_back_to_their_picture() -> None:
    mark = marks.extract_mark(drawn_logo())
    assert mark is not None
    views = marks.mark_views(mark)
    assert len(views) == marks.MARK_VIEWS and all(v.mode == "RGB" for v in views)
    ids = [marks.mark_vector_id(1234, slot) for slot in range(marks.MARK_VIEWS)]
    assert len(set(ids)) == len(ids) and all(marks.vector_reference(i) == 1234 for i in ids)
    assert marks.vector_reference(1234) == 1234


def test_two_different_simple_marks_are_not_confused() -> None:
    ring, tee = (marks.extract_mark(_simple(s)) for s in ("ring", "tee"))
    assert ring is not None and tee is not None
    scene, box = _composite(_photo("astronaut").resize((512, 512)), ring.image, width_share=0.2, at=(0.7, 0.3))
    found = marks.verify_mark(scene, None, ring, frame=scene.size)
    assert found is not None and polygon_iou(found.query_polygon, box, scene.size) >= 0.5
    said = re.fullmatch(r"the mark, at (\d+) % of the picture's width, upper right", found.edit.describe())
    assert said is not None and 17 <= int(said.group(1)) <= 23, found.edit.describe()
    assert marks.verify_mark(scene, None, tee, frame=scene.size) is None


@pytest.mark.parametrize("angle", [16.0, -16.0])
def test_a_mark_turned_between_the_searched_angles_is_aligned_and_found(angle: float,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The template search tries upright and +-8°; a mark turned by 16° correlates below MIN_SCORE
    there, and only the ECC alignment from that peak (marks._refine) finds it, at its angle."""
    mark = marks.extract_mark(transparent_logo())
    assert mark is not None
    scene, box = _composite(_photo("astronaut").resize((512, 512)), mark.image, width_share=0.2, at=(0.3, 0.7),
                            angle=angle)
    found = marks.verify_mark(scene, None, mark, frame=scene.size)
    assert found is not None and polygon_iou(found.query_polygon, box, scene.size) >= 0.5
    assert abs(found.edit.rotation_deg - angle) <= 4.0, found.edit
    monkeypatch.setattr(marks, "REFINE_FLOOR", 1.0)  # judged at the searched placements only
    assert marks.verify_mark(scene, None, mark, frame=scene.size) is None


@pytest.fixture(scope="module")
def matcher():  # type: ignore[no-untyped-def]
    from matching.core.cnn.embedder import get_embedder
    from matching.core.matcher import Matcher, Thresholds, index_references

    refs = [(1, _photo("coffee")), (2, _photo("camera")), (7, transparent_logo()), (8, _simple("ring"))]
    embedder = get_embedder()
    indexed = index_references(refs, embedder=embedder)
    return Matcher(store=indexed.store, indexes=indexed.indexes(), thresholds=Thresholds.load(), embedder=embedder)


@pytest.mark.parametrize("width_share, at, angle", [(0.14, (0.22, 0.78), 0.0), (0.2, (0.7, 0.3), 8.0)])
def test_a_mark_composited_small_into_a_photo_is_found_and_boxed(matcher, width_share, at, angle) -> None:  # type: ignore[no-untyped-def]
    mark = transparent_logo().crop((28, 18, 213, 225))
    scene, box = _composite(_photo("astronaut"), mark, width_share=width_share, at=at, angle=angle)
    outcome = matcher.match(load_image(encode(scene.convert("RGB"), "JPEG", quality=85)))
    best = outcome.decisions[0]
    assert best.reference_id == 7 and best.is_match, outcome.decisions[:3]
    assert polygon_iou(best.region["query"], box, scene.size) >= 0.5
    assert best.edit is not None and best.edit["description"].startswith("the mark")


def test_a_geometric_copy_is_told_as_the_mark_unless_the_whole_tile_was_pasted() -> None:
    from matching.core.geometry import EditReport, Verification

    tile = drawn_logo()
    mark = marks.extract_mark(tile)
    assert mark is not None and mark.background == (255, 255, 255)
    scene = _photo("astronaut")
    k, dx, dy = 0.4, 300, 280  # the tile at 40 %, its top-left corner at (300, 280)
    h = [[k, 0.0, dx], [0.0, k, dy], [0.0, 0.0, 1.0]]
    edit = EditReport(scale=k, rotation_deg=0.0, mirrored=False, visible_fraction=1.0, query_coverage=0.03,
                      aspect_change=1.0, perspective=False)
    tile_quad = rect(dx, dy, dx + k * tile.width, dy + k * tile.height)
    found = Verification(True, "accepted", 40, 0.5, transform=h, model="homography", query_polygon=tile_quad,
                         reference_polygon=rect(0, 0, tile.width, tile.height), edit=edit)
    pasted_tile = scene.copy()
    pasted_tile.paste(tile.resize((round(k * tile.width), round(k * tile.height))), (dx, dy))
    assert marks.as_mark(found, mark, frame=scene.size, query=pasted_tile) is found
    pasted_mark = scene.copy()
    sprite = mark.image.resize((round(k * mark.image.width), round(k * mark.image.height)))
    pasted_mark.paste(sprite, (round(dx + k * mark.box[0]), round(dy + k * mark.box[1])), sprite)
    told = marks.as_mark(found, mark, frame=scene.size, query=pasted_mark)
    assert told.edit is not None and told.edit.describe().startswith("the mark, at 14 % of the picture's width")
    x0, y0, x1, y1 = mark.box
    assert polygon_iou(told.query_polygon, rect(dx + k * x0, dy + k * y0, dx + k * x1, dy + k * y1),
                       scene.size) > 0.95


def test_a_mark_printed_on_white_paper_is_told_as_the_mark_not_its_tile() -> None:
    """Paper about as white as the tile's background around a copy matched on the whole picture:
    the tile's outline is nowhere in the query (the paper goes on past it), so the copy is the mark
    and its box, not the tile's (the marks benchmark's gusto on paper had IoU 0.24)."""
    from matching.core.geometry import EditReport, Verification

    tile = drawn_logo()
    mark = marks.extract_mark(tile)
    assert mark is not None and mark.background == (255, 255, 255)
    rng = np.random.default_rng(3)
    shade = np.linspace(0.0, 40.0, 480, dtype=np.float32)[:, None, None]  # light falling off downwards
    grain = rng.normal(0.0, 4.0, (480, 640, 1)).astype(np.float32)
    paper = np.clip(np.array([255, 255, 246], np.float32) - shade + grain, 0, 255).astype(np.uint8)
    paper = np.broadcast_to(paper, (480, 640, 3)).copy()
    k, dx, dy = 0.4, 300, 40
    h = [[k, 0.0, dx], [0.0, k, dy], [0.0, 0.0, 1.0]]
    edit = EditReport(scale=k, rotation_deg=0.0, mirrored=False, visible_fraction=1.0, query_coverage=0.03,
                      aspect_change=1.0, perspective=False)
    found = Verification(True, "accepted", 115, 0.9, transform=h, model="homography",
                         query_polygon=rect(dx, dy, dx + k * tile.width, dy + k * tile.height),
                         reference_polygon=rect(0, 0, tile.width, tile.height), edit=edit)
    printed = Image.fromarray(paper)
    sprite = mark.image.resize((round(k * mark.image.width), round(k * mark.image.height)))
    printed.paste(sprite, (round(dx + k * mark.box[0]), round(dy + k * mark.box[1])), sprite)
    told = marks.as_mark(found, mark, frame=printed.size, query=printed)
    assert told is not found and told.edit is not None and told.edit.describe().startswith("the mark")
    x0, y0, x1, y1 = mark.box
    assert polygon_iou(told.query_polygon, rect(dx + k * x0, dy + k * y0, dx + k * x1, dy + k * y1),
                       printed.size) > 0.95
    # The same tile pasted on that paper's darker half shows its outline: left as the tile.
    pasted = Image.fromarray(paper)
    pasted.paste(tile.resize((round(k * tile.width), round(k * tile.height))), (dx, 300))
    lower = replace(found, transform=[[k, 0.0, dx], [0.0, k, 300], [0.0, 0.0, 1.0]])
    assert marks.as_mark(lower, mark, frame=pasted.size, query=pasted) is lower


def _badge(fill: tuple[int, int, int]) -> Image.Image:
    """A plain mark: a rounded square with two round holes, on white (``fill`` its colour)."""
    tile = Image.new("RGB", (200, 200), (255, 255, 255))
    draw = ImageDraw.Draw(tile)
    draw.rounded_rectangle((30, 30, 170, 170), radius=34, fill=fill)
    for x in (70, 110):
        draw.ellipse((x, 85, x + 22, 107), fill=(255, 255, 255))
    return tile


def _mark_of(tile: Image.Image, scene: Image.Image, *, at: tuple[float, float]) -> tuple[Image.Image, list[list[float]]]:
    """The mark keyed out of ``tile`` composited into ``scene`` at a fifth of its width, and its box."""
    mark = marks.extract_mark(tile)
    assert mark is not None
    return _composite(scene, mark.image, width_share=0.2, at=at)


def test_a_dark_mark_is_found_dark_and_not_in_a_lighter_shape_of_the_same_outline() -> None:
    """A black mark has no hue for the colour check: it must be dark where it is found
    (DARK_MARK_LIFT), so the same outline in red, or in red turned grey, is not it."""
    mark = marks.extract_mark(_badge((15, 15, 15)))
    assert mark is not None
    scene = _photo("astronaut").resize((512, 512))
    found = {}
    for name, fill in (("black", (15, 15, 15)), ("red", (220, 30, 45)), ("grey", (92, 92, 92))):
        copy, box = _mark_of(_badge(fill), scene, at=(0.3, 0.7))
        found[name] = marks.verify_mark(copy, None, mark, frame=copy.size)
        if name == "black":
            assert found[name] is not None and polygon_iou(found[name].query_polygon, box, copy.size) >= 0.5
    assert found["red"] is None and found["grey"] is None


def _family_badge(i: int, colour: tuple[int, int, int]) -> Image.Image:
    """The ``i``-th of a family of look-alike logos: a disc cut by a bar that grows with ``i``."""
    tile = Image.new("RGB", (200, 200), (255, 255, 255))
    draw = ImageDraw.Draw(tile)
    draw.ellipse((40 + 4 * i, 40, 160 - 4 * i, 160), fill=colour)
    draw.rectangle((90 - 6 * i, 20, 110 + 6 * i, 180 - 10 * i), fill=(255, 255, 255) if i % 2 else colour)
    return tile


def _family() -> list[tuple[int, Image.Image]]:
    """Six badges of the family, ids 20-25, each in its own colour."""
    colours = [(200, 30, 30), (30, 140, 60), (20, 40, 140), (230, 160, 20), (120, 40, 160), (0, 0, 0)]
    return [(20 + i, _family_badge(i, colour)) for i, colour in enumerate(colours)]


def _coin(inner: str) -> Image.Image:
    """Look-alike coins (a simple-icons kind of mark): one orange disc, told apart only by the
    holes cut in it: a Z, two bars, a ring; "solid" has none."""
    orange, white = (240, 170, 30), (255, 255, 255)
    tile = Image.new("RGB", (200, 200), white)
    draw = ImageDraw.Draw(tile)
    draw.ellipse((30, 30, 170, 170), fill=orange)
    if inner == "z":
        draw.rectangle((70, 62, 130, 80), fill=white)
        draw.rectangle((70, 120, 130, 138), fill=white)
        draw.polygon([(112, 80), (130, 80), (88, 120), (70, 120)], fill=white)
        draw.rectangle((92, 48, 108, 62), fill=white)
        draw.rectangle((92, 138, 108, 152), fill=white)
    elif inner == "bars":
        draw.rectangle((66, 60, 84, 140), fill=white)
        draw.rectangle((116, 60, 134, 140), fill=white)
    elif inner == "ring":
        draw.ellipse((65, 65, 135, 135), fill=white)
        draw.ellipse((85, 85, 115, 115), fill=orange)
    return tile


def test_a_marks_inner_detail_tells_it_from_a_look_alike_of_the_same_outline() -> None:
    """Coins share their disc, which the whole mark's correlation is mostly about (the ring's
    mark scores as a sure find on the two bars' coin): the detail inside the outline
    (marks._detail) correlates where the mark itself is and not on a look-alike; a solid disc has
    no detail to tell."""
    scenes = [_photo("coffee"), _photo("astronaut")]
    coins = {name: marks.extract_mark(_coin(name)) for name in ("z", "bars", "ring", "solid")}
    for name, mark in coins.items():
        assert mark is not None
        for k, scene in enumerate(scenes):
            query, _box = _composite(scene, mark.image, width_share=0.18, at=(0.3 + 0.3 * k, 0.6))
            found = marks.verify_mark(query, None, mark, weak_score=marks.WEAK_SCORE)
            assert found is not None and found.sure, (name, k)
            if name == "solid":
                assert found.detail is None
            else:
                assert found.detail is not None and found.detail >= 0.75, (name, k, found)
    look_alikes = 0
    for name, other in (("ring", "bars"), ("ring", "z"), ("z", "ring"), ("bars", "ring")):
        for k, scene in enumerate(scenes):
            query, _box = _composite(scene, coins[other].image, width_share=0.18, at=(0.3 + 0.3 * k, 0.6))
            found = marks.verify_mark(query, None, coins[name], weak_score=marks.WEAK_SCORE)
            if found is not None:
                look_alikes += 1
                assert found.detail is not None and found.detail < 0.5, (name, other, k, found)
    assert look_alikes >= 2  # the outline alone does find look-alikes


def test_a_check_looks_for_at_most_verify_top_marks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The mark search is the partial-copy pass's dearest step (50-200 ms each): a scene with no
    mark in it, against logos that all have marks, is searched for the marks of the first
    ``marks.VERIFY_TOP`` candidates the cascade meets, each once, and no more; the searches
    after the first ``marks.SURE_SEARCHES`` accept only at ``marks.LATE_MIN_SCORE``."""
    from matching.core.cnn.embedder import get_embedder
    from matching.core.matcher import Matcher, Thresholds, index_references

    embedder = get_embedder()
    indexed = index_references(_family(), embedder=embedder)
    check = Matcher(store=indexed.store, indexes=indexed.indexes(), thresholds=Thresholds.load(), embedder=embedder)
    searched: list[int] = []
    floors: list[float] = []
    real = marks.mark_verification

    def counted(query, mark, **kwargs):  # type: ignore[no-untyped-def]
        searched.append(id(mark))
        floors.append(kwargs["min_score"])
        return real(query, mark, **kwargs)

    monkeypatch.setattr(marks, "mark_verification", counted)
    # The coffee cup's tiles come within cosine 0.2 (marks.MARK_CANDIDATE) of five of the marks.
    outcome = check.match(load_image(encode(_photo("coffee"), "JPEG", quality=85)))
    assert not any(d.is_match for d in outcome.decisions)
    assert len(searched) == marks.VERIFY_TOP and len(set(searched)) == len(searched), searched
    # The later searches must correlate better: chance look-alikes pile up with every search.
    late = marks.VERIFY_TOP - marks.SURE_SEARCHES
    assert floors == [marks.MIN_SCORE] * marks.SURE_SEARCHES + [marks.LATE_MIN_SCORE] * late
    assert marks.LATE_MIN_SCORE > marks.MIN_SCORE and late >= 1


def test_the_answer_leaves_a_mark_search_to_the_partial_copy_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """A query whose whole picture is near many marked logos: the answer's verification may
    search all ``marks.VERIFY_TOP`` marks when no partial-copy pass follows (of candidates the CNN
    finds similar: the others are the pass's, next test), but keeps ``marks.PARTIAL_RESERVE`` of
    them for that pass when one does (a mark a tile found waits on no look-alike of the whole
    picture)."""
    from matching.core.cnn.embedder import get_embedder
    from matching.core.matcher import Matcher, Thresholds, index_references

    embedder = get_embedder()
    indexed = index_references(_family(), embedder=embedder)
    # Every badge a candidate of the whole picture, and similar (the budget is what this is about,
    # not the floors).
    check = Matcher(store=indexed.store, indexes=indexed.indexes(), embedder=embedder,
                    thresholds=replace(Thresholds.load(), cnn_candidate=0.05, cnn_similar=0.05))
    events: list[str] = []
    real_search, real_tiles = marks.mark_verification, embedder.embed_crops

    def searched(query, mark, **kwargs):  # type: ignore[no-untyped-def]
        events.append("search")
        return real_search(query, mark, **kwargs)

    def tiles(image, **kwargs):  # type: ignore[no-untyped-def]
        events.append("tiles")
        return real_tiles(image, **kwargs)

    monkeypatch.setattr(marks, "mark_verification", searched)
    monkeypatch.setattr(embedder, "embed_crops", tiles)
    # Another badge of the same family, in a colour none of them has: near all of them, none of them.
    query = load_image(encode(_family_badge(7, (90, 90, 90)), "JPEG", quality=85))
    answer = check.match(query, partial="never")
    assert not any(d.is_match for d in answer.decisions)
    assert events == ["search"] * marks.VERIFY_TOP  # no partial-copy pass to keep a search for
    events.clear()
    whole = check.match(query)
    assert not any(d.is_match for d in whole.decisions)
    assert events.index("tiles") == marks.VERIFY_TOP - marks.PARTIAL_RESERVE, events
    assert events.count("search") == marks.VERIFY_TOP, events
    assert marks.PARTIAL_RESERVE >= 1


def test_an_answer_leaves_the_marks_of_candidates_the_cnn_finds_unlike_to_the_partial_copy_pass(  # type: ignore[no-untyped-def]
        matcher, monkeypatch: pytest.MonkeyPatch) -> None:
    """``partial="never"`` (the service's background answer, a scan or check without the pass): a
    mark search costs tens of ms, and the candidates that the CNN does not find similar are nearly
    never the mark, so they are left to the partial-copy pass; that pass (a check's, run apart
    with ``"auto"``) finds the mark. (A candidate the CNN finds similar is searched by the answer:
    the test above.)"""
    scene, box = _composite(_photo("astronaut"), transparent_logo().crop((28, 18, 213, 225)), width_share=0.45,
                            at=(0.5, 0.5))
    query = load_image(encode(scene.convert("RGB"), "JPEG", quality=85))
    searched: list[int] = []
    real = marks.mark_verification

    def counted(q, m, **kwargs):  # type: ignore[no-untyped-def]
        searched.append(id(m))
        return real(q, m, **kwargs)

    monkeypatch.setattr(marks, "mark_verification", counted)
    answer = matcher.match(query, partial="never")
    assert searched == [] and "cnn_tiles_ms" not in answer.timings_ms
    logo = [d for d in answer.decisions if d.reference_id == 7]
    assert logo and logo[0].signal_scores["cnn_score"] < matcher.thresholds.cnn_similar
    assert not logo[0].is_match
    task = matcher.match(query, partial="auto")
    best = [d for d in task.decisions if d.reference_id == 7]
    assert searched and best and best[0].is_match, task.decisions[:3]
    assert polygon_iou(best[0].region["query"], box, scene.size) >= 0.5


def test_the_quick_look_searches_only_where_something_looks_like_the_mark(monkeypatch: pytest.MonkeyPatch) -> None:
    """A search costs 40-120 ms: the quick look (QUICK_SIDE px, QUICK_SCALES upright widths) scores
    the mark composited into a photo far above QUICK_FLOOR, so it is searched and found; a scene
    with nothing of the mark's shape or colours scores under it and costs only the quick look."""
    logo = load_image(encode(transparent_logo(), "PNG"))
    mark = marks.extract_mark(logo.image, logo.alpha, frame=logo.image.size)
    assert mark is not None and marks.QUICK_FLOOR is not None
    scene, box = _composite(_photo("rocket"), transparent_logo().crop((28, 18, 213, 225)), width_share=0.14,
                            at=(0.22, 0.78))
    scene = scene.convert("RGB")
    assert marks._quick_score(scene, mark) >= marks.QUICK_FLOOR + 0.2
    found = marks.verify_mark(scene, None, mark, frame=scene.size)
    assert found is not None and found.sure
    sky = Image.linear_gradient("L").resize((640, 480)).convert("RGB")  # no edge, none of the mark's colours
    built: list[int] = []
    real = marks._template

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        built.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(marks, "_template", counted)
    assert marks._quick_score(sky, mark) < marks.QUICK_FLOOR
    built.clear()
    assert marks.verify_mark(sky, None, mark, frame=sky.size) is None
    assert len(built) == marks.QUICK_SCALES  # the quick look's widths only: no search
    monkeypatch.setattr(marks, "QUICK_FLOOR", None)
    built.clear()
    assert marks.verify_mark(sky, None, mark, frame=sky.size) is None
    assert len(built) >= marks.SCALES  # searched


def test_an_unsure_place_is_returned_only_when_asked_for() -> None:
    """A place scoring under ``min_score`` is no find, unless the caller asks for unsure places
    (``weak_score``): then it comes back with ``sure`` False, where the mark is, for the CNN to
    confirm."""
    mark = marks.extract_mark(transparent_logo().convert("RGB"), transparent_logo().getchannel("A"))
    assert mark is not None
    scene, box = _composite(_photo("astronaut"), transparent_logo().crop((28, 18, 213, 225)), width_share=0.2,
                            at=(0.3, 0.6))
    scene = scene.convert("RGB")
    sure = marks.verify_mark(scene, None, mark, frame=scene.size)
    assert sure is not None and sure.sure and sure.score >= marks.MIN_SCORE
    assert marks.verify_mark(scene, None, mark, frame=scene.size, min_score=0.99) is None
    unsure = marks.verify_mark(scene, None, mark, frame=scene.size, min_score=0.99, weak_score=marks.WEAK_SCORE)
    assert unsure is not None and not unsure.sure and marks.WEAK_SCORE <= unsure.score < 0.99
    assert polygon_iou(unsure.query_polygon, box, scene.size) >= 0.5
    as_verification = marks.mark_verification(scene, mark, frame=scene.size, min_score=0.99,
                                               weak_score=marks.WEAK_SCORE)
    assert as_verification is not None and not as_verification.accepted
    assert as_verification.reason == marks.UNSURE
    # Nothing there at all: no unsure place either.
    plain = _photo("astronaut").convert("RGB")
    assert marks.verify_mark(plain, None, mark, frame=plain.size, min_score=0.99, weak_score=marks.WEAK_SCORE) is None


def test_an_unsure_place_that_shows_too_little_detail_is_not_put_to_the_cnn(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unsure place under the search's bar is returned for the CNN only when the mark's inner
    detail correlates there at WEAK_DETAIL_MIN or more (``marks.vague``); a sure one, or a mark
    with no detail to correlate, is not held to it."""
    mark = marks.extract_mark(transparent_logo().convert("RGB"), transparent_logo().getchannel("A"))
    assert mark is not None
    scene, _box = _composite(_photo("astronaut"), transparent_logo().crop((28, 18, 213, 225)), width_share=0.2,
                             at=(0.3, 0.6))
    scene = scene.convert("RGB")
    unsure = marks.verify_mark(scene, None, mark, frame=scene.size, min_score=0.99, weak_score=marks.WEAK_SCORE)
    assert unsure is not None and not unsure.sure and unsure.detail is not None
    ask = dict(frame=scene.size, min_score=0.99, weak_score=marks.WEAK_SCORE)
    monkeypatch.setattr(marks, "WEAK_DETAIL_MIN", unsure.detail - 0.01)
    kept = marks.mark_verification(scene, mark, **ask)  # type: ignore[arg-type]
    assert kept is not None and kept.reason == marks.UNSURE and kept.appearance == pytest.approx(unsure.detail, abs=1e-3)
    monkeypatch.setattr(marks, "WEAK_DETAIL_MIN", unsure.detail + 0.01)
    assert marks.mark_verification(scene, mark, **ask) is None  # type: ignore[arg-type]
    # The rule's cases, one by one.
    assert marks.vague(replace(unsure, detail=unsure.detail), 0.99)
    assert not marks.vague(replace(unsure, detail=None), 0.99)  # a solid shape: the CNN decides
    assert not marks.vague(replace(unsure, sure=True), 0.99)
    assert not marks.vague(replace(unsure, score=0.995), 0.99)  # nearly the colours, over the bar


def test_mark_crop_frames_the_place_as_the_views_do_and_refuses_small_places() -> None:
    query = Image.new("RGB", (400, 300))  # the working picture: half the picture's own 800x600
    crop = marks.mark_crop(query, [[300, 200], [400, 200], [400, 260], [300, 260]], frame=(800, 600))
    assert crop is not None
    # 100x60 own pixels -> 50x30 working; 4:3 around it -> 50x37.5, grown by CROP_MARGIN.
    assert abs(crop.width - 50 * marks.CROP_MARGIN) <= 1 and abs(crop.height - 37.5 * marks.CROP_MARGIN) <= 1
    side = marks.WEAK_MIN_SIDE - 1
    assert marks.mark_crop(query, [[10, 10], [10 + side, 10], [10 + side, 40], [10, 40]], frame=(800, 600)) is None


def test_crop_confirms_only_the_nearest_reference_at_crop_cosine() -> None:
    view = marks.mark_vector_id(7, 2)
    assert marks.crop_confirms([(view, 0.6), (8, 0.5)], 7) == pytest.approx(0.6)
    assert marks.crop_confirms([(7, 0.6)], 7) == pytest.approx(0.6)  # the picture's own vector
    assert marks.crop_confirms([(8, 0.6), (view, 0.59)], 7) is None  # another reference is nearer
    assert marks.crop_confirms([(view, marks.CROP_COSINE - 0.01)], 7) is None
    assert marks.crop_confirms([], 7) is None


def test_a_check_accepts_an_unsure_mark_only_when_the_cnn_confirms_it(matcher, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
                                                                     ) -> None:
    """With every sure floor out of reach, the composited mark is an unsure find: the check
    accepts it when the crop of the place has the logo as its nearest reference (and says so in
    ``mark_crop_cosine``), and not when the crop must come closer than any crop does."""
    from matching.core import geometry

    mark = transparent_logo().crop((28, 18, 213, 225))
    scene, box = _composite(_photo("astronaut"), mark, width_share=0.2, at=(0.7, 0.3))
    query = load_image(encode(scene.convert("RGB"), "JPEG", quality=85))
    real_verify = geometry.verify
    # Keypoints would confirm this clean composite before any mark search: take them out.
    monkeypatch.setattr(geometry, "verify", lambda *a, **k: replace(real_verify(*a, **k), accepted=False))
    sure = [d for d in matcher.match(query).decisions if d.reference_id == 7]
    assert sure and sure[0].is_match and "mark_crop_cosine" not in sure[0].signal_scores
    assert sure[0].signal_scores["mark_score"] >= marks.MIN_SCORE
    # A sure mark's score: 0.7 plus a quarter of its correlation, or the CNN's cosine when higher.
    assert sure[0].score == pytest.approx(
        max(sure[0].signal_scores["cnn_score"], 0.7 + 0.25 * sure[0].signal_scores["mark_score"]), abs=1e-5)
    monkeypatch.setattr(marks, "MIN_SCORE", 0.99)
    monkeypatch.setattr(marks, "LATE_MIN_SCORE", 0.99)
    outcome = matcher.match(query)
    found = [d for d in outcome.decisions if d.reference_id == 7]
    assert found and found[0].is_match, outcome.decisions[:3]
    scores = found[0].signal_scores
    assert marks.WEAK_SCORE <= scores["mark_score"] < 0.99
    assert scores["mark_crop_cosine"] >= marks.CROP_COSINE
    # Trusted least: its correlation counts from 0.6, not 0.7 as a sure mark's (which would put it
    # at 0.81 or more, above keypoint verifications from 0.75); here the CNN's cosine is higher.
    assert found[0].score == pytest.approx(max(scores["cnn_score"], 0.6 + 0.25 * scores["mark_score"]), abs=1e-5)
    assert found[0].score < 0.7 + 0.25 * scores["mark_score"]
    assert polygon_iou(found[0].region["query"], box, scene.size) >= 0.5
    # A re-check's matcher (its index holds only the new pictures) keeps only sure marks.
    from matching.core.matcher import Matcher

    sure_only = Matcher(store=matcher.store, indexes=matcher.indexes, thresholds=matcher.thresholds,
                        embedder=matcher.embedder, unsure_marks=False)
    assert not any(d.reference_id == 7 and d.is_match for d in sure_only.match(query).decisions)
    # Under the search's bar (MIN_SCORE) a place needs WEAK_CROP_COSINE, CROP_COSINE above it.
    assert scores["mark_crop_cosine"] >= marks.WEAK_CROP_COSINE
    monkeypatch.setattr(marks, "WEAK_CROP_COSINE", scores["mark_crop_cosine"] + 0.001)
    refused = matcher.match(query)
    assert not any(d.reference_id == 7 and d.is_match for d in refused.decisions), refused.decisions[:3]
    monkeypatch.setattr(marks, "WEAK_CROP_COSINE", scores["mark_crop_cosine"] - 0.001)
    monkeypatch.setattr(marks, "CROP_COSINE", 0.999)  # the floor of sure places without detail: not this one's
    kept = matcher.match(query)
    assert any(d.reference_id == 7 and d.is_match for d in kept.decisions), kept.decisions[:3]
    monkeypatch.setattr(marks, "WEAK_CROP_COSINE", 0.999)
    again = matcher.match(query)
    assert not any(d.reference_id == 7 and d.is_match for d in again.decisions), again.decisions[:3]


def test_a_late_searchs_mark_needs_the_cnn_to_confirm_it_as_an_unsure_one(matcher,  # type: ignore[no-untyped-def]
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Every search made late (after ``marks.SURE_SEARCHES``): the composited mark, found at a
    sure score, is accepted only when the CNN sees the logo in the place too, and trusted as an
    unsure one is; with the crop's cosine out of reach it is refused, unless its inner detail
    correlates at ``marks.DETAIL_SURE``, as only the mark itself does."""
    from matching.core import geometry

    mark = transparent_logo().crop((28, 18, 213, 225))
    scene, box = _composite(_photo("astronaut"), mark, width_share=0.2, at=(0.7, 0.3))
    query = load_image(encode(scene.convert("RGB"), "JPEG", quality=85))
    real_verify = geometry.verify
    monkeypatch.setattr(geometry, "verify", lambda *a, **k: replace(real_verify(*a, **k), accepted=False))
    monkeypatch.setattr(marks, "SURE_SEARCHES", 0)
    monkeypatch.setattr(marks, "LATE_MIN_SCORE", marks.MIN_SCORE)  # the same place, found as sure
    detailed = [d for d in matcher.match(query).decisions if d.reference_id == 7]
    assert detailed and detailed[0].is_match and "mark_crop_cosine" not in detailed[0].signal_scores
    assert detailed[0].signal_scores["mark_detail"] >= marks.DETAIL_SURE
    sure_at = marks.DETAIL_SURE
    monkeypatch.setattr(marks, "DETAIL_SURE", 1.01)  # the detail alone no longer enough
    found = [d for d in matcher.match(query).decisions if d.reference_id == 7]
    assert found and found[0].is_match
    scores = found[0].signal_scores
    assert scores["mark_score"] >= marks.MIN_SCORE and scores["mark_crop_cosine"] >= marks.CROP_COSINE
    assert found[0].score == pytest.approx(max(scores["cnn_score"], 0.6 + 0.25 * scores["mark_score"]), abs=1e-5)
    assert polygon_iou(found[0].region["query"], box, scene.size) >= 0.5
    monkeypatch.setattr(marks, "CROP_COSINE", 0.999)
    again = matcher.match(query)
    assert not any(d.reference_id == 7 and d.is_match for d in again.decisions), again.decisions[:3]
    monkeypatch.setattr(marks, "DETAIL_SURE", sure_at)  # with the crop still out of reach
    assert any(d.reference_id == 7 and d.is_match for d in matcher.match(query).decisions)
    monkeypatch.setattr(marks, "SURE_SEARCHES", marks.VERIFY_TOP)  # the same search made early: sure alone
    early = [d for d in matcher.match(query).decisions if d.reference_id == 7]
    assert early and early[0].is_match and "mark_crop_cosine" not in early[0].signal_scores


def test_an_unsure_mark_found_by_the_answer_waits_for_the_partial_copy_pass(matcher,  # type: ignore[no-untyped-def]
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The answer's verification finds the large mark unsure; it is not accepted there (the
    partial-copy pass's crop and aligned looks box a cut-out copy better than a mark), but at the
    end of that pass, without searching for it again."""
    from matching.core import geometry

    scene, _box = _composite(_photo("astronaut"), transparent_logo().crop((28, 18, 213, 225)), width_share=0.45,
                             at=(0.5, 0.5))
    query = load_image(encode(scene.convert("RGB"), "JPEG", quality=85))
    real_verify = geometry.verify
    monkeypatch.setattr(geometry, "verify", lambda *a, **k: replace(real_verify(*a, **k), accepted=False))
    monkeypatch.setattr(marks, "MIN_SCORE", 0.99)
    monkeypatch.setattr(marks, "LATE_MIN_SCORE", 0.99)
    searches: list[str | None] = []
    real = marks.mark_verification

    def counted(q, m, **kwargs):  # type: ignore[no-untyped-def]
        found = real(q, m, **kwargs)
        searches.append(found.reason if found is not None else None)
        return found

    real_tiles = matcher.embedder.embed_crops

    def tiles(image, **kwargs):  # type: ignore[no-untyped-def]
        searches.append("tiles")
        return real_tiles(image, **kwargs)

    monkeypatch.setattr(marks, "mark_verification", counted)
    monkeypatch.setattr(matcher.embedder, "embed_crops", tiles)
    whole = matcher.match(query)
    # Searched by the answer's passes (before the tiles), found unsure, not searched again after them.
    assert searches[:2] == [marks.UNSURE, "tiles"] and searches.count(marks.UNSURE) == 1, searches
    best = [d for d in whole.decisions if d.reference_id == 7]
    assert best and best[0].is_match and best[0].signal_scores["mark_crop_cosine"] >= marks.CROP_COSINE


def test_a_sure_mark_that_shows_no_detail_needs_the_cnn_to_confirm_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ring coin's mark correlates at a sure score on the two bars' coin (same disc, same
    colour), but its detail does not (marks.indistinct): the check then asks the CNN as it does
    for an unsure mark, and with the crop's cosine out of reach refuses the look-alike, which it
    accepted without that rule; the ring coin itself, detail and all, is accepted at once."""
    from matching.core import geometry
    from matching.core.cnn.embedder import get_embedder
    from matching.core.matcher import Matcher, Thresholds, index_references

    embedder = get_embedder()
    indexed = index_references([(31, _coin("ring")), (32, _photo("camera"))], embedder=embedder)
    check = Matcher(store=indexed.store, indexes=indexed.indexes(), thresholds=Thresholds.load(), embedder=embedder)
    real_verify = geometry.verify
    monkeypatch.setattr(geometry, "verify", lambda *a, **k: replace(real_verify(*a, **k), accepted=False))

    def ask(inner: str) -> list:  # type: ignore[type-arg]
        mark = marks.extract_mark(_coin(inner))
        assert mark is not None
        # The look-alike must reach the mark search, whose candidates follow the CNN's ranking: on
        # the coffee photo the head that fine-tunes the backbone's last block never proposes the
        # ring coin for the bars' scene (nothing to refuse there); on the rocket it does.
        scene, _box = _composite(_photo("rocket"), mark.image, width_share=0.18, at=(0.3, 0.6))
        outcome = check.match(load_image(encode(scene.convert("RGB"), "PNG")))
        return [d for d in outcome.decisions if d.reference_id == 31 and d.is_match]

    itself = ask("ring")
    assert itself and "mark_crop_cosine" not in itself[0].signal_scores
    assert itself[0].signal_scores["mark_detail"] >= marks.DETAIL_MIN
    monkeypatch.setattr(marks, "CROP_COSINE", 0.999)
    assert ask("ring")  # sure and detailed: the CNN is not asked
    assert not ask("bars")
    monkeypatch.setattr(marks, "DETAIL_MIN", -1.0)  # the rule off: the look-alike is a sure mark
    wrong = ask("bars")
    assert wrong and wrong[0].signal_scores["mark_detail"] < 0.5


def test_the_one_placement_correlation_equals_the_sliding_one() -> None:
    """marks._ncc_here (numpy, one placement: the aligned score and the detail) gives what
    marks._ncc gives for a patch of the template's size, with and without a mask, floor included."""
    rng = np.random.default_rng(5)
    template = rng.uniform(0, 255, (30, 40)).astype(np.float32)
    for mix in (0.9, 0.4, 0.0):
        patch = (mix * template + (1 - mix) * rng.uniform(0, 255, template.shape)).astype(np.float32)
        for mask in (np.ones_like(template), (rng.uniform(0, 1, template.shape) > 0.4).astype(np.float32)):
            for floor in (1.0, 200.0):  # 200: the floor, not the patch's spread, decides
                sliding = float(marks._ncc(patch, np.ascontiguousarray(patch * patch), template, mask, floor)[0, 0])
                assert marks._ncc_here(patch, template, mask, floor) == pytest.approx(sliding, abs=1e-4)


def test_the_summed_area_correlation_equals_the_masked_one() -> None:
    """marks._ncc without a mask takes its window sums from summed-area tables (OpenCV's arithmetic
    over float64 views): it gives what the all-ones mask's correlations give, at every placement,
    for templates narrow and wide."""
    rng = np.random.default_rng(11)
    image = rng.uniform(0, 255, (90, 120)).astype(np.float32)
    image[20:50, 30:80] = 40.0  # a flat patch: the floor decides there
    tables = (marks._integral(image), marks._integral(image * image))
    for shape in ((12, 16), (30, 55), (60, 20)):
        template = rng.uniform(0, 255, shape).astype(np.float32)
        for floor in (10.0, 200.0):
            tabled = marks._ncc(image, image * image, template, None, floor, tables)
            masked = marks._ncc(image, image * image, template, np.ones_like(template), floor)
            assert tabled.shape == (91 - shape[0], 121 - shape[1])
            np.testing.assert_allclose(tabled, masked, atol=1e-4)


def test_a_colour_edge_map_is_the_mean_of_the_planes_gradients() -> None:
    """marks._edges of an RGB picture: the root of the three planes' mean gradient power, blurred;
    a grey picture given as three equal planes has the grey map."""
    import cv2

    rng = np.random.default_rng(3)
    rgb = rng.uniform(0, 255, (40, 50, 3)).astype(np.float32)
    gx = cv2.Sobel(rgb, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(rgb, cv2.CV_32F, 0, 1, ksize=3)
    expected = cv2.GaussianBlur(np.sqrt((gx * gx + gy * gy).mean(axis=2)), (0, 0), marks.EDGE_SIGMA)
    np.testing.assert_array_equal(marks._edges(rgb), expected)
    grey = np.ascontiguousarray(rgb[..., 1])
    np.testing.assert_allclose(marks._edges(np.repeat(grey[..., None], 3, axis=2)), marks._edges(grey), rtol=1e-5)


def test_the_turns_are_tried_only_where_the_upright_sweep_came_near(monkeypatch: pytest.MonkeyPatch) -> None:
    """A search tries the ANGLES turns at its three best widths only when the upright sweep's best
    place scores TURN_FLOOR or more: a mark turned by 16° in a photo is near enough upright to be
    turned, aligned and found; a scene with nothing of the mark is not turned at all."""
    mark = marks.extract_mark(transparent_logo())
    assert mark is not None
    turns: list[float] = []
    real = marks._template

    def counted(image, width, angle):  # type: ignore[no-untyped-def]
        if angle:
            turns.append(angle)
        return real(image, width, angle)

    monkeypatch.setattr(marks, "_template", counted)
    monkeypatch.setattr(marks, "QUICK_FLOOR", None)  # searched in full either way
    scene, box = _composite(_photo("astronaut").resize((512, 512)), mark.image, width_share=0.2, at=(0.3, 0.7),
                            angle=16.0)
    found = marks.verify_mark(scene, None, mark, frame=scene.size)
    assert found is not None and polygon_iou(found.query_polygon, box, scene.size) >= 0.5
    assert len(turns) == 6  # both turns at the three best widths
    turns.clear()
    sky = Image.linear_gradient("L").resize((640, 480)).convert("RGB")
    assert marks.verify_mark(sky, None, mark, frame=sky.size) is None
    assert turns == []
    monkeypatch.setattr(marks, "TURN_FLOOR", -1.0)
    assert marks.verify_mark(sky, None, mark, frame=sky.size) is None
    assert len(turns) == 6


def _torii(fill: tuple[int, int, int]) -> Image.Image:
    """A gate of bars (a jinja kind of mark), all of one colour, on white."""
    tile = Image.new("RGB", (200, 200), (255, 255, 255))
    draw = ImageDraw.Draw(tile)
    draw.polygon([(20, 40), (180, 40), (170, 62), (30, 62)], fill=fill)
    draw.rectangle((40, 80, 160, 96), fill=fill)
    draw.rectangle((55, 62, 75, 170), fill=fill)
    draw.rectangle((125, 62, 145, 170), fill=fill)
    return tile


@pytest.mark.parametrize("name", ["coffee", "rocket"])
def test_a_mark_as_bright_as_the_scene_behind_it_is_found_by_its_colour_edges(name: str,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A red mark printed on a grey scene of the same brightness has no outline in grey levels;
    its outline is a change of colour. The edge maps are taken over the three colour planes
    (marks._edges), so the mark is a sure find; with grey edges it was an unsure one at best."""
    grey = Image.fromarray(np.asarray(_photo(name).convert("L"))).convert("RGB").resize((512, 384))
    for at in ((0.3, 0.6), (0.7, 0.4)):
        x, y = int(at[0] * 512), int(at[1] * 384)
        level = float(np.asarray(grey.convert("L"), np.float32)[y - 30:y + 30, x - 40:x + 40].mean())
        # the grey level of this red is the scene's there: 0.299 * 90 - 0.587 * 40 - 0.114 * 30 = 0
        fill = (min(255, round(level + 90)), max(0, round(level - 40)), max(0, round(level - 30)))
        mark = marks.extract_mark(_torii(fill))
        assert mark is not None
        query, box = _composite(grey, mark.image, width_share=0.16, at=at)
        found = marks.verify_mark(query, None, mark, weak_score=marks.WEAK_SCORE)
        assert found is not None and found.sure and polygon_iou(found.query_polygon, box, query.size) >= 0.5, (at, found)
        with monkeypatch.context() as patched:
            patched.setattr(marks, "COLOUR_EDGES", False)
            grey_only = marks.verify_mark(query, None, mark, weak_score=marks.WEAK_SCORE)
        assert grey_only is None or not grey_only.sure, (at, grey_only)



def _two_tone_ring(inner: tuple[int, int, int] | None) -> Image.Image:
    """A blue ring (a plain mark, on white) whose inner part, 14 px of its 26, is ``inner``: the
    colours of the mark's pixels, averaged, lie away from the mark's as thin strokes blurred into a
    surface do, while its outer part keeps its shape and colour (None: all blue)."""
    tile = Image.new("RGB", (200, 200), (255, 255, 255))
    draw = ImageDraw.Draw(tile)
    draw.ellipse((30, 30, 170, 170), outline=(20, 40, 140), width=26)
    if inner is not None:
        draw.ellipse((42, 42, 158, 158), outline=inner, width=14)
    return tile


def test_a_sure_place_in_nearly_the_marks_colours_is_an_unsure_find() -> None:
    """A place that scores as a sure find but whose colours lie between MAX_COLOUR_DE and
    UNSURE_COLOUR_DE from the mark's is returned unsure, for the CNN to settle, when unsure finds
    are asked for, and not at all otherwise; a place further from the mark's colours is refused;
    the mark's own colours are a sure find."""
    mark = marks.extract_mark(_two_tone_ring(None))
    assert mark is not None
    scene = _photo("astronaut").resize((512, 512))
    found = {}
    for name, inner in (("own", None), ("nearly", (110, 40, 140)), ("other", (200, 40, 40))):
        query, box = _mark_of(_two_tone_ring(inner), scene, at=(0.7, 0.3))
        found[name] = marks.verify_mark(query, None, mark, weak_score=marks.WEAK_SCORE)
        if name == "nearly":
            assert found[name] is not None and polygon_iou(found[name].query_polygon, box, query.size) >= 0.5
            assert marks.verify_mark(query, None, mark) is None  # no unsure finds asked for
    assert found["own"] is not None and found["own"].sure
    nearly = found["nearly"]
    assert nearly is not None and not nearly.sure and nearly.score >= marks.MIN_SCORE
    assert marks.MAX_COLOUR_DE < nearly.colour_de <= marks.UNSURE_COLOUR_DE, nearly
    assert found["other"] is None, found["other"]


def test_a_mark_is_not_looked_for_where_it_would_be_under_min_mark_side_pixels(monkeypatch: pytest.MonkeyPatch
                                                                              ) -> None:
    """A template of 15-28 px correlates with a dot, a box or a letter of any logo (the chained-edits
    suite's look-alikes): widths where the mark's long side would be under MIN_MARK_SIDE pixels of the
    query are not searched. The mark at 10 % of a 256-px picture (26 px wide) is found only without
    the rule; at 8 % of a 400-px picture (32 px, the issue's smallest share) it is found with it."""
    logo = transparent_logo()
    mark = marks.extract_mark(logo.convert("RGB"), logo.getchannel("A"))
    assert mark is not None
    sprite = logo.crop((28, 18, 213, 225))

    def find(side: int, share: float) -> marks.MarkMatch | None:
        scene, _ = _composite(_photo("astronaut").resize((side, side)), sprite, width_share=share, at=(0.3, 0.7))
        query = scene.convert("RGB")
        return marks.verify_mark(query, None, mark, frame=query.size)

    assert marks.MIN_MARK_SIDE == 30
    assert find(256, 0.10) is None
    found = find(400, 0.08)
    assert found is not None and found.sure and found.edit.width_share == pytest.approx(0.08, abs=0.01)
    monkeypatch.setattr(marks, "MIN_MARK_SIDE", 0)
    small = find(256, 0.10)
    assert small is not None and small.sure
