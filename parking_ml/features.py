"""Per-tile drift features: one function for the training reference and for live API traffic.

Image statistics are on a 0..1 scale (except sharpness, the raw variance of the Laplacian of the 8-bit
grey image, and the pixel sizes), so they compare across tiles of any size.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from parking_ml.inference import Prediction

IMAGE_COLUMNS = [
    "brightness",
    "contrast",
    "mean_r",
    "mean_g",
    "mean_b",
    "std_r",
    "std_g",
    "std_b",
    "saturation",
    "sharpness",
    "edge_density",
    "width",
    "height",
]
MODEL_COLUMNS = ["mean_confidence", "free_fraction", "free_spaces"]
FEATURE_COLUMNS = IMAGE_COLUMNS + MODEL_COLUMNS
# the model's embedding of the tile, one column per number (emb_0, emb_1, ...), when the model exports one
EMBEDDING_PREFIX = "emb_"

# Statistics of very large rasters are taken on a downscaled copy: the same numbers to within noise,
# at a bounded cost on the request path.
_MAX_SIDE = 2048


def tile_features(rgb: np.ndarray, prediction: Prediction | None = None) -> dict[str, float]:
    """Drift features of one uint8 RGB tile (and of the model's answer on it, when given)."""
    import cv2

    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected a uint8 HxWx3 RGB array, got {rgb.dtype} {rgb.shape}")
    height, width = rgb.shape[:2]
    if height == 0 or width == 0:
        raise ValueError("image has zero width or height")
    img = rgb
    side = max(height, width)
    if side > _MAX_SIDE:
        f = _MAX_SIDE / side
        img = cv2.resize(rgb, (max(1, round(width * f)), max(1, round(height * f))), interpolation=cv2.INTER_AREA)
    img = np.ascontiguousarray(img)
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    saturation = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)[..., 1]
    # cv2.meanStdDev: one pass in C, no float copy of the image (this runs on every API request)
    means, stds = (v.ravel() / 255.0 for v in cv2.meanStdDev(img))
    g_mean, g_std = (float(v.ravel()[0]) / 255.0 for v in cv2.meanStdDev(gray))
    _, lap_std = cv2.meanStdDev(cv2.Laplacian(gray, cv2.CV_32F))
    out: dict[str, float] = {
        "brightness": g_mean,
        "contrast": g_std,
        "mean_r": float(means[0]),
        "mean_g": float(means[1]),
        "mean_b": float(means[2]),
        "std_r": float(stds[0]),
        "std_g": float(stds[1]),
        "std_b": float(stds[2]),
        "saturation": float(cv2.mean(saturation)[0] / 255.0),
        "sharpness": float(lap_std.ravel()[0] ** 2),
        "edge_density": float(cv2.countNonZero(cv2.Canny(gray, 100, 200)) / gray.size),
        "width": float(width),
        "height": float(height),
    }
    if prediction is None:
        out.update(mean_confidence=math.nan, free_fraction=math.nan, free_spaces=math.nan)
    else:
        out.update(
            mean_confidence=float(prediction.mean_confidence),
            free_fraction=float(prediction.free_fraction),
            free_spaces=float(prediction.free_count),
        )
        embedding = getattr(prediction, "embedding", None)
        if embedding is not None:
            out.update({f"{EMBEDDING_PREFIX}{i}": float(v) for i, v in enumerate(embedding)})
    return out


def features_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows of tile_features (plus any extra keys, e.g. timestamp, model_version) as a DataFrame:
    FEATURE_COLUMNS first, in their fixed order, then the embedding (emb_0, emb_1, ... in number order), then
    the other extra columns sorted by name."""
    import pandas as pd

    rows = list(rows)
    keys = {k for r in rows for k in r} - set(FEATURE_COLUMNS)
    emb = sorted((k for k in keys if k.startswith(EMBEDDING_PREFIX) and k[4:].isdigit()), key=lambda k: int(k[4:]))
    extra = emb + sorted(keys - set(emb))
    frame = pd.DataFrame.from_records(rows, columns=FEATURE_COLUMNS + extra)
    frame[FEATURE_COLUMNS] = frame[FEATURE_COLUMNS].astype("float64")
    return frame
