"""Post-processing: the class map of a probability map and its counted parking spaces (specks dropped,
merged neighbours split, spaces grown back to their edges), and `predict`, image in, spaces out."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from parking_ml.inference.contract import STATUS_BY_CLASS, Prediction, PreprocessConfig, Space
from parking_ml.inference.segmenter import ProgressFn, Segmenter

_PIXEL_CORNERS = np.array([(0, 0), (1, 0), (0, 1), (1, 1)], dtype=np.float32)


def _outer_contours(binary: np.ndarray, labels: np.ndarray) -> dict[int, np.ndarray]:
    """The outer border of each 8-connected component of ``binary`` (points N x 2, x y), by its label in
    ``labels``: one tracing of the whole map instead of one per component (RETR_CCOMP keeps a component
    inside another's hole at the top level; its first point is the component's first pixel in raster order)."""
    import cv2

    contours, hierarchy = cv2.findContours(binary.view(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return {}
    outer = [c for c, h in zip(contours, hierarchy[0], strict=True) if h[3] < 0]
    first = np.array([c[0, 0] for c in outer])
    return dict(zip(labels[first[:, 1], first[:, 0]].tolist(), outer, strict=True))


# a class on less than this share of the image has its components' statistics counted over its own pixels
# (docs/experiments/request-path.md)
SPARSE_SHARE = 1 / 32


def _components(binary: np.ndarray) -> tuple:
    """cv2.connectedComponentsWithStats(binary, connectivity=8), the same four arrays. OpenCV counts its statistics
    at every pixel, background too; for a sparse ``binary`` they are counted over its own pixels, at a fraction of
    the cost (the centres are the same whole-number sums over the same areas)."""
    import cv2

    count = np.count_nonzero(binary)
    if count > binary.size * SPARSE_SHARE:
        return cv2.connectedComponentsWithStats(binary.view(np.uint8), connectivity=8)
    h, w = binary.shape
    n, labels = cv2.connectedComponents(binary.view(np.uint8), connectivity=8)
    # OpenCV's list of the set pixels (x, y, raster order) is several times faster than np.nonzero's
    points = cv2.findNonZero(binary.view(np.uint8)) if count else None
    xs, ys = points.reshape(-1, 2).T.astype(np.int64) if points is not None else np.zeros((2, 0), np.int64)
    lab = labels[ys, xs]
    area = np.bincount(lab, minlength=n)
    left, right = np.full(n, w, np.int64), np.full(n, -1, np.int64)
    top, bottom = np.full(n, h, np.int64), np.full(n, -1, np.int64)
    np.minimum.at(left, lab, xs)
    np.maximum.at(right, lab, xs)
    np.minimum.at(top, lab, ys)
    np.maximum.at(bottom, lab, ys)
    sum_x = np.bincount(lab, weights=xs, minlength=n)
    sum_y = np.bincount(lab, weights=ys, minlength=n)
    # label 0, the background: the rows and columns not wholly covered, and the image's sums less the labelled ones
    rows = np.flatnonzero(np.bincount(ys, minlength=h) < w)
    cols = np.flatnonzero(np.bincount(xs, minlength=w) < h)
    area[0] = binary.size - count
    left[0], right[0], top[0], bottom[0] = cols[0], cols[-1], rows[0], rows[-1]
    sum_x[0] = h * (w * (w - 1) // 2) - int(xs.sum())
    sum_y[0] = w * (h * (h - 1) // 2) - int(ys.sum())
    stats = np.stack([left, top, right - left + 1, bottom - top + 1, area], axis=1).astype(np.int32)
    return n, labels, stats, np.stack([sum_x, sum_y], axis=1) / area[:, None]


def _rectangles(contours: Sequence[np.ndarray], origins: np.ndarray) -> list[list[list[float]]]:
    """Oriented rectangles around components' outer contours, as closed rings in pixel-edge coordinates of the
    full image; ``origins``: each component's box corner (x0, y0), int64 K x 2. One array pass for all of them."""
    import cv2

    if not contours:
        return []
    # the hull's corners bound the same rectangle as every contour point's (a square's Minkowski sum keeps the
    # hull's vertices) at a fraction of minAreaRect's cost
    hulls = [cv2.convexHull(c).reshape(-1, 2) for c in contours]
    sizes = [len(h) for h in hulls]
    # in each component's own box, as the rectangle's float arithmetic has always been done
    local = (np.concatenate(hulls) - np.repeat(origins, sizes, axis=0)).astype(np.float32)
    # contour points are pixel indices; their four corners make the rectangle cover whole pixels
    corners = local[None] + _PIXEL_CORNERS[:, None]
    boxes = np.empty((len(hulls), 4, 2), np.float32)
    start = 0
    for i, size in enumerate(sizes):
        box_corners = np.ascontiguousarray(corners[:, start : start + size].reshape(-1, 2))
        boxes[i] = cv2.boxPoints(cv2.minAreaRect(box_corners))
        start += size
    boxes += origins[:, None, :]
    # closed rings, as GeoJSON wants. x * 100 of a float32 is exact in float64, so numpy's multiply, round half to
    # even and divide give what Python's round(x, 2) gives, for all the rectangles at once
    xy = np.round(boxes.ravel().astype(np.float64), 2).tolist()
    rings = []
    for i in range(0, len(xy), 8):
        ring = [xy[i : i + 2], xy[i + 2 : i + 4], xy[i + 4 : i + 6], xy[i + 6 : i + 8]]
        ring.append(list(ring[0]))
        rings.append(ring)
    return rings


