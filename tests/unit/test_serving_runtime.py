"""Serving building blocks without a server: admission limits, drift buffer, API-key check, error shapes."""

from __future__ import annotations

import asyncio
import threading

import pandas as pd
import pytest

from parking_ml.features import FEATURE_COLUMNS
from serving.drift import DriftBuffer, feature_row
from serving.errors import ApiError
from serving.metrics import Metrics
from serving.runtime import Admission


def test_admission_bounds_running_and_waiting_then_503():
    metrics = Metrics()
    release = threading.Event()
    started = threading.Semaphore(0)

    def work(x: int) -> int:
        started.release()
        release.wait(10)
        return x * 2

    async def scenario():
        adm = Admission(running=1, waiting=1, metrics=metrics)
        first = asyncio.create_task(adm.run(work, 1))
        second = asyncio.create_task(adm.run(work, 2))
        await asyncio.sleep(0.05)
        assert await asyncio.to_thread(started.acquire, True, 5)
        assert adm.admitted == 2
        with pytest.raises(ApiError) as exc:
            await adm.run(work, 3)
        assert exc.value.status == 503 and exc.value.headers["Retry-After"] == "1"
        release.set()
        assert await first == 2 and await second == 4
        assert adm.admitted == 0
        assert await adm.run(work, 5) == 10  # capacity is back
        adm.shutdown()

    asyncio.run(scenario())


def _row(i: int, day: str = "2026-11-25") -> dict:
    row = feature_row(dict.fromkeys(FEATURE_COLUMNS, float(i)), f"r{i}", "m", "1")
    row["date"] = day
    return row


def test_drift_buffer_keeps_rows_on_failure_and_writes_later():
    written: dict[str, pd.DataFrame] = {}
    fail = {"on": True}

    def write(key: str, frame: pd.DataFrame) -> None:
        if fail["on"]:
            raise OSError("bucket unreachable")
        written[key] = frame

    metrics = Metrics()
    buf = DriftBuffer(write, metrics, flush_rows=2, flush_interval_s=60, max_rows=5)
    for i in range(3):
        buf.add(_row(i))
    assert buf.flush() == 0 and len(buf) == 3
    for i in range(3, 7):
        buf.add(_row(i))
    assert len(buf) == 5  # bounded: the two oldest were dropped
    fail["on"] = False
    buf.add(_row(7, day="2026-11-26"))
    assert buf.flush() == 5
    assert len(buf) == 0
    keys = sorted(written)
    assert keys[0].startswith("monitoring/inference/date=2026-11-25/") and keys[0].endswith(".parquet")
    assert keys[1].startswith("monitoring/inference/date=2026-11-26/")
    assert sorted(written[keys[0]]["request_id"]) == ["r3", "r4", "r5", "r6"]
    assert list(written[keys[0]].columns[: len(FEATURE_COLUMNS)]) == FEATURE_COLUMNS
    text = metrics.render().decode()
    assert "parking_drift_write_failures_total 1.0" in text
    assert "parking_drift_rows_dropped_total 3.0" in text


def test_drift_buffer_flusher_thread_and_stop_flush():
    written: list[int] = []
    buf = DriftBuffer(lambda key, frame: written.append(len(frame)), Metrics(), flush_rows=3, flush_interval_s=60)
    buf.start()
    for i in range(3):
        buf.add(_row(i))
    for _ in range(100):
        if written:
            break
        threading.Event().wait(0.05)
    assert written == [3]
    buf.add(_row(9))
    buf.stop()
    assert written == [3, 1]


