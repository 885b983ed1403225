"""Annotation readers: mask PNG, GeoJSON stall polygons, COCO JSON -> the mask contract.

Mask contract: single-channel uint8, 0 background, 1 free space, 2 occupied space, 255 ignore.

Polygons become masks by ``rasterize``, the synthetic generator's rule (parking_ml/synth/dataset.py): vertices
in pixel coordinates (x = column, y = row, the centre of pixel (c, r) at (c, r)) are rounded to integers with
``np.rint`` and each polygon is filled with ``cv2.fillPoly`` (8-connected edges, boundary included) in file
order, so a later stall wins where two overlap. The value is 1 (free) or 2 (occupied), or 255 when the feature
says ``"ignore": true`` or ``"label": 255`` (a stall the annotator could not judge, e.g. under trees).

GeoJSON ``coordinate_space``: "pixel" or "map". Map coordinates go through the GeoTIFF's inverse affine
transform; a top-level ``crs`` (a string such as "EPSG:32633" or the old {"type": "name", ...} member) that
differs from the image's is reprojected first. When the member is missing: "map" if the image is
georeferenced and some vertex lies outside the pixel extent, else "pixel".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from parking_ml.data.images import ImageError, decode_mask_png

Status = Literal["free", "occupied"]
AnnotationKind = Literal["mask", "geojson", "coco"]
CLASS_IDS: dict[str, int] = {"free": 1, "occupied": 2}
IGNORE_VALUE = 255
# a stall less than this share of which lies inside an image (the generator's rule) or a tile (preprocessing's)
# is ignored there: a sliver of a stall is not a space anyone can count or judge
MIN_INSIDE = 0.30
VALID_MASK_VALUES = frozenset({0, 1, 2, 255})
COCO_CATEGORIES: dict[str, Status] = {
    "free_space": "free",
    "occupied_space": "occupied",
    "free": "free",
    "occupied": "occupied",
}


class AnnotationError(ValueError):
    """An annotation that cannot be used; ``code`` is machine-readable, the message names file and fix.

    Codes: bad_json, bad_geometry, bad_mask, mask_size_mismatch, bad_mask_values, polygon_outside,
    no_georeference, unknown_category, unsupported_type.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Stall:
    polygon: np.ndarray  # float64 N x 2, pixel coordinates (x, y)
    status: Status
    ignore: bool = False  # drawn as 255: the stall exists but its status must not be learnt

    @property
    def value(self) -> int:
        return IGNORE_VALUE if self.ignore else CLASS_IDS[self.status]


@dataclass(frozen=True)
class ImageGeo:
    """What an annotation needs to know about its image."""

    width: int
    height: int
    transform: Any = None  # affine.Affine for georeferenced images
    crs: str | None = None


def annotation_kind(name: str) -> AnnotationKind | None:
    """The annotation kind told by a landing file's name, or None when it is not an annotation."""
    lower = name.lower()
    if lower.endswith(".mask.png"):
        return "mask"
    if lower.endswith(".geojson"):
        return "geojson"
    if lower.endswith(".json"):
        return "coco"
    return None


def annotation_stem(name: str) -> str:
    """``a/b/x.mask.png`` -> ``x``: the image stem an annotation belongs to."""
    base = name.rsplit("/", 1)[-1]
    for suffix in (".mask.png", ".geojson", ".json"):
        if base.lower().endswith(suffix):
            return base[: -len(suffix)]
    return base.rsplit(".", 1)[0]


# --- masks ---------------------------------------------------------------------------------------------
def read_mask(data: bytes, name: str, width: int, height: int) -> np.ndarray:
    """Mask PNG bytes -> uint8 H x W, checked against the image size and the class ids."""
    try:
        mask = decode_mask_png(data, name)
    except ImageError as exc:
        raise AnnotationError("bad_mask", exc.message) from None
    if mask.shape != (height, width):
        raise AnnotationError(
            "mask_size_mismatch",
            f"mask '{name}' is {mask.shape[1]}x{mask.shape[0]} px but its image is {width}x{height} px; "
            f"export the mask at the image's size",
        )
    values = {int(v) for v in np.unique(mask)}
    unknown = sorted(values - VALID_MASK_VALUES)
    if unknown:
        raise AnnotationError(
            "bad_mask_values",
            f"mask '{name}' holds values {unknown[:10]} outside 0 (background), 1 (free), 2 (occupied), "
            f"255 (ignore); remap the classes and save the mask as single-channel 8-bit PNG",
        )
    return mask


# --- polygons --------------------------------------------------------------------------------------------
def _vertices(polygon: np.ndarray) -> np.ndarray:
    return np.rint(polygon).astype(np.int32).reshape(-1, 1, 2)


def rasterize(stalls: list[Stall], height: int, width: int) -> np.ndarray:
    """Stall polygons (pixel coordinates) -> uint8 mask (0 bg, 1 free, 2 occupied), rule in the module doc."""
    import cv2

    mask = np.zeros((height, width), np.uint8)
    for stall in stalls:
        # one call per polygon: fillPoly with several contours fills overlaps even-odd
        cv2.fillPoly(mask, [_vertices(stall.polygon)], stall.value, lineType=cv2.LINE_8)
    return mask