# why: a component holding several confident cores is several merged spaces (docs/experiments/space-split-cores.md)
CORE_PROB = 0.8
# labels below this go through OpenCV's morphology as uint16 (cheapest; background can wrap to the top value)
_U16_LABELS = 65535
_NEIGHBOURS = ((0, 1), (1, 0), (1, 1), (1, -1), (0, -1), (-1, 0), (-1, -1), (-1, 1))


def split_merged(
    binary: np.ndarray,
    prob: np.ndarray,
    min_core: int,
    core_prob: float = CORE_PROB,
    components: tuple[np.ndarray, np.ndarray] | None = None,
    cut: list[int] | None = None,
) -> np.ndarray:
    """Pixels to clear so that a component of ``binary`` holding two or more *cores* (4-connected pixels of
    ``prob`` >= core_prob, at least ``min_core`` px each) falls apart into one space per core.

    Two free stalls whose painted line the network half sees come out as one blob with two peaks of
    probability. Each pixel of such a component goes to its nearest core, and where two cores' pixels meet,
    the higher-numbered side's pixels are cleared: a line 1 px wide that 8-connected counting does not cross.
    ``components`` (labels, stats of an 8-connected labelling) may be given when the caller has one whose
    components include those of ``binary`` (a component dropped whole, such as a speck, may still be in it);
    ``cut``, a list, is given the labels (in ``components``) of the components cut.
    Bool H x W, True where a pixel is to become background."""
    import cv2

    carve = np.zeros(binary.shape, dtype=bool)
    cores = (binary & (prob >= core_prob)).view(np.uint8)
    # two cores of min_core px need 2 x min_core core pixels: most calls (split_oversized tries up to six
    # levels per large component) stop here without labelling (docs/experiments/postprocess-core-precheck.md)
    if np.count_nonzero(cores) < 2 * max(1, min_core):
        return carve
    # only the cores' areas are needed: counted over the core pixels alone, cheaper than OpenCV's statistics
    n, core_labels = cv2.connectedComponents(cores, connectivity=4)
    if n <= 2:
        return carve
    on_core = cores.view(bool)
    core_of = core_labels[on_core]
    core_area = np.bincount(core_of, minlength=n)
    big = core_area >= min_core
    big[0] = False
    if big.sum() < 2:
        return carve
    if components is None:
        _, labels, stats, _ = cv2.connectedComponentsWithStats(binary.view(np.uint8), connectivity=8)
    else:
        labels, stats = components
    m = len(stats)
    # cores per component: a component is only worked on (in its bounding box) when it holds two or more.
    # A core lies in one component, so the mean component label over its pixels is that component (a sum per
    # label: sorting every core pixel was slow on large images)
    label_sum = np.bincount(core_of, weights=labels[on_core], minlength=n)
    owner = np.rint(label_sum / np.maximum(core_area, 1)).astype(np.int64)
    per_component = np.bincount(owner[big], minlength=m)
    targets = np.flatnonzero(per_component >= 2)
    if not targets.size:
        return carve
    # the big cores' pixels, set over the core pixels alone rather than looked up at every pixel of a box
    big_core = np.zeros(cores.shape, dtype=bool)
    big_core[on_core] = big[core_of]
    for k in targets:
        x0, y0, w, h = (int(v) for v in stats[k, :4])
        inside = labels[y0 : y0 + h, x0 : x0 + w] == k
        seeds = big_core[y0 : y0 + h, x0 : x0 + w] & inside
        _, nearest = cv2.distanceTransformWithLabels(
            (~seeds).view(np.uint8), cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_CCOMP
        )
        # the transform numbers the seeds' 8-connected groups: no more labels than big cores
        lines = _lower_neighbour(nearest, inside, int(big.sum()))
        carve[y0 : y0 + h, x0 : x0 + w] |= lines
        if cut is not None and lines.any():
            cut.append(int(k))
    return carve


