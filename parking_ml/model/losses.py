"""Segmentation losses over N x C x H x W logits and N x H x W targets (255 = ignore).

`build_loss("ce+dice", class_weights)` sums named terms; each term ignores the 255 pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

IGNORE_INDEX = 255
LOSS_TERMS = ("ce", "dice", "focal")

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    if not bool((target != IGNORE_INDEX).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, target, weight=weight, ignore_index=IGNORE_INDEX)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - mean soft Dice over the classes present in the batch's target (ignored pixels excluded)."""
    classes = logits.shape[1]
    valid = target != IGNORE_INDEX
    probs = logits.float().softmax(dim=1) * valid.unsqueeze(1)
    safe = torch.where(valid, target, torch.zeros_like(target))
    onehot = F.one_hot(safe, classes).permute(0, 3, 1, 2).to(probs.dtype) * valid.unsqueeze(1)
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + eps) / (denom + eps)
    present = onehot.sum(dims) > 0
    if not bool(present.any()):
        return logits.sum() * 0.0
    return 1.0 - dice[present].mean()


def focal_loss(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None, gamma: float = 2.0
) -> torch.Tensor:
    valid = target != IGNORE_INDEX
    if not bool(valid.any()):
        return logits.sum() * 0.0
    ce = F.cross_entropy(logits.float(), target, weight=weight, ignore_index=IGNORE_INDEX, reduction="none")
    logp = F.log_softmax(logits.float(), dim=1)
    safe = torch.where(valid, target, torch.zeros_like(target))
    pt = logp.gather(1, safe.unsqueeze(1)).squeeze(1).exp()
    loss = ((1 - pt) ** gamma) * ce
    return loss[valid].mean()


def build_loss(name: str = "ce+dice", class_weights: Sequence[float] | None = None) -> LossFn:
    """Loss from a '+'-joined name of terms (ce, dice, focal); class_weights apply to ce and focal."""
    terms = [t.strip().lower() for t in name.split("+") if t.strip()]
    unknown = [t for t in terms if t not in LOSS_TERMS]
    if not terms or unknown:
        raise ValueError(f"unknown loss {name!r}; combine {', '.join(LOSS_TERMS)} with '+', e.g. 'ce+dice'")
    weights = None if class_weights is None else torch.tensor(list(class_weights), dtype=torch.float32)

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        w = None if weights is None else weights.to(logits.device)
        total = logits.new_zeros((), dtype=torch.float32)
        for term in terms:
            if term == "ce":
                total = total + cross_entropy(logits.float(), target, w)
            elif term == "dice":
                total = total + dice_loss(logits, target)
            else:
                total = total + focal_loss(logits, target, w)
        return total

    return loss
