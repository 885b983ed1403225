"""Optimisers of the training loop: AdamW alone, or Muon on the hidden layers' weight matrices beside AdamW.

Muon (torch.optim.Muon) replaces each update of a weight matrix by its nearest orthogonal matrix (a few
Newton-Schulz iterations on the momentum), so that every direction of the layer learns at the same pace
instead of the few that dominate the gradient: in the demo's short CPU fits it beat AdamW in equal time
(docs/experiments/muon.md). On a device without bf16 matrix hardware the iteration runs in fp32 (Fp32Muon).

torch's Muon takes 2-D parameters only. A convolution's weight (out, in, kh, kw) is a matrix of out rows,
so Muon gets a 2-D view of each weight's memory (`MatrixViews`), and each step hands it the weight's
gradient: the model, its state dict and what is exported never change shape. Orthogonalising a matrix
commutes with permuting its columns, so the view may take the columns in whatever order the weight's
memory format (channels_last on a CPU) holds them. As Muon's authors advise, the layer that reads the image
and the one that writes the classes, and every bias and norm, stay with AdamW.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

OPTIMIZERS = ("adamw", "muon")
# fewer input or output channels than this: the image (RGB) or the classes, not a hidden layer
_MIN_CHANNELS = 4


def muon_layers(model: nn.Module) -> list[nn.Module]:
    """The layers whose weights Muon updates: every convolution and linear layer whose input and output
    both have at least _MIN_CHANNELS channels (not the one reading the image, not the one writing the
    classes). Grouped convolutions are left out: their weight is one small matrix per group, and taking
    them in changed nothing measurable (docs/experiments/muon.md)."""
    out: list[nn.Module] = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module.groups == 1:
            fan_in, fan_out = module.in_channels, module.out_channels
        elif isinstance(module, nn.Linear):
            fan_in, fan_out = module.in_features, module.out_features
        else:
            continue
        if min(fan_in, fan_out) >= _MIN_CHANNELS:
            out.append(module)
    return out


def _memory_order(tensor: torch.Tensor) -> tuple[int, ...]:
    """The tensor's dimensions after the first, outermost in memory first (channels_last: kh, kw, in)."""
    return tuple(sorted(range(1, tensor.dim()), key=lambda d: -tensor.stride(d)))


def _as_matrix(tensor: torch.Tensor, order: tuple[int, ...]) -> torch.Tensor:
    """(out, ...) -> (out, rest) with the columns in ``order``: a view when that is the memory's order."""
    return tensor.permute(0, *order).reshape(tensor.shape[0], -1)


class MatrixViews:
    """2-D parameters that share memory with the weights of ``layers``: Muon updates them in place, which
    updates the layers. ``hand_over_grads`` after each backward pass moves every weight's gradient onto its
    view (and clears the weight's, so gradients do not pile up across steps)."""

    def __init__(self, layers: Sequence[nn.Module]) -> None:
        self.weights = [layer.weight for layer in layers]
        self.orders = [_memory_order(w) for w in self.weights]
        self.matrices: list[nn.Parameter] = []
        for weight, order in zip(self.weights, self.orders, strict=True):
            matrix = _as_matrix(weight.detach(), order)
            if matrix.data_ptr() != weight.data_ptr() or matrix.numel() != weight.numel():
                raise ValueError(
                    f"a weight of shape {tuple(weight.shape)} is not dense in memory: Muon cannot update it in place"
                )
            self.matrices.append(nn.Parameter(matrix))

    def hand_over_grads(self) -> None:
        for weight, order, matrix in zip(self.weights, self.orders, self.matrices, strict=True):
            # the gradient's own memory format may differ from the weight's: its columns in the view's order
            matrix.grad = None if weight.grad is None else _as_matrix(weight.grad, order)
            weight.grad = None


def muon_step_lr(lr: float, adjust_lr_fn: str | None, shape: Sequence[int]) -> float:
    """The learning rate a Muon step applies to a (rows, columns) matrix, by torch.optim.Muon's documented
    ``adjust_lr_fn`` rules. Written out here because torch keeps its own in a private module
    (torch.optim._muon), which a torch release may move or rename without notice."""
    rows, cols = shape[0], shape[1]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return lr * math.sqrt(max(1.0, rows / cols))
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, cols))
    raise ValueError(f"Muon adjust_lr_fn {adjust_lr_fn!r}: expected 'original' or 'match_rms_adamw'")


def orthogonalise_fp32(
    update: torch.Tensor, coefficients: tuple[float, float, float], steps: int, eps: float
) -> torch.Tensor:
    """torch's Muon orthogonalisation (the same quintic Newton-Schulz iteration, coefficients and steps) in
    float32, where torch's always casts to bf16."""
    a, b, c = coefficients
    wide = update.size(0) <= update.size(1)
    x = update.float() if wide else update.float().T
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x if wide else x.T


class Fp32Muon(torch.optim.Muon):
    """torch's Muon, orthogonalising in float32: torch casts every update to bf16 for the iteration, which a
    machine without bf16 matrix hardware emulates at about ten times fp32's cost (docs/experiments/muon.md).
    The same state, momentum,
    Nesterov and learning-rate rule as torch's step (torch 2.14's _single_tensor_muon), only the precision
    of the iteration differs."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum = float(group["lr"]), group["momentum"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                # torch's own state key, so a checkpoint moves between the two classes
                buf = self.state[param].setdefault("momentum_buffer", torch.zeros_like(grad))
                buf.lerp_(grad, 1 - momentum)
                update = grad.lerp(buf, momentum) if group["nesterov"] else buf
                update = orthogonalise_fp32(update, group["ns_coefficients"], group["ns_steps"], group["eps"])
                param.mul_(1 - lr * group["weight_decay"])
                param.add_(update, alpha=-muon_step_lr(lr, group["adjust_lr_fn"], param.shape))
        return loss


def build_optimizers(
    model: nn.Module,
    views: MatrixViews | None,
    lr: float,
    weight_decay: float,
    muon_lr: float,
    fused: bool,
    bf16_matmul: bool = True,
) -> list[tuple[torch.optim.Optimizer, float]]:
    """(optimizer, peak learning rate) pairs: Muon over the ``views`` (when given), AdamW over every other
    parameter of the model. ``bf16_matmul``: the device multiplies bf16 matrices in hardware (torch's Muon),
    else Fp32Muon."""
    taken = {id(w) for w in views.weights} if views else set()
    rest = [p for p in model.parameters() if id(p) not in taken]
    # the fused kernel updates every tensor in one pass, the same arithmetic: docs/experiments/fused-adamw.md
    out: list[tuple[torch.optim.Optimizer, float]] = [
        (torch.optim.AdamW(rest, lr=lr, weight_decay=weight_decay, fused=fused), lr)
    ]
    if views and views.matrices:
        # "original": the update scaled by sqrt(max(1, fan_out / fan_in)), the reference implementation's rule;
        # no weight decay on the matrices (the measured setting)
        muon_cls = torch.optim.Muon if bf16_matmul else Fp32Muon
        muon = muon_cls(views.matrices, lr=muon_lr, weight_decay=0.0, adjust_lr_fn="original")
        out.append((muon, muon_lr))
    return out
