"""The training loop: AdamW (or Muon beside it, see optim), one-cycle or cosine schedule, early stopping, best
checkpoint, epoch callback.

Device and threads come from Settings at the entry point (see `resolve_device`); on CUDA the forward pass
runs under bfloat16 autocast, on CPU too where `cpu_bf16` says so (see `use_cpu_bf16`), and on CPU the model
and batches use channels_last (20-30% faster here).
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from parking_ml.inference import PreprocessConfig, Segmenter, predict
from parking_ml.model.losses import build_loss
from parking_ml.model.metrics import evaluate
from parking_ml.model.optim import OPTIMIZERS, MatrixViews, build_optimizers, muon_layers

logger = logging.getLogger(__name__)

EpochCallback = Callable[[int, dict], None]
# fit(rebudget=...): the model part-way through the fit -> the fit's new wall-clock budget (None: keep it)
RebudgetFn = Callable[[nn.Module], float | None]
# rebudget runs once, after the first epoch that ends past this share of the time budget: by then the model
# finds most spaces, so timing its served inference says what the inference after the fit will take
REBUDGET_AT = 0.5

# why: bf16 autocast pays only on CPUs with bf16 matrix instructions, which these probe (docs/experiments/cpu-bf16.md)
CPU_BF16_PROBES = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")


@dataclass(frozen=True)
class FitConfig:
    epochs: int
    lr: float = 3e-3
    weight_decay: float = 1e-4
    loss: str = "ce+dice"
    class_weights: Sequence[float] | None = None
    patience: int | None = None  # epochs without improvement before stopping (None: never)
    scheduler: str = "onecycle"  # onecycle | cosine | none
    steps_per_epoch: int | None = None  # None: one pass over the loader; else this many steps, cycling
    objective: str = "free_f1"  # metric of evaluate() maximised on the validation loader
    progress: bool = True
    # wall-clock budget (s): from the second epoch on, the remaining ones are shortened (and the schedule
    # re-planned) whenever the pace says the fit would overrun it; None: always the planned steps
    time_budget_s: float | None = None
    # bfloat16 autocast of the forward pass on CPU (CUDA always has it); see use_cpu_bf16
    cpu_bf16: bool = False
    # "adamw", or "muon": Muon on the hidden layers' weight matrices at peak muon_lr, AdamW at lr on the rest
    optimizer: str = "adamw"
    muon_lr: float = 0.05


@dataclass
class FitResult:
    best_state: dict
    best_score: float
    best_epoch: int
    history: list[dict] = field(default_factory=list)
    stopped_early: bool = False
    steps_run: int = 0
    planned_steps: int = 0  # what the profile asked for; more than steps_run when the time budget cut it
    time_budget_s: float | None = None  # the budget the fit ended under (rebudget may have moved it)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_device(device: str = "auto") -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("PARKING_DEVICE=cuda but no CUDA device is visible; use auto or cpu")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def use_cpu_bf16(mode: str) -> bool:
    """Settings.cpu_bf16 resolved for this machine: "auto" is on where the CPU computes bf16 in hardware,
    with bf16 matrix or vector instructions (without them, bf16 is emulated and slower than fp32)."""
    if mode in ("on", "off"):
        return mode == "on"
    if mode != "auto":
        raise ValueError(f"cpu_bf16 must be auto, on or off, got {mode!r}")
    # private torch probes, looked up by name: where a torch lacks one, it counts as absent
    probes = [getattr(torch.cpu, name, None) for name in CPU_BF16_PROBES]
    return any(bool(probe and probe()) for probe in probes)


def bf16_matmul_in_hardware(device: torch.device) -> bool:
    """Whether ``device`` multiplies bf16 matrices in hardware, whatever Settings.cpu_bf16 says: a GPU that
    supports bf16, or a CPU with bf16 matrix or vector instructions (elsewhere Muon orthogonalises in fp32, see
    optim.Fp32Muon)."""
    if device.type == "cuda":
        # not emulation: a pre-Ampere GPU "supports" bf16 the slow way
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False))
    if device.type == "cpu":
        return use_cpu_bf16("auto")
    return False


def _prepare(model: nn.Module, device: torch.device) -> nn.Module:
    # why: not torch.compile: on CPU its build costs more than it saves a step (docs/experiments/demo-training-time.md)
    model = model.to(device)
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    return model


def _batch_to(batch: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, targets): the soft targets when the loader gives them, else the class maps."""
    x = batch["image"].to(device, non_blocking=True)
    if device.type == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)
    y = batch["target"] if "target" in batch else batch["mask"]
    return x, y.to(device, non_blocking=True)


