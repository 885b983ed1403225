"""The inference API over real HTTP: a real uvicorn server on a free loopback port, driven by httpx."""

from __future__ import annotations

import base64
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import pandas as pd
import pytest

from parking_ml.data.images import encode_png
from parking_ml.features import FEATURE_COLUMNS
from parking_ml.inference import OnnxSegmenter, PreprocessConfig, predict
from parking_ml.ops.stack import free_port, wait_http
from serving.app import create_app
from tests.fakes.landing import geotiff_bytes
from tests.fakes.packages import make_package, write_color_net
from tests.fakes.scenes import lot_image
from tests.fakes.servers import metric_value, running, wait_ready

pytestmark = pytest.mark.integration

VENV_BIN = Path(sys.executable).parent


def assert_error(resp: httpx.Response, status: int, code: str | None = None) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"])
    assert body["error"]["message"]
    if code:
        assert body["error"]["code"] == code, body


def jpeg_bytes(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return buf.tobytes()


@pytest.fixture()
def package(tmp_path: Path) -> Path:
    return make_package(tmp_path / "model")


@pytest.fixture()
def api(make_settings, package) -> Iterator[tuple[str, object]]:
    settings = make_settings(model_dir=package, max_upload_bytes=400_000, max_pixels=1_000_000)
    app = create_app(settings)
    with running(app) as url:
        wait_ready(url)
        yield url, app


def test_predict_png_jpeg_geotiff_and_mask(api, package):
    url, _ = api
    img = lot_image(300, 340)
    expected = predict(OnnxSegmenter.from_dir(package, threads=1), img)
    with httpx.Client(base_url=url, timeout=60) as client:
        r = client.post(
            "/v1/predict",
            files={"file": ("tile.jpg", encode_png(img), "application/octet-stream")},  # name lies: type by content
            params={"include_mask": "true"},
            headers={"X-Request-ID": "req-42"},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["request_id"] == "req-42" and r.headers["x-request-id"] == "req-42"
        assert body["model"] == {"name": "parking-spaces", "version": "local"}
        assert (body["width"], body["height"]) == (340, 300)
        assert (body["free_spaces"], body["occupied_spaces"]) == (expected.free_count, expected.occupied_count)
        assert body["free_spaces"] > 0 and body["occupied_spaces"] > 0
        assert body["occupancy_rate"] == pytest.approx(expected.occupancy_rate)
        assert len(body["spaces"]) == len(expected.spaces)
        space = body["spaces"][0]
        assert set(space) == {"id", "status", "confidence", "area_px", "polygon"}
        assert space["status"] in ("free", "occupied") and 0 < space["confidence"] <= 1
        assert body["geojson"] is None
        assert {"decode_ms", "inference_ms", "postprocess_ms", "total_ms"} <= set(body["timings_ms"])
        mask = cv2.imdecode(np.frombuffer(base64.b64decode(body["mask"]), np.uint8), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (300, 340) and set(np.unique(mask)) <= {0, 1, 2}
        np.testing.assert_array_equal(mask, expected.mask)

        r = client.post("/v1/predict/mask", files={"file": ("x", encode_png(img))})
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        png_mask = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(png_mask, expected.mask)

        r = client.post("/v1/predict", files={"file": ("tile.png", jpeg_bytes(img))})
        assert r.status_code == 200 and r.json()["free_spaces"] > 0
        assert len(r.headers["x-request-id"]) == 32  # generated when not given

        r = client.post("/v1/predict", files={"file": ("site.tif", geotiff_bytes(img))})
        assert r.status_code == 200, r.text
        geo = r.json()["geojson"]
        assert set(geo) == {"image_crs", "wgs84"}
        assert len(geo["wgs84"]["features"]) == r.json()["free_spaces"] + r.json()["occupied_spaces"]
        x, y = geo["image_crs"]["features"][0]["geometry"]["coordinates"][0][0]
        assert 500000 <= x <= 500034 and 4649746 <= y <= 4649776
        lon, lat = geo["wgs84"]["features"][0]["geometry"]["coordinates"][0][0]
        assert 14.9 < lon < 15.1 and 41.9 < lat < 42.1

        info = client.get("/v1/model").json()
        assert info["version"] == "local" and info["source"] == str(package)


def _png_with_size(width: int, height: int) -> bytes:
    data = bytearray(encode_png(np.zeros((8, 8, 3), np.uint8)))
    data[16:24] = struct.pack(">II", width, height)
    return bytes(data)


def _jpeg_with_size(width: int, height: int) -> bytes:
    data = bytearray(jpeg_bytes(np.zeros((8, 8, 3), np.uint8)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _tiff_with_size(width: int, height: int) -> bytes:
    """A minimal little-endian TIFF header and IFD declaring a huge 8-bit grey image (no pixel data)."""
    entries = [
        (256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1),
        (273, 4, 200), (277, 3, 1), (278, 4, height), (279, 4, 0xFFFFFFF0),
    ]  # fmt: skip
    ifd = struct.pack("<H", len(entries))
    for tag, typ, value in entries:
        ifd += struct.pack("<HHII", tag, typ, 1, value) if typ == 4 else struct.pack("<HHIHH", tag, typ, 1, value, 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + bytes(100)


def test_gsd_parameter_sets_the_scale_of_plain_images(make_settings, tmp_path):
    """A model that works at 0.2 m/px: a PNG said to be 0.4 m/px is upsampled, one without a gsd is taken at
    the package's default; either way the answer comes back on the image's own pixel grid."""
    pkg = tmp_path / "model-02"
    pkg.mkdir()
    write_color_net(pkg / "model.onnx")
    config = PreprocessConfig(min_area_px=20, gsd=0.2, resample=True, default_image_gsd=0.1)
    (pkg / "preprocess.json").write_text(config.to_json())
    img = lot_image(200, 240, seed=5)
    seg = OnnxSegmenter.from_dir(pkg, threads=1)
    # the package's default for a plain image, not the estimate (tests/integration/test_serving_gsd.py)
    with running(create_app(make_settings(model_dir=pkg, gsd_estimate=False))) as url:
        wait_ready(url)
        with httpx.Client(base_url=url, timeout=60) as client:
            masks = []
            for gsd in (None, 0.4):
                params = {"include_mask": "true", **({"gsd": gsd} if gsd else {})}
                r = client.post("/v1/predict", params=params, files={"file": ("t.png", encode_png(img))})
                assert r.status_code == 200, r.text
                body = r.json()
                expected = predict(seg, img, image_gsd=gsd)
                mask = cv2.imdecode(np.frombuffer(base64.b64decode(body["mask"]), np.uint8), cv2.IMREAD_UNCHANGED)
                assert mask.shape == (200, 240)
                np.testing.assert_array_equal(mask, expected.mask)
                assert body["free_spaces"] == expected.free_count
                masks.append(mask)
            # the parameter took effect: the image ran at two scales
            assert (masks[0] != masks[1]).sum() > 100
            r = client.post("/v1/predict/mask", params={"gsd": 0.4}, files={"file": ("t.png", encode_png(img))})
            assert r.status_code == 200 and r.headers["content-type"] == "image/png"
            assert_error(client.post("/v1/predict", params={"gsd": 0}, files={"file": ("t.png", encode_png(img))}), 422)


def test_hostile_inputs_get_json_4xx_and_server_survives(api):
    url, _ = api
    img = lot_image(96, 96)
    png, jpg, tif = encode_png(img), jpeg_bytes(img), geotiff_bytes(img)
    cases = [
        ("oversized upload", {"file": ("big.png", os.urandom(500_000))}, 413, "too_large"),
        ("png bomb", {"file": ("bomb.png", _png_with_size(100_000, 100_000))}, 413, "too_large"),
        ("jpeg bomb", {"file": ("bomb.jpg", _jpeg_with_size(60_000, 60_000))}, 413, "too_large"),
        ("tiff bomb", {"file": ("bomb.tif", _tiff_with_size(100_000, 100_000))}, 413, "too_large"),
        ("truncated png", {"file": ("t.png", png[: len(png) // 2])}, 422, "corrupt"),
        ("truncated jpeg", {"file": ("t.jpg", jpg[: len(jpg) // 2])}, 422, "corrupt"),
        ("truncated tiff", {"file": ("t.tif", tif[:300])}, 422, "corrupt"),
        ("png header only", {"file": ("h.png", png[:40])}, 422, "corrupt"),
        ("gif", {"file": ("a.png", b"GIF89a\x01\x00\x01\x00\x80\x00\x00" + bytes(30))}, 415, "unsupported_type"),
        ("text", {"file": ("a.png", b"hello, this is not an image\n" * 10)}, 415, "unsupported_type"),
        ("zero size", {"file": ("empty.png", b"")}, 422, "empty"),
        ("wrong field", {"image": ("a.png", png)}, 422, "invalid_request"),
    ]
    with httpx.Client(base_url=url, timeout=60) as client:
        for name, files, status, code in cases:
            r = client.post("/v1/predict", files=files)
            assert r.status_code == status, (name, r.text)
            assert_error(r, status, code)
            assert client.get("/healthz").status_code == 200, name
        assert_error(client.post("/v1/predict"), 422, "invalid_request")
        assert_error(client.post("/v1/predict", content=b"{}", headers={"content-type": "application/json"}), 422)
        assert_error(client.get("/no/such/route"), 404, "not_found")
        assert_error(client.post("/v1/predict", params={"include_mask": "maybe"}, files={"file": ("a", png)}), 422)

        # a chunked upload (no Content-Length) is cut off while it is read
        boundary = "b0undary"

        def chunks() -> Iterator[bytes]:
            yield (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n'
                "Content-Type: image/png\r\n\r\n"
            ).encode()
            for _ in range(50):
                yield b"\0" * 20_000
            yield f"\r\n--{boundary}--\r\n".encode()

        r = client.post(
            "/v1/predict", content=chunks(), headers={"content-type": f"multipart/form-data; boundary={boundary}"}
        )
        assert_error(r, 413, "too_large")
        assert client.post("/v1/predict", files={"file": ("ok.png", png)}).status_code == 200


def test_auth_on_and_off(make_settings, package):
    keys = ["k-0123456789abcdef", "k-fedcba9876543210"]
    png = encode_png(lot_image(64, 64))
    with running(create_app(make_settings(model_dir=package, api_keys=keys))) as url:
        wait_ready(url)
        with httpx.Client(base_url=url, timeout=60) as client:
            assert_error(client.post("/v1/predict", files={"file": ("a.png", png)}), 401, "unauthorized")
            assert_error(client.post("/v1/predict", files={"file": ("a.png", png)}, headers={"X-API-Key": "nope"}), 401)
            assert_error(client.get("/v1/model"), 401)
            for key in keys:
                r = client.post("/v1/predict", files={"file": ("a.png", png)}, headers={"X-API-Key": key})
                assert r.status_code == 200
            for open_route in ("/healthz", "/readyz", "/metrics"):
                assert client.get(open_route).status_code == 200
    with running(create_app(make_settings(model_dir=package))) as url:
        wait_ready(url)
        assert httpx.post(f"{url}/v1/predict", files={"file": ("a.png", png)}, timeout=60).status_code == 200


def _until(condition, timeout: float = 20.0, message: str = "condition never met") -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


def _features_computed(text: str) -> float:
    if 'stage="features"' not in text:
        return 0.0
    return metric_value(text, "parking_inference_duration_seconds_count", stage="features")


def test_metrics_after_traffic(api):
    url, _ = api
    png = encode_png(lot_image(128, 128))
    with httpx.Client(base_url=url, timeout=60) as client:
        for _ in range(3):
            assert client.post("/v1/predict", files={"file": ("a.png", png)}).status_code == 200
        client.post("/v1/predict", files={"file": ("a.png", b"GIF89a" + bytes(20))})
        # each answer's drift row is computed after it has gone, by the buffer's thread: all three, in time
        _until(lambda: _features_computed(client.get("/metrics").text) >= 3)
        text = client.get("/metrics").text
    assert metric_value(text, "parking_inference_duration_seconds_count", stage="features") == 3
    assert metric_value(text, "parking_http_request_duration_seconds_count", route="/v1/predict", status="200") == 3
    assert metric_value(text, "parking_http_request_duration_seconds_count", route="/v1/predict", status="415") == 1
    assert metric_value(text, "parking_inference_duration_seconds_count", stage="inference") == 3
    assert metric_value(text, "parking_free_spaces_per_request_count") == 3
    assert metric_value(text, "parking_free_spaces_per_request_sum") > 0
    assert metric_value(text, "parking_errors_total", code="unsupported_type") == 1
    assert metric_value(text, "parking_model_info", version="local") == 1
    assert metric_value(text, "parking_model_reloads_total", result="success") == 1
    assert metric_value(text, "parking_drift_write_failures_total") == 0


def test_drift_row_is_computed_by_the_buffers_thread_not_the_request(make_settings, package, monkeypatch):
    import serving.service

    threads: list[str] = []
    real = serving.service.tile_features

    def recording(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(serving.service, "tile_features", recording)
    app = create_app(make_settings(model_dir=package))
    png = encode_png(lot_image(96, 96))
    with running(app) as url:
        wait_ready(url)
        with httpx.Client(base_url=url, timeout=60) as client:
            for _ in range(2):
                assert client.post("/v1/predict", files={"file": ("a.png", png)}).status_code == 200
        _until(lambda: len(threads) == 2 and len(app.state.services.drift) == 2)
    # never the inference thread that answered: the buffer's own, once the answer had gone
    assert threads == ["drift-flusher", "drift-flusher"]


def test_drift_rows_flushed_on_shutdown(make_settings, package):
    settings = make_settings(model_dir=package, drift_flush_rows=1000, drift_flush_interval_s=3600)
    lake_root = Path(settings.lake_url.removeprefix("file://"))
    png = encode_png(lot_image(128, 128))
    with running(create_app(settings)) as url:
        wait_ready(url)
        for i in range(4):
            r = httpx.post(f"{url}/v1/predict", files={"file": ("a.png", png)}, headers={"X-Request-ID": f"r{i}"})
            assert r.status_code == 200
        assert not list(lake_root.glob("monitoring/inference/**/*.parquet"))  # not due yet: off the request path
    files = list(lake_root.glob("monitoring/inference/date=*/*.parquet"))
    assert len(files) == 1
    frame = pd.read_parquet(files[0])
    assert list(frame.columns[: len(FEATURE_COLUMNS)]) == FEATURE_COLUMNS
    assert sorted(frame["request_id"]) == ["r0", "r1", "r2", "r3"]
    assert (frame["free_spaces"] > 0).all() and (frame["model_version"] == "local").all()
    assert files[0].parent.name == f"date={frame['timestamp'].iloc[0][:10]}"
    # the folder reads back as one hive-partitioned dataset
    assert len(pd.read_parquet(lake_root / "monitoring" / "inference")) == 4


def test_storage_failure_never_fails_requests(make_settings, package):
    settings = make_settings(model_dir=package, drift_flush_rows=2, drift_flush_interval_s=0.2)
    lake_root = Path(settings.lake_url.removeprefix("file://"))
    lake_root.mkdir(parents=True)
    blocker = lake_root / "monitoring"
    blocker.write_text("a file where the folder should be: every write fails")
    png = encode_png(lot_image(96, 96))
    app = create_app(settings)
    with running(app) as url:
        wait_ready(url)
        with httpx.Client(base_url=url, timeout=60) as client:
            for _ in range(6):
                assert client.post("/v1/predict", files={"file": ("a.png", png)}).status_code == 200
            _until(lambda: metric_value(client.get("/metrics").text, "parking_drift_write_failures_total") >= 1)
            # kept for the next try (each row is queued once its answer has gone: the last may still be on its way)
            _until(lambda: len(app.state.services.drift) >= 6)
            assert len(app.state.services.drift) == 6
            blocker.unlink()
            _until(lambda: metric_value(client.get("/metrics").text, "parking_drift_rows_written_total") >= 6)
    rows = sum(len(pd.read_parquet(f)) for f in lake_root.glob("monitoring/inference/date=*/*.parquet"))
    assert rows == 6


def test_mlflow_down_at_start_not_ready_but_alive(make_settings, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    dead = f"http://127.0.0.1:{free_port()}"
    app = create_app(make_settings(mlflow_tracking_uri=dead, reload_interval_s=1))
    with running(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/healthz").status_code == 200
        _until(
            lambda: metric_value(client.get("/metrics").text, "parking_registry_errors_total") >= 1,
            60,
            "the registry failure was never counted",
        )
        assert_error(client.get("/readyz"), 503, "not_ready")
        r = client.post("/v1/predict", files={"file": ("a.png", encode_png(lot_image(64, 64)))})
        assert_error(r, 503, "not_ready")
        assert "retry-after" in r.headers
        assert client.get("/healthz").status_code == 200


def test_schemathesis_finds_no_server_errors(api):
    url, _ = api
    proc = subprocess.run(
        [
            str(VENV_BIN / "schemathesis"),
            "run",
            f"{url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "30",
            "--seed",
            "7",
            "--request-timeout",
            "60",
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert httpx.get(f"{url}/healthz").status_code == 200


def test_serve_command_runs_and_flushes_on_sigterm(tmp_path, package):
    port = free_port()
    home = tmp_path / "home"
    env = {
        **os.environ,
        "PARKING_HOME": str(home),
        "PARKING_DRIFT_FLUSH_ROWS": "1000",
        "PARKING_DRIFT_FLUSH_INTERVAL_S": "3600",
        "PARKING_LOG_FORMAT": "json",  # what a container sets: one JSON line per request on stderr
    }
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(VENV_BIN / "parking-ml"), "serve", "--port", str(port), "--model-dir", str(package)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/readyz", 60, proc, log)
        r = httpx.post(f"{url}/v1/predict", files={"file": ("a.png", encode_png(lot_image(96, 96)))}, timeout=60)
        assert r.status_code == 200
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal: exit status -SIGTERM
        assert proc.wait(60) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    files = list((home / "lake" / "monitoring" / "inference").glob("date=*/*.parquet"))
    assert len(files) == 1 and len(pd.read_parquet(files[0])) == 1
    lines = [line for line in log.read_text().splitlines() if '"request_id"' in line]
    assert lines, "structured access log with request ids"
    # the server process keeps its start-up objects out of the collector's passes
    starting = [json.loads(line) for line in log.read_text().splitlines() if '"api starting"' in line]
    assert starting and starting[0]["gc_frozen_objects"] > 10_000
