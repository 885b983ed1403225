"""Evaluation metrics: ONE `evaluate` used by CV folds, the holdout check and the promotion gate.

Masks are class maps (0 background, 1 free, 2 occupied, 255 ignore in the truth). Pixel metrics pool the
pixels of all tiles; space metrics pool matched connected components of class 1 (8-connectivity, as the
inference post-processing counts them); count error is averaged per tile.

Ignored truth is an ignore *region*, as crowd regions are in COCO: a predicted space lying mostly on ignored
truth (a stall hidden under a canopy, cut to a sliver by the tile edge, or on a lot whose paint does not
show) is neither counted nor scored, with the background pixels around it that it covers. Clipping it to
the labelled pixels instead left the part that spills over the painted line between two ignored stalls:
a stray fragment counted as a space, and false-positive pixels, for finding what is really there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

IGNORE_INDEX = 255
CLASS_NAMES = ("background", "free", "occupied")
MATCH_IOU = 0.5
# a predicted space with at least this share of its pixels on ignored truth is ignored as a whole
IGNORED_SHARE = 0.5
# metrics where lower is better (the promotion gate needs to know the direction)
LOWER_IS_BETTER = frozenset({"free_count_mae"})


def confusion_matrix(pred: np.ndarray, true: np.ndarray, classes: int = 3) -> np.ndarray:
    """classes x classes counts, rows = truth, columns = prediction; ignored truth pixels are skipped."""
    valid = true != IGNORE_INDEX
    t = true[valid].astype(np.int64)
    p = np.clip(pred[valid].astype(np.int64), 0, classes - 1)
    return np.bincount(t * classes + p, minlength=classes * classes).reshape(classes, classes)


def ignore_predictions_on_ignored(pred: np.ndarray, true: np.ndarray, share: float = IGNORED_SHARE) -> np.ndarray:
    """The truth with the background under every predicted space (class 1 or 2 component, 8-connected) that
    lies at least ``share`` on ignored truth marked ignored too; labelled spaces stay as they are."""
    import cv2

    ignored = true == IGNORE_INDEX
    if not ignored.any():
        return true
    out = true
    for cls in (1, 2):
        n, labels = cv2.connectedComponents((pred == cls).astype(np.uint8), connectivity=8)
        if n <= 1:
            continue
        area = np.bincount(labels.ravel(), minlength=n)
        on_ignored = np.bincount(labels[ignored], minlength=n)
        drop = on_ignored >= share * np.maximum(area, 1)
        drop[0] = False
        if drop.any():
            if out is true:
                out = true.copy()
            out[drop[labels] & (true == 0)] = IGNORE_INDEX
    return out


def _matched_labels(
    pred: np.ndarray, true: np.ndarray, iou: float = MATCH_IOU
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(predicted space labels, true space labels, matched flag per predicted label, matched flag per true
    label; label 0 is everything else, never matched): class-1 components matched one-to-one at IoU >= iou.

    A predicted space is its pixels on labelled truth: it counts once however ignored truth crosses it, and
    not at all when it lies wholly on ignored truth. Labelling the map with its ignored pixels cleared had cut
    a space reaching over an ignored stall at a tile's edge into pieces, each counted (on 96 fresh lots of a
    demo model: 18 of 384 tiles miscounted, 379 spaces against 394 true, then 399 once spaces grew 2 px)."""
    import cv2

    n_p, lp = cv2.connectedComponents((pred == 1).astype(np.uint8), connectivity=8)
    ignored = true == IGNORE_INDEX
    if n_p > 1 and ignored.any():
        lp[ignored] = 0
        # renumber the spaces left, 1..k, dropping those that lay wholly on ignored truth
        keep = np.bincount(lp.ravel(), minlength=n_p) > 0
        keep[0] = True
        lp = (np.cumsum(keep) - 1).astype(lp.dtype)[lp]
        n_p = int(keep.sum())
    n_t, lt = cv2.connectedComponents((true == 1).astype(np.uint8), connectivity=8)
    matched_p = np.zeros(n_p, dtype=bool)
    matched_t = np.zeros(n_t, dtype=bool)
    if n_p <= 1 or n_t <= 1:
        return lp, lt, matched_p, matched_t
    # every pair's overlap from one count over (predicted label, true label) pairs: one pass over the tile,
    # not one per pair
    flat_p, flat_t = lp.ravel().astype(np.int64), lt.ravel().astype(np.int64)
    inter = np.bincount(flat_p * n_t + flat_t, minlength=n_p * n_t).reshape(n_p, n_t)[1:, 1:]
    union = np.bincount(flat_p, minlength=n_p)[1:, None] + np.bincount(flat_t, minlength=n_t)[None, 1:] - inter
    i, j = np.nonzero(inter)
    values = inter[i, j] / union[i, j]
    keep = values >= iou
    for _, a, b in sorted(zip(values[keep].tolist(), i[keep].tolist(), j[keep].tolist(), strict=True), reverse=True):
        if not matched_p[a + 1] and not matched_t[b + 1]:
            matched_p[a + 1] = matched_t[b + 1] = True
    return lp, lt, matched_p, matched_t


