"""CV validation runs the serving inference code on the torch model: same numbers as the exported ONNX model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from parking_ml.data.augment import NORMALIZE_MEAN, NORMALIZE_STD
from parking_ml.inference import OnnxSegmenter, PreprocessConfig, predict
from parking_ml.model.export import export_onnx
from parking_ml.model.metrics import evaluate
from parking_ml.model.train import TorchSegmenter, ValTile, make_validator
from tests.fakes.scenes import lot


class GreenIsFree(nn.Module):
    """Bright green paint is a free space, red an occupied one (a 3x3 conv keeps it spatial)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(NORMALIZE_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(NORMALIZE_STD).view(1, 3, 1, 1))
        self.blur = nn.Conv2d(3, 3, 3, padding=1, groups=3, bias=False)
        nn.init.constant_(self.blur.weight, 1 / 9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.blur((x * self.std + self.mean) * 255.0)
        r, g = v[:, 0:1], v[:, 1:2]
        return torch.cat([torch.zeros_like(r), (g - r - 60) / 10, (r - g - 60) / 10], dim=1)


def _tile(seed: int, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    rgb, truth, _ = lot(
        size,
        seed=seed,
        stall=(12, 30),
        rows=(10,),
        left=8,
        gap=8,
        right=16,
        base=100,
        spread=10,
        colours=((30, 220, 30), (220, 30, 30)),
        phase=seed,
        ignore_right=4,
    )
    return rgb, truth


@pytest.mark.parametrize("resample", [False, True])
def test_validator_scores_what_the_exported_model_serves(tmp_path, resample):
    config = PreprocessConfig(tile_size=64, overlap=16, min_area_px=30, gsd=0.2, resample=resample)
    tiles = [ValTile(f"t{i}", *_tile(i), gsd=0.1) for i in range(3)]
    model = GreenIsFree()
    metrics = make_validator(tiles, config, torch.device("cpu"))(model)
    assert model.training, "the validator hands the model back in training mode"

    export_onnx(model, tmp_path / "model.onnx", tile_size=64)
    seg = OnnxSegmenter(tmp_path / "model.onnx", config, threads=1)
    served = [predict(seg, t.rgb, image_gsd=t.gsd, keep_free_prob=True) for t in tiles]
    expected = evaluate([p.mask for p in served], [t.truth for t in tiles], free_probs=[p.free_prob for p in served])
    for key in ("iou_free", "iou_occupied", "free_f1", "space_f1", "free_count_mae", "free_ap"):
        assert metrics[key] == pytest.approx(expected[key], abs=1e-6), key
    assert metrics["iou_free"] > 0.8 and metrics["free_count_mae"] == 0


def test_torch_segmenter_runs_batches_of_windows():
    config = PreprocessConfig(tile_size=64, window=64, overlap=16)
    seg = TorchSegmenter(GreenIsFree().eval(), config, torch.device("cpu"))
    rgb, _ = _tile(0, size=150)
    probs = seg.predict_probs(rgb)
    assert probs.shape == (3, 150, 150)
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)
