"""The ground-resolution estimate (parking_ml.inference.gsd) for ingest, with the shipped demo network on torch:
training images without a georeference or a gsd get one before they are tiled (no exported package needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from parking_ml.inference import PreprocessConfig
from parking_ml.inference.gsd import estimate_gsd

WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "demo-synthetic-fp32.pt"


class ShippedGsdEstimator:
    """Callable RGB -> gsd (m/px) or None. The network is built on the first call: ingest batches whose
    images all carry a gsd never load torch's model."""

    def __init__(self, weights: Path = WEIGHTS) -> None:
        self.weights = Path(weights)
        self._segmenter = None

    def _build(self):
        import torch

        from parking_ml.model.network import build_model
        from parking_ml.model.profiles import PROFILES
        from parking_ml.model.train import TorchSegmenter

        recipe = json.loads(self.weights.with_suffix(".json").read_text(encoding="utf-8"))
        channels = tuple(recipe["decoder_channels"])
        net = build_model("unet", recipe["params"]["encoder"], decoder_channels=channels, encoder_depth=len(channels))
        net.load_state_dict(torch.load(self.weights, map_location="cpu"))
        demo = PROFILES[recipe.get("profile", "demo")]
        config = PreprocessConfig(
            tile_size=demo.tile_size,
            min_area_px=20,
            gsd=demo.model_gsd,
            resample=True,
            grow_px=demo.grow_px,
            **({"grow_prob": demo.grow_prob} if demo.grow_prob is not None else {}),
        )
        return TorchSegmenter(net.eval(), config, torch.device("cpu"))

    def __call__(self, rgb: np.ndarray) -> float | None:
        if self._segmenter is None:
            self._segmenter = self._build()
        return estimate_gsd(self._segmenter, rgb).gsd
