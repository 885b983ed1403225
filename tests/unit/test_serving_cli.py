"""`parking-ml predict`: the inference core without a server, on a GeoTIFF larger than one tile."""

from __future__ import annotations

import json

import cv2
import numpy as np
from typer.testing import CliRunner

from parking_ml.cli import app
from parking_ml.inference import OnnxSegmenter, PreprocessConfig, predict
from tests.fakes.packages import write_color_net
from tests.fakes.scenes import lot_image


def test_predict_command_writes_geojson_and_masks(tmp_path, monkeypatch):
    import rasterio
    from affine import Affine

    monkeypatch.setenv("PARKING_HOME", str(tmp_path / "var"))
    model = tmp_path / "model"
    model.mkdir()
    write_color_net(model / "model.onnx")
    (model / "preprocess.json").write_text(PreprocessConfig(tile_size=128, window=128, overlap=32).to_json())
    img = lot_image(300, 420)
    tif = tmp_path / "site.tif"
    with rasterio.open(
        tif, "w", driver="GTiff", height=300, width=420, count=3, dtype="uint8", crs="EPSG:32633",
        transform=Affine(0.1, 0, 500000.0, 0, -0.1, 4649776.0),
    ) as ds:  # fmt: skip
        ds.write(img.transpose(2, 0, 1))
    expected = predict(OnnxSegmenter.from_dir(model, threads=1), img)

    runner = CliRunner()
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "predict", str(tif), "--model-dir", str(model), "--geojson", str(out / "spaces.geojson"),
            "--mask", str(out / "mask.tif"),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "free spaces" in result.output and str(expected.free_count) in result.output
    fc = json.loads((out / "spaces.geojson").read_text())
    assert len(fc["features"]) == expected.free_count + expected.occupied_count
    lon, lat = fc["features"][0]["geometry"]["coordinates"][0][0]
    assert 14.9 < lon < 15.1 and 41.9 < lat < 42.1
    with rasterio.open(out / "mask.tif") as ds:
        assert ds.crs.to_string() == "EPSG:32633"
        np.testing.assert_array_equal(ds.read(1), expected.mask)

    result = runner.invoke(app, ["predict", str(tif), "--model-dir", str(model), "--mask", str(out / "m.png")])
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(cv2.imread(str(out / "m.png"), cv2.IMREAD_UNCHANGED), expected.mask)

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"GIF89a not an image")
    result = runner.invoke(app, ["predict", str(bad), "--model-dir", str(model)])
    assert result.exit_code == 2 and "unsupported_type" in result.output
    result = runner.invoke(app, ["predict", str(tif), "--model-dir", str(tmp_path)])
    assert result.exit_code == 2 and "model.onnx" in result.output