def _lower_neighbour(nearest: np.ndarray, inside: np.ndarray, most: int) -> np.ndarray:
    """True where a pixel of ``inside`` has an 8-neighbour in ``inside`` of a lower label in ``nearest`` (int, >= 1,
    at most ``most``)."""
    import cv2

    if most < _U16_LABELS:
        lab = np.empty(nearest.shape, dtype=np.uint16)
        np.multiply(nearest, inside, out=lab, casting="unsafe")
        # 0 - 1 wraps to 65535, above every label: the erosion's minimum is the lowest label around, less one
        lowest = cv2.erode(lab - np.uint16(1), np.ones((3, 3), np.uint8)) + np.uint16(1)
        return inside & (lowest < lab)
    labels = np.where(inside, nearest, 0)
    h, w = labels.shape
    padded = np.pad(labels, 1)
    cut = np.zeros(labels.shape, dtype=bool)
    for dy, dx in _NEIGHBOURS:
        other = padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
        cut |= (other > 0) & (other < labels)
    return cut


# why: a component of OVERSIZE x the image's typical space is several stalls the cores did not part; it is split
# at the first of SPLIT_LEVELS that parts it, typical spaces never (docs/experiments/oversize-split.md)
OVERSIZE = 1.6
SPLIT_LEVELS = (0.85, 0.9, 0.93, 0.96, 0.98, 0.99)
# a median of fewer spaces than this says nothing of the image's stall size
MIN_SPACES_FOR_TYPICAL = 3


def typical_space_area(component_areas: Sequence[np.ndarray], min_area: int) -> float | None:
    """Median pixel area of the spaces (components of at least ``min_area`` px; one array of component areas
    per class), or None when there are fewer than MIN_SPACES_FOR_TYPICAL."""
    every = np.concatenate([np.asarray(a)[np.asarray(a) >= min_area] for a in component_areas])
    return float(np.median(every)) if every.size >= MIN_SPACES_FOR_TYPICAL else None


def split_oversized(
    labels: np.ndarray,
    stats: np.ndarray,
    prob: np.ndarray,
    min_core: int,
    typical_area: float,
    levels: Sequence[float] = SPLIT_LEVELS,
    cut: list[int] | None = None,
) -> np.ndarray:
    """Pixels to clear so that each component (``labels`` and ``stats`` of cv2.connectedComponentsWithStats)
    of at least OVERSIZE x ``typical_area`` px falls apart at the first core level (see split_merged) that
    parts it in two or more; ``levels`` ascend; ``cut``, a list, is given the labels of the components cut.
    Bool H x W."""
    import cv2

    carve = np.zeros(labels.shape, dtype=bool)
    oversized = stats[:, cv2.CC_STAT_AREA] >= OVERSIZE * typical_area
    oversized[0] = False  # label 0 is everything else
    for k in np.flatnonzero(oversized):
        x0, y0, w, h = (int(v) for v in stats[k, :4])
        inside = labels[y0 : y0 + h, x0 : x0 + w] == k
        window = prob[y0 : y0 + h, x0 : x0 + w]
        # split_merged's own pre-check, done once on the component's values: a level holding fewer than two
        # cores' pixels cannot part it (docs/experiments/postprocess-core-precheck.md)
        values = window[inside]
        # the window holds this one component (label 1, the whole box): split_merged need not label it again
        whole = (inside.view(np.uint8), np.array([[0, 0, 0, 0, 0], [0, 0, w, h, values.size]]))
        for level in levels:
            if np.count_nonzero(values >= level) < 2 * max(1, min_core):
                break  # the levels ascend: a higher one holds no more pixels
            lines = split_merged(inside, window, min_core, core_prob=level, components=whole)
            if lines.any() and cv2.connectedComponents((inside & ~lines).view(np.uint8), connectivity=8)[0] > 2:
                carve[y0 : y0 + h, x0 : x0 + w] |= lines
                if cut is not None:
                    cut.append(int(k))
                break
    return carve


