"""parking_promote: challenger vs champion on the frozen holdout; moves `champion` only if the gate passes.

Runs whenever `parking_train` emits `parking_challenger` (or by hand). Triggered by hand, it can take another
margin, or force a version to champion without the gate (recorded with its reason, as `parking-ml model promote`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, task
from parking_assets import PARKING_CHALLENGER, task_settings
from parking_params import forced_promotion, promote_params


@dag(
    dag_id="parking_promote",
    schedule=[PARKING_CHALLENGER],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["parking", "registry"],
    doc_md=__doc__,
    params=promote_params(),
)
def parking_promote():
    @task(execution_timeout=timedelta(hours=2))
    def gate() -> dict:
        """Evaluate both models with the API's inference code and record the decision (or the forced move)."""
        from airflow.sdk import get_current_context

        from parking_ml.model.promote import manual_promote, run_promotion

        params = get_current_context()["params"]
        forced = forced_promotion(params)
        if forced is not None:
            version, reason = forced
            return {"promoted": True, "forced": True, **manual_promote(task_settings(), version, reason)}
        return run_promotion(task_settings(), margin=params.get("margin"))

    gate()


dag = parking_promote()
