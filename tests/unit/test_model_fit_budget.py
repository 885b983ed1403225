"""The final fit's wall-clock budget: what tuning left of the training budget; remaining epochs are re-sized
and the schedule re-planned."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from parking_ml.model.profiles import MIN_FIT_SHARE, final_fit_budget, get_profile
from parking_ml.model.train import FitConfig, budgeted_steps, fit, worth_replanning


def test_budgeted_steps_keeps_the_pace_of_the_steps_so_far():
    # 20 s gone, 2 s a step: 100 s left over 4 epochs is 50 steps, 12 per epoch
    assert budgeted_steps(20.0, 2.0, 120.0, 4, 30) == 12
    # enough time: never more than the plan
    assert budgeted_steps(1.0, 0.1, 1000.0, 4, 30) == 30
    # already over budget: one step per epoch still runs, so every epoch logs
    assert budgeted_steps(200.0, 2.0, 120.0, 4, 30) == 1
    assert budgeted_steps(5.0, 0.0, 120.0, 4, 30) == 30


def test_a_pace_that_jitters_by_a_step_keeps_the_plan():
    assert not worth_replanning(94, 95) and not worth_replanning(99, 95)
    assert worth_replanning(92, 95)  # 3 % shorter
    assert worth_replanning(100, 95)  # 5.3 % longer


def test_the_final_fit_gets_what_tuning_left_of_the_training_budget():
    profile = dataclasses.replace(get_profile("demo"), train_budget_s=500.0)
    assert final_fit_budget(profile, 100.0) == 400.0
    # a resumed study with nothing left to tune: the whole budget
    assert final_fit_budget(profile, 0.0) == 500.0
    # a trial that ran on past the tuning budget still leaves the fit half of the whole
    assert final_fit_budget(profile, 480.0) == 500.0 * MIN_FIT_SHARE
    assert final_fit_budget(dataclasses.replace(profile, train_budget_s=None), 100.0) is None


def test_the_final_fit_leaves_time_for_the_inference_after_it():
    profile = dataclasses.replace(get_profile("demo"), train_budget_s=500.0)
    # 100 s of tuning and 150 s of holdout and drift-reference inference leave the fit 250 s of the stage's 500
    assert final_fit_budget(profile, 100.0, 150.0) == 250.0
    # a machine so slow that tuning and inference would eat the budget still fits for the minimum share
    assert final_fit_budget(profile, 200.0, 400.0) == 500.0 * MIN_FIT_SHARE


def test_the_inference_after_the_fit_is_estimated_from_timed_tiles(tmp_path, monkeypatch):
    """after_fit_estimate_s exports the (untrained) network and times served predictions on a few tiles: a
    machine twice as slow per tile gets twice the per-tile share, the export and fixed costs on top. The
    clock it reads moves only by the known costs below, so the machine's load cannot change the result."""
    import cv2
    import pandas as pd

    from parking_ml import inference
    from parking_ml.inference import PreprocessConfig
    from parking_ml.model import budget, package

    for sub in ("tiles", "masks"):
        (tmp_path / sub).mkdir()
    ids = [f"t{i}" for i in range(4)]
    for tile_id in ids:
        cv2.imwrite(str(tmp_path / "tiles" / f"{tile_id}.png"), np.full((64, 64, 3), 90, np.uint8))
        cv2.imwrite(str(tmp_path / "masks" / f"{tile_id}.png"), np.zeros((64, 64), np.uint8))
    rows = pd.DataFrame({"tile_id": ids, "gsd": [0.1] * 4})
    config = PreprocessConfig(tile_size=64, overlap=16, gsd=0.1)
    model = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1))
    clock = _Clock()
    monkeypatch.setattr(budget, "time", clock)
    export_s = 3.0
    real_build, real_predict = package.build_package, inference.predict
    seconds_per_tile = {"value": 0.0}
    calls: list[int] = []

    def timed_build(*args, **kwargs):
        clock.now += export_s
        return real_build(*args, **kwargs)

    def timed_predict(*args, **kwargs):
        calls.append(1)
        clock.now += seconds_per_tile["value"]
        return real_predict(*args, **kwargs)

    monkeypatch.setattr(package, "build_package", timed_build)
    monkeypatch.setattr(inference, "predict", timed_predict)
    estimates = {}
    for pace in (0.05, 0.1):
        seconds_per_tile["value"] = pace
        estimates[pace] = budget.after_fit_estimate_s(model, config, tmp_path, rows, n_tiles=40, threads=1)
        # the export as long as it took, the per-tile pace of 40 tiles (a trained model's a little slower) and
        # the fixed costs
        expected = export_s + 40 * pace * budget.TRAINED_PACE_FACTOR + budget.AFTER_FIT_FIXED_S
        assert estimates[pace] == pytest.approx(expected)
    assert len(calls) == 2 * 3  # a warm-up tile and two timed ones, per estimate
    assert estimates[0.1] - estimates[0.05] == pytest.approx(40 * 0.05 * budget.TRAINED_PACE_FACTOR)


