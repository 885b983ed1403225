"""parking_preprocess: raw/ -> processed/<version>/ (tiles, masks, site-grouped folds, frozen holdout).

Runs when `parking_ingest` emits `parking_raw` (or by hand). The version is a hash of the raw data and the
preprocessing settings: an unchanged input finds its version complete and writes nothing; `publish_processed`
then skips, so `parking_processed` (and retraining) fires only for a new dataset version.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, task
from parking_assets import PARKING_PROCESSED, PARKING_RAW, task_settings
from parking_params import overrides, preprocess_params


@dag(
    dag_id="parking_preprocess",
    schedule=[PARKING_RAW],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=30)},
    tags=["parking", "data"],
    doc_md=__doc__,
    params=preprocess_params(),
)
def parking_preprocess():
    @task(execution_timeout=timedelta(hours=4))
    def preprocess() -> dict:
        """Build (or find) the dataset version for the current raw/ and settings; moves processed/LATEST."""
        from airflow.sdk import get_current_context

        from parking_ml.data.preprocess import TilingConfig
        from parking_ml.data.preprocess import preprocess as run_preprocess
        from parking_ml.lake import Lake

        params = get_current_context()["params"]
        settings = task_settings(**overrides(params, {k: k for k in ("tile_size", "tile_overlap", "folds")}))
        return run_preprocess(Lake.from_settings(settings), TilingConfig.from_settings(settings))

    @task(outlets=[PARKING_PROCESSED])
    def publish_processed(summary: dict) -> dict:
        """Emit `parking_processed` only for a newly written version."""
        from airflow.sdk.exceptions import AirflowSkipException

        if not summary["created"]:
            raise AirflowSkipException(f"dataset {summary['version']} unchanged: no parking_processed event")
        return summary

    publish_processed(preprocess())


dag = parking_preprocess()
