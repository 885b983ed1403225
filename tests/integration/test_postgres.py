"""The production metadata stores on a real PostgreSQL (127.0.0.1:5432): Airflow's DB, MLflow's backend store and
the Optuna study storage. Each test gets a fresh database, dropped afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from parking_ml.ops.stack import start_local_mlflow, stop_pid

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent


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

    proc, uri = start_local_mlflow(tmp_path, backend_store_uri=postgres_db)
    try:
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


def test_mlflow_on_postgres_with_s3_artifacts_registers_and_loads_a_model(
    postgres_db, moto_server, tmp_path, monkeypatch
):
    """The production layout: runs and the registry in PostgreSQL, artifacts in S3 (moto), proxied by the
    server, so a client needs only the tracking URI (no S3 endpoint or keys of its own)."""
    import uuid

    import boto3
    import mlflow
    import numpy as np
    from mlflow import MlflowClient
    from sklearn.linear_model import LogisticRegression

    bucket = f"parking-mlflow-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", moto_server)
    proc, uri = start_local_mlflow(
        tmp_path / "mlflow", backend_store_uri=postgres_db, artifacts_destination=f"s3://{bucket}/artifacts"
    )
    monkeypatch.delenv("MLFLOW_S3_ENDPOINT_URL")  # the client below reaches S3 only through the server
    try:
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        x = np.array([[0.0, 0.1], [0.2, 0.0], [0.9, 1.0], [1.0, 0.8]])
        y = np.array([0, 0, 1, 1])
        model = LogisticRegression().fit(x, y)
        mlflow.set_experiment("pg-s3")
        with mlflow.start_run() as run:
            mlflow.log_metric("free_f1", 0.8)
            info = mlflow.sklearn.log_model(model, name="model", registered_model_name="pg-s3-model")
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        (version,) = [v.version for v in client.search_model_versions("name = 'pg-s3-model'")]
        client.set_registered_model_alias("pg-s3-model", "champion", version)

        loaded = mlflow.pyfunc.load_model("models:/pg-s3-model@champion")
        probe = np.array([[0.05, 0.05], [0.95, 0.9]])
        assert list(loaded.predict(probe)) == list(model.predict(probe)) == [0, 1]
        assert client.get_run(run.info.run_id).data.metrics == {"free_f1": 0.8}
    finally:
        stop_pid(proc.pid, timeout_s=10)

    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="artifacts/").get("Contents", [])]
    names = {k.rsplit("/", 1)[1] for k in keys}
    assert "MLmodel" in names and any(n.startswith("model.") for n in names), names
    assert not (tmp_path / "mlflow" / "artifacts").exists()
    import psycopg2

    conn = psycopg2.connect(postgres_db.replace("postgresql+psycopg2://", "postgresql://"))
    with conn.cursor() as cur:
        cur.execute("select name, version from model_versions")
        assert cur.fetchall() == [("pg-s3-model", int(version))]
        cur.execute("select alias from registered_model_aliases")
        assert cur.fetchall() == [("champion",)]
    conn.close()
    assert info.model_id


def test_optuna_study_resumes_from_postgres(postgres_db):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="resume", storage=postgres_db, load_if_exists=True)
    study.optimize(lambda t: (t.suggest_float("x", -1, 1) - 0.3) ** 2, n_trials=3)
    again = optuna.load_study(study_name="resume", storage=postgres_db)
    assert len(again.trials) == 3
    assert again.best_value == min(t.value for t in study.trials)
