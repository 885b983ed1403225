"""parking_batch_predict: rasters under a lake prefix -> streamed predictions and per-lot occupancy.

Runs by hand (params) or when the asset `parking_imagery` is emitted by an imagery drop (its extra may name
the prefix). ``plan`` pins the model version and cuts every raster into work units (raster x block rows);
``predict_unit`` is mapped over them (dynamic task mapping: the executor spreads the units over its workers);
``merge_raster`` is mapped over the rasters and joins their parts into predictions/<run>/<stem>.*; the last
task replaces this pass's rows in predictions/occupancy.parquet, so a re-run never duplicates them.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, get_current_context, task
from parking_assets import PARKING_IMAGERY, task_settings


@dag(
    dag_id="parking_batch_predict",
    schedule=[PARKING_IMAGERY],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["parking", "batch"],
    doc_md=__doc__,
    params={
        "prefix": Param("imagery/", type="string", description="lake prefix of the rasters"),
        "lots": Param("lots/lots.geojson", type="string", description="lake key of lot outlines ('' for none)"),
        "block_rows_per_unit": Param(1, type="integer", minimum=1, description="block rows per work unit"),
        "core": Param(None, type=["null", "integer"], description="block side in px (default: chosen per model)"),
    },
)
def parking_batch_predict():
    @task
    def plan() -> list:
        """Pin the model version, list the rasters, cut them into work units."""
        from parking_ml.raster.batch import plan as make_plan

        ctx = get_current_context()
        params = ctx["params"]
        prefix = params["prefix"]
        events = ctx.get("triggering_asset_events") or {}
        for asset_events in events.values():
            for event in asset_events:
                prefix = (event.extra or {}).get("prefix", prefix)
        return make_plan(
            task_settings(),
            prefix,
            ctx["run_id"],
            lots=params["lots"],
            block_rows_per_unit=params["block_rows_per_unit"],
            core=params["core"],
        )

    @task(execution_timeout=timedelta(hours=2), retries=1)
    def predict_unit(unit: dict) -> dict:
        """One work unit: a raster's block rows, predicted and put into the lake as parts."""
        from parking_ml.raster.batch import run_unit

        return run_unit(task_settings(), unit)

    @task
    def rasters(units: list) -> list:
        """The planned rasters, one merge each."""
        from parking_ml.raster.batch import rasters_of

        return rasters_of(units)

    @task(execution_timeout=timedelta(hours=1))
    def merge_raster(raster: dict, parts: list) -> list:
        """A raster's parts joined into its files; its per-lot occupancy rows."""
        from parking_ml.raster.batch import merge_raster as merge

        return merge(task_settings(), raster, list(parts))

    @task
    def write_occupancy(rows: list) -> int:
        """This pass's rows into predictions/occupancy.parquet (replacing any earlier run's)."""
        from parking_ml.raster.batch import write_occupancy as write

        return write(task_settings(), [r for per_raster in rows for r in per_raster])

    units = plan()
    parts = predict_unit.expand(unit=units)
    merged = merge_raster.partial(parts=parts).expand(raster=rasters(units))
    write_occupancy(merged)


dag = parking_batch_predict()
