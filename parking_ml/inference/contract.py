"""The served package's contract: preprocess.json (PreprocessConfig) and what a prediction returns.

Only numpy at import time: the serving image carries no torch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

STATUS_BY_CLASS = {1: "free", 2: "occupied"}

# why: a nadir image has no up or left, so averaging the square's symmetries cancels one-orientation errors
# (docs/experiments/tta.md)
TTA_VIEWS: dict[str, tuple[tuple[int, bool], ...]] = {
    "none": ((0, False),),
    "flip": ((0, False), (0, True)),
    "dihedral": tuple((k, m) for k in range(4) for m in (False, True)),
}


@dataclass(frozen=True)
class PreprocessConfig:
    """What preprocess.json holds: everything needed to turn an RGB array into model input and back."""

    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    tile_size: int = 256  # the training tile
    overlap: int = 32
    # inference window: images up to this side run in one network pass (a fully convolutional net does not
    # need its training tile size); larger rasters slide windows of this side. At least tile_size.
    window: int = 512
    pad_multiple: int = 32
    class_names: tuple[str, ...] = ("background", "free", "occupied")
    # at the model's gsd; scaled by (gsd / gsd_image)^2 when both are known
    min_area_px: int = 20
    # the model's ground resolution (m/px): the gsd its training tiles had when it saw them
    gsd: float | None = None
    # resample: images of a known other gsd go through the network at `gsd` and their probabilities come
    # back to the image's own pixel grid (bilinear), so a model sees every image at the scale it learnt
    resample: bool = False
    # assumed for images that carry no gsd (a plain PNG without a gsd parameter): the training imagery's median
    default_image_gsd: float | None = None
    # test-time augmentation, one of TTA_VIEWS: "dihedral" runs the network 8 times per window
    tta: str = "none"
    # each counted space grows by up to grow_px pixels (at the model's gsd, scaled like min_area_px) into the
    # background around it where its class has at least grow_prob (free, occupied), never nearer than one
    # background pixel to another space, so counts do not change (see grow_spaces). 0: no growth, what a
    # package that does not say gets; the trainer sets it for models whose loss pulled their edges inwards
    grow_prob: tuple[float, float] = (0.35, 0.3)
    grow_px: float = 0.0
    version: int = 2

    def __post_init__(self) -> None:
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("preprocess config: mean and std need 3 values (R, G, B)")
        if any(s <= 0 for s in self.std):
            raise ValueError("preprocess config: std values must be > 0")
        if self.pad_multiple < 1 or self.tile_size < self.pad_multiple:
            raise ValueError("preprocess config: need 1 <= pad_multiple <= tile_size")
        if self.tile_size % self.pad_multiple:
            raise ValueError(
                f"preprocess config: tile_size {self.tile_size} must be a multiple of pad_multiple {self.pad_multiple}"
            )
        if not 0 <= self.overlap < self.tile_size:
            raise ValueError("preprocess config: overlap must be in [0, tile_size)")
        if self.tta not in TTA_VIEWS:
            raise ValueError(f"preprocess config: tta {self.tta!r} is not one of {', '.join(TTA_VIEWS)}")
        if self.window % self.pad_multiple:
            raise ValueError(
                f"preprocess config: window {self.window} must be a multiple of pad_multiple {self.pad_multiple}"
            )
        if len(self.grow_prob) != 2 or not all(0 < p <= 1 for p in self.grow_prob):
            raise ValueError(
                f"preprocess config: grow_prob {self.grow_prob} needs 2 probabilities in (0, 1] (free, occupied)"
            )
        if self.grow_px < 0:
            raise ValueError(f"preprocess config: grow_px {self.grow_px} must be >= 0 (0: no growth)")

    @property
    def infer_window(self) -> int:
        return max(self.window, self.tile_size)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        # unknown keys are ignored so newer packages still load in older servers
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                continue
            if key in ("mean", "std", "grow_prob"):
                value = tuple(float(v) for v in value)
            elif key == "class_names":
                value = tuple(str(v) for v in value)
            kwargs[key] = value
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> PreprocessConfig:
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_file(cls, path: str | Path) -> PreprocessConfig:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))

    def image_gsd(self, given: float | None) -> float | None:
        """The gsd to assume for an image: its own when known, else the package's default."""
        if given is not None and given > 0:
            return float(given)
        return self.default_image_gsd

    def min_area_for(self, image_gsd: float | None) -> int:
        """Minimum component area in pixels for an image of this gsd (m/px)."""
        image_gsd = self.image_gsd(image_gsd)
        if self.gsd and image_gsd and image_gsd > 0:
            return max(1, round(self.min_area_px * (self.gsd / image_gsd) ** 2))
        return self.min_area_px

    def grow_px_for(self, image_gsd: float | None) -> int:
        """Pixels a space grows by in an image of this gsd (m/px): grow_px at the model's gsd."""
        image_gsd = self.image_gsd(image_gsd)
        if self.gsd and image_gsd and image_gsd > 0:
            return round(self.grow_px * self.gsd / image_gsd)
        return round(self.grow_px)

    def input_scale(self, image_gsd: float | None) -> float:
        """Factor from the image's pixel grid to the network's (1.0: run as it is)."""
        image_gsd = self.image_gsd(image_gsd)
        if not (self.resample and self.gsd and image_gsd):
            return 1.0
        scale = image_gsd / self.gsd
        # within 2 %: resampling would cost more than the scale error it removes
        return 1.0 if abs(scale - 1.0) < 0.02 else scale


@dataclass(frozen=True)
class Space:
    id: int
    status: str
    confidence: float
    area_px: int
    polygon: list[list[float]]

    def to_dict(self) -> dict[str, Any]:
        # by hand: dataclasses.asdict deep-copies every ring, 2.6 ms of a 100-space answer
        # (docs/experiments/request-path.md)
        return {
            "id": self.id,
            "status": self.status,
            "confidence": self.confidence,
            "area_px": self.area_px,
            "polygon": [list(point) for point in self.polygon],
        }


@dataclass
class Prediction:
    mask: np.ndarray
    spaces: list[Space]
    free_count: int
    occupied_count: int
    # None when no space was found: occupancy of nothing is undefined, not 0
    occupancy_rate: float | None
    mean_confidence: float
    free_fraction: float
    timings_ms: dict[str, float] = field(default_factory=dict)
    # H x W float16 probability of "free" (only when predict(keep_free_prob=True)): threshold-free metrics
    free_prob: np.ndarray | None = None
    # the model's embedding of the image (mean over its tiles and views) when the model exports one
    embedding: np.ndarray | None = None
