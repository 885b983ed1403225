"""Data pipeline on real parts: a moto S3 server for the lake, a real Airflow DB for the two data DAGs."""

from __future__ import annotations

import json
import os
import time

import pytest

from parking_ml.config import Settings
from parking_ml.data.ingest import RAW_MANIFEST, ingest, read_raw_manifest, read_reasons
from parking_ml.data.preprocess import TilingConfig, preprocess
from parking_ml.data.processed import latest_version, load_manifest, materialize
from parking_ml.lake import Lake
from tests.fakes.dags import new_dag
from tests.fakes.landing import geojson_bytes, png_bytes, write_landing
from tests.fakes.scenes import scene

pytestmark = pytest.mark.integration


def _bucket(endpoint: str, name: str) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if name not in existing:
        s3.create_bucket(Bucket=name)


def _snapshot(lake: Lake, prefix: str) -> dict[str, bytes]:
    return {k: lake.read_bytes(k) for k in lake.list(prefix)}


def test_s3_ingest_twice_equals_once_then_preprocess_and_materialize(moto_server, make_settings, tmp_path):
    _bucket(moto_server, "parking-lake")
    settings = make_settings(lake_url="s3://parking-lake/t1", s3_endpoint_url=moto_server)
    lake = Lake.from_settings(settings)
    write_landing(lake, "b1", sites=4, per_site=2, size=128)
    lake.write_bytes("landing/b1/site0/broken.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 10)
    # its image is still uploading: S3's LastModified says it just landed, so it waits
    lake.write_bytes("landing/b1/site0/later.geojson", geojson_bytes(scene(128, seed=60)[2]))

    once = ingest(lake, max_pixels=settings.max_pixels, settle_s=600)
    assert once["accepted"] == 8 and once["quarantined"] == 1 and once["waiting"] == 1
    raw_once, q_once = _snapshot(lake, "raw/"), _snapshot(lake, "quarantine/")
    twice = ingest(lake, max_pixels=settings.max_pixels, settle_s=600)
    assert twice["accepted"] == 0 and twice["quarantined"] == 0 and twice["waiting"] == 1
    assert _snapshot(lake, "raw/") == raw_once and _snapshot(lake, "quarantine/") == q_once
    assert [r["code"] for r in read_reasons(lake, "b1")] == ["corrupt"]
    m = read_raw_manifest(lake)
    assert len(m) == 8 and m["sha256"].is_unique
    assert all(lake.exists(f"raw/images/{sha}.png") for sha in m["sha256"])

    config = TilingConfig(tile_size=64, tile_overlap=0, folds=2, holdout_fraction=0.25)
    out = preprocess(lake, config)
    assert out["created"] and latest_version(lake) == out["version"]
    assert preprocess(lake, config)["created"] is False

    local = materialize(lake, out["version"], tmp_path / "cache")
    assert local.is_relative_to(tmp_path / "cache")
    tiles = load_manifest(local)
    assert len(tiles) == 8 * 4
    assert all(
        (local / "tiles" / f"{t}.png").exists() and (local / "masks" / f"{t}.png").exists() for t in tiles.tile_id
    )
    assert materialize(lake, out["version"], tmp_path / "cache") == local  # cached: no second download

    from parking_ml.data.dataset import TileDataset

    item = TileDataset(local, tiles)[0]
    assert item["image"].shape == (3, 64, 64)


def _states(dr) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}


