"""Training budgets by profile: smoke (tests, seconds), demo (sized for ~10 minutes on 2 quiet CPU cores), full (GPU).

A profile fixes how much work tuning and the final fit do and which search space Optuna explores.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class SearchSpace:
    encoders: tuple[str, ...]
    lr: tuple[float, float]
    weight_decay: tuple[float, float]
    losses: tuple[str, ...]
    free_weight: tuple[float, float]
    batch_sizes: tuple[int, ...]
    aug_strength: tuple[float, float]
    # "adamw" and/or "muon" (Muon on the hidden layers beside AdamW, peak lr in muon_lr): docs/experiments/muon.md
    optimizers: tuple[str, ...] = ("adamw",)
    muon_lr: tuple[float, float] = (0.02, 0.2)


@dataclass(frozen=True)
class TrainProfile:
    name: str
    n_trials: int
    cv_epochs: int
    final_epochs: int
    patience: int
    tile_size: int
    arch: str
    decoder_channels: tuple[int, ...] | None
    space: SearchSpace
    # decoder for fp32 training on a CPU without bf16 hardware, where a step costs its arithmetic (None:
    # decoder_channels): docs/experiments/fp32-cpu-decoder.md
    fp32_cpu_decoder_channels: tuple[int, ...] | None = None
    # encoder stages the network uses (output stride 2**depth); a U-Net's decoder_channels has one width each
    encoder_depth: int = 5
    # steps per final-fit epoch (None: one pass over the tiles); a fixed count makes a profile a compute budget
    steps_per_epoch: int | None = None
    cv_steps_per_epoch: int | None = None  # the same for each CV fold model (None: steps_per_epoch)
    # training crop (px) in CV, cheaper steps than whole tiles: docs/experiments/crops.md
    crop_size: int | None = None
    # training crop of the final fit (None: the CV crop)
    final_crop_size: int | None = None
    # m/px the network works at (None: the tiles' own); one scale to learn, cheaper steps: docs/experiments/model-gsd.md
    model_gsd: float | None = None
    # validate each CV epoch on at most this many tiles of the fold (evenly spaced; None: all)
    max_val_tiles: int | None = None
    # seconds of tuning; no trial starts that would end past it (None: no limit): docs/experiments/tuning-budget.md
    tuning_budget_s: float | None = None
    scheduler: str = "onecycle"
    # metric the CV folds are ranked by (None: Settings.objective_metric): docs/experiments/cv-objective.md
    cv_objective: str | None = None
    # loss weight of the background between neighbouring spaces (1: none): docs/experiments/gap-weight.md
    gap_weight: float = 1.0
    # wall-clock seconds of the whole training stage, tuning to holdout (None: the planned steps, however long):
    # docs/experiments/fit-time-budget.md
    train_budget_s: float | None = None
    # trials that start with these parameters before TPE takes over (a known-good point)
    seed_params: dict = field(default_factory=dict)
    # the served test-time augmentation (inference.TTA_VIEWS), written to preprocess.json: docs/experiments/tta.md
    tta: str = "none"
    # state-dict file under parking_ml/weights/ that folds and final fit start from (None: a new network;
    # Settings.init_weights overrides it): docs/experiments/pretrained-start.md
    init_weights: str | None = None
    # the same for fp32_cpu_decoder_channels, whose tensors init_weights does not fit
    fp32_cpu_init_weights: str | None = None
    # both peak learning rates times this when a fit starts from trained weights:
    # docs/experiments/pretrained-lr-scale.md
    pretrained_lr_scale: float = 1.0
    # served growth of each space into the background (px at the model's gsd; 0: none): docs/experiments/free-growth.md
    grow_px: float = 0.0
    # least class probability (free, occupied) for a pixel to join a growing space (None: PreprocessConfig's)
    grow_prob: tuple[float, float] | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def decoder_for(profile: TrainProfile, fp32_cpu: bool) -> tuple[int, ...] | None:
    """The decoder widths this machine trains: ``fp32_cpu`` is a CPU without bf16 hardware (or with it off)."""
    if fp32_cpu and profile.fp32_cpu_decoder_channels is not None:
        return profile.fp32_cpu_decoder_channels
    return profile.decoder_channels


def init_weights_for(profile: TrainProfile, fp32_cpu: bool) -> str | None:
    """The profile's starting-weights file for the decoder decoder_for picks (None: a new network)."""
    if fp32_cpu and profile.fp32_cpu_decoder_channels is not None:
        return profile.fp32_cpu_init_weights
    return profile.init_weights


# the final fit's least share of the training budget, so a late trial cannot leave it seconds (0.4, not 0.5:
# half would bind on a slow fp32 machine): docs/experiments/fit-time-budget.md
MIN_FIT_SHARE = 0.4


def final_fit_budget(profile: TrainProfile, tuning_s: float, after_fit_s: float = 0.0) -> float | None:
    """Seconds the final fit may take after ``tuning_s`` of tuning, leaving ``after_fit_s`` for the holdout,
    drift-reference and packaging work after it (None: no budget, the planned steps)."""
    if profile.train_budget_s is None:
        return None
    return max(profile.train_budget_s * MIN_FIT_SHARE, profile.train_budget_s - tuning_s - after_fit_s)


