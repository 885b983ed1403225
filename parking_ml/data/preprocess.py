"""raw/ -> processed/<version>/: resample, tile, split by site, count, version.

Output (the training contract)::

    processed/<version>/tiles/<tile_id>.png       RGB 8-bit, tile_size x tile_size
    processed/<version>/masks/<tile_id>.png       uint8 0/1/2/255 (255 where a small image was padded)
    processed/<version>/stalls/<tile_id>.geojson  stall polygons in tile pixel coordinates, when known
    processed/<version>/manifest.parquet          one row per tile (TILE_COLUMNS)
    processed/<version>/dataset.json              version, config, counts, sites per fold, holdout sites
    processed/LATEST                               the version, written last

Tiling: windows of ``tile_size`` with stride ``tile_size - tile_overlap``; the last row/column is aligned to the
image's edge (it overlaps more) so no pixel is dropped; an image smaller than a tile is padded bottom/right
(image 0, mask 255). A space (a component of class 1 or 2) less than ``MIN_INSIDE`` of whose pixels fall
inside a tile is ignored (255) in that tile, and so is its stall polygon: the synthetic generator's rule for
stalls cut by the image edge, applied to the tile's edges (a 1-px sliver of a stall had counted as a space in
the tile's truth, which no model should find). Resampling (``target_gsd``): images with a known gsd are scaled
by gsd / target_gsd (area interpolation for pixels, nearest for masks); images without a gsd are kept as they are.

``version`` = the first 12 hex digits of sha256 over the sorted (image sha, label sha, stalls key) triples and
the config, so the same raw data and settings give the same version and a re-run writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from parking_ml.data.annotations import (
    IGNORE_VALUE,
    MIN_INSIDE,
    ImageGeo,
    Stall,
    read_label,
    read_stalls,
    stalls_to_geojson,
)
from parking_ml.data.images import EXTENSIONS, encode_png, read_image
from parking_ml.data.ingest import read_raw_manifest
from parking_ml.data.processed import LATEST_KEY
from parking_ml.data.splits import HOLDOUT_FOLD, split_sites
from parking_ml.data.validation import utc_now
from parking_ml.lake import Lake

log = logging.getLogger(__name__)

# bump when tiling/resampling code changes what a given config produces
# 2: spaces cut to a sliver by a tile's edge are ignored in that tile
SCHEMA = 2

TILE_COLUMNS = [
    "tile_id",
    "image_sha256",
    "site",
    "fold",
    "split",
    "x0",
    "y0",
    "width",
    "height",
    "gsd",
    "free_spaces",
    "occupied_spaces",
    "free_pixels",
    "occupied_pixels",
    "ignore_pixels",
    "has_stalls",
]
CLASS_NAMES = {0: "background", 1: "free", 2: "occupied", 255: "ignore"}


@dataclass(frozen=True)
class TilingConfig:
    """How raw images become training tiles, folds and a holdout (the served model's own settings are
    parking_ml.inference.PreprocessConfig)."""

    tile_size: int = 256
    tile_overlap: int = 32
    target_gsd: float | None = None
    folds: int = 3
    holdout_fraction: float = 0.2
    schema: int = SCHEMA
    # comma-separated landing batch names or fnmatch patterns to build the dataset from ("": every batch), so
    # a user's own batch gets a holdout of its own sites (docs/byol.md)
    batches: str = ""

    def __post_init__(self) -> None:
        if not 0 <= self.tile_overlap < self.tile_size:
            raise ValueError(
                f"tile_overlap ({self.tile_overlap}) must be >= 0 and below tile_size ({self.tile_size}); "
                f"set PARKING_TILE_OVERLAP smaller"
            )

    @classmethod
    def from_settings(cls, settings: Any) -> TilingConfig:
        return cls(
            tile_size=settings.tile_size,
            tile_overlap=settings.tile_overlap,
            target_gsd=settings.target_gsd,
            folds=settings.folds,
            holdout_fraction=settings.holdout_fraction,
            batches=getattr(settings, "data_batches", "") or "",
        )


def select_raw_batches(raw: pd.DataFrame, batches: str) -> pd.DataFrame:
    """The raw rows of the named batches (comma-separated names or fnmatch patterns; "": all of them)."""
    from fnmatch import fnmatchcase

    patterns = [p.strip() for p in (batches or "").split(",") if p.strip()]
    if not patterns or raw.empty:
        return raw
    keep = raw["batch"].astype(str).map(lambda b: any(fnmatchcase(b, p) for p in patterns))
    if not keep.any():
        known = ", ".join(sorted(raw["batch"].astype(str).unique())[:20])
        raise ValueError(
            f"PARKING_DATA_BATCHES={batches!r} matches no ingested batch (ingested: {known}); name one of them, "
            f"or leave it empty to use every batch"
        )
    return raw[keep.to_numpy()].reset_index(drop=True)


def dataset_version(raw: pd.DataFrame, config: TilingConfig) -> str:
    items = sorted(
        zip(
            raw["sha256"].astype(str),
            raw["annotation_sha256"].astype(str),
            raw["stalls"].fillna("").astype(str),
            strict=True,
        )
    )
    cfg = asdict(config)
    if not cfg["batches"]:  # the filter's effect is in the images; unfiltered versions keep their names
        del cfg["batches"]
    payload = json.dumps({"images": items, "config": cfg}, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:12]


def unprocessed_version(lake: Lake, config: TilingConfig) -> str | None:
    """The dataset version that raw/ would give under ``config`` when no complete processed/<version>/ exists
    for it yet (None: raw/ is empty or already processed). What decides whether preprocessing has work, whoever
    ingested the data: a retried ingest whose first try wrote the manifest before it died accepts nothing new."""
    raw = read_raw_manifest(lake)
    if raw.empty:
        return None
    version = dataset_version(raw, config)
    return None if lake.exists(f"processed/{version}/dataset.json") else version


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Window starts along one axis; the last window ends at the edge."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def _resample(
    rgb: np.ndarray, mask: np.ndarray, stalls: list[Stall] | None, scale: float
) -> tuple[np.ndarray, np.ndarray, list[Stall] | None]:
    import cv2

    h, w = mask.shape
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    if (nh, nw) == (h, w):
        return rgb, mask, stalls
    rgb = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
    mask = cv2.resize(mask, (nw, nh), interpolation=cv2.INTER_NEAREST)
    if stalls is not None:
        sx, sy = nw / w, nh / h
        # pixel centres sit at integer coordinates: scale about the pixel corner, not the centre
        stalls = [Stall((s.polygon + 0.5) * np.array([sx, sy]) - 0.5, s.status, s.ignore) for s in stalls]
    return rgb, mask, stalls


def _components(binary: np.ndarray) -> int:
    import cv2

    if not binary.any():
        return 0
    n, _ = cv2.connectedComponents(binary.astype(np.uint8), connectivity=8)
    return int(n - 1)


def space_labels(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H x W int32 labels, areas) of the spaces of a whole image's mask: the 8-connected components of class 1
    and of class 2, numbered apart (0: no space); ``areas[k]`` is component k's pixel count."""
    import cv2

    n_free, labels = cv2.connectedComponents((mask == 1).view(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    n_occ, occupied = cv2.connectedComponents((mask == 2).view(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    if n_occ > 1:
        labels = np.where(occupied > 0, occupied + (n_free - 1), labels)
    return labels, np.bincount(labels.ravel(), minlength=n_free + n_occ - 1)


def cut_tile(mask: np.ndarray, spaces: tuple[np.ndarray, np.ndarray], x0: int, y0: int, size: int) -> np.ndarray:
    """The size x size mask of the window at (x0, y0): 255 past the image's bottom/right edge, and 255 on every
    space (see ``space_labels``) of which less than MIN_INSIDE lies inside the window."""
    labels, areas = spaces
    h, w = mask.shape
    ch, cw = min(size, h - y0), min(size, w - x0)
    tile = np.full((size, size), IGNORE_VALUE, np.uint8)
    tile[:ch, :cw] = mask[y0 : y0 + ch, x0 : x0 + cw]
    window = labels[y0 : y0 + ch, x0 : x0 + cw]
    inside = np.bincount(window.ravel(), minlength=len(areas))
    cut = inside < MIN_INSIDE * areas
    cut[0] = False
    if cut[window].any():
        tile[:ch, :cw][cut[window]] = IGNORE_VALUE
    return tile


def _tile_stalls(stalls: list[Stall], x0: int, y0: int, size: int) -> list[Stall]:
    """The stalls touching the window, in its coordinates; one less than MIN_INSIDE of whose area lies inside
    the window is ignored there (as its pixels are, by ``cut_tile``)."""
    from shapely.geometry import Polygon, box

    window = box(x0 - 0.5, y0 - 0.5, x0 + size - 0.5, y0 + size - 0.5)
    out = []
    for s in stalls:
        xs, ys = s.polygon[:, 0], s.polygon[:, 1]
        if xs.max() < x0 or ys.max() < y0 or xs.min() > x0 + size - 1 or ys.min() > y0 + size - 1:
            continue
        # a polygon clipped to a line by the image edge has no area to share out: it stays as it was
        shape = Polygon(s.polygon).buffer(0) if len(s.polygon) >= 3 else None
        cut = bool(shape is not None and shape.area > 0 and shape.intersection(window).area < MIN_INSIDE * shape.area)
        out.append(Stall(s.polygon - np.array([x0, y0], np.float64), s.status, s.ignore or cut))
    return out


def _load_labelled(lake: Lake, row: Any) -> tuple[np.ndarray, np.ndarray, list[Stall] | None]:
    image = read_image(lake.read_bytes(f"raw/images/{row.sha256}.{EXTENSIONS[row.format]}"), row.source)
    geo = ImageGeo(image.width, image.height, image.transform, image.crs)
    image_name = str(row.source).rsplit("/", 1)[-1]
    mask = read_label(lake.read_bytes(row.annotation), row.annotation, row.annotation_format, geo, image_name)
    stalls = None
    if isinstance(row.stalls, str) and row.stalls:
        stalls = read_stalls(lake.read_bytes(row.stalls), row.stalls, row.stalls_format, geo, image_name)
    return image.rgb, mask, stalls


def _write_tiles(
    lake: Lake,
    prefix: str,
    row: Any,
    rgb: np.ndarray,
    mask: np.ndarray,
    stalls: Any,
    gsd: float | None,
    config: TilingConfig,
    class_counts: dict[str, int],
) -> list[dict[str, Any]]:
    """Cut one raw image (a raw-manifest ``row``) into tiles under ``prefix``; add their pixels to
    ``class_counts``; -> the tiles' manifest rows (fold and split still to come)."""
    size, out = config.tile_size, []
    h, w = mask.shape
    spaces = space_labels(mask)
    for y0 in tile_starts(h, size, config.tile_overlap):
        for x0 in tile_starts(w, size, config.tile_overlap):
            tile_rgb = np.zeros((size, size, 3), np.uint8)
            crop = (slice(y0, min(y0 + size, h)), slice(x0, min(x0 + size, w)))
            tile_rgb[: crop[0].stop - y0, : crop[1].stop - x0] = rgb[crop]
            tile_mask = cut_tile(mask, spaces, x0, y0, size)
            tile_id = f"{row.sha256[:16]}_{y0:05d}_{x0:05d}"
            lake.write_bytes(f"{prefix}/tiles/{tile_id}.png", encode_png(tile_rgb))
            lake.write_bytes(f"{prefix}/masks/{tile_id}.png", encode_png(tile_mask))
            if stalls is not None:
                doc = stalls_to_geojson(_tile_stalls(stalls, x0, y0, size))
                lake.write_text(f"{prefix}/stalls/{tile_id}.geojson", json.dumps(doc))
            counts = np.bincount(tile_mask.ravel(), minlength=256)
            for value, cname in CLASS_NAMES.items():
                class_counts[cname] += int(counts[value])
            out.append(
                {
                    "tile_id": tile_id,
                    "image_sha256": row.sha256,
                    "site": row.site,
                    "x0": x0,
                    "y0": y0,
                    "width": size,
                    "height": size,
                    "gsd": gsd if gsd is not None else float("nan"),
                    "free_spaces": _components(tile_mask == 1),
                    "occupied_spaces": _components(tile_mask == 2),
                    "free_pixels": int(counts[1]),
                    "occupied_pixels": int(counts[2]),
                    "ignore_pixels": int(counts[255]),
                    "has_stalls": stalls is not None,
                }
            )
    return out


def preprocess(lake: Lake, config: TilingConfig, progress: bool = False) -> dict[str, Any]:
    """Build processed/<version>/ from raw/ (no-op when that version is complete). Returns a summary."""
    from tqdm import tqdm

    raw = read_raw_manifest(lake)
    if raw.empty:
        raise FileNotFoundError(
            f"no ingested images in {lake.uri('raw/manifest.parquet')}; drop files into landing/<batch>/<site>/ "
            f"and run `parking-ml ingest` first"
        )
    raw = select_raw_batches(raw, config.batches)
    version = dataset_version(raw, config)
    prefix = f"processed/{version}"
    if lake.exists(f"{prefix}/dataset.json"):
        if not lake.exists(LATEST_KEY) or lake.read_bytes(LATEST_KEY).decode().strip() != version:
            lake.write_text(LATEST_KEY, version + "\n")
        info = json.loads(lake.read_bytes(f"{prefix}/dataset.json"))
        log.info("dataset up to date", extra={"version": version, "n_tiles": info["n_tiles"]})
        return {"version": version, "created": False, "n_tiles": info["n_tiles"], "n_images": info["n_images"]}

    rows: list[dict[str, Any]] = []
    class_counts = dict.fromkeys(CLASS_NAMES.values(), 0)
    raw = raw.sort_values("sha256").reset_index(drop=True)
    for row in tqdm(list(raw.itertuples()), desc="preprocess", unit="image", disable=not progress):
        rgb, mask, stalls = _load_labelled(lake, row)
        gsd = float(row.gsd) if row.gsd is not None and not pd.isna(row.gsd) else None
        if config.target_gsd and gsd:
            rgb, mask, stalls = _resample(rgb, mask, stalls, gsd / config.target_gsd)
            gsd = config.target_gsd
        rows.extend(_write_tiles(lake, prefix, row, rgb, mask, stalls, gsd, config, class_counts))

    tiles = pd.DataFrame(rows)
    site_fold = split_sites(tiles.groupby("site").size().to_dict(), config.folds, config.holdout_fraction)
    tiles["fold"] = tiles["site"].map(site_fold).astype("int64")
    tiles["split"] = np.where(tiles["fold"] == HOLDOUT_FOLD, "holdout", "train")
    tiles = tiles[TILE_COLUMNS]
    n_folds = int(tiles.loc[tiles["fold"] >= 0, "fold"].max()) + 1 if (tiles["fold"] >= 0).any() else 0
    info = {
        "version": version,
        "created_at": utc_now(),
        "config": asdict(config),
        "n_images": len(raw),
        "n_tiles": len(tiles),
        "n_sites": int(tiles["site"].nunique()),
        "n_folds": n_folds,
        "sites_per_fold": {str(f): sorted(s for s, v in site_fold.items() if v == f) for f in range(n_folds)},
        "tiles_per_fold": {str(f): int((tiles["fold"] == f).sum()) for f in range(n_folds)},
        "holdout_sites": sorted(s for s, v in site_fold.items() if v == HOLDOUT_FOLD),
        "holdout_tiles": int((tiles["fold"] == HOLDOUT_FOLD).sum()),
        "class_pixel_counts": class_counts,
        "free_spaces": int(tiles["free_spaces"].sum()),
        "occupied_spaces": int(tiles["occupied_spaces"].sum()),
    }
    lake.write_parquet(f"{prefix}/manifest.parquet", tiles)
    # dataset.json marks the version complete; LATEST moves only after it
    lake.write_text(f"{prefix}/dataset.json", json.dumps(info, indent=2))
    lake.write_text(LATEST_KEY, version + "\n")
    log.info(
        "dataset written",
        extra={"version": version, "n_tiles": len(tiles), "n_images": len(raw), "holdout": info["holdout_sites"]},
    )
    return {"version": version, "created": True, "n_tiles": len(tiles), "n_images": len(raw)}
