"""The final fit and the whole `parking-ml train`: tune (see tune), fit on every training fold within the
time budget, package, score on the holdout through the serving code, register the challenger.

The "final-fit" MLflow run (nested under the study's) logs curves, overlays, the confusion matrix and eval.json,
the trained network (a start for later fits) and registers the model version with alias `challenger`.
"""

from __future__ import annotations

import json
import logging
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from parking_ml.config import Settings
from parking_ml.data.processed import ProcessedData, evenly_spaced, holdout_rows, load_processed, training_rows
from parking_ml.model.budget import plan_final_fit
from parking_ml.model.profiles import TrainProfile, get_profile
from parking_ml.model.recipe import (
    cv_objective,
    decoder_channels,
    final_fit_loader,
    fit_config,
    init_weights_path,
    lr_scale_for,
    model_gsd,
    new_model,
    preprocess_config,
)
from parking_ml.model.tune import best_params_of, run_study, study_name, study_run

logger = logging.getLogger(__name__)

# why: a few hundred rows pin each drift feature's distribution, and each tile is predicted as the API would
REFERENCE_MAX_TILES = 200

# the final-fit run's artifact holding the trained network's state dict (a start for later fits)
NETWORK_FILE = "network.pt"


@dataclass
class TrainOutcome:
    study_name: str
    dataset_version: str
    profile: str
    trials_run: int
    best_params: dict
    cv_metrics: dict
    holdout_metrics: dict
    model_name: str
    model_version: str
    run_id: str
    model_uri: str
    timings_s: dict = field(default_factory=dict)
    final_fit_steps: int = 0
    final_fit_planned_steps: int = 0  # more than final_fit_steps when the profile's time budget cut the fit

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Fitted:
    """A trained network with the serving contract it ships under and how its fit went."""

    model: Any
    serving: Any
    result: Any  # train.FitResult
    fit_s: float


@dataclass
class Scored:
    """A packaged model in a temporary directory, with its holdout metrics."""

    package: Path
    holdout: dict


def git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and sha else "unknown"


def fit_final_model(
    settings: Settings,
    data: ProcessedData,
    profile: TrainProfile,
    params: dict,
    progress: bool,
    tuning_s: float,
    time_budget_s: float | None,
) -> Fitted:
    """Fit on all training folds (inside the active final-fit run) within the budget plan_final_fit makes."""
    import mlflow

    from parking_ml.model.train import fit, resolve_device, seed_everything, use_cpu_bf16

    device = resolve_device(settings.device)
    bf16 = use_cpu_bf16(settings.cpu_bf16)
    train_rows, hold_rows = training_rows(data.manifest), holdout_rows(data.manifest)
    seed_everything(settings.seed)
    model = new_model(params, profile, settings)
    lr_scale = lr_scale_for(model, profile)
    serving = preprocess_config(profile, settings, train_rows, data.root)
    n_after = len(hold_rows) + len(evenly_spaced(train_rows, REFERENCE_MAX_TILES))
    probe_rows = hold_rows if not hold_rows.empty else train_rows
    plan = plan_final_fit(
        profile, model, serving, data.root, probe_rows, n_after, settings.threads, tuning_s, time_budget_s
    )
    if plan.fit_s is not None:
        logger.info(
            "final fit budget",
            extra={
                "train_budget_s": profile.train_budget_s,
                "tuning_s": round(tuning_s, 1),
                "after_fit_estimate_s": round(plan.after_fit_s, 1),
                "fit_s": round(plan.fit_s, 1),
            },
        )
    mlflow.log_params(
        {
            **params,
            "epochs": profile.final_epochs,
            "train_tiles": len(train_rows),
            "time_budget_s": None if plan.fit_s is None else round(plan.fit_s, 1),
            "after_fit_estimate_s": round(plan.after_fit_s, 1),
            "cpu_bf16": bf16 and device.type == "cpu",
            "lr_scale": lr_scale,
        }
    )
    loader = final_fit_loader(data, train_rows, profile, params, settings, settings.seed)
    cfg = fit_config(
        params,
        profile,
        profile.final_epochs,
        settings.objective_metric,
        progress,
        time_budget_s=plan.fit_s,
        cpu_bf16=bf16,
        lr_scale=lr_scale,
    )
    t0 = time.perf_counter()
    result = fit(
        model,
        loader,
        None,
        cfg,
        device,
        on_epoch=lambda e, r: mlflow.log_metrics({"train_loss": r["train_loss"]}, step=e),
        rebudget=plan.rebudget,
    )
    fit_s = time.perf_counter() - t0
    mlflow.log_metrics({"final_fit_steps": result.steps_run, "final_fit_planned_steps": result.planned_steps})
    if plan.mid_fit:
        # what the estimate taken halfway through the fit made of the budget
        mid = {k: round(v, 1) for k, v in plan.mid_fit.items()}
        mlflow.log_params({**mid, "time_budget_mid_s": round(result.time_budget_s or 0.0, 1)})
    return Fitted(model, serving, result, fit_s)


