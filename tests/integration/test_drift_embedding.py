"""The model's embedding as a drift signal: exported as a second ONNX output, carried by the final fit's
reference rows and by the API's live rows, scored by Evidently's embedding drift in the report."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import torch

from monitoring.run import run_drift
from monitoring.store import load_live_rows
from parking_ml.config import Settings
from parking_ml.data.images import encode_png
from parking_ml.inference import OnnxSegmenter, PreprocessConfig, predict
from parking_ml.lake import Lake
from parking_ml.model.evaluation import reference_features
from parking_ml.model.export import EMBEDDING_DIMS
from parking_ml.model.network import build_model
from parking_ml.model.package import REFERENCE_FILE, build_package
from serving.app import create_app
from tests.fakes.drift import style_tiles
from tests.fakes.servers import running, wait_ready

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """A small Unet exported with the embedding, its reference built as the final fit builds it."""
    torch.manual_seed(0)
    net = build_model("unet", "resnet18", decoder_channels=(16, 16, 16, 8, 8))
    pkg = build_package(net, PreprocessConfig(), tmp_path_factory.mktemp("emb") / "pkg", tile_size=64).dir
    seg = OnnxSegmenter.from_dir(pkg, threads=2)
    # the final fit's own function (parking_ml.model.tune): features of tiles predicted by the package
    items = [{"rgb": t, "prediction": predict(seg, t)} for t in style_tiles("default", 200, seed=1)]
    reference_features(items).to_parquet(pkg / REFERENCE_FILE)
    return pkg


def test_export_has_logits_and_embedding_and_old_graphs_stay_logits_only(package, tmp_path):
    session = ort.InferenceSession(str(package / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits", "embedding"]
    logits, emb = session.run(None, {"image": np.zeros((2, 3, 96, 64), np.float32)})
    assert logits.shape == (2, 3, 96, 64) and emb.shape == (2, EMBEDDING_DIMS)
    plain = build_package(build_model(decoder_channels=(16, 16, 16, 8, 8)), PreprocessConfig(), tmp_path / "p",
                          tile_size=64, embedding=False)  # fmt: skip
    seg = OnnxSegmenter.from_dir(plain.dir, threads=1)
    assert seg.embedding_name is None and predict(seg, style_tiles("default", 1, seed=5)[0]).embedding is None
    reference = pd.read_parquet(package / REFERENCE_FILE)
    emb_cols = [f"emb_{i}" for i in range(EMBEDDING_DIMS)]
    assert set(emb_cols) <= set(reference.columns) and reference[emb_cols].notna().all().all()


def test_live_rows_carry_the_embedding_and_the_report_scores_it(package, tmp_path):
    settings = Settings(home=tmp_path / "var", model_dir=package, drift_flush_interval_s=0.5)
    windows = {}
    with running(create_app(settings)) as url:
        wait_ready(url)
        with httpx.Client(base_url=url, timeout=120) as client:
            for style in ("default", "dusk"):
                start = datetime.now(UTC)
                for tile in style_tiles(style, 100, seed=2):
                    assert client.post("/v1/predict", files={"file": ("t.png", encode_png(tile))}).status_code == 200
                windows[style] = (start, datetime.now(UTC))
    rows = load_live_rows(Lake.from_settings(settings), windows["default"][0], windows["dusk"][1])
    assert len(rows) == 200 and rows[[f"emb_{i}" for i in range(EMBEDDING_DIMS)]].notna().all().all()
    normal = run_drift(settings, since=windows["default"][0], until=windows["default"][1])
    shifted = run_drift(settings, since=windows["dusk"][0], until=windows["dusk"][1])
    assert normal["features"]["embedding"]["method"] == "model (ROC AUC)"
    assert not normal["features"]["embedding"]["drifted"], normal["features"]["embedding"]
    assert shifted["features"]["embedding"]["drifted"], shifted["features"]["embedding"]
    assert (normal["verdict"], shifted["verdict"]) == ("ok", "drift")
