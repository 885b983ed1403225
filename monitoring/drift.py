"""One drift comparison: live feature rows of a model version against that version's reference rows.

Plain data in, plain data out: two DataFrames (the `parking_ml.features` columns, plus `emb_*` columns when the
model exports an embedding) -> a `DriftResult` holding the verdict, the per-feature scores and the Evidently
report (HTML and JSON text). Storage lives in `monitoring.store`, the window and version rules in
`monitoring.run`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from parking_ml.features import IMAGE_COLUMNS, MODEL_COLUMNS

if TYPE_CHECKING:
    import pandas as pd

VERDICT_DRIFT = "drift"
VERDICT_OK = "ok"
VERDICT_NOT_ENOUGH = "not_enough_data"

# Sizes of the uploads say how clients tile their imagery, not what the imagery looks like: a 512-px request
# against 256-px training tiles is normal. Summarised, never counted as drift.
SIZE_COLUMNS = ("width", "height")
EMBEDDING_PREFIX = "emb_"
EMBEDDING_NAME = "embedding"

# Per-column methods (Evidently stat-test names). Distances rather than p-values: a p-value test calls a tiny,
# harmless shift "drift" once a window holds thousands of rows, a distance means the same at any window size.
# - bounded statistics (0..1): Wasserstein distance normed by the reference's spread.
# - sharpness is a heavy-tailed raw variance and free_spaces a small count: binned (Jensen-Shannon distance),
#   so a few extreme tiles or the integer steps do not dominate.
BINNED = frozenset({"sharpness", "free_spaces"})
# p-value methods: these drift when the score falls *below* the threshold (used if someone overrides a method)
P_VALUE_METHODS = frozenset(
    {"ks", "chisquare", "z", "t_test", "mannw", "anderson", "cramer_von_mises", "fisher_exact", "g_test"}
)


def column_method(column: str) -> str:
    return "jensenshannon" if column in BINNED else "wasserstein"


@dataclass(frozen=True)
class DriftConfig:
    """Thresholds of the verdict (calibrated in docs/experiments/drift-calibration.md).

    A feature drifts when its distance reaches its threshold; the window drifts when at least
    `drift_share` of the compared features (the embedding counts as one) drift."""

    min_rows: int = 100
    drift_share: float = 0.5
    wasserstein_threshold: float = 0.1
    binned_threshold: float = 0.1
    # ROC AUC of a classifier separating reference from live embeddings (0.5: it cannot)
    embedding_threshold: float = 0.6
    columns: tuple[str, ...] = tuple(c for c in IMAGE_COLUMNS + MODEL_COLUMNS if c not in SIZE_COLUMNS)

    def threshold(self, column: str) -> float:
        return self.binned_threshold if column in BINNED else self.wasserstein_threshold


@dataclass
class DriftResult:
    verdict: str
    rows: int
    reference_rows: int
    drift_share: float
    drifted_features: list[str]
    features: dict[str, dict[str, Any]]
    message: str
    html: str = ""
    report_json: str = ""
    build_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The JSON-safe part (everything but the report texts)."""
        return {
            "verdict": self.verdict,
            "rows": self.rows,
            "reference_rows": self.reference_rows,
            "drift_share": self.drift_share,
            "drifted_features": list(self.drifted_features),
            "features": self.features,
            "message": self.message,
            "build_s": round(self.build_s, 3),
            **self.extra,
        }


def embedding_columns(frame: pd.DataFrame) -> list[str]:
    return sorted((c for c in frame.columns if c.startswith(EMBEDDING_PREFIX)), key=lambda c: int(c[4:]))


