"""raw -> processed: tiling, resampling, site-grouped folds, frozen holdout, versioning, materialize."""

from __future__ import annotations

import itertools
import json

import cv2
import numpy as np
import pytest

from parking_ml.data.annotations import MIN_INSIDE, Stall
from parking_ml.data.ingest import ingest, read_raw_manifest
from parking_ml.data.preprocess import (
    TILE_COLUMNS,
    TilingConfig,
    _tile_stalls,
    cut_tile,
    preprocess,
    space_labels,
    tile_starts,
)
from parking_ml.data.processed import latest_version, load_manifest, materialize
from parking_ml.data.splits import HOLDOUT_FOLD, assign_folds, holdout_sites, site_unit, split_sites
from parking_ml.lake import Lake
from tests.fakes.landing import geojson_bytes, png_bytes, write_landing
from tests.fakes.scenes import scene


@pytest.fixture
def lake(tmp_path) -> Lake:
    return Lake(f"file://{tmp_path / 'lake'}", {})


def test_tile_starts_cover_and_align_to_edge():
    assert tile_starts(100, 128, 16) == [0]
    assert tile_starts(128, 128, 16) == [0]
    assert tile_starts(300, 128, 28) == [0, 100, 172]
    for length in (129, 257, 1000):
        starts = tile_starts(length, 128, 32)
        assert starts[0] == 0 and starts[-1] == length - 128
        assert all(b - a <= 96 for a, b in itertools.pairwise(starts))


def test_holdout_is_a_fixed_function_of_the_site():
    sites = [f"lot-{i:03d}" for i in range(200)]
    held = set(holdout_sites(sites, 0.2))
    assert 20 < len(held) < 60  # about 20 %
    assert held == {s for s in sites if site_unit(s) < 0.2}
    more = set(holdout_sites([*sites, "new-a", "new-b", "new-c"], 0.2))
    assert held <= more  # new sites never change old assignments
    assert more - held <= {"new-a", "new-b", "new-c"}


def test_tiny_dataset_guards():
    # every site hashes into holdout at fraction 0.89 for some pairs: at least one stays train
    assert len(holdout_sites(["a"], 0.89)) == 0
    two = holdout_sites(["a", "b"], 0.89)
    assert len(two) <= 1
    three = [s for s in (f"s{i}" for i in range(1000)) if site_unit(s) > 0.5][:3]
    assert len(holdout_sites(three, 0.1)) == 1  # none by hash, >= 3 sites: one is forced


def test_folds_disjoint_balanced_deterministic():
    counts = {f"s{i}": n for i, n in enumerate([9, 7, 5, 4, 4, 2, 1, 1])}
    folds = assign_folds(counts, 3)
    assert folds == assign_folds(dict(reversed(list(counts.items()))), 3)
    loads = [sum(n for s, n in counts.items() if folds[s] == f) for f in range(3)]
    assert max(loads) - min(loads) <= 2
    assert assign_folds({"a": 3, "b": 1}, 5) == {"a": 0, "b": 1}  # K shrinks to the number of sites
    split = split_sites(counts, 3, 0.3)
    assert set(split.values()) <= {HOLDOUT_FOLD, 0, 1, 2}


