"""parking_train: Optuna CV tuning + final fit on the newest processed dataset; registers the `challenger`.

Runs when `parking_preprocess` emits the processed asset (or by hand); emits `parking_challenger`. With
PARKING_RETRAIN_ON_DRIFT=true it also runs when `parking_drift` emits `parking_drift_detected`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, task
from parking_assets import PARKING_CHALLENGER, PARKING_DRIFT_DETECTED, PARKING_PROCESSED, task_settings
from parking_params import overrides, train_params

from parking_ml.config import load_settings

# read when the DAG file is parsed: the schedule is part of the DAG's definition
SCHEDULE = (PARKING_PROCESSED | PARKING_DRIFT_DETECTED) if load_settings().retrain_on_drift else [PARKING_PROCESSED]


@dag(
    dag_id="parking_train",
    schedule=SCHEDULE,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["parking", "training"],
    doc_md=__doc__,
    params=train_params(),
)
def parking_train():
    @task(outlets=[PARKING_CHALLENGER], execution_timeout=timedelta(hours=12))
    def tune_and_register() -> dict:
        """Tune, fit, export, register; a retried task resumes the stored Optuna study."""
        from airflow.sdk import get_current_context

        from parking_ml.model.final_fit import run_training

        params = get_current_context()["params"]
        settings = task_settings(**overrides(params, {"profile": "profile", "init_weights": "init_weights"}))
        return run_training(settings, n_trials=params.get("n_trials"))

    tune_and_register()


dag = parking_train()
