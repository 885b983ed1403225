"""Airflow on a distributed executor, for real: metadata DB on PostgreSQL, CeleryExecutor on Redis, two Celery
worker processes, an S3 lake (moto) reached through an AIRFLOW_CONN_* connection, all on 127.0.0.1.

The data DAGs run as in production: `parking_ingest` triggered through the REST API, `parking_preprocess` by
the `parking_raw` asset event it emits. Then a worker is SIGKILLed (with its task processes) in the middle of
ingest's writes: the scheduler notices the lost heartbeat, the retry runs on the other worker, and the lake
holds every image once, a manifest row each, and nothing half-written.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest

from parking_ml.config import Settings
from parking_ml.data.ingest import RAW_MANIFEST, read_raw_manifest
from parking_ml.data.processed import LATEST_KEY
from parking_ml.data.validation import sha256
from parking_ml.lake import Lake
from parking_ml.ops.stack import free_port
from tests.fakes.airflow_celery import CeleryCluster
from tests.fakes.postgres import fresh_database, query
from tests.fakes.slow_s3 import SlowS3

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

BUCKET = "parking-celery"
LAKE_URL = f"s3://{BUCKET}/lake"
DAGS = ("parking_ingest", "parking_preprocess")
WORKERS = ("worker-a", "worker-b")


@pytest.fixture(scope="module")
def slow_s3() -> SlowS3:
    server = SlowS3("127.0.0.1", free_port()).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def lake(slow_s3, tmp_path_factory) -> Lake:
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=slow_s3.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket=BUCKET)
    settings = Settings(
        home=tmp_path_factory.mktemp("celery-client"),
        lake_url=LAKE_URL,
        s3_endpoint_url=slow_s3.url,
        s3_access_key_id="testing",
        s3_secret_access_key="testing",
    )
    # other processes write the lake while this one watches: no cached listings
    return Lake(LAKE_URL, {**settings.storage_options(), "use_listings_cache": False})


@pytest.fixture(scope="module")
def cluster(slow_s3, lake, tmp_path_factory):
    home = tmp_path_factory.mktemp("celery-cluster")
    conn = {"conn_type": "aws", "login": "testing", "password": "testing", "extra": {"endpoint_url": slow_s3.url}}
    task_env = {
        "PARKING_HOME": str(home / "var"),
        "PARKING_LAKE_URL": LAKE_URL,
        "PARKING_TILE_SIZE": "64",
        "PARKING_TILE_OVERLAP": "0",
        "PARKING_FOLDS": "2",
        "PARKING_INGEST_SETTLE_S": "0",
        "AIRFLOW_CONN_PARKING_S3": json.dumps(conn),
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    with fresh_database("parking_distributed") as db:
        stack = CeleryCluster(home / "airflow-home", db, task_env, workers=WORKERS)
        try:
            stack.start()
            stack.api.wait_for_dags(list(DAGS), timeout_s=240)
            for dag_id in DAGS:
                stack.api.unpause(dag_id)
            # unpausing the hourly ingest starts its latest scheduled run: on an empty landing it accepts nothing
            _wait_all_runs(stack, "parking_ingest", timeout_s=180)
            yield stack
        finally:
            pids = stack.all_pids()
            stack.stop()
            left = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
            assert not left, f"processes left behind: {left}"
            assert not stack.redis_keys(), "broker keys left in Redis"


def _wait_all_runs(cluster: CeleryCluster, dag_id: str, timeout_s: float) -> None:
    """Until dag_id has a run and every run of it has finished (a scheduled run's run_after is in the past)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = cluster.api.runs(dag_id)
        if runs and all(r["state"] in ("success", "failed") for r in runs):
            assert {r["state"] for r in runs} == {"success"}, runs
            return
        time.sleep(1)
    raise AssertionError(f"{dag_id}: runs not finished within {timeout_s:.0f}s")


def _land(lake: Lake, batch: str, n: int, seed: int, tmp: Path) -> set[str]:
    """Synthetic tiles (64 px) under landing/<batch>/<site>/; returns the sha256 of each image."""
    from parking_ml.synth import generate_dataset

    images = generate_dataset(tmp / batch, n, seed, size=64, sites=max(2, n // 3), progress=False)
    for path in sorted((tmp / batch).rglob("*")):
        if path.is_file():
            lake.write_bytes(f"landing/{batch}/{path.relative_to(tmp / batch).as_posix()}", path.read_bytes())
    return {sha256(p.read_bytes()) for p in images}


def _task_rows(db: str, dag_id: str, run_id: str) -> dict[str, dict]:
    rows = query(
        db,
        "select task_id, state, hostname, try_number, external_executor_id, queue from task_instance "
        "where dag_id = %s and run_id = %s",
        (dag_id, run_id),
    )
    keys = ("state", "hostname", "try_number", "celery_id", "queue")
    return {r[0]: dict(zip(keys, r[1:], strict=True)) for r in rows}


def _wait_celery_success(cluster: CeleryCluster, celery_ids: list[str], timeout_s: float = 30.0) -> None:
    """Celery stores a task's result after Airflow's task has reported success: wait for it briefly."""
    deadline = time.monotonic() + timeout_s
    while True:
        results = dict(query(cluster.db_name, "select task_id, status from celery_taskmeta"))
        if all(results.get(c) == "SUCCESS" for c in celery_ids):
            return
        assert time.monotonic() < deadline, (celery_ids, results)
        time.sleep(0.5)


def _assert_lake_whole(lake: Lake, expected: set[str]) -> None:
    """Every accepted image once (content-addressed), one manifest row each, nothing temporary or partial."""
    manifest = read_raw_manifest(lake)
    assert manifest["sha256"].is_unique and manifest["source"].is_unique
    assert expected <= set(manifest["sha256"])
    stored = lake.list("raw/images/")
    assert sorted(k.rsplit("/", 1)[1].split(".")[0] for k in stored) == sorted(manifest["sha256"])
    for key in stored:
        assert sha256(lake.read_bytes(key)) == key.rsplit("/", 1)[1].split(".")[0], key
    for key in manifest["annotation"]:
        assert lake.exists(key), key
    assert not [k for k in lake.list("") if ".tmp" in k or k.endswith((".part", "~"))]


def _run_after(cluster: CeleryCluster, dag_id: str, since: datetime) -> dict:
    runs = cluster.api.wait_runs_since(dag_id, since, appear_within_s=90, timeout_s=240)
    assert runs, f"no {dag_id} run was started by the parking_raw event"
    return runs[0]


def test_ingest_then_preprocess_run_on_celery_workers(cluster, lake, tmp_path):
    shas = _land(lake, "b1", n=8, seed=11, tmp=tmp_path)
    since = datetime.now(UTC)
    ingest_run = cluster.api.trigger("parking_ingest")
    cluster.api.wait_run("parking_ingest", run_id=ingest_run, timeout_s=240)
    pre_run = _run_after(cluster, "parking_preprocess", since)
    assert pre_run["state"] == "success"

    tasks = {
        **{f"ingest.{k}": v for k, v in _task_rows(cluster.db_name, "parking_ingest", ingest_run).items()},
        **{f"pre.{k}": v for k, v in _task_rows(cluster.db_name, "parking_preprocess", pre_run["dag_run_id"]).items()},
    }
    assert set(tasks) == {"ingest.ingest", "ingest.publish_raw", "pre.preprocess", "pre.publish_processed"}
    assert {t["state"] for t in tasks.values()} == {"success"}
    # every task ran in one of the Celery workers, through this cluster's queue and the broker
    assert {t["hostname"] for t in tasks.values()} <= set(WORKERS), tasks
    assert {t["queue"] for t in tasks.values()} == {cluster.queue}
    _wait_celery_success(cluster, [t["celery_id"] for t in tasks.values()])
    logs = "".join(cluster.log(w).read_text(errors="replace") for w in WORKERS)
    assert all(t["celery_id"] in logs for t in tasks.values())

    manifest = read_raw_manifest(lake)
    assert set(manifest.loc[manifest["batch"] == "b1", "sha256"]) == shas
    version = lake.read_bytes(LATEST_KEY).decode().strip()
    info = json.loads(lake.read_bytes(f"processed/{version}/dataset.json"))
    assert info["config"]["tile_size"] == 64 and info["n_tiles"] >= len(manifest)
    _assert_lake_whole(lake, shas)


def _running_ingest(cluster: CeleryCluster, run_id: str, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        row = _task_rows(cluster.db_name, "parking_ingest", run_id).get("ingest")
        if row and row["state"] == "running" and row["hostname"] in WORKERS:
            return row
        time.sleep(0.2)
    raise AssertionError(f"ingest of {run_id} never ran: {_task_rows(cluster.db_name, 'parking_ingest', run_id)}")


def test_a_worker_killed_mid_ingest_is_retried_on_the_other_and_the_lake_stays_whole(cluster, lake, slow_s3, tmp_path):
    for name in WORKERS:  # the previous test leaves both up; alone, this one starts with both too
        assert cluster.procs[name].poll() is None, f"{name} is not running"
    shas = _land(lake, "b2", n=12, seed=23, tmp=tmp_path)
    # a slow network in front of raw/images: ingest spends seconds between its first image and its manifest
    slow_s3.slow_prefix, slow_s3.put_delay_s = "/raw/images/", 1.0
    try:
        since = datetime.now(UTC)
        run_id = cluster.api.trigger("parking_ingest")
        first = _running_ingest(cluster, run_id, timeout_s=120)
        deadline = time.monotonic() + 60
        while len(shas & {k.rsplit("/", 1)[1].split(".")[0] for k in lake.list("raw/images/")}) < 2:
            assert time.monotonic() < deadline, "ingest stored no image of b2 within 60 s"
            time.sleep(0.2)
        victim = first["hostname"]
        killed = cluster.kill_worker(victim)
    finally:
        slow_s3.put_delay_s = 0.0
    assert len(killed) >= 3, "worker, pool process and task process"
    # caught in the middle: some images stored, none of them in the manifest yet
    assert not set(read_raw_manifest(lake)["sha256"]) & shas

    cluster.api.wait_run("parking_ingest", run_id=run_id, timeout_s=300)
    ingest = _task_rows(cluster.db_name, "parking_ingest", run_id)
    survivor = next(w for w in WORKERS if w != victim)
    assert ingest["ingest"]["state"] == "success" and ingest["ingest"]["try_number"] == 2
    assert ingest["ingest"]["hostname"] == survivor
    history = query(
        cluster.db_name,
        "select try_number, state, hostname from task_instance_history "
        "where dag_id = 'parking_ingest' and run_id = %s and task_id = 'ingest'",
        (run_id,),
    )
    assert history == [(1, "failed", victim)], history
    pre_run = _run_after(cluster, "parking_preprocess", since)
    assert pre_run["state"] == "success"
    pre = _task_rows(cluster.db_name, "parking_preprocess", pre_run["dag_run_id"])
    assert {t["hostname"] for t in pre.values()} == {survivor}

    _assert_lake_whole(lake, shas)
    manifest = read_raw_manifest(lake)
    assert sorted(manifest.loc[manifest["batch"] == "b2", "sha256"]) == sorted(shas)
    version = lake.read_bytes(LATEST_KEY).decode().strip()
    tiles = lake.read_parquet(f"processed/{version}/manifest.parquet")
    assert set(tiles["image_sha256"]) == set(manifest["sha256"])
    assert lake.exists(RAW_MANIFEST)
