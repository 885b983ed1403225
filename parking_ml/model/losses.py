"""Segmentation losses over N x C x H x W logits.

Targets are either class maps (N x H x W int, 255 = ignore) or soft targets (N x C x H x W float: each
pixel's class shares, all zero where ignored; what TileDataset gives when it resamples to the model's gsd).
A soft target's sum is the pixel's weight in ce and focal (more than 1 on emphasised separation pixels);
dice sees the shares only.
Class maps are turned into one-hot soft targets, so both go through one implementation, and a one-hot
target gives exactly the usual weighted cross-entropy.

`build_loss("ce+dice", class_weights)` sums named terms; each term ignores the zero-weight pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

IGNORE_INDEX = 255
LOSS_TERMS = ("ce", "dice", "focal", "lovasz")

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def as_soft(target: torch.Tensor, classes: int) -> torch.Tensor:
    """N x H x W class map (255 ignore) -> N x C x H x W float one-hot; soft targets pass through."""
    if target.dim() == 4:
        return target.float()
    valid = target != IGNORE_INDEX
    safe = torch.where(valid, target, torch.zeros_like(target))
    onehot = F.one_hot(safe.long(), classes).permute(0, 3, 1, 2).float()
    return onehot * valid.unsqueeze(1)


def _class_weights(weight: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    if weight is None:
        return torch.ones(like.shape[1], device=like.device, dtype=like.dtype).view(1, -1, 1, 1)
    return weight.to(like.device, like.dtype).view(1, -1, 1, 1)


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted cross-entropy against (soft) targets, normalised by the total target weight."""
    soft = as_soft(target, logits.shape[1])
    wt = soft * _class_weights(weight, soft)
    norm = wt.sum()
    if float(norm) <= 0:
        return logits.sum() * 0.0
    return -(wt * F.log_softmax(logits.float(), dim=1)).sum() / norm


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - mean soft Dice over the classes present in the batch's target (ignored pixels excluded)."""
    soft = as_soft(target, logits.shape[1])
    mass = soft.sum(dim=1, keepdim=True)
    # pixel weights above 1 (separation pixels) are for ce/focal; dice compares class shares
    soft = soft / mass.clamp(min=1.0)
    valid = mass.clamp(max=1.0)
    probs = logits.float().softmax(dim=1) * valid
    dims = (0, 2, 3)
    inter = (probs * soft).sum(dims)
    denom = probs.sum(dims) + soft.sum(dims)
    present = soft.sum(dims) > 0
    if not bool(present.any()):
        return logits.sum() * 0.0
    dice = (2 * inter + eps) / (denom + eps)
    return 1.0 - dice[present].mean()


def focal_loss(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None, gamma: float = 2.0
) -> torch.Tensor:
    """Focal loss: each class term of the cross-entropy scaled by (1 - p_class)^gamma."""
    soft = as_soft(target, logits.shape[1])
    wt = soft * _class_weights(weight, soft)
    valid = soft.sum(dim=1)
    if not bool((valid > 0).any()):
        return logits.sum() * 0.0
    logp = F.log_softmax(logits.float(), dim=1)
    per_pixel = -(wt * (1 - logp.exp()) ** gamma * logp).sum(dim=1)
    # mean over the valid pixels (weighted by how much of each pixel is labelled), as the usual focal loss
    return per_pixel.sum() / valid.sum()


def lovasz_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Lovasz-softmax (segmentation-models-pytorch): a surrogate of the mean IoU itself. It needs class maps,
    so a soft target becomes its majority class, and pixels mostly ignored (weight < 0.5) are ignored."""
    from segmentation_models_pytorch.losses import LovaszLoss

    soft = as_soft(target, logits.shape[1])
    hard = soft.argmax(dim=1)
    hard[soft.sum(dim=1) < 0.5] = IGNORE_INDEX
    if not bool((hard != IGNORE_INDEX).any()):
        return logits.sum() * 0.0
    return LovaszLoss("multiclass", ignore_index=IGNORE_INDEX)(logits.float(), hard)


def build_loss(name: str = "ce+dice", class_weights: Sequence[float] | None = None) -> LossFn:
    """Loss from a '+'-joined name of terms (ce, dice, focal); class_weights apply to ce and focal."""
    terms = [t.strip().lower() for t in name.split("+") if t.strip()]
    unknown = [t for t in terms if t not in LOSS_TERMS]
    if not terms or unknown:
        raise ValueError(f"unknown loss {name!r}; combine {', '.join(LOSS_TERMS)} with '+', e.g. 'ce+dice'")
    weights = None if class_weights is None else torch.tensor(list(class_weights), dtype=torch.float32)

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        soft = as_soft(target, logits.shape[1])
        total = logits.new_zeros((), dtype=torch.float32)
        for term in terms:
            if term == "ce":
                total = total + cross_entropy(logits, soft, weights)
            elif term == "dice":
                total = total + dice_loss(logits, soft)
            elif term == "lovasz":
                total = total + lovasz_loss(logits, soft)
            else:
                total = total + focal_loss(logits, soft, weights)
        return total

    return loss