# rows of a raster grown at once (see grow_spaces)
GROW_BLOCK_ROWS = 1024


def _one_owner(lab: np.ndarray, k5: np.ndarray) -> np.ndarray:
    """True where the labelled pixels within 2 px all carry one label (also where there are none: growth asks
    only beside a space). ``lab``: float32 or uint16 labels, 0 background."""
    import cv2

    if lab.dtype == np.uint16:
        # 0 - 1 wraps to 65535, above every label: the erosion's minimum is the lowest label in reach, less one
        lowest = cv2.erode(lab - np.uint16(1), k5) + np.uint16(1)
    else:
        lowest = cv2.erode(np.where(lab > 0, lab, np.float32(np.iinfo(np.int32).max)), k5)
    return cv2.dilate(lab, k5) == lowest


# why: the gap weight pulls predicted edges inwards; growing into the narrowly-background pixels gives them back
# (docs/experiments/free-growth.md)
def grow_spaces(labels: np.ndarray, room: np.ndarray, steps: int) -> np.ndarray:
    """``labels`` (int, 0 background, one label per space) grown ``steps`` times by one pixel into the True
    pixels of ``room``: a pixel joins the space beside it when no other space lies within 2 px of it, so two
    spaces never touch (8-connected) and the count stays what it was. Row blocks with a halo of 2 px a step
    bound the memory on a large raster; the result is the same as in one piece."""
    import cv2

    out = labels.copy()
    if steps <= 0 or not room.any():
        return out
    halo = 2 * steps
    k3, k5 = np.ones((3, 3), np.uint8), np.ones((5, 5), np.uint8)
    # OpenCV's min/max filters take uint16 and float32 (exact up to 2**24), not int32
    dtype = np.uint16 if int(labels.max()) < _U16_LABELS else np.float32
    h = labels.shape[0]
    for r0 in range(0, h, GROW_BLOCK_ROWS):
        r1 = min(h, r0 + GROW_BLOCK_ROWS)
        a, b = max(0, r0 - halo), min(h, r1 + halo)
        lab = labels[a:b].astype(dtype)
        free_room = room[a:b] & (lab == 0)
        for _ in range(steps):
            beside = cv2.dilate(lab, k3)
            ys, xs = np.nonzero(free_room & (beside > 0))
            sole = _one_owner(lab, k5)[ys, xs]
            if not sole.any():
                break
            ys, xs = ys[sole], xs[sole]
            lab[ys, xs] = beside[ys, xs]
            free_room[ys, xs] = False
        out[r0:r1] = lab[r0 - a : r0 - a + (r1 - r0)]
    return out