def package_and_score(
    tmp_dir: Path,
    settings: Settings,
    data: ProcessedData,
    profile: TrainProfile,
    params: dict,
    cv: dict,
    fitted: Fitted,
    progress: bool,
) -> Scored:
    """Package the fitted network under ``tmp_dir``, score it on the holdout through the serving code, add the
    drift reference, and log the figures, eval.json and the network's state dict to the active run."""
    import mlflow
    import torch

    from parking_ml.model import evaluation
    from parking_ml.model.metrics import scalar_metrics
    from parking_ml.model.package import REFERENCE_FILE, build_package

    hold_rows = holdout_rows(data.manifest)
    ref_rows = evenly_spaced(training_rows(data.manifest), REFERENCE_MAX_TILES)
    pkg = tmp_dir / "package"
    info = build_package(fitted.model.cpu(), fitted.serving, pkg, None, profile.tile_size)
    holdout: dict = {}
    if hold_rows.empty:
        logger.warning("no holdout tiles: the version carries no holdout metrics", extra={"dataset": data.version})
    else:
        holdout, items = evaluation.evaluate_package(pkg, data.root, hold_rows, settings.threads, progress)
        evaluation.overlays_png(items, tmp_dir / "overlays.png")
        evaluation.confusion_png(holdout["confusion"], tmp_dir / "confusion_matrix.png")
        mlflow.log_artifact(str(tmp_dir / "overlays.png"))
        mlflow.log_artifact(str(tmp_dir / "confusion_matrix.png"))
        mlflow.log_metrics(scalar_metrics(holdout, prefix="holdout_"))
    train_items = evaluation.predict_tiles(pkg, data.root, ref_rows, settings.threads, progress, keep_free_prob=False)
    evaluation.reference_features(train_items).to_parquet(pkg / REFERENCE_FILE, index=False)
    history = fitted.result.history
    evaluation.curves_png({"train_loss": [h["train_loss"] for h in history]}, tmp_dir / "learning_curves.png")
    mlflow.log_artifact(str(tmp_dir / "learning_curves.png"))
    report = {
        "dataset_version": data.version,
        "profile": profile.name,
        "params": params,
        "cv": cv,
        "holdout": holdout,
        **({evaluation.HOLDOUT_STAMP_KEY: evaluation.holdout_stamp(pkg, data.version)} if holdout else {}),
        "history": history,
        "parity_max_abs_diff": info.parity_max_abs_diff,
    }
    (tmp_dir / "eval.json").write_text(json.dumps(report, indent=2, default=float))
    mlflow.log_artifact(str(tmp_dir / "eval.json"))
    # the trained network itself (the package holds its ONNX export only): Settings.init_weights can start from it
    state = {k: v.detach().cpu() for k, v in fitted.model.state_dict().items()}
    torch.save(state, tmp_dir / NETWORK_FILE)
    mlflow.log_artifact(str(tmp_dir / NETWORK_FILE))
    mlflow.log_metric("onnx_parity_max_abs_diff", info.parity_max_abs_diff)
    return Scored(pkg, holdout)


def register(settings: Settings, data: ProcessedData, profile: TrainProfile, cv: dict, name: str, scored: Scored):
    """Register the scored package as the challenger, tagged with its data, code, study and scores."""
    from parking_ml.model.metrics import scalar_metrics
    from parking_ml.model.registry import log_and_register

    tags = {
        "dataset_version": data.version,
        "git_sha": git_sha(),
        "profile": profile.name,
        "optuna_study": name,
        "objective_metric": settings.objective_metric,
        "cv_objective": cv_objective(profile, settings),
        **{f"cv_{k}": v for k, v in cv.items()},
        **{f"holdout_{k}": v for k, v in scalar_metrics(scored.holdout).items()},
    }
    return log_and_register(scored.package, settings, tags, alias=settings.challenger_alias)


