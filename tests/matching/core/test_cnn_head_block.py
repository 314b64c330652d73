"""A head that owns the backbone's last block (matching/core/cnn/head.py, ``block/...`` arrays):
read, checked, computed the same in numpy and TensorFlow, and embedded from the earlier cut."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from matching.core.cnn.head import (
    BLOCK_INPUT_LAYER,
    DEFAULT_HEAD_PATH,
    FEATURE_LAYER,
    HeadWeights,
    head_numpy,
    head_tf,
    read_head,
    write_head,
)
from matching.core.cnn.weights import WeightsError
from training.train import block_weights as imagenet_block  # block15's fused ImageNet weights


@pytest.fixture(scope="module")
def shipped() -> HeadWeights:
    return read_head(DEFAULT_HEAD_PATH)


@pytest.fixture(scope="module")
def without_block(shipped: HeadWeights, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped head's own arrays less its block: a head that takes the maps after block15."""
    path = tmp_path_factory.mktemp("head") / "head.npz"
    arrays = {k: v for k, v in shipped.arrays.items() if not k.startswith("block/")}
    write_head(path, HeadWeights(arrays=arrays))
    return path


@pytest.fixture(scope="module")
def with_block(without_block: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """That head with block15 at its ImageNet values: the same network, cut one block earlier."""
    path = tmp_path_factory.mktemp("head") / "head.npz"
    write_head(path, HeadWeights(arrays={**read_head(without_block).arrays, **imagenet_block()},
                                 meta={"block_trained": False}))
    return path


def test_a_head_with_the_block_starts_at_the_blocks_input(shipped: HeadWeights, with_block: Path,
                                                          without_block: Path) -> None:
    head = read_head(with_block)
    assert head.has_block and head.feature_layer == BLOCK_INPUT_LAYER
    plain = read_head(without_block)
    assert not plain.has_block and plain.feature_layer == FEATURE_LAYER
    # The shipped head fine-tuned its block (docs/training/report.md): not ImageNet's.
    assert shipped.has_block and shipped.feature_layer == BLOCK_INPUT_LAYER
    assert shipped.meta.get("block_trained") is True
    assert not np.allclose(shipped.arrays["block/expand_kernel"], imagenet_block()["block/expand_kernel"])


def test_numpy_and_tensorflow_agree_on_the_block(with_block: Path) -> None:
    head = read_head(with_block)
    maps = np.random.default_rng(0).random((2, 7, 7, 192)).astype(np.float32) * 4
    import tensorflow as tf

    assert np.abs(head_numpy(maps, head) - head_tf(tf.constant(maps), head).numpy()).max() < 1e-4


def test_the_embedder_with_the_imagenet_block_gives_the_vectors_of_the_head_without_it(
        with_block: Path, without_block: Path) -> None:
    from skimage import data

    from matching.core.cnn.embedder import Embedder

    pictures = [Image.fromarray(p) for p in (data.astronaut(), data.coffee(), data.rocket())]
    today = Embedder(head_path=without_block).embed(pictures)
    earlier_cut = Embedder(head_path=with_block).embed(pictures)
    assert np.abs(today - earlier_cut).max() < 1e-4
    assert np.all(np.sum(today * earlier_cut, axis=1) > 0.9999)


@pytest.mark.parametrize("broken", ["missing", "shape", "input"])
def test_an_incomplete_or_misshapen_block_is_refused(shipped: HeadWeights, tmp_path: Path, broken: str) -> None:
    block = imagenet_block()
    if broken == "missing":
        del block["block/dw_bias"]
    elif broken == "shape":
        block["block/project_kernel"] = block["block/project_kernel"][:, :100]
    else:
        block["block/expand_kernel"] = block["block/expand_kernel"][:100]
    plain = {k: v for k, v in shipped.arrays.items() if not k.startswith("block/")}
    with pytest.raises(ValueError, match="block arrays"):
        write_head(tmp_path / "head.npz", HeadWeights(arrays={**plain, **block}))


def test_a_file_whose_block_was_damaged_after_writing_is_refused(shipped: HeadWeights, tmp_path: Path) -> None:
    import json

    path = tmp_path / "head.npz"
    arrays = {**shipped.arrays, **imagenet_block()}
    del arrays["block/expand_bias"]
    from matching.core.cnn.weights import arrays_sha256

    meta = {"format": "imgprotect/cnn-ranking-head", "version": 1, "sha256": arrays_sha256(arrays)}
    np.savez(path, **arrays, __meta__=np.array(json.dumps(meta)))
    with pytest.raises(WeightsError, match="do not fit the head"):
        read_head(path)
