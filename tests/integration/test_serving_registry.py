"""Hot reload from a real MLflow registry: the champion alias moves while requests stream."""

from __future__ import annotations

import threading
import time
import uuid

import httpx
import pytest

from parking_ml.data.images import encode_png
from parking_ml.inference import PreprocessConfig
from serving.app import create_app
from tests.fakes.packages import make_package
from tests.fakes.scenes import lot_image
from tests.fakes.servers import metric_value, running, wait_ready

pytestmark = pytest.mark.integration


def test_champion_moves_while_requests_stream(make_settings, mlflow_server, tmp_path, monkeypatch):
    from parking_ml.model.network import build_model
    from parking_ml.model.package import build_package
    from parking_ml.model.registry import log_and_register

    settings = make_settings(
        mlflow_tracking_uri=mlflow_server, model_name=f"spaces-{uuid.uuid4().hex[:8]}", reload_interval_s=0.5
    )
    # v1: a small untrained smp network, exported and packaged the way training does it
    net = build_model("unet", "resnet18", encoder_weights=None, decoder_channels=(16, 8, 8, 8, 8))
    pkg1 = build_package(net, PreprocessConfig(), tmp_path / "pkg1")
    v1 = log_and_register(pkg1.dir, settings, tags={"holdout_free_f1": 0.5, "dataset_version": "d1"}, alias="champion")

    png = encode_png(lot_image(128, 128))
    results: list[tuple[int, str | None]] = []
    stop = threading.Event()

    with running(create_app(settings)) as url:
        wait_ready(url, timeout_s=120)
        assert httpx.get(f"{url}/v1/model").json()["version"] == v1.version

        def stream() -> None:
            with httpx.Client(base_url=url, timeout=60) as client:
                while not stop.is_set():
                    r = client.post("/v1/predict", files={"file": ("a.png", png)})
                    version = r.json()["model"]["version"] if r.status_code == 200 else None
                    results.append((r.status_code, version))

        streamer = threading.Thread(target=stream, daemon=True)
        streamer.start()
        time.sleep(1.0)
        pkg2 = make_package(tmp_path / "pkg2", seed=1)
        v2 = log_and_register(pkg2, settings, tags={"holdout_free_f1": 0.7, "dataset_version": "d2"}, alias="champion")
        deadline = time.monotonic() + 120
        while not any(v == v2.version for _, v in results):
            assert time.monotonic() < deadline, "the API never switched to the new champion"
            assert streamer.is_alive()
            time.sleep(0.2)
        n_switch = len(results)
        while len(results) < n_switch + 5:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        stop.set()
        streamer.join(60)

        info = httpx.get(f"{url}/v1/model").json()
        metrics_text = httpx.get(f"{url}/metrics").text

    assert results and all(status == 200 for status, _ in results), [r for r in results if r[0] != 200]
    versions = [v for _, v in results]
    assert versions[0] == v1.version and versions[-1] == v2.version
    switch = versions.index(v2.version)
    assert set(versions[:switch]) == {v1.version} and set(versions[switch:]) == {v2.version}
    assert info["version"] == v2.version and info["alias"] == "champion" and info["run_id"] == v2.run_id
    assert info["metrics"]["holdout_free_f1"] == pytest.approx(0.7)
    assert info["tags"]["dataset_version"] == "d2"
    assert metric_value(metrics_text, "parking_model_reloads_total", result="success") == 2
    assert metric_value(metrics_text, "parking_model_info", version=v2.version) == 1

    # `parking-ml predict` fetches the same champion from the registry
    from typer.testing import CliRunner

    from parking_ml.cli import app

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("PARKING_HOME", str(tmp_path / "cli-var"))
    image = tmp_path / "tile.png"
    image.write_bytes(png)
    result = CliRunner().invoke(app, ["predict", str(image), "--model-uri", f"models:/{settings.model_name}@champion"])
    assert result.exit_code == 0, result.output
    assert "free spaces" in result.output
