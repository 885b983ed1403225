"""gsd, gsd_source and quality in the API's answers, over real HTTP against a running server and a real package."""

from __future__ import annotations

import base64
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from parking_ml.data.images import encode_png
from parking_ml.inference import OnnxSegmenter, PreprocessConfig, predict
from serving.app import create_app
from tests.fakes.landing import geotiff_bytes
from tests.fakes.packages import write_color_net
from tests.fakes.scenes import lot
from tests.fakes.servers import running, wait_ready

pytestmark = pytest.mark.integration

TRUE_GSD = 0.1  # the scene's stalls: 18 x 37 px = 1.8 x 3.7 m at 0.1 m/px; geotiff_bytes georeferences at 0.1


@pytest.fixture()
def package(tmp_path: Path) -> Path:
    """The colour net at a model gsd of 0.2 m/px with a default (0.15) unlike the scene's true 0.1."""
    pkg = tmp_path / "model"
    pkg.mkdir()
    write_color_net(pkg / "model.onnx")
    config = PreprocessConfig(min_area_px=20, gsd=0.2, resample=True, default_image_gsd=0.15)
    (pkg / "preprocess.json").write_text(config.to_json())
    return pkg


def _scene() -> np.ndarray:
    rgb, _, _ = lot(300, 400, seed=3, stall=(18, 37), rows=(20, 120, 220), gap=6)
    return rgb


def _mask(body: dict) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(base64.b64decode(body["mask"]), np.uint8), cv2.IMREAD_UNCHANGED)


def _post(client: httpx.Client, name: str, data: bytes, **params) -> dict:
    r = client.post("/v1/predict", params={"include_mask": "true", **params}, files={"file": (name, data)})
    assert r.status_code == 200, r.text
    return r.json()


def test_answers_say_their_gsd_its_source_and_quality(make_settings, package):
    img = _scene()
    seg = OnnxSegmenter.from_dir(package, threads=1)
    with running(create_app(make_settings(model_dir=package))) as url:
        wait_ready(url)
        with httpx.Client(base_url=url, timeout=120) as client:
            plain = _post(client, "lot.png", encode_png(img))
            asked = _post(client, "lot.png", encode_png(img), gsd=0.12)
            geo = _post(client, "lot.tif", geotiff_bytes(img), gsd=0.3)  # the georeference wins over ?gsd=
            r = client.post("/v1/predict/mask", files={"file": ("lot.png", encode_png(img))})
            assert r.status_code == 200 and r.headers["x-gsd-source"] == "estimated"
            assert float(r.headers["x-gsd"]) == plain["gsd"]

    assert plain["gsd_source"] == "estimated"
    assert abs(plain["gsd"] / TRUE_GSD - 1) <= 0.10, plain["gsd"]
    assert plain["quality"]["estimated_gsd"] == plain["gsd"] and plain["quality"]["estimate_spaces"] >= 2
    assert "gsd_estimate_ms" in plain["timings_ms"]
    assert (asked["gsd"], asked["gsd_source"], asked["quality"]["estimated_gsd"]) == (0.12, "request", None)
    assert (geo["gsd"], geo["gsd_source"]) == (pytest.approx(TRUE_GSD), "georeference")
    for body in (plain, asked, geo):
        q = body["quality"]
        assert (q["gsd"], q["gsd_source"]) == (body["gsd"], body["gsd_source"])
        # each answer ran at the gsd it reports, and its quality block describes that answer's class map
        expected = predict(seg, img, image_gsd=body["gsd"])
        mask = _mask(body)
        np.testing.assert_array_equal(mask, expected.mask)
        assert q["no_structure_share"] == pytest.approx(float((mask == 0).mean()), abs=1e-4)
        assert q["mean_confidence"] == pytest.approx(expected.mean_confidence, abs=1e-4)
        confidences = [s["confidence"] for s in body["spaces"]]
        assert q["mean_space_confidence"] == pytest.approx(np.mean(confidences), abs=1e-4)
        assert 0 < q["no_structure_share"] < 1 and 0 < q["mean_confidence"] <= 1


def test_estimate_can_be_turned_off_and_nothing_stall_like_falls_back(make_settings, package):
    img = _scene()
    blank = np.full((200, 200, 3), 90, np.uint8)
    with running(create_app(make_settings(model_dir=package, gsd_estimate=False))) as url:
        wait_ready(url)
        with httpx.Client(base_url=url, timeout=120) as client:
            off = _post(client, "lot.png", encode_png(img))
    with running(create_app(make_settings(model_dir=package))) as url:
        wait_ready(url)
        with httpx.Client(base_url=url, timeout=120) as client:
            empty = _post(client, "blank.png", encode_png(blank))
    assert (off["gsd"], off["gsd_source"], off["quality"]["estimated_gsd"]) == (0.15, "default", None)
    # the estimate ran, found no stalls, and said so: the package's default was used
    assert (empty["gsd"], empty["gsd_source"]) == (0.15, "default")
    assert empty["quality"]["estimated_gsd"] is None and empty["quality"]["estimate_spaces"] == 0
    assert empty["quality"]["no_structure_share"] == 1.0 and empty["quality"]["mean_space_confidence"] is None
