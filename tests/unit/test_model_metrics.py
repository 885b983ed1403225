"""metrics.evaluate on hand-made masks; every expected value is counted by hand in the comments."""

from __future__ import annotations

import numpy as np
import pytest

from parking_ml.model.metrics import FREE_ERROR_KINDS, evaluate, match_spaces, scalar_metrics


def _masks():
    # truth: two free spaces (2x2 each) and one occupied (2x2) on an 6x6 tile
    true = np.zeros((6, 6), np.uint8)
    true[0:2, 0:2] = 1  # space A, 4 px
    true[0:2, 4:6] = 1  # space B, 4 px
    true[4:6, 0:2] = 2  # occupied, 4 px
    pred = np.zeros((6, 6), np.uint8)
    pred[0:2, 0:2] = 1  # A exactly
    pred[0:1, 4:6] = 1  # half of B: 2 px, IoU 2/4 = 0.5 -> still a match
    pred[4:6, 0:1] = 2  # half of the occupied one: 2 px
    pred[4:6, 1:2] = 1  # the other half predicted free: 2 false-positive free px (a third component)
    return pred, true


def test_pixel_metrics_by_hand():
    pred, true = _masks()
    m = evaluate([pred], [true])
    # free: TP = 4 (A) + 2 (B) = 6; FP = 2; FN = 2  -> P = 6/8, R = 6/8, IoU = 6/10
    assert m["free_precision"] == pytest.approx(0.75)
    assert m["free_recall"] == pytest.approx(0.75)
    assert m["free_f1"] == pytest.approx(0.75)
    assert m["iou_free"] == pytest.approx(0.6)
    # occupied: TP 2, FN 2, FP 0 -> IoU 2/4
    assert m["iou_occupied"] == pytest.approx(0.5)
    # background: truth 36 - 12 = 24 px, all predicted bg (TP 24, FN 0); predicted bg = 36 - 10 = 26 px
    # (pred has 4 + 2 + 2 + 2 non-bg), 2 of them B's lower half -> FP 2 -> IoU 24/26
    assert m["iou_background"] == pytest.approx(24 / 26)
    assert m["miou"] == pytest.approx((24 / 26 + 0.6 + 0.5) / 3)
    assert m["confusion"] == [[24, 0, 0], [2, 6, 0], [0, 2, 2]]


def test_space_detection_and_count_by_hand():
    pred, true = _masks()
    # predicted free components: A, half-B (IoU 0.5), the stray column at (4:6, 1) -> 3; true: 2
    tp, npred, ntrue = match_spaces(pred, true)
    assert (tp, npred, ntrue) == (2, 3, 2)
    m = evaluate([pred], [true])
    assert m["space_precision"] == pytest.approx(2 / 3)
    assert m["space_recall"] == pytest.approx(1.0)
    assert m["space_f1"] == pytest.approx(0.8)
    assert m["free_count_mae"] == pytest.approx(1.0)


def test_free_errors_by_kind_by_hand_sum_to_what_free_iou_misses():
    pred, true = _masks()
    m = evaluate([pred], [true])
    # free union 10 px (TP 6, FN 2, FP 2): B's lower half (B was found) is a missed outline, the 2 free px
    # predicted on the occupied stall are swapped classes
    assert m["free_err_outline_missed"] == pytest.approx(0.2)
    assert m["free_err_swapped"] == pytest.approx(0.2)
    assert m["free_err_outline_extra"] == m["free_err_missed_spaces"] == m["free_err_false_spaces"] == 0.0
    assert sum(m[f"free_err_{k}"] for k in FREE_ERROR_KINDS) == pytest.approx(1 - m["iou_free"])

    true = np.zeros((6, 12), np.uint8)
    true[0:2, 0:4] = 1  # S: 8 px, found, its prediction 2 px too long
    true[4:6, 0:4] = 1  # M: 8 px, only 3 of them predicted (IoU 3/8): not found
    pred = np.zeros_like(true)
    pred[0:2, 0:5] = 1
    pred[4, 0:3] = 1
    pred[0:2, 9:12] = 1  # a false space: 6 px of background
    m = evaluate([pred], [true])
    # union: TP 8 + 3, FN 5 (M's rest), FP 2 (S's extra column) + 6 (the false space) = 24
    assert m["iou_free"] == pytest.approx(11 / 24)
    assert m["free_err_outline_extra"] == pytest.approx(2 / 24)
    assert m["free_err_missed_spaces"] == pytest.approx(5 / 24)
    assert m["free_err_false_spaces"] == pytest.approx(6 / 24)
    assert m["free_err_outline_missed"] == m["free_err_swapped"] == 0.0
    # the 3 px found of M are a predicted space matching nothing, but they are truly free: no error
    assert sum(m[f"free_err_{k}"] for k in FREE_ERROR_KINDS) == pytest.approx(1 - m["iou_free"])


