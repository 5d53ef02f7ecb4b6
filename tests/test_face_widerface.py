"""The WIDER FACE protocol pieces on hand-made ground truth (no fixtures needed)."""
from __future__ import annotations

import numpy as np
import pytest

from yoloport.engine.widerface import (
    WiderGroundTruth,
    box_overlaps_inclusive,
    read_landmark_labels,
    upstream_pred_rows,
    voc_ap,
    wider_ap,
)
from yoloport.errors import YoloportError


def _gt(boxes, keep):
    key = ("0--Parade", "img")
    return WiderGroundTruth(
        events=["0--Parade"], images={"0--Parade": ["img"]}, boxes={key: np.asarray(boxes, float)},
        keep={s: {key: np.asarray(keep[s])} for s in ("easy", "medium", "hard")},
    ), key


def test_overlap_counts_pixels_inclusively():
    a = np.array([[0.0, 0.0, 9.0, 9.0]])  # 10 x 10 pixels
    b = np.array([[5.0, 0.0, 14.0, 9.0]])  # overlaps 5 x 10
    assert box_overlaps_inclusive(a, b)[0, 0] == pytest.approx(50 / 150)


def test_perfect_predictions_give_ap_one_and_ignored_faces_cost_nothing():
    boxes = [[10, 10, 20, 20], [100, 100, 30, 30], [300, 50, 8, 8]]
    gt, key = _gt(boxes, {"easy": [1], "medium": [0, 1], "hard": [0, 1, 2]})
    preds = {key: np.array([[100, 100, 30, 30, 0.9], [10, 10, 20, 20, 0.8], [300, 50, 8, 8, 0.5]])}
    ap = wider_ap(preds, gt)
    assert ap == {"easy": pytest.approx(1.0), "medium": pytest.approx(1.0), "hard": pytest.approx(1.0)}
    # a false positive above every true one lowers the precision of the first threshold
    preds_fp = {key: np.array([[500, 500, 20, 20, 0.95], [100, 100, 30, 30, 0.9], [10, 10, 20, 20, 0.8]])}
    assert wider_ap(preds_fp, gt)["easy"] < 1.0


def test_missing_image_predictions_are_refused():
    gt, _ = _gt([[0, 0, 5, 5]], {"easy": [1], "medium": [1], "hard": [1]})
    with pytest.raises(YoloportError, match="no predictions"):
        wider_ap({}, gt)


def test_voc_ap_of_a_step_curve():
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 0.5])) == pytest.approx(0.75)


def test_pred_rows_are_written_as_upstream():
    rows = upstream_pred_rows(np.array([[10.4, 20.6, 50.5, 60.2]]), np.array([0.98765]), (100, 200))
    assert rows.tolist() == [[10.0, 21.0, 40.0, 39.0, 0.988]]  # 50.5 rounds half to even, as torch.round


@pytest.mark.parametrize("line, what", [
    ("0 0.5 0.5 0.1 0.1 0.2 0.2 0.3", "15 values"),
    ("0 0.5 0.5 0.1 0.1 0.2 0.2 0.3 0.3 1.4 0.4 0.5 0.5 0.6 0.6", "outside the image"),
    ("0 0.5 0.5 0.1 0.1 0.2 x 0.3 0.3 0.4 0.4 0.5 0.5 0.6 0.6", "non-numeric value 'x'"),
])
def test_bad_face_labels_are_one_clear_error(tmp_path, line, what):
    p = tmp_path / "a.txt"
    p.write_text(line + "\n")
    with pytest.raises(YoloportError, match=what):
        read_landmark_labels(p, (100, 100))


GOOD_FACE = "0 0.5 0.5 0.4 0.5 0.4 0.4 0.6 0.4 0.5 0.5 0.42 0.6 0.58 0.6"


@pytest.mark.parametrize("line, reason", [
    ("0 0.5 0.5 0.4 0.5 0.4 0.4 0.6 0.4 0.5 0.5 -1 0.6 0.58 0.6", "landmark 4 has one coordinate -1"),
    ("0 0.5 0.5 0.0 0.5 0.4 0.4 0.6 0.4 0.5 0.5 0.42 0.6 0.58 0.6", "zero or negative box size"),
    ("1 0.5 0.5 0.4 0.5 0.4 0.4 0.6 0.4 0.5 0.5 0.42 0.6 0.58 0.6", "class 1 is not in 0..0"),
    ("0 0.5 0.5 0.4 0.5 0.4 0.4 0.6 0.4 1.2 0.5 0.42 0.6 0.58 0.6", "landmark 3 (1.2, 0.5) is outside the image"),
])
def test_evaluation_reads_face_labels_with_the_training_readers_rules(tmp_path, line, reason):
    """One reader of face label lines: what training refuses, evaluation refuses, in the same words."""
    from yoloport.data.face_labels import read_face_labels

    p = tmp_path / "a.txt"
    p.write_text(GOOD_FACE + "\n" + line + "\n")
    _, problems = read_face_labels(p, nc=1, nkpt=5)
    assert len(problems) == 1 and reason in problems[0]
    with pytest.raises(YoloportError) as e:
        read_landmark_labels(p, (100, 100))  # a one-class, five-landmark face model
    assert str(e.value).startswith(problems[0])


def test_missing_landmarks_stay_missing(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("0 0.5 0.5 0.2 0.4 " + " ".join(["-1"] * 10) + "\n")
    xyxy, kpts = read_landmark_labels(p, (100, 200))
    assert xyxy.tolist() == [[80.0, 30.0, 120.0, 70.0]]
    assert (kpts == -1).all()
