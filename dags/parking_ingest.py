"""parking_ingest: landing/ -> raw/ (validate, content-address, quarantine with reasons).

Manual or hourly. `ingest` checks every landing batch, or those the `batch` param names (files already ingested or
quarantined are skipped, so a retry or the next hourly run adds nothing twice). `publish_raw` declares the
`parking_raw` asset and runs only when raw/ holds data that no processed version covers yet: something new was
accepted, or an earlier try stored it and died before the event (a worker lost after the manifest write). Otherwise
it is skipped and no asset event is emitted, so an idle hour does not trigger preprocessing and retraining.

Retries: a task whose worker dies is failed by the scheduler once its heartbeat stops and retried (on any worker);
ingest's writes are content-addressed and its manifest is written last, so a retry finishes the work.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, task
from parking_assets import PARKING_RAW, task_settings
from parking_params import ingest_params


@dag(
    dag_id="parking_ingest",
    schedule="@hourly",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
    tags=["parking", "data"],
    doc_md=__doc__,
    params=ingest_params(),
)
def parking_ingest():
    @task(execution_timeout=timedelta(hours=2))
    def ingest() -> dict:
        """Validate and move landing files into raw/; returns the summary (accepted, quarantined, ...)."""
        from airflow.sdk import get_current_context

        from parking_ml.data.ingest import ingest as run_ingest
        from parking_ml.lake import Lake
        from parking_ml.model.gsd_estimator import ShippedGsdEstimator

        settings = task_settings()
        prefix = get_current_context()["params"].get("batch") or None
        return run_ingest(
            Lake.from_settings(settings),
            None,
            settings.max_pixels,
            settle_s=settings.ingest_settle_s,
            batch_prefix=prefix,
            gsd_estimator=ShippedGsdEstimator() if settings.gsd_estimate else None,
        )

    @task(outlets=[PARKING_RAW])
    def publish_raw(summary: dict) -> dict:
        """Emit `parking_raw` when raw/ holds data that preprocessing has not turned into a dataset yet."""
        from airflow.sdk.exceptions import AirflowSkipException

        from parking_ml.data.preprocess import TilingConfig, unprocessed_version
        from parking_ml.lake import Lake

        settings = task_settings()
        pending = unprocessed_version(Lake.from_settings(settings), TilingConfig.from_settings(settings))
        if not summary["accepted"] and pending is None:
            raise AirflowSkipException("nothing new accepted and raw/ already processed: no parking_raw event")
        return {**summary, "pending_version": pending}

    publish_raw(ingest())


dag = parking_ingest()
