"""Fake model packages: a tiny ONNX network that reads paint colours, and a package directory around it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from parking_ml.inference import PreprocessConfig


def write_color_net(path, seed: int = 0) -> None:
    """A tiny fully-convolutional net: a 3x3 blur then a 1x1 conv calling green 'free' and red 'occupied'.

    Small receptive field (3 px) and dynamic N/H/W, like the real exported networks."""
    rng = np.random.default_rng(seed)
    blur = np.full((3, 1, 3, 3), 1 / 9, dtype=np.float32) + rng.normal(0, 0.01, (3, 1, 3, 3)).astype(np.float32)
    # logits: background 0, free = g - r - 1, occupied = r - g - 1 (on normalised values)
    w = np.array([[0, 0, 0], [-1, 1, 0], [1, -1, 0]], dtype=np.float32).reshape(3, 3, 1, 1)
    b = np.array([0, -1, -1], dtype=np.float32)
    nodes = [
        helper.make_node("Conv", ["input", "blur_w"], ["h"], pads=[1, 1, 1, 1], group=3),
        helper.make_node("Conv", ["h", "cls_w", "cls_b"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        initializer=[
            numpy_helper.from_array(blur, "blur_w"),
            numpy_helper.from_array(w, "cls_w"),
            numpy_helper.from_array(b, "cls_b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def make_package(path: Path, seed: int = 0) -> Path:
    """A servable package directory (model.onnx + preprocess.json) of the colour net."""
    path.mkdir(parents=True, exist_ok=True)
    write_color_net(path / "model.onnx", seed=seed)
    (path / "preprocess.json").write_text(PreprocessConfig(min_area_px=20).to_json())
    return path
