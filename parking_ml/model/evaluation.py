"""Holdout evaluation through the serving code path, drift reference features, and report figures.

`evaluate_package` runs parking_ml.inference (OnnxSegmenter + postprocess: what the API runs) over local
processed tiles and scores the result with the one `metrics.evaluate`, so the numbers the promotion gate
compares are the numbers users get.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from parking_ml.model.metrics import CLASS_NAMES, evaluate

logger = logging.getLogger(__name__)

# what turns a package and tiles into holdout metrics: these modules' source and these distributions
SCORER_MODULES = (
    "parking_ml.inference",
    "parking_ml.model.metrics",
    "parking_ml.model.evaluation",
    "parking_ml.data.dataset",
)
SCORER_DISTRIBUTIONS = ("onnxruntime", "opencv-python-headless", "numpy")
HOLDOUT_STAMP_KEY = "holdout_scored"


def scorer_fingerprint() -> str:
    """Short hash of the code that scores a holdout: a stored score is only as good as the code that made it."""
    digest = hashlib.sha256()
    for name in SCORER_MODULES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise RuntimeError(f"cannot locate the source of {name}")
        digest.update(name.encode() + b"\0" + Path(spec.origin).read_bytes())
    for dist in SCORER_DISTRIBUTIONS:
        try:
            found = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found = "absent"
        digest.update(f"{dist}=={found}\0".encode())
    return digest.hexdigest()[:16]


def package_digest(package_dir: Path) -> str:
    """sha256 of what a package's predictions depend on: the network and its preprocess.json."""
    from parking_ml.model.package import MODEL_FILE, PREPROCESS_FILE

    digest = hashlib.sha256()
    for name in (MODEL_FILE, PREPROCESS_FILE):
        with open(Path(package_dir) / name, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def holdout_stamp(package_dir: Path, dataset_version: str) -> dict[str, str]:
    """Which package, holdout and scoring code a holdout score belongs to; stored beside the score in eval.json
    so that the promotion gate can take it instead of scoring the same package on the same tiles again."""
    return {
        "dataset_version": dataset_version,
        "package_sha256": package_digest(package_dir),
        "scorer": scorer_fingerprint(),
    }


def load_stalls(root: Path, tile_id: str) -> Any:
    path = root / "stalls" / f"{tile_id}.geojson"
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def predict_tiles(
    package_dir: Path,
    root: Path,
    manifest: pd.DataFrame,
    threads: int = 2,
    progress: bool = True,
    keep_free_prob: bool = True,
) -> list[dict]:
    """Run the packaged model (serving code path) over the manifest's tiles.

    Returns one dict per tile: tile_id, rgb, truth, prediction (inference.Prediction, with its free-class
    probability map when ``keep_free_prob``: score_predictions then adds free_ap), stalls.
    """
    from tqdm.auto import tqdm

    from parking_ml.data.dataset import read_tile
    from parking_ml.inference import OnnxSegmenter, predict

    segmenter = OnnxSegmenter.from_dir(package_dir, threads=threads)
    out = []
    gsd_col = "gsd" in manifest.columns
    for row in tqdm(manifest.itertuples(index=False), total=len(manifest), desc="predict", disable=not progress):
        rgb, truth = read_tile(root, str(row.tile_id))
        gsd = float(row.gsd) if gsd_col and pd.notna(row.gsd) else None
        pred = predict(segmenter, rgb, image_gsd=gsd, keep_free_prob=keep_free_prob)
        out.append(
            {
                "tile_id": str(row.tile_id),
                "rgb": rgb,
                "truth": truth,
                "prediction": pred,
                "stalls": load_stalls(root, str(row.tile_id)),
            }
        )
    return out


def score_predictions(items: Sequence[dict]) -> dict:
    stalls = [it["stalls"] for it in items]
    has_stalls = any(s is not None for s in stalls)
    free_probs = [it["prediction"].free_prob for it in items]
    return evaluate(
        [it["prediction"].mask for it in items],
        [it["truth"] for it in items],
        stalls=[s if s is not None else [] for s in stalls] if has_stalls else None,
        free_probs=free_probs if all(p is not None for p in free_probs) else None,
    )


def evaluate_package(
    package_dir: Path, root: Path, manifest: pd.DataFrame, threads: int = 2, progress: bool = True
) -> tuple[dict, list[dict]]:
    """(metrics, per-tile items) of a model package on the given tiles, through parking_ml.inference."""
    if manifest.empty:
        raise ValueError(f"no tiles to evaluate under {root}; the holdout split is empty")
    items = predict_tiles(package_dir, root, manifest, threads=threads, progress=progress)
    return score_predictions(items), items


def reference_features(items: Sequence[dict]) -> pd.DataFrame:
    """Drift reference: parking_ml.features over the tiles with the model's own predictions."""
    from parking_ml.features import features_frame, tile_features

    return features_frame(tile_features(it["rgb"], it["prediction"]) for it in items)


# --- figures (PNG bytes, written by the caller) ------------------------------------------------------

_PALETTE = np.array([[0, 0, 0], [40, 220, 60], [230, 40, 40]], dtype=np.uint8)


def colorize(mask: np.ndarray) -> np.ndarray:
    safe = np.where(mask == 255, 0, mask).astype(np.int64).clip(0, 2)
    out = _PALETTE[safe]
    out[mask == 255] = (128, 128, 128)
    return out


def overlays_png(items: Sequence[dict], path: Path, max_tiles: int = 6) -> Path:
    """Rows of image | truth | prediction for the first tiles."""
    import cv2

    rows = []
    for it in items[:max_tiles]:
        rgb = it["rgb"]
        truth = cv2.addWeighted(rgb, 0.4, colorize(it["truth"]), 0.6, 0)
        pred = cv2.addWeighted(rgb, 0.4, colorize(it["prediction"].mask), 0.6, 0)
        sep = np.full((rgb.shape[0], 4, 3), 255, dtype=np.uint8)
        rows.append(np.concatenate([rgb, sep, truth, sep, pred], axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    cv2.imwrite(str(path), np.concatenate(rows, axis=0)[:, :, ::-1])
    return path


def confusion_png(confusion: Sequence[Sequence[int]], path: Path, title: str = "holdout") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conf = np.asarray(confusion, dtype=np.float64)
    norm = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(4, 3.5))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(3), CLASS_NAMES, rotation=30)
    ax.set_yticks(range(3), CLASS_NAMES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion ({title}, row-normalised)")
    for i in range(3):
        for j in range(3):
            ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", color="black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def curves_png(curves: dict[str, Sequence[float]], path: Path, title: str = "learning curves") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, values in curves.items():
        ax.plot(range(1, len(values) + 1), values, marker="o", label=label)
    ax.set_xlabel("epoch")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
