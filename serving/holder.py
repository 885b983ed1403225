"""The model the API serves, and its hot reload.

A background thread loads the model (registry alias or local folder), warms it up, and polls the alias.
A new version is loaded and warmed beside the old one and then swapped in with one reference assignment;
a request takes the reference once at its start, so in-flight requests finish on the model they began with.
MLflow being down never stops serving: at start /readyz stays 503 while the thread retries with backoff,
later the current model keeps answering and the failure is logged and counted.
"""

from __future__ import annotations

import logging
import math
import shutil
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from parking_ml.config import Settings
from parking_ml.inference import OnnxSegmenter
from serving.metrics import Metrics

logger = logging.getLogger(__name__)

# tags that describe where a version came from; numeric tags are reported as metrics
_INFO_TAGS = ("dataset_version", "git_sha", "promotion", "promotion_decision", "profile", "arch", "encoder")


@dataclass(frozen=True)
class LoadedModel:
    segmenter: OnnxSegmenter
    name: str
    version: str
    alias: str | None
    run_id: str | None
    source: str
    loaded_at: str
    tags: dict[str, str] = field(default_factory=dict)
    path: Path | None = None
    owns_path: bool = False

    @property
    def metrics(self) -> dict[str, float]:
        out = {}
        for key, value in self.tags.items():
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue
            if math.isfinite(number):  # JSON has no NaN
                out[key] = number
        return out

    @property
    def info_tags(self) -> dict[str, str]:
        return {k: v for k, v in self.tags.items() if k in _INFO_TAGS or k.startswith("promotion")}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class ModelHolder:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.current: LoadedModel | None = None
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loaded = threading.Event()

    # --- public ------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="model-holder", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            # a registry call may hang on its own retries; the thread is a daemon, do not wait forever
            self._thread.join(timeout=timeout)
            self._thread = None

    def wait_loaded(self, timeout: float) -> bool:
        return self._loaded.wait(timeout)

    @property
    def source_label(self) -> str:
        s = self.settings
        return str(s.model_dir) if s.model_dir else f"models:/{s.model_name}@{s.model_alias}"

    # --- loading -----------------------------------------------------------------------------------
    def load_dir(self, model_dir: Path) -> LoadedModel:
        seg = OnnxSegmenter.from_dir(model_dir, threads=self.settings.threads, tta=self.settings.serving_tta)
        seg.warm_up()
        return LoadedModel(
            segmenter=seg,
            name=self.settings.model_name,
            version="local",
            alias=None,
            run_id=None,
            source=str(model_dir),
            loaded_at=_now(),
            path=Path(model_dir),
        )

    def poll_registry(self) -> bool:
        """Load the alias's version if it is not the one served; True when a new model was swapped in."""
        s = self.settings
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        client = MlflowClient(tracking_uri=s.mlflow_tracking_uri, registry_uri=s.mlflow_tracking_uri)
        try:
            mv = client.get_model_version_by_alias(s.model_name, s.model_alias)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                self.last_error = f"no version of {s.model_name} has alias {s.model_alias!r} yet"
                logger.warning(self.last_error)
                return False
            raise
        current = self.current
        if current is not None and current.version == str(mv.version):
            return False
        from parking_ml.model.package import download_package

        dst = s.cache_dir / "serving" / f"{s.model_name}-v{mv.version}-{uuid.uuid4().hex[:8]}"
        try:
            download_package(f"models:/{s.model_name}/{mv.version}", dst, tracking_uri=s.mlflow_tracking_uri)
            seg = OnnxSegmenter.from_dir(dst, threads=s.threads, tta=s.serving_tta)
            seg.warm_up()
        except BaseException:
            shutil.rmtree(dst, ignore_errors=True)
            raise
        self._swap(
            LoadedModel(
                segmenter=seg,
                name=s.model_name,
                version=str(mv.version),
                alias=s.model_alias,
                run_id=mv.run_id,
                source=f"models:/{s.model_name}@{s.model_alias}",
                loaded_at=_now(),
                tags=dict(mv.tags or {}),
                path=dst,
                owns_path=True,
            )
        )
        return True

    def _swap(self, new: LoadedModel) -> None:
        old = self.current
        self.current = new  # the swap: one reference assignment
        self.last_error = None
        if old is not None:
            self.metrics.model_info.remove(old.name, old.version, old.alias or "")
        self.metrics.model_info.labels(new.name, new.version, new.alias or "").set(1)
        self.metrics.model_loaded.set(1)
        self._loaded.set()
        logger.info(
            "model loaded",
            extra={
                "model": new.name,
                "version": new.version,
                "source": new.source,
                "previous": old and old.version,
            },
        )
        # requests holding the old model keep its session in memory; its files are no longer needed
        if old is not None and old.owns_path and old.path is not None:
            shutil.rmtree(old.path, ignore_errors=True)

    # --- the thread ----------------------------------------------------------------------------------
    def _run(self) -> None:
        s = self.settings
        backoff = 1.0
        while not self._stop.is_set():
            try:
                if s.model_dir is not None:
                    self._swap(self.load_dir(s.model_dir))
                    self.metrics.reloads.labels(result="success").inc()
                    return
                if self.poll_registry():
                    self.metrics.reloads.labels(result="success").inc()
                backoff = 1.0
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"[:500]
                self.metrics.reloads.labels(result="error").inc()
                if s.model_dir is None:
                    self.metrics.registry_errors.inc()
                logger.warning(
                    "model load failed; serving continues with the current model"
                    if self.current
                    else "model load failed; not ready, retrying",
                    extra={"source": self.source_label, "error": self.last_error, "retry_in_s": backoff},
                )
            if self.current is None:
                wait = backoff
                backoff = min(backoff * 2, max(s.reload_interval_s, 1.0))
            else:
                wait = s.reload_interval_s
            self._stop.wait(wait)

    def describe(self) -> dict[str, Any]:
        m = self.current
        if m is None:
            return {"loaded": False, "source": self.source_label, "last_error": self.last_error}
        return {
            "loaded": True,
            "name": m.name,
            "alias": m.alias,
            "version": m.version,
            "run_id": m.run_id,
            "source": m.source,
            "loaded_at": m.loaded_at,
            "metrics": m.metrics,
            "tags": m.info_tags,
            "preprocess": m.segmenter.config.to_dict(),
        }
