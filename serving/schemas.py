"""Response shapes, for the OpenAPI document (handlers build the JSON directly, the fields match)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    code: str = Field(description="machine-readable: unsupported_type, corrupt, too_large, not_ready, ...")
    message: str = Field(description="what went wrong and how to fix it")


class ErrorResponse(BaseModel):
    error: ErrorDetail


class ModelRef(BaseModel):
    name: str
    version: str


class SpaceOut(BaseModel):
    id: int
    status: str = Field(description="free | occupied")
    confidence: float = Field(description="mean class probability over the space's pixels")
    area_px: int
    polygon: list[list[float]] = Field(description="closed ring of [x, y] pixel-edge coordinates")


class PredictResponse(BaseModel):
    request_id: str
    model: ModelRef
    width: int
    height: int
    free_spaces: int
    occupied_spaces: int
    occupancy_rate: float | None = Field(description="occupied / all spaces; null when no space was found")
    spaces: list[SpaceOut]
    geojson: dict[str, Any] | None = Field(
        None, description="for georeferenced input: {image_crs: FeatureCollection, wgs84: FeatureCollection}"
    )
    mask: str | None = Field(None, description="base64 PNG class mask (0 background, 1 free, 2 occupied)")
    timings_ms: dict[str, float]


class ModelInfo(BaseModel):
    name: str
    alias: str | None
    version: str
    run_id: str | None
    source: str
    loaded_at: str
    metrics: dict[str, float]
    tags: dict[str, str]
    preprocess: dict[str, Any]


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in (
        (401, "missing or wrong X-API-Key"),
        (413, "upload or pixel count above the limit"),
        (415, "not a PNG, JPEG or TIFF (told by content, not by name)"),
        (422, "corrupt, truncated or empty image, or a missing field"),
        (503, "no model loaded yet, or too many requests (see Retry-After)"),
    )
}
