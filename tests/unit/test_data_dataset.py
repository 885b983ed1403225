"""Augmentations and the torch TileDataset over a fake processed/<version>/ directory."""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from parking_ml.data.augment import (
    NORMALIZE_MEAN,
    NORMALIZE_STD,
    build_eval_transform,
    build_train_transform,
    normalize_image,
)
from parking_ml.data.dataset import TileDataset, hard_mask, resample_tile, soft_target
from tests.fakes.scenes import lot

VALID = {0, 1, 2, 255}


def _scene(h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    # noise without paint: a free and an occupied stall one above the other, 4 ignored rows on top
    image, mask, _ = lot(
        h,
        w,
        seed,
        stall=(10, 20),
        rows=(10, 40),
        left=10,
        gap=w,
        base=0,
        spread=256,
        style="none",
        phase=2,
        ignore_top=4,
    )
    return image, mask


def _processed(root: Path, n: int = 3, size: int = 64, gsd: float | None = None) -> pd.DataFrame:
    (root / "tiles").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = []
    for i in range(n):
        image, mask = _scene(size, size, seed=i)
        tid = f"img{i}_0_0"
        cv2.imwrite(str(root / "tiles" / f"{tid}.png"), image[:, :, ::-1])
        cv2.imwrite(str(root / "masks" / f"{tid}.png"), mask)
        rows.append({"tile_id": tid, "site": f"s{i}", "fold": i % 2, "split": "train", "gsd": gsd})
    return pd.DataFrame(rows)


def test_train_transform_shapes_values_and_padding():
    t = build_train_transform(64, strength=1.0, seed=3)
    image, mask = _scene(96, 80)
    for _ in range(20):
        out = t(image=image, mask=mask)
        assert out["image"].shape == (64, 64, 3) and out["image"].dtype == np.uint8
        assert out["mask"].shape == (64, 64) and out["mask"].dtype == np.uint8
        assert set(np.unique(out["mask"]).tolist()) <= VALID  # nearest interpolation: no blended ids
    small_img, small_mask = _scene(64, 40)
    out = build_train_transform(64, strength=0.0)(image=small_img, mask=small_mask)
    assert out["mask"].shape == (64, 64)
    assert (out["mask"][:, 40:] == 255).all()  # padding is ignore, not background
    np.testing.assert_array_equal(out["image"][:, :40], small_img)


def test_strength_zero_is_identity_at_tile_size_and_seed_is_deterministic():
    image, mask = _scene(64, 64)
    out = build_train_transform(64, strength=0.0)(image=image, mask=mask)
    np.testing.assert_array_equal(out["image"], image)
    np.testing.assert_array_equal(out["mask"], mask)
    a = build_train_transform(64, strength=1.0, seed=7)
    b = build_train_transform(64, strength=1.0, seed=7)
    for _ in range(5):
        oa, ob = a(image=image, mask=mask), b(image=image, mask=mask)
        np.testing.assert_array_equal(oa["image"], ob["image"])
        np.testing.assert_array_equal(oa["mask"], ob["mask"])
    with pytest.raises(ValueError, match="strength"):
        build_train_transform(64, strength=1.5)


def test_train_transform_changes_images_at_full_strength():
    image, mask = _scene(64, 64)
    t = build_train_transform(64, strength=1.0, seed=1)
    changed = sum(not np.array_equal(t(image=image, mask=mask)["image"], image) for _ in range(10))
    assert changed >= 5


def test_eval_transform_is_noop_and_optional_padding():
    image, mask = _scene(70, 50)
    out = build_eval_transform()(image=image, mask=mask)
    np.testing.assert_array_equal(out["image"], image)
    np.testing.assert_array_equal(out["mask"], mask)
    out = build_eval_transform(pad_multiple=32)(image=image, mask=mask)
    assert out["image"].shape == (96, 64, 3)
    np.testing.assert_array_equal(out["image"][:70, :50], image)
    assert (out["mask"][70:, :] == 255).all() and (out["mask"][:, 50:] == 255).all()


def test_normalize_image_formula():
    rgb = np.array([[[0, 128, 255]]], np.uint8)
    out = normalize_image(rgb)
    assert out.shape == (3, 1, 1) and out.dtype == np.float32
    expected = [(v / 255.0 - m) / s for v, m, s in zip((0, 128, 255), NORMALIZE_MEAN, NORMALIZE_STD, strict=True)]
    np.testing.assert_allclose(out[:, 0, 0], expected, rtol=1e-6)


def test_tile_dataset_items_and_loader(tmp_path):
    manifest = _processed(tmp_path)
    ds = TileDataset(tmp_path, manifest[manifest.fold == 0])
    assert len(ds) == 2
    item = ds[1]
    assert item["tile_id"] == "img2_0_0"
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 64, 64)
    assert item["mask"].dtype == torch.int64 and item["mask"].shape == (64, 64)
    image, mask = _scene(64, 64, seed=2)
    np.testing.assert_allclose(item["image"].numpy(), normalize_image(image), rtol=1e-6)
    np.testing.assert_array_equal(item["mask"].numpy(), mask)
    np.testing.assert_array_equal(item["target"].numpy(), soft_target(mask).transpose(2, 0, 1))
    transform = build_train_transform(48, seed=0, soft=True)
    batch = next(iter(DataLoader(TileDataset(tmp_path, manifest, transform), batch_size=3)))
    assert batch["image"].shape == (3, 3, 48, 48) and batch["mask"].shape == (3, 48, 48)
    assert batch["target"].shape == (3, 3, 48, 48) and float(batch["target"].sum(1).max()) <= 1.0 + 1e-5
    assert batch["tile_id"] == ["img0_0_0", "img1_0_0", "img2_0_0"]
    cached = TileDataset(tmp_path, manifest, cache=True)
    assert torch.equal(cached[0]["mask"], cached[0]["mask"])


