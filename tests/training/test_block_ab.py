"""The backbone's last block in training (training/train.py), applied to cached maps and trained or
not, and training.block_ab, the A/B of the two."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from matching.core.cnn.head import BLOCK_INPUT_LAYER
from training import block_ab, train
from training.data import Item


@pytest.fixture(scope="module")
def pictures() -> np.ndarray:
    from skimage import data

    from matching.core.cnn.backbone import preprocess

    return np.stack([preprocess(Image.fromarray(p)) for p in (data.astronaut(), data.coffee(), data.chelsea())])


def test_the_block_applied_to_its_input_gives_the_backbones_own_output(pictures: np.ndarray) -> None:
    """The trainer's block15 (expansion, depthwise, projection, from the fused ImageNet weights) on
    the maps cached at block14_add is the backbone's block15_project_conv: the frozen arm trains the
    head on exactly the features the embedder gives it today."""
    before, shape = train.layer_maps(BLOCK_INPUT_LAYER)
    after, after_shape = train.layer_maps(train.FEATURE_LAYER)
    assert shape == (7, 7, 192) and after_shape == (7, 7, 320)
    trainer = train._Trainer.__new__(train._Trainer)
    import tensorflow as tf

    trainer.block = {k: tf.Variable(v) for k, v in train.block_weights().items()}
    mine = trainer._block(before(pictures).reshape(3, 49, 192)).numpy()
    want = after(pictures).reshape(3, 49, 320)
    assert np.abs(mine - want).max() < 1e-3 * np.abs(want).max()


def fake_cache(n_items: int, views: int, channels: int = 192) -> train.Cache:
    rng = np.random.default_rng(3)
    n = n_items * views
    maps = (rng.random((n, 7, 7, channels)) * 3).astype(np.float16)
    owner = np.repeat(np.arange(n_items, dtype=np.int32), views)
    kind = np.tile(np.array([train.CLEAN, train.RANDOM, train.PASTE, train.MARK], np.int8), n_items)
    return train.Cache(maps, owner, kind)


ITEMS = [Item(f"logo:l{i}.png", "logo") for i in range(18)] + [Item(f"photo:p{i}.png", "photo") for i in range(6)]
TINY = train.Config(seed=0, map_steps=3, map_batch=4, steps=2, batch=4, val_every=4, lr=1e-2)


@pytest.mark.parametrize("arm", block_ab.ARMS)
def test_only_the_block_arm_moves_the_blocks_weights(arm: str) -> None:
    cfg = replace(TINY, train_block=arm == "block")
    start = train.block_weights()
    trainer = train._Trainer(fake_cache(len(ITEMS), 4), ITEMS, cfg, lambda _m: None)
    head, _hist, metrics = trainer.train()
    assert head.has_block and head.feature_layer == BLOCK_INPUT_LAYER
    assert head.meta["block_trained"] is (arm == "block")
    assert all(np.array_equal(head.arrays[k], v.numpy()) for k, v in trainer.block.items())
    moved = {k: not np.array_equal(v.numpy(), start[k]) for k, v in trainer.block.items()}
    assert all(moved.values()) if arm == "block" else not any(moved.values())
    assert set(metrics) >= {"head_random_r1", "head_paste_r1", "head_mark_r1"}
    assert all(0.0 <= v <= 1.0 for v in metrics.values())


def test_the_report_has_a_row_per_arm() -> None:
    cfg = train.Config(map_steps=300, val_every=10)
    m = {"head_random_r1": 0.5, "head_paste_r1": 0.25, "head_mark_r1": 0.125}
    text = block_ab.report({"frozen": (m, 10.0), "block": ({**m, "head_random_r1": 0.75}, 20.0)}, cfg, 100)
    assert "| frozen | 0.500 | 0.250 | 0.125 | 10 |" in text
    assert "| block | 0.750 | 0.250 | 0.125 | 20 |" in text


def test_the_command_refuses_unknown_arms() -> None:
    with pytest.raises(SystemExit) as exc:
        block_ab.main(["--arms", "frozen,deeper"])
    assert exc.value.code == 2


def test_a_cache_at_another_layer_has_its_shape_and_its_own_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from skimage import data

    items = []
    for name, pixels in (("astronaut", data.astronaut()), ("coffee", data.coffee())):
        path = tmp_path / f"{name}.png"
        Image.fromarray(pixels).save(path)
        items.append(Item(f"photo:{name}.png", "photo", path))
    views = {"photo": (1, 1, 0), "logo": (1, 0, 0)}
    cache = train.build_cache(items, seed=0, cache_dir=tmp_path / "cache", log=lambda _m: None, views=views,
                              layer=BLOCK_INPUT_LAYER)
    assert cache.maps.shape == (6, 7, 7, 192) and not cache.reused
    assert list(cache.kind) == [train.CLEAN, train.RANDOM, train.PASTE] * 2
    again = train.build_cache(items, seed=0, cache_dir=tmp_path / "cache", log=lambda _m: None, views=views,
                              layer=BLOCK_INPUT_LAYER)
    assert again.reused and np.array_equal(np.asarray(again.maps), np.asarray(cache.maps))
    head_input = train.build_cache(items, seed=0, cache_dir=tmp_path / "cache", log=lambda _m: None, views=views)
    assert head_input.maps.shape == (6, 7, 7, 320) and not head_input.reused
    assert len(list((tmp_path / "cache").glob("*.f16.npy"))) == 2


@pytest.mark.parametrize(("flag", "expected"), [([], block_ab.AB_VIEWS), (["--views", "recipe"], train.VIEWS)])
def test_the_command_caches_the_views_it_is_asked_for(monkeypatch, tmp_path, flag, expected) -> None:  # type: ignore[no-untyped-def]
    seen = {}

    class Stop(Exception):
        pass

    def fake_cache(items, **kwargs):  # type: ignore[no-untyped-def]
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(train, "list_items", lambda _d: train.Split(train=[], heldout=[]))
    monkeypatch.setattr(train, "build_cache", fake_cache)
    with pytest.raises(Stop):
        block_ab.main([*flag, "--cache-dir", str(tmp_path)])
    assert seen["views"] == expected and seen["layer"] == BLOCK_INPUT_LAYER


def test_the_command_refuses_unknown_view_sets() -> None:
    with pytest.raises(SystemExit) as exc:
        block_ab.main(["--views", "double"])
    assert exc.value.code == 2


def test_maps_after_the_block_train_a_head_without_one() -> None:
    """--frozen-block: maps cached at FEATURE_LAYER, the head of before 2026-12-07 (no block arrays)."""
    cfg = replace(TINY, train_block=False)
    head, _hist, _metrics = train._Trainer(fake_cache(len(ITEMS), 4, 320), ITEMS, cfg, lambda _m: None).train()
    assert not head.has_block and head.feature_layer == train.FEATURE_LAYER
    assert "block_trained" not in head.meta


def test_the_trainer_refuses_a_block_it_cannot_train_or_apply() -> None:
    with pytest.raises(ValueError, match="block14_add"):
        train._Trainer(fake_cache(len(ITEMS), 4, 320), ITEMS, TINY, lambda _m: None)
    with pytest.raises(ValueError, match="frozen convolution"):
        train._Trainer(fake_cache(len(ITEMS), 4), ITEMS, replace(TINY, train_block=False, train_conv=False),
                       lambda _m: None)


def test_train_refuses_a_frozen_convolution_under_a_trained_block() -> None:
    with pytest.raises(SystemExit) as exc:
        train.main(["--frozen-conv"])
    assert exc.value.code == 2