def _usable(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    """Columns present with at least one value (old references lack the model columns or the embedding)."""
    return [c for c in columns if c in frame.columns and frame[c].notna().any()]


def not_enough_data(rows: int, reference_rows: int, config: DriftConfig) -> DriftResult:
    need = config.min_rows
    if rows < need:
        message = f"not enough data ({rows} of {need} needed live rows)"
    else:
        message = f"not enough data ({reference_rows} of {need} needed reference rows)"
    return DriftResult(VERDICT_NOT_ENOUGH, rows, reference_rows, 0.0, [], {}, message)


def compare(reference: pd.DataFrame, current: pd.DataFrame, config: DriftConfig | None = None) -> DriftResult:
    """Evidently drift + summary report of current against reference, and the calibrated verdict."""
    import time

    config = config or DriftConfig()
    if len(current) < config.min_rows or len(reference) < config.min_rows:
        return not_enough_data(len(current), len(reference), config)
    t0 = time.perf_counter()
    columns = [c for c in _usable(reference, list(config.columns)) if c in _usable(current, list(config.columns))]
    emb = [c for c in embedding_columns(reference) if c in current.columns]
    if emb and (reference[emb].isna().any().any() or current[emb].isna().all().all()):
        emb = []  # a reference or window from a model without the embedding output
    snapshot = _run_report(reference, current, columns, emb, config)
    features = _feature_scores(snapshot.dict(), config)
    if emb:
        features[EMBEDDING_NAME] = _embedding_score(snapshot.dict())
    drifted = [name for name, f in features.items() if f["drifted"]]
    share = len(drifted) / len(features) if features else 0.0
    verdict = VERDICT_DRIFT if features and share >= config.drift_share else VERDICT_OK
    message = (
        f"{len(drifted)} of {len(features)} features drifted (share {share:.2f}, "
        f"alarm at {config.drift_share:.2f}): {verdict}"
    )
    return DriftResult(
        verdict=verdict,
        rows=len(current),
        reference_rows=len(reference),
        drift_share=round(share, 4),
        drifted_features=drifted,
        features=features,
        message=message,
        html=snapshot.get_html_str(as_iframe=False),
        report_json=snapshot.json(),
        build_s=time.perf_counter() - t0,
    )


def _run_report(reference: pd.DataFrame, current: pd.DataFrame, columns: list[str], emb: list[str], config):
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import EmbeddingsDrift
    from evidently.metrics.embeddings import ModelDriftMethod
    from evidently.presets import DataDriftPreset, DataSummaryPreset

    shown = columns + [c for c in SIZE_COLUMNS if c in reference.columns and c in current.columns]
    definition = DataDefinition(numerical_columns=shown + emb, embeddings={EMBEDDING_NAME: emb} if emb else None)
    metrics: list[Any] = [
        DataDriftPreset(
            columns=columns,
            drift_share=config.drift_share,
            per_column_method={c: column_method(c) for c in columns},
            per_column_threshold={c: config.threshold(c) for c in columns},
        ),
        DataSummaryPreset(columns=shown),
    ]
    if emb:
        # a classifier told to separate reference from live embeddings: a high ROC AUC means it can
        method = ModelDriftMethod(threshold=config.embedding_threshold, bootstrap=False)
        metrics.append(EmbeddingsDrift(embeddings_name=EMBEDDING_NAME, drift_method=method))
    keep = shown + emb
    return Report(metrics).run(
        current_data=Dataset.from_pandas(current[keep].reset_index(drop=True), data_definition=definition),
        reference_data=Dataset.from_pandas(reference[keep].reset_index(drop=True), data_definition=definition),
    )


def _feature_scores(report: dict, config: DriftConfig) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for metric in report["metrics"]:
        cfg = metric.get("config") or {}
        if not str(cfg.get("type", "")).endswith(":ValueDrift"):
            continue
        column, method, threshold = cfg["column"], cfg["method"], float(cfg["threshold"])
        score = _finite(metric.get("value"))
        if method in P_VALUE_METHODS:
            drifted = score is not None and score < threshold
        else:
            drifted = score is not None and score >= threshold
        out[column] = {"method": method, "score": score, "threshold": threshold, "drifted": bool(drifted)}
    return out


def _embedding_score(report: dict) -> dict[str, Any]:
    for metric in report["metrics"]:
        cfg = metric.get("config") or {}
        if str(cfg.get("type", "")).endswith(":EmbeddingsDrift"):
            method = cfg.get("drift_method") or {}
            threshold = float(method.get("threshold", 0.55))
            score = _finite(metric.get("value"))
            drifted = score is not None and score > threshold
            return {"method": "model (ROC AUC)", "score": score, "threshold": threshold, "drifted": bool(drifted)}
    raise KeyError("the report has no EmbeddingsDrift result")


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return round(number, 6) if math.isfinite(number) else None


def summary_json(summary: dict[str, Any]) -> str:
    return json.dumps(summary, indent=2, sort_keys=True, default=str)
