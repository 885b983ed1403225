"""The training recipe: a trial's parameters (search space, defaults), the fit's settings, the network and
the weights it starts from, its data loaders, the metric CV maximises and the serving contract it is packaged
with. Cross-validation, the final fit and the benchmark build their models through these."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from parking_ml.config import Settings
from parking_ml.data.processed import ProcessedData, evenly_spaced
from parking_ml.data.tile_cache import TileCache
from parking_ml.model.metrics import LOWER_IS_BETTER
from parking_ml.model.profiles import SearchSpace, TrainProfile, decoder_for, init_weights_for

logger = logging.getLogger(__name__)

# the metrics summarised per trial (mean/std over folds) and copied to the version's tags
SUMMARY_METRICS = ("free_f1", "free_ap", "iou_free", "iou_occupied", "miou", "space_f1", "free_count_mae")


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
        # why: cropping cached tiles is cheap next to a step, and a worker competes with it for the same cores
        # (docs/experiments/tile-cache.md)
        num_workers=0,
        generator=torch.Generator().manual_seed(seed),
    )


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
    # why: a tenth of the median space keeps the partial spaces at tile edges and drops fragments of blurred
    # ones (docs/experiments/tile-edge-slivers.md)
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
