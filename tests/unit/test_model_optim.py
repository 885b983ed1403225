"""Muon beside AdamW: which layers it takes, that its views update the weights in place, and that fit's Muon
steps are torch's Muon on each weight as a matrix while the model and its state dict keep their shapes."""

from __future__ import annotations

import copy
from dataclasses import replace

import optuna
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from parking_ml.model.losses import build_loss
from parking_ml.model.optim import (
    Fp32Muon,
    MatrixViews,
    build_optimizers,
    muon_layers,
    muon_step_lr,
    orthogonalise_fp32,
)
from parking_ml.model.profiles import PROFILES, SearchSpace
from parking_ml.model.recipe import default_params, fit_config, suggest
from parking_ml.model.train import FitConfig, _replan, fit


def _net() -> nn.Sequential:
    # image in (3 channels), two hidden convolutions (one grouped), a linear-free head out (3 classes)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        # no bias before a norm: its gradient is rounding noise, which Adam's normalised steps would amplify
        nn.Conv2d(8, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=4),
        nn.ReLU(),
        nn.Conv2d(8, 3, 1),
    )


def _loader() -> list[dict]:
    g = torch.Generator().manual_seed(1)
    return [
        {"image": torch.randn(2, 3, 8, 8, generator=g), "mask": torch.randint(0, 3, (2, 8, 8), generator=g)}
        for _ in range(3)
    ]


def test_muon_takes_the_hidden_dense_layers_only():
    net = nn.Sequential(_net(), nn.Flatten(), nn.Linear(192, 16), nn.Linear(16, 2))
    chosen = muon_layers(net)
    # not the layer reading the image, not the grouped one, not the class head; the wide linear layer yes,
    # the one writing two outputs no
    assert chosen == [net[0][2], net[2]]


@pytest.mark.parametrize("channels_last", [False, True])
def test_matrix_views_share_the_weights_memory_and_take_their_gradients(channels_last):
    layer = nn.Conv2d(8, 6, 3)
    if channels_last:
        layer = layer.to(memory_format=torch.channels_last)
    views = MatrixViews([layer])
    (matrix,) = views.matrices
    assert matrix.shape == (6, 72) and matrix.data_ptr() == layer.weight.data_ptr()
    before = layer.weight.detach().clone()
    with torch.no_grad():
        matrix[2].add_(1.0)  # one output channel's row
    changed = (layer.weight.detach() != before).flatten(1).any(dim=1)
    assert changed.tolist() == [False, False, True, False, False, False]
    assert torch.equal(layer.weight.detach()[2], before[2] + 1.0)
    # a gradient in the other memory format lands in the view's column order, and the weight's is cleared
    grad = torch.randn(6, 8, 3, 3)
    layer.weight.grad = grad.contiguous(memory_format=torch.contiguous_format if channels_last else torch.channels_last)
    views.hand_over_grads()
    assert layer.weight.grad is None
    # the same entries as the weight's: what the view reads as (row, column) of the weight is there in the grad
    probe = torch.zeros(6, 8, 3, 3)
    probe[4, 5, 1, 2] = 1.0
    with torch.no_grad():
        layer.weight.copy_(probe)
    column = int(matrix[4].nonzero())
    assert float(matrix.grad[4, column]) == float(grad[4, 5, 1, 2])


@pytest.mark.parametrize("bf16_matmul", [True, False])
def test_fits_muon_steps_are_torchs_muon_on_each_weight_as_a_matrix(bf16_matmul, monkeypatch):
    """The reference keeps the hidden convolution's weight as a plain 2-D leaf and runs torch.optim.Muon (or
    Fp32Muon, on a machine without bf16 matrix hardware) and AdamW by hand: fit must land on the same weights."""
    from parking_ml.model import train

    monkeypatch.setattr(train, "bf16_matmul_in_hardware", lambda device: bf16_matmul)
    torch.manual_seed(5)
    start = _net()
    ours = copy.deepcopy(start)
    cfg = FitConfig(epochs=2, lr=5e-3, weight_decay=1e-2, loss="ce", scheduler="none", progress=False)
    cfg = replace(cfg, optimizer="muon", muon_lr=0.02)
    fit(ours, _loader(), None, cfg, torch.device("cpu"))

    ref = copy.deepcopy(start)
    matrix = nn.Parameter(ref[2].weight.detach().reshape(8, -1).clone())
    rest = [p for name, p in ref.named_parameters() if name != "2.weight"]
    muon_cls = torch.optim.Muon if bf16_matmul else Fp32Muon
    muon = muon_cls([matrix], lr=0.02, weight_decay=0.0, adjust_lr_fn="original")
    adamw = torch.optim.AdamW(rest, lr=5e-3, weight_decay=1e-2)
    loss_fn = build_loss("ce", None)

    def forward(x: torch.Tensor) -> torch.Tensor:
        x = F.relu(ref[0](x))
        x = F.conv2d(x, matrix.view(8, 8, 3, 3), padding=1)
        x = F.relu(ref[3](x))
        return ref[7](F.relu(ref[5](x)))

    ref.train()
    for _ in range(2):
        for batch in _loader():
            loss = loss_fn(forward(batch["image"]), batch["mask"])
            muon.zero_grad()
            adamw.zero_grad()
            loss.backward()
            muon.step()
            adamw.step()
    got = ours.state_dict()
    # Muon orthogonalises in bfloat16: a last-bit difference in a gradient (channels_last in fit) can round
    # one entry differently, ~1e-5 here, against ~5e-3 that each step moves an entry
    torch.testing.assert_close(got["2.weight"], matrix.detach().view(8, 8, 3, 3), atol=1e-4, rtol=1e-3)
    for name, want in ref.state_dict().items():
        if name != "2.weight":
            torch.testing.assert_close(got[name], want, atol=1e-5, rtol=1e-4, msg=name)
    assert float((got["2.weight"] - start.state_dict()["2.weight"]).abs().max()) > 1e-3