def _argmax_classes(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(argmax over axis 0 as uint8, max over axis 0): numpy's argmax along the first axis of a
    C x H x W array is several times slower than C-1 elementwise comparisons. Ties go to the lower class,
    as with argmax."""
    top = probs[0].copy()
    label = np.zeros(probs.shape[1:], dtype=np.uint8)
    for c in range(1, probs.shape[0]):
        better = probs[c] > top
        label[better] = c
        np.maximum(top, probs[c], out=top)
    return label, top


def _relabel_cut(components: tuple, carve: np.ndarray, cut: list[int], binary: np.ndarray) -> tuple:
    """The labelling (n, labels, stats, centroids of cv2.connectedComponentsWithStats) of ``binary``, the labelled
    pixels less ``carve``'s, which cut the components labelled ``cut``: only those are labelled again, each in its
    own box; their pieces take new labels after the last and their old rows keep area 0 (``labels`` and ``stats``
    change in place). Labels then no longer follow raster order, which nothing depends on (postprocess orders the
    spaces by their first pixel)."""
    import cv2

    n, labels, stats, centroids = components
    boxes = stats[cut, cv2.CC_STAT_WIDTH].astype(np.int64) * stats[cut, cv2.CC_STAT_HEIGHT]
    if boxes.sum() > labels.size // 2:
        # boxes this large cost more to patch than the whole image to label
        return _components(binary)
    rows, centres = [stats], [centroids]
    for k in cut:
        x0, y0, w, h = stats[k, :4].tolist()
        window = labels[y0 : y0 + h, x0 : x0 + w]
        mine = window == k
        piece = mine & ~carve[y0 : y0 + h, x0 : x0 + w]
        m, sub, sub_stats, sub_centres = cv2.connectedComponentsWithStats(piece.view(np.uint8), connectivity=8)
        sub += np.int32(n - 1)
        sub[~piece] = 0
        np.copyto(window, sub, where=mine)
        sub_stats, sub_centres = sub_stats[1:], sub_centres[1:]
        sub_stats[:, 0] += x0
        sub_stats[:, 1] += y0
        area = sub_stats[:, cv2.CC_STAT_AREA, None].astype(np.float64)
        # OpenCV divides whole-number coordinate sums by the area; the box's sums are recovered exactly (far below
        # 2**52) and moved to the image's origin, so each centre is the one a labelling of the whole image gives
        sums = np.rint(sub_centres * area) + np.array([x0, y0], dtype=np.float64) * area
        rows.append(sub_stats)
        centres.append(sums / area)
        stats[k, cv2.CC_STAT_AREA] = 0
        n += m - 1
    return n, labels, np.concatenate(rows), np.concatenate(centres)


def _clean_class(
    mask: np.ndarray, probs: np.ndarray, cls: int, min_area: int, steps: int, grow_prob: float
) -> tuple | None:
    """In place on ``mask``: class ``cls``'s specks dropped, merged neighbours split, spaces grown ``steps`` px.
    Returns the cleaned class's labelling (n, labels, stats, centroids; a dropped speck's label cleared and its
    area set to 0, a cut's pieces labelled again), or None where growth relabelled or grew the class."""
    import cv2

    binary = mask == cls
    n, labels, stats, centroids = _components(binary)
    if n <= 1:
        return n, labels, stats, centroids
    small = stats[:, cv2.CC_STAT_AREA] < min_area
    small[0] = False  # label 0 is everything else
    if small.any():
        # tiny specks are noise, not spaces: drop them from the map too so map and counts agree;
        # one vectorised pass, as a noisy map can hold tens of thousands of them
        keep = ~np.take(small, labels)
        # multiplying by a boolean clears in one pass what a masked assignment gathers first
        np.multiply(mask, keep, out=mask)
        binary &= keep
        # the other spaces keep their labels: growth needs one label per space, not consecutive ones
        np.multiply(labels, keep, out=labels)
    # a speck cannot hold two cores of min_area px: this labelling serves split_merged as it is
    cut: list[int] = []
    carve = split_merged(binary, probs[cls], min_area, components=(labels, stats), cut=cut)
    if cut:
        keep = ~carve
        np.multiply(mask, keep, out=mask)
        binary &= keep
    if steps > 0:
        # a cut leaves both halves one label (growth would bridge the cut); many specks, high labels
        relabelled = bool(cut) or bool(small.any() and n > _U16_LABELS)
        if relabelled:
            _, labels = cv2.connectedComponents(binary.view(np.uint8), connectivity=8)
        grown = grow_spaces(labels, (mask == 0) & (probs[cls] >= grow_prob), steps)
        added = (grown > 0) & (labels == 0)
        if added.any():
            mask[added] = cls
        if relabelled or added.any():
            return None
    stats[small, cv2.CC_STAT_AREA] = 0
    if cut:
        return _relabel_cut((n, labels, stats, centroids), carve, cut, binary)
    return n, labels, stats, centroids


# (centre y, centre x, first pixel y, x, status, confidence, area, polygon)
_Found = tuple[float, float, int, int, str, float, int, list[list[float]]]


def _spaces_of_class(
    mask: np.ndarray, probs: np.ndarray, cls: int, min_area: int, typical: float | None, components: tuple
) -> list[_Found]:
    """Class ``cls``'s spaces (oversized ones split first, on ``mask`` in place), as _Found tuples."""
    import cv2

    n, labels, stats, centroids = components
    status = STATUS_BY_CLASS[cls]
    if typical is not None:
        cut: list[int] = []
        carve = split_oversized(labels, stats, probs[cls], min_area, typical, cut=cut)
        if cut:
            np.multiply(mask, ~carve, out=mask)
            n, labels, stats, centroids = _relabel_cut(components, carve, cut, mask == cls)
    found: list[_Found] = []
    if n <= 1:
        return found
    contours = _outer_contours(labels > 0, labels)
    prob = probs[cls]
    # a speck the cleaning dropped keeps its row with area 0
    kept = [k for k in range(1, n) if stats[k, cv2.CC_STAT_AREA] > 0]
    rings = _rectangles([contours[k] for k in kept], stats[kept, :2].astype(np.int64))
    for k, ring in zip(kept, rings, strict=True):
        x0, y0, bw, bh, area = stats[k].tolist()
        values = prob[y0 : y0 + bh, x0 : x0 + bw][labels[y0 : y0 + bh, x0 : x0 + bw] == k]
        # ndarray.mean's own arithmetic (a float32 pairwise sum, divided in float64, rounded to float32) without
        # its wrapper's cost, ~5 us a space
        conf = float(np.float32(float(np.add.reduce(values)) / values.size))
        cx, cy = centroids[k].tolist()
        first_x, first_y = contours[k][0, 0].tolist()
        found.append((cy, cx, first_y, first_x, status, conf, area, ring))
    return found


def postprocess(probs: np.ndarray, config: PreprocessConfig, image_gsd: float | None = None) -> Prediction:
    """Class map and counted spaces from C x H x W probabilities."""
    import cv2

    if probs.ndim != 3:
        raise ValueError(f"expected C x H x W probabilities, got shape {probs.shape}")
    # row blocks: argmax's int64 and max's float copies of a 100 MP raster would cost gigabytes at once
    mask = np.empty(probs.shape[1:], dtype=np.uint8)
    conf_sum = 0.0
    for r in range(0, probs.shape[1], 1024):
        best, conf = _argmax_classes(probs[:, r : r + 1024])
        mask[r : r + 1024] = best
        conf_sum += float(conf.sum(dtype=np.float64))
    min_area = config.min_area_for(image_gsd)
    steps = config.grow_px_for(image_gsd)
    classes = [cls for cls in STATUS_BY_CLASS if cls < probs.shape[0]]
    # one labelling per class serves the typical size, the split and the spaces: the cleaning's own where it
    # cut or grew nothing, else a new one (and again only where an oversized space was cut)
    components = {}
    for cls in classes:
        # a class's cleaning changes only its own pixels and background: each class's labelling stays valid
        components[cls] = _clean_class(mask, probs, cls, min_area, steps, config.grow_prob[cls - 1])
    for cls in classes:
        if components[cls] is None:
            components[cls] = _components(mask == cls)
    typical = typical_space_area([c[2][1:, cv2.CC_STAT_AREA] for c in components.values()], min_area)
    ranked: list[tuple[int, _Found]] = []
    for rank, (cls, parts) in enumerate(components.items()):
        ranked += [(rank, f) for f in _spaces_of_class(mask, probs, cls, min_area, typical, parts)]
    # by centre row, then column; a tie goes by class, then by first pixel in raster order (the labels' order
    # once, which a cut's new labels no longer follow)
    ranked.sort(key=lambda r: (round(r[1][0]), r[1][1], r[0], r[1][2], r[1][3]))
    spaces = [
        Space(id=i + 1, status=s, confidence=round(c, 4), area_px=a, polygon=poly)
        for i, (_, (_, _, _, _, s, c, a, poly)) in enumerate(ranked)
    ]
    free = sum(1 for s in spaces if s.status == "free")
    occupied = len(spaces) - free
    total = free + occupied
    return Prediction(
        mask=mask,
        spaces=spaces,
        free_count=free,
        occupied_count=occupied,
        occupancy_rate=round(occupied / total, 4) if total else None,
        mean_confidence=conf_sum / max(1, mask.size),
        free_fraction=np.count_nonzero(mask == 1) / max(1, mask.size),
    )


def predict(
    segmenter: Segmenter,
    rgb: np.ndarray,
    image_gsd: float | None = None,
    progress: ProgressFn | None = None,
    keep_free_prob: bool = False,
) -> Prediction:
    """Image in, counted spaces out, with per-stage timings in milliseconds.

    ``keep_free_prob`` also keeps the free class's probability map (for evaluation, not for the API)."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    segmenter.start_embedding()
    probs = segmenter.predict_probs(rgb, progress=progress, timings=timings, image_gsd=image_gsd)
    t1 = time.perf_counter()
    pred = postprocess(probs, segmenter.config, image_gsd=image_gsd)
    pred.embedding = segmenter.take_embedding()
    t2 = time.perf_counter()
    timings["postprocess_ms"] = (t2 - t1) * 1000
    timings["total_ms"] = (t2 - t0) * 1000
    pred.timings_ms = {k: round(v, 2) for k, v in timings.items()}
    if keep_free_prob:
        pred.free_prob = probs[1].astype(np.float16)
    return pred
