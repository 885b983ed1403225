"""A model package: the folder the API serves (model.onnx + preprocess.json + reference_features.parquet).

The same folder is what gets logged to MLflow, and `download_package` turns any model URI back into it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
PREPROCESS_FILE = "preprocess.json"
REFERENCE_FILE = "reference_features.parquet"
PACKAGE_FILES = (MODEL_FILE, PREPROCESS_FILE, REFERENCE_FILE)


@dataclass(frozen=True)
class PackageInfo:
    dir: Path
    onnx_path: Path
    parity_max_abs_diff: float


def preprocess_to_dict(preprocess: Any) -> dict:
    """Accept a dict or a PreprocessConfig (anything with to_json() or a dataclass) and return a plain dict."""
    if isinstance(preprocess, dict):
        return dict(preprocess)
    if hasattr(preprocess, "to_json"):
        text = preprocess.to_json()
        return json.loads(text) if isinstance(text, str) else dict(text)
    if dataclasses.is_dataclass(preprocess):
        return dataclasses.asdict(preprocess)
    raise TypeError(f"preprocess must be a dict or PreprocessConfig, got {type(preprocess).__name__}")


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def build_package(
    model: Any,
    preprocess: Any,
    out_dir: str | Path,
    reference_features: Any = None,
    tile_size: int = 256,
    embedding: bool = True,
) -> PackageInfo:
    """Export model to out_dir/model.onnx (parity-checked) and write preprocess.json and the drift reference.

    embedding: also export the drift embedding output (parking_ml.model.export); False: logits only."""
    import io

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / MODEL_FILE
    # imported here: export needs torch, and the torch-free serving image imports this module for
    # download_package only
    from parking_ml.model.export import export_onnx

    diff = export_onnx(model, onnx_path, tile_size=tile_size, embedding=embedding)
    config = preprocess_to_dict(preprocess)
    _write_atomic(out / PREPROCESS_FILE, json.dumps(config, indent=2, sort_keys=True).encode("utf-8"))
    if reference_features is not None:
        buf = io.BytesIO()
        reference_features.to_parquet(buf, index=False)
        _write_atomic(out / REFERENCE_FILE, buf.getvalue())
    logger.info("built model package", extra={"dir": str(out), "parity_max_abs_diff": diff})
    return PackageInfo(dir=out, onnx_path=onnx_path, parity_max_abs_diff=diff)


def find_package_root(tree: Path) -> Path:
    """The folder under tree that holds model.onnx and preprocess.json (MLflow nests them in artifacts/)."""
    if (tree / MODEL_FILE).is_file() and (tree / PREPROCESS_FILE).is_file():
        return tree
    for onnx in sorted(tree.rglob(MODEL_FILE)):
        if (onnx.parent / PREPROCESS_FILE).is_file():
            return onnx.parent
    raise FileNotFoundError(f"no {MODEL_FILE} with {PREPROCESS_FILE} beside it under {tree}")


def resolve_models_uri(model_uri: str, tracking_uri: str) -> str:
    """models:/name@alias, models:/name/<version> or models:/<model id> -> the artifact location of its files,
    asked of ``tracking_uri`` as tracking server and registry.

    MLflow 3.17's models:/ resolution asks the process-wide registry and tracking URIs whatever URIs the call
    is given, so without MLFLOW_TRACKING_URI in the environment it opened a ./mlflow.db and found no model."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    ref = model_uri.removeprefix("models:/").strip("/")
    if ref.startswith("m-") and "/" not in ref:
        return client.get_logged_model(ref).artifact_location
    if "@" in ref:
        name, alias = ref.split("@", 1)
        version = str(client.get_model_version_by_alias(name, alias).version)
    else:
        name, _, version = ref.rpartition("/")
        if not name:
            raise ValueError(f"{model_uri}: give models:/<name>@<alias> or models:/<name>/<version>")
    location = client.get_model_version_download_uri(name, version)
    if location.startswith("models:/"):
        return client.get_logged_model(location.removeprefix("models:/").strip("/")).artifact_location
    return location


def download_package(model_uri: str, dst: str | Path, tracking_uri: str | None = None) -> Path:
    """Fetch a model (models:/name@alias, models:/name/3, runs:/..., or a local folder) into dst.

    ``tracking_uri`` is also the registry that resolves ``models:/`` (see resolve_models_uri).

    Returns dst, which then holds model.onnx, preprocess.json (and reference_features.parquet when the
    version has one) at its root, whatever the layout inside MLflow. dst is replaced as a whole.
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".pkg-", dir=dst.parent))
    try:
        local = Path(model_uri.removeprefix("file://"))
        if "://" not in model_uri.removeprefix("file://") and not model_uri.startswith("models:") and local.is_dir():
            root = find_package_root(local)
        else:
            import mlflow

            if tracking_uri and model_uri.startswith("models:/"):
                model_uri = resolve_models_uri(model_uri, tracking_uri)
            fetched = mlflow.artifacts.download_artifacts(
                artifact_uri=model_uri, dst_path=str(staging / "raw"), tracking_uri=tracking_uri
            )
            root = find_package_root(Path(fetched))
        ready = staging / "ready"
        ready.mkdir()
        for name in PACKAGE_FILES:
            if (root / name).is_file():
                shutil.copy2(root / name, ready / name)
        old = None
        if dst.exists():
            old = dst.with_name(f".{dst.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(dst, old)
        os.replace(ready, dst)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dst
