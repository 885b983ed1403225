"""The windowed segmenter: resampling to the model's gsd, normalising, padding, sliding windows with blended
overlaps, test-time augmentation and softmax around any network that maps images to logits.

Only numpy, onnxruntime and OpenCV at import time: the serving image carries no torch.
"""

from __future__ import annotations

import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from parking_ml.inference.contract import TTA_VIEWS, PreprocessConfig

# the second ONNX output of newer exports (parking_ml.model.export.EMBEDDING_NAME): the drift embedding
EMBEDDING_OUTPUT = "embedding"

ProgressFn = Callable[[int, int], None]


def rescale(image: np.ndarray, scale: float) -> np.ndarray:
    """An H x W (x C) array scaled by ``scale``: area averaging down, bilinear up. Training tiles and served
    images both go through this, so the network meets one resampling in both."""
    import cv2

    h, w = image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def normalise(rgb: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """uint8 HxWx3 -> float32 3xHxW, (rgb / 255 - mean) / std as in training."""
    import cv2

    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB array, got shape {rgb.shape}")
    std = np.asarray(config.std, dtype=np.float64)
    scale = (1.0 / (255.0 * std)).astype(np.float32)
    shift = (-np.asarray(config.mean, dtype=np.float64) / std).astype(np.float32)
    out = np.empty((3, *rgb.shape[:2]), dtype=np.float32)
    # why: one fused multiply-add per channel into the CHW buffer, as this runs on every request
    # (docs/experiments/serving-latency.md); OpenCV's split reads the interleaved pixels faster than strided numpy
    for c, plane in enumerate(cv2.split(np.ascontiguousarray(rgb))):
        np.multiply(plane, scale[c], out=out[c], casting="unsafe")
        out[c] += shift[c]
    return out


def softmax(logits: np.ndarray, axis: int = 1) -> np.ndarray:
    z = logits - logits.max(axis=axis, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=axis, keepdims=True)
    return z


def _window_starts(length: int, window: int, stride: int) -> list[int]:
    if length <= window:
        return [0]
    starts = list(range(0, length - window, stride))
    starts.append(length - window)
    return starts


def _ramp(window: int, overlap: int) -> np.ndarray:
    # weight rises linearly over the overlap, never reaching zero, so every pixel has a defined blend
    w = np.ones(window, dtype=np.float32)
    if overlap > 0:
        ramp = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
        w[:overlap] = ramp
        w[-overlap:] = np.minimum(w[-overlap:], ramp[::-1])
    return w


def tta_logits(run: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, mode: str) -> np.ndarray:
    """The mean of ``run``'s logits over the views of ``mode`` (see TTA_VIEWS), each turned back to the
    batch's orientation. N x 3 x H x W in, N x C x H x W out; a quarter turn swaps H and W, which a fully
    convolutional network takes as it comes (both are padded to its stride)."""
    views = TTA_VIEWS[mode]
    if len(views) == 1:
        return run(batch)
    acc: np.ndarray | None = None
    for turns, mirror in views:
        x = np.rot90(batch, turns, axes=(2, 3))
        if mirror:
            x = x[..., ::-1]
        out = run(np.ascontiguousarray(x))
        if mirror:
            out = out[..., ::-1]
        out = np.rot90(out, -turns, axes=(2, 3))
        # one accumulator for all views (this runs on every request): added in place, not reallocated
        if acc is None:
            acc = out.astype(np.float32)
        else:
            acc += out
    assert acc is not None
    acc /= len(views)
    return acc


class Segmenter(ABC):
    """A segmentation network (N x 3 x H x W -> N x C x H x W logits) behind `run_logits`, plus everything
    around it: resampling to the model's gsd, padding, sliding windows, softmax.

    Subclasses supply `run_logits`: onnxruntime here (what the API serves), torch in training, so that
    cross-validation scores models through exactly this code.
    """

    config: PreprocessConfig
    batch_size: int = 2

    @abstractmethod
    def run_logits(self, batch: np.ndarray) -> np.ndarray:
        """N x 3 x H x W normalised float32 -> N x C x H x W logits."""

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """run_logits under the config's test-time augmentation."""
        return tta_logits(self.run_logits, batch, self.config.tta)

    def start_embedding(self) -> None:  # noqa: B027 (a hook: most segmenters have no embedding to collect)
        """Begin collecting the embedding of the image about to be predicted (models that export one)."""

    def take_embedding(self) -> np.ndarray | None:
        """The mean embedding over what ran since start_embedding, or None."""
        return None

    def warm_up(self) -> None:
        size = self.config.infer_window
        self.predict_probs(np.zeros((size, size, 3), dtype=np.uint8))

    def predict_probs(
        self,
        rgb: np.ndarray,
        progress: ProgressFn | None = None,
        timings: dict[str, float] | None = None,
        image_gsd: float | None = None,
    ) -> np.ndarray:
        """Softmax probabilities (float32, C x H x W) for a uint8 RGB image of any size and gsd."""
        import cv2

        t0 = time.perf_counter()
        h, w = rgb.shape[:2]
        if h == 0 or w == 0:
            raise ValueError("image has zero width or height")
        scale = self.config.input_scale(image_gsd)
        work = rescale(rgb, scale) if scale != 1.0 else rgb
        probs, t_inf = self._probs_on_grid(work, progress)
        if scale != 1.0:
            # bilinear on probabilities keeps each pixel's classes summing to 1 and the boundaries sub-pixel
            probs = np.stack([cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR) for p in probs])
        t_pre = time.perf_counter() - t0 - t_inf
        if timings is not None:
            timings["preprocess_ms"] = timings.get("preprocess_ms", 0.0) + t_pre * 1000
            timings["inference_ms"] = timings.get("inference_ms", 0.0) + t_inf * 1000
        return np.ascontiguousarray(probs, dtype=np.float32)

    def _probs_on_grid(self, rgb: np.ndarray, progress: ProgressFn | None) -> tuple[np.ndarray, float]:
        h, w = rgb.shape[:2]
        cfg = self.config
        tile = cfg.infer_window
        if h > tile or w > tile:
            return self._sliding(rgb, progress)
        x = normalise(rgb, cfg)
        ph = math.ceil(h / cfg.pad_multiple) * cfg.pad_multiple
        pw = math.ceil(w / cfg.pad_multiple) * cfg.pad_multiple
        if (ph, pw) != (h, w):
            x = np.pad(x, ((0, 0), (0, ph - h), (0, pw - w)), mode="reflect")
        t1 = time.perf_counter()
        logits = self.logits(x[None])
        t_inf = time.perf_counter() - t1
        probs = softmax(logits, axis=1)[0, :, :h, :w]
        if progress:
            progress(1, 1)
        return probs, t_inf

    def _sliding(self, rgb: np.ndarray, progress: ProgressFn | None) -> tuple[np.ndarray, float]:
        """Blend overlapping windows; memory beyond the output is one batch of windows."""
        cfg = self.config
        tile, overlap = cfg.infer_window, cfg.overlap
        h, w = rgb.shape[:2]
        # an axis shorter than a tile is padded up to one tile; the padding is cropped away at the end
        ph, pw = max(h, tile), max(w, tile)
        if (ph, pw) != (h, w):
            rgb = np.pad(rgb, ((0, ph - h), (0, pw - w), (0, 0)), mode="reflect")
        stride = tile - overlap
        positions = [(y, x0) for y in _window_starts(ph, tile, stride) for x0 in _window_starts(pw, tile, stride)]
        ramp = _ramp(tile, overlap)
        weight = np.outer(ramp, ramp)
        acc: np.ndarray | None = None
        wsum = np.zeros((ph, pw), dtype=np.float32)
        t_inf = 0.0
        done = 0
        for start in range(0, len(positions), self.batch_size):
            chunk = positions[start : start + self.batch_size]
            # windows are normalised one batch at a time: no float copy of the whole raster
            batch = np.stack([normalise(rgb[y : y + tile, x0 : x0 + tile], cfg) for y, x0 in chunk])
            t1 = time.perf_counter()
            logits = self.logits(batch)
            t_inf += time.perf_counter() - t1
            probs = softmax(logits, axis=1)
            if acc is None:
                acc = np.zeros((probs.shape[1], ph, pw), dtype=np.float32)
            for (y, x0), p in zip(chunk, probs, strict=True):
                acc[:, y : y + tile, x0 : x0 + tile] += p * weight
                wsum[y : y + tile, x0 : x0 + tile] += weight
            done += len(chunk)
            if progress:
                progress(done, len(positions))
        assert acc is not None
        acc /= wsum
        return acc[:, :h, :w], t_inf