def test_drift_rows_computed_off_the_request_path(caplog):
    written: list[pd.DataFrame] = []
    buf = DriftBuffer(lambda key, frame: written.append(frame), Metrics(), flush_rows=100, flush_interval_s=60)
    callers: list[str] = []
    gate = threading.Event()

    def later(i: int):
        def make() -> dict:
            gate.wait(10)
            callers.append(threading.current_thread().name)
            return _row(i)

        return make

    # no flusher running: computed by the caller, at once
    gate.set()
    buf.add_later(later(0))
    assert callers == [threading.current_thread().name] and len(buf) == 1
    # with the flusher: add_later returns before the row exists, the flusher thread computes it
    gate.clear()
    buf.start()
    buf.add_later(later(1))
    assert len(buf) == 2  # counted while pending
    assert len(callers) == 1
    gate.set()
    for _ in range(100):
        if len(callers) == 2:
            break
        threading.Event().wait(0.05)
    assert callers[1] == "drift-flusher"

    def broken() -> dict:
        raise ValueError("no features")

    buf.add_later(broken, "req-broken")
    buf.add_later(later(2))
    buf.stop()  # computes what is pending, then writes
    assert sorted(written[0]["request_id"]) == ["r0", "r1", "r2"]
    failed = [r for r in caplog.records if r.getMessage() == "drift features failed"]
    assert [r.request_id for r in failed] == ["req-broken"] and len(buf) == 0


def test_drift_pending_rows_are_bounded():
    buf = DriftBuffer(lambda key, frame: None, Metrics(), flush_rows=100, flush_interval_s=60, max_pending=2)
    entered, gate = threading.Event(), threading.Event()
    callers: list[str] = []

    def slow() -> dict:
        entered.set()
        gate.wait(10)
        return _row(0)

    def quick() -> dict:
        callers.append(threading.current_thread().name)
        return _row(len(callers))

    buf.start()
    buf.add_later(slow)
    assert entered.wait(10)  # the flusher is busy with it
    buf.add_later(quick)
    buf.add_later(quick)
    assert callers == [] and len(buf) == 2
    buf.add_later(quick)  # over the bound: the caller computes the backlog itself
    me = threading.current_thread().name
    assert callers == [me, me, me] and len(buf) == 3
    gate.set()
    buf.stop()


def test_metrics_registries_are_per_instance():
    a, b = Metrics(), Metrics()
    a.errors.labels(code="corrupt").inc()
    assert 'parking_errors_total{code="corrupt"} 1.0' in a.render().decode()
    assert 'code="corrupt"' not in b.render().decode()


def test_registry_down_later_keeps_serving_current_model(tmp_path, monkeypatch):
    import socket
    import time

    from parking_ml.config import Settings
    from parking_ml.inference import PreprocessConfig
    from serving.holder import ModelHolder
    from tests.fakes.packages import write_color_net

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    pkg = tmp_path / "model"
    pkg.mkdir()
    write_color_net(pkg / "model.onnx")
    (pkg / "preprocess.json").write_text(PreprocessConfig().to_json())
    settings = Settings(
        home=tmp_path / "var", mlflow_tracking_uri=f"http://127.0.0.1:{dead_port}", reload_interval_s=0.1
    )
    metrics = Metrics()
    holder = ModelHolder(settings, metrics)
    holder._swap(holder.load_dir(pkg))  # as if the registry had answered before going down
    served = holder.current
    holder.start()
    try:
        deadline = time.monotonic() + 60
        while "parking_registry_errors_total 2.0" not in metrics.render().decode():
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        holder.stop()
    assert holder.current is served
    assert holder.describe()["loaded"] is True
    assert 'parking_model_reloads_total{result="error"}' in metrics.render().decode()


def test_the_api_serves_the_package_tta_unless_parking_tta_overrides_it(tmp_path):
    from parking_ml.config import Settings
    from parking_ml.inference import PreprocessConfig
    from serving.holder import ModelHolder
    from tests.fakes.packages import write_color_net

    pkg = tmp_path / "model"
    pkg.mkdir()
    write_color_net(pkg / "model.onnx")
    (pkg / "preprocess.json").write_text(PreprocessConfig(tta="dihedral").to_json())
    for tta, served in (("model", "dihedral"), ("none", "none"), ("flip", "flip")):
        holder = ModelHolder(Settings(home=tmp_path / "var", tta=tta), Metrics())
        holder._swap(holder.load_dir(pkg))
        assert holder.current.segmenter.config.tta == served
        assert holder.describe()["preprocess"]["tta"] == served
