"""ONNX export with dynamic batch/height/width, checked against torch before anyone serves it."""

from __future__ import annotations

import copy
import logging
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


class ExportParityError(RuntimeError):
    """The exported ONNX graph disagrees with the torch model beyond the tolerance."""


def export_onnx(
    model: nn.Module,
    path: str | Path,
    tile_size: int = 256,
    opset: int = 17,
    tolerance: float = PARITY_TOLERANCE,
    check_shapes: Sequence[tuple[int, int, int, int]] | None = None,
) -> float:
    """Export model to ONNX at path (NCHW float32 in, logits out, dynamic N/H/W) and return the parity error.

    The file is written under a temporary name and renamed only after onnxruntime reproduces the torch
    output within tolerance on every shape in check_shapes (default: 1x3xTxT and 2x3x(T+64)x(T+128)).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = copy.deepcopy(model).to("cpu").float().eval()
    model = model.to(memory_format=torch.contiguous_format)
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
                output_names=[OUTPUT_NAME],
                dynamic_axes={
                    INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                    OUTPUT_NAME: {0: "batch", 2: "height", 3: "width"},
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
    """Max abs difference between torch and onnxruntime logits over random inputs of the given shapes."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(0)
    worst = 0.0
    for shape in shapes:
        x = torch.randn(*shape, generator=gen)
        with torch.no_grad():
            expected = model(x).numpy()
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        if got.shape != expected.shape:
            raise ExportParityError(f"ONNX output shape {got.shape} != torch {expected.shape} for input {shape}")
        worst = max(worst, float(np.max(np.abs(got - expected))))
    return worst
