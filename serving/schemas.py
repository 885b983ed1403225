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


class Quality(BaseModel):
    """How the answer's scale was found and how sure the model was (docs/design.md, API)."""

    gsd: float | None = Field(description="ground resolution used, m/px (null: neither image nor model knows one)")
    gsd_source: str = Field(description="georeference | request | estimated | default")
    estimated_gsd: float | None = Field(
        description="the estimate from the stalls' sizes when one ran (PARKING_GSD_ESTIMATE and no georeference or "
        "?gsd=); null when none ran or it found nothing stall-like (then gsd_source is default)"
    )
    estimate_spaces: int | None = Field(description="spaces the estimate measured; null when none ran")
    no_structure_share: float = Field(
        description="share of the image's pixels in no space (class 0 of the answer's class map), 0-1"
    )
    mean_confidence: float = Field(description="mean over all pixels of the winning class's probability, 0-1")
    mean_space_confidence: float | None = Field(
        description="mean of the spaces' confidences; null when no space was found"
    )


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
    gsd: float | None = Field(description="ground resolution the answer used, m/px (same as quality.gsd)")
    gsd_source: str = Field(
        description="where gsd came from: georeference (the GeoTIFF's own), request (?gsd=), estimated (from the "
        "sizes of the stalls found), default (the model's typical training resolution)"
    )
    quality: Quality
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
