"""A retried ingest still announces its data: the first try stored everything (manifest included) and its worker
died before the task finished, so the retry accepts nothing new; `parking_raw` must fire all the same, or
preprocessing would never see that data. Real Airflow DB (SQLite), `dag.test()`, a local lake."""

from __future__ import annotations

import pytest

from parking_ml.config import Settings
from parking_ml.data.ingest import ingest, read_raw_manifest
from parking_ml.data.preprocess import TilingConfig, unprocessed_version
from parking_ml.lake import Lake
from tests.fakes.landing import write_landing

pytestmark = pytest.mark.integration


def _states(dr) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}


def test_a_retry_after_the_manifest_write_still_emits_parking_raw(airflow_home, monkeypatch, tmp_path):
    lake_url = f"file://{tmp_path / 'lake'}"
    monkeypatch.setenv("PARKING_HOME", str(tmp_path / "var"))
    monkeypatch.setenv("PARKING_LAKE_URL", lake_url)
    monkeypatch.setenv("PARKING_TILE_SIZE", "64")
    monkeypatch.setenv("PARKING_TILE_OVERLAP", "0")
    lake = Lake(lake_url, {})
    config = TilingConfig.from_settings(Settings())  # what the DAG's tasks build from the same env
    assert unprocessed_version(lake, config) is None  # nothing ingested: no work for preprocessing
    write_landing(lake, "b1", sites=3, per_site=2, size=96)
    # the first try: everything stored, then the worker died before the task (and the event) finished
    assert ingest(lake, settle_s=0)["accepted"] == 6
    pending = unprocessed_version(lake, config)
    assert pending is not None

    from parking_ingest import dag as ingest_dag
    from parking_preprocess import dag as preprocess_dag

    dr = ingest_dag.test()
    assert _states(dr) == {"ingest": "success", "publish_raw": "success"}, _states(dr)
    published = next(ti for ti in dr.get_task_instances() if ti.task_id == "publish_raw").xcom_pull()
    assert published["accepted"] == 0 and published["pending_version"] == pending
    assert len(read_raw_manifest(lake)) == 6

    dr = preprocess_dag.test()
    assert _states(dr) == {"preprocess": "success", "publish_processed": "success"}
    assert lake.read_bytes("processed/LATEST").decode().strip() == pending
    assert unprocessed_version(lake, config) is None
    # processed now: an idle run emits nothing
    dr = ingest_dag.test()
    assert _states(dr)["publish_raw"] == "skipped"
