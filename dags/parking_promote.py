"""parking_promote: challenger vs champion on the frozen holdout; moves `champion` only if the gate passes.

Runs whenever `parking_train` emits `parking_challenger` (or by hand).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, task
from parking_assets import PARKING_CHALLENGER, task_settings


@dag(
    dag_id="parking_promote",
    schedule=[PARKING_CHALLENGER],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["parking", "registry"],
    doc_md=__doc__,
)
def parking_promote():
    @task(execution_timeout=timedelta(hours=2))
    def gate() -> dict:
        """Evaluate both models with the API's inference code and record the decision."""
        from parking_ml.model.promote import run_promotion

        return run_promotion(task_settings())

    gate()


dag = parking_promote()
