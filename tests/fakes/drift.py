"""Drift test data: feature rows of generated tiles of one style, and live rows as the API stores them."""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import cache

import numpy as np
import pandas as pd

from parking_ml.features import features_frame, tile_features
from parking_ml.lake import Lake
from parking_ml.synth import SiteRenderer
from serving.drift import partition_key

PASSES = 4  # passes per site, as in a training set: rows of one site are alike, like real traffic


def style_tiles(style: str, n: int, seed: int, size: int = 256) -> list[np.ndarray]:
    """n RGB tiles of the generator's style: n / PASSES sites, PASSES passes each (256 px: the training tile size,
    at which the verdict was calibrated)."""
    out: list[np.ndarray] = []
    site = 0
    while len(out) < n:
        renderer = SiteRenderer(seed, site, size, 0.1, f"site-{site:04d}", hard="none")
        out.extend(renderer.render(p, style).image for p in range(PASSES))
        site += 1
    return out[:n]


@cache
def style_rows(style: str, n: int, seed: int) -> pd.DataFrame:
    """Image feature rows (no model columns) of n tiles of the style; cached, callers must not modify."""
    return features_frame(tile_features(t) for t in style_tiles(style, n, seed))


def write_live(lake: Lake, rows: pd.DataFrame, version: str, start: datetime, name: str = "parking-spaces") -> None:
    """Store rows as the API's drift buffer does: one parquet per day, a second apart from start."""
    frame = rows.copy()
    stamps = [start + timedelta(seconds=i) for i in range(len(frame))]
    frame["timestamp"] = [s.isoformat() for s in stamps]
    frame["request_id"] = [f"req-{version}-{i}" for i in range(len(frame))]
    frame["model_name"] = name
    frame["model_version"] = version
    days = pd.Series([s.strftime("%Y-%m-%d") for s in stamps])
    for day in days.unique():
        lake.write_parquet(partition_key(day), frame[(days == day).to_numpy()])
