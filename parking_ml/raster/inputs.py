"""Which rasters a `predict` argument names: a file, a folder (its rasters, sorted) or a glob."""

from __future__ import annotations

import glob
from datetime import UTC, datetime
from pathlib import Path

from parking_ml.raster.source import RasterInfo

RASTER_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".jp2", ".vrt")


class InputError(ValueError):
    """An argument that names no raster; the message says which and what to give."""


def is_raster_name(name: str) -> bool:
    return name.lower().endswith(RASTER_SUFFIXES)


def expand_inputs(args: list[str]) -> list[Path]:
    """Files in argument order (a folder's and a glob's sorted), each once."""
    found: list[Path] = []
    for arg in args:
        path = Path(arg).expanduser()
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            rasters = sorted(p for p in path.iterdir() if p.is_file() and is_raster_name(p.name))
            if not rasters:
                raise InputError(f"{arg}: folder holds no raster ({', '.join(RASTER_SUFFIXES)})")
            found.extend(rasters)
        else:
            # glob.glob, not Path.glob: the pattern may be absolute or hold ** anywhere
            matches = sorted(Path(m) for m in glob.glob(str(path), recursive=True) if Path(m).is_file())  # noqa: PTH207
            if not matches:
                raise InputError(f"{arg}: no such file or folder, and no file matches it as a glob")
            found.extend(matches)
    seen: set[Path] = set()
    return [p for p in found if not (p.resolve() in seen or seen.add(p.resolve()))]


def pass_time(info: RasterInfo, path: Path) -> datetime:
    """When the image was taken: its DateTime tag, else the file's modification time (UTC)."""
    if info.image_time is not None:
        return info.image_time
    return datetime.fromtimestamp(path.stat().st_mtime, tz=UTC).replace(microsecond=0)
