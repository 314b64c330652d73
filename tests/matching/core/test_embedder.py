"""The CNN embedding with the committed ranking head: contract, copies, partial copies, bad input.

Uses scikit-image photos the head was not trained on (astronaut, camera,
chelsea, coffee, rocket, coins: see ``training.data.SKIMAGE_TRAIN``) and pictures made here.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from matching.core.cnn.config import CnnConfig
from matching.core.cnn.embedder import Embedder, get_embedder, prepare
from matching.core.cnn.head import DEFAULT_HEAD_PATH, TRAIN_COMMAND, read_head
from matching.core.cnn.weights import WeightsError
from matching.core.errors import ImageTooSmall
from tests.images import drawn_logo
from training import augment

PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "rocket", "coins")


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return get_embedder()


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    from skimage import data

    return {name: Image.fromarray(getattr(data, name)()).convert("RGB") for name in PHOTOS}


def test_embeddings_are_deterministic_and_unit_length(embedder: Embedder, photos: dict[str, Image.Image]) -> None:
    images = list(photos.values())
    first = embedder.embed(images)
    assert first.shape == (len(images), 256) and first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(embedder.embed(images), first)
    # Another batch size or one image at a time: the same vector up to float rounding.
    np.testing.assert_allclose(embedder.embed(images, batch_size=2), first, atol=1e-5)
    np.testing.assert_allclose(embedder.embed_one(images[1]), first[1], atol=1e-5)
    assert embedder.embed([]).shape == (0, 256)


def test_float32_runs_on_litert_and_gives_tensorflows_vectors(embedder: Embedder,
                                                               photos: dict[str, Image.Image]) -> None:
    """The converted flatbuffer is the same model: every vector within float rounding of the tf.function's."""
    assert embedder.runtime == "litert"
    on_tensorflow = Embedder(runtime="tensorflow")
    assert on_tensorflow.runtime == "tensorflow"
    images = [*photos.values(), drawn_logo(), drawn_logo().rotate(30)]
    expected = on_tensorflow.embed(images)
    np.testing.assert_allclose(embedder.embed(images), expected, atol=1e-5)
    boxes, tiles = embedder.embed_crops(images[0])
    np.testing.assert_allclose(tiles, on_tensorflow.embed([images[0].crop(b) for b in boxes]), atol=1e-5)


def test_litert_interpreters_are_per_thread_and_follow_the_batch_size(embedder: Embedder,
                                                                     photos: dict[str, Image.Image]) -> None:
    """An interpreter is not thread-safe: threads embedding at once, with different batch sizes
    (each a reallocation), must each get their own images' vectors."""
    from concurrent.futures import ThreadPoolExecutor

    images = list(photos.values())
    expected = embedder.embed(images)
    jobs = [images[i % 6 : i % 6 + 1 + i % 3] for i in range(24)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(embedder.embed, jobs))
    for i, got in enumerate(results):
        np.testing.assert_allclose(got, expected[i % 6 : i % 6 + 1 + i % 3], atol=1e-5)


def test_a_runtime_is_named_or_refused() -> None:
    with pytest.raises(ValueError, match="runtime must be one of"):
        Embedder(runtime="onnx")


def test_embedder_is_built_once_per_process(embedder: Embedder) -> None:
    assert get_embedder() is embedder
    assert get_embedder(DEFAULT_HEAD_PATH) is embedder


@pytest.mark.parametrize("attack", ["resize_30", "jpeg_q15", "crop_center_60", "crop_corner_40", "rotate_7",
                                    "mirror", "caption", "screenshot"])
def test_a_copy_scores_above_every_unrelated_photo(embedder: Embedder, photos: dict[str, Image.Image],
                                                   attack: str) -> None:
    names = list(photos)
    refs = embedder.embed([photos[n] for n in names])
    copies = [augment.ATTACKS[attack](photos[n], np.random.default_rng(i)) for i, n in enumerate(names)]
    scores = embedder.embed(copies) @ refs.T
    for i, name in enumerate(names):
        others = np.delete(scores[i], i)
        assert scores[i, i] > others.max(), f"{attack} copy of {name}: own {scores[i, i]:.3f}, best other {others.max():.3f}"


def test_pasted_logo_is_found_through_crops(embedder: Embedder, photos: dict[str, Image.Image]) -> None:
    logo = drawn_logo()
    rng = np.random.default_rng(3)
    background = photos["astronaut"]
    refs = {"logo": logo} | {n: im for n, im in photos.items() if n != "astronaut"}
    ref_vectors = embedder.embed(list(refs.values()))
    for width_share in (0.15, 0.2, 0.25):
        composite, box = augment.paste(background, logo, rng, width_share=(width_share, width_share))
        boxes, vectors = embedder.embed_crops(composite)
        assert boxes[0] == (0, 0, *composite.size) and vectors.shape == (len(boxes), 256)
        best = (vectors @ ref_vectors.T).max(axis=0)  # each reference's best window
        ranking = [list(refs)[i] for i in np.argsort(-best)]
        assert ranking[0] == "logo", f"pasted at {width_share:.0%} width in {box}: ranking {ranking}"