def test_tile_dataset_missing_file_names_it(tmp_path):
    manifest = _processed(tmp_path, n=1)
    (tmp_path / "masks" / "img0_0_0.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"img0_0_0\.png.*preprocess"):
        TileDataset(tmp_path, manifest)[0]


def test_soft_targets_survive_resampling_and_augmentation():
    image, mask = _scene(96, 80)
    rgb, target = resample_tile(image, mask, 0.5)
    assert rgb.shape == (48, 40, 3) and target.shape == (48, 40, 3)
    weight = target.sum(-1)
    # class shares of each coarse pixel: ignored rows carry no weight, labelled ones sum to 1
    assert weight[:2].max() == 0 and np.allclose(weight[3:], 1.0)
    # the 20 x 10 free stall (rows 10-29, cols 10-19) keeps its area: 200 px -> 50 coarse px
    assert target[..., 1].sum() == pytest.approx(50.0, abs=1e-3)
    np.testing.assert_array_equal(hard_mask(soft_target(mask)), mask)
    t = build_train_transform(32, strength=1.0, seed=0, soft=True)
    for _ in range(20):
        out = t(image=rgb, mask=target)["mask"]
        assert out.shape == (32, 32, 3) and out.dtype == np.float32
        # bilinear resampling and zero padding: shares stay in [0, 1] and never exceed 1 per pixel
        assert out.min() >= 0 and out.sum(-1).max() <= 1.0 + 1e-5


def test_tile_dataset_resamples_to_the_model_gsd(tmp_path):
    manifest = _processed(tmp_path, n=2, gsd=0.1)
    ds = TileDataset(tmp_path, manifest, model_gsd=0.2)
    item = ds[0]
    assert item["image"].shape == (3, 32, 32) and item["target"].shape == (3, 32, 32)
    assert item["mask"].shape == (32, 32)
    # a tile without a gsd is left at its own resolution
    manifest["gsd"] = None
    assert TileDataset(tmp_path, manifest, model_gsd=0.2)[0]["image"].shape == (3, 64, 64)


def test_gap_kernel_bridges_a_metre_at_any_gsd():
    from parking_ml.data.dataset import gap_kernel_px

    assert gap_kernel_px(0.2) == 5 and gap_kernel_px(0.1) == 11 and gap_kernel_px(None) == 11
    assert gap_kernel_px(0.5) == 3  # never below 3 px


def test_emphasise_gaps_weights_only_the_background_between_near_spaces():
    from parking_ml.data.dataset import emphasise_gaps

    mask = np.zeros((40, 60), np.uint8)
    mask[5:25, 5:15] = 1  # two stalls side by side, 3 px apart (0.6 m at 0.2 m/px)
    mask[5:25, 18:28] = 2
    mask[5:25, 40:50] = 1  # across a 12-px aisle: not a neighbour
    mask[30:, :] = 255
    target = emphasise_gaps(soft_target(mask), kernel_px=5, weight=4.0)
    weight = target.sum(-1)
    gap = weight > 1.0
    # the 3-px strip between the two stalls, and nothing else
    assert gap[5:25, 15:18].all() and int(gap.sum()) == 20 * 3
    assert np.allclose(weight[gap], 4.0) and np.all(target[gap][:, 0] == 4.0)
    # labels are unchanged: the same majority class everywhere, ignored pixels still weigh nothing
    np.testing.assert_array_equal(hard_mask(target), mask)
    assert weight[30:].max() == 0.0
    np.testing.assert_array_equal(emphasise_gaps(soft_target(mask), 5, 1.0), soft_target(mask))


def test_tile_dataset_gap_weight(tmp_path):
    manifest = _processed(tmp_path, n=1, gsd=0.2)
    plain = TileDataset(tmp_path, manifest)[0]["target"]
    weighted = TileDataset(tmp_path, manifest, gap_weight=3.0)[0]["target"]
    # the scene's stalls (rows 10-29 and 40-59) are 10 px apart at 0.2 m/px, more than the 5-px kernel
    assert torch.equal(plain, weighted)
    near = _processed(tmp_path / "near", n=1, gsd=0.05)  # the same 10 px are 0.5 m here: neighbours
    weighted = TileDataset(tmp_path / "near", near, gap_weight=3.0)[0]["target"].sum(0)
    assert float(weighted.max()) == pytest.approx(3.0) and bool((weighted[30:40, 10:20] == 3.0).all())
    with pytest.raises(ValueError, match="gap_weight"):
        TileDataset(tmp_path, manifest, gap_weight=0.5)


def test_datasets_sharing_a_cache_decode_each_tile_once(tmp_path, monkeypatch):
    import parking_ml.data.dataset as dataset

    manifest = _processed(tmp_path, n=3, gsd=0.1)
    reads: list[str] = []
    real_read = dataset.read_tile
    monkeypatch.setattr(dataset, "read_tile", lambda root, tile_id: reads.append(tile_id) or real_read(root, tile_id))
    shared: dict = {}
    # two CV folds over overlapping tiles, then the final fit over all of them, as one training run has
    fold_a = TileDataset(tmp_path, manifest.iloc[:2], cache=shared, model_gsd=0.2)
    fold_b = TileDataset(tmp_path, manifest.iloc[1:], cache=shared, model_gsd=0.2)
    final = TileDataset(tmp_path, manifest, cache=shared, model_gsd=0.2)
    items = [ds[i] for ds in (fold_a, fold_b, final) for i in range(len(ds))]
    assert sorted(reads) == sorted(manifest["tile_id"]) and len(shared) == 3
    # what a shared entry gives is what a dataset of its own decodes
    np.testing.assert_array_equal(items[-1]["target"], TileDataset(tmp_path, manifest, model_gsd=0.2)[2]["target"])
    # another resolution or gap weight is another entry, never a stale one
    TileDataset(tmp_path, manifest.iloc[:1], cache=shared, model_gsd=0.4)[0]
    TileDataset(tmp_path, manifest.iloc[:1], cache=shared, model_gsd=0.2, gap_weight=2.0)[0]
    assert len(shared) == 5 and len(reads) == 6


def test_a_bounded_cache_holds_tiles_up_to_its_budget_and_decodes_the_rest_each_time(tmp_path, monkeypatch):
    import parking_ml.data.dataset as dataset
    from parking_ml.data.tile_cache import BoundedTileCache

    manifest = _processed(tmp_path, n=3, gsd=0.1)
    reads: list[str] = []
    real_read = dataset.read_tile
    monkeypatch.setattr(dataset, "read_tile", lambda root, tile_id: reads.append(tile_id) or real_read(root, tile_id))
    one = sum(a.nbytes for a in TileDataset(tmp_path, manifest.iloc[:1], model_gsd=0.2)._load(0))
    reads.clear()
    cache = BoundedTileCache(2 * one + one // 2)  # room for two tiles and a half
    ds = TileDataset(tmp_path, manifest, cache=cache, model_gsd=0.2)
    first = [ds[i]["target"] for i in range(3)]
    again = [ds[i]["target"] for i in range(3)]
    assert len(cache) == 2 and cache.nbytes == 2 * one and cache.refused == 2
    # the two held tiles were decoded once, the third each time it was drawn, and all give the same items
    assert sorted(reads) == sorted([*manifest["tile_id"], manifest["tile_id"].iloc[2]])
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b)
    np.testing.assert_array_equal(again[2], TileDataset(tmp_path, manifest, model_gsd=0.2)[2]["target"])
    # replacing a held entry counts its bytes once; deleting one frees them
    key = next(iter(cache))
    cache[key] = cache[key]
    assert cache.nbytes == 2 * one
    del cache[key]
    assert len(cache) == 1 and cache.nbytes == one
    nothing = BoundedTileCache(0)
    TileDataset(tmp_path, manifest, cache=nothing, model_gsd=0.2)[0]
    assert len(nothing) == 0
    with pytest.raises(ValueError, match="max_bytes"):
        BoundedTileCache(-1)