def autocast(device: torch.device, cpu_bf16: bool = False):
    """The forward pass's precision: bf16 on CUDA, on CPU only when ``cpu_bf16`` (see use_cpu_bf16)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_bf16)


def _steps(loader: DataLoader, per_epoch: int | None) -> int:
    """Steps in one epoch: the profile's fixed number (a compute budget, whatever the data size) or one pass."""
    return per_epoch if per_epoch else len(loader)


def _endless(loader: DataLoader) -> Iterator[dict]:
    """Batches without end: a new shuffled pass whenever one runs out (epochs are counted in steps)."""
    while True:
        yield from loader


class TorchSegmenter(Segmenter):
    """The torch model behind parking_ml.inference's Segmenter: validation during training runs the very
    pre- and post-processing the API runs on the exported model (resampling, padding, windows, specks)."""

    def __init__(self, model: nn.Module, config: PreprocessConfig, device: torch.device, batch_size: int = 2) -> None:
        self.model = model
        self.config = config
        self.device = device
        self.batch_size = batch_size

    def run_logits(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).to(self.device)
        if self.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), autocast(self.device):
            return self.model(x).float().cpu().numpy()


@dataclass
class ValTile:
    tile_id: str
    rgb: np.ndarray
    truth: np.ndarray
    gsd: float | None


def make_validator(
    tiles: Sequence[ValTile], config: PreprocessConfig, device: torch.device
) -> Callable[[nn.Module], dict]:
    """A function model -> evaluate() metrics on these tiles, through parking_ml.inference.predict."""

    def validate(model: nn.Module) -> dict:
        was_training = model.training
        model.eval()
        try:
            seg = TorchSegmenter(model, config, device)
            preds = [predict(seg, t.rgb, image_gsd=t.gsd, keep_free_prob=True) for t in tiles]
        finally:
            model.train(was_training)
        return evaluate([p.mask for p in preds], [t.truth for t in tiles], free_probs=[p.free_prob for p in preds])

    return validate


def _scheduler(opt: torch.optim.Optimizer, cfg: FitConfig, total: int, max_lr: float):
    if cfg.scheduler == "onecycle":
        # Muon keeps its momentum (0.95) through the cycle, the setting it was measured with; AdamW's beta1
        # cycles as before
        cycle = not isinstance(opt, torch.optim.Muon)
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=max_lr, total_steps=total, pct_start=0.2, cycle_momentum=cycle
        )
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total, eta_min=max_lr * 0.01)
    if cfg.scheduler == "none":
        return None
    raise ValueError(f"unknown scheduler {cfg.scheduler!r}; use onecycle, cosine or none")