def test_below_half_iou_is_not_a_match():
    true = np.zeros((4, 8), np.uint8)
    true[0:2, 0:4] = 1  # 8 px
    pred = np.zeros_like(true)
    pred[0:1, 0:3] = 1  # 3 px inside: IoU 3/8 < 0.5
    assert match_spaces(pred, true) == (0, 1, 1)


def test_matching_is_one_to_one_and_takes_the_best_overlap_first():
    true = np.zeros((4, 10), np.uint8)
    true[0:4, 0:3] = 1  # T0: 12 px
    true[0:4, 4:6] = 1  # T1: 8 px
    pred = np.zeros_like(true)
    pred[0:4, 0:6] = 1  # one blob over both (and the 4-px line between): 24 px
    pred[0:4, 8:10] = 1  # a stray: 8 px, touching no truth
    # blob vs T0: 12 / 24 = 0.5; blob vs T1: 8 / 24 = 1/3 -> one match at 0.5, none at all for T1
    assert match_spaces(pred, true) == (1, 2, 2)
    # at IoU 0.3 the blob still matches only one truth, the better one (T0), and T1 stays unmatched
    assert match_spaces(pred, true, iou=0.3) == (1, 2, 2)
    pred[0:4, 3] = 0  # the painted line kept: two spaces, each exact
    assert match_spaces(pred, true) == (2, 3, 2)


def test_ignore_pixels_are_skipped_and_count_error_averages_tiles():
    true1 = np.full((4, 4), 255, np.uint8)
    true1[0:2, 0:2] = 1
    pred1 = np.ones((4, 4), np.uint8)  # free everywhere, but only the 4 labelled px count
    true2 = np.zeros((4, 4), np.uint8)
    pred2 = np.zeros((4, 4), np.uint8)
    pred2[0, 0] = 1
    pred2[3, 3] = 1  # two stray free components on an empty tile
    m = evaluate([pred1, pred2], [true1, true2])
    # tile 1: 4 TP, no FP (ignored pixels do not count); tile 2: 2 FP px
    assert m["free_precision"] == pytest.approx(4 / 6)
    assert m["free_recall"] == pytest.approx(1.0)
    # count errors: tile 1 |1 - 1| = 0, tile 2 |2 - 0| = 2 -> mean 1
    assert m["free_count_mae"] == pytest.approx(1.0)
    assert m["n_tiles"] == 2


def test_a_prediction_on_an_ignored_stall_is_ignored_with_the_background_it_spills_onto():
    # two ignored stalls (3x3) one px apart, and one labelled free stall (3x3) further right
    true = np.zeros((5, 14), np.uint8)
    true[1:4, 0:3] = 255
    true[1:4, 4:7] = 255
    true[1:4, 10:13] = 1
    pred = np.zeros_like(true)
    pred[0:5, 0:7] = 1  # one blob over both ignored stalls, the line between them and a row above and below
    pred[1:4, 10:13] = 1  # the labelled stall, exactly
    m = evaluate([pred], [true])
    # the blob is 35 px, 18 of them on ignored truth (>= half): its 17 background px are not false positives
    # and it is no predicted space, so the count is right
    assert m["free_precision"] == pytest.approx(1.0) and m["iou_free"] == pytest.approx(1.0)
    assert m["free_count_mae"] == pytest.approx(0.0)
    assert m["space_precision"] == pytest.approx(1.0)
    assert m["confusion"] == [[5 * 14 - 18 - 17 - 9, 0, 0], [0, 9, 0], [0, 0, 0]]
    # a blob mostly on labelled background is still a false positive: 6 px, 2 on ignored truth
    pred2 = np.zeros_like(true)
    pred2[3:5, 5:8] = 1
    m2 = evaluate([pred2], [true])
    assert m2["confusion"][0][1] == 4
    # it is a predicted space that matches nothing (1 predicted, 1 true, none matched)
    assert m2["space_precision"] == pytest.approx(0.0) and m2["free_count_mae"] == pytest.approx(0.0)
    # the labelled stall (9 px) is missed and the blob's 4 labelled background px are a false space
    assert m2["free_err_missed_spaces"] == pytest.approx(9 / 13)
    assert m2["free_err_false_spaces"] == pytest.approx(4 / 13)


