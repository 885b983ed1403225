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

from parking_ml.features import EMBEDDING_PREFIX, IMAGE_COLUMNS, MODEL_COLUMNS

if TYPE_CHECKING:
    import pandas as pd

VERDICT_DRIFT = "drift"
VERDICT_OK = "ok"
VERDICT_NOT_ENOUGH = "not_enough_data"

# Sizes of the uploads say how clients tile their imagery, not what the imagery looks like: a 512-px request
# against 256-px training tiles is normal. Summarised, never counted as drift.
SIZE_COLUMNS = ("width", "height")
EMBEDDING_NAME = "embedding"
# reference + live rows at or below which the embedding is left out of a report (t-SNE needs more samples)
EMBEDDING_MIN_ROWS = 31

# Per-column methods (Evidently stat-test names). Distances rather than p-values: a p-value test calls a tiny,
# harmless shift "drift" once a window holds thousands of rows; a distance keeps its meaning (the threshold
# follows the sample sizes, see DriftConfig).
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
    """The verdict's rule, calibrated on the generator's styles (docs/experiments/drift-calibration.md).

    A feature drifts when its distance reaches `scale * sqrt(1/n_reference + 1/n_live)` (at least `floor`): the
    distance two samples of one distribution show by chance shrinks like that with their sizes, so one rule
    holds for a 100-row window and a 100k-row one. The window drifts when at least `drift_share` of the
    compared features drift (the embedding counts as one), or when any one feature is `strong_factor` times
    past its threshold: correlated statistics (brightness and the channel means) would otherwise outvote a
    change in a single property, such as another sensor's colour saturation."""

    min_rows: int = 100
    drift_share: float = 0.5
    scale: float = 3.0
    floor: float = 0.1
    strong_factor: float = 2.5
    # the embedding: ROC AUC of a classifier telling reference from live rows, drifting at 0.5 plus
    # `embedding_sigmas` standard errors of a chance AUC (at least embedding_floor)
    embedding_sigmas: float = 3.0
    embedding_floor: float = 0.55
    columns: tuple[str, ...] = tuple(c for c in IMAGE_COLUMNS + MODEL_COLUMNS if c not in SIZE_COLUMNS)

    def threshold(self, n_reference: int, n_live: int) -> float:
        return round(max(self.floor, self.scale * math.sqrt(1 / n_reference + 1 / n_live)), 4)

    def embedding_threshold(self, n_reference: int, n_live: int) -> float:
        # the classifier is scored on a random half of each sample (Evidently's split); Hanley-McNeil null s.e.
        a, b = max(1, n_reference // 2), max(1, n_live // 2)
        se = math.sqrt((a + b + 1) / (12 * a * b))
        return round(max(self.embedding_floor, 0.5 + self.embedding_sigmas * se), 4)


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
    if emb and len(reference) + len(current) <= EMBEDDING_MIN_ROWS:
        emb = []  # Evidently's embedding view (t-SNE, perplexity 30) needs more rows than that
    threshold = config.threshold(len(reference), len(current))
    emb_threshold = config.embedding_threshold(len(reference), len(current))
    snapshot = _run_report(reference, current, columns, emb, threshold, emb_threshold, config)
    report = snapshot.dict()
    features = _feature_scores(report, config.strong_factor)
    if emb:
        features[EMBEDDING_NAME] = _embedding_score(report, emb_threshold)
    drifted = [name for name, f in features.items() if f["drifted"]]
    strong = [name for name, f in features.items() if f.get("strong")]
    share = len(drifted) / len(features) if features else 0.0
    verdict = VERDICT_DRIFT if features and (share >= config.drift_share or strong) else VERDICT_OK
    message = (
        f"{len(drifted)} of {len(features)} features drifted (share {share:.2f}, alarm at {config.drift_share:.2f})"
    )
    if strong:
        message += f"; far past threshold: {', '.join(strong)}"
    message += f": {verdict}"
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


def _run_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: list[str],
    emb: list[str],
    threshold: float,
    emb_threshold: float,
    config: DriftConfig,
):
    import numpy as np
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import EmbeddingsDrift
    from evidently.metrics.embeddings import ModelDriftMethod
    from evidently.presets import DataDriftPreset, DataSummaryPreset

    shown = columns + [c for c in SIZE_COLUMNS if c in reference.columns and c in current.columns]
    definition = DataDefinition(numerical_columns=shown + emb, embeddings={EMBEDDING_NAME: emb} if emb else None)
    metrics: list[Any] = []
    if columns:
        metrics.append(
            DataDriftPreset(
                columns=columns,
                drift_share=config.drift_share,
                per_column_method={c: column_method(c) for c in columns},
                per_column_threshold=dict.fromkeys(columns, threshold),
            )
        )
    if shown:
        metrics.append(DataSummaryPreset(columns=shown))
    if emb:
        # a classifier told to separate reference from live embeddings: a high ROC AUC means it can
        method = ModelDriftMethod(threshold=emb_threshold, bootstrap=False)
        metrics.append(EmbeddingsDrift(embeddings_name=EMBEDDING_NAME, drift_method=method))
    keep = shown + emb
    # the summary's correlations divide by the spread of constant columns (every tile 256 px wide): NaN is right
    with np.errstate(divide="ignore", invalid="ignore"):
        return Report(metrics).run(
            current_data=Dataset.from_pandas(current[keep].reset_index(drop=True), data_definition=definition),
            reference_data=Dataset.from_pandas(reference[keep].reset_index(drop=True), data_definition=definition),
        )


def _feature_scores(report: dict, strong_factor: float) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for metric in report["metrics"]:
        cfg = metric.get("config") or {}
        if not str(cfg.get("type", "")).endswith(":ValueDrift"):
            continue
        column, method, threshold = cfg["column"], cfg["method"], float(cfg["threshold"])
        score = _finite(metric.get("value"))
        if method in P_VALUE_METHODS:
            drifted = strong = score is not None and score < threshold
        else:
            drifted = score is not None and score >= threshold
            strong = score is not None and score >= strong_factor * threshold
        out[column] = {
            "method": method,
            "score": score,
            "threshold": threshold,
            "drifted": bool(drifted),
            "strong": bool(strong),
        }
    return out


def _embedding_score(report: dict, threshold: float) -> dict[str, Any]:
    for metric in report["metrics"]:
        cfg = metric.get("config") or {}
        if str(cfg.get("type", "")).endswith(":EmbeddingsDrift"):
            score = _finite(metric.get("value"))
            drifted = score is not None and score > threshold
            # an AUC tops out at 1: "strong" is most of the way from the threshold to a perfect separation
            strong = score is not None and score > threshold + 0.6 * (1 - threshold)
            return {
                "method": "model (ROC AUC)",
                "score": score,
                "threshold": threshold,
                "drifted": bool(drifted),
                "strong": bool(strong),
            }
    raise KeyError("the report has no EmbeddingsDrift result")


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return round(number, 6) if math.isfinite(number) else None


def summary_json(summary: dict[str, Any]) -> str:
    return json.dumps(summary, indent=2, sort_keys=True, default=str)
