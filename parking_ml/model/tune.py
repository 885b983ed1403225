"""`parking-ml train`: Optuna CV tuning over site-grouped folds, a final fit, export and registration.

MLflow layout: one parent run per study (re-opened when a killed run resumes), a nested run per trial, and
under each trial a nested run per fold; then a "final-fit" run (nested under the study) that logs curves,
overlays, the confusion matrix and eval.json, and registers the model version with alias `challenger`.
The study lives in Settings.optuna_storage (SQLite locally, Postgres in production), so rerunning the same
command resumes it: finished trials are kept, a trial that was running when the process died is re-queued.
"""

from __future__ import annotations

import json
import logging
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from parking_ml.config import Settings
from parking_ml.data.tile_cache import BoundedTileCache, TileCache
from parking_ml.model.metrics import LOWER_IS_BETTER
from parking_ml.model.profiles import (
    SearchSpace,
    TrainProfile,
    decoder_for,
    final_fit_budget,
    get_profile,
    init_weights_for,
)

logger = logging.getLogger(__name__)

# the drift reference: features of at most this many training tiles (evenly spaced over sites and passes);
# a few hundred rows pin each feature's distribution, and each tile is predicted as the API predicts it (with
# the package's test-time augmentation: 8 network passes under "dihedral")
REFERENCE_MAX_TILES = 200

# the metrics summarised per trial (mean/std over folds) and copied to the version's tags
SUMMARY_METRICS = ("free_f1", "free_ap", "iou_free", "iou_occupied", "miou", "space_f1", "free_count_mae")


@dataclass(frozen=True)
class ProcessedData:
    root: Path
    manifest: pd.DataFrame
    version: str
    # tiles decoded at the model's gsd, shared by every fold, trial and the final fit of one training run
    decoded: TileCache = field(default_factory=dict, repr=False, compare=False)


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


# --- data ------------------------------------------------------------------------------------------


def load_processed(settings: Settings, version: str | None = None) -> ProcessedData:
    """Materialise processed/<version> (default: the latest) locally and read its manifest."""
    from parking_ml.data import processed
    from parking_ml.lake import Lake

    lake = Lake.from_settings(settings)
    version = version or processed.latest_version(lake)
    root = Path(processed.materialize(lake, version, settings.cache_dir))
    manifest = processed.load_manifest(root)
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


def make_loader(
    root: Path,
    rows: pd.DataFrame,
    crop_size: int,
    batch_size: int,
    aug: float,
    seed: int,
    model_gsd: float | None = None,
    gap_weight: float = 1.0,
    cache: bool | TileCache = True,
):
    """A shuffled training loader of random crops (at the model's gsd) with soft targets; ``cache``: see
    TileDataset (True: this loader's own)."""
    import torch
    from torch.utils.data import DataLoader

    from parking_ml.data.augment import build_train_transform
    from parking_ml.data.dataset import TileDataset

    transform = build_train_transform(crop_size, strength=float(aug), seed=seed, soft=True)
    ds = TileDataset(root, rows, transform, cache=cache, model_gsd=model_gsd, gap_weight=gap_weight)
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=True,
        drop_last=len(ds) > batch_size,
        # no worker process: a batch of 8 cached tiles takes 5 ms to crop and augment against a 66-ms step
        # (2 cores with AMX), and a worker competes with the step for the same cores (400-step fits: 73-74 ms
        # a step with one, 66-76 without)
        num_workers=0,
        generator=torch.Generator().manual_seed(seed),
    )


def evenly_spaced(rows: pd.DataFrame, limit: int | None) -> pd.DataFrame:
    """At most ``limit`` rows, spread evenly over the frame (None: all)."""
    if not limit or len(rows) <= limit:
        return rows
    return rows.iloc[np.unique(np.linspace(0, len(rows) - 1, limit).round().astype(int))]


