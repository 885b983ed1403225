"""The production metadata stores on a real PostgreSQL (127.0.0.1:5432): Airflow's DB, MLflow's backend store and
the Optuna study storage. Each test gets a fresh database, dropped afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from parking_ml.ops.stack import free_port, stop_pid, wait_http

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent


@pytest.fixture
def postgres_db() -> Iterator[str]:
    import psycopg2

    name = f"parking_test_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _tables(url: str) -> set[str]:
    import psycopg2

    conn = psycopg2.connect(url.replace("postgresql+psycopg2://", "postgresql://"))
    try:
        with conn.cursor() as cur:
            cur.execute("select table_name from information_schema.tables where table_schema='public'")
            return {r[0] for r in cur.fetchall()}
    finally:
        conn.close()


def test_airflow_metadata_db_migrates_on_postgres(postgres_db, tmp_path):
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres_db}
    migrate = subprocess.run([BIN / "airflow", "db", "migrate"], env=env, capture_output=True, text=True)
    assert migrate.returncode == 0, migrate.stderr[-2000:]
    check = subprocess.run([BIN / "airflow", "db", "check"], env=env, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr[-2000:]
    assert {"dag", "dag_run", "task_instance", "asset", "alembic_version"} <= _tables(postgres_db)


def test_mlflow_server_on_postgres_backend(postgres_db, tmp_path):
    from mlflow import MlflowClient

    port = free_port()
    log = tmp_path / "mlflow.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [BIN / "mlflow", "server", "--backend-store-uri", postgres_db, "--artifacts-destination",
             str(tmp_path / "art"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/health", 120, proc, log)
        uri = f"http://127.0.0.1:{port}"
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        exp = client.create_experiment("pg-check")
        run = client.create_run(exp)
        client.log_metric(run.info.run_id, "free_f1", 0.75)
        client.create_registered_model("pg-model")
        assert client.get_metric_history(run.info.run_id, "free_f1")[0].value == 0.75
    finally:
        stop_pid(proc.pid, timeout_s=10)
    import psycopg2

    conn = psycopg2.connect(postgres_db.replace("postgresql+psycopg2://", "postgresql://"))
    with conn.cursor() as cur:
        cur.execute("select key, value from metrics")
        assert cur.fetchall() == [("free_f1", 0.75)]
        cur.execute("select name from registered_models")
        assert cur.fetchall() == [("pg-model",)]
    conn.close()


def test_optuna_study_resumes_from_postgres(postgres_db):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="resume", storage=postgres_db, load_if_exists=True)
    study.optimize(lambda t: (t.suggest_float("x", -1, 1) - 0.3) ** 2, n_trials=3)
    again = optuna.load_study(study_name="resume", storage=postgres_db)
    assert len(again.trials) == 3
    assert again.best_value == min(t.value for t in study.trials)