def test_a_muon_fit_leaves_the_model_and_its_state_dict_as_they_were_but_trained():
    net = _net()
    keys, before = list(net.state_dict()), copy.deepcopy(net.state_dict())
    cfg = FitConfig(epochs=2, lr=5e-3, loss="ce", scheduler="onecycle", progress=False, optimizer="muon")
    result = fit(net, _loader(), None, cfg, torch.device("cpu"))
    assert list(net.state_dict()) == keys == list(result.best_state)
    assert not torch.equal(net.state_dict()["2.weight"], before["2.weight"])
    copy.deepcopy(net)  # nothing in the model refers to the optimiser's views


def test_unknown_optimizer_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
        fit(_net(), _loader(), None, FitConfig(epochs=1, optimizer="sgd", progress=False), torch.device("cpu"))


def test_each_optimizer_follows_its_own_one_cycle_peak_when_replanned():
    net = _net()
    opts = build_optimizers(net, MatrixViews(muon_layers(net)), lr=1e-2, weight_decay=0.0, muon_lr=0.1, fused=False)
    cfg = FitConfig(epochs=1, scheduler="onecycle")
    # re-planned (as the time budget does) to 100 steps, 20 done: the peak of pct_start 0.2
    _replan(opts, cfg, total=100, done=20)
    lrs = [opt.param_groups[0]["lr"] for opt, _ in opts]
    assert lrs == pytest.approx([1e-2, 0.1], rel=1e-3)
    # Muon's momentum is not cycled, AdamW's beta1 is
    assert opts[1][0].param_groups[0]["momentum"] == 0.95


def test_searched_optimizer_and_its_learning_rate_reach_the_fit():
    space = SearchSpace(
        encoders=("resnet18",),
        lr=(1e-3, 1e-2),
        weight_decay=(1e-5, 1e-4),
        losses=("ce",),
        free_weight=(1.0, 2.0),
        batch_sizes=(4,),
        aug_strength=(0.0, 0.5),
        optimizers=("muon",),
        muon_lr=(0.03, 0.12),
    )
    study = optuna.create_study()
    params = suggest(study.ask(), space)
    assert params["optimizer"] == "muon" and 0.03 <= params["muon_lr"] <= 0.12
    cfg = fit_config(params, PROFILES["smoke"], 1, "free_f1")
    assert (cfg.optimizer, cfg.muon_lr) == ("muon", params["muon_lr"])
    # AdamW trials draw no Muon learning rate
    adamw = suggest(optuna.create_study().ask(), SearchSpace(**{**space.__dict__, "optimizers": ("adamw",)}))
    assert adamw["optimizer"] == "adamw" and "muon_lr" not in adamw
    # parameters of a study from before the optimizer was searched train with AdamW
    old = {k: v for k, v in default_params(PROFILES["smoke"]).items() if k not in ("optimizer", "muon_lr")}
    assert fit_config(old, PROFILES["smoke"], 1, "free_f1").optimizer == "adamw"


