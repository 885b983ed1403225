"""The hard set scores a real model package: the shipped pretrained network exported and run through the
serving inference code on one failure mode's tiles."""

from __future__ import annotations

import json

import pytest

from parking_ml.config import Settings
from parking_ml.model.hardset import format_table, score_package, shipped_package

pytestmark = pytest.mark.integration


def test_the_shipped_network_scores_on_a_hard_mode(tmp_path):
    pkg = shipped_package(Settings(home=tmp_path / "home"), tmp_path / "pkg")
    config = json.loads((pkg / "preprocess.json").read_text())
    assert config["gsd"] == 0.2 and config["resample"] and (pkg / "model.onnx").is_file()
    scores = score_package(pkg, ("roadway_cars",), threads=2, sites=1)
    m = scores["roadway_cars"]
    assert m["n_tiles"] == 4
    assert 0.0 <= m["iou_free"] <= 1.0 and 0.0 <= m["stall_accuracy"] <= 1.0
    # a trained network finds most free stalls of a plain lot beside a road: far above chance
    assert m["stall_accuracy"] > 0.6
    table = format_table({"shipped": scores})
    assert "| roadway_cars | shipped | 4 |" in table
