"""Looking at generated data: a contact sheet of images beside their masks, and a GeoJSON label read back as a mask."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from parking_ml.synth.dataset import FREE, IGNORE, OCCUPIED, SyntheticTile, atomic_write, png_bytes, rasterise

_OVERLAY = {FREE: (40, 220, 60), OCCUPIED: (230, 40, 40), IGNORE: (240, 220, 30)}


def overlay_mask(image: np.ndarray, mask: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    out = image.astype(np.float32)
    for value, colour in _OVERLAY.items():
        sel = mask == value
        out[sel] = out[sel] * (1 - alpha) + np.array(colour, np.float32) * alpha
    return np.clip(out, 0, 255).astype(np.uint8)


def _read_pair(path: Path) -> tuple[np.ndarray, np.ndarray]:
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        import rasterio

        with rasterio.open(path) as ds:
            image = np.moveaxis(ds.read(), 0, 2)[..., :3]
    else:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1]
    mask_path = path.with_name(path.name[: -len(path.suffix)] + ".mask.png")
    mask = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise FileNotFoundError(f"{mask_path}: mask missing next to {path.name}")
    return np.ascontiguousarray(image), mask


def render_contact_sheet(
    tiles_or_paths: Iterable[SyntheticTile | Path | str], out_png: Path, cols: int = 3, cell: int = 320
) -> Path:
    """A grid of (image | mask overlay) pairs, ``cols`` pairs per row, each cell ``cell`` px wide."""
    pairs = []
    for item in tiles_or_paths:
        if isinstance(item, SyntheticTile):
            image, mask = item.image, item.mask
        else:
            image, mask = _read_pair(Path(item))
        over = overlay_mask(image, mask)
        a = cv2.resize(image, (cell, cell), interpolation=cv2.INTER_AREA)
        b = cv2.resize(over, (cell, cell), interpolation=cv2.INTER_NEAREST)
        pairs.append(np.concatenate([a, np.full((cell, 4, 3), 255, np.uint8), b], axis=1))
    if not pairs:
        raise ValueError("contact sheet needs at least one tile")
    rows = math.ceil(len(pairs) / cols)
    pw = pairs[0].shape[1]
    sheet = np.full((rows * (cell + 8), cols * (pw + 12), 3), 255, np.uint8)
    for i, pair in enumerate(pairs):
        r, c = divmod(i, cols)
        sheet[r * (cell + 8) : r * (cell + 8) + cell, c * (pw + 12) : c * (pw + 12) + pw] = pair
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out_png, png_bytes(sheet))
    return out_png


def read_geojson_mask(path: Path, size: int, transform=None) -> np.ndarray:
    """Rebuild a mask from a GeoJSON written here (used by tests and as a reference for readers)."""
    data = json.loads(Path(path).read_text())
    polys, labels = [], []
    for f in data["features"]:
        ring = np.array(f["geometry"]["coordinates"][0][:-1], np.float64)
        if data.get("coordinate_space") == "map":
            inv = ~transform
            ring = np.array([inv @ (x, y) for x, y in ring])
        polys.append(np.round(ring))
        labels.append(int(f["properties"]["label"]))
    return rasterise(size, polys, labels)