def test_preprocess_contract_and_idempotence(lake):
    write_landing(lake, "b1", sites=4, per_site=2, size=160)
    ingest(lake)
    config = TilingConfig(tile_size=96, tile_overlap=16, folds=2, holdout_fraction=0.3)
    summary = preprocess(lake, config)
    version = summary["version"]
    assert summary["created"] and latest_version(lake) == version
    root = lake.local_path(f"processed/{version}")
    m = load_manifest(root)
    assert list(m.columns) == TILE_COLUMNS
    assert len(m) == 8 * 4  # 160 px -> starts [0, 64] on each axis
    assert m["tile_id"].is_unique
    for row in m.itertuples():
        img = cv2.imread(str(root / "tiles" / f"{row.tile_id}.png"), cv2.IMREAD_UNCHANGED)
        mask = cv2.imread(str(root / "masks" / f"{row.tile_id}.png"), cv2.IMREAD_UNCHANGED)
        assert img.shape == (96, 96, 3) and mask.shape == (96, 96) and mask.dtype == np.uint8
        assert set(np.unique(mask).tolist()) <= {0, 1, 2, 255}
        n_free = cv2.connectedComponents((mask == 1).astype(np.uint8), connectivity=8)[0] - 1
        assert row.free_spaces == n_free
    # folds are disjoint by site; holdout is split "holdout" with fold -1
    per_site = m.groupby("site")["fold"].nunique()
    assert (per_site == 1).all()
    assert ((m["fold"] == -1) == (m["split"] == "holdout")).all()
    info = json.loads((root / "dataset.json").read_text())
    assert info["version"] == version and info["n_tiles"] == len(m) and info["n_sites"] == 4
    assert sorted(info["holdout_sites"]) == sorted(m.loc[m["fold"] == -1, "site"].unique())
    assert 1 <= len(info["holdout_sites"]) <= 2
    assert sum(len(v) for v in info["sites_per_fold"].values()) + len(info["holdout_sites"]) == 4
    assert sum(info["class_pixel_counts"].values()) == len(m) * 96 * 96
    # stalls exist where the image had polygons, in tile coordinates
    raw = read_raw_manifest(lake)
    with_stalls = set(raw.loc[raw["stalls"].notna(), "sha256"])
    assert set(m.loc[m["has_stalls"], "image_sha256"]) == with_stalls
    sample = m[m["has_stalls"] & (m["x0"] > 0)].iloc[0]
    doc = json.loads((root / "stalls" / f"{sample.tile_id}.geojson").read_text())
    assert doc["coordinate_space"] == "pixel"
    assert min(p[0] for f in doc["features"] for p in f["geometry"]["coordinates"][0]) < 0  # shifted by x0

    mtime = (root / "dataset.json").stat().st_mtime_ns
    again = preprocess(lake, config)
    assert again == {**summary, "created": False}
    assert (root / "dataset.json").stat().st_mtime_ns == mtime
    other = preprocess(lake, TilingConfig(tile_size=128, tile_overlap=0, folds=2, holdout_fraction=0.3))
    assert other["version"] != version and latest_version(lake) == other["version"]


def test_holdout_frozen_and_folds_disjoint_as_sites_arrive(lake):
    write_landing(lake, "b1", sites=6, per_site=1, size=64)
    ingest(lake)
    config = TilingConfig(tile_size=64, tile_overlap=0, folds=2, holdout_fraction=0.34)
    first = load_manifest(lake.local_path(f"processed/{preprocess(lake, config)['version']}"))
    write_landing(lake, "b2", sites=6, per_site=1, size=64, seed=1, first_site=6)
    ingest(lake)
    second = load_manifest(lake.local_path(f"processed/{preprocess(lake, config)['version']}"))
    held_1 = set(first.loc[first["split"] == "holdout", "site"])
    held_2 = set(second.loc[second["split"] == "holdout", "site"])
    assert held_1 and held_1 <= held_2  # an old holdout site never moves into training
    assert set(second.loc[second["site"].isin(set(first["site"]) - held_1), "split"]) == {"train"}
    train = second[second["split"] == "train"]
    assert (train.groupby("site")["fold"].nunique() == 1).all()  # each site in exactly one fold
    assert set(train["fold"]) == {0, 1}


def test_small_image_is_padded_with_ignore_and_resampling(lake):
    rgb, mask, stalls = scene(80, seed=3, width=120)
    lake.write_bytes("landing/b/s/a.png", png_bytes(rgb))
    doc = json.loads(geojson_bytes(stalls))
    doc["gsd"] = 0.2
    lake.write_bytes("landing/b/s/a.geojson", json.dumps(doc).encode())
    ingest(lake)
    out = preprocess(lake, TilingConfig(tile_size=128, tile_overlap=0, folds=2))
    root = lake.local_path(f"processed/{out['version']}")
    m = load_manifest(root)
    assert len(m) == 1 and m.iloc[0]["split"] == "train"  # a single site always trains
    tile_mask = cv2.imread(str(root / "masks" / f"{m.iloc[0]['tile_id']}.png"), cv2.IMREAD_UNCHANGED)
    assert (tile_mask[80:, :] == 255).all() and (tile_mask[:, 120:] == 255).all()
    np.testing.assert_array_equal(tile_mask[:80, :120], mask)
    # 0.2 m/px -> 0.1 m/px doubles the size: 240 x 160 -> 2 x 2 tiles of 128
    up = preprocess(lake, TilingConfig(tile_size=128, tile_overlap=0, folds=2, target_gsd=0.1))
    m2 = load_manifest(lake.local_path(f"processed/{up['version']}"))
    assert len(m2) == 4 and (m2["gsd"] == 0.1).all()
    assert sorted(set(m2["x0"])) == [0, 112] and sorted(set(m2["y0"])) == [0, 32]
    assert m2["free_spaces"].sum() >= mask.max()  # stalls survive nearest resampling


