"""Image probing and decoding: formats by magic bytes, bit depths, bands, corrupt files, bombs."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile

from parking_ml.data.images import (
    ImageError,
    decode_mask_png,
    encode_png,
    probe_image,
    read_image,
    to_rgb8,
)

pytestmark = pytest.mark.filterwarnings("ignore", category=NotGeoreferencedWarning)


def _rgb(h: int = 40, w: int = 56, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png(arr: np.ndarray) -> bytes:
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = arr[:, :, ::-1]
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, [2, 1, 0, 3]]
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr))
    assert ok
    return buf.tobytes()


def _tiff(bands_hwb: np.ndarray, crs: str | None = None, transform: Affine | None = None) -> bytes:
    arr = np.moveaxis(bands_hwb if bands_hwb.ndim == 3 else bands_hwb[:, :, None], -1, 0)
    profile = {
        "driver": "GTiff",
        "width": arr.shape[2],
        "height": arr.shape[1],
        "count": arr.shape[0],
        "dtype": arr.dtype.name,
    }
    if crs:
        profile.update(crs=crs, transform=transform)
    with MemoryFile() as mem:
        with mem.open(**profile) as ds:
            ds.write(arr)
        return mem.read()


def _bomb_png(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    idat = zlib.compress(b"\x00" * 1000)
    idat_chunk = struct.pack(">I", len(idat)) + b"IDAT" + idat + struct.pack(">I", zlib.crc32(b"IDAT" + idat))
    iend = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    return b"\x89PNG\r\n\x1a\n" + chunk + idat_chunk + iend


def test_png_roundtrip_and_probe():
    arr = _rgb()
    data = _png(arr)
    info = probe_image(data, "a.png")
    assert (info.format, info.width, info.height, info.bands) == ("png", 56, 40, 3)
    img = read_image(data, "a.png")
    assert img.rgb.dtype == np.uint8 and img.rgb.shape == (40, 56, 3)
    np.testing.assert_array_equal(img.rgb, arr)
    assert img.crs is None and img.transform is None and img.gsd is None


def test_format_from_magic_bytes_not_name():
    data = _png(_rgb())
    assert probe_image(data, "photo.jpg").format == "png"
    _ok, jpg = cv2.imencode(".jpg", _rgb()[:, :, ::-1])
    assert probe_image(jpg.tobytes(), "x.png").format == "jpeg"


def test_jpeg_read_close_to_source():
    arr = np.full((64, 80, 3), (200, 40, 90), np.uint8)
    _ok, jpg = cv2.imencode(".jpg", arr[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    img = read_image(jpg.tobytes(), "x.jpg")
    assert img.rgb.shape == (64, 80, 3)
    assert np.abs(img.rgb.astype(int) - arr.astype(int)).max() <= 3  # RGB order kept


def _opencv_rgb(data: bytes) -> np.ndarray:
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB if arr.shape[2] == 3 else cv2.COLOR_BGRA2RGB)


def test_rgb8_png_through_gdal_has_opencvs_pixels(monkeypatch):
    import io

    from PIL import Image

    import parking_ml.data.images as images

    arr = _rgb(333, 517, seed=3)
    plain = _png(arr)
    # a colour-key transparency chunk (tRNS): OpenCV adds an alpha channel for it, GDAL a nodata value
    keyed = io.BytesIO()
    Image.fromarray(arr).save(keyed, format="PNG", transparency=tuple(int(v) for v in arr[0, 0]), compress_level=9)
    for data in (plain, keyed.getvalue()):
        assert data[24:26] == b"\x08\x02"  # 8-bit RGB: GDAL's path
        np.testing.assert_array_equal(read_image(data, "a.png").rgb, _opencv_rgb(data))
    # a larger image than GDAL_PNG_MAX_PIXELS goes through OpenCV, with the same pixels
    monkeypatch.setattr(images, "GDAL_PNG_MAX_PIXELS", 1000)
    np.testing.assert_array_equal(read_image(plain, "a.png").rgb, arr)


def test_rgb8_png_with_broken_image_data_is_corrupt():
    data = bytearray(_png(_rgb(120, 160)))
    start = data.index(b"IDAT") - 4
    length = struct.unpack(">I", data[start : start + 4])[0]
    data[start + 8 + length // 2] ^= 0xFF  # one byte of the deflate stream, its chunk's CRC made right again
    data[start + 8 + length : start + 12 + length] = struct.pack(
        ">I", zlib.crc32(bytes(data[start + 4 : start + 8 + length]))
    )
    with pytest.raises(ImageError) as err:
        read_image(bytes(data), "broken.png")
    assert err.value.code == "corrupt" and "broken.png" in err.value.message


def test_png_rgba_grey_and_16bit():
    arr = _rgb()
    rgba = np.dstack([arr, np.full(arr.shape[:2], 7, np.uint8)])
    np.testing.assert_array_equal(read_image(_png(rgba)).rgb, arr)
    grey = arr[:, :, 0]
    out = read_image(_png(grey)).rgb
    assert out.shape == (40, 56, 3)
    np.testing.assert_array_equal(out[:, :, 1], grey)
    sixteen = arr.astype(np.uint16) * 257
    np.testing.assert_array_equal(read_image(_png(sixteen)).rgb, arr)


def test_tiff_16bit_rgba_grey_and_georef():
    arr = _rgb(64, 72)
    t = Affine(0.1, 0, 500000.0, 0, -0.1, 4500000.0)
    g16 = _tiff(arr.astype(np.uint16) * 257, crs="EPSG:32633", transform=t)
    img = read_image(g16, "g.tif")
    np.testing.assert_array_equal(img.rgb, arr)
    assert img.crs == "EPSG:32633"
    assert img.transform == t
    assert img.gsd == pytest.approx(0.1)
    rgba = _tiff(np.dstack([arr, np.full(arr.shape[:2], 255, np.uint8)]))
    info = probe_image(rgba)
    assert (info.format, info.bands) == ("tiff", 4)
    out = read_image(rgba)
    np.testing.assert_array_equal(out.rgb, arr)
    assert out.crs is None and out.gsd is None
    grey = read_image(_tiff(arr[:, :, 1])).rgb
    np.testing.assert_array_equal(grey[:, :, 0], arr[:, :, 1])
    np.testing.assert_array_equal(grey[:, :, 2], arr[:, :, 1])


def test_16bit_rule_is_fixed_not_a_stretch():
    # a dark 16-bit image must stay dark (no per-image stretch), full range maps to 0..255
    dark = np.full((8, 8, 3), 1000, np.uint16)
    assert to_rgb8(dark).max() == round(1000 / 257)
    full = np.array([[[0, 65535, 32896]]], np.uint16)
    assert to_rgb8(full).tolist() == [[[0, 255, 128]]]


def test_geographic_crs_gsd_in_metres():
    arr = _rgb(64, 64)
    deg = 0.1 / 111_320.0
    t = Affine(deg, 0, 10.0, 0, -deg, 0.0)  # at the equator
    img = read_image(_tiff(arr, crs="EPSG:4326", transform=t))
    assert img.gsd == pytest.approx(0.1, rel=1e-3)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty"),
        (b"GIF89a" + b"\x00" * 100, "unsupported_type"),
        (b"just some text, not an image", "unsupported_type"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 4, "corrupt"),
    ],
)
def test_bad_bytes(data, code):
    with pytest.raises(ImageError) as err:
        read_image(data, "bad.png")
    assert err.value.code == code
    assert "bad.png" in err.value.message


def test_truncated_png_jpeg_tiff_are_corrupt():
    png = _png(_rgb(100, 100))
    _ok, jpg = cv2.imencode(".jpg", _rgb(100, 100))
    tif = _tiff(_rgb(100, 100))
    for data in (png[: len(png) // 2], jpg.tobytes()[: len(jpg) // 2], tif[: len(tif) // 2]):
        with pytest.raises(ImageError) as err:
            read_image(data, "cut.img")
        assert err.value.code == "corrupt"
        assert "re-export" in err.value.message


def test_decompression_bomb_refused_before_decoding(monkeypatch):
    bomb = _bomb_png(100_000, 100_000)
    assert len(bomb) < 200
    info = probe_image(bomb)
    assert (info.width, info.height) == (100_000, 100_000)

    def never(*a, **k):
        raise AssertionError("decoder must not run for a too-large image")

    monkeypatch.setattr(cv2, "imdecode", never)
    with pytest.raises(ImageError) as err:
        read_image(bomb, "bomb.png", max_pixels=100_000_000)
    assert err.value.code == "too_large"
    assert "bomb.png" in err.value.message and "PARKING_MAX_PIXELS" in err.value.message


def test_tiff_bomb_refused_before_decoding():
    # a huge, sparse (all-empty) tiled GeoTIFF: tiny file, header claims 10^10 pixels
    with MemoryFile() as mem:
        with mem.open(
            driver="GTiff",
            width=100_000,
            height=100_000,
            count=3,
            dtype="uint8",
            tiled=True,
            sparse_ok=True,
            compress="deflate",
        ):
            pass
        data = mem.read()
    assert len(data) < 5_000_000
    with pytest.raises(ImageError) as err:
        read_image(data, "bomb.tif", max_pixels=50_000_000)
    assert err.value.code == "too_large"


def test_too_small():
    with pytest.raises(ImageError) as err:
        read_image(_png(_rgb(32, 200)), "small.png", min_side=64)
    assert err.value.code == "too_small"


def test_mask_png_roundtrip_and_palette():
    mask = np.random.default_rng(1).choice(np.array([0, 1, 2, 255], np.uint8), (30, 20))
    np.testing.assert_array_equal(decode_mask_png(encode_png(mask)), mask)
    from io import BytesIO

    from PIL import Image

    im = Image.fromarray(mask, mode="P")
    im.putpalette([0, 0, 0, 0, 255, 0, 255, 0, 0] + [9, 9, 9] * 253)
    buf = BytesIO()
    im.save(buf, format="PNG")
    np.testing.assert_array_equal(decode_mask_png(buf.getvalue()), mask)


def test_rasterio_env_left_clean():
    # reading must not leave GDAL datasets open in /vsimem
    read_image(_tiff(_rgb()))
    assert rasterio.env.hasenv() is False
