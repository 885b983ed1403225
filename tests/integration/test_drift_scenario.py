"""The drift scenario end to end: tiles of the generator's styles through the running API, then the drift
report (directly and through the `parking_drift` DAG via dag.test()) on the rows the API wrote.

Shifted styles (winter, dusk, sensor) must be flagged and the default style must not. On drift the DAG emits
`parking_drift_detected` (queueing `parking_train` when PARKING_RETRAIN_ON_DRIFT=true) and POSTs the summary
to a real local webhook server."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import httpx
import pytest

from monitoring.run import run_drift
from parking_ml.config import Settings
from parking_ml.data.images import encode_png
from parking_ml.features import features_frame, tile_features
from parking_ml.inference import OnnxSegmenter, predict
from parking_ml.lake import Lake
from parking_ml.model.package import REFERENCE_FILE
from parking_ml.ops.stack import free_port
from serving.app import create_app
from tests.fakes.drift import style_tiles
from tests.fakes.packages import make_package
from tests.fakes.servers import running, wait_ready

pytestmark = pytest.mark.integration

STYLES = ("default", "winter", "dusk", "sensor")
PER_STYLE = 100  # PARKING_DRIFT_MIN_ROWS' default: the smallest window that gets a verdict


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> dict:
    """A model package with its reference (default style, predicted by the package itself, as the final fit
    does), a real API serving it, and PER_STYLE tiles of each style sent through it: their time windows."""
    tmp = tmp_path_factory.mktemp("drift-scenario")
    pkg = make_package(tmp / "model")
    segmenter = OnnxSegmenter.from_dir(pkg, threads=1)
    tiles = style_tiles("default", 200, seed=1)
    features_frame(tile_features(t, predict(segmenter, t)) for t in tiles).to_parquet(pkg / REFERENCE_FILE)
    settings = Settings(home=tmp / "var", model_dir=pkg, drift_flush_interval_s=0.5, max_queue=16)
    windows = {}
    with running(create_app(settings)) as url:
        wait_ready(url)
        with httpx.Client(base_url=url, timeout=120) as client, ThreadPoolExecutor(2) as pool:

            def send(tile) -> int:
                return client.post("/v1/predict", files={"file": ("t.png", encode_png(tile))}).status_code

            for style in STYLES:
                start = datetime.now(UTC)
                codes = list(pool.map(send, style_tiles(style, PER_STYLE, seed=2)))
                assert codes == [200] * PER_STYLE
                windows[style] = (start.isoformat(), datetime.now(UTC).isoformat())
                time.sleep(0.05)
    # leaving `running` stopped the API, which wrote what its drift buffer still held
    return {"home": tmp / "var", "pkg": pkg, "settings": settings, "windows": windows}


def test_the_api_wrote_one_row_per_request(served):
    from monitoring.store import load_live_rows

    lake = Lake.from_settings(served["settings"])
    first, last = served["windows"]["default"][0], served["windows"]["sensor"][1]
    rows = load_live_rows(lake, datetime.fromisoformat(first), datetime.fromisoformat(last))
    assert len(rows) == PER_STYLE * len(STYLES)
    assert set(rows["model_version"]) == {"local"} and rows["mean_confidence"].notna().all()


@pytest.mark.parametrize("style", STYLES)
def test_shifted_styles_are_flagged_and_the_default_style_is_not(served, style):
    since, until = served["windows"][style]
    summary = run_drift(served["settings"], since=since, until=until)
    assert summary["rows"] == PER_STYLE and summary["model_version"] == "local"
    assert summary["verdict"] == ("ok" if style == "default" else "drift"), summary["message"]
    # this package predates the embedding output: its rows have none and the report leaves it out
    assert "embedding" not in summary["features"] and "mean_confidence" in summary["features"]


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append({"type": self.headers["Content-Type"], "body": json.loads(body)})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def webhook():
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Hook)
    _Hook.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/drift?token=abc", _Hook.received
    finally:
        server.shutdown()


def _states(dr) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}


def _train_queue() -> list[str]:
    from airflow.models.asset import AssetDagRunQueue, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = (
            select(AssetDagRunQueue.target_dag_id)
            .join(AssetModel, AssetModel.id == AssetDagRunQueue.asset_id)
            .where(AssetModel.name == "parking_drift_detected")
        )
        return list(session.scalars(query))


def _drift_events() -> list[dict]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = (
            select(AssetEvent)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.name == "parking_drift_detected")
        )
        return [dict(e.extra or {}) for e in session.scalars(query)]


def _train_schedule(retrain_on_drift: bool, monkeypatch) -> set[str]:
    """The assets parking_train is scheduled on when dags/parking_train.py is parsed with the setting."""
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("PARKING_RETRAIN_ON_DRIFT", str(retrain_on_drift).lower())
    bag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags" / "parking_train.py"), safe_mode=False)
    assert not bag.import_errors, bag.import_errors
    condition = bag.dags["parking_train"].timetable.asset_condition
    return {a.name for a in condition.objects}  # AssetAll of a list, AssetAny of `a | b`


def test_parking_drift_dag_on_api_rows_alerts_and_requests_retraining(served, webhook, airflow_home, monkeypatch):
    url, received = webhook
    monkeypatch.setenv("PARKING_HOME", str(served["home"]))
    monkeypatch.setenv("PARKING_MODEL_DIR", str(served["pkg"]))
    monkeypatch.setenv("PARKING_ALERT_WEBHOOK", url)
    assert _train_schedule(False, monkeypatch) == {"parking_processed"}
    # left on: dag.test() stores every DAG of the dags folder as parsed now, parking_train with this schedule
    assert _train_schedule(True, monkeypatch) == {"parking_processed", "parking_drift_detected"}

    from parking_drift import dag as drift_dag

    events_before = len(_drift_events())
    since, until = served["windows"]["default"]
    dr = drift_dag.test(run_conf={"since": since, "until": until})
    assert str(dr.state) == "success", _states(dr)
    assert _states(dr) == {"report": "success", "publish_drift": "skipped", "alert": "skipped"}
    assert received == [] and len(_drift_events()) == events_before

    since, until = served["windows"]["dusk"]
    dr = drift_dag.test(run_conf={"since": since, "until": until})
    assert str(dr.state) == "success", _states(dr)
    assert _states(dr) == {"report": "success", "publish_drift": "success", "alert": "success"}
    # the webhook got the summary as JSON
    assert len(received) == 1 and received[0]["type"] == "application/json"
    alert = received[0]["body"]
    assert alert["verdict"] == "drift" and alert["model_version"] == "local" and alert["rows"] == PER_STYLE
    assert alert["drifted_features"] and "drift" in alert["text"]
    # the asset event carries the report's id; parking_train (retrain on drift) is queued by it
    events = _drift_events()
    assert len(events) == events_before + 1 and events[-1]["report_id"] == alert["report_id"]
    assert "parking_train" in _train_queue()
    # the report is in the lake's index, as the Airflow UI plugin lists it
    from monitoring.store import read_index

    index = read_index(Lake.from_settings(Settings(home=served["home"])))
    assert alert["report_id"] in set(index["report_id"])


def test_unreachable_webhook_fails_only_the_alert_task(served, airflow_home, monkeypatch):
    monkeypatch.setenv("PARKING_HOME", str(served["home"]))
    monkeypatch.setenv("PARKING_MODEL_DIR", str(served["pkg"]))
    monkeypatch.setenv("PARKING_ALERT_WEBHOOK", f"http://127.0.0.1:{free_port()}/nobody-listens")
    from parking_drift import dag as drift_dag

    since, until = served["windows"]["winter"]
    dr = drift_dag.test(run_conf={"since": since, "until": until})
    states = _states(dr)
    assert states["report"] == "success" and states["publish_drift"] == "success"
    assert states["alert"] in ("failed", "up_for_retry"), states
