"""Find, fetch and split a processed dataset: the bridge from the lake to training on local disk (the
manifest's training folds, its holdout, site-grouped CV splits)."""

from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from parking_ml.config import Settings
from parking_ml.data.tile_cache import BoundedTileCache, TileCache
from parking_ml.lake import Lake

LATEST_KEY = "processed/LATEST"
COMPLETE_MARK = ".complete"


def latest_version(lake: Lake) -> str:
    """The version in processed/LATEST."""
    if not lake.exists(LATEST_KEY):
        raise FileNotFoundError(
            f"no processed dataset at {lake.uri(LATEST_KEY)}; run `parking-ml ingest` then `parking-ml preprocess`"
        )
    version = lake.read_bytes(LATEST_KEY).decode("utf-8").strip()
    if not version:
        raise ValueError(f"{lake.uri(LATEST_KEY)} is empty; re-run `parking-ml preprocess`")
    return version


def dataset_info(lake: Lake, version: str) -> dict[str, Any]:
    return json.loads(lake.read_bytes(f"processed/{version}/dataset.json"))


def materialize(lake: Lake, version: str, cache_dir: Path) -> Path:
    """A local directory with tiles/, masks/, stalls/, manifest.parquet, dataset.json of ``version``.

    A file:// lake is used in place. From S3 the files are downloaded once into
    ``cache_dir/processed/<version>`` (a temp folder renamed when complete, so an interrupted download is
    never mistaken for a dataset).
    """
    prefix = f"processed/{version}"
    if not lake.exists(f"{prefix}/dataset.json"):
        raise FileNotFoundError(
            f"dataset {version} is missing or incomplete in {lake.uri(prefix)}; run `parking-ml preprocess`"
        )
    if lake.is_local:
        return lake.local_path(prefix)
    dest = Path(cache_dir) / "processed" / version
    if (dest / COMPLETE_MARK).exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{version}.tmp-{uuid.uuid4().hex[:8]}"
    keys = lake.list(f"{prefix}/")
    locals_ = [tmp / key[len(prefix) + 1 :] for key in keys]
    for path in {p.parent for p in locals_}:
        path.mkdir(parents=True, exist_ok=True)
    try:
        # one batched call: s3fs fetches the objects concurrently
        lake.fs.get([lake.path(k) for k in keys], [str(p) for p in locals_])
        (tmp / COMPLETE_MARK).write_text(version)
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def load_manifest(local_dir: Path) -> pd.DataFrame:
    """The tile manifest of a materialised dataset."""
    path = Path(local_dir) / "manifest.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; materialize the dataset first (parking_ml.data.processed)")
    return pd.read_parquet(path)


@dataclass(frozen=True)
class ProcessedData:
    root: Path
    manifest: pd.DataFrame
    version: str
    # tiles decoded at the model's gsd, shared by every fold, trial and the final fit of one training run
    decoded: TileCache = field(default_factory=dict, repr=False, compare=False)


def load_processed(settings: Settings, version: str | None = None) -> ProcessedData:
    """Materialise processed/<version> (default: the latest) locally and read its manifest."""
    lake = Lake.from_settings(settings)
    version = version or latest_version(lake)
    root = Path(materialize(lake, version, settings.cache_dir))
    manifest = load_manifest(root)
    decoded = BoundedTileCache(settings.tile_cache_mb * 2**20)
    return ProcessedData(root=root, manifest=manifest, version=version, decoded=decoded)


def training_rows(manifest: pd.DataFrame) -> pd.DataFrame:
    return manifest[(manifest["split"] == "train") & (manifest["fold"] >= 0)]


def holdout_rows(manifest: pd.DataFrame) -> pd.DataFrame:
    return manifest[manifest["split"] == "holdout"]


def cv_folds(manifest: pd.DataFrame) -> list[int]:
    folds = sorted(int(f) for f in training_rows(manifest)["fold"].unique())
    if len(folds) < 2:
        raise ValueError(
            f"the manifest has {len(folds)} training fold(s); CV needs at least 2 (add sites or lower PARKING_FOLDS)"
        )
    return folds


def fold_split(manifest: pd.DataFrame, fold: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, validation) rows for one CV fold; holdout rows are never in either."""
    rows = training_rows(manifest)
    val = rows[rows["fold"] == fold]
    train = rows[rows["fold"] != fold]
    shared = set(train["site"]) & set(val["site"])
    if shared:
        raise ValueError(
            f"fold {fold} shares sites {sorted(shared)[:5]} with its training folds; folds must group whole "
            "sites (re-run `parking-ml preprocess` to rebuild the split)"
        )
    if val.empty or train.empty:
        raise ValueError(f"fold {fold} leaves an empty train or validation set")
    return train, val


def evenly_spaced(rows: pd.DataFrame, limit: int | None) -> pd.DataFrame:
    """At most ``limit`` rows, spread evenly over the frame (None: all)."""
    if not limit or len(rows) <= limit:
        return rows
    return rows.iloc[np.unique(np.linspace(0, len(rows) - 1, limit).round().astype(int))]