def test_ingest_and_preprocess_dags_on_local_lake(airflow_home, monkeypatch, tmp_path):
    home = tmp_path / "var"
    lake_url = f"file://{tmp_path / 'lake'}"
    monkeypatch.setenv("PARKING_HOME", str(home))
    monkeypatch.setenv("PARKING_LAKE_URL", lake_url)
    monkeypatch.setenv("PARKING_TILE_SIZE", "64")
    monkeypatch.setenv("PARKING_TILE_OVERLAP", "0")
    lake = Lake(lake_url, {})
    write_landing(lake, "b1", sites=4, per_site=2, size=96)
    lake.write_bytes("landing/b1/site1/alone.png", png_bytes(scene(96, seed=50)[0]))
    # alone.png landed an hour ago: its annotation is overdue. fresh.geojson just landed: its image may still be
    # uploading, so the DAG (PARKING_INGEST_SETTLE_S's default) leaves it for a later run
    hour_ago = time.time() - 3600
    os.utime(lake.local_path("landing/b1/site1/alone.png"), (hour_ago, hour_ago))
    lake.write_bytes("landing/b1/site1/fresh.geojson", geojson_bytes(scene(96, seed=51)[2]))

    from parking_ingest import dag as ingest_dag
    from parking_preprocess import dag as preprocess_dag

    dr = ingest_dag.test()
    assert str(dr.state) == "success", _states(dr)
    assert _states(dr) == {"ingest": "success", "publish_raw": "success"}
    assert len(read_raw_manifest(lake)) == 8
    assert [r["code"] for r in read_reasons(lake, "b1")] == ["missing_annotation"]
    assert lake.exists("landing/b1/site1/fresh.geojson") and not lake.exists("quarantine/b1/site1/fresh.geojson")

    dr = preprocess_dag.test()
    assert str(dr.state) == "success", _states(dr)
    assert _states(dr) == {"preprocess": "success", "publish_processed": "success"}
    version = latest_version(lake)
    info = json.loads(lake.read_bytes(f"processed/{version}/dataset.json"))
    assert info["config"]["tile_size"] == 64 and info["n_tiles"] == 8 * 4

    # nothing new: both runs succeed, the publishing tasks skip (no asset events downstream)
    dr = ingest_dag.test()
    assert str(dr.state) == "success" and _states(dr)["publish_raw"] == "skipped"
    dr = preprocess_dag.test()
    assert str(dr.state) == "success" and _states(dr)["publish_processed"] == "skipped"


def test_ingest_dag_takes_s3_credentials_from_airflow_connection(airflow_home, moto_server, monkeypatch, tmp_path):
    _bucket(moto_server, "parking-conn")
    writer = Lake.from_settings(Settings(home=tmp_path, lake_url="s3://parking-conn/x", s3_endpoint_url=moto_server))
    write_landing(writer, "b1", sites=1, per_site=2, size=96)
    monkeypatch.setenv("PARKING_HOME", str(tmp_path / "var"))
    monkeypatch.setenv("PARKING_LAKE_URL", "s3://parking-conn/x")
    monkeypatch.delenv("PARKING_S3_ENDPOINT_URL", raising=False)
    conn = {"conn_type": "aws", "login": "testing", "password": "testing", "extra": {"endpoint_url": moto_server}}
    monkeypatch.setenv("AIRFLOW_CONN_PARKING_S3", json.dumps(conn))

    from parking_ingest import dag as ingest_dag

    dr = ingest_dag.test()
    assert str(dr.state) == "success", _states(dr)
    assert writer.exists(RAW_MANIFEST) and len(read_raw_manifest(writer)) == 2


def test_ingest_and_preprocess_dags_use_their_params(airflow_home, monkeypatch, tmp_path):
    """The trigger form's values reach the code: a batch param ingests that batch only (the other stays waiting
    in landing), preprocess params set the tiling; a value outside a Param's schema is refused before any run."""
    from airflow.sdk.exceptions import ParamValidationError

    lake_url = f"file://{tmp_path / 'lake'}"
    monkeypatch.setenv("PARKING_HOME", str(tmp_path / "var"))
    monkeypatch.setenv("PARKING_LAKE_URL", lake_url)
    lake = Lake(lake_url, {})
    write_landing(lake, "2026-12-01", sites=2, per_site=2, size=96)
    write_landing(lake, "2026-11-30", sites=2, per_site=2, size=96, seed=1, first_site=2)

    dr = new_dag("parking_ingest").test(run_conf={"batch": "2026-12-"})
    assert str(dr.state) == "success", _states(dr)
    assert set(read_raw_manifest(lake)["batch"]) == {"2026-12-01"}
    assert len(lake.list("landing/2026-11-30/")) > 0  # untouched, for a later run

    with pytest.raises(ParamValidationError):
        new_dag("parking_ingest").test(run_conf={"batch": "../raw"})

    dr = new_dag("parking_preprocess").test(run_conf={"tile_size": 64, "tile_overlap": 0, "folds": 2})
    assert str(dr.state) == "success", _states(dr)
    info = json.loads(lake.read_bytes(f"processed/{latest_version(lake)}/dataset.json"))
    assert (info["config"]["tile_size"], info["config"]["tile_overlap"], info["config"]["folds"]) == (64, 0, 2)
    assert info["n_tiles"] == 4 * 4  # 96 px images in 64 px tiles: 2 x 2 each
    with pytest.raises(ParamValidationError):
        new_dag("parking_preprocess").test(run_conf={"tile_size": 32})

    dr = new_dag("parking_ingest").test()  # the default: every batch
    assert str(dr.state) == "success", _states(dr)
    assert set(read_raw_manifest(lake)["batch"]) == {"2026-12-01", "2026-11-30"}
