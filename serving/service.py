"""The work of one prediction request, run in the inference thread pool (numpy, OpenCV and onnxruntime
release the GIL): decode with the header checked first, predict, GeoJSON; the drift row is left to the routes."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from parking_ml.config import Settings
from parking_ml.data.images import ImageError, RasterImage, check_size, encode_png, probe_image, read_image
from parking_ml.features import tile_features
from parking_ml.inference import Prediction, georeferenced_geojson, predict
from parking_ml.inference.gsd import GsdChoice, resolve_gsd
from parking_ml.inference.quality import answer_quality
from serving.drift import feature_row
from serving.errors import IMAGE_ERROR_STATUS, ApiError
from serving.holder import LoadedModel
from serving.metrics import Metrics


@dataclass
class InferenceResult:
    image: RasterImage
    prediction: Prediction
    geojson: dict[str, Any] | None
    timings_ms: dict[str, float]
    gsd: GsdChoice
    quality: dict[str, Any]
    # the request's drift row, not part of the answer: the routes have it computed after the answer has gone
    drift_row: Callable[[], dict[str, Any]]
    mask_png: bytes | None = None


def decode_upload(data: bytes, name: str, settings: Settings) -> RasterImage:
    """Bytes -> RGB, refusing by the header (type by magic bytes, pixel count) before decoding anything."""
    try:
        info = probe_image(data, name)
        # a decompression bomb is refused here, from its header: 413 like an oversized upload
        check_size(info, name, max_pixels=settings.max_pixels)
        return read_image(data, name, max_pixels=settings.max_pixels)
    except ImageError as exc:
        raise ApiError(IMAGE_ERROR_STATUS.get(exc.code, 422), exc.code, exc.message) from None


def run_inference(
    model: LoadedModel,
    data: bytes,
    name: str,
    settings: Settings,
    metrics: Metrics,
    request_id: str,
    with_mask_png: bool = False,
    gsd: float | None = None,
) -> InferenceResult:
    """gsd (m/px) stands in for an image that carries none; a GeoTIFF's own resolution wins; without either the
    estimate (settings.gsd_estimate) or the package's default."""
    t0 = time.perf_counter()
    image = decode_upload(data, name, settings)
    t_decode = time.perf_counter() - t0
    choice = resolve_gsd(model.segmenter, image.rgb, image.gsd, gsd, estimate=settings.gsd_estimate)
    pred = predict(model.segmenter, image.rgb, image_gsd=choice.gsd)
    timings = {"decode_ms": round(t_decode * 1000, 2), **pred.timings_ms}
    if choice.estimate is not None:
        timings["gsd_estimate_ms"] = round(choice.estimate.elapsed_ms, 2)
    geojson = georeferenced_geojson(pred.spaces, image.transform, image.crs)
    mask_png = encode_png(pred.mask) if with_mask_png else None
    answered = datetime.now(UTC)

    def drift_row() -> dict[str, Any]:
        t = time.perf_counter()
        row = feature_row(tile_features(image.rgb, pred), request_id, model.name, model.version, answered)
        metrics.inference_duration.labels(stage="features").observe(time.perf_counter() - t)
        return row

    timings["total_ms"] = round((time.perf_counter() - t0) * 1000, 2)
    for stage, ms in timings.items():
        metrics.inference_duration.labels(stage=stage.removesuffix("_ms")).observe(ms / 1000)
    metrics.free_spaces.observe(pred.free_count)
    metrics.occupied_spaces.observe(pred.occupied_count)
    return InferenceResult(image, pred, geojson, timings, choice, answer_quality(pred, choice), drift_row, mask_png)
