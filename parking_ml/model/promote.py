"""The promotion gate: challenger vs champion on the frozen holdout, through the serving inference code.

`champion` moves only when the challenger's primary metric (Settings.objective_metric) beats the champion's
by more than Settings.promotion_margin and no guard metric regresses beyond Settings.promotion_tolerance; a
first model must reach Settings.promotion_min_quality. Every decision is tagged on the challenger version and
logged as a "promotion" run (both eval.json files + decision.json). Every champion move is appended to a
history (registered-model tag) so `rollback` can walk back; the new champion also gets `previous_champion`.

A version's training run already scored its holdout through the same evaluate_package; where its eval.json
says that score is of the same package bytes, on the same dataset_version, by the same scoring code (the source
of evaluation.SCORER_MODULES, the onnxruntime / OpenCV / numpy versions), the gate takes it instead of scoring
again (docs/experiments/promotion-stored-scores.md). Anything else is scored here.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from parking_ml.config import Settings
from parking_ml.model.metrics import LOWER_IS_BETTER, scalar_metrics

logger = logging.getLogger(__name__)

# guard metrics: (name, how a regression is measured). Counts are compared relative to max(champion, 1)
# spaces per tile, so the tolerance reads as a share for both kinds.
GUARD_METRICS = ("free_count_mae", "iou_occupied")


@dataclass
class Decision:
    promoted: bool
    reason: str
    challenger_version: str | None
    champion_version: str | None
    primary_metric: str
    challenger_metrics: dict = field(default_factory=dict)
    champion_metrics: dict = field(default_factory=dict)
    # per side: "scored" here, or "training run <id>" whose stored score of the same package, holdout and code
    # was taken
    holdout_sources: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def decide(
    challenger: dict,
    champion: dict | None,
    settings: Settings,
    primary: str | None = None,
    guards: tuple[str, ...] = GUARD_METRICS,
    margin: float | None = None,
) -> tuple[bool, str]:
    """(promote?, reason) from two evaluate() results on the same holdout; margin: settings.promotion_margin
    when None."""
    primary = primary or settings.objective_metric
    margin = settings.promotion_margin if margin is None else margin
    value = float(challenger[primary])
    if champion is None:
        if value >= settings.promotion_min_quality:
            return True, f"first model: {primary} {value:.4f} >= min quality {settings.promotion_min_quality}"
        return False, f"first model below the bar: {primary} {value:.4f} < {settings.promotion_min_quality}"
    base = float(champion[primary])
    gain = value - base
    if gain <= margin:
        return False, (
            f"{primary} {value:.4f} vs champion {base:.4f}: gain {gain:+.4f} is not above the margin {margin}"
        )
    for guard in guards:
        if guard not in challenger or guard not in champion:
            continue
        new, old = float(challenger[guard]), float(champion[guard])
        if guard in LOWER_IS_BETTER:
            regression = (new - old) / max(old, 1.0)
        else:
            regression = old - new
        if regression > settings.promotion_tolerance:
            return False, (
                f"{primary} improves {gain:+.4f} but guard {guard} regresses: {new:.4f} vs champion {old:.4f} "
                f"(beyond tolerance {settings.promotion_tolerance})"
            )
    return True, f"{primary} {value:.4f} beats champion {base:.4f} by {gain:+.4f}; guards hold"


def _stored_holdout(settings: Settings, version: Any, stamp: dict, workdir: Path) -> dict | None:
    """The holdout metrics in the eval.json of the run that logged ``version``, if they were scored on the same
    holdout, of the same package bytes, by the same scoring code (``stamp``); else None."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from parking_ml.model.evaluation import HOLDOUT_STAMP_KEY

    if not getattr(version, "run_id", None):
        return None
    try:
        path = mlflow.artifacts.download_artifacts(
            run_id=version.run_id,
            artifact_path="eval.json",
            dst_path=str(workdir),
            tracking_uri=settings.mlflow_tracking_uri,
        )
        report = json.loads(Path(path).read_text())
    except (MlflowException, OSError, ValueError):
        # no eval.json (a version registered by hand) or an unreadable one: score it here
        return None
    if not isinstance(report, dict) or report.get(HOLDOUT_STAMP_KEY) != stamp or not report.get("holdout"):
        return None
    return report["holdout"]


