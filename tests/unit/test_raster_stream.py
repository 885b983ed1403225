"""Large-raster prediction: blocks stitched so a space cut by a block edge is one space with its whole polygon,
outputs georeferenced like the input, memory that does not grow with the raster, per-lot occupancy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from affine import Affine

from parking_ml.inference import OnnxSegmenter, PreprocessConfig, predict
from parking_ml.raster.blocks import plan_blocks
from parking_ml.raster.occupancy import Lots, lot_rows, merge_occupancy, read_lots
from parking_ml.raster.stream import NODATA_CLASS, Outputs, predict_raster, raster_header
from tests.fakes.landing import write_tif
from tests.fakes.packages import write_color_net
from tests.fakes.scenes import lot_image

REPO = Path(__file__).resolve().parents[2]
# UTM 33N: easting 500,000 is the zone's central meridian (15 E) and northing 4,649,776.22 is 42 N on it
CM_EASTING, NORTHING_42N = 500_000.0, 4_649_776.22
GREEN, RED = (20, 220, 30), (220, 30, 20)


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory) -> OnnxSegmenter:
    model = tmp_path_factory.mktemp("model")
    write_color_net(model / "model.onnx")
    (model / "preprocess.json").write_text(PreprocessConfig(min_area_px=20).to_json())
    return OnnxSegmenter.from_dir(model, threads=1)


def spaces_of(outputs: Outputs) -> pd.DataFrame:
    return pd.read_parquet(outputs.spaces_parquet)


def test_a_space_across_a_block_edge_is_counted_once_with_its_whole_polygon(segmenter, tmp_path):
    rgb = np.full((512, 512, 3), 115, dtype=np.uint8)
    rgb[240:272, 100:116] = GREEN  # rows 240-271: straddles the block edge at row 256
    rgb[100:132, 300:316] = RED  # wholly inside the first block row
    rgb[300:332, 250:266] = GREEN  # straddles the column edge at 256, below the row edge
    tif = write_tif(tmp_path / "r.tif", rgb, Affine(0.1, 0, CM_EASTING, 0, -0.1, NORTHING_42N))
    whole = predict(segmenter, rgb)
    assert whole.free_count == 2 and whole.occupied_count == 1

    outputs = Outputs.beside(tmp_path / "out", "r")
    summary = predict_raster(segmenter, tif, outputs, core=256)
    assert summary.blocks == 4
    assert (summary.free, summary.occupied) == (2, 1)
    spaces = spaces_of(outputs)
    assert sorted(spaces["id"]) == [1, 2, 3] and sorted(spaces["status"]) == ["free", "free", "occupied"]
    # each polygon is the one the whole image gives: not two halves, not clipped at the block edge
    got = sorted((tuple(np.round(shapely.get_coordinates(g)[:4].min(0), 1)), a) for g, a in zip(
        shapely.from_wkb(spaces["geometry"]), spaces["area_px"], strict=True))  # fmt: skip
    t = Affine(0.1, 0, CM_EASTING, 0, -0.1, NORTHING_42N)
    want = sorted(
        (tuple(np.round(np.array([t @ tuple(p) for p in s.polygon[:4]]).min(0), 1)), s.area_px) for s in whole.spaces
    )
    assert got == want
    straddling = spaces[(spaces["row"] > 250) & (spaces["row"] < 262)]
    (ring,) = [shapely.get_coordinates(g) for g in shapely.from_wkb(straddling["geometry"])]
    rows_px = (ring[:, 1] - NORTHING_42N) / -0.1
    assert rows_px.min() < 256 < rows_px.max()  # one polygon reaching across the block edge
    assert straddling["area_px"].iloc[0] == next(s.area_px for s in whole.spaces if 240 < s.polygon[0][1] < 280)
    with rasterio.open(outputs.mask) as ds:
        np.testing.assert_array_equal(ds.read(1), whole.mask)


def test_output_geotiff_keeps_the_inputs_transform_and_crs_and_marks_nodata(segmenter, tmp_path):
    transform = Affine(0.15, 0, 412_345.5, 0, -0.15, 5_600_010.25)
    rgb = lot_image(300, 420)
    tif = write_tif(tmp_path / "geo.tif", rgb, transform, crs="EPSG:25832", nodata_box=(0, 300, 0, 60))
    outputs = Outputs.beside(tmp_path / "out", "geo")
    predict_raster(segmenter, tif, outputs, core=128)
    with rasterio.open(tif) as src, rasterio.open(outputs.mask) as out:
        assert out.transform == src.transform and out.crs == src.crs
        assert (out.width, out.height) == (src.width, src.height)
        assert out.profile["tiled"] and out.profile["compress"] == "deflate"
        mask = out.read(1)
    assert (mask[:, :60] == NODATA_CLASS).all() and (mask[:, 60:] != NODATA_CLASS).all()
    assert (spaces_of(outputs)["col"] > 60).all()
    # a work unit's rows: its part's transform starts at its first row
    part = Outputs(tmp_path / "part.mask.tif", tmp_path / "part.parquet", None)
    predict_raster(segmenter, tif, part, rows=range(1, 3), core=128)
    with rasterio.open(part.mask) as ds:
        assert ds.height == 300 - 128 and ds.transform == transform * Affine.translation(0, 128)
        np.testing.assert_array_equal(ds.read(1), mask[128:])


def test_geojson_of_a_georeferenced_raster_lands_on_the_map(segmenter, tmp_path):
    rgb = np.full((256, 256, 3), 115, dtype=np.uint8)
    rgb[100:124, 120:134] = GREEN  # centre at pixel edge coordinates (127, 112)
    # the stall's centre sits on the central meridian, at 42 N
    transform = Affine(0.1, 0, CM_EASTING - 12.7, 0, -0.1, NORTHING_42N + 11.2)
    tif = write_tif(tmp_path / "m.tif", rgb, transform)
    outputs = Outputs.beside(tmp_path / "out", "m")
    predict_raster(segmenter, tif, outputs)
    wgs84 = json.loads(outputs.spaces_geojson.read_text())
    utm = json.loads(outputs.spaces_geojson_image_crs.read_text())
    assert "crs" not in wgs84 and utm["crs"]["properties"]["name"] == "EPSG:32633"
    (feature,) = wgs84["features"]
    lon, lat = np.array(feature["geometry"]["coordinates"][0][:4]).mean(0)
    assert lon == pytest.approx(15.0, abs=1e-7) and lat == pytest.approx(42.0, abs=1e-7)
    x, y = np.array(utm["features"][0]["geometry"]["coordinates"][0][:4]).mean(0)
    assert x == pytest.approx(CM_EASTING, abs=1e-6) and y == pytest.approx(NORTHING_42N, abs=1e-6)
    row = spaces_of(outputs).iloc[0]
    assert (row["lon"], row["lat"]) == pytest.approx((15.0, 42.0), abs=1e-7)
    import pyarrow.parquet as pq

    meta = json.loads(pq.read_schema(outputs.spaces_parquet).metadata[b"geo"])
    assert meta["primary_column"] == "geometry" and meta["columns"]["geometry"]["crs"]["id"]["code"] == 32633


def test_block_layout_fills_the_networks_windows_and_stays_under_its_pixel_budget():
    config = PreprocessConfig(window=512, overlap=32)
    layout = plan_blocks(30_000, 30_000, config, image_gsd=None)
    assert layout.core % 256 == 0 and (layout.core + 2 * layout.halo) ** 2 <= 7_000_000
    assert layout.n_rows * layout.core >= 30_000
    small = plan_blocks(300, 420, config, image_gsd=None)
    assert small.n_rows == small.n_cols == 1


MEMORY_CHILD = textwrap.dedent(
    """
    import resource, sys
    import numpy as np, rasterio
    from parking_ml.inference import OnnxSegmenter
    from parking_ml.raster.stream import Outputs, predict_raster
    from pathlib import Path
    out = Path(sys.argv[3])
    predict_raster(OnnxSegmenter.from_dir(sys.argv[1], threads=1), sys.argv[2],
                   Outputs.beside(out, "r"), core=256)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """
)


def test_peak_memory_does_not_grow_with_the_raster(segmenter, tmp_path):
    peaks = {}
    for side in (1024, 2048):
        tif = write_tif(tmp_path / f"{side}.tif", lot_image(side, side, seed=side), Affine(0.1, 0, 5e5, 0, -0.1, 4.6e6))
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.run(
            [sys.executable, "-c", MEMORY_CHILD, str(segmenter.model_path.parent), str(tif), str(tmp_path / str(side))],
            capture_output=True, text=True, env=env, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        peaks[side] = int(proc.stdout.split()[-1])
    # 4x the pixels; the whole-image path holds 4x the probabilities (~+250 MB at 2048 px)
    assert peaks[2048] < 1.3 * peaks[1024], peaks


def test_lot_rows_count_spaces_inside_lots_given_in_wgs84(segmenter, tmp_path):
    from rasterio.warp import transform as warp

    transform = Affine(0.1, 0, CM_EASTING, 0, -0.1, NORTHING_42N)
    rgb = lot_image(300, 420)
    tif = write_tif(tmp_path / "lot.tif", rgb, transform, tags={"TIFFTAG_DATETIME": "2026:12:06 09:30:00"})
    outputs = Outputs.beside(tmp_path / "out", "lot")
    summary = predict_raster(segmenter, tif, outputs, core=128)
    info = raster_header(tif)
    assert info.image_time == datetime(2026, 12, 6, 9, 30, tzinfo=UTC)

    def lot(c0, c1, r0, r1):
        xs, ys = zip(*(transform @ p for p in ((c0, r0), (c1, r0), (c1, r1), (c0, r1), (c0, r0))), strict=True)
        lon, lat = warp("EPSG:32633", "EPSG:4326", list(xs), list(ys))
        return {"type": "Polygon", "coordinates": [list(map(list, zip(lon, lat, strict=True)))]}

    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"lot_id": "west"}, "geometry": lot(0, 210, 0, 300)},
        {"type": "Feature", "properties": {"lot_id": "east"}, "geometry": lot(210, 420, 0, 300)},
        {"type": "Feature", "properties": {"lot_id": "far"}, "geometry": lot(5000, 5100, 0, 300)},
    ]}  # fmt: skip
    lots = read_lots(json.dumps(fc).encode(), "lots.geojson")
    rows = lot_rows(lots, spaces_of(outputs), info, info.image_time, "7")
    assert list(rows["lot_id"]) == ["west", "east"]  # "far" is not in this image: no row
    assert rows["free"].sum() == summary.free and rows["occupied"].sum() == summary.occupied
    assert (rows["capacity_seen"] == rows["free"] + rows["occupied"]).all()
    assert rows["occupancy_rate"].tolist() == pytest.approx(
        (rows["occupied"] / rows["capacity_seen"]).round(4).tolist()
    )
    with pytest.raises(ValueError, match="feature 0 has no lot id"):
        read_lots(b'{"type": "FeatureCollection", "features": [{"geometry": {"type": "Polygon"}}]}', "x.geojson")


def test_a_pass_written_again_replaces_its_rows():
    def frame(raster, hour, free):
        return pd.DataFrame({
            "lot_id": ["a", "b"], "image_time": [datetime(2026, 12, 6, hour, tzinfo=UTC)] * 2, "raster": raster,
            "model_version": "3", "free": free, "occupied": [1, 1], "capacity_seen": [f + 1 for f in free],
            "occupancy_rate": [1 / (f + 1) for f in free],
        })  # fmt: skip

    first = merge_occupancy(None, pd.concat([frame("r1", 9, [1, 2]), frame("r1", 12, [3, 4])]))
    again = merge_occupancy(first, frame("r1", 12, [5, 6]))
    assert len(again) == 4
    assert again[again["image_time"].dt.hour == 12]["free"].tolist() == [5, 6]
    assert again[again["image_time"].dt.hour == 9]["free"].tolist() == [1, 2]
    pd.testing.assert_frame_equal(merge_occupancy(again, frame("r1", 12, [5, 6])), again)


def test_lots_in_pixels_for_a_raster_without_georeference():
    lots = Lots(["p"], [{"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]]}], None)
    from parking_ml.raster.source import RasterInfo

    info = RasterInfo("x.png", 20, 20, None, None, None, None)
    spaces = pd.DataFrame({"x": [5.0, 15.0], "y": [5.0, 5.0], "status": ["free", "occupied"]})
    rows = lot_rows(lots, spaces, info, datetime(2026, 1, 1, tzinfo=UTC), "dir:m")
    assert rows[["free", "occupied", "capacity_seen"]].iloc[0].tolist() == [1, 0, 1]


def test_predict_command_takes_a_folder_or_a_glob_and_writes_occupancy_to_the_lake(segmenter, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from parking_ml.cli import app
    from parking_ml.lake import Lake
    from parking_ml.raster.occupancy import OCCUPANCY_KEY

    monkeypatch.setenv("PARKING_HOME", str(tmp_path / "var"))
    transform = Affine(0.1, 0, CM_EASTING, 0, -0.1, NORTHING_42N)
    folder = tmp_path / "imagery"
    folder.mkdir()
    for i, when in enumerate(("2026:12:06 08:00:00", "2026:12:06 12:00:00")):
        write_tif(folder / f"pass{i}.tif", lot_image(200, 300, seed=i), transform, tags={"TIFFTAG_DATETIME": when})
    (folder / "notes.txt").write_text("not a raster")
    lots = tmp_path / "lots.geojson"
    ring = [list(transform @ p) for p in ((0, 0), (300, 0), (300, 200), (0, 200), (0, 0))]
    lots.write_text(json.dumps({
        "type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "EPSG:32633"}},
        "features": [
            {"type": "Feature", "properties": {"lot_id": "all"}, "geometry": {"type": "Polygon", "coordinates": [ring]}}
        ],
    }))  # fmt: skip
    model = str(segmenter.model_path.parent)
    runner = CliRunner()
    out = tmp_path / "out"
    result = runner.invoke(app, ["predict", str(folder), "--model-dir", model, "--out", str(out), "--lots", str(lots)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.glob("*.spaces.parquet")) == ["pass0.spaces.parquet", "pass1.spaces.parquet"]
    occupancy = Lake(f"file://{tmp_path / 'var' / 'lake'}", {}).read_parquet(OCCUPANCY_KEY)
    assert occupancy["raster"].tolist() == ["pass0.tif", "pass1.tif"] and set(occupancy["lot_id"]) == {"all"}
    for row in occupancy.itertuples():
        spaces = pd.read_parquet(out / f"{Path(row.raster).stem}.spaces.parquet")
        assert row.capacity_seen == len(spaces) and row.free == int((spaces["status"] == "free").sum())

    # the same passes again, named by a glob: their rows are replaced, not added
    result = runner.invoke(app, ["predict", str(folder / "pass*.tif"), "--model-dir", model, "--lots", str(lots)])
    assert result.exit_code == 0, result.output
    pd.testing.assert_frame_equal(
        Lake(f"file://{tmp_path / 'var' / 'lake'}", {}).read_parquet(OCCUPANCY_KEY), occupancy
    )
    result = runner.invoke(app, ["predict", str(tmp_path / "nothing*.tif"), "--model-dir", model])
    assert result.exit_code == 2 and "no file matches it as a glob" in result.output
    result = runner.invoke(
        app, ["predict", str(folder), "--model-dir", model, "--geojson", str(tmp_path / "x.geojson")]
    )
    assert result.exit_code != 0 and "take one image" in result.output
