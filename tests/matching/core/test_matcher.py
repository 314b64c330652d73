"""The matcher's cascade end to end, in memory: real CNN, real hash and vector indexes, real ORB.

References are scikit-image photos the CNN head was not trained on and a brand
mark drawn here (``tests.images.drawn_logo``); queries are copies made here.
No database: ``index_references`` + ``MemoryStore``.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from PIL import Image

from bench.attacks import rect
from bench.metrics import polygon_iou
from matching.core import geometry
from matching.core.cnn.embedder import CROP_WINDOWS, get_embedder
from matching.core.matcher import (
    Decision, Matcher, Thresholds, _enlarge, _Evidence, _rank_key, index_references,
)
from tests.images import drawn_logo
from training import augment

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera")
LOGO_ID = 100


def _skimage(name: str) -> Image.Image:
    from skimage import data

    return Image.fromarray(getattr(data, name)()).convert("RGB")


@pytest.fixture(scope="module")
def matcher() -> Matcher:
    refs = [(i, _skimage(name)) for i, name in enumerate(PHOTOS[1:])] + [(LOGO_ID, drawn_logo())]
    embedder = get_embedder()
    indexed = index_references(refs, embedder=embedder)
    return Matcher(store=indexed.store, indexes=indexed.indexes(), thresholds=Thresholds.load(), embedder=embedder)


def _loaded(image: Image.Image):  # type: ignore[no-untyped-def]
    from matching.core.loading import load_image

    from .helpers import encode

    return load_image(encode(image, "PNG"))


# Where augment.paste puts the logo for each seed: 0, 2 and 3 in the upper two thirds of the
# astronaut photo, 1 and 5 low in it (y > 330 of 512).
@pytest.mark.parametrize("seed", [0, 2, 3])
def test_a_logo_pasted_into_a_photo_is_found_verified_and_boxed(matcher: Matcher, seed: int) -> None:
    # The background photo (astronaut) is not protected; the logo fills 20 % of its width.
    composite, (x0, y0, x1, y1) = augment.paste(_skimage("astronaut"), drawn_logo(),
                                                np.random.default_rng(seed), width_share=(0.2, 0.2))
    outcome = matcher.match(_loaded(composite))
    best = outcome.decisions[0]
    assert best.reference_id == LOGO_ID and best.verdict == "modified_copy", outcome.decisions[:3]
    assert polygon_iou(best.region["query"], rect(x0, y0, x1, y1), composite.size) >= 0.5
    assert "cnn_tiles_ms" in outcome.timings_ms  # found by the partial-copy pass


@pytest.mark.parametrize("seed", [
    # Seed 5: the CNN cosine of its best tile (0.22-0.31) is under the candidate threshold, but the
    # logo's mark views are the nearest vectors to a tile, so its mark is looked for and found
    # (matching/core/marks.py).
    5,
    # Seed 1 was a known miss (best tile at cosine 0.22-0.31, the mark search did not find it either)
    # until the head was retrained on chained edits and mark composites (docs/training/report.md).
    1,
])
def test_a_logo_pasted_low_into_a_photo_is_found(matcher: Matcher, seed: int) -> None:
    composite, _ = augment.paste(_skimage("astronaut"), drawn_logo(), np.random.default_rng(seed),
                                 width_share=(0.2, 0.2))
    best = matcher.match(_loaded(composite)).decisions[0]
    assert best.reference_id == LOGO_ID and best.verdict == "modified_copy"


def test_a_whole_copy_skips_the_partial_copy_pass_unless_asked(matcher: Matcher) -> None:
    copy = _skimage("chelsea").resize((300, 200), Image.Resampling.BILINEAR)
    auto = matcher.match(_loaded(copy))
    assert auto.decisions[0].reference_id == 0 and auto.decisions[0].verdict == "near_duplicate"
    # The hashes decided it: no CNN pass at all, let alone the ten of the partial-copy search.
    assert "cnn_ms" not in auto.timings_ms and "cnn_tiles_ms" not in auto.timings_ms
    rotated = matcher.match(_loaded(_skimage("chelsea").rotate(9, expand=True).crop((40, 40, 400, 300))))
    assert rotated.decisions[0].reference_id == 0 and rotated.decisions[0].verdict == "modified_copy"
    assert "cnn_ms" in rotated.timings_ms and "cnn_tiles_ms" not in rotated.timings_ms
    always = matcher.match(_loaded(copy), partial="always")
    assert "cnn_tiles_ms" in always.timings_ms and always.decisions[0].reference_id == 0
    never = matcher.match(_loaded(_skimage("astronaut")), partial="never")
    assert "cnn_tiles_ms" not in never.timings_ms and "cnn_ms" in never.timings_ms


def test_a_mirrored_copy_is_found_by_the_hash_variants_and_still_boxed(matcher: Matcher) -> None:
    from PIL import ImageOps

    outcome = matcher.match(_loaded(ImageOps.mirror(_skimage("chelsea"))))
    best = outcome.decisions[0]
    assert best.reference_id == 0 and best.verdict == "modified_copy"
    assert "cnn_ms" not in outcome.timings_ms  # PDQ's flipped variant decided it
    assert best.region is not None and best.edit["mirrored"] is True  # verification drew the region
    every_pass = matcher.match(_loaded(ImageOps.mirror(_skimage("chelsea"))), partial="always")
    assert "cnn_tiles_ms" in every_pass.timings_ms
    assert every_pass.decisions[0].reference_id == 0 and every_pass.decisions[0].region is not None


def test_a_mirrored_and_edited_copy_is_found_by_the_partial_copy_pass(matcher: Matcher) -> None:
    """Turned and cropped as well as flipped, no hash variant points at the flip, so the answer's
    passes verify only the plain orientation (the mirror image's features cost as much again);
    the pass that follows the answer tries the mirror image too."""
    from PIL import ImageOps

    copy = ImageOps.mirror(_skimage("chelsea")).rotate(9, expand=True).crop((40, 40, 400, 300))
    answer = matcher.match(_loaded(copy), partial="never")
    assert all(d.reference_id != 0 for d in answer.positives), answer.decisions[:3]
    complete = matcher.match(_loaded(copy))
    best = complete.decisions[0]
    assert best.reference_id == 0 and best.verdict == "modified_copy", complete.decisions[:3]
    assert best.edit["mirrored"] is True and "cnn_tiles_ms" in complete.timings_ms


def test_the_partial_copy_pass_does_not_verify_the_plain_orientation_again(matcher: Matcher,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The pass that follows the answer verifies the answer's candidates again with the mirror
    image: the plain orientation's half is the answer pass's own (geometry.verify's ``plain``), so
    no candidate is matched twice in it against the same features with the same settings."""
    from PIL import ImageOps

    from matching.core import geometry

    attempts: list[tuple[int, int, bool, float]] = []
    real = geometry._attempt

    def counted(q, r, mirrored, min_inliers, ratio, *args, **kwargs):  # type: ignore[no-untyped-def]
        attempts.append((id(q.descriptors), id(r.descriptors), mirrored, ratio))
        return real(q, r, mirrored, min_inliers, ratio, *args, **kwargs)

    monkeypatch.setattr(geometry, "_attempt", counted)
    # As in the test above: the answer's passes verify the plain orientation only, the pass the mirror.
    copy = ImageOps.mirror(_skimage("chelsea")).rotate(9, expand=True).crop((40, 40, 400, 300))
    outcome = matcher.match(_loaded(copy))
    assert "cnn_tiles_ms" in outcome.timings_ms and outcome.decisions[0].edit["mirrored"] is True
    plain = [a for a in attempts if not a[2]]
    assert len(plain) == len(set(plain)), "a plain attempt was repeated"


def test_an_unrelated_photo_matches_nothing(matcher: Matcher) -> None:
    outcome = matcher.match(_loaded(_skimage("astronaut")))
    assert outcome.positives == []
    assert "cnn_tiles_ms" in outcome.timings_ms  # nothing found: the partial-copy pass ran


def test_partial_mode_is_checked(matcher: Matcher) -> None:
    with pytest.raises(ValueError, match="partial must be one of"):
        matcher.match(_loaded(_skimage("coffee")), partial="sometimes")


def test_matches_rank_above_similar_above_the_rest() -> None:
    decisions = [Decision(1, "none", 0.99), Decision(2, "similar", 0.8), Decision(3, "modified_copy", 0.76),
                 Decision(4, "near_duplicate", 0.9)]
    assert [d.reference_id for d in sorted(decisions, key=_rank_key)] == [4, 3, 2, 1]


def test_undecided_candidates_rank_by_distance_from_chance() -> None:
    # 16 pHash bits between two unrelated logos is common (a raw similarity of 0.75);
    # a CNN cosine of 0.6 from a crop is real evidence of a pasted copy.
    matcher = Matcher(store=None, indexes=None, thresholds=Thresholds(phash_candidate=16, cnn_candidate=0.35))  # type: ignore[arg-type]
    hash_noise = matcher._evidence_score(_Evidence(phash=16, phash_variant=16))
    cnn = matcher._evidence_score(_Evidence(cnn=0.6))
    assert hash_noise == 0.0 and cnn == pytest.approx(0.25 / 0.65, abs=1e-6)
    assert matcher._evidence_score(_Evidence(phash_variant=4)) == pytest.approx(0.75)
    assert matcher._evidence_score(_Evidence()) == 0.0


def test_hashes_and_the_cnn_above_chance_together_outrank_the_cnn_alone() -> None:
    # The benchmark's case (chains suite, seed 0): a pixel-shuffled logo 8 pHash bits and a cosine of
    # 0.48 from its original, under a look-alike logo the CNN alone puts at 0.54. Two independent
    # witnesses combine as a noisy-or; pHash and PDQ read the same picture and count once.
    matcher = Matcher(store=None, indexes=None, thresholds=Thresholds(phash_candidate=10, pdq_candidate=48, cnn_candidate=0.35))  # type: ignore[arg-type]
    both = matcher._evidence_score(_Evidence(phash=8, phash_variant=8, cnn=0.48))
    look_alike = matcher._evidence_score(_Evidence(cnn=0.54))
    assert look_alike == pytest.approx(0.19 / 0.65, abs=1e-6)
    assert both == pytest.approx(1 - 0.8 * (1 - 0.13 / 0.65), abs=1e-6) and both > look_alike
    hashes = matcher._evidence_score(_Evidence(phash_variant=8, pdq_variant=24))
    assert hashes == pytest.approx(0.5)  # the better hash only: 1 - 24/48, not a noisy-or with pHash's 0.2
    # Under chance a witness adds nothing, and the score stays in [0, 1].
    assert matcher._evidence_score(_Evidence(phash_variant=16, cnn=0.6)) == pytest.approx(0.25 / 0.65, abs=1e-6)
    assert matcher._evidence_score(_Evidence(phash_variant=0, cnn=1.0)) == 1.0


def test_agreeing_inliers_of_a_failed_verification_count_as_a_third_witness() -> None:
    # The development seed's case (chains suite, seed 1): a turned, recoloured copy in perspective
    # whose verification found 18 agreeing inliers and then failed the appearance check, at a cosine
    # of 0.54, under a look-alike at 0.58 that verification found 5 inliers in.
    matcher = Matcher(store=None, indexes=None, thresholds=Thresholds(cnn_candidate=0.35, min_inliers=12))  # type: ignore[arg-type]
    fitted = matcher._evidence_score(_Evidence(cnn=0.54), inliers=18)
    look_alike = matcher._evidence_score(_Evidence(cnn=0.58), inliers=5)
    assert look_alike == matcher._evidence_score(_Evidence(cnn=0.58)) == pytest.approx(0.23 / 0.65, abs=1e-6)
    assert fitted == pytest.approx(1 - (1 - 0.19 / 0.65) * (1 - 6 / 12), abs=1e-6) and fitted > look_alike
    # Under the bar (look-alikes reach 9-11 by chance) inliers add nothing; twice the bar is the most
    # they give.
    for inliers in (5, 11, 12):
        assert matcher._evidence_score(_Evidence(cnn=0.54), inliers=inliers) == matcher._evidence_score(_Evidence(cnn=0.54))
    assert matcher._evidence_score(_Evidence(), inliers=24) == matcher._evidence_score(_Evidence(), inliers=300) == 1.0
    # The bar is the one the verification applied: a collection's own min_inliers of 20 leaves 15 under it.
    assert matcher._evidence_score(_Evidence(cnn=0.54), inliers=15, bar=20) == matcher._evidence_score(_Evidence(cnn=0.54))
    assert matcher._evidence_score(_Evidence(), inliers=30, bar=20) == pytest.approx(0.5)


def test_a_candidate_turned_down_after_its_inliers_agreed_ranks_by_them(
        matcher: Matcher, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    real = geometry.verify

    def turned_down(*args: Any, **kwargs: Any) -> geometry.Verification:
        result = real(*args, **kwargs)
        return replace(result, accepted=False, reason="the aligned pictures do not look alike (correlation 0.30)")

    monkeypatch.setattr(geometry, "verify", turned_down)
    monkeypatch.setattr(geometry, "crop_verification", lambda *a, **k: None)
    monkeypatch.setattr(geometry, "aligned_verification", lambda *a, **k: None)
    unsure = Matcher(store=matcher.store, indexes=matcher.indexes, embedder=matcher.embedder,
                     thresholds=replace(matcher.thresholds, cnn_similar=1.01))
    chelsea = _skimage("chelsea")
    decisions = unsure.match(_loaded(chelsea.resize((400, 300)).rotate(10)), partial="never").decisions
    best = decisions[0]
    assert best.reference_id == 0 and best.verdict == "none", best
    scores = best.signal_scores
    assert scores["inliers"] >= 24 and scores["verification"].startswith("the aligned pictures")
    alone = unsure._evidence_score(_Evidence(cnn=scores["cnn_score"], phash_variant=scores.get("phash_variant_distance"),
                                             pdq_variant=scores.get("pdq_variant_distance")))
    assert alone < 1.0 and best.score == 1.0
    assert all(d.score < best.score for d in decisions[1:])


def test_region_features_are_in_the_whole_picture_frame() -> None:
    image = _skimage("astronaut")
    box = (100, 50, 300, 250)
    feats = geometry.extract_region_features(image, box, with_mirror=True)
    assert (feats.width, feats.height) == image.size and len(feats) > 50
    kp = feats.keypoints
    assert kp[:, 0].min() >= box[0] and kp[:, 0].max() <= box[2]
    assert kp[:, 1].min() >= box[1] and kp[:, 1].max() <= box[3]
    assert feats.pixel_scale < 1  # 200 px processed at 640: finer than the picture's pixels
    # The region verifies against the whole picture as the reference, at the right place.
    result = geometry.verify(feats, geometry.extract_features(image))
    assert result.accepted
    assert polygon_iou(result.query_polygon, rect(0, 0, *image.size), image.size) > 0.9
    with pytest.raises(ValueError, match="empty region"):
        geometry.extract_region_features(image, (600, 600, 700, 700))


def test_enlarged_tile_stays_inside_the_picture() -> None:
    assert _enlarge((0, 0, 100, 100), (300, 300)) == (0, 0, 150, 150)
    assert _enlarge((100, 100, 200, 200), (300, 300)) == (50, 50, 250, 250)
    assert _enlarge((200, 200, 300, 300), (300, 300)) == (150, 150, 300, 300)
    assert CROP_WINDOWS[0] == (0.0, 0.0, 1.0, 1.0)
    assert all(0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1 for x0, y0, x1, y1 in CROP_WINDOWS)


def test_a_stretched_and_cropped_copy_is_verified_and_second_looks_go_to_similar_candidates_only(
        matcher: Matcher, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    looked: list[tuple[int, int]] = []
    real = geometry.second_look_features

    def spy(image: Image.Image, reference: geometry.Features, **kwargs: object) -> list[tuple[str, geometry.Features]]:
        looked.append((reference.width, reference.height))
        return real(image, reference, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(geometry, "second_look_features", spy)
    chelsea = _skimage("chelsea")
    copy = chelsea.resize((round(chelsea.width * 1.5), chelsea.height)).crop((30, 20, 640, 300))
    best = matcher.match(_loaded(copy)).decisions[0]
    assert best.reference_id == 0 and best.verdict == "modified_copy", best
    assert best.edit is not None and best.edit["aspect_change"] > 1.3
    # Nothing the CNN finds similar: no second look, however many candidates were verified.
    looked.clear()
    assert matcher.match(_loaded(_skimage("astronaut"))).positives == []
    assert looked == []
    strict = Matcher(store=matcher.store, indexes=matcher.indexes,
                     thresholds=replace(matcher.thresholds, cnn_similar=1.01), embedder=matcher.embedder)
    assert strict.match(_loaded(copy.rotate(20, expand=True))).decisions and looked == []



def test_a_pixel_shuffled_copy_is_verified_by_a_low_resolution_look_given_to_few_candidates(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.chains import EDITS
    from matching.core import matcher as matcher_module

    astronaut = _skimage("astronaut")
    refs = [(0, astronaut), (1, _skimage("coffee")), (LOGO_ID, drawn_logo())]
    embedder = get_embedder()
    indexed = index_references(refs, embedder=embedder)
    # Every candidate the CNN puts forward is verified (this head scores such copies 0.1-0.5):
    # what is under test is the verdict on a candidate, not the head's ranking.
    matcher = Matcher(store=indexed.store, indexes=indexed.indexes(),
                      thresholds=Thresholds.load(cnn_candidate=0.1), embedder=embedder)
    looked: list[tuple[int, int]] = []
    real = geometry.low_resolution_features

    def spy(features: geometry.Features, **kwargs: object) -> geometry.Features | None:
        looked.append((features.width, features.height))
        return real(features, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(geometry, "low_resolution_features", spy)
    # 15-40 % of small blocks traded, then turned (so no hash finds it): too few keypoints
    # survive for the full-size verification.
    copy = EDITS["shuffle"](astronaut, np.random.default_rng(4), lambda rng: astronaut).rotate(
        20, expand=True, resample=Image.Resampling.BICUBIC)
    best = matcher.match(_loaded(copy)).decisions[0]
    assert best.reference_id == 0 and best.verdict == "modified_copy", best
    assert best.edit is not None and abs(best.edit["rotation_deg"] - 20) < 3
    assert looked  # the low-resolution look confirmed it
    # The answer alone (no partial-copy pass, as a check answers first) does not take the look:
    # it would cost the answer ~20 ms (docs/geometry.md).
    looked.clear()
    assert not matcher.match(_loaded(copy), partial="never").decisions[0].is_match and not looked
    # Without the look, the same candidate is not confirmed.
    monkeypatch.setattr(matcher_module, "LOW_RES_LOOKS", 0)
    assert not matcher.match(_loaded(copy)).decisions[0].is_match
    monkeypatch.setattr(matcher_module, "LOW_RES_LOOKS", 3)
    # Unrelated shuffled pictures: no match, and the look goes to a few candidates at most (each
    # of them once, and again with the mirror image in the partial-copy pass; the query's own
    # thumbnail once plain, once with its mirror image).
    for name in ("chelsea", "rocket"):
        looked.clear()
        photo = _skimage(name)
        other = EDITS["shuffle"](photo, np.random.default_rng(4), lambda rng: photo).rotate(20, expand=True)
        assert matcher.match(_loaded(other), partial="always").positives == [], name
        assert len(looked) <= 2 * (matcher_module.LOW_RES_LOOKS + 1)


def test_the_low_resolution_looks_go_to_the_most_promising_candidates_not_the_first_verified(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The partial-copy pass verifies its tiles' new candidates before the answer's own; the looks
    # used to go to whichever came first, so a weaker candidate the tiles raised took the only one
    # and the shuffled copy the whole picture found never had it (the chains suite's development
    # seed: a shuffled logo at a cosine of 0.72 unmatched, its looks given to candidates at
    # 0.38-0.45).
    from bench.chains import EDITS
    from matching.core import matcher as matcher_module

    astronaut = _skimage("astronaut")
    embedder = get_embedder()
    indexed = index_references([(0, astronaut), (1, _skimage("coffee")), (LOGO_ID, drawn_logo())],
                               embedder=embedder)
    matcher = Matcher(store=indexed.store, indexes=indexed.indexes(), thresholds=Thresholds.load(),
                      embedder=embedder)
    copy = EDITS["shuffle"](astronaut, np.random.default_rng(4), lambda rng: astronaut).rotate(
        20, expand=True, resample=Image.Resampling.BICUBIC)

    def cnn_stage(self: Matcher, loaded: object, ev: Any, top_k: int, *, tiles: bool, keep: object = None) -> None:
        # The cosines set, not this small test head's (it scores such copies 0.1-0.5): the whole
        # picture finds the astronaut (under the median look's 0.5, so only the low-resolution
        # look can confirm it), the tiles then the coffee cup a little less near.
        e = ev(1 if tiles else 0)
        e.cnn, e.cnn_box, e.changed = (0.44, (0, 0, 64, 64), True) if tiles else (0.45, None, True)

    monkeypatch.setattr(Matcher, "_cnn_stage", cnn_stage)
    monkeypatch.setattr(matcher_module, "LOW_RES_LOOKS", 1)
    looked: list[int] = []
    real_look = Matcher._low_resolution_look

    def spy(state: Any, ref_id: int, *args: Any, **kwargs: Any) -> Any:
        found = real_look(state, ref_id, *args, **kwargs)
        if ref_id in state.low_looked and ref_id not in looked:
            looked.append(ref_id)
        return found

    monkeypatch.setattr(Matcher, "_low_resolution_look", staticmethod(spy))
    best = matcher.match(_loaded(copy)).decisions[0]
    assert looked == [0]
    assert best.reference_id == 0 and best.verdict == "modified_copy", best
    # The full-size verification's failure before the look is not reported as the match's evidence.
    assert "verification" not in best.signal_scores and best.signal_scores["inliers"] >= 12
