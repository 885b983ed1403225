"""MLflow "model from code" entry: a pyfunc that runs the packaged model.onnx with onnxruntime.

This file is handed to mlflow.pyfunc.log_model(python_model=<this path>) and executed by MLflow when the
model is loaded (`mlflow models serve`, mlflow.pyfunc.load_model); the package never imports it.
Input: a float32 array N x 3 x H x W (already normalised as preprocess.json says), or a DataFrame whose
column "image" holds one 3 x H x W array (or nested list) per row. Output: {"logits": N x C x H x W,
"mask": N x H x W class ids}. H and W are padded to a multiple of 32 inside and cropped back.
"""

from __future__ import annotations

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel

STRIDE = 32


class OnnxSegmentationPyfunc(PythonModel):
    def load_context(self, context):
        import onnxruntime as ort

        self.session = ort.InferenceSession(context.artifacts["model_onnx"], providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def predict(self, context, model_input, params=None):
        batch = _to_batch(model_input)
        h, w = batch.shape[2:]
        ph, pw = (-h) % STRIDE, (-w) % STRIDE
        if ph or pw:
            batch = np.pad(batch, ((0, 0), (0, 0), (0, ph), (0, pw)), mode="reflect" if min(h, w) > 1 else "edge")
        logits = self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]
        logits = logits[:, :, :h, :w]
        return {"logits": logits, "mask": logits.argmax(axis=1).astype(np.int64)}


def _to_batch(model_input) -> np.ndarray:
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        if "image" not in model_input.columns:
            raise ValueError("DataFrame input needs a column 'image' holding 3 x H x W float arrays")
        arrays = [np.asarray(v, dtype=np.float32) for v in model_input["image"]]
        return np.stack(arrays)
    arr = np.asarray(model_input, dtype=np.float32)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[1] != 3:
        raise ValueError(f"expected float32 N x 3 x H x W, got shape {arr.shape}")
    return arr


mlflow.models.set_model(OnnxSegmentationPyfunc())
