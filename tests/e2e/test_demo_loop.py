"""The whole loop as `make demo` runs it, in the smoke profile: real stack (MLflow, Airflow scheduler and
dag-processor, inference API), a synthetic landing batch, the DAG chain driven over Airflow's REST API, a champion
in the registry and a prediction from the API."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from parking_ml.ops.stack import free_port

pytestmark = pytest.mark.e2e
CLI = str(Path(sys.executable).parent / "parking-ml")


def test_demo_runs_the_whole_loop(tmp_path):
    home = tmp_path / "var"
    ports = {"mlflow": free_port(), "airflow": free_port(), "api": free_port()}
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW"))},
        "PARKING_HOME": str(home),
        "PARKING_PROFILE": "smoke",
        "PARKING_RELOAD_INTERVAL_S": "2",
        "PARKING_MLFLOW_PORT": str(ports["mlflow"]),
        "PARKING_AIRFLOW_PORT": str(ports["airflow"]),
        "PARKING_API_PORT": str(ports["api"]),
        # a first smoke model cannot clear the real quality bar; the gate itself is tested elsewhere
        "PARKING_PROMOTION_MIN_QUALITY": "0",
    }
    try:
        run = subprocess.run(
            [CLI, "demo", "--n", "12", "--size", "256", "--timeout", "900"],
            env=env,
            capture_output=True,
            text=True,
            timeout=1500,
        )
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
        for dag_id in ("parking_ingest", "parking_preprocess", "parking_train", "parking_promote"):
            assert f"{dag_id} finished" in run.stdout

        # the lake holds raw images, a processed version and no quarantined files for a clean batch
        lake = home / "lake"
        assert len(list((lake / "raw" / "images").iterdir())) == 12
        version = (lake / "processed" / "LATEST").read_text().strip()
        assert (lake / "processed" / version / "manifest.parquet").exists()
        assert not (lake / "quarantine").exists() or not any((lake / "quarantine").rglob("*.png"))

        # the registry has a champion, and the API serves exactly that version
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=f"http://127.0.0.1:{ports['mlflow']}")
        champion = client.get_model_version_by_alias("parking-spaces", "champion")
        served = httpx.get(f"http://127.0.0.1:{ports['api']}/v1/model", timeout=10).json()
        assert str(served["version"]) == str(champion.version)
        assert f"v{champion.version}:" in run.stdout
    finally:
        down = subprocess.run([CLI, "stack", "down"], env=env, capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr[-2000:]
