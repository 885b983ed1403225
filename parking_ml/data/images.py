"""Image bytes -> RGB pixels (+ georeference), shared by ingest, preprocess and the API.

The format is told by magic bytes, never by the file name, and the pixel count is read from the header
before anything is decoded, so a tiny file that claims 100k x 100k pixels (a decompression bomb) is refused
without allocating memory.

Conversion to 8-bit RGB is one fixed rule, identical for training and serving:
  * 8-bit: as is.  16-bit: ``round(v / 257)`` (maps 0..65535 onto 0..255 exactly, so an 8-bit image stored
    as 16-bit by ``v * 257`` comes back unchanged). No per-image stretching: the same scene gives the same
    pixels however it is cropped.  Float: values <= 1.0 everywhere are scaled by 255, others clipped
    to 0..255.
  * 1 band: grey copied to R, G and B.  2 bands: grey + alpha, alpha dropped.  3 bands: RGB.  4+ bands:
    the first three (RGB; alpha or NIR dropped). Alpha is dropped, not composited.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Format = Literal["png", "jpeg", "tiff"]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both byte orders
EXTENSIONS: dict[str, str] = {"png": "png", "jpeg": "jpg", "tiff": "tif"}
ACCEPTED = "PNG, JPEG or (Geo)TIFF"

# JPEG start-of-frame markers carry the size; C4 (DHT), C8 (JPG), CC (DAC) share the range but are not SOFs
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PNG_BANDS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}


class ImageError(ValueError):
    """An image that cannot be used; ``code`` is machine-readable, the message names the file and the fix.

    Codes: empty, unsupported_type, corrupt, too_large, too_small.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ImageInfo:
    format: Format
    width: int
    height: int
    bands: int

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.format]


@dataclass(frozen=True)
class RasterImage:
    rgb: np.ndarray  # uint8, H x W x 3
    crs: str | None = None
    transform: Any = None  # affine.Affine when georeferenced
    gsd: float | None = None  # metres per pixel when known

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])


def _label(name: str) -> str:
    return f"'{name}'" if name else "the image"


def sniff_format(data: bytes) -> Format | None:
    """The image format from magic bytes, or None."""
    if data.startswith(PNG_MAGIC):
        return "png"
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    if data[:4] in TIFF_MAGICS:
        return "tiff"
    return None


def _corrupt(name: str, detail: str) -> ImageError:
    return ImageError(
        "corrupt",
        f"{_label(name)} is truncated or corrupt ({detail}); re-export or re-download the file and upload it again",
    )


def _probe_png(data: bytes, name: str) -> ImageInfo:
    # signature, then the IHDR chunk must come first: length(4) 'IHDR' width(4) height(4) depth(1) colour(1)
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise _corrupt(name, "PNG header missing")
    width, height, _depth, colour = struct.unpack(">IIBB", data[16:26])
    if colour not in _PNG_BANDS:
        raise _corrupt(name, f"unknown PNG colour type {colour}")
    return ImageInfo("png", width, height, _PNG_BANDS[colour])