def budgeted_steps(elapsed_s: float, pace_s: float, budget_s: float, epochs_left: int, per_epoch: int) -> int:
    """Steps per remaining epoch that end the fit within ``budget_s`` at ``pace_s`` seconds a step
    (at most ``per_epoch``, at least 1)."""
    if epochs_left <= 0 or pace_s <= 0:
        return per_epoch
    affordable = int(max(0.0, budget_s - elapsed_s) / pace_s)
    return max(1, min(per_epoch, affordable // epochs_left))


def worth_replanning(fitted: int, steps: int) -> bool:
    """Whether ``fitted`` steps per epoch differ enough from the current ``steps`` to re-plan: 2 % fewer or
    5 % more. Each re-plan moves the learning rate a little, and a pace that jitters by a step or two had
    re-planned 14 of the 48 epochs it checked; ending up to 2 % of the time left late is the price."""
    return fitted < steps * 0.98 or fitted > steps * 1.05


def _replan(opts: list[tuple[torch.optim.Optimizer, float]], cfg: FitConfig, total: int, done: int) -> list:
    """One schedule per (optimizer, peak lr) over ``total`` steps, advanced to step ``done`` (the same shape,
    only shorter)."""
    import warnings

    scheds = [_scheduler(opt, cfg, total, max_lr) for opt, max_lr in opts]
    with warnings.catch_warnings():
        # fast-forwarding steps the schedule without optimizer steps, which torch warns about
        warnings.simplefilter("ignore", UserWarning)
        for sched in scheds:
            for _ in range(done if sched is not None else 0):
                sched.step()
    return scheds


def _optimizers(model: nn.Module, cfg: FitConfig, device: torch.device):
    """(model prepared for ``device``, Muon's matrix views or None, [(optimizer, peak lr)])."""
    model = _prepare(model, device)
    # after _prepare: the views follow the memory format the weights train in
    views = MatrixViews(muon_layers(model)) if cfg.optimizer == "muon" else None
    opts = build_optimizers(
        model,
        views,
        cfg.lr,
        cfg.weight_decay,
        cfg.muon_lr,
        fused=device.type in ("cpu", "cuda"),
        bf16_matmul=bf16_matmul_in_hardware(device),
    )
    return model, views, opts


def _train_epoch(
    model: nn.Module,
    batches: Iterator[dict],
    steps: int,
    opts: list,
    views: MatrixViews | None,
    scheds: list,
    loss_fn: Callable,
    device: torch.device,
    cfg: FitConfig,
    desc: str,
    result: FitResult,
) -> float:
    """``steps`` optimizer steps on ``batches`` (counted in result.steps_run); -> the epoch's mean loss."""
    from tqdm.auto import tqdm

    running, seen = 0.0, 0
    bar = tqdm(total=steps, desc=desc, leave=False, disable=not cfg.progress)
    for _ in range(steps):
        batch = next(batches)
        x, y = _batch_to(batch, device)
        with autocast(device, cfg.cpu_bf16):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        for opt, _ in opts:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        if views is not None:
            views.hand_over_grads()
        for opt, _ in opts:
            opt.step()
        for sched in scheds:
            if sched is not None:
                sched.step()
        running += float(loss.detach()) * x.shape[0]
        seen += x.shape[0]
        bar.update(1)
        bar.set_postfix(loss=f"{running / max(seen, 1):.4f}")
        result.steps_run += 1
    bar.close()
    return running / max(seen, 1)


def _move_budget(result: FitResult, moved: float | None) -> None:
    """rebudget's answer taken as the fit's budget (None: the budget stays)."""
    if moved is not None:
        was = result.time_budget_s or 0.0
        logger.info("time budget: moved", extra={"budget_s": round(moved, 1), "was": round(was, 1)})
        result.time_budget_s = float(moved)


def _resized_steps(budget_s: float, fit_t0: float, pace_s: float, left: int, per_epoch: int, steps: int) -> int | None:
    """Steps per remaining epoch that end the fit within ``budget_s`` at ``pace_s`` a step, when worth a new
    schedule (see worth_replanning); None: keep ``steps``."""
    elapsed = time.perf_counter() - fit_t0
    fitted = budgeted_steps(elapsed, pace_s, budget_s, left, per_epoch)
    if not worth_replanning(fitted, steps):
        return None
    logger.info(
        "time budget: re-sizing the remaining epochs",
        extra={"budget_s": budget_s, "elapsed_s": round(elapsed, 1), "steps_per_epoch": fitted, "was": steps},
    )
    return fitted


# one loop over epochs, with the budget re-sizing between them, reads best whole (12 of its lines are the docstring)
def fit(
    model: nn.Module,
    train_loader: DataLoader,
    validate: Callable[[nn.Module], dict] | None,
    cfg: FitConfig,
    device: torch.device,
    on_epoch: EpochCallback | None = None,
    rebudget: RebudgetFn | None = None,
) -> FitResult:
    """Train model in place; keep the state with the best validation objective (the last one if no val).

    validate(model) -> evaluate() metrics (see make_validator); None: no validation, the last state is kept.

    on_epoch(epoch, record) runs after every epoch with the loss and validation metrics; it may raise (e.g.
    optuna.TrialPruned) to stop training. The model ends holding the best state.

    rebudget(model), with a time budget, runs once after the first epoch past REBUDGET_AT of it and returns
    the fit's new budget (its own time counts as the fit's); the remaining epochs are re-sized to that.
    """
    if len(train_loader) == 0:
        raise ValueError("the training loader is empty: no tiles to train on (check the manifest's train split)")
    if cfg.optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; use one of {', '.join(OPTIMIZERS)}")
    model, views, opts = _optimizers(model, cfg, device)
    loss_fn = build_loss(cfg.loss, cfg.class_weights)
    steps = _steps(train_loader, cfg.steps_per_epoch)
    total = max(1, steps * cfg.epochs)
    scheds = [_scheduler(opt, cfg, total, max_lr) for opt, max_lr in opts]

    best = FitResult(
        best_state={}, best_score=-math.inf, best_epoch=-1, planned_steps=total, time_budget_s=cfg.time_budget_s
    )
    since_best = 0
    batches = _endless(train_loader)
    # from the second epoch on (the first also decodes and caches the tiles) each epoch's pace re-sizes the
    # remaining epochs to the time budget: a machine that slows down mid-fit still ends in time, and one that
    # speeds up again gets its steps back, never more than planned (docs/experiments/fit-time-budget.md)
    check_from = 1 if cfg.epochs > 2 else 0
    planned_per_epoch = steps
    fit_t0 = time.perf_counter()
    for epoch in range(cfg.epochs):
        model.train()
        t0 = time.perf_counter()
        desc = f"epoch {epoch + 1}/{cfg.epochs}"
        train_loss = _train_epoch(model, batches, steps, opts, views, scheds, loss_fn, device, cfg, desc, best)
        record: dict = {
            "epoch": epoch,
            "train_loss": train_loss,
            "epoch_s": time.perf_counter() - t0,
            "lr": float(opts[0][0].param_groups[0]["lr"]),
        }
        if validate is not None:
            metrics = validate(model)
            record.update({f"val_{k}": v for k, v in metrics.items() if k != "confusion"})
            score = float(metrics[cfg.objective])
        else:
            score = float(epoch)  # no validation set: the latest state is the one kept
        record["score"] = score
        best.history.append(record)
        logger.info("epoch done", extra={k: v for k, v in record.items() if isinstance(v, int | float)})
        if score > best.best_score:
            best.best_score, best.best_epoch = score, epoch
            best.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
            since_best = 0
        else:
            since_best += 1
        if on_epoch is not None:
            on_epoch(epoch, record)
        if cfg.patience is not None and validate is not None and since_best >= cfg.patience:
            best.stopped_early = True
            break
        left = cfg.epochs - 1 - epoch
        budget_s = best.time_budget_s
        halfway = budget_s is not None and time.perf_counter() - fit_t0 >= REBUDGET_AT * budget_s
        if rebudget is not None and halfway and left > 0:
            _move_budget(best, rebudget(model))
            rebudget = None
            model.train()
        if best.time_budget_s is not None and epoch >= check_from and left > 0:
            pace_s = record["epoch_s"] / steps
            fitted = _resized_steps(best.time_budget_s, fit_t0, pace_s, left, planned_per_epoch, steps)
            if fitted is not None:
                steps = fitted
                scheds = _replan(opts, cfg, best.steps_run + steps * left, best.steps_run)
    model.load_state_dict(best.best_state)
    return best