def match_spaces(pred: np.ndarray, true: np.ndarray, iou: float = MATCH_IOU) -> tuple[int, int, int]:
    """(true positives, predicted count, true count) of class-1 components matched one-to-one at IoU >= iou
    (see _matched_labels)."""
    return _space_counts(*_matched_labels(pred, true, iou)[2:])


def _space_counts(matched_p: np.ndarray, matched_t: np.ndarray) -> tuple[int, int, int]:
    """(true positives, predicted count, true count) from _matched_labels' flags (index 0 is no space)."""
    return int(matched_p.sum()), len(matched_p) - 1, len(matched_t) - 1


# where the free class's wrong pixels lie (see free_error_pixels); evaluate() reports each as a share of the
# free class's union of truth and prediction, so that they sum to 1 - iou_free
FREE_ERROR_KINDS = (
    "outline_missed",  # truly free pixels of a found space (matched at MATCH_IOU) predicted background
    "outline_extra",  # background predicted as part of a found space, beyond its true outline
    "missed_spaces",  # truly free pixels of a space not found, predicted background
    "false_spaces",  # background predicted as a space that matches no true one
    "swapped",  # free predicted occupied, or occupied predicted free
)


def free_error_pixels(
    pred: np.ndarray, true: np.ndarray, lp: np.ndarray, lt: np.ndarray, matched_p: np.ndarray, matched_t: np.ndarray
) -> dict[str, int]:
    """The free class's wrong labelled pixels of one tile by FREE_ERROR_KINDS (``true`` as evaluate() scores
    it; labels and matches from _matched_labels)."""
    valid = true != IGNORE_INDEX
    missed = (true == 1) & (pred != 1)
    extra = (pred == 1) & (true != 1) & valid
    swapped = missed & (pred == 2)
    missed &= ~swapped
    on_occupied = extra & (true == 2)
    extra &= ~on_occupied
    found_t = matched_t[lt]
    found_p = matched_p[lp]
    return {
        "outline_missed": int(np.count_nonzero(missed & found_t)),
        "outline_extra": int(np.count_nonzero(extra & found_p)),
        "missed_spaces": int(np.count_nonzero(missed & ~found_t)),
        "false_spaces": int(np.count_nonzero(extra & ~found_p)),
        "swapped": int(np.count_nonzero(swapped) + np.count_nonzero(on_occupied)),
    }


def _polygon_mask(shape: tuple[int, int], polygon: Sequence[Sequence[float]]) -> np.ndarray:
    import cv2

    out = np.zeros(shape, dtype=np.uint8)
    pts = np.round(np.asarray(polygon, dtype=np.float64)).astype(np.int32).reshape(-1, 1, 2)
    cv2.fillPoly(out, [pts], 1)
    return out.astype(bool)


def _stall_items(stalls: Any) -> list[tuple[list, str]]:
    """Accept a GeoJSON FeatureCollection (pixel coordinates) or a list of {"polygon", "status"}."""
    if stalls is None:
        return []
    if isinstance(stalls, Mapping) and "features" in stalls:
        out = []
        for feat in stalls["features"]:
            props = feat.get("properties") or {}
            if props.get("ignore"):
                continue
            out.append((feat["geometry"]["coordinates"][0], str(props.get("status", ""))))
        return out
    return [(s["polygon"], str(s["status"])) for s in stalls]


def _safe_div(a: float, b: float) -> float:
    return float(a / b) if b else 0.0


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


def free_average_precision(free_probs: Sequence[np.ndarray], true_masks: Sequence[np.ndarray]) -> float:
    """Average precision of the free-class probability over all labelled pixels of all tiles.

    Threshold-free: it ranks models that are still too unsure to put any pixel's argmax on "free" (a CV fold
    model after a few dozen steps), where every argmax metric is 0. 0.0 when no pixel is truly free.
    """
    from sklearn.metrics import average_precision_score

    ys, ps = [], []
    for k, (prob, true) in enumerate(zip(free_probs, true_masks, strict=True)):
        prob, true = np.asarray(prob), np.asarray(true)
        if prob.shape != true.shape:
            raise ValueError(f"tile {k}: free probabilities {prob.shape} and true mask {true.shape} differ")
        valid = true != IGNORE_INDEX
        ys.append(true[valid] == 1)
        ps.append(prob[valid].astype(np.float32))
    y = np.concatenate(ys) if ys else np.zeros(0, dtype=bool)
    if not y.any():
        return 0.0
    return float(average_precision_score(y, np.concatenate(ps)))


