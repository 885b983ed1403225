"""Batch prediction with real parts: the parking_batch_predict DAG on a real Airflow metadata DB (dag.test()),
and `parking-ml predict` against a real MLflow server with no MLFLOW_TRACKING_URI in its environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from affine import Affine

from parking_ml.inference import OnnxSegmenter, PreprocessConfig
from parking_ml.lake import Lake
from parking_ml.raster.occupancy import OCCUPANCY_KEY
from parking_ml.raster.stream import Outputs, predict_raster
from tests.fakes.landing import write_tif
from tests.fakes.packages import write_color_net
from tests.fakes.scenes import lot_image

pytestmark = pytest.mark.integration

VENV_BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
TRANSFORM = Affine(0.1, 0, 500_000.0, 0, -0.1, 4_649_776.22)


def make_package(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    write_color_net(path / "model.onnx")
    (path / "preprocess.json").write_text(PreprocessConfig(min_area_px=20).to_json())
    return path


def lots_geojson() -> dict:
    from rasterio.warp import transform as warp

    def lot(c0, c1, r0, r1):
        xs, ys = zip(*(TRANSFORM @ p for p in ((c0, r0), (c1, r0), (c1, r1), (c0, r1), (c0, r0))), strict=True)
        lon, lat = warp("EPSG:32633", "EPSG:4326", list(xs), list(ys))
        return {"type": "Polygon", "coordinates": [list(map(list, zip(lon, lat, strict=True)))]}

    return {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"lot_id": "north"}, "geometry": lot(0, 420, 0, 200)},
        {"type": "Feature", "properties": {"lot_id": "south"}, "geometry": lot(0, 420, 200, 400)},
    ]}  # fmt: skip


def test_batch_dag_maps_units_merges_and_a_rerun_leaves_occupancy_unchanged(airflow_home, tmp_path, monkeypatch):
    lake_url = f"file://{tmp_path / 'lake'}"
    lake = Lake(lake_url, {})
    package = make_package(tmp_path / "model")
    times = {"morning": "2026:12:06 08:00:00", "noon": "2026:12:06 12:00:00"}
    for i, (name, when) in enumerate(times.items()):
        path = lake.local_path(f"imagery/{name}.tif")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_tif(path, lot_image(400, 420, seed=i), TRANSFORM, tags={"TIFFTAG_DATETIME": when})
    lake.write_text("lots/lots.geojson", json.dumps(lots_geojson()))
    monkeypatch.setenv("PARKING_HOME", str(tmp_path / "var"))
    monkeypatch.setenv("PARKING_LAKE_URL", lake_url)
    monkeypatch.setenv("PARKING_MODEL_DIR", str(package))
    monkeypatch.setenv("PARKING_THREADS", "1")

    from parking_batch_predict import dag as batch_dag

    # 128-px blocks: each 400-row raster is 4 block rows, 2 units of 2
    conf = {"prefix": "imagery/", "core": 128, "block_rows_per_unit": 2}
    run = batch_dag.test(run_conf=conf)
    assert str(run.state) == "success"
    units = [ti for ti in run.get_task_instances() if ti.task_id == "predict_unit"]
    assert len(units) == 4 and all(str(ti.state) == "success" for ti in units)
    occupancy = lake.read_parquet(OCCUPANCY_KEY)
    assert sorted(occupancy["lot_id"]) == ["north", "north", "south", "south"]
    assert set(occupancy["model_version"]) == {"dir:model"}

    # the merged files of each raster equal one process predicting it whole
    seg = OnnxSegmenter.from_dir(package, threads=1)
    out_dir = lake.local_path("predictions")
    (run_dir,) = [p for p in out_dir.iterdir() if p.is_dir()]
    assert not (run_dir / "_parts").exists() or not any((run_dir / "_parts").rglob("*.tif"))
    for name in times:
        single = Outputs.beside(tmp_path / "single", name)
        summary = predict_raster(seg, lake.local_path(f"imagery/{name}.tif"), single, core=128)
        merged = pd.read_parquet(run_dir / f"{name}.spaces.parquet")
        pd.testing.assert_frame_equal(merged, pd.read_parquet(single.spaces_parquet))
        assert json.loads((run_dir / f"{name}.spaces.geojson").read_text()) == json.loads(
            single.spaces_geojson.read_text()
        )
        import rasterio

        with rasterio.open(run_dir / f"{name}.mask.tif") as a, rasterio.open(single.mask) as b:
            assert a.transform == b.transform == TRANSFORM and a.crs == b.crs
            np.testing.assert_array_equal(a.read(1), b.read(1))
        rows = occupancy[occupancy["raster"] == f"{name}.tif"]
        assert rows["free"].sum() == summary.free and rows["occupied"].sum() == summary.occupied

    again = batch_dag.test(run_conf=conf)
    assert str(again.state) == "success"
    pd.testing.assert_frame_equal(lake.read_parquet(OCCUPANCY_KEY), occupancy)


def test_batch_dag_on_an_s3_lake_writes_the_layout_and_a_rerun_leaves_occupancy_unchanged(
    airflow_home, moto_server, tmp_path, monkeypatch
):
    """The same DAG on a real S3 API (moto's server): rasters and lot outlines are objects, units read their rows
    through s3fs, parts and outputs are uploaded, the occupancy table is rewritten in place."""
    import boto3
    import rasterio

    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").create_bucket(Bucket="batch-lake")
    lake_url = "s3://batch-lake/city"
    lake = Lake(lake_url, {"client_kwargs": {"endpoint_url": moto_server}})
    package = make_package(tmp_path / "model")
    times = {"morning": "2026:12:06 08:00:00", "noon": "2026:12:06 12:00:00"}
    for i, (name, when) in enumerate(times.items()):
        local = write_tif(
            tmp_path / f"{name}.tif", lot_image(400, 420, seed=i), TRANSFORM, tags={"TIFFTAG_DATETIME": when}
        )
        lake.write_bytes(f"imagery/2026-12-06/{name}.tif", local.read_bytes())
    lake.write_bytes("imagery/2026-12-06/notes.txt", b"not a raster")  # listed, skipped
    lake.write_text("lots/city.geojson", json.dumps(lots_geojson()))
    monkeypatch.setenv("PARKING_HOME", str(tmp_path / "var"))
    monkeypatch.setenv("PARKING_LAKE_URL", lake_url)
    monkeypatch.setenv("PARKING_S3_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("PARKING_MODEL_DIR", str(package))
    monkeypatch.setenv("PARKING_THREADS", "1")

    from parking_batch_predict import dag as batch_dag

    conf = {"prefix": "imagery/2026-12-06/", "lots": "lots/city.geojson", "core": 128, "block_rows_per_unit": 2}
    run = batch_dag.test(run_conf=conf)
    assert str(run.state) == "success", {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    units = [ti for ti in run.get_task_instances() if ti.task_id == "predict_unit"]
    assert len(units) == 4 and all(str(ti.state) == "success" for ti in units)

    # design.md's layout: predictions/<run id>/<stem>.mask.tif, .spaces.parquet, .spaces.geojson; no parts left
    outputs = [k for k in lake.list("predictions/") if k != OCCUPANCY_KEY]
    run_dirs = {k.split("/")[1] for k in outputs}
    assert len(run_dirs) == 1
    (run_dir,) = run_dirs
    suffixes = (".mask.tif", ".spaces.parquet", ".spaces.geojson", ".spaces.image_crs.geojson")
    assert sorted(outputs) == sorted(f"predictions/{run_dir}/{n}{s}" for n in times for s in suffixes)
    occupancy = lake.read_parquet(OCCUPANCY_KEY)
    assert len(occupancy) == 4 and not occupancy.duplicated(["lot_id", "raster", "image_time"]).any()
    assert sorted(occupancy["lot_id"]) == ["north", "north", "south", "south"]
    assert set(occupancy["model_version"]) == {"dir:model"}

    seg = OnnxSegmenter.from_dir(package, threads=1)
    for name in times:
        single = Outputs.beside(tmp_path / "single", name)
        summary = predict_raster(seg, tmp_path / f"{name}.tif", single, core=128)
        got = tmp_path / "got" / name
        got.mkdir(parents=True)
        for suffix in suffixes[:3]:
            (got / f"x{suffix}").write_bytes(lake.read_bytes(f"predictions/{run_dir}/{name}{suffix}"))
        with rasterio.open(got / "x.mask.tif") as a, rasterio.open(single.mask) as b:
            assert a.transform == TRANSFORM and a.crs == b.crs == rasterio.crs.CRS.from_epsg(32633)
            assert (a.width, a.height) == (420, 400)
            np.testing.assert_array_equal(a.read(1), b.read(1))
        pd.testing.assert_frame_equal(pd.read_parquet(got / "x.spaces.parquet"), pd.read_parquet(single.spaces_parquet))
        assert json.loads((got / "x.spaces.geojson").read_text()) == json.loads(single.spaces_geojson.read_text())
        rows = occupancy[occupancy["raster"] == f"{name}.tif"]
        assert sorted(rows["lot_id"]) == ["north", "south"]
        assert rows["free"].sum() == summary.free and rows["occupied"].sum() == summary.occupied
        assert summary.free + summary.occupied > 0

    table = lake.read_bytes(OCCUPANCY_KEY)
    again = batch_dag.test(run_conf=conf)
    assert str(again.state) == "success"
    pd.testing.assert_frame_equal(lake.read_parquet(OCCUPANCY_KEY), occupancy)
    assert lake.read_bytes(OCCUPANCY_KEY) == table
    assert not any("/_parts/" in k for k in lake.list("predictions/"))


def test_predict_finds_the_champion_without_mlflow_tracking_uri_and_writes_no_mlflow_db(mlflow_server, tmp_path):
    from parking_ml.config import Settings
    from parking_ml.model.registry import log_and_register

    settings = Settings(home=tmp_path / "var", mlflow_tracking_uri=mlflow_server, model_name="scale-spaces")
    version = log_and_register(make_package(tmp_path / "model"), settings, tags={}, alias="champion")
    tif = write_tif(tmp_path / "lot.tif", lot_image(200, 300), TRANSFORM)
    lots = tmp_path / "lots.geojson"
    lots.write_text(json.dumps(lots_geojson()))
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    port = mlflow_server.rsplit(":", 1)[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PARKING_"))}
    env.update(
        PYTHONPATH=str(REPO),
        PARKING_HOME=str(tmp_path / "cli-var"),
        PARKING_MLFLOW_PORT=port,
        PARKING_MODEL_NAME="scale-spaces",
        PARKING_THREADS="1",
    )
    proc = subprocess.run(
        [str(VENV_BIN / "parking-ml"), "predict", str(tif), "--out", str(tmp_path / "out"), "--lots", str(lots)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "free spaces" in proc.stdout and (tmp_path / "out" / "lot.spaces.parquet").is_file()
    assert list(cwd.iterdir()) == []  # no mlflow.db (nor anything else) in the working folder
    occupancy = Lake(f"file://{tmp_path / 'cli-var' / 'lake'}", {}).read_parquet(OCCUPANCY_KEY)
    assert set(occupancy["model_version"]) == {version.version}  # the alias, pinned to its version
    assert set(occupancy["lot_id"]) == {"north"}
