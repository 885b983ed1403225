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
    """Weights could not be loaded; the message names the file and what did not match."""


class WeightsMismatchError(WeightsError):
    """A readable weights file whose tensors do not fit the network (other names or shapes)."""


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
    stage: a 12 x 25 px stall needs no 32x context (docs/experiments/encoder-depth.md).
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


def _read_state_dict(path: Path, what: str) -> dict:
    """The state dict in ``path`` (also one wrapped as {"state_dict": ...}); WeightsError naming the file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"{what} file {path} does not exist; give a state-dict file saved with torch.save")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file gets the same actionable message
        raise WeightsError(f"cannot read {what} {path}: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path} does not hold a state dict (got {type(state).__name__})")
    return state


def _load_exactly(module: nn.Module, state: dict, path: Path, what: str, fix: str) -> None:
    """module.load_state_dict(state), refusing a state whose keys or shapes differ, with a message that
    counts and names the differences."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad_shape = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or bad_shape:
        raise WeightsMismatchError(
            f"{what} {path} do not match {what.split()[0]} {type(module).__name__}: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}), "
            f"{len(bad_shape)} with other shapes (e.g. {bad_shape[:3]}); {fix}"
        )
    module.load_state_dict(state, strict=True)
    logger.info(f"loaded {what}", extra={"path": str(path), "tensors": len(state)})


def load_encoder_weights(model: nn.Module, path: Path) -> None:
    """Load a local state dict into model.encoder; refuse files whose keys do not fit the encoder."""
    state = _read_state_dict(path, "encoder weights")
    # classifier heads (fc.*, classifier.*) of ImageNet checkpoints are not part of the encoder
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "classifier.", "head."))}
    state = {k.removeprefix("encoder."): v for k, v in state.items()}
    encoder = model.encoder  # type: ignore[attr-defined]
    _load_exactly(encoder, state, path, "encoder weights", "use weights saved for this encoder")


def load_network_weights(model: nn.Module, path: Path) -> None:
    """Load a whole network's state dict (encoder, decoder and head, as torch.save(model.state_dict())
    writes it) into ``model``: training then starts from that network instead of a random one. Refuses a
    file of another architecture, encoder or decoder width."""
    state = _read_state_dict(path, "network weights")
    _load_exactly(
        model,
        state,
        path,
        "network weights",
        "use weights of a network built with the same profile (arch, encoder, encoder depth, decoder widths)",
    )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