class OnnxSegmenter(Segmenter):
    """The exported model (model.onnx) behind one onnxruntime session: what the API and the gate run."""

    def __init__(self, model_path: str | Path, config: PreprocessConfig, threads: int = 2, batch_size: int = 2) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, int(threads))
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # why: idle pool threads that spin after a run take a core from the post-processing that follows it
        # (docs/experiments/request-path.md)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        self.model_path = Path(model_path)
        self.config = config
        self.batch_size = max(1, batch_size)
        self.session = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        # packages exported before the embedding have only the logits: they serve as before
        names = [o.name for o in self.session.get_outputs()]
        self.embedding_name = EMBEDDING_OUTPUT if EMBEDDING_OUTPUT in names[1:] else None
        # per request: requests run in threads of one pool, each image's tiles in one thread
        self._embedding = threading.local()

    @classmethod
    def from_dir(cls, model_dir: str | Path, threads: int = 2, tta: str | None = None) -> OnnxSegmenter:
        """Load a model package directory holding model.onnx and preprocess.json; ``tta`` overrides the
        package's test-time augmentation (None: the package's own)."""
        model_dir = Path(model_dir)
        onnx_path, pre_path = model_dir / "model.onnx", model_dir / "preprocess.json"
        missing = [p.name for p in (onnx_path, pre_path) if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"model directory {model_dir} lacks {', '.join(missing)}; point it at an exported "
                "model package (model.onnx + preprocess.json)"
            )
        config = PreprocessConfig.from_file(pre_path)
        if tta is not None:
            config = replace(config, tta=tta)
        return cls(onnx_path, config, threads=threads)

    def run_logits(self, batch: np.ndarray) -> np.ndarray:
        sums = getattr(self._embedding, "sums", None)
        if self.embedding_name is None or sums is None:
            return self.session.run([self.output_name], {self.input_name: batch})[0]
        logits, emb = self.session.run([self.output_name, self.embedding_name], {self.input_name: batch})
        sums.append(emb.astype(np.float64).sum(axis=0))
        self._embedding.count += len(emb)
        return logits

    def start_embedding(self) -> None:
        if self.embedding_name is not None:
            self._embedding.sums, self._embedding.count = [], 0

    def take_embedding(self) -> np.ndarray | None:
        sums = getattr(self._embedding, "sums", None)
        self._embedding.sums = None
        if not sums:
            return None
        return (np.sum(sums, axis=0) / max(1, self._embedding.count)).astype(np.float32)
