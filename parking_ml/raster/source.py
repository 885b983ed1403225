"""Reading a raster window by window (rasterio: GeoTIFF, COG, any GDAL format; 8/16-bit; nodata)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from parking_ml.data.images import _gsd, to_rgb8

# what rasterio takes as ``opener``: a callable like io.open, or an fsspec filesystem (needed for S3: rasterio
# probes a callable with size("test"), and s3fs's open() refuses a key-less path, "Opener is invalid")
Opener = Any


class RasterError(ValueError):
    """A raster that cannot be predicted on; the message names the file and the fix."""


@dataclass(frozen=True)
class RasterInfo:
    """What the outputs need of a raster, read from its header only."""

    name: str
    width: int
    height: int
    crs: str | None
    # affine.Affine of the pixel grid; None when the raster is not georeferenced (pixel coordinates out)
    transform: Any
    gsd: float | None
    image_time: datetime | None

    @property
    def georeferenced(self) -> bool:
        return self.transform is not None and bool(self.crs)


def _image_time(tags: dict[str, str]) -> datetime | None:
    # TIFF's DateTime tag ("YYYY:MM:DD HH:MM:SS"), taken as UTC: orthophoto producers write capture time there
    raw = tags.get("TIFFTAG_DATETIME") or tags.get("ACQUISITIONDATETIME")
    if not raw:
        return None
    for fmt in ("%Y:%m:%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"):
        with contextlib.suppress(ValueError):
            return datetime.strptime(raw.strip().removesuffix("Z"), fmt).replace(tzinfo=UTC)
    return None


@contextlib.contextmanager
def open_raster(path: str | Path, opener: Opener | None = None) -> Iterator[Any]:
    """A rasterio dataset; ``opener`` (an fsspec filesystem, e.g. the lake's ``fs``) reads from object stores
    in ranges, so an S3 raster is never downloaded whole."""
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        if opener:
            # no sidecar search on object stores: GDAL would list the raster's whole prefix at every open
            with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"):
                ds = rasterio.open(str(path), opener=opener)
        else:
            ds = rasterio.open(str(path))
    except RasterioIOError as exc:
        detail = str(exc)[:160]
        raise RasterError(f"{path}: not a readable raster ({detail}); give a GeoTIFF/COG, PNG or JPEG") from None
    try:
        if ds.count < 1:
            raise RasterError(f"{path}: has no bands")
        yield ds
    finally:
        ds.close()


def raster_info(ds: Any, name: str) -> RasterInfo:
    georef = ds.crs is not None and not ds.transform.is_identity
    return RasterInfo(
        name=name,
        width=int(ds.width),
        height=int(ds.height),
        crs=ds.crs.to_string() if georef else None,
        transform=ds.transform if georef else None,
        gsd=_gsd(ds),
        image_time=_image_time(ds.tags()),
    )


def read_rgb(ds: Any, row0: int, row1: int, col0: int, col1: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 H x W x 3 by the training images' fixed rule, bool H x W True where the pixel holds data) of
    a window. Nodata pixels (nodata value, alpha or internal mask) come back black."""
    from rasterio.windows import Window

    window = Window(col0, row0, col1 - col0, row1 - row0)
    bands = list(range(1, min(ds.count, 3) + 1))
    pixels = ds.read(bands, window=window)
    rgb = to_rgb8(np.moveaxis(pixels, 0, -1))
    valid = ds.read_masks(1, window=window) > 0
    if not valid.all():
        rgb[~valid] = 0
    return rgb, valid
