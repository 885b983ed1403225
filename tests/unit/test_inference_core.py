"""Inference core: config round trip, post-processing on hand-made probability maps, tiled prediction."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from parking_ml.features import FEATURE_COLUMNS, features_frame, tile_features
from parking_ml.inference import (
    TTA_VIEWS,
    OnnxSegmenter,
    PreprocessConfig,
    georeferenced_geojson,
    grow_spaces,
    postprocess,
    predict,
    spaces_to_geojson,
    split_merged,
    split_oversized,
    tta_logits,
    typical_space_area,
)
from tests.fakes.packages import write_color_net
from tests.fakes.scenes import lot_image


def test_config_round_trip_and_unknown_keys():
    cfg = PreprocessConfig(tile_size=128, overlap=16, gsd=0.1)
    again = PreprocessConfig.from_json(cfg.to_json())
    assert again == cfg
    data = json.loads(cfg.to_json()) | {"some_future_key": 1}
    assert PreprocessConfig.from_dict(data) == cfg
    with pytest.raises(ValueError, match="multiple of pad_multiple"):
        PreprocessConfig(tile_size=100)
    assert cfg.min_area_for(0.05) == cfg.min_area_px * 4
    assert cfg.min_area_for(None) == cfg.min_area_px


def test_tta_is_in_the_config_and_a_typo_is_refused_by_name():
    assert PreprocessConfig().tta == "none"  # packages written before the field serve as they did
    cfg = PreprocessConfig(tta="dihedral")
    assert PreprocessConfig.from_json(cfg.to_json()).tta == "dihedral"
    with pytest.raises(ValueError, match="tta 'rot8' is not one of none, flip, dihedral"):
        PreprocessConfig(tta="rot8")


def test_tta_turns_every_view_back_before_averaging():
    rng = np.random.default_rng(0)
    batch = rng.normal(size=(2, 3, 32, 64)).astype(np.float32)  # not square: a quarter turn swaps H and W

    def pointwise(b: np.ndarray) -> np.ndarray:
        return np.stack([b[:, 0] - b[:, 1], 2 * b[:, 1], b[:, 2] + 1], axis=1)

    # a per-pixel network gives the same logits in every view: only a view turned back wrongly would differ
    for mode in TTA_VIEWS:
        np.testing.assert_allclose(tta_logits(pointwise, batch, mode), pointwise(batch), atol=1e-6)

    def sees_columns(b: np.ndarray) -> np.ndarray:
        return b + np.linspace(0.0, 1.0, b.shape[3], dtype=np.float32)

    # a network biased from left to right: mirrored and turned views cancel the bias to its middle
    np.testing.assert_allclose(tta_logits(sees_columns, batch, "none"), sees_columns(batch))
    np.testing.assert_allclose(tta_logits(sees_columns, batch, "flip"), batch + 0.5, atol=1e-6)
    np.testing.assert_allclose(tta_logits(sees_columns, batch, "dihedral"), batch + 0.5, atol=1e-6)


def _probs_from_mask(mask: np.ndarray, conf: float = 0.9) -> np.ndarray:
    probs = np.full((3, *mask.shape), (1 - conf) / 2, dtype=np.float32)
    for c in range(3):
        probs[c][mask == c] = conf
    return probs


def test_postprocess_counts_polygons_and_small_specks():
    mask = np.zeros((100, 120), dtype=np.uint8)
    mask[10:30, 10:20] = 1  # free, 200 px
    mask[10:30, 40:50] = 1  # free
    mask[50:80, 60:75] = 2  # occupied, 450 px
    mask[90:92, 100:102] = 1  # speck: 4 px < min area
    pred = postprocess(_probs_from_mask(mask), PreprocessConfig(min_area_px=20))
    assert (pred.free_count, pred.occupied_count) == (2, 1)
    assert pred.occupancy_rate == pytest.approx(1 / 3, abs=1e-3)
    assert pred.mask[91, 101] == 0  # the speck left the map too
    first = pred.spaces[0]
    assert first.status == "free" and first.area_px == 200 and first.confidence == pytest.approx(0.9, abs=1e-4)
    xs = [p[0] for p in first.polygon]
    ys = [p[1] for p in first.polygon]
    # the rectangle covers whole pixels: columns 10..19 -> x in [10, 20], rows 10..29 -> y in [10, 30]
    assert (min(xs), max(xs), min(ys), max(ys)) == pytest.approx((10, 20, 10, 30), abs=1e-3)
    assert first.polygon[0] == first.polygon[-1] and len(first.polygon) == 5
    occ = next(s for s in pred.spaces if s.status == "occupied")
    assert occ.area_px == 450
    assert [s.id for s in pred.spaces] == [1, 2, 3]


def test_two_stalls_merged_in_the_argmax_are_split_along_their_probability_valley():
    # two 10 x 20 px free stalls with a 2-px painted line between them that the argmax still calls free,
    # at a lower probability: one blob, two confident cores
    probs = np.zeros((3, 40, 40), np.float32)
    probs[0] = 1.0
    probs[:, 10:30, 5:27] = np.array([0.05, 0.9, 0.05], np.float32)[:, None, None]
    probs[:, 10:30, 15:17] = np.array([0.3, 0.6, 0.1], np.float32)[:, None, None]  # the line: free, unsure
    config = PreprocessConfig(min_area_px=20)
    pred = postprocess(probs, config)
    assert pred.free_count == 2
    left, right = sorted(pred.spaces, key=lambda s: s.polygon[0][0])
    # the cut is one pixel wide, inside the valley: the stalls keep every confident pixel
    assert left.area_px + right.area_px == 22 * 20 - 20
    assert (pred.mask[10:30, 5:15] == 1).all() and (pred.mask[10:30, 17:27] == 1).all()
    assert (split_merged(pred.mask == 1, probs[1], 20) == 0).all()  # split once, nothing more to split
    # the same blob without the valley, or with cores too small to be spaces, stays one space
    probs[1, 10:30, 15:17] = 0.9
    assert postprocess(probs, config).free_count == 1
    probs[1, 10:30, 15:17] = 0.6
    assert postprocess(probs, PreprocessConfig(min_area_px=300)).free_count == 1


def _lot_probs(valley: float, singles: int = 3) -> np.ndarray:
    """A 60 x 100 map: ``singles`` free stalls of 10 x 20 px at p(free) 0.95, then two such stalls side by side
    whose 2-px line the argmax calls free at ``valley``, then one 12 x 20 stall with the same valley inside."""
    probs = np.zeros((3, 60, 100), np.float32)
    probs[0] = 1.0
    free = np.array([0.025, 0.95, 0.025], np.float32)[:, None, None]
    line = np.array([(1 - valley) / 2, valley, (1 - valley) / 2], np.float32)[:, None, None]
    for i in range(singles):
        probs[:, 5:25, 5 + 14 * i : 15 + 14 * i] = free
    probs[:, 35:55, 5:27] = free  # the merged pair
    probs[:, 35:55, 15:17] = line
    probs[:, 35:55, 40:52] = free  # one wide stall with a faint seam
    probs[:, 35:55, 45:47] = line
    return probs


def test_a_space_twice_the_typical_size_is_split_where_a_stricter_core_level_parts_it():
    config = PreprocessConfig(min_area_px=20)
    # a valley of 0.88 keeps split_merged's 0.8 cores joined: only the size says it is two stalls
    pred = postprocess(_lot_probs(0.88), config)
    pair = pred.mask[35:55, 5:27] == 1
    assert pred.free_count == 3 + 2 + 1
    assert pair[:, :10].all() and pair[:, 12:].all() and (~pair).sum() == 20  # one 1-px cut inside the line
    # the wide stall (240 px against a typical 200) is not tried, though its seam would part it as well
    assert (pred.mask[35:55, 40:52] == 1).all()
    assert split_merged(pred.mask[35:55, 40:52] == 1, _lot_probs(0.88)[1, 35:55, 40:52], 20, 0.9).any()
    # without a valley no level parts the pair; with fewer than 3 spaces there is no typical size to go by
    assert postprocess(_lot_probs(0.95), config).free_count == 3 + 1 + 1
    assert postprocess(_lot_probs(0.88, singles=0), config).free_count == 2


def test_typical_space_area_is_the_median_space_of_both_classes():
    mask = np.zeros((40, 60), np.uint8)
    mask[2:12, 2:12] = 1  # 100 px
    mask[2:12, 20:32] = 2  # 120 px, occupied
    mask[20:35, 2:12] = 1  # 150 px
    mask[30:32, 50:52] = 1  # 4 px: a speck below min_area, not a space

    def areas(m):
        return [cv2.connectedComponentsWithStats((m == c).view(np.uint8), connectivity=8)[2][1:, 4] for c in (1, 2)]

    assert typical_space_area(areas(mask), min_area=20) == 120.0
    assert typical_space_area(areas(mask[:, :15]), min_area=20) is None  # two spaces say nothing
    _, labels, stats, _ = cv2.connectedComponentsWithStats((mask == 1).view(np.uint8), connectivity=8)
    assert not split_oversized(labels, stats, np.ones(mask.shape, np.float32), 20, typical_area=120.0).any()


def test_spaces_grow_into_likely_background_but_never_touch_each_other():
    labels = np.zeros((12, 20), np.int32)
    labels[3:9, 2:6] = 1
    labels[3:9, 9:13] = 2  # 3 px of background between the two spaces
    room = np.ones_like(labels, dtype=bool)
    room[:, 16:] = False  # unlikely background: no growth there
    room[labels > 0] = False
    grown = grow_spaces(labels, room, steps=3)
    # growth only adds pixels, each to the space it touched, and only inside room
    assert ((grown == labels) | (labels == 0)).all() and (grown[~room & (labels == 0)] == 0).all()
    assert grown[3, 1] == 1 and grown[3, 0] == 1 and grown[1, 3] == 1  # 2 px out on open sides
    assert (grown[:, 16:] == 0).all() and grown[5, 15] == 2
    # the two spaces never come within 8-adjacency: a 1-px line of background stays between them
    import cv2

    n, _ = cv2.connectedComponents((grown > 0).astype(np.uint8), connectivity=8)
    assert n - 1 == 2
    assert np.count_nonzero(grown == 1) > np.count_nonzero(labels == 1)
    assert (grow_spaces(labels, room, steps=0) == labels).all()


def _scattered_spaces(rng, shape, count, size, room_share):
    """Labels of ``count`` rectangles of ``size`` at random (later ones over earlier), and random room."""
    labels = np.zeros(shape, np.int64)
    ys, xs = rng.integers(0, shape[0] - size[0], count), rng.integers(0, shape[1] - size[1], count)
    for k, (y, x) in enumerate(zip(ys, xs, strict=True), start=1):
        labels[y : y + size[0], x : x + size[1]] = k
    return labels, (rng.random(shape) < room_share) & (labels == 0)


def test_growth_in_row_blocks_is_the_same_as_in_one_piece(monkeypatch):
    import parking_ml.inference.spaces as spaces

    labels, room = _scattered_spaces(np.random.default_rng(3), (90, 70), 40, (6, 5), 0.8)
    whole = grow_spaces(labels, room, steps=3)
    monkeypatch.setattr(spaces, "GROW_BLOCK_ROWS", 7)
    assert (grow_spaces(labels, room, steps=3) == whole).all()


def test_growth_is_the_same_for_labels_above_uint16():
    # few labels grow in uint16 (background wraps to the top value), many in float32: one answer
    labels, room = _scattered_spaces(np.random.default_rng(5), (60, 60), 30, (5, 4), 0.7)
    low = grow_spaces(labels, room, steps=2)
    high = grow_spaces(np.where(labels > 0, labels + 70_000, 0), room, steps=2)
    assert ((low > 0) == (high > 0)).all()
    assert (np.where(high > 0, high - 70_000, 0) == low).all()


def test_the_cut_between_cores_is_the_same_for_labels_above_uint16():
    from parking_ml.inference.spaces import _lower_neighbour

    # the distance transform labels every pixel; only those inside the component count
    nearest = np.ones((9, 12), np.int32)
    nearest[:, 6:] = 2
    inside = np.zeros(nearest.shape, bool)
    inside[1:8, 1:11] = True
    cut = _lower_neighbour(nearest, inside, most=2)
    # the higher label's pixels beside the lower label's are cleared: one column, 7 px
    assert cut.sum() == 7 and cut[1:8, 6].all()
    assert (_lower_neighbour(nearest + 70_000, inside, most=70_002) == cut).all()


def test_split_merged_with_the_callers_labelling_cuts_the_same():
    # two cores in one blob plus a speck the caller dropped but whose label is still in its labelling
    prob = np.full((20, 40), 0.6, np.float32)
    prob[5:15, 3:13] = prob[5:15, 22:32] = 0.95
    binary = np.zeros((20, 40), bool)
    binary[4:16, 2:33] = True
    binary[18, 38] = True
    _, labels, stats, _ = cv2.connectedComponentsWithStats(binary.view(np.uint8), connectivity=8)
    binary[18, 38] = False
    own = split_merged(binary, prob, 20)
    assert own.any() and (split_merged(binary, prob, 20, components=(labels, stats)) == own).all()


def test_postprocess_growth_keeps_the_counts_and_widens_the_spaces():
    # two free stalls 3 px apart whose argmax the network drew 2 px too small on every side, and a
    # ring of near-even pixels (p(free) 0.4) around each where they really are
    probs = np.zeros((3, 40, 40), np.float32)
    probs[0] = 0.9
    probs[1] = 0.05
    probs[2] = 0.05
    for x0 in (4, 21):
        probs[:, 6:34, x0 : x0 + 14] = np.array([0.55, 0.4, 0.05], np.float32)[:, None, None]
        probs[:, 8:32, x0 + 2 : x0 + 12] = np.array([0.05, 0.9, 0.05], np.float32)[:, None, None]
    plain = postprocess(probs, PreprocessConfig(min_area_px=20))
    grown = postprocess(probs, PreprocessConfig(min_area_px=20, grow_px=2))
    assert plain.free_count == grown.free_count == 2
    assert [s.area_px for s in plain.spaces] == [240, 240]
    # each grew by its 2-px ring (28 x 14 = 392 px) but where the rings meet, a line stays background
    assert all(300 < s.area_px <= 392 for s in grown.spaces)
    assert (grown.mask == 1).sum() == sum(s.area_px for s in grown.spaces)
    # each class has its own threshold (free 0.35, occupied 0.3 by default): a ring at 0.32 widens an
    # occupied space, not a free one
    probs[:, 6:34, 4:18] = np.array([0.63, 0.32, 0.05], np.float32)[:, None, None]
    probs[:, 8:32, 6:16] = np.array([0.05, 0.9, 0.05], np.float32)[:, None, None]
    probs[:, 6:34, 21:35] = np.array([0.63, 0.05, 0.32], np.float32)[:, None, None]
    probs[:, 8:32, 23:33] = np.array([0.05, 0.05, 0.9], np.float32)[:, None, None]
    mixed = postprocess(probs, PreprocessConfig(min_area_px=20, grow_px=2))
    assert sorted((s.status, s.area_px) for s in mixed.spaces) == [("free", 240), ("occupied", 392)]
    # a gsd scales the steps as it does the speck filter
    assert PreprocessConfig(gsd=0.2, grow_px=1).grow_px_for(0.1) == 2
    assert PreprocessConfig(gsd=0.2, grow_px=1).grow_px_for(0.4) == 0
    assert PreprocessConfig(grow_px=1).grow_px_for(None) == 1


def test_growth_settings_round_trip_and_bad_values_name_the_field():
    cfg = PreprocessConfig(grow_prob=(0.4, 0.25), grow_px=1.5)
    assert PreprocessConfig.from_json(cfg.to_json()) == cfg
    assert PreprocessConfig().grow_px == 0  # a package that does not say is served as it was
    with pytest.raises(ValueError, match="grow_prob"):
        PreprocessConfig(grow_prob=(0.0, 0.3))
    with pytest.raises(ValueError, match="grow_px"):
        PreprocessConfig(grow_px=-1)


def _box_of_every_corner(component: np.ndarray, x0: int, y0: int) -> np.ndarray:
    # the rectangle as first defined: around the four corners of every contour point of the component alone
    contours, _ = cv2.findContours(component.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    pts = np.concatenate([c.reshape(-1, 2) for c in contours]).astype(np.float32)
    corners = (pts[None] + np.array([(0, 0), (1, 0), (0, 1), (1, 1)], np.float32)[:, None]).reshape(-1, 2)
    box = cv2.boxPoints(cv2.minAreaRect(corners))
    box += (x0, y0)
    return box


def test_rectangles_from_one_tracing_of_the_map_equal_those_of_each_component_alone():
    from parking_ml.inference.spaces import _outer_contours, _rectangles

    rng = np.random.default_rng(7)
    for trial in range(60):
        binary = np.zeros((60, 70), np.uint8)
        for _ in range(int(rng.integers(1, 8))):
            x, y = (int(v) for v in rng.integers(0, 60, 2))
            w, h = (int(v) for v in rng.integers(1, 18, 2))
            angle = float(rng.integers(0, 180))
            cv2.ellipse(binary, (x, y), (w, h), angle, 0, 360, 1, -1)
        if trial % 3 == 0:
            binary &= (rng.random(binary.shape) < 0.85).astype(np.uint8)  # ragged edges, holes
        if trial % 5 == 0:
            # a ring with a space inside its hole: the inner one is a component of its own
            cv2.rectangle(binary, (5, 5), (40, 40), 1, 3)
            binary[15:30, 15:30] = 0
            binary[18:26, 18:27] = 1
        n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
        contours = _outer_contours(labels > 0, labels)
        assert sorted(contours) == list(range(1, n))
        rings = _rectangles([contours[k] for k in range(1, n)], stats[1:, :2].astype(np.int64))
        for k, ring in enumerate(rings, start=1):
            x0, y0, w, h = (int(v) for v in stats[k, :4])
            own = _box_of_every_corner(labels[y0 : y0 + h, x0 : x0 + w] == k, x0, y0)
            assert ring[:4] == [[round(float(v), 2) for v in p] for p in own] and ring[4] == ring[0]


def test_space_dict_is_a_copy_with_the_dataclass_fields():
    import dataclasses

    from parking_ml.inference import Space

    space = Space(id=3, status="free", confidence=0.91, area_px=420, polygon=[[1.0, 2.0], [3.0, 4.0], [1.0, 2.0]])
    d = space.to_dict()
    assert d == dataclasses.asdict(space)
    d["polygon"][0][0] = 99.0
    assert space.polygon[0][0] == 1.0


def test_postprocess_with_specks_and_no_cut_keeps_the_cleanings_labelling():
    # specks removed, nothing split or grown: the spaces come from the cleaning's labelling; they must be
    # the same spaces, in the same order, as from a fresh labelling of the cleaned map
    mask = np.zeros((80, 120), np.uint8)
    mask[5:25, 5:15], mask[5:25, 20:31], mask[40:60, 50:62] = 1, 1, 1  # 200, 220, 240 px
    mask[30, 3] = mask[70, 100] = 1  # specks
    mask[5:25, 40:53], mask[45:65, 80:94] = 2, 2  # 260, 280 px
    mask[2, 110] = 2
    pred = postprocess(_probs_from_mask(mask), PreprocessConfig(min_area_px=20))
    assert (pred.free_count, pred.occupied_count) == (3, 2)
    assert pred.mask[30, 3] == pred.mask[70, 100] == pred.mask[2, 110] == 0
    fresh = []
    for cls in (1, 2):
        n, _, stats, centroids = cv2.connectedComponentsWithStats((pred.mask == cls).view(np.uint8), connectivity=8)
        fresh += [(round(float(centroids[k][1])), float(centroids[k][0]), int(stats[k, 4])) for k in range(1, n)]
    assert [s.area_px for s in pred.spaces] == [area for *_, area in sorted(fresh)]
    assert [s.id for s in pred.spaces] == [1, 2, 3, 4, 5]
    # a class of specks alone: none of it is a space
    mask[45:65, 80:94] = mask[5:25, 40:53] = 0
    pred = postprocess(_probs_from_mask(mask), PreprocessConfig(min_area_px=20))
    assert (pred.free_count, pred.occupied_count) == (3, 0) and pred.mask[2, 110] == 0


def _blobs(shape: tuple[int, int], share: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    seeds = (rng.random(shape) < share).view(np.uint8)
    return cv2.dilate(seeds, np.ones((int(rng.integers(1, 5)),) * 2, np.uint8)).astype(bool)


def test_components_counted_over_a_sparse_class_equal_opencvs():
    from parking_ml.inference.spaces import _components

    cases = [_blobs((int(h), int(w)), share, seed) for seed, (h, w, share) in enumerate(
        [(300, 200, 0.001), (97, 311, 0.004), (64, 64, 0.01), (128, 96, 0.2), (50, 70, 0.0)]
    )]  # fmt: skip
    edge = np.zeros((40, 30), bool)
    edge[:, 0] = edge[0, :] = True  # the background's box starts at row and column 1
    cases.append(edge)
    for binary in cases:
        ours = _components(binary)
        theirs = cv2.connectedComponentsWithStats(binary.view(np.uint8), connectivity=8)
        assert ours[0] == theirs[0]
        for mine, cv in zip(ours[1:], theirs[1:], strict=True):
            assert mine.dtype == cv.dtype and np.array_equal(mine, cv)


def test_relabelling_only_the_cut_components_gives_what_a_whole_labelling_gives():
    from parking_ml.inference.spaces import _relabel_cut

    binary = _blobs((160, 200), 0.003, seed=4)
    binary[20:60, 20:90] = binary[100:140, 120:190] = True
    components = cv2.connectedComponentsWithStats(binary.view(np.uint8), connectivity=8)
    labels = components[1]
    carve = np.zeros(binary.shape, bool)
    carve[20:60, 50] = carve[100:140, 150] = carve[120, 120:150] = True  # one cut, and a cross: three pieces
    cut = sorted({int(labels[40, 50]), int(labels[120, 150])})
    n, new_labels, stats, centres = _relabel_cut(
        (components[0], *(a.copy() for a in components[1:])), carve, cut, binary & ~carve
    )
    fresh_n, fresh, fresh_stats, fresh_centres = cv2.connectedComponentsWithStats(
        (binary & ~carve).view(np.uint8), connectivity=8
    )
    live = [k for k in range(1, n) if stats[k, cv2.CC_STAT_AREA] > 0]
    assert len(live) == fresh_n - 1 == components[0] - 1 + 3
    assert all(stats[k, cv2.CC_STAT_AREA] == 0 for k in cut)
    for k in live:
        # the same pixels make each component, with the same box, area and centre (bit for bit)
        (ys, xs) = np.nonzero(new_labels == k)
        other = int(fresh[ys[0], xs[0]])
        assert (fresh[ys, xs] == other).all() and (fresh == other).sum() == ys.size
        assert np.array_equal(stats[k], fresh_stats[other]) and np.array_equal(centres[k], fresh_centres[other])
    assert ((new_labels > 0) == (fresh > 0)).all()


def test_the_splits_name_the_components_they_cut():
    mask = np.zeros((40, 60), np.uint8)
    mask[5:35, 5:25] = mask[5:20, 40:55] = 1
    prob = np.full(mask.shape, 0.6, np.float32)
    prob[7:18, 8:22] = prob[22:33, 8:22] = 0.95  # two cores in the first blob, none in the second
    labels, stats = cv2.connectedComponentsWithStats(mask, connectivity=8)[1:3]
    cut: list[int] = []
    carve = split_merged(mask.astype(bool), prob, 20, components=(labels, stats), cut=cut)
    assert cut == [int(labels[10, 10])] and carve.any() and not carve[:, 30:].any()
    cut = []
    assert split_oversized(labels, stats, prob, 20, typical_area=100.0, cut=cut)[:, :30].any()
    assert cut == [int(labels[10, 10])]


def test_spaces_tied_on_their_centre_go_in_raster_order_of_their_first_pixel(monkeypatch):
    import parking_ml.inference.spaces as spaces

    # a ring and a dot in its hole share their centre: the ring, whose first pixel comes first, is space 1
    mask = np.zeros((40, 40), np.uint8)
    mask[5:35, 5:35] = 1
    mask[9:31, 9:31] = 0
    mask[18:22, 18:22] = 1
    expected = [30 * 30 - 22 * 22, 16]
    assert [s.area_px for s in postprocess(_probs_from_mask(mask), PreprocessConfig(min_area_px=10)).spaces] == expected
    # also when the labels do not follow raster order, as after a cut: the dot labelled first
    whole = spaces._components

    def swapped(binary):
        n, labels, stats, centres = whole(binary)
        if n == 3:
            labels = np.choose(labels, [0, 2, 1]).astype(labels.dtype)
            stats, centres = stats[[0, 2, 1]], centres[[0, 2, 1]]
        return n, labels, stats, centres

    monkeypatch.setattr(spaces, "_components", swapped)
    assert [s.area_px for s in postprocess(_probs_from_mask(mask), PreprocessConfig(min_area_px=10)).spaces] == expected


def test_postprocess_empty_map():
    pred = postprocess(_probs_from_mask(np.zeros((32, 32), dtype=np.uint8)), PreprocessConfig())
    assert pred.spaces == [] and pred.occupancy_rate is None and pred.free_fraction == 0


def test_rotated_component_gets_oriented_box():
    import cv2

    mask = np.zeros((100, 100), dtype=np.uint8)
    box = cv2.boxPoints(((50, 50), (40, 12), 30)).astype(np.int32)
    cv2.fillPoly(mask, [box], 1)
    pred = postprocess(_probs_from_mask(mask), PreprocessConfig())
    assert pred.free_count == 1
    poly = np.array(pred.spaces[0].polygon[:4], dtype=np.float32)
    (_, _), (w, h), _ = cv2.minAreaRect(poly)
    # an axis-aligned box would be ~41 x 31; the oriented one hugs the 40 x 12 stall
    assert sorted((w, h)) == pytest.approx([13, 41], abs=2.5)


@pytest.fixture()
def color_net(tmp_path):
    path = tmp_path / "model.onnx"
    write_color_net(path)
    return path


def test_the_runtime_threads_sleep_after_a_run_instead_of_spinning(color_net):
    # spinning pool threads take a core from the post-processing that follows (docs/experiments/request-path.md)
    seg = OnnxSegmenter(color_net, PreprocessConfig(), threads=2)
    assert seg.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_single_tile_prediction_finds_stalls(color_net):
    cfg = PreprocessConfig(tile_size=256, overlap=32, min_area_px=20)
    seg = OnnxSegmenter(color_net, cfg, threads=1)
    img = lot_image(200, 230)  # not a multiple of 32: padded and cropped back
    pred = predict(seg, img)
    assert pred.mask.shape == (200, 230)
    expected_occ = sum(
        1 for i, _ in enumerate(range(10, 170, 40)) for j, _ in enumerate(range(10, 210, 30)) if not (i + j) % 3
    )
    expected_total = len(range(10, 170, 40)) * len(range(10, 210, 30))
    assert pred.occupied_count == expected_occ
    assert pred.free_count == expected_total - expected_occ
    assert {"preprocess_ms", "inference_ms", "postprocess_ms", "total_ms"} <= set(pred.timings_ms)


def test_dihedral_tta_runs_eight_passes_per_window_and_still_finds_the_stalls(color_net, tmp_path):
    cfg = PreprocessConfig(tile_size=128, window=128, overlap=32, min_area_px=20, tta="dihedral")
    calls: list[tuple[int, ...]] = []

    class Counting(OnnxSegmenter):
        def run_logits(self, batch: np.ndarray) -> np.ndarray:
            calls.append(batch.shape)
            return super().run_logits(batch)

    img = lot_image(200, 230)
    pred = predict(Counting(color_net, cfg, threads=1, batch_size=4), img)
    plain = predict(OnnxSegmenter(color_net, PreprocessConfig(min_area_px=20), threads=1), img)
    windows = 2 * 3  # 128-px windows 96 px apart: rows from 0 and 72, columns from 0, 96 and 102
    assert len(calls) == 8 * math.ceil(windows / 4)
    assert (pred.free_count, pred.occupied_count) == (plain.free_count, plain.occupied_count)
    # the API can serve a package without its test-time augmentation (PARKING_TTA=none)
    (tmp_path / "model.onnx").write_bytes(color_net.read_bytes())
    (tmp_path / "preprocess.json").write_text(cfg.to_json())
    assert OnnxSegmenter.from_dir(tmp_path).config.tta == "dihedral"
    assert OnnxSegmenter.from_dir(tmp_path, tta="none").config.tta == "none"


def test_sliding_windows_match_single_pass_in_interior(color_net):
    img = lot_image(300, 420, seed=3)
    big = OnnxSegmenter(color_net, PreprocessConfig(window=512, overlap=0), threads=1)
    tiled = OnnxSegmenter(color_net, PreprocessConfig(tile_size=128, window=128, overlap=32), threads=1, batch_size=3)
    calls = []
    p_full = big.predict_probs(img)
    p_tiled = tiled.predict_probs(img, progress=lambda d, t: calls.append((d, t)))
    assert p_tiled.shape == p_full.shape == (3, 300, 420)
    np.testing.assert_allclose(p_tiled.sum(axis=0), 1.0, atol=1e-5)
    inner = (slice(None), slice(4, -4), slice(4, -4))
    diff = np.abs(p_tiled[inner] - p_full[inner])
    assert diff.mean() < 1e-3 and diff.max() < 0.05
    assert calls[-1][0] == calls[-1][1] > 1


def test_geojson_pixel_and_georeferenced():
    from affine import Affine

    mask = np.zeros((40, 40), dtype=np.uint8)
    mask[5:25, 5:15] = 1
    pred = postprocess(_probs_from_mask(mask), PreprocessConfig())
    pix = spaces_to_geojson(pred.spaces)
    assert pix["features"][0]["properties"]["status"] == "free" and "crs" not in pix
    transform = Affine(0.1, 0, 500000.0, 0, -0.1, 4649776.0)  # UTM 33N, 0.1 m/px
    geo = georeferenced_geojson(pred.spaces, transform, "EPSG:32633")
    ring = np.array(geo["image_crs"]["features"][0]["geometry"]["coordinates"][0])
    assert ring[:, 0].min() == pytest.approx(500000.5) and ring[:, 1].max() == pytest.approx(4649775.5)
    lonlat = np.array(geo["wgs84"]["features"][0]["geometry"]["coordinates"][0])
    assert 14.9 < lonlat[:, 0].mean() < 15.1 and 41.9 < lonlat[:, 1].mean() < 42.1
    assert georeferenced_geojson(pred.spaces, None, None) is None


def test_tile_features_simple_images_and_frame(color_net):
    flat = np.full((64, 64, 3), 128, dtype=np.uint8)
    f = tile_features(flat)
    assert f["brightness"] == pytest.approx(128 / 255, abs=0.01)
    assert f["contrast"] == 0 and f["sharpness"] == 0 and f["edge_density"] == 0 and f["saturation"] == 0
    assert math.isnan(f["mean_confidence"]) and (f["width"], f["height"]) == (64, 64)
    checker = np.kron(np.indices((8, 8)).sum(axis=0) % 2, np.ones((8, 8))).astype(np.uint8) * 255
    f2 = tile_features(np.repeat(checker[..., None], 3, axis=2))
    assert f2["contrast"] > 0.4 and f2["sharpness"] > 1000 and f2["edge_density"] > 0.05
    red = np.zeros((10, 20, 3), dtype=np.uint8)
    red[..., 0] = 255
    f3 = tile_features(red)
    assert f3["mean_r"] == 1 and f3["mean_g"] == 0 and f3["saturation"] == 1
    seg = OnnxSegmenter(color_net, PreprocessConfig(), threads=1)
    img = lot_image(128, 128)
    pred = predict(seg, img)
    f4 = tile_features(img, pred)
    assert f4["free_spaces"] == pred.free_count and 0 < f4["free_fraction"] < 1
    frame = features_frame([f, f4 | {"request_id": "r1"}])
    assert list(frame.columns) == [*FEATURE_COLUMNS, "request_id"]
    assert frame["free_spaces"].isna().tolist() == [True, False]


def test_fast_argmax_matches_numpy_including_ties():
    from parking_ml.inference import softmax
    from parking_ml.inference.spaces import _argmax_classes

    rng = np.random.default_rng(1)
    probs = softmax(rng.normal(size=(1, 3, 64, 80)).astype(np.float32))[0]
    probs[:, :5, :5] = 1 / 3
    probs[1:, 10:15, :] = 0.5
    probs[0, 10:15, :] = 0.0
    label, top = _argmax_classes(probs)
    np.testing.assert_array_equal(label, probs.argmax(axis=0))
    np.testing.assert_allclose(top, probs.max(axis=0))


def test_normalise_matches_the_training_formula():
    from parking_ml.inference import normalise

    cfg = PreprocessConfig(mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    img = np.random.default_rng(2).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    expected = ((img / 255.0 - np.array(cfg.mean)) / np.array(cfg.std)).transpose(2, 0, 1)
    got = normalise(img, cfg)
    assert got.dtype == np.float32 and got.shape == (3, 37, 53) and got.flags.c_contiguous
    np.testing.assert_allclose(got, expected, atol=1e-5)


class _Recording(OnnxSegmenter):
    """The colour net, remembering the input shapes the network saw."""

    def __init__(self, path, config):
        super().__init__(path, config, threads=1)
        self.shapes = []

    def run_logits(self, batch):
        self.shapes.append(batch.shape)
        return super().run_logits(batch)


def test_images_are_resampled_to_the_model_gsd_and_back(color_net):
    img = lot_image(200, 240, seed=4)
    cfg = PreprocessConfig(gsd=0.2, resample=True, default_image_gsd=0.1, min_area_px=20)
    assert cfg.input_scale(0.1) == 0.5 and cfg.input_scale(None) == 0.5
    assert cfg.input_scale(0.201) == 1.0  # within 2 %: not worth a resample
    assert PreprocessConfig(gsd=0.2).input_scale(0.1) == 1.0  # older packages: never resampled
    seg = _Recording(color_net, cfg)
    pred = predict(seg, img, image_gsd=0.1)
    # the network ran on the 0.2 m/px grid (100 x 120, padded to 128 x 128); the answer is on the image's grid
    assert seg.shapes == [(1, 3, 128, 128)]
    assert pred.mask.shape == (200, 240)
    native = predict(OnnxSegmenter(color_net, PreprocessConfig(min_area_px=80), threads=1), img)
    assert (pred.free_count, pred.occupied_count) == (native.free_count, native.occupied_count)
    inner = (slice(2, -2), slice(2, -2))
    assert (pred.mask[inner] == native.mask[inner]).mean() > 0.97
    # no gsd given: the package's default (0.1 m/px here) is assumed, and the speck filter scales with it
    seg.shapes.clear()
    predict(seg, img)
    assert seg.shapes == [(1, 3, 128, 128)] and cfg.min_area_for(None) == 80
    # a coarser image than the model is upsampled
    seg.shapes.clear()
    assert predict(seg, img, image_gsd=0.4).mask.shape == (200, 240)
    assert seg.shapes == [(1, 3, 416, 480)]