class _Clock:
    """The clock fit() reads (its module's ``time``), moved only by _Slow's steps: the budget tests count
    steps, not the load of the machine running them (real sleeps failed on a busy 2-core machine)."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


_CLOCK = _Clock()


@pytest.fixture(autouse=True)
def _fake_clock(monkeypatch):
    from parking_ml.model import train

    _CLOCK.now = 0.0
    monkeypatch.setattr(train, "time", _CLOCK)


class _Slow(nn.Module):
    """A 1x1 conv whose forward pass moves the fake clock: a training step costs a known time."""

    def __init__(self, step_s: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.step_s = step_s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            _CLOCK.now += self.step_s
        return self.conv(x)


def _loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    items = [
        {"image": torch.randn(3, 8, 8, generator=g), "mask": torch.randint(0, 3, (8, 8), generator=g)} for _ in range(4)
    ]
    return DataLoader(items, batch_size=2)


@pytest.mark.parametrize("scheduler", ["onecycle", "cosine"])
def test_time_budget_shortens_the_fit_and_ends_the_schedule(scheduler):
    cfg = FitConfig(epochs=4, lr=1e-2, scheduler=scheduler, steps_per_epoch=10, progress=False, time_budget_s=1.0)
    model = _Slow(0.03)
    result = fit(model, _loader(), None, cfg, torch.device("cpu"))
    assert result.planned_steps == 40
    # the first two epochs ran their 10 steps each (~0.6 s); ~0.4 s left at 0.03 s a step leave room for ~6
    # steps in each of the 2 remaining epochs
    assert 20 + 2 <= result.steps_run < 40
    assert len(result.history) == 4
    assert [h["epoch"] for h in result.history] == [0, 1, 2, 3]
    # the re-planned schedule reached its end: the learning rate has annealed far below its peak
    lr_now = result.history[-1].get("lr")
    assert lr_now is not None and lr_now < 0.1 * cfg.lr


def test_no_budget_runs_every_planned_step():
    cfg = FitConfig(epochs=3, lr=1e-2, scheduler="onecycle", steps_per_epoch=5, progress=False)
    result = fit(_Slow(0.0), _loader(), None, cfg, torch.device("cpu"))
    assert result.steps_run == result.planned_steps == 15


def test_a_machine_that_slows_down_mid_fit_still_ends_in_time():
    model = _Slow(0.02)

    def slow_down(epoch: int, record: dict) -> None:
        if epoch == 1:
            model.step_s = 0.06  # from the third epoch on, each step takes three times as long

    cfg = FitConfig(epochs=5, lr=1e-2, scheduler="onecycle", steps_per_epoch=10, progress=False, time_budget_s=1.2)
    result = fit(model, _loader(), None, cfg, torch.device("cpu"), on_epoch=slow_down)
    # two epochs at 0.02 s (0.4 s) fit the plan; the third at 0.06 s (0.6 s) leaves ~0.2 s for the last two,
    # so they shrink to a step or two each instead of 20 more steps (1.2 s more at the new pace)
    assert result.planned_steps == 50
    assert result.steps_run < 40
    assert [h["epoch"] for h in result.history] == [0, 1, 2, 3, 4]


def test_a_machine_that_speeds_up_again_gets_its_steps_back_up_to_the_plan():
    model = _Slow(0.02)

    def pace(epoch: int, record: dict) -> None:
        model.step_s = 0.06 if epoch == 0 else 0.02  # only the second epoch is slow

    cfg = FitConfig(epochs=6, lr=1e-2, scheduler="onecycle", steps_per_epoch=10, progress=False, time_budget_s=2.0)
    result = fit(model, _loader(), None, cfg, torch.device("cpu"), on_epoch=pace)
    # after the slow epoch (0.8 s gone) 1.2 s at 0.06 s a step leave 5 steps for each of the 4 left; the next
    # epoch runs at 0.02 s again, so the last 3 grow back to the planned 10 (without that: 40 steps in all)
    assert result.planned_steps == 60
    assert 45 <= result.steps_run <= 60
    assert [h["epoch"] for h in result.history] == [0, 1, 2, 3, 4, 5]
    assert result.history[-1]["lr"] < 0.1 * cfg.lr


def test_rebudget_runs_once_halfway_and_the_remaining_epochs_follow_its_budget():
    """fit(rebudget=...) asks once, after the first epoch past half the budget, what the budget should be
    (the final fit re-times the inference after it on the model as it is then) and re-sizes to the answer."""
    calls: list[tuple[float, bool]] = []

    def more_time(model: nn.Module) -> float:
        calls.append((_CLOCK.now, model.training))
        model.eval()  # what a probe of the served model does; fit puts it back in training mode
        return 3.0

    # 80 steps of 0.02 s planned (1.6 s) under a 1-s budget
    cfg = FitConfig(epochs=8, lr=1e-2, scheduler="onecycle", steps_per_epoch=10, progress=False, time_budget_s=1.0)
    device = torch.device("cpu")
    more = fit(_Slow(0.02), _loader(), None, cfg, device, rebudget=more_time)
    kept = fit(_Slow(0.02), _loader(), None, cfg, device, rebudget=lambda m: None)
    short = fit(_Slow(0.02), _loader(), None, cfg, device, rebudget=lambda m: 0.6)
    assert len(calls) == 1 and calls[0][0] >= 0.5 and calls[0][1]
    assert (more.time_budget_s, kept.time_budget_s, short.time_budget_s) == (3.0, 1.0, 0.6)
    # 3 s leave room for (nearly) the whole plan; a budget moved down cuts the steps left
    assert short.steps_run < kept.steps_run < more.steps_run
    assert more.steps_run >= 65 and kept.steps_run < 60
    assert [h["epoch"] for h in more.history] == list(range(8))


def test_fit_takes_the_same_adamw_steps_as_torchs_reference_loop():
    """fit() uses the fused AdamW kernel for speed; its weights after a few steps are those of the plain
    per-tensor AdamW loop on the same batches."""
    from parking_ml.model.losses import build_loss

    torch.manual_seed(3)
    start = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 1))
    ours = copy.deepcopy(start)
    cfg = FitConfig(epochs=2, lr=5e-3, weight_decay=1e-2, loss="ce", scheduler="none", progress=False)
    fit(ours, _loader(), None, cfg, torch.device("cpu"))

    reference = copy.deepcopy(start)
    opt = torch.optim.AdamW(reference.parameters(), lr=5e-3, weight_decay=1e-2, foreach=False, fused=False)
    loss_fn = build_loss("ce", None)
    for _ in range(2):
        for batch in _loader():
            loss = loss_fn(reference(batch["image"]), batch["mask"])
            opt.zero_grad()
            loss.backward()
            opt.step()
    moved = 0.0
    for (name, got), want, before in zip(
        ours.state_dict().items(), reference.state_dict().values(), start.state_dict().values(), strict=True
    ):
        assert torch.allclose(got, want, atol=1e-5), name
        moved = max(moved, float((want - before).abs().max()))
    assert moved > 1e-3  # the steps did move the weights, so the comparison means something


def test_cpu_bf16_auto_follows_the_cpus_bf16_units(monkeypatch):
    from parking_ml.model.train import use_cpu_bf16

    assert use_cpu_bf16("on") is True
    assert use_cpu_bf16("off") is False
    native = torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
    assert use_cpu_bf16("auto") is bool(native)
    # each unit alone turns it on; neither (or a torch without the probes) leaves it off
    for amx, avx512 in ((True, False), (False, True), (False, False)):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512: v)
        assert use_cpu_bf16("auto") is (amx or avx512)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    assert use_cpu_bf16("auto") is False
    with pytest.raises(ValueError, match="auto, on or off"):
        use_cpu_bf16("yes")


@pytest.mark.parametrize(("cpu_bf16", "dtype"), [(True, torch.bfloat16), (False, torch.float32)])
def test_fit_runs_the_forward_pass_in_the_configured_precision(cpu_bf16, dtype):
    """bf16 autocast covers the training forward pass only: the weights it updates stay fp32."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 1))
    seen: list[torch.dtype] = []
    model[0].register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    before = copy.deepcopy(model.state_dict())
    cfg = FitConfig(epochs=1, lr=1e-2, loss="ce", scheduler="none", progress=False, cpu_bf16=cpu_bf16)
    result = fit(model, _loader(), None, cfg, torch.device("cpu"))
    assert result.steps_run == 2 and seen == [dtype, dtype]
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert not torch.equal(before["0.weight"], model.state_dict()["0.weight"])
    assert all(np.isfinite(h["train_loss"]) for h in result.history)


