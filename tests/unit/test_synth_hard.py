"""The generator's hard modes (parking_ml.synth.hard): each case is drawn, and its truth is exact."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from parking_ml.synth import ALL_STYLES, HARD_MODES, SiteRenderer, generate_dataset
from parking_ml.synth.dataset import FAINT_VISIBILITY, IGNORE, OCCUPIED
from parking_ml.synth.ground import _zebra
from parking_ml.synth.hard import HARD_RATE, pick_mode

LUMA = np.array([0.299, 0.587, 0.114])


def _first(mode: str, accept, seed: int = 11, size: int = 256, gsd: float = 0.1, tries: int = 30):
    """The first site of ``seed`` forced to ``mode`` whose pass 0 passes ``accept(renderer, tile)``."""
    for index in range(tries):
        sr = SiteRenderer(seed, index, size, gsd, f"site-{index:04d}", hard=mode)
        tile = sr.render(0)
        if accept(sr, tile):
            return sr, tile
    raise AssertionError(f"no site of seed {seed} showed {mode} in {tries} tries")


def test_modes_mix_in_at_a_modest_rate_or_are_forced_or_off():
    picks = [pick_mode(5, i, None) for i in range(3000)]
    share = sum(p is not None for p in picks) / len(picks)
    assert abs(share - HARD_RATE * len(HARD_MODES)) < 0.03
    assert {p for p in picks if p} == set(HARD_MODES)
    assert all(pick_mode(5, i, "none") is None for i in range(50))
    assert all(pick_mode(5, i, "dark_cars") == "dark_cars" for i in range(5))
    with pytest.raises(ValueError, match="unknown hard mode 'potholes'"):
        pick_mode(5, 0, "potholes")


def test_a_site_without_a_mode_is_drawn_as_with_modes_off():
    plain = [i for i in range(40) if pick_mode(9, i, None) is None][:3]
    for i in plain:
        a = SiteRenderer(9, i, 96, 0.2, "s", hard=None).render(1)
        b = SiteRenderer(9, i, 96, 0.2, "s", hard="none").render(1)
        assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)


def test_roadway_cars_are_background():
    sr, tile = _first("roadway_cars", lambda sr, t: len(t.extras["roadway_car_centres"]) >= 2)
    assert tile.extras["hard"] == "roadway_cars"
    assert not any(s.kind == "kerb" for s in sr.site.stalls)  # the road's kerbs are unmarked
    for x, y in np.round(tile.extras["roadway_car_centres"]).astype(int):
        if 0 <= x < tile.mask.shape[1] and 0 <= y < tile.mask.shape[0]:
            assert tile.mask[y, x] == 0
    # the cars are drawn: pixels at their centres differ from the same pass without the extra traffic
    plain = SiteRenderer(11, int(sr.index), 256, 0.1, "s", hard="none").render(0)
    assert not np.array_equal(plain.image, tile.image)


def test_hatched_zones_and_crosswalks_are_background():
    def shows(sr, t):
        return len(sr.site.crosswalks) > 0 and len(sr.site.hatches) > 0 and (t.mask == OCCUPIED).any()

    sr, tile = _first("hatched_zones", shows)
    zebra = _zebra(sr.site, tile.mask.shape) > 127
    assert zebra.sum() > 50
    assert (tile.mask[zebra] == 0).all()
    hatched = np.zeros(tile.mask.shape, np.uint8)
    for poly in sr.site.hatches:
        cv2.fillPoly(hatched, [np.round(poly).astype(np.int32)], 1)
    assert hatched.sum() > 50
    # a hatched slot holds no stall: its pixels are background (its neighbours' interiors stop 0.3 m short)
    assert np.isin(tile.mask[hatched > 0], [0, IGNORE]).all()
    assert (tile.mask[hatched > 0] == 0).mean() > 0.9


def test_dark_cars_stand_in_occupied_stalls_on_mid_grey_asphalt():
    sr, tile = _first("dark_cars", lambda sr, t: sum(v == OCCUPIED for v in t.labels) >= 5)
    assert 0.45 <= sr.site.pavement_tone <= 0.8
    assert tile.sun_elevation_deg <= 30
    dark = total = 0
    for (poly, status), label in zip(tile.stalls, tile.labels, strict=True):
        if label != OCCUPIED:
            continue
        assert status == "occupied"
        region = np.zeros(tile.mask.shape, np.uint8)
        cv2.fillPoly(region, [poly.astype(np.int32)], 1)
        assert (tile.mask[region > 0] == OCCUPIED).all()
        total += 1
        dark += float(np.median(tile.image[region > 0] @ LUMA)) < 70
    assert dark / total > 0.5


def test_long_shadows_leave_the_labels_alone():
    sr, tile = _first("long_shadows", lambda sr, t: len(sr.site.poles) + len(sr.site.trees) > 4)
    plain_sr = SiteRenderer(11, int(sr.index), 256, 0.1, "s", hard="none")
    plain = plain_sr.render(0)
    assert tile.sun_elevation_deg <= 24 and len(sr.site.poles) + len(sr.site.trees) > len(plain_sr.site.trees)
    # same stalls, same cars: a stall's label changes only where the added crowns hide over half of it
    assert len(tile.labels) == len(plain.labels)
    for a, b, reason in zip(tile.labels, plain.labels, tile.extras["ignore_reason"], strict=True):
        assert a == b or (a == IGNORE and reason == "canopy")
    assert not np.array_equal(tile.image, plain.image)


def test_faint_paint_follows_the_faint_rule():
    seen = set()
    for index in range(8):
        sr = SiteRenderer(12, index, 160, 0.1, f"site-{index:04d}", hard="faint_paint")
        tile = sr.render(0)
        assert sr.site.paint_opacity <= 0.45
        if not tile.labels:
            continue
        faint = tile.extras["paint_visibility"] < FAINT_VISIBILITY
        seen.add(faint)
        if faint:
            assert set(tile.labels) == {IGNORE}
        else:
            assert set(tile.labels) - {IGNORE}
    assert seen == {True, False}  # both sides of the rule are in the mode


def test_lot_edge_puts_a_row_against_a_building():
    sr, _tile = _first("lot_edge", lambda sr, t: any(v != IGNORE for v in t.labels))
    g = sr.site.gsd
    roofs = [cv2.convexHull(b.roof.astype(np.float32)) for b in sr.site.buildings]
    backs = [(s.outline[2] + s.outline[3]) / 2 for s in sr.site.stalls] + [
        (s.outline[0] + s.outline[1]) / 2 for s in sr.site.stalls
    ]
    near = min(-cv2.pointPolygonTest(r, (float(p[0]), float(p[1])), True) for r in roofs for p in backs)
    assert near * g < 2.5  # a stall's end within a sidewalk's width of a wall


def test_dataset_with_a_forced_mode_and_a_bad_mode(tmp_path: Path):
    paths = generate_dataset(tmp_path / "a", n=2, seed=3, size=96, gsd=0.2, progress=False, hard="hatched_zones")
    assert len(paths) == 2
    data = json.loads(paths[0].with_name(paths[0].stem + ".geojson").read_text())
    assert data["coordinate_space"] == "pixel"
    with pytest.raises(ValueError, match="unknown hard mode"):
        generate_dataset(tmp_path / "b", n=1, seed=3, size=96, progress=False, hard="nope")
    assert not (tmp_path / "b").exists()


def test_the_held_out_style_renders_and_the_cli_names_match():
    from parking_ml.cli.synth import HARD_NAMES, STYLE_NAMES

    assert STYLE_NAMES == ALL_STYLES and HARD_NAMES == HARD_MODES
    sr = SiteRenderer(4, 0, 128, 0.1, "s")
    a, b = sr.render(0, "default"), sr.render(0, "pavers")
    assert np.array_equal(a.mask, b.mask) and not np.array_equal(a.image, b.image)
    paved = sr.static.material == sr.site.pavement
    if paved.sum() > 500:  # the pavers are reddish or sandy: red above blue on the lot
        rgb = b.image[paved].astype(float).mean(axis=0)
        assert rgb[0] > rgb[2] + 10


def test_hard_set_tiles_are_fixed_and_scored_shapes():
    from parking_ml.model.hardset import hard_set_tiles

    a = hard_set_tiles("roadway_cars", sites=1)
    b = hard_set_tiles("roadway_cars", sites=1)
    assert len(a) == 4
    assert all(t["truth"].shape == (256, 256) and t["rgb"].shape == (256, 256, 3) for t in a)
    assert all(np.array_equal(x["rgb"], y["rgb"]) for x, y in zip(a, b, strict=True))
    assert any(t["stalls"] for t in a)
    with pytest.raises(ValueError, match="unknown hard mode"):
        hard_set_tiles("nope")


def test_a_higher_hard_rate_gives_modes_to_more_sites_from_the_same_draw():
    low = [pick_mode(5, i, None) for i in range(3000)]
    high = [pick_mode(5, i, None, 0.08) for i in range(3000)]
    assert low == [pick_mode(5, i, None, HARD_RATE) for i in range(3000)]
    assert all(lo is None for lo, h in zip(low, high, strict=True) if h is None)
    assert {h for h in high if h} == set(HARD_MODES)
    assert abs(sum(h is not None for h in high) / 3000 - 0.08 * len(HARD_MODES)) < 0.03
    for bad in (0.0, 0.2):  # six modes at 0.2 would need 120 % of the sites
        with pytest.raises(ValueError, match="hard rate"):
            pick_mode(5, 0, None, bad)


def test_a_style_mix_draws_per_site_and_one_style_writes_as_before(tmp_path: Path):
    from parking_ml.synth.dataset import pick_style

    mix = ("default", "default", "dusk", "winter")
    picks = [pick_style(7, i, mix) for i in range(400)]
    assert picks == [pick_style(7, i, mix) for i in range(400)] and set(picks) == {"default", "dusk", "winter"}
    assert 0.4 < picks.count("default") / 400 < 0.6  # a repeated name weighs double
    one = generate_dataset(tmp_path / "a", n=2, seed=3, size=64, gsd=0.2, progress=False)
    listed = generate_dataset(tmp_path / "b", n=2, seed=3, size=64, gsd=0.2, style=["default"], progress=False)
    assert all(p.read_bytes() == q.read_bytes() for p, q in zip(one, listed, strict=True))
    mixed = generate_dataset(tmp_path / "c", n=4, seed=5, size=64, gsd=0.2, sites=4, style=mix, progress=False)
    drawn = [pick_style(5, index, mix) for index in range(4)]
    assert {"default", "dusk", "winter"} <= set(drawn)  # this seed's sites draw every style of the mix
    # each site is its own pass 0 rendered in the style pick_style drew for it
    for index, path in enumerate(sorted(mixed)):
        expected = SiteRenderer(5, index, 64, 0.2, f"s5-site-{index:04d}").render(0, drawn[index])
        written = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(written, expected.image)
    with pytest.raises(ValueError, match="unknown style"):
        generate_dataset(tmp_path / "d", n=1, seed=3, size=64, style=("default", "fog"), progress=False)
