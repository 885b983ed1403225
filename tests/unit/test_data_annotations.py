"""Annotation readers: mask PNG, GeoJSON (pixel and map coordinates), COCO -> the mask contract."""

from __future__ import annotations

import json

import numpy as np
import pytest
from affine import Affine

from parking_ml.data.annotations import (
    AnnotationError,
    ImageGeo,
    Stall,
    annotation_kind,
    annotation_stem,
    rasterize,
    read_coco,
    read_geojson,
    read_label,
    read_mask,
    stalls_to_geojson,
)
from tests.fakes.landing import coco_bytes, geojson_bytes, png_bytes
from tests.fakes.scenes import scene


def test_kind_and_stem_from_name():
    assert annotation_kind("a/x.mask.png") == "mask"
    assert annotation_kind("x.GeoJSON") == "geojson"
    assert annotation_kind("x.json") == "coco"
    assert annotation_kind("x.png") is None
    assert annotation_stem("s/x.y.mask.png") == "x.y"
    assert annotation_stem("x.geojson") == "x"


def test_mask_ok_mismatch_and_bad_values():
    _, mask, _ = scene(64)
    np.testing.assert_array_equal(read_mask(png_bytes(mask), "m.mask.png", 64, 64), mask)
    with pytest.raises(AnnotationError) as err:
        read_mask(png_bytes(mask), "m.mask.png", 80, 64)
    assert err.value.code == "mask_size_mismatch" and "80x64" in err.value.message
    bad = mask.copy()
    bad[0, 0] = 7
    with pytest.raises(AnnotationError) as err:
        read_mask(png_bytes(bad), "m.mask.png", 64, 64)
    assert err.value.code == "bad_mask_values" and "[7]" in err.value.message


def test_geojson_pixel_to_mask_matches_painted_mask():
    _, mask, stalls = scene(128, seed=3)
    out = read_label(geojson_bytes(stalls), "x.geojson", "geojson", ImageGeo(128, 128))
    np.testing.assert_array_equal(out, mask)


def test_geojson_map_coordinates_via_transform_and_crs():
    _, mask, stalls = scene(128, seed=1)
    t = Affine(0.1, 0, 500000.0, 0, -0.1, 4500000.0)
    doc = json.loads(geojson_bytes(stalls))
    for f in doc["features"]:
        ring = f["geometry"]["coordinates"][0]
        f["geometry"]["coordinates"][0] = [list(t @ (x, y)) for x, y in ring]
    doc["coordinate_space"] = "map"
    doc["crs"] = "EPSG:32633"
    geo = ImageGeo(128, 128, t, "EPSG:32633")
    np.testing.assert_array_equal(read_label(json.dumps(doc).encode(), "m.geojson", "geojson", geo), mask)
    # no coordinate_space member: map coordinates are recognised on a georeferenced image
    del doc["coordinate_space"], doc["crs"]
    np.testing.assert_array_equal(read_label(json.dumps(doc).encode(), "m.geojson", "geojson", geo), mask)
    # same stalls in lon/lat are reprojected to the image CRS first
    from rasterio.warp import transform as warp

    for f in doc["features"]:
        ring = np.asarray(f["geometry"]["coordinates"][0])
        lon, lat = warp("EPSG:32633", "EPSG:4326", ring[:, 0].tolist(), ring[:, 1].tolist())
        f["geometry"]["coordinates"][0] = [list(p) for p in zip(lon, lat, strict=True)]
    doc.update(coordinate_space="map", crs={"type": "name", "properties": {"name": "EPSG:4326"}})
    out = read_label(json.dumps(doc).encode(), "ll.geojson", "geojson", geo)
    assert (out == mask).mean() > 0.999
    with pytest.raises(AnnotationError) as err:
        read_geojson(json.dumps(doc).encode(), "ll.geojson", ImageGeo(128, 128))
    assert err.value.code == "no_georeference"


