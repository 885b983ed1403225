"""What the parking DAGs share: asset definitions (one place, so producers and consumers agree on names) and
how a task builds its Settings."""

from airflow.sdk import Asset

# Names are the contract (docs/design.md); URIs are logical identifiers, not storage locations: the lake root comes
# from settings at run time, so that one DAG file serves local folders and S3 alike.
PARKING_RAW = Asset(name="parking_raw", uri="parking://lake/raw")
PARKING_PROCESSED = Asset(name="parking_processed", uri="parking://lake/processed")
PARKING_CHALLENGER = Asset(name="parking_challenger", uri="parking://registry/challenger")
PARKING_DRIFT_DETECTED = Asset(name="parking_drift_detected", uri="parking://monitoring/drift")
# emitted by whatever drops new imagery into the lake (extra {"prefix": ...} names where)
PARKING_IMAGERY = Asset(name="parking_imagery", uri="parking://lake/imagery")


def task_settings(**overrides):
    """Settings for a task (overrides: a run's params, winning over the environment); on an S3 lake,
    credentials and endpoint from the Airflow connection ``settings.aws_conn_id`` (e.g. env
    AIRFLOW_CONN_PARKING_S3) when it exists, else PARKING_S3_* / AWS_*."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    from parking_ml.config import load_settings
    from parking_ml.lake import s3_overrides

    settings = load_settings(**overrides)
    if not settings.lake_url.startswith("s3://"):
        return settings
    try:
        conn = BaseHook.get_connection(settings.aws_conn_id)
    except AirflowNotFoundException:
        return settings
    return load_settings(**s3_overrides(conn.login, conn.password, conn.extra_dejson), **overrides)
