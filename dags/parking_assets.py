"""Assets shared by the parking DAGs (one definition, so producers and consumers agree on names)."""

from airflow.sdk import Asset

# Names are the contract (DESIGN.md); URIs are logical identifiers, not storage locations: the lake root comes
# from settings at run time, so that one DAG file serves local folders and S3 alike.
PARKING_RAW = Asset(name="parking_raw", uri="parking://lake/raw")
PARKING_PROCESSED = Asset(name="parking_processed", uri="parking://lake/processed")
PARKING_CHALLENGER = Asset(name="parking_challenger", uri="parking://registry/challenger")