def test_polygon_outside_and_bad_geometry():
    _, _, stalls = scene(128)
    far = [{"rect": (500, 500, 520, 540), "status": "free"}, *stalls]
    with pytest.raises(AnnotationError) as err:
        read_geojson(geojson_bytes(far), "far.geojson", ImageGeo(128, 128))
    assert err.value.code == "polygon_outside" and "1 of" in err.value.message
    doc = json.loads(geojson_bytes(stalls))
    doc["features"][0]["properties"]["status"] = "maybe"
    with pytest.raises(AnnotationError) as err:
        read_geojson(json.dumps(doc).encode(), "s.geojson", ImageGeo(128, 128))
    assert err.value.code == "bad_geometry" and "'maybe'" in err.value.message
    with pytest.raises(AnnotationError) as err:
        read_geojson(b"{not json", "j.geojson", ImageGeo(128, 128))
    assert err.value.code == "bad_json"


def test_coco_polygons_bbox_and_categories():
    _, mask, stalls = scene(128, seed=2)
    geo = ImageGeo(128, 128)
    np.testing.assert_array_equal(read_label(coco_bytes(stalls, "a.png", (128, 128)), "a.json", "coco", geo), mask)
    bbox = coco_bytes(stalls, "a.png", (128, 128), bbox_only=True)
    np.testing.assert_array_equal(read_label(bbox, "a.json", "coco", geo, "a.png"), mask)
    doc = json.loads(coco_bytes(stalls, "a.png", (128, 128)))
    doc["images"].append({"id": 8, "file_name": "b.png", "width": 128, "height": 128})
    doc["annotations"].append({"id": 99, "image_id": 8, "category_id": 1, "bbox": [0, 0, 5, 5]})
    only_a = read_coco(json.dumps(doc).encode(), "all.json", geo, "site/a.png")
    assert len(only_a) == len(stalls)
    assert len(read_coco(json.dumps(doc).encode(), "all.json", geo, "b.png")) == 1
    with pytest.raises(AnnotationError, match="none is named"):
        read_coco(json.dumps(doc).encode(), "all.json", geo, "c.png")
    doc["categories"][0]["name"] = "car"
    with pytest.raises(AnnotationError) as err:
        read_coco(json.dumps(doc).encode(), "all.json", geo, "a.png")
    assert err.value.code == "unknown_category" and "free_space" in err.value.message


def test_json_that_is_geojson_is_read_as_geojson():
    _, mask, stalls = scene(64, seed=4)
    np.testing.assert_array_equal(read_label(geojson_bytes(stalls), "x.json", "coco", ImageGeo(64, 64)), mask)


def test_rasterize_file_order_ignore_and_geojson_export_roundtrip():
    a = Stall(np.array([[0, 0], [9, 0], [9, 9], [0, 9]], float), "free")
    b = Stall(np.array([[5, 5], [14, 5], [14, 14], [5, 14]], float), "occupied")
    c = Stall(np.array([[16, 16], [19, 16], [19, 19]], float), "free", ignore=True)
    m = rasterize([a, b, c], 20, 20)
    assert m[7, 7] == 2 and m[0, 0] == 1 and m[14, 14] == 2 and m[15, 15] == 0 and m[17, 18] == 255
    assert rasterize([b, a], 20, 20)[7, 7] == 1  # later wins
    doc = stalls_to_geojson([a, b, c], offset=(5, 5))
    back = read_geojson(json.dumps(doc).encode(), "t.geojson", ImageGeo(20, 20))
    assert back[0].polygon[0].tolist() == [-5.0, -5.0] and back[1].status == "occupied" and back[2].ignore


@pytest.mark.parametrize("geotiff", [False, True])
def test_geojson_to_mask_equals_generator_mask(tmp_path, geotiff):
    from parking_ml.data.images import read_image
    from parking_ml.synth import generate_dataset

    paths = generate_dataset(tmp_path, n=3, seed=5, size=160, sites=2, geotiff=geotiff, progress=False)
    assert paths
    for image_path in paths:
        stem = image_path.name.rsplit(".", 1)[0]
        image = read_image(image_path.read_bytes(), image_path.name)
        geo = ImageGeo(image.width, image.height, image.transform, image.crs)
        want = read_mask((image_path.parent / f"{stem}.mask.png").read_bytes(), "m", image.width, image.height)
        data = (image_path.parent / f"{stem}.geojson").read_bytes()
        got = read_label(data, f"{stem}.geojson", "geojson", geo)
        np.testing.assert_array_equal(got, want)
        assert set(np.unique(want).tolist()) & {1, 2}  # the tile has labelled stalls
