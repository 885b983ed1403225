"""The ground-resolution estimate with the shipped demo network on generator images of known gsd, and ingest
recording it (with its source) in the raw manifest."""

from __future__ import annotations

import json

import numpy as np
import pytest

import parking_ml.inference.gsd as gsd_module
from parking_ml.data.ingest import ingest, read_raw_manifest
from parking_ml.inference import PreprocessConfig
from parking_ml.inference.gsd import COARSE, SPACE_SIZE_M, Probe, balance, choose, estimate_gsd, expected_size_m
from parking_ml.lake import Lake
from parking_ml.model.gsd_estimator import ShippedGsdEstimator
from parking_ml.synth import SiteRenderer
from tests.fakes.gsd import TRUE_GSD, FakeSegmenter, fake_measure
from tests.fakes.landing import png_bytes


@pytest.fixture(scope="module")
def estimator() -> ShippedGsdEstimator:
    return ShippedGsdEstimator()


# across the range, seed 31, 512 px (never the demo network's training lots); dusk, where the demo network
# itself finds few stalls, is measured in bench/gsd.py, not asserted here
CASES = [("default", 0.06), ("winter", 0.1), ("sensor", 0.16), ("default", 0.26)]


def _tile(k: int, style: str, gsd: float):
    return SiteRenderer(31, k, 512, gsd, f"site-{k:04d}").render(0, style)


def test_estimate_on_generator_images_of_known_gsd(estimator):
    errors = []
    for k, (style, gsd) in enumerate(CASES):
        tile = _tile(k, style, gsd)
        estimate = estimator(tile.image)
        assert estimate is not None, f"{style} at {gsd} m/px: no stalls found"
        errors.append(estimate / tile.gsd - 1)
    assert np.median(np.abs(errors)) <= 0.10, errors
    assert max(np.abs(errors)) <= 0.15, errors


def test_blank_image_gives_no_estimate(estimator):
    assert estimator(np.full((256, 256, 3), 90, np.uint8)) is None


def test_choose_takes_the_gsd_most_passes_agree_on():
    """Passes inside the network's proportional band imply the same gsd; a pass past it (stalls broken into
    pieces) implies a far larger one, squat blobs and passes with too few spaces imply none."""
    nan = float("nan")
    probes = [
        Probe(0.0857, 9, 2.95 * 0.0857 / 0.1, 2.1),  # 0.86x: proportional, implies 0.100
        Probe(0.1037, 9, 2.95 * 0.1037 / 0.102, 2.2),  # implies 0.102
        Probe(0.1255, 9, 2.95 * 0.1255 / 0.099, 2.2),  # 1.25x of 0.099: outside the band, counts for nothing
        Probe(0.1519, 12, 1.6, 2.0),  # pieces: implies 0.28
        Probe(0.1838, 14, 1.2, 1.3),  # squat blobs: no vote
        Probe(0.2224, 1, nan, nan),  # too few spaces: no vote
    ]
    found = choose(probes, 2.95, tol=0.08)
    assert found.gsd == pytest.approx(0.101, rel=1e-6) and found.spaces == 9  # the median of the two in-band votes
    assert (found.support, found.total_spaces) == (2, 18)
    assert choose([Probe(g, 0, nan, nan) for g in COARSE], 2.95, tol=0.08) is None


def test_balance_brings_each_channel_median_to_daylight_level():
    rng = np.random.default_rng(0)
    dark = np.clip(rng.normal((50, 42, 33), 8, (64, 64, 3)), 0, 255).astype(np.uint8)  # dim, warm cast
    out = balance(dark)
    assert out is not None and out.dtype == np.uint8 and out.shape == dark.shape
    assert np.median(out.reshape(-1, 3), axis=0) == pytest.approx([gsd_module.BALANCE_MEDIAN] * 3, abs=3)
    # a gain, not a stretch: brighter pixels stay brighter, in proportion
    assert int(out[..., 0].argmax()) == int(dark[..., 0].argmax())
    assert balance(np.full((32, 32, 3), 98, np.uint8)) is None  # already at the level: nothing to redo


