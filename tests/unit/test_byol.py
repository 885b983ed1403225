"""Bring your own labels: a user's batch beside the demo's synthetic one trains and is gated on its own sites."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from parking_ml.config import Settings
from parking_ml.data.ingest import ingest
from parking_ml.data.preprocess import TilingConfig, preprocess
from parking_ml.data.processed import holdout_rows, load_manifest, training_rows
from parking_ml.lake import Lake
from parking_ml.synth import generate_dataset
from tests.fakes.landing import geojson_bytes
from tests.fakes.scenes import scene

USER_SITES = [f"lot-{c}" for c in "abcdefgh"]


def _jpeg(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    return buf.tobytes()


def _user_batch(lake: Lake, batch: str = "mylots") -> None:
    """What a user drops: JPEG tiles with GeoJSON stall polygons (status free/occupied), a folder per lot."""
    n = 0
    for site in USER_SITES:
        for t in range(3):
            rgb, _mask, stalls = scene(128, seed=500 + n)
            base = f"landing/{batch}/{site}/tile{t}"
            lake.write_bytes(f"{base}.jpg", _jpeg(rgb))
            lake.write_bytes(f"{base}.geojson", geojson_bytes(stalls))
            n += 1


@pytest.fixture
def lake(tmp_path) -> Lake:
    lake = Lake(f"file://{tmp_path / 'lake'}", {})
    # the demo's synthetic batch is already in the lake (as after `make demo`)
    generate_dataset(lake.local_path("landing/demo-synth"), n=12, seed=1, size=128, sites=12, progress=False)
    _user_batch(lake)
    ingest(lake)
    return lake


def test_the_user_batch_holdout_is_made_of_its_own_sites(lake):
    settings = Settings(data_batches="mylots")
    config = TilingConfig.from_settings(settings)
    assert config.batches == "mylots"
    summary = preprocess(lake, TilingConfig(tile_size=128, tile_overlap=0, batches=config.batches))
    root = lake.local_path(f"processed/{summary['version']}")
    m = load_manifest(root)
    info = json.loads((root / "dataset.json").read_text())
    assert set(m["site"]) == set(USER_SITES)  # nothing synthetic in training or holdout
    held = set(holdout_rows(m)["site"])
    assert held and held <= set(USER_SITES)
    assert set(info["holdout_sites"]) == held
    assert not held & set(training_rows(m)["site"])  # a holdout lot never trains


def test_without_the_filter_the_holdout_mixes_batches_and_versions_differ(lake):
    all_batches = preprocess(lake, TilingConfig(tile_size=128, tile_overlap=0))
    mine = preprocess(lake, TilingConfig(tile_size=128, tile_overlap=0, batches="my*"))
    assert all_batches["version"] != mine["version"]
    m = load_manifest(lake.local_path(f"processed/{all_batches['version']}"))
    assert set(m["site"]) > set(USER_SITES)
    # an unfiltered dataset keeps the version name it had before the filter existed (batches not hashed)
    again = preprocess(lake, TilingConfig(tile_size=128, tile_overlap=0, batches=""))
    assert again["version"] == all_batches["version"] and not again["created"]


def test_a_filter_that_matches_nothing_names_the_batches(lake):
    with pytest.raises(ValueError, match=r"PARKING_DATA_BATCHES='theirs' matches no ingested batch.*mylots"):
        preprocess(lake, TilingConfig(tile_size=128, tile_overlap=0, batches="theirs"))