def load_val_tiles(root: Path, rows: pd.DataFrame, limit: int | None = None) -> list:
    """Validation tiles at their own resolution (at most ``limit``, evenly spaced over the rows)."""
    from parking_ml.data.dataset import read_tile
    from parking_ml.model.train import ValTile

    rows = evenly_spaced(rows, limit)
    out = []
    has_gsd = "gsd" in rows.columns
    for row in rows.itertuples(index=False):
        rgb, truth = read_tile(root, str(row.tile_id))
        gsd = float(row.gsd) if has_gsd and pd.notna(row.gsd) else None
        out.append(ValTile(str(row.tile_id), rgb, truth, gsd))
    return out


def cv_objective(profile: TrainProfile, settings: Settings) -> str:
    """The metric CV folds (and so the study) maximise: the profile's choice, else the gate's primary metric."""
    name = profile.cv_objective or settings.objective_metric
    allowed = [m for m in SUMMARY_METRICS if m not in LOWER_IS_BETTER]
    if name not in allowed:
        raise ValueError(
            f"profile {profile.name!r}: cv_objective {name!r} is not a metric to maximise; use one of {allowed}"
        )
    return name


def model_gsd(profile: TrainProfile, settings: Settings) -> float | None:
    return settings.model_gsd or profile.model_gsd


# --- parameters --------------------------------------------------------------------------------------


def suggest(trial: Any, space: SearchSpace) -> dict:
    params = {
        "encoder": trial.suggest_categorical("encoder", list(space.encoders)),
        "lr": trial.suggest_float("lr", *space.lr, log=True),
        "weight_decay": trial.suggest_float("weight_decay", *space.weight_decay, log=True),
        "loss": trial.suggest_categorical("loss", list(space.losses)),
        "free_weight": trial.suggest_float("free_weight", *space.free_weight),
        "batch_size": trial.suggest_categorical("batch_size", list(space.batch_sizes)),
        "aug_strength": trial.suggest_float("aug_strength", *space.aug_strength),
    }
    params["optimizer"] = trial.suggest_categorical("optimizer", list(space.optimizers))
    if params["optimizer"] == "muon":
        params["muon_lr"] = trial.suggest_float("muon_lr", *space.muon_lr, log=True)
    return params


def default_params(profile: TrainProfile) -> dict:
    if profile.seed_params:
        return dict(profile.seed_params)
    s = profile.space
    params = {
        "encoder": s.encoders[0],
        "lr": float(np.sqrt(s.lr[0] * s.lr[1])),
        "weight_decay": float(np.sqrt(s.weight_decay[0] * s.weight_decay[1])),
        "loss": s.losses[0],
        "free_weight": float(np.mean(s.free_weight)),
        "batch_size": s.batch_sizes[0],
        "aug_strength": float(np.mean(s.aug_strength)),
    }
    params["optimizer"] = s.optimizers[0]
    if params["optimizer"] == "muon":
        params["muon_lr"] = float(np.sqrt(s.muon_lr[0] * s.muon_lr[1]))
    return params


def fit_config(
    params: dict,
    profile: TrainProfile,
    epochs: int,
    objective: str,
    progress: bool = True,
    steps_per_epoch: int | None = None,
    time_budget_s: float | None = None,
    cpu_bf16: bool = False,
    lr_scale: float = 1.0,
):
    """The fit's settings from a trial's parameters; ``lr_scale`` multiplies both peak learning rates (see
    lr_scale_for)."""
    from parking_ml.model.train import FitConfig

    return FitConfig(
        epochs=epochs,
        lr=float(params["lr"]) * lr_scale,
        weight_decay=float(params["weight_decay"]),
        loss=str(params["loss"]),
        class_weights=(1.0, float(params["free_weight"]), 1.0),
        patience=profile.patience,
        scheduler=profile.scheduler,
        steps_per_epoch=steps_per_epoch or profile.steps_per_epoch,
        objective=objective,
        progress=progress,
        time_budget_s=time_budget_s,
        cpu_bf16=cpu_bf16,
        # parameters of studies from before the optimizer was searched name none: AdamW
        optimizer=str(params.get("optimizer", "adamw")),
        **({"muon_lr": float(params["muon_lr"]) * lr_scale} if "muon_lr" in params else {}),
    )