def test_ignored_truth_crossing_a_predicted_space_does_not_cut_it_into_more_spaces():
    # a labelled free stall, and across its predicted blob a strip of ignored truth (a stall cut to a
    # sliver by the tile's edge, say): the blob is one space, not two pieces either side of the strip
    true = np.zeros((6, 12), np.uint8)
    true[1:5, 0:4] = 1
    true[1:5, 6:10] = 1
    true[:, 4:6] = 255
    pred = np.zeros_like(true)
    pred[1:5, 0:10] = 1  # one blob over both stalls and the strip
    pred[0, 4] = 1  # a speck wholly on ignored truth: no space at all
    tp, npred, ntrue = match_spaces(pred, true)
    assert (npred, ntrue) == (1, 2)
    # its 32 labelled px against the first stall's 16: IoU 0.5, a match; the second stall is missed
    assert tp == 1
    m = evaluate([pred], [true])
    assert m["free_count_mae"] == pytest.approx(1.0) and m["space_precision"] == pytest.approx(1.0)


def test_stall_accuracy_by_majority_vote():
    true = np.zeros((10, 10), np.uint8)
    pred = np.zeros((10, 10), np.uint8)
    pred[0:4, 0:4] = 1  # stall 1 (free) predicted free
    pred[0:4, 6:10] = 1  # stall 2 is occupied but predicted free
    pred[6:10, 0:4] = 2  # stall 3 (occupied) predicted occupied
    stalls = [
        {"polygon": [[0, 0], [3, 0], [3, 3], [0, 3]], "status": "free"},
        {"polygon": [[6, 0], [9, 0], [9, 3], [6, 3]], "status": "occupied"},
        {"polygon": [[0, 6], [3, 6], [3, 9], [0, 9]], "status": "occupied"},
    ]
    m = evaluate([pred], [true], stalls=[stalls])
    assert m["stall_accuracy"] == pytest.approx(2 / 3)
    geo = {
        "type": "FeatureCollection",
        "features": [
            {"properties": {"status": s["status"]}, "geometry": {"type": "Polygon", "coordinates": [s["polygon"]]}}
            for s in stalls
        ],
    }
    assert evaluate([pred], [true], stalls=[geo])["stall_accuracy"] == pytest.approx(2 / 3)


def test_perfect_prediction_and_scalar_filter():
    _, true = _masks()
    m = evaluate([true.copy()], [true])
    assert m["free_f1"] == 1.0 and m["miou"] == 1.0 and m["space_f1"] == 1.0 and m["free_count_mae"] == 0.0
    flat = scalar_metrics(m, prefix="x_")
    assert "x_confusion" not in flat and flat["x_free_f1"] == 1.0


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="differ"):
        evaluate([np.zeros((2, 2), np.uint8)], [np.zeros((3, 3), np.uint8)])
    with pytest.raises(ValueError, match="predicted masks"):
        evaluate([], [np.zeros((3, 3), np.uint8)])


def test_free_ap_by_hand_and_only_when_probabilities_are_given():
    true = np.array([[1, 0, 1, 0]], np.uint8)
    pred = np.zeros_like(true)
    assert "free_ap" not in evaluate([pred], [true])
    # ranking 1, 0, 1, 0 by probability: precision at the two free pixels is 1/1 and 2/3 -> AP = (1 + 2/3) / 2
    probs = np.array([[0.9, 0.8, 0.7, 0.1]], np.float32)
    m = evaluate([pred], [true], free_probs=[probs])
    assert m["free_ap"] == pytest.approx((1 + 2 / 3) / 2)
    # it ranks where every argmax metric is 0: nothing predicted free, yet a perfect ranking scores 1
    assert m["free_f1"] == 0.0
    assert evaluate([pred], [true], free_probs=[np.array([[0.4, 0.1, 0.3, 0.2]])])["free_ap"] == pytest.approx(1.0)


def test_free_ap_skips_ignored_pixels_and_pools_tiles():
    true_a = np.array([[1, 255]], np.uint8)
    true_b = np.array([[0, 1]], np.uint8)
    probs_a = np.array([[0.5, 0.99]], np.float32)  # the ignored pixel's high score must not count as a miss
    probs_b = np.array([[0.6, 0.2]], np.float32)
    m = evaluate([np.zeros_like(true_a), np.zeros_like(true_b)], [true_a, true_b], free_probs=[probs_a, probs_b])
    # pooled ranking of labelled pixels: 0.6 (bg), 0.5 (free), 0.2 (free) -> precisions 1/2 and 2/3
    assert m["free_ap"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    with pytest.raises(ValueError, match="free probabilities"):
        evaluate([np.zeros_like(true_a)], [true_a], free_probs=[probs_a, probs_b])
    with pytest.raises(ValueError, match="tile 0"):
        evaluate([np.zeros_like(true_a)], [true_a], free_probs=[np.zeros((2, 2))])
