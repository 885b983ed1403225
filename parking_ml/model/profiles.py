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
    # "adamw", and/or "muon": Muon on the hidden layers' weight matrices beside AdamW (parking_ml.model.optim),
    # whose peak learning rate is searched in muon_lr
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
    # the U-Net decoder where the network trains in fp32 on a CPU without bf16 hardware (None: decoder_channels):
    # there a step costs what its arithmetic does, on a bf16 CPU or a GPU mostly per-op overhead, so the width
    # that pays on one halves the steps of the other (see decoder_for and the demo's measurements)
    fp32_cpu_decoder_channels: tuple[int, ...] | None = None
    # encoder stages the network uses (output stride 2**depth); a U-Net's decoder_channels has one width each
    encoder_depth: int = 5
    # steps per final-fit epoch (None: one pass over the training tiles); a fixed count makes the profile a
    # compute budget, the same whatever the size of the dataset
    steps_per_epoch: int | None = None
    cv_steps_per_epoch: int | None = None  # the same for each CV fold model (None: steps_per_epoch)
    # training crop (px) in CV; smaller than tile_size makes each step cheaper; the net is fully convolutional
    crop_size: int | None = None
    # training crop of the final fit (None: the CV crop)
    final_crop_size: int | None = None
    # ground resolution the network works at (m/px; None: the tiles' own). Imagery is resampled to it in
    # training and serving: one scale to learn, and a coarser grid makes every step and request cheaper
    model_gsd: float | None = None
    # validate each CV epoch on at most this many tiles of the fold (evenly spaced; None: all)
    max_val_tiles: int | None = None
    # seconds of tuning: no trial starts that would end past it at the pace of those before (see
    # tune.stop_before_overrun; None: no limit)
    tuning_budget_s: float | None = None
    scheduler: str = "onecycle"
    # what the CV folds are scored on (an evaluate() metric; None: Settings.objective_metric, what the gate
    # compares). A fold model of a small budget has not yet put any argmax on "free", so its free F1 is ~0
    # for every trial and the study would rank noise; free_ap (threshold-free) still orders them
    cv_objective: str | None = None
    # loss weight of the background between neighbouring spaces (1: none); see dataset.emphasise_gaps
    gap_weight: float = 1.0
    # wall-clock budget (s) of the whole training stage: tuning, the final fit and the holdout and drift-reference
    # inference after it (None: the planned steps, however long). The final fit gets what tuning left of it,
    # less the inference after it as timed on a few holdout tiles before the fit (see final_fit_budget): its
    # epochs after the second are re-sized to end within that, shorter on a slow machine and up to the
    # planned steps on a fast one, and the run records the steps it got
    train_budget_s: float | None = None
    # trials that start with these parameters before TPE takes over (a known-good point)
    seed_params: dict = field(default_factory=dict)
    # the served model's test-time augmentation (inference.TTA_VIEWS), written to preprocess.json: the holdout,
    # the gate and the API run it; CV folds are scored without it (it ranks trials alike at 8x the cost)
    tta: str = "none"
    # the network the CV folds and the final fit start from: a state-dict file under parking_ml/weights/ (None: a
    # new network; Settings.init_weights overrides it, "none" there for a new one)
    init_weights: str | None = None
    # the same for the fp32 CPU decoder (fp32_cpu_decoder_channels), whose tensors init_weights does not fit
    fp32_cpu_init_weights: str | None = None
    # both peak learning rates (the searched lr and muon_lr, a new network's) times this when a fit starts from
    # trained weights (the profile's file or Settings.init_weights)
    pretrained_lr_scale: float = 1.0
    # the served model's growth of each space into the background around it (PreprocessConfig.grow_px, at
    # the model's gsd; 0: none): it gives back what gap_weight took from every edge
    grow_px: float = 0.0
    # the least probability of its class a background pixel needs to join a growing space (free, occupied; None:
    # PreprocessConfig's default)
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