def trains_fp32_on_cpu(settings: Settings) -> bool:
    """Whether these settings train on a CPU in fp32 (no bf16 hardware, or bf16 turned off)."""
    from parking_ml.model.train import resolve_device, use_cpu_bf16

    return resolve_device(settings.device).type == "cpu" and not use_cpu_bf16(settings.cpu_bf16)


def decoder_channels(profile: TrainProfile, settings: Settings) -> tuple[int, ...] | None:
    """The profile's decoder for the device and precision these settings train with (see decoder_for)."""
    return decoder_for(profile, trains_fp32_on_cpu(settings))


# where profiles' shipped starting weights (TrainProfile.init_weights) lie
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"


def init_weights_path(profile: TrainProfile, settings: Settings) -> Path | None:
    """The whole-network weights a fit starts from: ``settings.init_weights`` (a file; "none": a new network),
    else the file the profile ships for the decoder this machine trains (None: a new network)."""
    chosen = settings.init_weights
    if chosen is not None:
        return None if chosen.strip().lower() == "none" else Path(chosen).expanduser()
    shipped = init_weights_for(profile, trains_fp32_on_cpu(settings))
    return WEIGHTS_DIR / shipped if shipped else None


# attribute new_model sets on a network it loaded trained weights into: the file's path
STARTED_FROM = "parking_started_from"


def lr_scale_for(model: Any, profile: TrainProfile) -> float:
    """profile.pretrained_lr_scale for a network new_model started from trained weights, else 1: the searched
    learning rates are a new network's, and a trained one keeps more of what it knows at a fraction of them."""
    return profile.pretrained_lr_scale if getattr(model, STARTED_FROM, None) else 1.0


def new_model(params: dict, profile: TrainProfile, settings: Settings):
    """The network a fold or final fit trains: the profile's, from init_weights_path's weights when any.

    A file the user names must fit (WeightsError otherwise). The profile ships a file per decoder (a bf16 CPU
    or a GPU trains decoder_channels, a CPU without bf16 hardware may train a narrower one: decoder_for); one
    that does not fit (the network changed, scripts/pretrain_demo.py not rerun) starts new, with a warning."""
    from parking_ml.model.network import WeightsMismatchError, build_model, load_network_weights

    model = build_model(
        profile.arch,
        str(params["encoder"]),
        settings.encoder_weights,
        3,
        decoder_channels(profile, settings),
        encoder_depth=profile.encoder_depth,
    )
    path = init_weights_path(profile, settings)
    if path is None:
        return model
    try:
        load_network_weights(model, path)
        setattr(model, STARTED_FROM, str(path))
    except WeightsMismatchError:
        if settings.init_weights is not None:
            raise
        logger.warning(
            "the profile's starting weights do not fit the network this machine trains: starting from a new one",
            extra={"profile": profile.name, "path": str(path), "decoder_channels": decoder_channels(profile, settings)},
        )
    return model


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


# --- cross-validation --------------------------------------------------------------------------------


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

    from parking_ml.model.metrics import scalar_metrics
    from parking_ml.model.train import fit, make_validator, resolve_device, seed_everything, use_cpu_bf16

    device = resolve_device(settings.device)
    bf16 = use_cpu_bf16(settings.cpu_bf16)
    objective = cv_objective(profile, settings)
    per_fold: list[dict] = []
    for index, fold in enumerate(cv_folds(data.manifest)):
        train_rows, val_rows = fold_split(data.manifest, fold)
        mlflow.start_run(run_name=f"fold-{fold}", nested=True, tags={"run_kind": "fold"})
        status = "FINISHED"
        try:
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
            bs = int(params["batch_size"])
            train_loader = make_loader(
                data.root,
                train_rows,
                profile.crop_size or profile.tile_size,
                bs,
                params["aug_strength"],
                settings.seed + fold,
                model_gsd(profile, settings),
                profile.gap_weight,
                data.decoded,
            )
            # without test-time augmentation: the folds rank trials, and 8 passes per tile would cost the
            # demo's tuning a third of its time
            serving = preprocess_config(profile, settings, train_rows, data.root)
            validate = make_validator(
                load_val_tiles(data.root, val_rows, profile.max_val_tiles),
                replace(serving, tta="none"),
                device,
            )

            def on_epoch(epoch: int, record: dict, _index: int = index) -> None:
                mlflow.log_metrics(scalar_metrics(record), step=epoch)
                if report is not None:
                    report(_index * profile.cv_epochs + epoch, float(record[f"val_{objective}"]))

            result = fit(
                model,
                train_loader,
                validate,
                fit_config(
                    params,
                    profile,
                    profile.cv_epochs,
                    objective,
                    progress,
                    profile.cv_steps_per_epoch,
                    cpu_bf16=bf16,
                    lr_scale=lr_scale,
                ),
                device,
                on_epoch=on_epoch,
            )
            best = result.history[result.best_epoch]
            metrics = {k.removeprefix("val_"): v for k, v in best.items() if k.startswith("val_")}
            mlflow.log_metrics(scalar_metrics(metrics, prefix="best_"))
            mlflow.log_metric("best_epoch", result.best_epoch)
            per_fold.append(metrics)
        except Exception as exc:
            status = "KILLED" if type(exc).__name__ == "TrialPruned" else "FAILED"
            raise
        finally:
            mlflow.end_run(status=status)
    summary = _summarise(per_fold)
    summary["folds"] = len(per_fold)
    return summary


