"""Detection metrics on hand-made cases (Ultralytics v7.0 semantics)."""
import numpy as np
import pytest

from yoloport.engine.metrics import (
    IOU_THRESHOLDS,
    ConfusionMatrix,
    ap_per_class,
    compute_ap,
    match_predictions,
    smooth,
    summarize,
)


def test_iou_thresholds():
    assert IOU_THRESHOLDS.dtype == np.float32 and len(IOU_THRESHOLDS) == 10
    assert IOU_THRESHOLDS[0] == np.float32(0.5) and IOU_THRESHOLDS[-1] == np.float32(0.95)


def test_match_predictions_thresholds_and_uniqueness():
    labels = np.array([[0, 0, 0, 10, 10], [1, 20, 20, 30, 30]], np.float32)
    dets = np.array(
        [
            [0, 0, 10, 10, 0.9, 0],  # exact match of label 0: TP at every threshold
            [0, 0, 10, 8, 0.8, 0],  # IoU 0.8 with label 0, but label 0 is taken by the better match
            [20, 20, 30, 27, 0.7, 1],  # IoU 0.7 with label 1: TP up to 0.70
            [20, 20, 30, 30, 0.6, 0],  # right box, wrong class: never TP
        ],
        np.float32,
    )
    c = match_predictions(dets, labels)
    assert c.shape == (4, 10) and c.dtype == bool
    assert c[0].all()
    assert not c[1].any()
    assert c[2].tolist() == [True] * 5 + [False] * 5  # 0.50 .. 0.70 inclusive (IoU >= t)
    assert not c[3].any()


def test_match_predictions_v70_order():
    # v7.0 keeps each detection's best label, then re-orders by detection index before picking one
    # detection per label: the first detection (highest confidence after NMS) wins, not the best IoU.
    labels = np.array([[0, 0, 0, 10, 10]], np.float32)
    dets = np.array([[0, 0, 10, 6, 0.9, 0], [0, 0, 10, 9, 0.1, 0]], np.float32)  # IoU 0.6 vs 0.9
    c = match_predictions(dets, labels)
    assert c[0, 0] and not c[1, 0]
    assert not c[0, 3] and c[1, 3]  # at IoU 0.65 only the second one qualifies


def test_match_predictions_empty():
    assert match_predictions(np.zeros((0, 6)), np.ones((2, 5))).shape == (0, 10)
    assert not match_predictions(np.ones((3, 6)), np.zeros((0, 5))).any()


def test_compute_ap_perfect_is_0995():
    # One point at recall 1, precision 1: the 101-point trapezoid loses half of the last step at
    # recall 1 (np.interp gives the sentinel 0 there), exactly as Ultralytics (0.995, not 1).
    assert compute_ap(np.array([1.0]), np.array([1.0]))[0] == pytest.approx(0.995)


def test_compute_ap_by_hand():
    # 2 labels; detections by confidence: TP, FP, TP -> recall .5 .5 1, precision 1 .5 2/3.
    # Envelope: 1 up to recall .5 (exclusive), 2/3 from .5 to 1, 0 at 1. Trapezoid on x = 0..1 step .01:
    # .49 * 1 + (1 + 2/3) / 2 * .01 + .49 * 2/3 + (2/3 + 0) / 2 * .01 = .828333...
    ap, mpre, mrec = compute_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3]))
    assert ap == pytest.approx(0.49 + (1 + 2 / 3) / 2 * 0.01 + 0.49 * 2 / 3 + (2 / 3) / 2 * 0.01, abs=1e-9)
    assert ap == pytest.approx(0.8283333, abs=1e-6)
    assert mpre.tolist() == pytest.approx([1, 1, 2 / 3, 2 / 3, 0])  # the envelope
    assert mrec.tolist() == [0, 0.5, 0.5, 1, 1]


def test_smooth_keeps_length_and_constant():
    y = np.full(1000, 0.3)
    s = smooth(y, 0.1)
    assert s.shape == (1000,) and np.allclose(s, 0.3)


def _perfect_stats(n_per_class=(3, 5)):
    tp, conf, pcls, tcls = [], [], [], []
    for c, n in enumerate(n_per_class):
        tp.append(np.ones((n, 10), bool))
        conf.append(np.linspace(0.9, 0.5, n))
        pcls.append(np.full(n, c))
        tcls.append(np.full(n, c))
    return [np.concatenate(x) for x in (tp, conf, pcls, tcls)]


def test_ap_per_class_perfect():
    st = ap_per_class(*_perfect_stats())
    assert st["classes"].tolist() == [0, 1]
    assert st["ap"].shape == (2, 10) and np.allclose(st["ap"], 0.995)
    assert np.allclose(st["p"], 1) and np.allclose(st["r"], 1)
    s = summarize(st, nc=2, names=["a", "b"], target_cls=_perfect_stats()[3])
    assert s["mAP50"] == pytest.approx(0.995) and s["mAP50_95"] == pytest.approx(0.995)
    assert s["precision"] == pytest.approx(1) and s["recall"] == pytest.approx(1)
    assert [r["instances"] for r in s["per_class"]] == [3, 5]
    assert [r["name"] for r in s["per_class"]] == ["a", "b"]


def test_ap_per_class_missing_class_and_unlabelled_predictions():
    # class 0: 2 labels, both found; class 1: 2 labels, never predicted (AP 0, in the mean);
    # class 2: predicted but has no labels (ignored entirely).
    tp = np.array([[1] * 10, [1] * 10, [0] * 10], bool)
    conf = np.array([0.9, 0.8, 0.95])
    pcls = np.array([0, 0, 2])
    tcls = np.array([0, 0, 1, 1])
    st = ap_per_class(tp, conf, pcls, tcls)
    assert st["classes"].tolist() == [0, 1]
    assert st["ap"][0, 0] == pytest.approx(0.995) and st["ap"][1].sum() == 0
    s = summarize(st, nc=3, target_cls=tcls)
    assert s["mAP50"] == pytest.approx(0.995 / 2)
    assert s["recall"] == pytest.approx(0.5)


def test_ap_per_class_known_case():
    # one class, 2 labels, detections TP (0.9), FP (0.8), TP (0.7): the hand case above
    tp = np.array([[1], [0], [1]], bool)
    st = ap_per_class(tp, np.array([0.9, 0.8, 0.7]), np.zeros(3), np.zeros(2))
    assert st["ap"][0, 0] == pytest.approx(0.8283333, abs=1e-6)


def test_summarize_none():
    s = summarize(None, nc=3)
    assert s["mAP50"] == 0 and s["per_class"] == []


def test_confusion_matrix():
    cm = ConfusionMatrix(nc=2)
    labels = np.array([[0, 0, 0, 10, 10], [1, 20, 20, 30, 30]], np.float32)
    dets = np.array([[0, 0, 10, 10, 0.9, 0], [20, 20, 30, 30, 0.9, 0], [50, 50, 60, 60, 0.9, 1]], np.float32)
    cm.process_batch(dets, labels)
    assert cm.matrix[0, 0] == 1  # correct
    assert cm.matrix[0, 1] == 1  # label 1 predicted as 0
    assert cm.matrix[1, 2] == 1  # false positive of class 1 (background column)