def _evaluate_version(settings: Settings, version: Any, data: Any, workdir: Path, label: str) -> tuple[dict, str]:
    """(holdout metrics, where they came from): the training run's own score when it is of this package on
    this holdout by this code (the final fit scores its holdout through the same evaluate_package), else a
    fresh score."""
    from parking_ml.data.processed import holdout_rows
    from parking_ml.model.evaluation import evaluate_package, holdout_stamp
    from parking_ml.model.package import download_package

    pkg = download_package(
        f"models:/{settings.model_name}/{version.version}", workdir / label, tracking_uri=settings.mlflow_tracking_uri
    )
    stored_dir = workdir / f"{label}-stored"
    stored_dir.mkdir()
    stored = _stored_holdout(settings, version, holdout_stamp(pkg, data.version), stored_dir)
    if stored is not None:
        return stored, f"training run {version.run_id}"
    metrics, _ = evaluate_package(pkg, data.root, holdout_rows(data.manifest), settings.threads, progress=False)
    return metrics, "scored"


def run_promotion(settings: Settings, data: Any = None, margin: float | None = None) -> dict:
    """Evaluate challenger and champion on the challenger's holdout and move `champion` if the gate passes.

    data: a data.processed.ProcessedData to use instead of materialising the challenger's dataset_version.
    margin: how much the challenger must beat the champion by (settings.promotion_margin when None).
    """
    margin = settings.promotion_margin if margin is None else margin
    if margin < 0:
        raise ValueError(f"promotion margin must be >= 0, got {margin}")
    import mlflow

    from parking_ml.data.processed import holdout_rows, load_processed
    from parking_ml.model import registry

    challenger = registry.get_alias_version(settings, settings.challenger_alias)
    champion = registry.get_alias_version(settings, settings.model_alias)
    primary = settings.objective_metric
    if challenger is None:
        return Decision(False, "no challenger version to evaluate", None, None, primary).to_dict()
    champ_v = champion.version if champion is not None else None
    if champ_v == challenger.version:
        return Decision(
            False, f"challenger v{challenger.version} is already the champion", challenger.version, champ_v, primary
        ).to_dict()
    dataset_version = (challenger.tags or {}).get("dataset_version")
    if data is None:
        if not dataset_version:
            raise ValueError(
                f"{settings.model_name} v{challenger.version} has no dataset_version tag; cannot find its holdout"
            )
        data = load_processed(settings, dataset_version)
    if holdout_rows(data.manifest).empty:
        raise ValueError(f"dataset {data.version} has no holdout tiles (split == 'holdout'); cannot gate")

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_experiment(settings.model_name)
    with (
        tempfile.TemporaryDirectory(prefix="parking-promote-") as tmp,
        mlflow.start_run(run_name="promotion", tags={"run_kind": "promotion", "dataset_version": data.version}),
    ):
        work = Path(tmp)
        t0 = time.perf_counter()
        ch_metrics, ch_source = _evaluate_version(settings, challenger, data, work, "challenger")
        sources = {"challenger": ch_source}
        champ_metrics = None
        if champion is not None:
            champ_metrics, sources["champion"] = _evaluate_version(settings, champion, data, work, "champion")
        promoted, reason = decide(ch_metrics, champ_metrics, settings, primary, margin=margin)
        decision = Decision(
            promoted, reason, challenger.version, champ_v, primary, ch_metrics, champ_metrics or {}, sources
        )
        _record_decision(settings, decision, margin, work, time.perf_counter() - t0)
        if promoted:
            move_champion(settings, challenger.version, reason, kind="gate")
    logger.info("promotion decision", extra={"promoted": promoted, "reason": reason, "holdout_sources": sources})
    return decision.to_dict()


