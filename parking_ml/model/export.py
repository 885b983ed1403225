"""ONNX export with dynamic batch/height/width, checked against torch before anyone serves it.

Besides the logits (output 0, `logits`), networks with an encoder export a second output `embedding`: the
encoder's deepest feature map averaged over the image and projected by a fixed random matrix to
EMBEDDING_DIMS numbers, the model's own short description of a tile for drift monitoring (a new kind of scene
shows there even when its colours look normal). Readers that ask for `logits` by name are unaffected.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-3
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
EMBEDDING_NAME = "embedding"
EMBEDDING_DIMS = 16
# the projection is part of the contract between a version's reference rows and its live rows: one fixed seed
_PROJECTION_SEED = 20261206


class WithEmbedding(nn.Module):
    """A segmentation network with an encoder -> (logits, N x EMBEDDING_DIMS embedding)."""

    def __init__(self, net: nn.Module, dims: int = EMBEDDING_DIMS) -> None:
        super().__init__()
        self.net = net
        self._deepest: torch.Tensor | None = None
        net.encoder.register_forward_hook(self._keep_deepest)
        channels = int(net.encoder.out_channels[-1])
        gen = torch.Generator().manual_seed(_PROJECTION_SEED)
        self.register_buffer("projection", torch.randn(channels, dims, generator=gen) / math.sqrt(channels))

    def _keep_deepest(self, module: nn.Module, inputs: object, output: Sequence[torch.Tensor]) -> None:
        self._deepest = output[-1]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.net(x)
        assert self._deepest is not None
        return logits, self._deepest.mean(dim=(2, 3)) @ self.projection


def with_embedding(model: nn.Module) -> nn.Module:
    """The model wrapped to also output the embedding, or the model itself when it has no encoder."""
    encoder = getattr(model, "encoder", None)
    if encoder is None or not hasattr(encoder, "out_channels"):
        return model
    return WithEmbedding(model)


class ExportParityError(RuntimeError):
    """The exported ONNX graph disagrees with the torch model beyond the tolerance."""


def export_onnx(
    model: nn.Module,
    path: str | Path,
    tile_size: int = 256,
    opset: int = 17,
    tolerance: float = PARITY_TOLERANCE,
    check_shapes: Sequence[tuple[int, int, int, int]] | None = None,
    embedding: bool = True,
) -> float:
    """Export model to ONNX at path (NCHW float32 in, logits out, dynamic N/H/W) and return the parity error.

    The file is written under a temporary name and renamed only after onnxruntime reproduces the torch
    output within tolerance on every shape in check_shapes (default: 1x3xTxT and 2x3x(T+64)x(T+128)).
    embedding=False leaves out the embedding output (the logits-only graph of older packages).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = copy.deepcopy(model).to("cpu").float().eval()
    model = model.to(memory_format=torch.contiguous_format)
    if embedding:
        model = with_embedding(model).eval()
    outputs = [OUTPUT_NAME, EMBEDDING_NAME] if isinstance(model, WithEmbedding) else [OUTPUT_NAME]
    dummy = torch.zeros(1, 3, tile_size, tile_size)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter warns it is deprecated; it is fast
            torch.onnx.export(
                model,
                (dummy,),
                str(tmp),
                input_names=[INPUT_NAME],
                output_names=outputs,
                dynamic_axes={
                    INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                    OUTPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                    **({EMBEDDING_NAME: {0: "batch"}} if len(outputs) > 1 else {}),
                },
                opset_version=opset,
                dynamo=False,
            )
        shapes = list(check_shapes or [(1, 3, tile_size, tile_size), (2, 3, tile_size + 64, tile_size + 128)])
        diff = parity(model, tmp, shapes)
        if diff > tolerance:
            raise ExportParityError(
                f"ONNX export of {type(model).__name__} differs from torch by {diff:.2e} (> {tolerance:.0e}) "
                f"on shapes {shapes}; the file was not written to {path}"
            )
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    logger.info("exported onnx", extra={"path": str(path), "parity_max_abs_diff": diff, "opset": opset})
    return diff


def parity(model: nn.Module, onnx_path: str | Path, shapes: Sequence[tuple[int, int, int, int]]) -> float:
    """Max abs difference between torch and onnxruntime outputs (logits, and the embedding when exported)
    over random inputs of the given shapes."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(0)
    worst = 0.0
    for shape in shapes:
        x = torch.randn(*shape, generator=gen)
        with torch.no_grad():
            out = model(x)
        expected_all = [t.numpy() for t in out] if isinstance(out, tuple | list) else [out.numpy()]
        got_all = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        if len(got_all) != len(expected_all):
            raise ExportParityError(f"ONNX has {len(got_all)} outputs, torch {len(expected_all)}")
        for got, expected in zip(got_all, expected_all, strict=True):
            if got.shape != expected.shape:
                raise ExportParityError(f"ONNX output shape {got.shape} != torch {expected.shape} for input {shape}")
            worst = max(worst, float(np.max(np.abs(got - expected))))
    return worst
