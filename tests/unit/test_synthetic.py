"""Synthetic generator: determinism, the mask contract, sites/passes, styles, CLI layout and GeoTIFF output."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from parking_ml.cli import app
from parking_ml.cli.synth import parse_gsd
from parking_ml.synth import (
    STYLES,
    SiteRenderer,
    generate_dataset,
    generate_tile,
    read_geojson_mask,
    render_contact_sheet,
)
from parking_ml.synth.dataset import rasterise
from parking_ml.synth.ground import render_static

FREE, OCCUPIED, IGNORE = 1, 2, 255


def _components(binary: np.ndarray) -> int:
    count, _ = cv2.connectedComponents(binary.astype(np.uint8), connectivity=8)
    return count - 1


def _tiles(n: int = 8, size: int = 160) -> list:
    # mixed resolutions and styles, small tiles: many stalls per tile at coarse gsd, few at fine gsd
    gsds = [0.08, 0.1, 0.15, 0.22, 0.3]
    return [generate_tile(seed, size, gsds[seed % len(gsds)], STYLES[seed % len(STYLES)]) for seed in range(n)]


@pytest.fixture(scope="module")
def tiles() -> list:
    return _tiles()


def test_same_seed_same_tile_and_other_seed_differs() -> None:
    a = generate_tile(11, 128, 0.15)
    b = generate_tile(11, 128, 0.15)
    c = generate_tile(12, 128, 0.15)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert [p.tolist() for p, _ in a.stalls] == [p.tolist() for p, _ in b.stalls]
    assert not np.array_equal(a.image, c.image)


def test_generator_argument_is_consumed_deterministically() -> None:
    a = generate_tile(np.random.default_rng(5), 96, 0.2)
    b = generate_tile(np.random.default_rng(5), 96, 0.2)
    assert np.array_equal(a.image, b.image)


def test_mask_values_and_dtypes(tiles: list) -> None:
    for t in tiles:
        assert t.image.dtype == np.uint8 and t.image.shape == (160, 160, 3)
        assert t.mask.dtype == np.uint8 and t.mask.shape == (160, 160)
        assert set(np.unique(t.mask).tolist()) <= {0, FREE, OCCUPIED, IGNORE}
        assert all(status in ("free", "occupied") for _, status in t.stalls)
        assert len(t.labels) == len(t.stalls)


def test_components_count_stalls(tiles: list) -> None:
    checked = 0
    for t in tiles:
        drawn = [
            (poly, label)
            for (poly, _), label in zip(t.stalls, t.labels, strict=True)
            if rasterise(t.mask.shape[0], [poly], [1]).any()
        ]
        free = sum(1 for _, label in drawn if label == FREE)
        occupied = sum(1 for _, label in drawn if label == OCCUPIED)
        assert _components(t.mask == FREE) == free
        assert _components(t.mask == OCCUPIED) == occupied
        # stalls never touch, whatever their class: one component per drawn stall
        assert _components(t.mask > 0) == len(drawn)
        checked += free + occupied
    assert checked > 100  # the sample really exercised many stalls


def test_labels_follow_status_and_mask_is_the_documented_rasterisation(tiles: list) -> None:
    for t in tiles:
        for (_, status), label in zip(t.stalls, t.labels, strict=True):
            assert label == IGNORE or label == (FREE if status == "free" else OCCUPIED)
        polys = [np.round(p) for p, _ in t.stalls]
        assert all(np.array_equal(p, q) for p, (q, _) in zip(polys, t.stalls, strict=True))  # integer vertices
        assert np.array_equal(rasterise(t.mask.shape[0], polys, t.labels), t.mask)


def test_partial_stalls_at_the_edge_are_ignored_or_counted() -> None:
    # coarse gsd: many stalls cut by the tile edge
    slivers = partial = 0
    for seed in range(6):
        t = generate_tile(seed, 128, 0.3)
        size = t.mask.shape[0]
        rows = zip(t.stalls, t.labels, t.extras["ignore_reason"], t.extras["inside_share"], strict=True)
        for (poly, _), label, reason, share in rows:
            assert poly.min() >= 0 and poly.max() <= size - 1  # clipped to the pixel grid
            if share < 0.3:
                assert label == IGNORE and reason == "edge"
                slivers += 1
            else:
                # a mostly-inside stall is ignored only when tree canopy or faint paint hides it
                assert (label == IGNORE) == (reason in ("canopy", "faint"))
                partial += share < 1.0 and label != IGNORE
    assert slivers > 0 and partial > 0


def test_occupancy_varies_across_a_dataset() -> None:
    rates = []
    for site in range(10):
        sr = SiteRenderer(3, site, 128, 0.25, f"site-{site:04d}")
        for p in range(3):
            t = sr.render(p)
            labelled = [label for label in t.labels if label != IGNORE]
            if len(labelled) >= 5:
                rates.append(sum(label == OCCUPIED for label in labelled) / len(labelled))
    assert len(rates) >= 15
    assert min(rates) < 0.15 and max(rates) > 0.85
    assert np.std(rates) > 0.2


def test_passes_share_the_site_geometry_but_not_the_cars() -> None:
    sr = SiteRenderer(9, 0, 128, 0.2, "site-0000")
    a, b = sr.render(0), sr.render(1)
    assert [p.tolist() for p, _ in a.stalls] == [p.tolist() for p, _ in b.stalls]
    assert a.gsd == b.gsd
    assert not np.array_equal(a.image, b.image)
    assert [s for _, s in a.stalls] != [s for _, s in b.stalls] or a.sun_azimuth_deg != b.sun_azimuth_deg


def test_every_style_runs_and_dusk_is_darker() -> None:
    images = {style: SiteRenderer(4, 0, 128, 0.12, "s").render(0, style).image for style in STYLES}
    for img in images.values():
        assert img.shape == (128, 128, 3) and img.dtype == np.uint8
    assert images["dusk"].mean() < images["default"].mean() * 0.8
    assert len({img.tobytes() for img in images.values()}) == len(STYLES)
    with pytest.raises(ValueError, match="unknown style"):
        generate_tile(1, 64, 0.1, "vaporwave")


def test_generate_dataset_is_byte_identical_per_seed(tmp_path: Path) -> None:
    a = generate_dataset(tmp_path / "a", n=3, seed=21, size=96, gsd=(0.1, 0.3), progress=False)
    b = generate_dataset(tmp_path / "b", n=3, seed=21, size=96, gsd=(0.1, 0.3), progress=False)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) == 9
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    assert [p.name for p in a] == [p.name for p in b]
    c = generate_dataset(tmp_path / "c", n=3, seed=22, size=96, gsd=(0.1, 0.3), progress=False)
    assert c[0].read_bytes() != a[0].read_bytes()


def test_cli_writes_the_landing_layout(tmp_path: Path) -> None:
    out = tmp_path / "batch"
    result = CliRunner().invoke(
        app, ["synth", "--out", str(out), "--n", "5", "--size", "96", "--seed", "1", "--sites", "2", "--gsd", "0.2"]
    )
    assert result.exit_code == 0, result.output
    sites = sorted(p.name for p in out.iterdir())
    assert sites == ["s1-site-0000", "s1-site-0001"]
    names = sorted(p.name for p in out.rglob("*") if p.is_file())
    assert len(names) == 15
    stems = sorted(n[: -len(".png")] for n in names if n.endswith(".png") and not n.endswith(".mask.png"))
    assert stems == [
        "s1-site-0000_p00",
        "s1-site-0000_p01",
        "s1-site-0000_p02",
        "s1-site-0001_p00",
        "s1-site-0001_p01",
    ]
    for stem in stems:
        site_dir = out / stem.split("_")[0]
        image = cv2.imread(str(site_dir / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        mask = cv2.imread(str(site_dir / f"{stem}.mask.png"), cv2.IMREAD_UNCHANGED)
        assert image.shape == (96, 96, 3) and image.dtype == np.uint8
        assert mask.shape == (96, 96) and mask.dtype == np.uint8
        doc = json.loads((site_dir / f"{stem}.geojson").read_text())
        assert doc["type"] == "FeatureCollection" and doc["coordinate_space"] == "pixel"
        assert all(f["properties"]["status"] in ("free", "occupied") for f in doc["features"])
        assert np.array_equal(read_geojson_mask(site_dir / f"{stem}.geojson", 96), mask)
        # free stalls (labelled) == 8-connected components of class 1
        free = sum(1 for f in doc["features"] if f["properties"]["label"] == FREE)
        assert _components(mask == FREE) == free


def test_cli_geotiff_has_crs_transform_and_map_geojson(tmp_path: Path) -> None:
    import rasterio

    out = tmp_path / "geo"
    result = CliRunner().invoke(
        app, ["synth", "--out", str(out), "--n", "2", "--size", "96", "--seed", "4", "--gsd", "0.15", "--geotiff"]
    )
    assert result.exit_code == 0, result.output
    tifs = sorted(out.rglob("*.tif"))
    assert len(tifs) == 2
    assert all(p.name.endswith(".mask.png") for p in out.rglob("*.png"))  # no PNG images beside the tifs
    for tif in tifs:
        with rasterio.open(tif) as ds:
            assert ds.crs is not None and ds.crs.is_projected
            epsg = ds.crs.to_epsg()
            assert 32601 <= epsg <= 32660
            assert ds.transform.a == pytest.approx(0.15) and ds.transform.e == pytest.approx(-0.15)
            assert ds.count == 3 and ds.dtypes[0] == "uint8"
            transform = ds.transform
            image = np.moveaxis(ds.read(), 0, 2)
        stem = tif.name[: -len(".tif")]
        doc = json.loads((tif.parent / f"{stem}.geojson").read_text())
        assert doc["coordinate_space"] == "map"
        assert doc["crs"] == {"type": "name", "properties": {"name": f"EPSG:{epsg}"}}
        mask = cv2.imread(str(tif.parent / f"{stem}.mask.png"), cv2.IMREAD_UNCHANGED)
        assert image.shape[:2] == mask.shape
        for f in doc["features"]:
            ring = np.array(f["geometry"]["coordinates"][0])
            cols, rows = ~transform @ (ring[:, 0], ring[:, 1])
            # every stall touches the image
            assert cols.max() >= 0 and cols.min() < 96 and rows.max() >= 0 and rows.min() < 96
        assert np.array_equal(read_geojson_mask(tif.parent / f"{stem}.geojson", 96, transform), mask)
    again = tmp_path / "geo2"
    CliRunner().invoke(
        app, ["synth", "--out", str(again), "--n", "2", "--size", "96", "--seed", "4", "--gsd", "0.15", "--geotiff"]
    )
    assert tifs[0].read_bytes() == (again / tifs[0].relative_to(out)).read_bytes()


def test_contact_sheet_from_tiles_and_paths(tmp_path: Path, tiles: list) -> None:
    sheet = render_contact_sheet(tiles[:3], tmp_path / "sheet.png", cols=2, cell=64)
    img = cv2.imread(str(sheet))
    assert img.shape[0] == 2 * (64 + 8) and img.shape[1] == 2 * (2 * 64 + 4 + 12)
    paths = generate_dataset(tmp_path / "d", n=2, seed=2, size=64, gsd=0.2, progress=False)
    sheet2 = render_contact_sheet(paths, tmp_path / "sheet2.png", cols=2, cell=64)
    assert cv2.imread(str(sheet2)) is not None
    assert not list((tmp_path / "d").rglob("*sheet*"))


def test_parse_gsd() -> None:
    assert parse_gsd("0.1") == 0.1
    assert parse_gsd("0.08-0.3") == (0.08, 0.3)
    with pytest.raises(Exception, match="metres per pixel"):
        parse_gsd("fast")


def test_annotation_reader_rebuilds_the_mask_from_the_geojson(tmp_path: Path) -> None:
    """The contract with ingest: its GeoJSON reader (pixel and map space) gives back our mask exactly."""
    import rasterio

    from parking_ml.data.annotations import ImageGeo, read_label

    for geotiff in (False, True):
        out = tmp_path / ("geo" if geotiff else "px")
        paths = generate_dataset(out, n=4, seed=8, size=128, gsd=(0.1, 0.3), sites=2, geotiff=geotiff, progress=False)
        for image_path in paths:
            stem = image_path.name[: -len(image_path.suffix)]
            mask = cv2.imread(str(image_path.with_name(f"{stem}.mask.png")), cv2.IMREAD_UNCHANGED)
            geo = ImageGeo(128, 128)
            if geotiff:
                with rasterio.open(image_path) as ds:
                    geo = ImageGeo(128, 128, ds.transform, ds.crs.to_string())
            data = image_path.with_name(f"{stem}.geojson").read_bytes()
            assert np.array_equal(read_label(data, f"{stem}.geojson", "geojson", geo), mask)


def test_stalls_mostly_under_canopy_are_ignored() -> None:
    seen = 0
    for site in range(12):
        sr = SiteRenderer(31, site, 160, 0.1, f"site-{site:04d}")
        t = sr.render(0)
        canopy = sr.static.canopy > 0.5
        for (poly, _), label, reason in zip(t.stalls, t.labels, t.extras["ignore_reason"], strict=True):
            inside = rasterise(160, [poly], [1]) > 0
            hidden = canopy[inside].mean() if inside.any() else 0.0
            if hidden > 0.5:
                assert label == IGNORE and reason in ("canopy", "edge")
                seen += 1
            elif reason == "canopy":
                pytest.fail("a stall hidden less than half was ignored for canopy")
    assert seen > 0


def test_stalls_of_a_lot_whose_paint_does_not_show_are_ignored() -> None:
    from parking_ml.synth.dataset import FAINT_VISIBILITY, _site_labels, paint_visibility

    sr = SiteRenderer(99, 21, 256, 0.1, "site-0021")
    assert sr.site.stalls and paint_visibility(sr.site, sr.static) > 3 * FAINT_VISIBILITY
    t = sr.render(0)
    assert "faint" not in t.extras["ignore_reason"] and t.extras["paint_visibility"] >= FAINT_VISIBILITY
    assert (t.mask == FREE).any() or (t.mask == OCCUPIED).any()
    # the same lot with its paint worn to a trace: the lines no longer stand out from the pavement's texture
    sr.site.paint_opacity = 0.03
    faint = render_static(sr.site, np.random.default_rng(1))
    assert paint_visibility(sr.site, faint) < FAINT_VISIBILITY
    _, _, reasons, _, visibility = _site_labels(sr.site, faint)
    assert reasons and visibility < FAINT_VISIBILITY
    assert all(r in ("faint", "edge", "canopy") for r in reasons) and "faint" in reasons


def test_cli_defaults_to_the_lake_landing_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARKING_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PARKING_LAKE_URL", raising=False)
    monkeypatch.setenv("PARKING_SEED", "5")
    result = CliRunner().invoke(app, ["synth", "--n", "2", "--size", "64", "--gsd", "0.2"])
    assert result.exit_code == 0, result.output
    landing = tmp_path / "home" / "lake" / "landing" / "synth-5"
    assert len(list(landing.rglob("*.png"))) == 4  # 2 images + 2 masks
    bad = CliRunner().invoke(app, ["synth", "--n", "1", "--size", "64", "--style", "noir", "--out", str(tmp_path)])
    assert bad.exit_code != 0 and "noir" in bad.output
