"""parking_drift: live tile features of the served model vs its training reference -> an Evidently report.

Daily, or by hand with the window as params. The report lands in the lake under monitoring/reports/ and in the
Airflow UI ("Drift reports"). On drift: a warning in the task log, the asset event `parking_drift_detected`
(`parking_train` is scheduled on it when PARKING_RETRAIN_ON_DRIFT=true) and, when PARKING_ALERT_WEBHOOK is set,
a JSON POST with the summary. Too few live rows give `not_enough_data`: no alarm.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, get_current_context, task
from parking_assets import PARKING_DRIFT_DETECTED, task_settings


@dag(
    dag_id="parking_drift",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=30)},
    params={
        "window_hours": Param(
            None, type=["null", "number"], minimum=0.1, description="hours before 'until' (default: setting)"
        ),
        "since": Param(None, type=["null", "string"], description="window start, ISO time (UTC); wins over hours"),
        "until": Param(None, type=["null", "string"], description="window end, ISO time (UTC); default: the run's"),
        "model_version": Param(None, type=["null", "string"], description="default: the version the API serves"),
    },
    tags=["parking", "monitoring"],
    doc_md=__doc__,
)
def parking_drift():
    @task(execution_timeout=timedelta(hours=1))
    def report() -> dict:
        """Build and store the report; returns its summary (without the per-feature table)."""
        from datetime import UTC

        from airflow.sdk.exceptions import AirflowSkipException

        from monitoring.run import DriftInputError, run_drift, served_version

        context = get_current_context()
        params = context["params"]
        settings = task_settings()
        if not params.get("model_version"):
            # the daily run of a fresh stack comes before the first champion: nothing to judge is not a failure
            try:
                served_version(settings)
            except DriftInputError as exc:
                raise AirflowSkipException(f"no served model yet: {exc}") from None
        until = params.get("until") or context.get("data_interval_end") or datetime.now(UTC)
        if isinstance(until, str):
            from monitoring.run import Window

            until = Window.parse(None, until, datetime.now(UTC)).end
        since = params.get("since")
        if not since and params.get("window_hours"):
            since = until - timedelta(hours=float(params["window_hours"]))
        summary = run_drift(settings, since=since, until=until, model_version=params.get("model_version"))
        return {k: v for k, v in summary.items() if k != "features"}

    @task(outlets=[PARKING_DRIFT_DETECTED])
    def publish_drift(summary: dict) -> dict:
        """Emit `parking_drift_detected` only when the report found drift."""
        import logging

        from airflow.sdk.exceptions import AirflowSkipException

        if summary["verdict"] != "drift":
            raise AirflowSkipException(f"no drift ({summary['verdict']}): {summary['message']}")
        logging.getLogger("parking_drift").warning(
            "DRIFT in %s v%s: %s (report %s)",
            summary["model_name"],
            summary["model_version"],
            summary["message"],
            summary["report_id"],
        )
        event = get_current_context()["outlet_events"][PARKING_DRIFT_DETECTED]
        event.extra = {k: summary[k] for k in ("report_id", "model_version", "drift_share", "drifted_features", "rows")}
        return summary

    @task
    def alert(summary: dict) -> int:
        """POST the summary to PARKING_ALERT_WEBHOOK; skipped when unset."""
        from airflow.sdk.exceptions import AirflowSkipException

        from monitoring.alert import alert_payload, post_alert

        url = task_settings().alert_webhook
        if not url:
            raise AirflowSkipException("PARKING_ALERT_WEBHOOK is not set")
        return post_alert(url, alert_payload(summary))

    alert(publish_drift(report()))


dag = parking_drift()