def test_crop_boxes_cover_the_image(embedder: Embedder, photos: dict[str, Image.Image]) -> None:
    image = photos["coffee"]
    boxes, vectors = embedder.embed_crops(image)
    w, h = image.size
    assert len(boxes) == len(vectors) >= 5
    assert all(0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h for x0, y0, x1, y1 in boxes)
    np.testing.assert_allclose(vectors[0], embedder.embed_one(image), atol=1e-5)


@pytest.mark.parametrize("size", [(10, 10), (1, 400), (400, 1), (3, 2000), (33, 31)])
def test_tiny_and_extreme_images_embed(embedder: Embedder, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    vector = embedder.embed_one(image)
    assert np.all(np.isfinite(vector)) and np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    boxes, vectors = embedder.embed_crops(image)
    assert np.all(np.isfinite(vectors))
    prepared = prepare(image)
    assert max(prepared.size) <= 8 * min(prepared.size)


def test_image_without_pixels_is_refused() -> None:
    with pytest.raises(ImageTooSmall):
        prepare(Image.new("RGB", (0, 5)))


def test_transparent_image_is_composited_on_white() -> None:
    rgba = Image.new("RGBA", (40, 40), (255, 0, 0, 0))
    assert prepare(rgba).getpixel((5, 5)) == (255, 255, 255)


def test_missing_head_file_names_the_train_command(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="missing") as info:
        Embedder(head_path=tmp_path / "head.npz")
    assert TRAIN_COMMAND in str(info.value)


def test_corrupted_head_file_names_the_train_command(tmp_path: Path) -> None:
    damaged = bytearray(DEFAULT_HEAD_PATH.read_bytes())
    path = tmp_path / "head.npz"
    path.write_bytes(bytes(damaged[: len(damaged) // 2]))
    with pytest.raises(WeightsError) as info:
        read_head(path)
    assert TRAIN_COMMAND in str(info.value)

    # A valid archive whose arrays were changed: caught by the checksum.
    with np.load(DEFAULT_HEAD_PATH, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    arrays["proj/bias"] = arrays["proj/bias"] + 1.0
    np.savez(path, **arrays)
    with pytest.raises(WeightsError, match="SHA-256") as info:
        Embedder(head_path=path)
    assert TRAIN_COMMAND in str(info.value)


def test_cnn_config_is_validated() -> None:
    assert CnnConfig(tf_threads=2, precision="float32").tf_threads == 2
    for bad in (0, -1, "many", True):
        with pytest.raises(ValueError, match="tf_threads"):
            CnnConfig(tf_threads=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="precision"):
        CnnConfig(precision="half")


_PRECISION_SCRIPT = r"""
import json, sys
import numpy as np
from PIL import Image
from skimage import data
from matching.core.cnn.embedder import configure_tf_threads, get_embedder, precision
from training import augment
configure_tf_threads(1, precision=sys.argv[1])
photos = [Image.fromarray(getattr(data, n)()).convert("RGB") for n in %r]
rng = np.random.default_rng(5)
copies = [augment.random_view(p, rng) for p in photos]
e = get_embedder()
whole = e.embed(photos + copies)
apart = np.stack([e.embed_one(im) for im in photos])
print(json.dumps({"precision": precision(), "vectors": whole.tolist(),
                  "batch_drift": float(np.abs(apart - whole[:len(photos)]).max())}))
""" % (PHOTOS,)


def _embed_in_subprocess(precision: str) -> dict:
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[3]
    done = subprocess.run([sys.executable, "-c", _PRECISION_SCRIPT, precision], cwd=root, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_bfloat16_embeddings_agree_with_float32_and_still_rank_copies_first() -> None:
    """The service's default arithmetic where the CPU has bfloat16 (``IMGPROTECT_CNN_PRECISION=auto``):
    each process is set once, so both run in subprocesses of their own."""
    exact, fast = _embed_in_subprocess("float32"), _embed_in_subprocess("bfloat16")
    assert exact["precision"] == "float32" and fast["precision"] == "bfloat16"
    a, b = np.array(exact["vectors"]), np.array(fast["vectors"])
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    agreement = (a * b).sum(axis=1)
    assert agreement.min() >= 0.99, agreement  # measured: mean 0.999, min 0.995 on dataset photos
    assert fast["batch_drift"] <= 1e-5  # one image alone or in a batch: the same row
    n = len(PHOTOS)
    exact_scores, scores = a[n:] @ a[:n].T, b[n:] @ b[:n].T  # copy i against every original
    # bfloat16 ranks every copy as float32 does.
    assert (scores.argmax(axis=1) == exact_scores.argmax(axis=1)).all(), (scores, exact_scores)
    # Five of the six copies first. The sixth, chelsea's face cropped, blurred hard and padded with
    # red, is lost by the head that fine-tunes the backbone's last block (cosine about 0; the head
    # before it ranked it first): the photos' weak rows of docs/training/report.md.
    found = scores.argmax(axis=1) == np.arange(n)
    assert found.sum() >= n - 1, scores


def test_precision_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from matching.core.cnn import embedder as module

    with pytest.raises(ValueError, match="precision"):
        module.resolve_precision("half")
    monkeypatch.setattr(module, "_cpu_has_bfloat16", lambda: False)
    assert module.resolve_precision("auto") == "float32"
    monkeypatch.setattr(module, "_cpu_has_bfloat16", lambda: True)
    assert module.resolve_precision("auto") == "bfloat16" and module.resolve_precision("float32") == "float32"