def test_a_space_cut_to_a_sliver_by_the_tile_edge_is_ignored_in_that_tile():
    _, mask, stalls = scene(80, seed=1, width=120)  # 15 x 20 px stalls at x = 4, 23, 42, 61, 80, 99
    # an occupied block inside the first tile and a free one touching it that only 2 of its 12 columns put
    # there: separate spaces, so the free one is cut (as one space, 24 of 34 columns inside, it would stay)
    mask[60:70, 40:62] = 2
    mask[60:70, 62:74] = 1
    spaces = space_labels(mask)
    for x0 in (0, 56):
        tile = cut_tile(mask, spaces, x0, 16, 64)
        assert tile.shape == (64, 64)
        for st in stalls:
            sx0, sy0, sx1, sy1 = st["rect"]
            cols = max(0, min(sx1, x0 + 63) - max(sx0, x0) + 1)
            if cols == 0:
                continue
            share = cols / (sx1 - sx0 + 1)
            seen = tile[sy0 - 16 : sy1 - 16 + 1, max(sx0, x0) - x0 : min(sx1, x0 + 63) - x0 + 1]
            value = 1 if st["status"] == "free" else 2
            expected = 255 if share < MIN_INSIDE else value
            assert (seen == expected).all(), (x0, st, share)
    # the stalls at x = 61..75 (3 of 15 columns in the first tile) and 42..56 (1 column in the second) are cut
    first, second = cut_tile(mask, spaces, 0, 16, 64), cut_tile(mask, spaces, 56, 16, 64)
    assert (first[4:24, 61:64] == 255).all() and (second[4:24, 0] == 255).all()
    assert (first[44:54, 40:62] == 2).all() and (first[44:54, 62:64] == 255).all()
    # and in the second tile the other way round: 6 of the occupied block's 22 columns (27 %) are cut
    assert (second[44:54, 0:6] == 255).all() and (second[44:54, 6:18] == 1).all()
    padded = cut_tile(mask, spaces, 100, 40, 64)  # past the image's bottom-right corner
    assert (padded[40:, :] == 255).all() and (padded[:, 20:] == 255).all()
    # the same rule for the stall polygons, by area
    polys = [
        Stall(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float), "free")
        for x0, y0, x1, y1 in [st["rect"] for st in stalls]
    ]
    kept = {float(s.polygon[0, 0] + 56): s.ignore for s in _tile_stalls(polys, 56, 16, 64)}
    assert kept[42.0] is True and kept[61.0] is False and kept[99.0] is False
    assert _tile_stalls([Stall(np.array([[60.0, 20.0], [70.0, 20.0]]), "free")], 56, 16, 64)[0].ignore is False


def test_materialize_local_is_in_place(lake, tmp_path):
    write_landing(lake, "b1", sites=1, per_site=1, size=96)
    ingest(lake)
    version = preprocess(lake, TilingConfig(tile_size=64, tile_overlap=0))["version"]
    assert materialize(lake, version, tmp_path / "cache") == lake.local_path(f"processed/{version}")
    with pytest.raises(FileNotFoundError, match="preprocess"):
        materialize(lake, "deadbeef0000", tmp_path / "cache")


def test_preprocess_without_raw_names_the_fix(lake):
    with pytest.raises(FileNotFoundError, match="parking-ml ingest"):
        preprocess(lake, TilingConfig())
    with pytest.raises(FileNotFoundError, match="parking-ml preprocess"):
        latest_version(lake)