def _jpeg_walk(data: bytes, name: str) -> tuple[ImageInfo | None, int]:
    """(frame info, offset of the first top-level start-of-scan or -1), walking the marker segments."""
    info: ImageInfo | None = None
    pos, n = 2, len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            raise _corrupt(name, f"bad JPEG marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _JPEG_SOF and info is None:
            if pos + 10 > n:
                break
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            info = ImageInfo("jpeg", width, height, data[pos + 9])
        if marker == 0xDA:
            return info, pos
        pos += 2 + length
    return info, -1


def _probe_jpeg(data: bytes, name: str) -> ImageInfo:
    info, _ = _jpeg_walk(data, name)
    if info is None:
        raise _corrupt(name, "JPEG frame header not found")
    return info


def _open_tiff(data: bytes, name: str) -> Any:
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioError
    from rasterio.io import MemoryFile

    try:
        with (
            rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"),
            warnings.catch_warnings(),
        ):
            # plain (non-geo) TIFFs are fine: georeference is optional
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            memfile = MemoryFile(data, ext=".tif")
            # only the GTiff driver: bytes that merely start like a TIFF never reach another GDAL driver
            return memfile, memfile.open(driver="GTiff")
    except (RasterioError, OSError, ValueError) as exc:
        raise _corrupt(name, f"TIFF header unreadable: {str(exc)[:160]}") from None


def _probe_tiff(data: bytes, name: str) -> ImageInfo:
    # GDAL opening a dataset reads only the IFD (header): no pixels are decoded here
    memfile, ds = _open_tiff(data, name)
    try:
        return ImageInfo("tiff", int(ds.width), int(ds.height), int(ds.count))
    finally:
        ds.close()
        memfile.close()


def probe_image(data: bytes, name: str = "") -> ImageInfo:
    """Format, size and bands from the header only; raises ImageError (empty, unsupported_type, corrupt)."""
    if not data:
        raise ImageError("empty", f"{_label(name)} is empty (0 bytes); upload the image file itself")
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageError(
            "unsupported_type",
            f"{_label(name)} is not a {ACCEPTED} image (unrecognised file signature); "
            f"convert it to PNG, JPEG or GeoTIFF",
        )
    info = {"png": _probe_png, "jpeg": _probe_jpeg, "tiff": _probe_tiff}[fmt](data, name)
    if info.width <= 0 or info.height <= 0 or info.bands <= 0:
        raise _corrupt(name, f"header says {info.width}x{info.height} px, {info.bands} bands")
    return info


def check_size(info: ImageInfo, name: str = "", max_pixels: int | None = None, min_side: int | None = None) -> None:
    """Raise too_large / too_small from the header's size (before decoding)."""
    if max_pixels is not None and info.pixels > max_pixels:
        raise ImageError(
            "too_large",
            f"{_label(name)} is {info.width}x{info.height} px ({info.pixels:,} pixels), above the limit of "
            f"{max_pixels:,}; split it into smaller tiles (e.g. gdal_retile.py) or raise PARKING_MAX_PIXELS",
        )
    if min_side is not None and min(info.width, info.height) < min_side:
        raise ImageError(
            "too_small",
            f"{_label(name)} is {info.width}x{info.height} px; each side must be at least {min_side} px, "
            f"send a larger crop around the parking area",
        )


def to_rgb8(pixels: np.ndarray) -> np.ndarray:
    """H x W x B array of any supported dtype -> uint8 H x W x 3 by the module's fixed rule."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.dtype == np.uint8:
        out = pixels
    elif pixels.dtype == np.uint16:
        out = ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif np.issubdtype(pixels.dtype, np.floating):
        arr = np.nan_to_num(pixels.astype(np.float32))
        if arr.size and float(arr.max()) <= 1.0:
            arr = arr * 255.0
        out = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    elif np.issubdtype(pixels.dtype, np.integer):
        out = np.clip(pixels, 0, 255).astype(np.uint8)
    else:
        raise TypeError(f"unsupported pixel type {pixels.dtype}")
    bands = out.shape[2]
    if bands in (1, 2):
        out = np.repeat(out[:, :, :1], 3, axis=2)
    elif bands >= 3:
        out = out[:, :, :3]
    return np.ascontiguousarray(out)


def _decode_cv2(data: bytes, info: ImageInfo, name: str) -> np.ndarray:
    import cv2

    # truncated files: libpng/libjpeg may still hand back a partly grey image, so check the end markers first
    if info.format == "png" and data.rfind(b"IEND") < 0:
        raise _corrupt(name, "PNG end chunk missing")
    if info.format == "jpeg":
        # entropy-coded data cannot contain FFD9 (byte stuffing), so an end marker after the scan start
        # means the file is whole; an EXIF thumbnail's end marker sits before it
        _, scan = _jpeg_walk(data, name)
        if scan < 0 or data.rfind(b"\xff\xd9") < scan:
            raise _corrupt(name, "JPEG end marker missing")
    if info.format == "png" and data[24:26] == b"\x08\x02" and info.pixels <= GDAL_PNG_MAX_PIXELS:
        # 8-bit RGB (IHDR bit depth 8, colour type 2), the usual upload
        return _decode_rgb8_png(data, info, name)
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.shape[0] != info.height or arr.shape[1] != info.width:
        raise _corrupt(name, f"{info.format.upper()} data could not be decoded")
    if arr.ndim == 3:
        # OpenCV hands back BGR / BGRA; its own swap is several times faster than a strided numpy copy
        arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2RGBA if arr.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return to_rgb8(arr)


# GDAL holds the inflated image, its bands and our interleaved copy at once: beyond this many pixels (50 MB of RGB)
# OpenCV's lower peak is worth more than GDAL's speed
GDAL_PNG_MAX_PIXELS = 4096 * 4096


def _decode_rgb8_png(data: bytes, info: ImageInfo, name: str) -> np.ndarray:
    """An 8-bit RGB PNG through GDAL's PNG driver, which inflates with libdeflate: about half the time of OpenCV's
    libpng on the system zlib, the same pixels (docs/experiments/request-path.md)."""
    import warnings

    import cv2
    from rasterio.errors import NotGeoreferencedWarning, RasterioError
    from rasterio.io import MemoryFile

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            # only the PNG driver: the header has said what this is
            with MemoryFile(data, ext=".png") as memfile, memfile.open(driver="PNG") as ds:
                bands = ds.read()
    except (RasterioError, OSError, ValueError):
        raise _corrupt(name, "PNG data could not be decoded") from None
    if bands.shape != (3, info.height, info.width) or bands.dtype != np.uint8:
        raise _corrupt(name, "PNG data could not be decoded")
    return cv2.merge(list(bands))


def _gsd(ds: Any) -> float | None:
    if ds.crs is None or ds.transform.is_identity:
        return None
    res = (abs(ds.transform.a) + abs(ds.transform.e)) / 2.0
    if ds.crs.is_projected:
        factor = ds.crs.linear_units_factor[1] if ds.crs.linear_units_factor else 1.0
        return float(res * factor)
    if ds.crs.is_geographic:
        # degrees -> metres at the image centre (good to well under 1% at parking-lot scale)
        lat = (ds.bounds.top + ds.bounds.bottom) / 2.0
        return float(res * 111_320.0 * max(np.cos(np.radians(lat)), 1e-6))
    return None


def _decode_tiff(data: bytes, name: str) -> RasterImage:
    from rasterio.errors import RasterioError

    memfile, ds = _open_tiff(data, name)
    try:
        try:
            pixels = ds.read()  # B x H x W
        except (RasterioError, OSError, ValueError) as exc:
            raise _corrupt(name, f"TIFF pixel data unreadable: {str(exc)[:160]}") from None
        georef = ds.crs is not None and not ds.transform.is_identity
        return RasterImage(
            rgb=to_rgb8(np.moveaxis(pixels, 0, -1)),
            crs=ds.crs.to_string() if georef else None,
            transform=ds.transform if georef else None,
            gsd=_gsd(ds),
        )
    finally:
        ds.close()
        memfile.close()


def read_image(data: bytes, name: str = "", max_pixels: int | None = None, min_side: int | None = None) -> RasterImage:
    """Decode PNG / JPEG / (Geo)TIFF bytes to 8-bit RGB; size limits are checked on the header first."""
    info = probe_image(data, name)
    check_size(info, name, max_pixels=max_pixels, min_side=min_side)
    if info.format == "tiff":
        image = _decode_tiff(data, name)
    else:
        image = RasterImage(rgb=_decode_cv2(data, info, name))
    if image.rgb.shape[:2] != (info.height, info.width):
        raise _corrupt(name, "decoded size differs from the header")
    return image


def encode_png(array: np.ndarray) -> bytes:
    """uint8 RGB (H x W x 3) or single-channel (H x W) array -> PNG bytes."""
    import cv2

    arr = array[:, :, ::-1] if array.ndim == 3 else array
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr))
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def decode_mask_png(data: bytes, name: str = "") -> np.ndarray:
    """Single-channel uint8 PNG mask -> H x W uint8 (a grey+alpha or RGB mask uses its first channel)."""
    import cv2

    info = probe_image(data, name)
    if info.format != "png":
        raise ImageError("unsupported_type", f"mask {_label(name)} must be a PNG, found {info.format.upper()}")
    if data.rfind(b"IEND") < 0:
        raise _corrupt(name, "PNG end chunk missing")
    if info.bands == 3 and data[25] == 3:
        # palette PNG (VOC-style masks): the class ids are the palette indices, which OpenCV would
        # expand to colours; Pillow (already in the dependency tree) keeps the indices
        import io

        from PIL import Image

        try:
            with Image.open(io.BytesIO(data)) as im:
                return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))
        except (OSError, ValueError) as exc:
            raise _corrupt(name, f"mask PNG could not be decoded: {exc}") from None
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise _corrupt(name, "mask PNG could not be decoded")
    if arr.dtype != np.uint8:
        raise ImageError("bad_mask", f"mask {_label(name)} must be 8-bit; save it as uint8 (0/1/2/255)")
    if arr.ndim == 3:
        # palette/RGB masks are decoded as BGR; all channels carry the same class id in a grey-saved mask
        arr = arr[:, :, 0]
    return np.ascontiguousarray(arr)