def _muon_steps(
    cls: type, shape: tuple[int, int], steps: int = 3, rule: str = "original"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(start, end) of a matrix after ``steps`` of ``cls`` on fixed random gradients."""
    g = torch.Generator().manual_seed(3)
    start = torch.randn(shape, generator=g)
    param = nn.Parameter(start.clone())
    opt = cls([param], lr=0.05, weight_decay=0.1, adjust_lr_fn=rule)
    for _ in range(steps):
        param.grad = torch.randn(shape, generator=g)
        opt.step()
    return start, param.detach()


@pytest.mark.parametrize("rule", ["original", "match_rms_adamw"])
@pytest.mark.parametrize("shape", [(16, 40), (40, 16)])
def test_fp32_muon_steps_as_torchs_muon_up_to_its_bf16_rounding(shape, rule):
    # both learning-rate rules: Fp32Muon applies its own copy of them, so this is what ties it to torch's
    start, want = _muon_steps(torch.optim.Muon, shape, rule=rule)
    _, got = _muon_steps(Fp32Muon, shape, rule=rule)
    moved = float((want - start).abs().max())
    assert moved > 0.05
    # torch's bf16 iteration keeps ~3 significant digits of each update
    assert float((got - want).abs().max()) < 0.02 * moved


def test_fp32_orthogonalisation_runs_in_fp32_and_flattens_the_spectrum():
    from torch.optim._muon import _zeropower_via_newtonschulz

    g = torch.Generator().manual_seed(4)
    # a badly conditioned update: singular values 0.1 .. 10
    u, _, v = torch.linalg.svd(torch.randn(24, 60, generator=g), full_matrices=False)
    update = u @ torch.diag(torch.logspace(-1, 1, 24)) @ v
    coefficients = (3.4445, -4.7750, 2.0315)
    ours = orthogonalise_fp32(update, coefficients, 5, 1e-7)
    assert ours.dtype == torch.float32 and ours.shape == update.shape
    theirs = _zeropower_via_newtonschulz(update, coefficients, 5, 1e-7)
    assert theirs.dtype == torch.bfloat16
    # the quintic iteration maps singular values into ~(0.5, 1.5) rather than exactly 1 (torch's docstring)
    for out in (ours, theirs.float()):
        sv = torch.linalg.svdvals(out)
        assert float(sv.min()) > 0.3 and float(sv.max()) < 1.5
    torch.testing.assert_close(ours, theirs.float(), atol=0.03, rtol=0.05)
    # the tall case is the wide one transposed
    torch.testing.assert_close(orthogonalise_fp32(update.T, coefficients, 5, 1e-7), ours.T)


def test_fp32_muon_checkpoint_resumes_in_torchs_muon():
    """Fp32Muon keeps torch's state (one momentum buffer a matrix, same key): a checkpoint taken on a machine
    without bf16 hardware resumes on one with it."""
    g = torch.Generator().manual_seed(5)
    grads = [torch.randn(16, 40, generator=g) for _ in range(3)]
    start = torch.randn(16, 40, generator=g)

    def run(resume_in: type | None) -> torch.Tensor:
        param = nn.Parameter(start.clone())
        opt = Fp32Muon([param], lr=0.05, weight_decay=0.0, adjust_lr_fn="original")
        for k, grad in enumerate(grads):
            if k == 2 and resume_in is not None:
                state = opt.state_dict()
                opt = resume_in([param], lr=0.05, weight_decay=0.0, adjust_lr_fn="original")
                opt.load_state_dict(state)
            param.grad = grad.clone()
            opt.step()
        return param.detach()

    fresh = run(None)
    resumed = run(torch.optim.Muon)
    # without the momentum buffer the third step would follow its own gradient alone: far from both
    assert float((fresh - start).abs().max()) > 0.05
    # torch's step rounds its update to bf16 (~1 % of a step here); a lost buffer moved it by ~20 %
    assert float((resumed - fresh).abs().max()) < 0.05 * float((fresh - start).abs().max())


def test_muon_step_lr_refuses_a_rule_it_does_not_know():
    assert muon_step_lr(0.1, "original", (40, 10)) == pytest.approx(0.2)
    assert muon_step_lr(0.1, "original", (10, 40)) == pytest.approx(0.1)
    assert muon_step_lr(0.1, "match_rms_adamw", (10, 25)) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="adjust_lr_fn 'spectral'"):
        muon_step_lr(0.1, "spectral", (4, 4))


def test_build_optimizers_picks_torchs_muon_only_where_bf16_runs_in_hardware():
    net = _net()
    views = MatrixViews(muon_layers(net))
    for bf16, want in ((True, torch.optim.Muon), (False, Fp32Muon)):
        opts = build_optimizers(net, views, 1e-2, 0.0, 0.1, fused=False, bf16_matmul=bf16)
        assert type(opts[1][0]) is want


def test_bf16_matrix_hardware_follows_the_cpus_probes_not_the_setting(monkeypatch):
    from parking_ml.model import train

    for present in (True, False):
        monkeypatch.setattr(train, "use_cpu_bf16", lambda mode, present=present: mode == "auto" and present)
        assert train.bf16_matmul_in_hardware(torch.device("cpu")) is present
    assert train.bf16_matmul_in_hardware(torch.device("meta")) is False
