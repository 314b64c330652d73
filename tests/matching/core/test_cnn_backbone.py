"""The EfficientNet-Lite0 port: torch-free checkpoint reader, weights file, Keras model.

How the reference in ``data/effnet_lite0_reference.npz`` was produced (once,
never by the test run): ``training/make_reference.py`` run with
``/tmp/torchenv/bin/python`` (torch 2.13.0 CPU, Pillow 12.0.0, scikit-image
0.25.2). It loads ``efficientnet-lite0-57934424.pth`` with ``torch.load``
(not with our reader) into its own ~60-line PyTorch module (TF-"SAME"
padding, BatchNorm eps 1e-3, ReLU6), preprocesses chelsea/coffee/rocket with
its own PIL code (whole image, bilinear to 224x224, ``(x/255-0.5)/0.5``) and
stores the pooled 1280-d features and logits. It also ran the upstream model
code the weights were published with (``efficientnet-lite-pytorch`` 0.1.0,
``EfficientNet.from_pretrained``) on the same batch: max |difference| 0.0 for
both features and logits (recorded in the file's ``meta``). No Keras code and
no project code was involved, so agreement below is an independent check.

``tiny_zip.pth`` / ``tiny_legacy.pth`` and ``tiny_expected.npz`` come from the
same script: ``torch.save`` of odd tensors (transposed, sliced, half,
bfloat16, bool, int, scalar, Parameter) in both file layouts, with
``tensor.numpy()`` as the expected values.

Run: ``.venv/bin/python -m pytest -p no:django --confcutdir=tests/matching/core
tests/matching/core/test_cnn_backbone.py -q`` (``--confcutdir`` keeps pytest
away from the Django-only ``tests/conftest.py``), or plainly with pytest-django.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from skimage import data as skimage_data  # noqa: E402

from matching.core import cnn  # noqa: E402
from matching.core.cnn import efficientnet_lite, torch_reader, weights  # noqa: E402
from matching.core.cnn.convert import main as convert_main  # noqa: E402

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parents[3]
PTH = weights.default_source_path()
CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967
MISSILE, PROJECTILE, DRILLING_PLATFORM = 657, 744, 540


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return weights.convert_checkpoint(output=tmp_path_factory.mktemp("models") / "lite0.npz")


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(DATA / "effnet_lite0_reference.npz", allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


@pytest.fixture(scope="module")
def images(reference: dict[str, np.ndarray]) -> list[Image.Image]:
    return [Image.fromarray(getattr(skimage_data, str(n))()) for n in reference["names"]]


def imagenet_eval_crop(image: Image.Image) -> np.ndarray:
    """The usual ImageNet evaluation view: central square of 87.5 % of the short
    side (TF EfficientNet's CROP_PADDING=32 at 224), then the port's preprocessing."""
    w, h = image.size
    side = int(0.875 * min(w, h))
    left, top = (w - side) // 2, (h - side) // 2
    return cnn.preprocess(image.crop((left, top, left + side, top + side)))


# -- reader ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny_zip.pth", "tiny_legacy.pth"])
def test_reader_matches_torch_in_both_layouts(name: str) -> None:
    state = torch_reader.read_state_dict(DATA / name)
    with np.load(DATA / "tiny_expected.npz") as expected:
        assert sorted(state) == sorted(expected.files)
        for key in expected.files:
            assert state[key].dtype == expected[key].dtype, key
            assert state[key].shape == expected[key].shape, key
            np.testing.assert_array_equal(state[key], expected[key], err_msg=key)
    assert state["transposed"].flags.c_contiguous  # copied out of the strided view


def test_packaged_checkpoint_is_legacy_layout_and_reads() -> None:
    assert not zipfile.is_zipfile(PTH)  # torch < 1.6 layout: magic number, then pickles
    state = torch_reader.read_state_dict(PTH)
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_blocks.15._depthwise_conv.weight"].shape == (1152, 1, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert state["_bn0.num_batches_tracked"].dtype == np.int64
    assert not any("_se_" in key for key in state)  # Lite: no squeeze-excitation


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {self.marker}",))


def test_reader_refuses_globals_outside_the_allow_list(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("evil/data.pkl", pickle.dumps({"w": _Evil(marker)}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        torch_reader.read_state_dict(evil)

    legacy = tmp_path / "evil_legacy.pth"
    with open(legacy, "wb") as fh:
        for header in (torch_reader.LEGACY_MAGIC_NUMBER, torch_reader.LEGACY_PROTOCOL_VERSION,
                       {"little_endian": True}):
            pickle.dump(header, fh, protocol=2)
        pickle.dump(_Evil(marker), fh, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        torch_reader.read_state_dict(legacy)
    assert not marker.exists()


def test_reader_rejects_truncated_storage(tmp_path: Path) -> None:
    broken = tmp_path / "broken.pth"
    with zipfile.ZipFile(DATA / "tiny_zip.pth") as src, zipfile.ZipFile(broken, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("/data/0"):
                data = data[: len(data) // 2]
            dst.writestr(info.filename, data)
    with pytest.raises(torch_reader.TorchCheckpointError, match="bytes"):
        torch_reader.read_state_dict(broken)
    truncated = tmp_path / "truncated_legacy.pth"
    truncated.write_bytes((DATA / "tiny_legacy.pth").read_bytes()[:-10])
    with pytest.raises(torch_reader.TorchCheckpointError, match="truncated"):
        torch_reader.read_state_dict(truncated)


def test_reader_never_views_past_the_storage() -> None:
    storage = torch_reader._StorageRef("0", torch_reader._StorageType("FloatStorage"), 4,
                                       np.arange(4, dtype=np.float32))
    ok = torch_reader._TensorRef(storage, 1, (3,), (1,))
    np.testing.assert_array_equal(torch_reader._materialise(ok), [1, 2, 3])
    for bad in [torch_reader._TensorRef(storage, 2, (3,), (1,)),
                torch_reader._TensorRef(storage, 0, (2, 2), (3, 1)),
                torch_reader._TensorRef(storage, 0, (2,), (-1,))]:
        with pytest.raises(torch_reader.TorchCheckpointError):
            torch_reader._materialise(bad)


def test_reader_rejects_non_checkpoints(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(torch_reader.TorchCheckpointError):
        torch_reader.read_state_dict(junk)


# -- weights file ---------------------------------------------------------------------------------


def test_weights_file_round_trip_and_checksum(weights_file: Path) -> None:
    arrays = weights.read_weights(weights_file)
    assert len(arrays) == 247
    assert arrays["stem_conv/kernel"].shape == (3, 3, 3, 32)  # OIHW -> HWIO
    assert arrays["block1_dw_conv/kernel"].shape == (3, 3, 96, 1)  # (C,1,H,W) -> (H,W,C,1)
    assert arrays["classifier/kernel"].shape == (1280, 1000)  # (out,in) -> (in,out)
    with np.load(weights_file, allow_pickle=False) as npz:
        meta = json.loads(str(npz["__meta__"]))
    assert meta["source_sha256"] == weights.PTH_SHA256
    assert meta["sha256"] == weights.arrays_sha256(arrays)


def test_tampered_weights_fail_the_checksum(weights_file: Path, tmp_path: Path) -> None:
    with np.load(weights_file, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    arrays["head_bn/gamma"] = arrays["head_bn/gamma"] + np.float32(1e-3)
    tampered = tmp_path / "tampered.npz"
    np.savez(tampered, **arrays)
    with pytest.raises(weights.WeightsError, match="python -m matching.core.cnn.convert"):
        weights.read_weights(tampered)


def test_corrupt_weights_file_raises_weights_error_naming_the_command(weights_file: Path,
                                                                      tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(weights_file.read_bytes()[: 1 << 20])
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"\x00" * 1000)
    for path in (truncated, garbage):
        with pytest.raises(cnn.WeightsError, match="python -m matching.core.cnn.convert"):
            cnn.load_backbone(path)


def test_convert_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.npz"
    assert convert_main(["--output", str(out)]) == 0
    assert weights.read_weights(out)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"junk")
    assert convert_main(["--source", str(bad), "--output", str(tmp_path / "x.npz")]) == 1
    assert "cannot convert" in capsys.readouterr().err


def test_default_location_follows_data_dir_and_converts_when_missing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from matching.core.cnn import config

    monkeypatch.setattr(config, "_current", replace(config.current(), data_dir=tmp_path / "data"))
    target = tmp_path / "data" / "models" / "efficientnet_lite0_imagenet.npz"
    assert cnn.default_weights_path() == target
    assert not target.exists()
    model = cnn.load_backbone()  # converts from the installed package, offline
    assert target.exists() and weights.read_weights(target)
    assert model.output_shape == (None, 7, 7, 1280)
    assert oct(target.stat().st_mode & 0o777) == oct(0o644)


# -- the model ------------------------------------------------------------------------------------


def test_import_stays_light() -> None:
    code = ("import sys, matching.core.cnn; "
            "bad = [m for m in ('tensorflow', 'keras', 'django', 'torch') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_model_shapes_and_caching(weights_file: Path) -> None:
    features = cnn.load_backbone(weights_file)
    assert features.input_shape == (None, 224, 224, 3)
    assert features.output_shape == (None, 7, 7, 1280)
    assert cnn.load_backbone(weights_file, include_top=True).output_shape == (None, 1000)

    seen: list[object] = []
    threads = [threading.Thread(target=lambda: seen.append(cnn.load_backbone(weights_file)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(m is features for m in seen)


def test_preprocess_matches_the_reference_inputs(images: list[Image.Image],
                                                 reference: dict[str, np.ndarray]) -> None:
    for image, digest in zip(images, reference["input_sha256"]):
        x = cnn.preprocess(image)
        assert x.shape == (224, 224, 3) and x.dtype == np.float32
        assert -1.0 <= x.min() and x.max() <= 1.0
        u8 = np.rint((x * 0.5 + 0.5) * 255).astype(np.uint8)
        assert hashlib.sha256(u8.tobytes()).hexdigest() == digest


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "layer-for-layer"])
def test_pooled_features_match_pytorch_reference(weights_file: Path, images: list[Image.Image],
                                                 reference: dict[str, np.ndarray],
                                                 fused: bool) -> None:
    if fused:
        pooled = cnn.pooled_features(images, weights_path=weights_file)
    else:
        model = cnn.load_backbone(weights_file, fused=False)
        batch = np.stack([cnn.preprocess(im) for im in images])
        pooled = np.asarray(model(batch, training=False)).mean(axis=(1, 2))
    assert pooled.shape == (3, 1280) and pooled.dtype == np.float32
    np.testing.assert_allclose(pooled, reference["pooled"], atol=1e-4, rtol=0)


def test_logits_match_pytorch_reference(weights_file: Path, images: list[Image.Image],
                                        reference: dict[str, np.ndarray]) -> None:
    logits = cnn.classify(images, weights_path=weights_file)
    np.testing.assert_allclose(logits, reference["logits"], atol=1e-3, rtol=0)


def test_imagenet_top1_on_bundled_photos(weights_file: Path) -> None:
    names = ["chelsea", "coffee", "rocket"]
    batch = np.stack([imagenet_eval_crop(Image.fromarray(getattr(skimage_data, n)()))
                      for n in names])
    top1 = dict(zip(names, cnn.classify(batch, weights_path=weights_file).argmax(axis=1)))
    assert top1["chelsea"] in CAT_CLASSES
    assert top1["coffee"] == ESPRESSO
    assert top1["rocket"] in (MISSILE, PROJECTILE)


def test_whole_image_view_of_rocket_still_ranks_missile_high(weights_file: Path,
                                                             reference: dict[str, np.ndarray]) -> None:
    # The squashed 640x427 frame (the matcher's view, no crop) shows the launch
    # tower more than the rocket: the PyTorch original itself says "drilling
    # platform" first there, with missile and projectile next.
    rocket = Image.fromarray(skimage_data.rocket())
    logits = cnn.classify([rocket], weights_path=weights_file)[0]
    assert int(reference["logits"][2].argmax()) == DRILLING_PLATFORM
    assert {MISSILE, PROJECTILE} <= set(np.argsort(-logits)[:3].tolist())


def test_batching_and_inputs(weights_file: Path, images: list[Image.Image]) -> None:
    batch = np.stack([cnn.preprocess(im) for im in images])
    whole = cnn.pooled_features(batch, weights_path=weights_file)
    in_ones = cnn.pooled_features(batch, weights_path=weights_file, batch_size=1)
    np.testing.assert_allclose(in_ones, whole, atol=1e-5)
    assert cnn.pooled_features([], weights_path=weights_file).shape == (0, 1280)
    with pytest.raises(ValueError):
        cnn.pooled_features(np.zeros((1, 100, 100, 3), np.float32), weights_path=weights_file)


def test_fused_weights_equal_batchnorm_maths() -> None:
    rng = np.random.default_rng(0)
    k = rng.normal(size=(1, 1, 4, 3)).astype(np.float32)
    dw = rng.normal(size=(3, 3, 4, 1)).astype(np.float32)
    bn = {s: rng.uniform(0.5, 2, size=c).astype(np.float32)
          for s, c in (("gamma", 3), ("beta", 3), ("moving_mean", 3), ("moving_variance", 3))}
    dbn = {s: rng.uniform(0.5, 2, size=4).astype(np.float32) for s in bn}
    arrays = {"a_conv/kernel": k, **{f"a_bn/{s}": v for s, v in bn.items()},
              "b_dw_conv/kernel": dw, **{f"b_dw_bn/{s}": v for s, v in dbn.items()}}
    fused = efficientnet_lite.fuse_batchnorm(arrays)
    x = rng.normal(size=4).astype(np.float32)
    conv = x @ k[0, 0]
    expected = (bn["gamma"] * (conv - bn["moving_mean"])
                / np.sqrt(bn["moving_variance"] + efficientnet_lite.BN_EPSILON) + bn["beta"])
    np.testing.assert_allclose(x @ fused["a_conv/kernel"][0, 0] + fused["a_conv/bias"], expected,
                               rtol=1e-5)
    centre = dw[1, 1, :, 0] * x
    expected_dw = (dbn["gamma"] * (centre - dbn["moving_mean"])
                   / np.sqrt(dbn["moving_variance"] + efficientnet_lite.BN_EPSILON) + dbn["beta"])
    np.testing.assert_allclose(fused["b_dw_conv/kernel"][1, 1, :, 0] * x + fused["b_dw_conv/bias"],
                               expected_dw, rtol=1e-5)


def test_reference_file_is_small_and_pickle_free() -> None:
    path = DATA / "effnet_lite0_reference.npz"
    assert path.stat().st_size < 64 * 1024
    with np.load(path, allow_pickle=False) as npz:
        meta = json.loads(str(npz["meta"]))
    assert meta["pth_sha256"] == weights.PTH_SHA256
    assert meta["upstream_check"]["max_abs_diff_pooled"] == 0.0
