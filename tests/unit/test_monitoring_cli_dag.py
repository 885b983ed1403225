"""`parking-ml drift` and the parking_drift DAG's definition."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from typer.testing import CliRunner

from parking_ml.cli import app
from parking_ml.lake import Lake
from parking_ml.model.package import REFERENCE_FILE
from tests.fakes.drift import style_rows, write_live

DAGS = Path(__file__).resolve().parents[2] / "dags"


def test_cli_drift_prints_the_summary_and_exits_3_on_drift(tmp_path, monkeypatch, make_settings):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    style_rows("default", 200, seed=1).to_parquet(model_dir / REFERENCE_FILE)
    monkeypatch.setenv("PARKING_HOME", str(tmp_path / "var"))
    monkeypatch.setenv("PARKING_MODEL_DIR", str(model_dir))
    lake = Lake.from_settings(make_settings(home=tmp_path / "var"))
    now = datetime.now(UTC)
    write_live(lake, style_rows("dusk", 100, seed=2), "local", now - timedelta(hours=2))
    runner = CliRunner()
    result = runner.invoke(app, ["drift"])
    assert result.exit_code == 3, result.output
    summary = json.loads(result.stdout)
    assert summary["verdict"] == "drift" and summary["rows"] == 100 and summary["model_version"] == "local"
    assert lake.exists(f"monitoring/reports/{summary['report_id']}/report.html")
    quiet = runner.invoke(app, ["drift", "--since", (now - timedelta(minutes=5)).isoformat()])
    assert quiet.exit_code == 0 and json.loads(quiet.stdout)["verdict"] == "not_enough_data"
    bad = runner.invoke(app, ["drift", "--since", "last tuesday"])
    assert bad.exit_code == 2 and "not an ISO time" in bad.output


def test_drift_dag_is_daily_with_window_params_and_emits_the_asset():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS / "parking_drift.py"), safe_mode=False)
    assert not bag.import_errors, bag.import_errors
    dag = bag.dags["parking_drift"]
    assert dag.schedule == "@daily"
    assert {"window_hours", "since", "until", "model_version"} <= set(dag.params)
    outlets = {o.name for t in dag.tasks for o in t.outlets}
    assert outlets == {"parking_drift_detected"}
    assert [t.task_id for t in dag.topological_sort()] == ["report", "publish_drift", "alert"]
