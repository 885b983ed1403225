"""Find and fetch a processed dataset: the bridge from the lake to training on local disk."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pandas as pd

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
