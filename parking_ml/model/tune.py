"""`parking-ml train`'s tuning: Optuna trials scored by cross-validation over site-grouped folds.

MLflow layout: one parent run per study (re-opened when a killed run resumes), a nested run per trial, and
under each trial a nested run per fold (the final fit's run follows: see final_fit). The study lives in
Settings.optuna_storage (SQLite locally, Postgres in production), so rerunning the same command resumes it:
finished trials are kept, a trial that was running when the process died is re-queued.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from parking_ml.config import Settings
from parking_ml.data.processed import ProcessedData, cv_folds, fold_split
from parking_ml.model.budget import stop_before_overrun
from parking_ml.model.profiles import TrainProfile
from parking_ml.model.recipe import (
    SUMMARY_METRICS,
    cv_objective,
    default_params,
    fit_config,
    init_weights_path,
    load_val_tiles,
    lr_scale_for,
    make_loader,
    model_gsd,
    new_model,
    preprocess_config,
    suggest,
)

logger = logging.getLogger(__name__)


def _summarise(per_fold: list[dict]) -> dict:
    out: dict[str, float] = {}
    for key in SUMMARY_METRICS:
        values = [float(m[key]) for m in per_fold if key in m]
        if values:
            out[f"{key}_mean"] = float(np.mean(values))
            out[f"{key}_std"] = float(np.std(values))
    return out


def cross_validate(
    params: dict,
    data: ProcessedData,
    profile: TrainProfile,
    settings: Settings,
    report: Callable[[int, float], None] | None = None,
    progress: bool = True,
) -> dict:
    """Train one model per fold (nested MLflow run each); return mean/std of the validation metrics.

    report(step, value) gets the fold's objective after every epoch (step = fold index * epochs + epoch);
    it may raise optuna.TrialPruned, which ends the fold run as KILLED and propagates.
    """
    import mlflow

    per_fold: list[dict] = []
    for index, fold in enumerate(cv_folds(data.manifest)):
        rows = fold_split(data.manifest, fold)
        mlflow.start_run(run_name=f"fold-{fold}", nested=True, tags={"run_kind": "fold"})
        status = "FINISHED"
        try:
            per_fold.append(_fit_fold(params, data, profile, settings, index, fold, rows, report, progress))
        except Exception as exc:
            status = "KILLED" if type(exc).__name__ == "TrialPruned" else "FAILED"
            raise
        finally:
            mlflow.end_run(status=status)
    summary = _summarise(per_fold)
    summary["folds"] = len(per_fold)
    return summary


def _fit_fold(
    params: dict,
    data: ProcessedData,
    profile: TrainProfile,
    settings: Settings,
    index: int,
    fold: int,
    rows: tuple[pd.DataFrame, pd.DataFrame],
    report: Callable[[int, float], None] | None,
    progress: bool,
) -> dict:
    """Train on ``rows``' training part and validate on its ``fold`` part (fold_split; inside the fold's active
    run); -> the best epoch's metrics."""
    import mlflow

    from parking_ml.model.metrics import scalar_metrics
    from parking_ml.model.train import fit, make_validator, resolve_device, seed_everything, use_cpu_bf16

    device = resolve_device(settings.device)
    objective = cv_objective(profile, settings)
    train_rows, val_rows = rows
    mlflow.log_params(
        {
            "fold": fold,
            "train_tiles": len(train_rows),
            "val_tiles": len(val_rows),
            "val_sites": ",".join(sorted(map(str, val_rows["site"].unique())))[:500],
        }
    )
    seed_everything(settings.seed + fold)
    model = new_model(params, profile, settings)
    lr_scale = lr_scale_for(model, profile)
    mlflow.log_param("lr_scale", lr_scale)
    train_loader = make_loader(
        data.root,
        train_rows,
        profile.crop_size or profile.tile_size,
        int(params["batch_size"]),
        params["aug_strength"],
        settings.seed + fold,
        model_gsd(profile, settings),
        profile.gap_weight,
        data.decoded,
    )
    # why: the folds only rank trials, and test-time augmentation would cost much of the tuning budget
    # (docs/experiments/tta.md)
    serving = preprocess_config(profile, settings, train_rows, data.root)
    validate = make_validator(
        load_val_tiles(data.root, val_rows, profile.max_val_tiles), replace(serving, tta="none"), device
    )

    def on_epoch(epoch: int, record: dict) -> None:
        mlflow.log_metrics(scalar_metrics(record), step=epoch)
        if report is not None:
            report(index * profile.cv_epochs + epoch, float(record[f"val_{objective}"]))

    cfg = fit_config(
        params,
        profile,
        profile.cv_epochs,
        objective,
        progress,
        profile.cv_steps_per_epoch,
        cpu_bf16=use_cpu_bf16(settings.cpu_bf16),
        lr_scale=lr_scale,
    )
    result = fit(model, train_loader, validate, cfg, device, on_epoch=on_epoch)
    best = result.history[result.best_epoch]
    metrics = {k.removeprefix("val_"): v for k, v in best.items() if k.startswith("val_")}
    mlflow.log_metrics(scalar_metrics(metrics, prefix="best_"))
    mlflow.log_metric("best_epoch", result.best_epoch)
    return metrics


def init_weights_tag(profile: TrainProfile, settings: Settings) -> str:
    """The tag "new", or the starting weights' file stem and the first 8 hex digits of its content's sha256: a file
    retrained under the same name gets another tag."""
    path = init_weights_path(profile, settings)
    if path is None:
        return "new"
    if not path.is_file():
        from parking_ml.model.network import WeightsError

        raise WeightsError(
            f"starting weights file {path} does not exist; set PARKING_INIT_WEIGHTS to a state-dict file, "
            "or to none for a new network"
        )
    from parking_ml.data.validation import sha256

    return f"{path.stem}-{sha256(path.read_bytes())[:8]}"


