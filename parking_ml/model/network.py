"""Network factory: one function that builds the segmentation model from a few named choices.

The output is always raw logits N x classes x H x W; H and W must be multiples of 32 (the encoder's stride),
which the inference code guarantees by padding.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

ARCHITECTURES = ("unet", "fpn", "deeplabv3plus")
STRIDE = 32


class WeightsError(ValueError):
    """Encoder weights could not be loaded; the message names the file and what did not match."""


def build_model(
    arch: str = "unet",
    encoder: str = "resnet18",
    encoder_weights: str | None = None,
    classes: int = 3,
    decoder_channels: Sequence[int] | int | None = None,
    encoder_depth: int = 5,
) -> nn.Module:
    """Build a segmentation network (segmentation-models-pytorch).

    encoder_weights: None (random init, the default: no network access needed), "imagenet" (downloads from
    the model hub, needs internet) or a path to a local state-dict file loaded into the encoder.
    decoder_channels: Unet: one width per encoder stage (e.g. (128, 64, 32, 16, 8) for a cheap decoder);
    FPN: the segmentation-branch width; DeepLabV3+: the ASPP width.
    encoder_depth: encoder stages used (3-5; the output stride is 2**depth). 4 drops the deepest, widest
    stage: a 12 x 25 px stall needs no 32x context, and on 2 CPU cores the decoder conv over that stage's
    1,376 channels alone took 30 ms of a MobileNetV2 U-Net's 234-ms training step (its backward pass).
    """
    import segmentation_models_pytorch as smp

    arch = arch.lower()
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    local_file: Path | None = None
    hub_weights: str | None = None
    if encoder_weights:
        if encoder_weights == "imagenet":
            hub_weights = "imagenet"
        else:
            local_file = Path(encoder_weights).expanduser()
            if not local_file.is_file():
                raise WeightsError(
                    f"encoder weights file {local_file} does not exist; give a local state-dict file, "
                    "'imagenet' (needs internet) or leave PARKING_ENCODER_WEIGHTS unset for random init"
                )
    if encoder_depth not in (3, 4, 5):
        raise ValueError(f"encoder_depth must be 3, 4 or 5, got {encoder_depth}")
    kwargs: dict = {
        "encoder_name": encoder,
        "encoder_weights": hub_weights,
        "classes": classes,
        "encoder_depth": encoder_depth,
    }
    if arch == "unet":
        if decoder_channels is not None:
            channels = tuple(int(c) for c in decoder_channels)  # type: ignore[union-attr]
            if len(channels) != encoder_depth:
                raise ValueError(
                    f"unet decoder_channels needs one width per encoder stage ({encoder_depth}), got {channels}"
                )
            kwargs["decoder_channels"] = channels
        model = smp.Unet(**kwargs)
    elif arch == "fpn":
        if decoder_channels is not None:
            kwargs["decoder_segmentation_channels"] = _single_width(decoder_channels)
        model = smp.FPN(**kwargs)
    else:
        if decoder_channels is not None:
            kwargs["decoder_channels"] = _single_width(decoder_channels)
        model = smp.DeepLabV3Plus(**kwargs)
    if local_file is not None:
        load_encoder_weights(model, local_file)
    return model


def _single_width(value: Sequence[int] | int) -> int:
    if isinstance(value, int):
        return value
    return int(next(iter(value)))


def load_encoder_weights(model: nn.Module, path: Path) -> None:
    """Load a local state dict into model.encoder; refuse files whose keys do not fit the encoder."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file gets the same actionable message
        raise WeightsError(f"cannot read encoder weights {path}: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path} does not hold a state dict (got {type(state).__name__})")
    encoder = model.encoder  # type: ignore[attr-defined]
    # classifier heads (fc.*, classifier.*) of ImageNet checkpoints are not part of the encoder
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "classifier.", "head."))}
    state = {k.removeprefix("encoder."): v for k, v in state.items()}
    own = encoder.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad_shape = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or bad_shape:
        raise WeightsError(
            f"encoder weights {path} do not match encoder {type(encoder).__name__}: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}), "
            f"{len(bad_shape)} with other shapes (e.g. {bad_shape[:3]}); use weights saved for this encoder"
        )
    encoder.load_state_dict(state, strict=True)
    logger.info("loaded encoder weights", extra={"path": str(path), "tensors": len(state)})


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
