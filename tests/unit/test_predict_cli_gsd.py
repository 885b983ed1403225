"""`parking-ml predict` says the gsd it used and where it came from, in its table and its GeoJSON."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from parking_ml.cli import app
from parking_ml.data.images import encode_png
from parking_ml.inference import OnnxSegmenter, PreprocessConfig, predict
from tests.fakes.packages import write_color_net
from tests.fakes.scenes import lot


def test_predict_reports_estimated_and_requested_gsd(tmp_path, monkeypatch):
    monkeypatch.setenv("PARKING_HOME", str(tmp_path / "var"))
    model = tmp_path / "model"
    model.mkdir()
    write_color_net(model / "model.onnx")
    config = PreprocessConfig(min_area_px=20, gsd=0.2, resample=True, default_image_gsd=0.15)
    (model / "preprocess.json").write_text(config.to_json())
    # stalls of 18 x 37 px: 1.8 x 3.7 m at 0.1 m/px, the colour net's spaces of a stall at the package's labels
    rgb, _, _ = lot(300, 400, seed=3, stall=(18, 37), rows=(20, 120, 220), gap=6)
    png = tmp_path / "lot.png"
    png.write_bytes(encode_png(rgb))
    runner = CliRunner()

    out = tmp_path / "est.geojson"
    result = runner.invoke(app, ["predict", str(png), "--model-dir", str(model), "--geojson", str(out)])
    assert result.exit_code == 0, result.output
    fc = json.loads(out.read_text())
    assert fc["gsd_source"] == "estimated" and abs(fc["gsd"] / 0.1 - 1) <= 0.10
    assert fc["quality"]["estimated_gsd"] == fc["gsd"] and "estimated" in result.output
    expected = predict(OnnxSegmenter.from_dir(model, threads=1), rgb, image_gsd=fc["gsd"])
    assert len(fc["features"]) == expected.free_count + expected.occupied_count
    assert fc["quality"]["no_structure_share"] == round(float((expected.mask == 0).mean()), 4)

    out = tmp_path / "req.geojson"
    args = ["predict", str(png), "--model-dir", str(model), "--gsd", "0.12", "--geojson", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    fc = json.loads(out.read_text())
    assert (fc["gsd"], fc["gsd_source"], fc["quality"]["estimated_gsd"]) == (0.12, "request", None)

    monkeypatch.setenv("PARKING_GSD_ESTIMATE", "false")
    out = tmp_path / "off.geojson"
    result = runner.invoke(app, ["predict", str(png), "--model-dir", str(model), "--geojson", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["gsd_source"] == "default"