@pytest.mark.parametrize(("trial_s", "ran"), [(90.0, 1), (40.0, 3), (60.0, 2)])
def test_tuning_starts_no_trial_that_would_end_past_its_budget(trial_s, ran):
    """150 s of tuning: 90-s trials stop after one (a second would end at 180 s), 40-s ones run all three
    asked for (120 s), 60-s ones stop after two (a third would end at 180 s). Optuna's own timeout would have
    started the second 90-s trial at 90 s."""
    import optuna

    from parking_ml.model.budget import stop_before_overrun

    now = [0.0]
    callback = stop_before_overrun(150.0, clock=lambda: now[0])

    def objective(trial: optuna.Trial) -> float:
        now[0] += trial_s  # the trial's work, on the callback's clock
        return trial.suggest_float("x", 0.0, 1.0)

    study = optuna.create_study(direction="maximize")
    study.optimize(objective, n_trials=3, timeout=150.0, callbacks=[callback])
    assert len(study.trials) == ran


def test_tuning_without_a_budget_runs_every_trial():
    import optuna

    from parking_ml.model.budget import stop_before_overrun

    now = [0.0]
    callback = stop_before_overrun(None, clock=lambda: now[0])

    def objective(trial: optuna.Trial) -> float:
        now[0] += 1000.0
        return trial.suggest_float("x", 0.0, 1.0)

    study = optuna.create_study(direction="maximize")
    study.optimize(objective, n_trials=3, callbacks=[callback])
    assert len(study.trials) == 3