def test_estimate_probes_the_balanced_image_when_the_first_ladder_finds_nothing(monkeypatch):
    calls: list[bool] = []
    monkeypatch.setattr(gsd_module, "measure", fake_measure(raw_stalls=False, calls=calls))
    found = estimate_gsd(FakeSegmenter(), np.full((64, 64, 3), 40, np.uint8))  # dark: the balance changes it
    assert found.gsd == pytest.approx(TRUE_GSD, rel=0.02) and found.spaces == 8
    assert found.balanced and any(calls) and any(p.balanced for p in found.probes)


def test_estimate_skips_the_balanced_ladder_when_enough_passes_agree(monkeypatch):
    calls: list[bool] = []
    monkeypatch.setattr(gsd_module, "measure", fake_measure(raw_stalls=True, calls=calls))
    found = estimate_gsd(FakeSegmenter(), np.full((64, 64, 3), 40, np.uint8))
    assert found.gsd == pytest.approx(TRUE_GSD, rel=0.02) and not found.balanced
    assert calls and not any(calls)  # the image as given was enough: no second ladder


def test_expected_size_follows_the_package_labels():
    demo = PreprocessConfig(gsd=0.2, grow_px=1.0)
    assert expected_size_m(demo) == pytest.approx(SPACE_SIZE_M)
    # no served growth: smaller spaces at the true gsd
    assert expected_size_m(PreprocessConfig(gsd=0.2)) < SPACE_SIZE_M


def test_ingest_estimates_gsd_for_images_without_one(tmp_path, estimator):
    lake = Lake(f"file://{tmp_path / 'lake'}", {})
    plain = _tile(0, "default", 0.1)
    labelled = _tile(1, "sensor", 0.2)
    lake.write_bytes("landing/b1/lot0/plain.png", png_bytes(plain.image))
    lake.write_bytes("landing/b1/lot0/plain.mask.png", png_bytes(plain.mask))
    # a GeoJSON with a top-level gsd (as the generator writes): the annotation's word is taken, no estimate
    doc = {"type": "FeatureCollection", "coordinate_space": "pixel", "gsd": labelled.gsd, "features": []}
    lake.write_bytes("landing/b1/lot1/labelled.png", png_bytes(labelled.image))
    lake.write_bytes("landing/b1/lot1/labelled.mask.png", png_bytes(labelled.mask))
    lake.write_bytes("landing/b1/lot1/labelled.geojson", json.dumps(doc).encode())
    calls = []

    def counting(rgb):
        calls.append(rgb.shape)
        return estimator(rgb)

    assert ingest(lake, gsd_estimator=counting)["accepted"] == 2
    m = read_raw_manifest(lake).set_index("stem")
    assert len(calls) == 1  # only the image without a gsd
    assert m.loc["lot0/plain", "gsd_source"] == "estimated"
    assert abs(m.loc["lot0/plain", "gsd"] / plain.gsd - 1) <= 0.10
    assert (m.loc["lot1/labelled", "gsd_source"], m.loc["lot1/labelled", "gsd"]) == ("annotation", labelled.gsd)


def test_ingest_without_estimator_leaves_gsd_unknown(tmp_path):
    lake = Lake(f"file://{tmp_path / 'lake'}", {})
    tile = _tile(2, "winter", 0.12)
    lake.write_bytes("landing/b1/lot0/t.png", png_bytes(tile.image))
    lake.write_bytes("landing/b1/lot0/t.mask.png", png_bytes(tile.mask))
    assert ingest(lake)["accepted"] == 1
    row = read_raw_manifest(lake).iloc[0]
    assert row["gsd"] is None or np.isnan(row["gsd"])
    assert row["gsd_source"] is None