def evaluate(
    pred_masks: Sequence[np.ndarray],
    true_masks: Sequence[np.ndarray],
    stalls: Sequence[Any] | None = None,
    free_probs: Sequence[np.ndarray] | None = None,
) -> dict[str, Any]:
    """Metrics of predicted class maps against true ones (same order, same shapes).

    Returns floats: iou_background, iou_free, iou_occupied, miou (mean over classes present in truth or
    prediction), free_precision/free_recall/free_f1 (pixels), space_precision/space_recall/space_f1
    (class-1 components matched at IoU >= 0.5), free_count_mae (mean |predicted - true| free spaces per tile),
    stall_accuracy (share of known stalls whose majority predicted class matches their status; only when
    stalls are given), free_ap (average precision of the free-class probability; only when free_probs, one
    H x W array per tile, are given), free_err_<kind> for each of FREE_ERROR_KINDS (where free IoU is lost:
    shares of the free union that sum to 1 - iou_free), n_tiles; plus "confusion" (3 x 3 list, rows truth).
    Classes absent from both truth and prediction get IoU 1.0 (nothing to get wrong).
    """
    if len(pred_masks) != len(true_masks):
        raise ValueError(f"{len(pred_masks)} predicted masks but {len(true_masks)} true masks")
    if free_probs is not None and len(free_probs) != len(true_masks):
        raise ValueError(f"free probabilities given for {len(free_probs)} tiles but there are {len(true_masks)} masks")
    if stalls is not None and len(stalls) != len(true_masks):
        raise ValueError(f"stalls given for {len(stalls)} tiles but there are {len(true_masks)} masks")
    conf = np.zeros((3, 3), dtype=np.int64)
    tp_s = n_pred_s = n_true_s = 0
    count_errors: list[float] = []
    free_errors = dict.fromkeys(FREE_ERROR_KINDS, 0)
    stall_total = stall_correct = 0
    for k, (pred, true) in enumerate(zip(pred_masks, true_masks, strict=True)):
        pred = np.asarray(pred)
        true = np.asarray(true)
        if pred.shape != true.shape:
            raise ValueError(f"tile {k}: predicted mask {pred.shape} and true mask {true.shape} differ")
        true = ignore_predictions_on_ignored(pred, true)
        conf += confusion_matrix(pred, true)
        labels = _matched_labels(pred, true)
        tp, npred, ntrue = _space_counts(labels[2], labels[3])
        tp_s, n_pred_s, n_true_s = tp_s + tp, n_pred_s + npred, n_true_s + ntrue
        for kind, n in free_error_pixels(pred, true, *labels).items():
            free_errors[kind] += n
        count_errors.append(abs(npred - ntrue))
        if stalls is not None:
            for polygon, status in _stall_items(stalls[k]):
                if status not in ("free", "occupied"):
                    continue
                region = _polygon_mask(true.shape, polygon)
                n_free = int(np.sum(pred[region] == 1))
                n_occ = int(np.sum(pred[region] == 2))
                predicted = "free" if n_free > n_occ else "occupied" if n_occ > n_free else "none"
                stall_total += 1
                stall_correct += int(predicted == status)
    out: dict[str, Any] = {}
    ious = []
    for c, name in enumerate(CLASS_NAMES):
        inter = conf[c, c]
        union = conf[c, :].sum() + conf[:, c].sum() - inter
        iou = _safe_div(inter, union) if union else 1.0
        out[f"iou_{name}"] = iou
        if union:
            ious.append(iou)
    out["miou"] = float(np.mean(ious)) if ious else 1.0
    no_free = conf[:, 1].sum() == 0 and conf[1, :].sum() == 0
    precision = 1.0 if no_free else _safe_div(conf[1, 1], conf[:, 1].sum())
    recall = 1.0 if no_free else _safe_div(conf[1, 1], conf[1, :].sum())
    out["free_precision"], out["free_recall"], out["free_f1"] = precision, recall, _f1(precision, recall)
    free_union = conf[1, :].sum() + conf[:, 1].sum() - conf[1, 1]
    for kind, n in free_errors.items():
        out[f"free_err_{kind}"] = _safe_div(n, free_union) if free_union else 0.0
    sp = _safe_div(tp_s, n_pred_s) if n_pred_s else float(n_true_s == 0)
    sr = _safe_div(tp_s, n_true_s) if n_true_s else float(n_pred_s == 0)
    out["space_precision"], out["space_recall"] = sp, sr
    out["space_f1"] = _f1(sp, sr)
    out["free_count_mae"] = float(np.mean(count_errors)) if count_errors else 0.0
    if stalls is not None:
        out["stall_accuracy"] = _safe_div(stall_correct, stall_total) if stall_total else float("nan")
    if free_probs is not None:
        out["free_ap"] = free_average_precision(free_probs, true_masks)
    out["n_tiles"] = len(true_masks)
    out["confusion"] = conf.tolist()
    return out


def scalar_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The float entries of an evaluate() result (for mlflow.log_metrics / tags), optionally prefixed."""
    out = {}
    for key, value in metrics.items():
        numeric = isinstance(value, int | float | np.floating | np.integer) and not isinstance(value, bool)
        if numeric and np.isfinite(float(value)):
            out[f"{prefix}{key}"] = float(value)
    return out