PROFILES: dict[str, TrainProfile] = {
    "smoke": TrainProfile(
        name="smoke",
        n_trials=2,
        cv_epochs=2,
        final_epochs=2,
        patience=2,
        tile_size=64,
        arch="unet",
        decoder_channels=(16, 16, 16, 8, 8),
        space=SearchSpace(
            encoders=("resnet18",),
            lr=(1e-3, 5e-3),
            weight_decay=(1e-5, 1e-3),
            losses=("ce", "ce+dice"),
            free_weight=(1.0, 2.0),
            batch_sizes=(4,),
            aug_strength=(0.0, 0.3),
            # AdamW: Muon's iteration over ResNet-18's matrices slows tests on fp32 CPUs (docs/experiments/muon.md)
            optimizers=("adamw",),
        ),
        steps_per_epoch=3,
        gap_weight=4.0,
        # never binds in seconds of work; it runs the budget's code path in the tests
        train_budget_s=3600.0,
        tta="dihedral",
        grow_px=1.0,
    ),
    "demo": TrainProfile(
        name="demo",
        n_trials=2,
        cv_epochs=2,
        # 20 steps of 16 crops take about the time 30 of 8 did: docs/experiments/batch-size.md
        cv_steps_per_epoch=20,
        # more steps than 2 cores reach in the budget, which decides how many run: docs/experiments/lots-not-steps.md
        final_epochs=160,
        steps_per_epoch=95,
        patience=3,
        tile_size=256,
        # 96 px of 0.2 m/px ground, drawn at random: docs/experiments/crops.md
        crop_size=96,
        # stalls stay ~12 x 25 px, soft labels keep their edges: docs/experiments/model-gsd.md
        model_gsd=0.2,
        max_val_tiles=32,
        tuning_budget_s=150.0,
        # short fold models put no argmax on "free" yet, so free F1 would rank noise: docs/experiments/cv-objective.md
        cv_objective="free_ap",
        # keeps neighbouring stalls apart: docs/experiments/gap-weight.md
        gap_weight=8.0,
        # the whole stage, tuning to holdout, inside 10 minutes on 2 cores: docs/experiments/fit-time-budget.md
        train_budget_s=560.0,
        arch="unet",
        # stride 16: a stall needs no 32x context, and a step costs half: docs/experiments/encoder-depth.md
        encoder_depth=4,
        # a narrower decoder underfit, a wider one halved the steps: docs/experiments/decoder-width.md
        decoder_channels=(128, 64, 32, 16),
        # fp32 steps cost their arithmetic, so a narrower decoder runs more: docs/experiments/fp32-cpu-decoder.md
        fp32_cpu_decoder_channels=(48, 24, 12, 8),
        # a narrow neighbourhood of the seed point: short fold models rank far points wrongly
        # (docs/experiments/cv-objective.md); `full` searches widely
        space=SearchSpace(
            # grouped convolutions train fast on a CPU and gain from bf16: docs/experiments/encoder-regnetx.md
            encoders=("tu-regnetx_002",),
            # docs/experiments/learning-rates.md
            lr=(8e-3, 1.5e-2),
            weight_decay=(3e-5, 3e-4),
            # Dice pays for whole spaces, where ce left blobs: docs/experiments/losses.md
            losses=("ce+dice",),
            # docs/experiments/free-weight.md
            free_weight=(1.3, 1.8),
            # on a bf16 CPU twice the crops cost 1.4x a step: docs/experiments/batch-size.md
            batch_sizes=(16,),
            aug_strength=(0.3, 0.5),
            # Muon on the hidden convolutions beat AdamW in equal time on every CPU kind: docs/experiments/muon.md
            optimizers=("muon",),
            muon_lr=(0.05, 0.15),
        ),
        seed_params={
            "encoder": "tu-regnetx_002",
            "lr": 1.1e-2,
            "weight_decay": 1e-4,
            "loss": "ce+dice",
            "free_weight": 1.5,
            "batch_size": 16,
            "aug_strength": 0.4,
            "optimizer": "muon",
            "muon_lr": 0.1,
        },
        # the 8 symmetries of the square, averaged: docs/experiments/tta.md
        tta="dihedral",
        # 1 px at 0.2 m/px gives back what gap_weight took from every edge: docs/experiments/free-growth.md
        grow_px=1.0,
        # free from p 0.40 on pretrained models (the default 0.35 suited weaker ones): docs/experiments/free-growth.md
        grow_prob=(0.4, 0.3),
        # pretrained by scripts/pretrain_demo.py on lots nothing here scores (recipe in the .json beside it):
        # docs/experiments/pretrained-start.md
        init_weights="demo-synthetic.pt",
        fp32_cpu_init_weights="demo-synthetic-fp32.pt",
        # the searched rates are a new network's; at full rates a start loses some of what it knew:
        # docs/experiments/pretrained-lr-scale.md
        pretrained_lr_scale=0.3,
    ),
    "full": TrainProfile(
        name="full",
        n_trials=20,
        cv_epochs=25,
        final_epochs=60,
        patience=6,
        tile_size=512,
        crop_size=256,
        model_gsd=0.12,
        arch="unet",
        decoder_channels=None,
        space=SearchSpace(
            encoders=("resnet34", "tu-efficientnet_b0", "mobilenet_v2", "resnet18"),
            lr=(1e-4, 3e-3),
            weight_decay=(1e-6, 1e-2),
            # ce+lovasz costs CPU steps, not GPU ones: docs/experiments/losses.md
            losses=("ce+dice", "focal+dice", "ce", "ce+lovasz"),
            free_weight=(1.0, 4.0),
            batch_sizes=(8, 16),
            aug_strength=(0.3, 1.0),
            # Muon was measured on CPU fits only: here the study decides (docs/experiments/muon.md)
            optimizers=("adamw", "muon"),
        ),
        scheduler="cosine",
        gap_weight=4.0,
        tta="dihedral",
    ),
}


def get_profile(name: str) -> TrainProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; set PARKING_PROFILE to one of {', '.join(PROFILES)}") from None