# the final fit keeps at least this share of the training budget whatever tuning and the inference after the
# fit take: a trial that starts just before tuning_budget_s runs to its end, and a fit of a few seconds would
# register noise. 0.4, not 0.5: on 2 AVX2 cores tuning (96-149 s) and the inference after the fit (104-165 s)
# leave the demo's fit ~300 s of its 560, and half (280 s) would bind on a machine a little slower still
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
            # AdamW: ResNet-18's matrices (up to 512 x 4608) make Muon's iteration the bulk of a step on a CPU
            # without bf16 hardware (fp32, 2 cores: the integration tests ran ~5x slower); the unit tests fit
            # both Muon kinds and check that a searched Muon reaches the fit
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
        # Sized on 2 cores: at 0.2 m/px a MobileNetV2 U-Net on batches of 8 crops of 96 px (19 m of ground)
        # reached holdout free IoU 0.63 in 300 s, against 0.42 for a ResNet-18 at the tiles' own 0.08-0.15 m/px
        # given the same time. Stalls are still ~12 x 25 px there, and the soft labels keep their edges
        # sub-pixel. Free IoU follows the final fit's steps (0.659 at 1,900, 0.713 at 3,800), so the fit plans
        # more steps than a 2-core machine gets in its time budget, which then decides how many run. The
        # machines here vary by 4x in pace and RegNetX's steps are ~2x cheaper than MobileNetV2's (below).
        # 7,600 planned steps ran in 324 s on a Zen 5 EPYC (AVX-512 BF16, ~43 ms a step), 115 s of the budget
        # unused; hence 15,200. With the demo's 48 lots the extra steps bought nothing (9,317 steps: 96 fresh
        # lots' free IoU 0.693 against 0.696), with 384 lots they do (10,262 against 7,540 steps: 0.771 / 0.750,
        # count error 0.93 / 1.10): more lots to learn take more steps to learn them.
        cv_epochs=2,
        # 20 steps of 16 crops (the batch below) take about the time 30 steps of 8 did (1.4x a step)
        cv_steps_per_epoch=20,
        final_epochs=160,
        steps_per_epoch=95,
        patience=3,
        tile_size=256,
        # 64-px crops in batches of 16 (about the same pixels a step, twice the tiles): 96 fresh lots, equal
        # steps, free IoU 0.607 -> 0.620, count error 2.58 -> 2.46, holdout 0.696 -> 0.694; one pair, within
        # what a second seed moved, so not adopted. At batch 16's pixels a step (AMD EPYC Zen 4, bf16, 300-s
        # fits, seed 7; the seed point scored fresh lots' free IoU 0.763 / 0.769 on seeds 7 / 11): 9 crops of
        # 128 px 0.736, 28 of 72 px 0.758. Not adopted either there: 0.15 m/px on the same crops 0.761 (count
        # error 1.15 against 1.06), focal+dice 0.710, augmentation 0.2 0.759, the decoder upsampling bilinear
        # (smp's decoder_interpolation) 0.750, scSE attention in the decoder 0.700 (1,230 steps against 1,602).
        # Nor crops placed around a space pixel (albumentations' CropNonEmptyMaskIfExists, as nnU-Net oversamples
        # its foreground; 16.5 % of random 96-px crops hold no space) for a third / two thirds of the crops, same
        # machine, seed 7 (the seed point 0.764 / 0.769 on seeds 7 / 11 that day, 1,717 steps): 0.755 / 0.749, with
        # 1,584 / 1,473 steps, as finding the pixel slowed the data, and more spaces missed (6.3 / 7.3 % of the free
        # union against 6.0 %)
        crop_size=96,
        model_gsd=0.2,
        max_val_tiles=32,
        tuning_budget_s=150.0,
        # 60 steps leave every fold's free F1 at ~0.003 (measured): the argmax is still "background" there
        cv_objective="free_ap",
        # the background between neighbouring stalls weighs 8x. Same machine, seed parameters, 1,900 steps, 2,027
        # holdout spaces, 1x -> 4x: merged neighbours 329 -> 121, space F1 0.532 -> 0.634, count error 2.45 ->
        # 1.91 per tile, free IoU 0.646 -> 0.649. 240-s fits, 4x / 8x / 16x, on 96 fresh lots (384 tiles): count
        # error 2.83 / 2.33 / 2.70, space F1 0.661 / 0.685 / 0.656, free IoU 0.632 / 0.630 / 0.572
        # With Muon (Zen 5 EPYC, bf16, 300-s fits, seed 7), 8x / 12x: fresh lots 0.782 / 0.781 free IoU, count
        # error 1.10 / 1.10; holdout 0.746 / 0.741, 1.37 / 1.35: no gain from more
        gap_weight=8.0,
        # A slower machine gets fewer final-fit steps rather than a demo over its 10 minutes, a faster one
        # more. A fixed 400-s fit of 2,660 planned steps took, from synth to promotion, 584 s on a slow machine
        # (tuning 113 s, 2,272 steps, free IoU 0.685) and 356 s on one 1.8x faster (tuning 59 s, all 2,660
        # steps in 262 s, free IoU 0.694: 4 minutes unused). One budget for both, with 4,750 steps planned:
        # the fast machine's fit got 411 s and 4,101 steps (free IoU 0.754 with the dihedral TTA below), 519 s
        # in all. 470 s leaves the slow machine ~40 s of its 10 minutes for the 8-pass holdout, drift
        # reference and gate (38 s on the fast machine). With RegNetX and bf16 on a slow AMX machine: tuning
        # 69 s, a 401-s fit of 4,254 steps, 554 s in all (free IoU 0.733; MobileNetV2 there: 0.695, 571 s); on
        # an AMD EPYC with AVX-512 BF16: tuning 57 s, a 413-s fit of 5,449 steps, 568 s in all; on an AVX2-only
        # EPYC (Zen 1, fp32): tuning 99-124 s, fits of 347-371 s and 1,634-2,285 steps, as its pace varied.
        # That budget left out the inference after the fit: on an AVX2-only EPYC with the wider decoder below,
        # tuning 149 s, fit 321 s and 165 s after it (the 8-view holdout and drift reference) made a 636-s
        # training stage. The budget now covers the whole stage, timing that inference before the fit (on a
        # fast machine it took 77 s after a 431-s fit, so 560 leaves such a fit its time). On the AVX2-only EPYC
        # with the fp32 decoder below: tuning 96 s, a 373-s fit of 2,392 steps, 112 s after it, 581 s in all
        train_budget_s=560.0,
        arch="unet",
        # Stride 16, not 32: MobileNetV2's deepest stage (1280 channels at 3 x 3 px) feeds a 1376-channel
        # decoder conv whose backward pass alone took 30 ms of a 234-ms step, for context a 12 x 25 px stall
        # does not need; a narrower decoder halves the full-resolution blocks. Same data and seed parameters, 1,900
        # steps (the stride-32 figures from the previous change's machine): holdout free IoU 0.649 -> 0.659, space
        # F1 0.634 -> 0.643, count error 1.91 -> 1.85, at 0.13 against 0.26 s per bare step measured side by
        # side; 3,800 steps reach 0.713 (so more steps in the same time is the lever)
        encoder_depth=4,
        # Twice the decoder width of before, (64, 32, 16, 8): a trained model scored the same free IoU on 300
        # of its own training tiles (0.747) as on 96 fresh lots (0.748), so it underfit, and on 2 cores the
        # narrow decoder's step is bound by per-op overhead, not arithmetic (bare step 48 -> 58 ms; in the fit
        # 7,929 -> 8,194 steps in the same budget, as the machine's pace varied). Same machine (Xeon with AMX),
        # data and 96 fresh lots, ce+dice both: free IoU 0.765 -> 0.794, count error 1.10 -> 0.99, space F1
        # 0.860 -> 0.881, occupied IoU 0.782 -> 0.802. Wider again, (256, 128, 64, 32): half the steps (4,291),
        # 0.764 / 1.13, and the train stage over 10 minutes (619 s). RegNetX-400MF with this decoder: 7,031
        # steps, 0.796 / 0.92, within noise of RegNetX-200MF and 14 % slower a step, so not adopted
        # The last stage alone wider, (128, 64, 32, 32), for sharper outlines: 1.25x the bare step (129 against 103
        # ms, batches of 16), 300-s fits (seeds 7 / 11) of 1,903 / 1,831 steps against 2,338 / 2,324, fresh lots
        # 0.775 / 0.765 against 0.790 / 0.788, holdout 0.734 / 0.725 against 0.749 / 0.754
        decoder_channels=(128, 64, 32, 16),
        # On a CPU without bf16 hardware the wide decoder costs what its arithmetic does: on 2 cores of an
        # AVX2-only EPYC (fp32) a bare step took 257-284 ms against 120-150 ms with (64, 32, 16, 8) (14.7 against
        # 5.5 GFLOP a step). Same data, 280-s fits there, 96 fresh lots served without TTA: (128, 64, 32, 16) 875
        # steps, free IoU 0.441, count error 4.03; (128, 64, 16, 8) 1,153 steps, 0.494 / 4.19; (64, 32, 16, 8)
        # 1,524 steps, 0.538 / 3.22; (48, 24, 12, 8) 1,629 steps, 0.566 / 3.16 (4.2 GFLOP); (32, 16, 8, 8) 1,544
        # steps, 0.557 / 3.04. (64, 32, 16, 8) at 0.25 m/px on 80-px crops: 1,889 steps, 0.525 / 4.10
        fp32_cpu_decoder_channels=(48, 24, 12, 8),
        # A neighbourhood of the seed point: 60-step fold models rank far points wrongly. Measured with the
        # wider space of before: a ce+dice, free weight 2.47, lr 3.3e-3 trial beat the seed point on the CV
        # (free AP 0.227 vs 0.190), and its final fit scored holdout free IoU 0.608 vs 0.646, space F1 0.41 vs
        # 0.53 (that trial's far learning rate and free weight, not its loss: ce+dice at the seed point is the
        # demo's loss now, see losses below). MobileNetV3 left for the same reason: first at 60 steps (free AP
        # 0.28 vs 0.18), slower and worse when fitted (external-set free IoU 0.557 vs 0.602 at equal steps).
        # `full` searches widely.
        # The stride-16 net takes a higher peak learning rate: 1,900 steps, holdout free IoU 0.659 / 0.683 /
        # 0.688 at lr 6e-3 / 9e-3 / 1.3e-2 (space F1 0.643 / 0.661 / 0.672), so the seed point sits at 1.1e-2.
        # RegNetX-200MF, not MobileNetV2: grouped 3 x 3 convs instead of depthwise ones, which train slowly on a
        # CPU (their backward pass and the batch norms took most of a MobileNetV2 step). Same machine and data,
        # 200-s final fits, dihedral TTA, 216 holdout tiles: MobileNetV2 1,113 steps (180 ms each), free IoU
        # 0.601, space F1 0.572, count error 2.02; RegNetX fp32 1,879 steps (106 ms), 0.663 / 0.670 / 1.83;
        # RegNetX with bf16 autocast on AMX (Settings.cpu_bf16) 2,447 steps (81 ms), 0.692 / 0.697 / 1.75,
        # where MobileNetV2 gains nothing from bf16 (205 against 200 ms a step). ResNet-18 with bf16: 1,481
        # steps, 0.568; RegNetY-200MF: 1,942 steps, 0.685; a 2x wider decoder: 2,039 steps, 0.697
        space=SearchSpace(
            encoders=("tu-regnetx_002",),
            lr=(8e-3, 1.5e-2),
            weight_decay=(3e-5, 3e-4),
            # ce+dice, not ce: the same 470-s fit and data, 96 fresh lots, free IoU 0.748 -> 0.765, occupied IoU
            # 0.738 -> 0.782, count error 1.06 -> 1.10 (holdout 0.705 -> 0.716). Dice pays for whole spaces, where
            # ce left them as under-confident blobs (missed free pixels had p(free) 0.3-0.45 at the edges).
            # Tried on the same footing: ce+lovasz halves the pace (lovasz sorts every pixel); a free weight of
            # 2.5 with ce+dice, 0.777 but count error 1.22; the gap weight on both sides of each gap (not only
            # its background pixels), occupied IoU up to 0.793 but neighbours merged (count error 2.27)
            losses=("ce+dice",),
            # the seed's 1.5 against the range's top, 1.8, with batches of 16 (300-s fits, seeds 7 / 11): fresh
            # lots 0.790 / 0.788 against 0.783 / 0.783, holdout 0.749 / 0.754 against 0.749 / 0.749
            free_weight=(1.3, 1.8),
            # 16 crops a step, not 8: on a bf16 CPU a step is mostly per-op overhead, so twice the crops cost
            # 1.4x the time (65 -> 93 ms bare, 2 cores with AMX). Same machine, 300-s fits, seeds 7 / 11: batch
            # 8 4,168 / 4,448 steps, fresh-lot free IoU 0.783 / 0.787, count error 1.01 / 0.90, holdout 0.743 /
            # 0.745; batch 16 2,483 / 2,904 steps, 0.789 / 0.796, 0.91 / 0.94, holdout 0.747 / 0.760. Batch 32
            # (seed 7, 1,451 steps): 0.782 / 1.01, holdout 0.749; 12 crops of 128 px (seeds 7 / 11, 2,432 / 2,143
            # steps): 0.790 / 0.786, holdout 0.754 / 0.743. bench/train.py there, batch 8 -> 16: a 401-s fit of
            # 5,419 steps -> a 427-s fit of 4,246, fresh lots 0.795 -> 0.817, count error 0.94 -> 0.77, holdout
            # 0.767 -> 0.786, 1.10 -> 0.99. Batch 24 won the paired fits (2,187 / 2,141 steps: 0.801 / 0.800,
            # holdout 0.767 / 0.762) and lost the bench (a 414-s fit of 2,809 steps: 0.813 / 0.83, holdout
            # 0.777 / 1.09), so 16: equal within noise here, and on a CPU without bf16 hardware, where a step
            # costs what its arithmetic does (fp32 here: 16 crops 1.6x the time of 8), the smaller batch
            # could do better. With bf16 off here it did not (PARKING_CPU_BF16=off: the fp32 decoder below; Muon's
            # iteration kept its bf16 matrix units), 300-s fits, seeds 7 / 11: batch 8 3,060 / 3,028 steps,
            # fresh lots 0.725 / 0.720, count error 1.34 / 1.38, holdout 0.678 / 0.675; batch 16 1,822 / 1,876
            # steps, 0.726 / 0.744, 1.38 / 1.24, holdout 0.683 / 0.689
            # The seed point's learning rates still hold at batch 16 (same machine and data, 300-s fits, seeds 7 /
            # 11): as they are, fresh lots 0.790 / 0.788, holdout 0.749 / 0.754; both 1.4x (lr 1.54e-2, Muon 0.14)
            # 0.785 / 0.783, holdout 0.741 / 0.749; both 0.7x (7.7e-3, 0.07) 0.781 / 0.778, holdout 0.743 / 0.739
            batch_sizes=(16,),
            aug_strength=(0.3, 0.5),
            # Muon on the hidden convolutions, AdamW (lr above) on the rest: same data, seed and 1,200 steps,
            # fresh lots' free IoU 0.541 with AdamW alone, with Muon at a peak lr of 0.02 / 0.05 / 0.1 / 0.2:
            # 0.645 / 0.654 / 0.664 / 0.656 (count error 3.14 -> 2.20 / 1.94 / 1.98 / 2.14); AdamW at 3e-3
            # beside it 0.638, warm-up over 5 % of the steps instead of 20 % 0.636, grouped convolutions in
            # Muon too 0.666 (within noise, left out). ~25 ms more a step on 2 cores (see optim). On a Zen 1
            # EPYC (fp32, Muon's iteration in fp32 too), 300-s fits, dihedral TTA, two seeds: AdamW 0.528 /
            # 0.561, Muon 0.618 / 0.581 (count error 3.39 / 2.78 against 2.54 / 2.98)
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
        # Test-time augmentation over the 8 symmetries of the square. The same 1,919-step model on the same
        # 216 holdout tiles: free IoU 0.660 -> 0.702, space F1 0.630 -> 0.698, count error 1.92 -> 1.75,
        # occupied IoU 0.658 -> 0.697, for 16.1 s of inference against 2.7 s (flips alone: 0.681)
        tta="dihedral",
        # 1 px at 0.2 m/px (2 px of a 0.1 m/px image): measured at parking_ml.inference.grow_spaces
        grow_px=1.0,
        # a free pixel joins a space from p(free) 0.4 (the default 0.35 was measured on weaker models, whose
        # edges the gap weight pulled further in). Same probabilities, only this changed, 0.35 -> 0.40: the
        # pretrained demo of stop 29 (AVX2, fp32) free IoU 0.830 -> 0.832 on its 675 holdout tiles, 0.836 ->
        # 0.839 on the 96 fresh lots, count error equal; the shipped bf16 start on 48 fresh lots 0.845 -> 0.849
        # (0.45 / 0.5 gained less; occupied's 0.3 was best at 0.25 / 0.35 too)
        grow_prob=(0.4, 0.3),
        # Start from this network, pretrained by scripts/pretrain_demo.py on 384 synthetic lots of a seed nothing
        # here scores (its recipe in the .json beside it). Free IoU still climbs with steps that 10 minutes on 2
        # cores do not hold (AMD EPYC Zen 4, bf16, 96 fresh lots, seed 7, from a new network: a 300-s fit of 1,717
        # steps 0.764, count error 1.07, holdout 0.723 / 1.40; a 1,500-s fit of 8,355 steps 0.839 / 0.64, holdout
        # 0.811 / 0.85). The same 300-s fit from a network pretrained for 1,200 s (5,778 steps) on the training
        # split of 384 lots of another seed: 0.834 / 0.65, holdout 0.805 / 0.86 (that network alone: 0.827 /
        # 0.81); with both learning rates at 0.3x, 0.838 / 0.65, holdout 0.815 / 0.76 (one seed: not adopted).
        # The first shipped file: all 384 lots, 6,307 steps in 1,200 s, free IoU 0.848 on 24 of the fresh lots.
        # The one shipped now (stop 30, a Zen 5 EPYC): 1,024 lots, 33,193 steps in 3,600 s, 0.885 on those 24;
        # the bench (fine-tuned at the 0.3x below, same machine) free IoU 0.850 -> 0.877 on the 96 fresh lots,
        # count error 0.57 -> 0.48, holdout 0.823 -> 0.878, 0.69 -> 0.33
        init_weights="demo-synthetic.pt",
        # the fp32 CPU decoder's start: first (same script on 2 AVX2 cores) 1,024 lots of the same seed, 15,133
        # steps (the 160 epochs' cap) in 3,342 s, free IoU 0.849 on the same 24 fresh lots; now (stop 30, a Zen 5
        # EPYC, --cpu-bf16 off) 24,765 steps in 2,400 s, 0.863 there, and the bench (fp32 on that machine) 0.859
        # on the 96 fresh lots, holdout 0.847; now (stop 32) that file continued (--init, --lr-scale 0.5) on 1,024
        # lots of seed 1002 for 5,100 s on a Xeon, 54,282 steps in all, 0.871 on the 24, and the bench (fp32 on
        # that Xeon) 0.864 on the 96 fresh lots, holdout 0.863, count error 0.56 / 0.43
        fp32_cpu_init_weights="demo-synthetic-fp32.pt",
        # from those weights both learning rates at 0.3x (lr 3.3e-3, Muon 0.03 at the seed point): the bench's
        # data, 378-s final fits of the fp32 decoder from demo-synthetic-fp32.pt (AVX2 EPYC, stop 29), holdout
        # | 96 fresh lots free IoU: 1x 0.832 | 0.839 (count error 0.59 | 0.61), 0.3x 0.836 | 0.846 (0.54 |
        # 0.59), 0.15x 0.838 | 0.846 (0.53 | 0.62); on a bf16 Zen 4 (stop 28) 0.3x also led, 0.815 | 0.838
        # against 0.805 | 0.834
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
            # ce+lovasz: +0.02 occupied IoU, free IoU equal, at 1.3x the step time on 2 CPU cores (so not in demo)
            losses=("ce+dice", "focal+dice", "ce", "ce+lovasz"),
            free_weight=(1.0, 4.0),
            batch_sizes=(8, 16),
            aug_strength=(0.3, 1.0),
            # Muon was measured on the demo's CPU fits only: here the study decides
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
