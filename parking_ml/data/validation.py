"""Checks on landing files: what a file is, whether it can be used, and what to tell a person when not.

Landing layout: ``landing/<batch>/<site>/<stem>.<ext>``; an image and its annotations share a stem
(``x.png`` + ``x.mask.png`` / ``x.geojson`` / ``x.json``). Deeper folders under the site are kept in the stem.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import numpy as np

from parking_ml.data.annotations import (
    AnnotationError,
    AnnotationKind,
    ImageGeo,
    Stall,
    annotation_kind,
    annotation_stem,
    rasterize,
    read_mask,
    read_stalls,
)
from parking_ml.data.images import ImageError, ImageInfo, RasterImage, probe_image, read_image

MIN_SIDE = 64
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
# label priority when an image has several annotations: a painted mask is the most direct
LABEL_PRIORITY: tuple[AnnotationKind, ...] = ("mask", "geojson", "coco")

# one actionable fix per code, stored beside the specific reason in reasons.jsonl
FIXES: dict[str, str] = {
    "empty": "upload the file again; it has 0 bytes",
    "unsupported_type": "send images as PNG, JPEG or GeoTIFF and annotations as <stem>.mask.png, "
    "<stem>.geojson or COCO <stem>.json",
    "corrupt": "re-export or re-download the file; it is truncated or damaged",
    "too_large": "split the image into tiles of at most PARKING_MAX_PIXELS pixels",
    "too_small": f"send images of at least {MIN_SIDE} px on each side",
    "no_site": "put files in a folder named for their site: landing/<batch>/<site>/<file>",
    "duplicate": "nothing to do: this content is already in the lake; remove the copy from landing",
    "missing_annotation": "add <stem>.mask.png, <stem>.geojson or <stem>.json beside the image",
    "orphan_annotation": "add the image this annotation belongs to (same folder, same stem)",
    "ambiguous_stem": "keep one image per stem in a folder (e.g. not both x.png and x.tif)",
    "image_rejected": "fix the image this annotation belongs to (see its own line) and upload both again",
    "annotation_rejected": "fix the annotation (see its own line) and upload the image and annotation again",
    "mask_size_mismatch": "export the mask at the image's width and height",
    "bad_mask_values": "use 0 background, 1 free, 2 occupied, 255 ignore in a single-channel 8-bit PNG",
    "bad_mask": "save the mask as a single-channel 8-bit PNG",
    "bad_json": "fix the JSON (GeoJSON FeatureCollection or COCO) so it parses",
    "bad_geometry": "give each stall a Polygon geometry and a status of 'free' or 'occupied'",
    "polygon_outside": "check coordinate_space/crs so the polygons fall on the image",
    "no_georeference": "send a GeoTIFF, or pixel coordinates with coordinate_space 'pixel'",
    "unknown_category": "name COCO categories 'free_space' and 'occupied_space'",
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class LandingFile:
    key: str  # lake key: landing/<batch>/<site>/...
    batch: str
    site: str  # "" when the file is not inside a site folder
    rel: str  # path under the batch: <site>/.../<file>
    role: Literal["image", "annotation", "other"]
    kind: AnnotationKind | None
    group: str  # <site>/.../<stem>: an image and its annotations share it

    @property
    def name(self) -> str:
        return self.rel.rsplit("/", 1)[-1]


def is_ignored(name: str) -> bool:
    """Hidden files, editor leftovers and our own temp files (a crash mid-write) are not user data."""
    return name.startswith((".", "~")) or ".tmp-" in name or name.endswith((".tmp", ".part"))


def parse_landing_key(key: str, prefix: str = "landing") -> LandingFile | None:
    parts = key.strip("/").split("/")
    if len(parts) < 3 or parts[0] != prefix or is_ignored(parts[-1]):
        return None
    batch, rest = parts[1], parts[2:]
    site = rest[0] if len(rest) >= 2 else ""
    rel = "/".join(rest)
    name = rest[-1]
    kind = annotation_kind(name)
    if kind is not None:
        role: Literal["image", "annotation", "other"] = "annotation"
        stem = annotation_stem(name)
    elif name.lower().endswith(IMAGE_SUFFIXES):
        role, stem = "image", name.rsplit(".", 1)[0]
    else:
        role, stem = "other", name
    group = "/".join([*rest[:-1], stem])
    return LandingFile(key=key, batch=batch, site=site, rel=rel, role=role, kind=kind, group=group)


@dataclass(frozen=True)
class Rejection:
    file: LandingFile
    code: str
    reason: str
    sha256: str

    def record(self) -> dict[str, str]:
        return {
            "file": self.file.rel,
            "site": self.file.site,
            "code": self.code,
            "reason": self.reason,
            "fix": FIXES.get(self.code, "see the reason"),
            "batch": self.file.batch,
            "source": self.file.key,
            "sha256": self.sha256,
            "ts": utc_now(),
        }


@dataclass(frozen=True)
class CheckedImage:
    info: ImageInfo
    image: RasterImage

    @property
    def geo(self) -> ImageGeo:
        return ImageGeo(self.info.width, self.info.height, self.image.transform, self.image.crs)


def check_image(data: bytes, name: str, max_pixels: int, min_side: int = MIN_SIDE) -> CheckedImage:
    """Decode fully (a truncated file shows only then); size limits come from the header first."""
    info = probe_image(data, name)
    image = read_image(data, name, max_pixels=max_pixels, min_side=min_side)
    return CheckedImage(info, image)


@dataclass(frozen=True)
class CheckedAnnotation:
    kind: AnnotationKind
    mask: np.ndarray | None  # the label this annotation gives
    stalls: list[Stall] | None  # polygons, when the annotation has them


def check_annotation(
    data: bytes, name: str, kind: AnnotationKind, geo: ImageGeo, image_name: str = ""
) -> CheckedAnnotation:
    """Raises AnnotationError (ImageError for an undecodable mask) with a code and an actionable message."""
    if not data:
        raise AnnotationError("empty", f"'{name}' is empty (0 bytes); upload the annotation again")
    if kind == "mask":
        return CheckedAnnotation(kind, read_mask(data, name, geo.width, geo.height), None)
    if kind == "coco" and b'"FeatureCollection"' in data[:4096]:
        # GeoJSON saved as <stem>.json: record what it is, not what its suffix suggests
        kind = "geojson"
    stalls = read_stalls(data, name, kind, geo, image_name)
    return CheckedAnnotation(kind, rasterize(stalls, geo.height, geo.width), stalls)


def error_code(exc: Exception) -> tuple[str, str]:
    if isinstance(exc, ImageError | AnnotationError):
        return exc.code, exc.message
    return "corrupt", str(exc)