def final_fit(
    settings: Settings,
    data: ProcessedData,
    profile: TrainProfile,
    params: dict,
    cv: dict,
    name: str,
    progress: bool = True,
    tuning_s: float = 0.0,
    time_budget_s: float | None = None,
) -> TrainOutcome:
    """Fit on all training folds, package + evaluate on the holdout through the serving code, register.

    ``tuning_s``: seconds tuning took of the profile's train_budget_s; the fit gets the rest, less the inference
    after it (see budget.after_fit_estimate_s). ``time_budget_s``: the fit's own wall-clock budget instead (the
    benchmark gives its peer our fit's time); nothing is then estimated."""
    import mlflow

    from parking_ml.model.metrics import scalar_metrics

    with mlflow.start_run(run_name="final-fit", nested=True, tags={"run_kind": "final_fit", "optuna_study": name}):
        fitted = fit_final_model(settings, data, profile, params, progress, tuning_s, time_budget_s)
        with tempfile.TemporaryDirectory(prefix="parking-final-") as tmp:
            scored = package_and_score(Path(tmp), settings, data, profile, params, cv, fitted, progress)
            version = register(settings, data, profile, cv, name, scored)
    return TrainOutcome(
        study_name=name,
        dataset_version=data.version,
        profile=profile.name,
        trials_run=0,
        best_params=params,
        cv_metrics=cv,
        holdout_metrics=scalar_metrics(scored.holdout),
        model_name=version.name,
        model_version=version.version,
        run_id=version.run_id,
        model_uri=version.model_uri,
        timings_s={"final_fit": round(fitted.fit_s, 2)},
        final_fit_steps=fitted.result.steps_run,
        final_fit_planned_steps=fitted.result.planned_steps,
    )


def study_params(settings: Settings, data: ProcessedData, profile: TrainProfile) -> dict[str, Any]:
    """What the study's run logs of the recipe: with the trial's encoder, what rebuilds the network."""
    from parking_ml.model.train import use_cpu_bf16

    return {
        "dataset_version": data.version,
        "profile": profile.name,
        "cv_epochs": profile.cv_epochs,
        "final_epochs": profile.final_epochs,
        "tile_size": profile.tile_size,
        "crop_size": profile.crop_size,
        "model_gsd": model_gsd(profile, settings),
        "arch": profile.arch,
        "encoder_depth": profile.encoder_depth,
        "decoder_channels": json.dumps(decoder_channels(profile, settings)),
        "gap_weight": profile.gap_weight,
        "init_weights": str(init_weights_path(profile, settings) or "none"),
        "train_budget_s": profile.train_budget_s,
        "tta": profile.tta,
        "cpu_bf16": use_cpu_bf16(settings.cpu_bf16),
        "objective": settings.objective_metric,
        "cv_objective": cv_objective(profile, settings),
        "search_space": json.dumps(asdict(profile.space))[:6000],
    }


def tune_and_register(
    settings: Settings, data: ProcessedData, n_trials: int | None = None, progress: bool = True
) -> TrainOutcome:
    """The whole `parking-ml train` on already-materialised data."""
    import mlflow
    import torch

    torch.set_num_threads(settings.threads)
    profile = get_profile(settings.profile)
    n_trials = n_trials or settings.n_trials or profile.n_trials
    name = study_name(settings, data.version, profile)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    study_tags = {"dataset_version": data.version, "profile": profile.name, "model_name": settings.model_name}
    t0 = time.perf_counter()
    with study_run(settings, name, study_tags):
        mlflow.log_params(study_params(settings, data, profile))
        mlflow.set_tag("n_trials", str(n_trials))  # a tag: a resumed study may ask for more trials
        study, ran = run_study(settings, data, profile, n_trials, progress)
        tune_s = time.perf_counter() - t0
        params, cv = best_params_of(study, profile)
        outcome = final_fit(settings, data, profile, params, cv, name, progress, tuning_s=tune_s)
    outcome.trials_run = ran
    outcome.timings_s["tuning"] = round(tune_s, 2)
    logger.info("registered challenger", extra={"version": outcome.model_version, "study": name})
    return outcome


def run_training(settings: Settings, n_trials: int | None = None, dataset_version: str | None = None) -> dict:
    """Entry point for the CLI and the DAG: latest (or given) processed data -> registered challenger."""
    data = load_processed(settings, dataset_version)
    return tune_and_register(settings, data, n_trials=n_trials).to_dict()