def study_name(settings: Settings, dataset_version: str, profile: TrainProfile) -> str:
    """One study per model, dataset, profile, objective and starting weights: resuming a study scored on
    another metric would rank trials of one metric against values of the other, and trials that started
    from other weights against these."""
    objective = cv_objective(profile, settings)
    return f"{settings.model_name}-{dataset_version}-{profile.name}-{objective}-{init_weights_tag(profile, settings)}"


def _requeue(study: Any, trial: Any) -> None:
    """A dead process's trial runs again with the same parameters; its MLflow runs are closed as KILLED."""
    study.enqueue_trial(dict(trial.params))
    logger.warning("re-queued interrupted trial", extra={"study": study.study_name, "trial": trial.number})
    if trial.user_attrs.get("mlflow_run_id"):
        close_orphan_runs(str(trial.user_attrs["mlflow_run_id"]))


def _storage(settings: Settings):
    from parking_ml.model.study_store import make_storage

    url = settings.optuna_storage
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return make_storage(url, settings.optuna_heartbeat_s, _requeue)


def open_study(settings: Settings, name: str, profile: TrainProfile):
    """Create or load the study; a trial left RUNNING by a dead process is failed and re-queued, while the
    trials of processes still tuning the same study (here or on other machines) are left alone
    (see parking_ml.model.study_store)."""
    import optuna

    from parking_ml.model.study_store import create_or_load, fail_interrupted, grace_s

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study, created = create_or_load(
        name,
        _storage(settings),
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=settings.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=profile.cv_epochs),
    )
    if created and profile.seed_params:
        study.enqueue_trial(dict(profile.seed_params))
    fail_interrupted(study, grace_s(settings.optuna_heartbeat_s), _requeue)
    return study


def close_orphan_runs(run_id: str) -> None:
    """Mark a dead process's trial run and its unfinished fold runs KILLED, so MLflow shows no run as
    still going that nothing will ever finish."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(mlflow.get_tracking_uri())
    try:
        run = client.get_run(run_id)
        children = client.search_runs(
            [run.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{run_id}' and attributes.status = 'RUNNING'",
        )
        for child in children:
            client.set_terminated(child.info.run_id, status="KILLED")
        if run.info.status == "RUNNING":
            client.set_terminated(run_id, status="KILLED")
            client.set_tag(run_id, "interrupted", "true")
    except Exception:  # tracking is best effort here: the study itself is already repaired
        logger.warning("could not close the interrupted trial's MLflow runs", extra={"run_id": run_id}, exc_info=True)


def finished_trials(study: Any) -> int:
    from optuna.trial import TrialState

    return sum(1 for t in study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED))


def study_run(settings: Settings, name: str, tags: dict):
    """Start (or re-open, when resuming) the study's parent MLflow run."""
    import mlflow

    exp = mlflow.set_experiment(settings.model_name)
    found = mlflow.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.optuna_study = '{name}' and tags.run_kind = 'study'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    if found:
        return mlflow.start_run(run_id=found[0].info.run_id)
    return mlflow.start_run(run_name=f"study {name}", tags={**tags, "optuna_study": name, "run_kind": "study"})


def run_study(
    settings: Settings, data: ProcessedData, profile: TrainProfile, n_trials: int, progress: bool = True
) -> tuple[Any, int]:
    """Run trials until the study has n_trials finished ones (inside the active study run). -> (study, ran)."""
    import mlflow
    import optuna

    from parking_ml.model.metrics import scalar_metrics
    from parking_ml.model.study_store import optimize_shared

    name = study_name(settings, data.version, profile)
    study = open_study(settings, name, profile)
    before = finished_trials(study)
    remaining = max(0, n_trials - before)

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, profile.space)
        run = mlflow.start_run(run_name=f"trial-{trial.number}", nested=True, tags={"run_kind": "trial"})
        trial.set_user_attr("mlflow_run_id", run.info.run_id)
        mlflow.set_tags({"optuna_trial": str(trial.number), "optuna_study": name})
        mlflow.log_params(params)
        status = "FINISHED"

        def report(step: int, value: float) -> None:
            trial.report(value, step)
            if trial.should_prune():
                mlflow.set_tag("pruned", "true")
                raise optuna.TrialPruned(f"pruned at step {step} with {value:.4f}")

        try:
            summary = cross_validate(params, data, profile, settings, report=report, progress=progress)
            mlflow.log_metrics(scalar_metrics(summary, prefix="cv_"))
            for key, value in summary.items():
                trial.set_user_attr(key, value)
            return float(summary[f"{cv_objective(profile, settings)}_mean"])
        except optuna.TrialPruned:
            status = "KILLED"
            raise
        except Exception:
            status = "FAILED"
            raise
        finally:
            mlflow.end_run(status=status)

    ran = 0
    if remaining:
        logger.info("tuning", extra={"study": name, "trials_to_run": remaining, "profile": profile.name})
        ran = optimize_shared(
            study,
            objective,
            n_trials,
            timeout=profile.tuning_budget_s,
            callbacks=[stop_before_overrun(profile.tuning_budget_s)],
        )
    return study, ran


def best_params_of(study: Any, profile: TrainProfile) -> tuple[dict, dict]:
    """(params, cv summary) of the best finished trial; the profile default when no trial completed."""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not done:
        return default_params(profile), {}
    best = study.best_trial
    cv = {k: v for k, v in best.user_attrs.items() if k.endswith(("_mean", "_std"))}
    return dict(best.params), cv
