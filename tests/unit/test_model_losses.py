"""Losses: ignore_index handling, perfect-prediction limits, combinations, class weights."""

from __future__ import annotations

import pytest
import torch

from parking_ml.model.losses import build_loss, dice_loss, focal_loss


def _perfect(target: torch.Tensor, scale: float = 20.0) -> torch.Tensor:
    safe = torch.where(target == 255, torch.zeros_like(target), target)
    return torch.nn.functional.one_hot(safe, 3).permute(0, 3, 1, 2).float() * scale


def test_perfect_logits_give_near_zero_loss():
    target = torch.randint(0, 3, (2, 8, 8))
    logits = _perfect(target)
    for name in ("ce", "dice", "focal", "ce+dice", "focal+dice", "lovasz", "ce+lovasz"):
        assert float(build_loss(name)(logits, target)) < 1e-3, name


def test_ignored_pixels_do_not_count():
    target = torch.randint(0, 3, (1, 8, 8))
    logits = _perfect(target)
    noisy_target = target.clone()
    noisy_target[:, :4] = 255
    wrong = logits.clone()
    wrong[:, :, :4] = -logits[:, :, :4]  # wrong only where ignored
    for name in ("ce", "dice", "focal", "lovasz"):
        assert float(build_loss(name)(wrong, noisy_target)) < 1e-3, name
    all_ignored = torch.full((1, 4, 4), 255)
    assert float(build_loss("ce+dice+focal+lovasz")(torch.randn(1, 3, 4, 4), all_ignored)) == 0.0


def test_lovasz_grows_with_the_iou_lost_and_takes_soft_targets():
    target = torch.zeros((1, 8, 8), dtype=torch.long)
    target[:, 2:6, 2:6] = 1
    good = _perfect(target)
    half = good.clone()
    half[:, :, 2:4, 2:6] = _perfect(torch.zeros((1, 2, 4), dtype=torch.long))  # half the free square missed
    most = good.clone()
    most[:, :, 2:6, 2:6] = _perfect(torch.zeros((1, 4, 4), dtype=torch.long))  # all of it missed
    loss = build_loss("lovasz")
    assert float(loss(good, target)) < float(loss(half, target)) < float(loss(most, target))
    # a soft target counts as its majority class: the same loss as the one-hot map it rounds to
    soft = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 0.8 + 0.2 / 3
    assert float(loss(half, soft)) == pytest.approx(float(loss(half, target)))


def test_sum_equals_parts_and_weights_matter():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    target = torch.randint(0, 3, (2, 8, 8))
    total = build_loss("ce+dice")(logits, target)
    parts = build_loss("ce")(logits, target) + dice_loss(logits, target)
    assert float(total.detach()) == pytest.approx(float(parts.detach()), rel=1e-5)
    total.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    plain = float(focal_loss(logits, target).detach())
    weighted = float(build_loss("focal", class_weights=(1.0, 5.0, 1.0))(logits, target))
    assert weighted != pytest.approx(plain)


def test_soft_targets_match_class_maps_and_score_shares():
    from parking_ml.model.losses import as_soft

    torch.manual_seed(1)
    logits = torch.randn(2, 3, 6, 6)
    target = torch.randint(0, 3, (2, 6, 6))
    target[0, :2] = 255
    soft = as_soft(target, 3)
    assert float(soft[0, :, :2].sum()) == 0.0
    for name in ("ce", "dice", "focal", "ce+dice"):
        weights = (1.0, 2.0, 1.0)
        assert float(build_loss(name, weights)(logits, soft)) == pytest.approx(
            float(build_loss(name, weights)(logits, target)), rel=1e-5
        ), name
    # cross-entropy with hard labels is torch's own (weights, ignore_index and all)
    expected = torch.nn.functional.cross_entropy(logits, target, torch.tensor([1.0, 2.0, 1.0]), ignore_index=255)
    assert float(build_loss("ce", (1.0, 2.0, 1.0))(logits, target)) == pytest.approx(float(expected), rel=1e-5)
    # a pixel half free, half background is best predicted as exactly that
    half = torch.zeros(1, 3, 1, 1)
    half[0, 0], half[0, 1] = 0.5, 0.5
    even = torch.tensor([[[[0.0]], [[0.0]], [[-30.0]]]])
    sure = torch.tensor([[[[0.0]], [[6.0]], [[-30.0]]]])
    assert float(build_loss("ce")(even, half)) < float(build_loss("ce")(sure, half))


def test_unknown_term_is_refused():
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("ce+hinge")


def test_pixel_weight_in_the_soft_target():
    torch.manual_seed(2)
    logits = torch.randn(1, 3, 4, 4)
    target = torch.randint(0, 3, (1, 4, 4))
    soft = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float()
    heavy = soft.clone()
    heavy[:, :, 0, 0] *= 5.0
    # ce: the heavy pixel counts as five pixels
    logp = torch.log_softmax(logits, 1)
    per_pixel = -(soft * logp).sum(1)[0]
    expected = (per_pixel.sum() + 4 * per_pixel[0, 0]) / (16 + 4)
    assert float(build_loss("ce")(logits, heavy)) == pytest.approx(float(expected), rel=1e-5)
    assert float(focal_loss(logits, heavy)) != pytest.approx(float(focal_loss(logits, soft)))
    # dice compares class shares: a pixel's weight does not change it
    assert float(dice_loss(logits, heavy)) == pytest.approx(float(dice_loss(logits, soft)), rel=1e-6)