def _record_decision(settings: Settings, decision: Decision, margin: float, work: Path, eval_s: float) -> None:
    """The promotion run's params, metrics and artifacts, and the challenger version's decision tags."""
    import mlflow

    from parking_ml.model import registry

    ch_metrics, champ_metrics = decision.challenger_metrics, decision.champion_metrics
    verdict = "promoted" if decision.promoted else "rejected"
    mlflow.log_params(
        {
            "challenger_version": decision.challenger_version,
            "champion_version": decision.champion_version or "none",
            "primary_metric": decision.primary_metric,
            "margin": margin,
            "tolerance": settings.promotion_tolerance,
            "min_quality": settings.promotion_min_quality,
            **{f"{side}_holdout": source for side, source in decision.holdout_sources.items()},
        }
    )
    mlflow.log_metrics(scalar_metrics(ch_metrics, prefix="challenger_"))
    if champ_metrics:
        mlflow.log_metrics(scalar_metrics(champ_metrics, prefix="champion_"))
    mlflow.log_metric("eval_s", eval_s)
    mlflow.set_tags({"promotion_decision": verdict, "reason": decision.reason[:5000]})
    for name, payload in (
        ("challenger_eval.json", ch_metrics),
        ("champion_eval.json", champ_metrics),
        ("decision.json", decision.to_dict()),
    ):
        (work / name).write_text(json.dumps(payload, indent=2, default=float))
        mlflow.log_artifact(str(work / name))
    registry.set_version_tags(
        settings,
        decision.challenger_version,
        {
            "promotion_decision": verdict,
            "promotion_reason": decision.reason[:5000],
            **{f"promotion_{k}": v for k, v in scalar_metrics(ch_metrics).items()},
        },
    )


def move_champion(settings: Settings, version: str | int, reason: str, kind: str) -> dict:
    """Point `champion` at version, remembering the previous one (tag + history) for rollback."""
    from parking_ml.model import registry

    version = str(version)
    registry.get_version(settings, version)  # a clear MLflow error when the version does not exist
    current = registry.get_alias_version(settings, settings.model_alias)
    previous = current.version if current is not None else None
    registry.set_alias(settings, settings.model_alias, version)
    registry.set_version_tags(settings, version, {"previous_champion": previous or "none"})
    entry = {"version": version, "previous": previous, "kind": kind, "reason": reason, "at": time.time()}
    registry.record_champion_move(settings, entry)
    logger.info("champion moved", extra=entry)
    return entry


def manual_promote(settings: Settings, version: str | int, reason: str) -> dict:
    """`parking-ml model promote --version N --reason ...`: an operator's decision, bypassing the gate."""
    from parking_ml.model import registry

    if not reason.strip():
        raise ValueError(f"making v{version} champion by hand needs a reason; it is recorded in the registry")
    entry = move_champion(settings, version, reason, kind="manual")
    registry.set_version_tags(settings, version, {"promotion_decision": "manual", "promotion_reason": reason})
    return entry


def rollback(settings: Settings, reason: str = "rollback") -> dict:
    """Point `champion` back at the version it replaced (walks further back on repeated rollbacks)."""
    from parking_ml.model import registry

    current = registry.get_alias_version(settings, settings.model_alias)
    if current is None:
        raise ValueError(f"{settings.model_name} has no {settings.model_alias!r} alias; nothing to roll back")
    history = registry.champion_history(settings)
    moves = [h for h in history if h["kind"] != "rollback" and h["version"] == current.version]
    previous = moves[-1]["previous"] if moves else None
    if previous is None:
        tag = (current.tags or {}).get("previous_champion")
        previous = tag if tag and tag != "none" else None
    if previous is None:
        raise ValueError(
            f"v{current.version} has no previous champion to roll back to; use "
            "`parking-ml model promote --version N --reason ...`"
        )
    registry.set_alias(settings, settings.model_alias, previous)
    entry = {
        "version": str(previous),
        "previous": current.version,
        "kind": "rollback",
        "reason": reason,
        "at": time.time(),
    }
    registry.record_champion_move(settings, entry)
    registry.set_version_tags(settings, current.version, {"rolled_back": reason[:5000]})
    logger.info("champion rolled back", extra=entry)
    return entry