def check_inside(stalls: list[Stall], geo: ImageGeo, name: str) -> None:
    """Refuse labelled polygons lying entirely outside the image (usually a wrong CRS or coordinate space).

    Ignored stalls (``ignore``) may hang over the edge or lie beyond it: tiles cut through lots.
    """
    outside = 0
    for stall in stalls:
        if stall.ignore:
            continue
        xs, ys = stall.polygon[:, 0], stall.polygon[:, 1]
        if xs.max() < 0 or ys.max() < 0 or xs.min() > geo.width or ys.min() > geo.height:
            outside += 1
    if outside:
        raise AnnotationError(
            "polygon_outside",
            f"'{name}': {outside} of {len(stalls)} polygons lie outside the "
            f"{geo.width}x{geo.height} px image; "
            f"check the coordinate_space ('pixel' or 'map') and the crs, or drop those polygons",
        )


def _load_json(data: bytes, name: str) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AnnotationError("bad_json", f"'{name}' is not valid UTF-8 JSON ({exc}); fix the file") from None


def _crs_name(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        props = value.get("properties") or {}
        return props.get("name")
    return None


def _status(props: dict[str, Any], name: str, index: int) -> Status:
    raw = str(props.get("status", "")).strip().lower()
    if raw in ("free", "occupied"):
        return raw  # type: ignore[return-value]
    raise AnnotationError(
        "bad_geometry",
        f"'{name}' feature {index}: property status is {props.get('status')!r}; set it to 'free' or 'occupied'",
    )


def _rings(geometry: dict[str, Any], name: str, index: int) -> list[np.ndarray]:
    gtype = (geometry or {}).get("type")
    coords = (geometry or {}).get("coordinates")
    try:
        if gtype == "Polygon":
            polys = [coords]
        elif gtype == "MultiPolygon":
            polys = list(coords)
        else:
            raise ValueError(f"geometry type {gtype!r}")
        rings = []
        for poly in polys:
            ring = np.asarray(poly[0], dtype=np.float64)  # outer ring; stalls have no holes
            # degenerate rings (a stall clipped to a tile corner) are kept: fillPoly draws them as the
            # point or line they are, exactly as the producer's mask does
            if ring.ndim != 2 or ring.shape[1] < 2 or len(ring) < 1 or not np.isfinite(ring[:, :2]).all():
                raise ValueError("a ring needs finite [x, y] points")
            ring = ring[:, :2]
            rings.append(ring)
        return rings
    except (TypeError, ValueError, IndexError) as exc:
        raise AnnotationError(
            "bad_geometry",
            f"'{name}' feature {index}: {exc}; each stall must be a Polygon (or MultiPolygon) with status",
        ) from None


def _map_to_pixel(ring: np.ndarray, geo: ImageGeo, src_crs: str | None) -> np.ndarray:
    xs, ys = ring[:, 0], ring[:, 1]
    if src_crs and geo.crs:
        from rasterio.crs import CRS
        from rasterio.warp import transform as warp

        if CRS.from_user_input(src_crs) != CRS.from_user_input(geo.crs):
            xs, ys = (np.asarray(v) for v in warp(src_crs, geo.crs, xs.tolist(), ys.tolist()))
    inverse = ~geo.transform
    cols, rows = inverse @ (np.asarray(xs), np.asarray(ys))
    return np.column_stack([cols, rows]).astype(np.float64)


def read_geojson(data: bytes, name: str, geo: ImageGeo) -> list[Stall]:
    """GeoJSON FeatureCollection of stall polygons -> stalls in pixel coordinates."""
    doc = _load_json(data, name)
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        raise AnnotationError("bad_json", f"'{name}' must be a GeoJSON FeatureCollection of stall polygons")
    features = doc.get("features") or []
    parsed: list[tuple[np.ndarray, Status, bool]] = []
    for i, feature in enumerate(features):
        props = feature.get("properties") or {}
        status = _status(props, name, i)
        ignore = bool(props.get("ignore")) or props.get("label") == IGNORE_VALUE
        parsed.extend((ring, status, ignore) for ring in _rings(feature.get("geometry"), name, i))
    space = doc.get("coordinate_space")
    if space is None:
        inside = all(
            r[:, 0].min() >= -1
            and r[:, 1].min() >= -1
            and r[:, 0].max() <= geo.width + 1
            and r[:, 1].max() <= geo.height + 1
            for r, _, _ in parsed
        )
        space = "map" if geo.transform is not None and not inside else "pixel"
    if space not in ("pixel", "map"):
        raise AnnotationError("bad_json", f"'{name}': coordinate_space is {space!r}; use 'pixel' or 'map'")
    if space == "map" and geo.transform is None:
        raise AnnotationError(
            "no_georeference",
            f"'{name}' has map coordinates but its image has no georeference; send a GeoTIFF or use "
            f'pixel coordinates with "coordinate_space": "pixel"',
        )
    src_crs = _crs_name(doc.get("crs"))
    stalls = [
        Stall(_map_to_pixel(ring, geo, src_crs) if space == "map" else ring, status, ignore)
        for ring, status, ignore in parsed
    ]
    check_inside(stalls, geo, name)
    return stalls


def read_coco(data: bytes, name: str, geo: ImageGeo, image_name: str = "") -> list[Stall]:
    """COCO JSON (categories free_space / occupied_space; polygons or bbox) -> stalls of one image."""
    doc = _load_json(data, name)
    if not isinstance(doc, dict) or "annotations" not in doc or "categories" not in doc:
        raise AnnotationError("bad_json", f"'{name}' is not COCO JSON (needs 'images', 'annotations', 'categories')")
    categories: dict[Any, Status] = {}
    for cat in doc["categories"]:
        status = COCO_CATEGORIES.get(str(cat.get("name", "")).strip().lower())
        if status is None:
            raise AnnotationError(
                "unknown_category",
                f"'{name}': category {cat.get('name')!r} is unknown; use 'free_space' and 'occupied_space'",
            )
        categories[cat.get("id")] = status
    images = doc.get("images") or []
    image_id = None
    base = image_name.rsplit("/", 1)[-1]
    matches = [im for im in images if str(im.get("file_name", "")).rsplit("/", 1)[-1] == base]
    if len(matches) == 1:
        image_id = matches[0].get("id")
    elif len(images) == 1:
        image_id = images[0].get("id")
    elif images:
        raise AnnotationError(
            "bad_json",
            f"'{name}' lists {len(images)} images and none is named '{base}'; put one COCO file per image "
            f"beside it or set images[].file_name",
        )
    stalls: list[Stall] = []
    for i, ann in enumerate(doc["annotations"]):
        if image_id is not None and ann.get("image_id") != image_id:
            continue
        status = categories.get(ann.get("category_id"))
        if status is None:
            raise AnnotationError(
                "unknown_category",
                f"'{name}' annotation {i}: category_id {ann.get('category_id')!r} is not listed",
            )
        seg = ann.get("segmentation")
        try:
            if isinstance(seg, list) and seg:
                for flat in seg:
                    ring = np.asarray(flat, dtype=np.float64).reshape(-1, 2)
                    if len(ring) < 3:
                        raise ValueError("a polygon needs at least 3 points")
                    stalls.append(Stall(ring, status))
            elif isinstance(seg, dict):
                raise ValueError("RLE segmentation is not supported; export polygons")
            else:
                x, y, w, h = (float(v) for v in ann["bbox"])
                # a bbox covers [x, x + w) x [y, y + h): the last pixel is x + w - 1
                ring = np.array([[x, y], [x + w - 1, y], [x + w - 1, y + h - 1], [x, y + h - 1]], np.float64)
                stalls.append(Stall(ring, status))
        except (KeyError, TypeError, ValueError) as exc:
            raise AnnotationError("bad_geometry", f"'{name}' annotation {i}: {exc}") from None
    check_inside(stalls, geo, name)
    return stalls


def read_stalls(data: bytes, name: str, kind: AnnotationKind, geo: ImageGeo, image_name: str = "") -> list[Stall]:
    if kind == "geojson":
        return read_geojson(data, name, geo)
    if kind == "coco":
        # a .json beside an image may also be GeoJSON
        doc_type = _load_json(data, name)
        if isinstance(doc_type, dict) and doc_type.get("type") == "FeatureCollection":
            return read_geojson(data, name, geo)
        return read_coco(data, name, geo, image_name)
    raise AnnotationError("unsupported_type", f"'{name}' is a {kind}, not polygons")


def read_label(data: bytes, name: str, kind: AnnotationKind, geo: ImageGeo, image_name: str = "") -> np.ndarray:
    """Any supported annotation -> the uint8 mask of the image (mask contract)."""
    if kind == "mask":
        return read_mask(data, name, geo.width, geo.height)
    return rasterize(read_stalls(data, name, kind, geo, image_name), geo.height, geo.width)


def geojson_gsd(data: bytes) -> float | None:
    """The top-level ``gsd`` (m/px) some producers (the synthetic generator) put in pixel-space GeoJSON."""
    try:
        value = json.loads(data.decode("utf-8")).get("gsd")
        return float(value) if value is not None and float(value) > 0 else None
    except (ValueError, TypeError, AttributeError, UnicodeDecodeError):
        return None


def stalls_to_geojson(stalls: list[Stall], offset: tuple[float, float] = (0.0, 0.0), scale: float = 1.0) -> dict:
    """Stalls -> pixel-space FeatureCollection of ``p * scale - offset`` (resample, then tile origin)."""
    features = []
    for i, stall in enumerate(stalls):
        ring = stall.polygon * scale - np.asarray(offset, np.float64)
        coords = [[round(float(x), 3), round(float(y), 3)] for x, y in ring]
        if coords[0] != coords[-1]:
            coords.append(coords[0])
        features.append(
            {
                "type": "Feature",
                "properties": {"id": i, "status": stall.status, "label": stall.value, "ignore": stall.ignore},
                "geometry": {"type": "Polygon", "coordinates": [coords]},
            }
        )
    return {"type": "FeatureCollection", "coordinate_space": "pixel", "features": features}