# --- the study -----------------------------------------------------------------------------------


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


def _study_run(settings: Settings, name: str, tags: dict):
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


def stop_before_overrun(budget_s: float | None, clock: Callable[[], float] = time.perf_counter) -> Callable:
    """An Optuna callback that stops the study when one more trial, at the mean pace of the trials this call
    ran, would end past ``budget_s`` of tuning. Optuna's own timeout only refuses to start a trial after the
    budget: on 2 fp32 cores the demo's two trials took 180-184 s of its 150, time the final fit then lacked."""
    start = clock()
    ran = 0

    def callback(study: Any, trial: Any) -> None:
        nonlocal ran
        ran += 1
        if budget_s is None:
            return
        elapsed = clock() - start
        pace = elapsed / ran
        if elapsed + pace > budget_s:
            logger.info(
                "tuning: the next trial would end past the tuning budget; stopping",
                extra={"elapsed_s": round(elapsed, 1), "trial_s": round(pace, 1), "budget_s": budget_s},
            )
            study.stop()

    return callback


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


# --- final fit, package, register ------------------------------------------------------------------


def preprocess_config(profile: TrainProfile, settings: Settings, rows: pd.DataFrame, root: Path) -> Any:
    """The serving contract for a model trained on ``rows``: normalisation, tile size, the model's gsd
    (imagery is resampled to it), and a speck filter scaled to the labelled spaces."""
    import cv2

    from parking_ml.data.augment import NORMALIZE_MEAN, NORMALIZE_STD
    from parking_ml.data.dataset import read_tile
    from parking_ml.inference import PreprocessConfig

    native = None
    if "gsd" in rows.columns and rows["gsd"].notna().any():
        native = float(rows["gsd"].median())
    work = model_gsd(profile, settings)
    gsd = work or native
    areas: list[float] = []
    for row in rows.head(50).itertuples(index=False):
        _, mask = read_tile(root, str(row.tile_id))
        _, _, stats, _ = cv2.connectedComponentsWithStats((mask == 1).astype(np.uint8), connectivity=8)
        row_gsd = getattr(row, "gsd", None)
        # areas at the model's gsd: the filter is applied at min_area_for(image gsd) = this x (gsd / image)^2
        factor = (float(row_gsd) / gsd) ** 2 if gsd and row_gsd is not None and pd.notna(row_gsd) else 1.0
        areas.extend(float(a) * factor for a in stats[1:, cv2.CC_STAT_AREA])
    # a tenth of the median space: a third of the smallest space still labelled at a tile edge (30 % inside),
    # so partial spaces stay; on the demo holdout it cut the count error 2.64 -> 2.5 against the old filter
    # (a fifth of the 10th percentile, ~8 px), which let fragments of blurred spaces count as spaces
    min_area = max(4, int(0.1 * np.median(areas))) if areas else 20
    return PreprocessConfig(
        mean=tuple(NORMALIZE_MEAN),
        std=tuple(NORMALIZE_STD),
        tile_size=profile.tile_size,
        overlap=min(settings.tile_overlap, profile.tile_size // 4),
        pad_multiple=32,
        min_area_px=min_area,
        gsd=gsd,
        resample=work is not None,
        default_image_gsd=native,
        tta=profile.tta,
        grow_px=profile.grow_px,
        **({"grow_prob": profile.grow_prob} if profile.grow_prob is not None else {}),
    )


# the final-fit run's artifact holding the trained network's state dict (a start for later fits)
NETWORK_FILE = "network.pt"


# The work after the fit on 2 AVX2 cores (demo, 675 holdout and 200 reference tiles), three runs: 104 / 112 /
# 110 s, of which 68 / 78 / 74 s of served predictions where the untrained probe's pace said 55 / 45 / 34 s (a
# trained model's maps hold more spaces to trace, and two probe tiles are a noisy sample), and 30-36 s of
# scoring, figures, MLflow logging and registration whatever the tiles. 2 covers all but the noisiest probe
TRAINED_PACE_FACTOR = 2.0
AFTER_FIT_FIXED_S = 30.0
# Halfway through the fit (train.REBUDGET_AT) the estimate is taken again on the model as it is then, whose
# maps are nearly a trained one's: a little margin and more tiles instead of 2x. On a Zen 5 EPYC (bf16) the
# untrained probe's 145 s had left 66 s of the 560-s budget unused (79 s of work after a 368-s fit). Tiles
# differ 2.5x in pace (38-97 ms: their gsd sets their size on the model's grid), so 10 of them
MID_FIT_PACE_FACTOR = 1.2
MID_FIT_PROBES = 10


def after_fit_estimate_s(
    model: Any,
    serving: Any,
    root: Path,
    rows: pd.DataFrame,
    n_tiles: int,
    threads: int,
    probes: int = 2,
    pace_factor: float = TRAINED_PACE_FACTOR,
) -> float:
    """Wall seconds the work after the final fit will take: the ONNX export and parity check, timed on this
    network, and ``n_tiles`` tiles of served inference (its test-time augmentation included) at the pace of
    ``probes`` tiles of ``rows`` after a warm-up one, times ``pace_factor`` (an untrained model's maps take
    less post-processing than a trained one's: TRAINED_PACE_FACTOR), plus AFTER_FIT_FIXED_S. The network's
    cost is known before it is trained, so a machine too slow for the planned fit gives the fit less time
    instead of overrunning the budget (the dihedral holdout took 140 s of a 636-s training stage on 2 AVX2
    cores); halfway through the fit the estimate is taken again on the model as it is then."""
    from parking_ml.data.dataset import read_tile
    from parking_ml.inference import OnnxSegmenter, predict
    from parking_ml.model.package import build_package

    with tempfile.TemporaryDirectory(prefix="parking-probe-") as tmp:
        t0 = time.perf_counter()
        build_package(model, serving, Path(tmp), None, serving.tile_size)
        segmenter = OnnxSegmenter.from_dir(Path(tmp), threads=threads)
        export_s = time.perf_counter() - t0
        # spread over the rows, not their head: one site's tiles share a gsd, and so a size on the model's
        # grid (a demo holdout's first 7 tiles, all at 0.149 m/px, took 76-94 ms; 120 spread over it 57 ms)
        sample = evenly_spaced(rows, probes + 1)
        paces = []
        for row in sample.itertuples(index=False):
            rgb, _ = read_tile(root, str(row.tile_id))
            gsd = getattr(row, "gsd", None)
            t1 = time.perf_counter()
            predict(segmenter, rgb, image_gsd=float(gsd) if gsd is not None and pd.notna(gsd) else None)
            paces.append(time.perf_counter() - t1)
    # the mean, not the median: the work after the fit is the sum over its tiles
    per_tile = float(np.mean(paces[1:])) if len(paces) > 1 else (paces[0] if paces else 0.0)
    return export_s + per_tile * pace_factor * n_tiles + AFTER_FIT_FIXED_S


def final_fit_loader(
    data: ProcessedData, rows: pd.DataFrame, profile: TrainProfile, params: dict, settings: Settings, seed: int
):
    """The final fit's training loader over ``rows``: the profile's final crop, the parameters' batch size and
    augmentation, the tiles decoded once for the whole run (data.decoded)."""
    return make_loader(
        data.root,
        rows,
        profile.final_crop_size or profile.crop_size or profile.tile_size,
        int(params["batch_size"]),
        params["aug_strength"],
        seed,
        model_gsd(profile, settings),
        profile.gap_weight,
        data.decoded,
    )


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
    after it (see after_fit_estimate_s). ``time_budget_s``: the fit's own wall-clock budget instead (the
    benchmark gives its peer our fit's time); nothing is then estimated."""
    import mlflow

    from parking_ml.model import evaluation
    from parking_ml.model.metrics import scalar_metrics
    from parking_ml.model.package import REFERENCE_FILE, build_package
    from parking_ml.model.registry import log_and_register
    from parking_ml.model.train import fit, resolve_device, seed_everything, use_cpu_bf16

    device = resolve_device(settings.device)
    bf16 = use_cpu_bf16(settings.cpu_bf16)
    train_rows = training_rows(data.manifest)
    hold_rows = holdout_rows(data.manifest)
    with mlflow.start_run(run_name="final-fit", nested=True, tags={"run_kind": "final_fit", "optuna_study": name}):
        seed_everything(settings.seed)
        model = new_model(params, profile, settings)
        lr_scale = lr_scale_for(model, profile)
        serving = preprocess_config(profile, settings, train_rows, data.root)
        ref_rows = evenly_spaced(train_rows, REFERENCE_MAX_TILES)
        after_s = 0.0
        mid_fit: dict[str, float] = {}
        rebudget = None
        if time_budget_s is None:
            if profile.train_budget_s is not None:
                probe_rows = hold_rows if not hold_rows.empty else train_rows
                n_after = len(hold_rows) + len(ref_rows)
                after_s = after_fit_estimate_s(model, serving, data.root, probe_rows, n_after, settings.threads)

                def rebudget(part_trained: Any) -> float | None:
                    mid_fit["after_fit_estimate_mid_s"] = after_fit_estimate_s(
                        part_trained,
                        serving,
                        data.root,
                        probe_rows,
                        n_after,
                        settings.threads,
                        probes=MID_FIT_PROBES,
                        pace_factor=MID_FIT_PACE_FACTOR,
                    )
                    return final_fit_budget(profile, tuning_s, mid_fit["after_fit_estimate_mid_s"])

            time_budget_s = final_fit_budget(profile, tuning_s, after_s)
        if time_budget_s is not None:
            logger.info(
                "final fit budget",
                extra={
                    "train_budget_s": profile.train_budget_s,
                    "tuning_s": round(tuning_s, 1),
                    "after_fit_estimate_s": round(after_s, 1),
                    "fit_s": round(time_budget_s, 1),
                },
            )
        mlflow.log_params(
            {
                **params,
                "epochs": profile.final_epochs,
                "train_tiles": len(train_rows),
                "time_budget_s": None if time_budget_s is None else round(time_budget_s, 1),
                "after_fit_estimate_s": round(after_s, 1),
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
            time_budget_s=time_budget_s,
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
            rebudget=rebudget,
        )
        fit_s = time.perf_counter() - t0
        mlflow.log_metrics({"final_fit_steps": result.steps_run, "final_fit_planned_steps": result.planned_steps})
        if mid_fit:
            # what the estimate taken halfway through the fit made of the budget
            mlflow.log_params(
                {
                    **{k: round(v, 1) for k, v in mid_fit.items()},
                    "time_budget_mid_s": round(result.time_budget_s or 0.0, 1),
                }
            )
        with tempfile.TemporaryDirectory(prefix="parking-final-") as tmp:
            tmp_dir = Path(tmp)
            pkg = tmp_dir / "package"
            info = build_package(model.cpu(), serving, pkg, None, profile.tile_size)
            holdout: dict = {}
            if hold_rows.empty:
                logger.warning(
                    "no holdout tiles: the version carries no holdout metrics",
                    extra={"dataset": data.version},
                )
            else:
                holdout, items = evaluation.evaluate_package(pkg, data.root, hold_rows, settings.threads, progress)
                evaluation.overlays_png(items, tmp_dir / "overlays.png")
                evaluation.confusion_png(holdout["confusion"], tmp_dir / "confusion_matrix.png")
                mlflow.log_artifact(str(tmp_dir / "overlays.png"))
                mlflow.log_artifact(str(tmp_dir / "confusion_matrix.png"))
                mlflow.log_metrics(scalar_metrics(holdout, prefix="holdout_"))
            train_items = evaluation.predict_tiles(
                pkg, data.root, ref_rows, settings.threads, progress, keep_free_prob=False
            )
            evaluation.reference_features(train_items).to_parquet(pkg / REFERENCE_FILE, index=False)
            evaluation.curves_png(
                {"train_loss": [h["train_loss"] for h in result.history]}, tmp_dir / "learning_curves.png"
            )
            mlflow.log_artifact(str(tmp_dir / "learning_curves.png"))
            report = {
                "dataset_version": data.version,
                "profile": profile.name,
                "params": params,
                "cv": cv,
                "holdout": holdout,
                **({evaluation.HOLDOUT_STAMP_KEY: evaluation.holdout_stamp(pkg, data.version)} if holdout else {}),
                "history": result.history,
                "parity_max_abs_diff": info.parity_max_abs_diff,
            }
            (tmp_dir / "eval.json").write_text(json.dumps(report, indent=2, default=float))
            mlflow.log_artifact(str(tmp_dir / "eval.json"))
            # the trained network itself (the package holds its ONNX export only), so a later fit can start from
            # it: Settings.init_weights
            import torch

            torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp_dir / NETWORK_FILE)
            mlflow.log_artifact(str(tmp_dir / NETWORK_FILE))
            mlflow.log_metric("onnx_parity_max_abs_diff", info.parity_max_abs_diff)
            tags = {
                "dataset_version": data.version,
                "git_sha": git_sha(),
                "profile": profile.name,
                "optuna_study": name,
                "objective_metric": settings.objective_metric,
                "cv_objective": cv_objective(profile, settings),
                **{f"cv_{k}": v for k, v in cv.items()},
                **{f"holdout_{k}": v for k, v in scalar_metrics(holdout).items()},
            }
            version = log_and_register(pkg, settings, tags, alias=settings.challenger_alias)
    return TrainOutcome(
        study_name=name,
        dataset_version=data.version,
        profile=profile.name,
        trials_run=0,
        best_params=params,
        cv_metrics=cv,
        holdout_metrics=scalar_metrics(holdout),
        model_name=version.name,
        model_version=version.version,
        run_id=version.run_id,
        model_uri=version.model_uri,
        timings_s={"final_fit": round(fit_s, 2)},
        final_fit_steps=result.steps_run,
        final_fit_planned_steps=result.planned_steps,
    )


def tune_and_register(
    settings: Settings, data: ProcessedData, n_trials: int | None = None, progress: bool = True
) -> TrainOutcome:
    """The whole `parking-ml train` on already-materialised data."""
    import mlflow
    import torch

    from parking_ml.model.train import use_cpu_bf16

    torch.set_num_threads(settings.threads)
    profile = get_profile(settings.profile)
    n_trials = n_trials or settings.n_trials or profile.n_trials
    name = study_name(settings, data.version, profile)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    study_tags = {"dataset_version": data.version, "profile": profile.name, "model_name": settings.model_name}
    t0 = time.perf_counter()
    with _study_run(settings, name, study_tags):
        mlflow.log_params(
            {
                "dataset_version": data.version,
                "profile": profile.name,
                "cv_epochs": profile.cv_epochs,
                "final_epochs": profile.final_epochs,
                "tile_size": profile.tile_size,
                "crop_size": profile.crop_size,
                "model_gsd": model_gsd(profile, settings),
                # the network's shape: with the trial's encoder, what rebuilds its architecture
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
        )
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
