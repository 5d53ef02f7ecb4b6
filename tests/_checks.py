"""The comparisons the suite relies on, as functions the real tests and the negative controls share.

Each ``check_*`` raises ``AssertionError`` (with the measured numbers) when the test output does not
agree with the reference, and returns the numbers when it does. ``test_negative_controls.py`` feeds
known-wrong runners to every one of them and asserts they raise, so a check that cannot fail is
caught. The tolerances are module constants so the guard test (``test_guard_signal.py``) can assert
that the test model's outputs move by far more than the largest of them between two images.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from yoloport.analysis.compare import cosine, match_detections, sqnr

# float backend (ONNX Runtime, OpenVINO fp32) vs PyTorch: raw head outputs (logits), max |difference|
FP32_MAX_ABS = 1e-4
# int8 vs fp32, raw head outputs, per output: the weakest cosine and SQNR an int8 build may have
INT8_MIN_COSINE = 0.98
INT8_MIN_SQNR_DB = 18.0
# RKNN float (fp16) build vs PyTorch: decoded boxes (px) and scores of the candidates that matter
# (reference objectness >= FP16_MIN_OBJ). RKNN's fp16 simulator is ~50x less exact than PyTorch's
# own fp16 on the default model (logits off by up to 1.2 vs 0.019), so near-empty candidates
# (objectness 0.002) can move by 8 px; the confident ones stay within 0.11 px.
FP16_MIN_OBJ = 0.1
FP16_MAX_BOX_PX = 0.25
FP16_MAX_SCORE = 0.06
# detections vs reference: every reference box has a partner of the same class at this IoU,
# within this confidence change
DET_MIN_IOU = 0.9
DET_MAX_CONF_DELTA = 0.05



def check_float_outputs_match(ref: list[np.ndarray], out: list[np.ndarray], max_abs: float = FP32_MAX_ABS) -> float:
    """Float backend vs PyTorch: same shapes, max |out - ref| below ``max_abs`` on every output.
    Returns the largest difference."""
    assert [o.shape for o in out] == [r.shape for r in ref], f"shapes {[o.shape for o in out]} != {[r.shape for r in ref]}"
    worst = max(float(np.abs(o.astype(np.float64) - r).max()) for o, r in zip(out, ref))
    assert worst < max_abs, f"max |difference| {worst:.3g} >= {max_abs:.3g}"
    return worst


def check_int8_agrees(
    ref: list[np.ndarray], out: list[np.ndarray], min_cosine: float = INT8_MIN_COSINE, min_sqnr_db: float = INT8_MIN_SQNR_DB
) -> list[tuple[float, float]]:
    """int8 (or any approximate) outputs vs the float reference: cosine and SQNR per output above the
    bounds. Returns ``[(cosine, sqnr_db)]`` per output."""
    assert [o.shape for o in out] == [r.shape for r in ref], f"shapes {[o.shape for o in out]} != {[r.shape for r in ref]}"
    rows = [(cosine(r, o), sqnr(r, o)) for r, o in zip(ref, out)]
    bad = [(i, c, s) for i, (c, s) in enumerate(rows) if not (c > min_cosine and s > min_sqnr_db)]
    assert not bad, f"outputs below cosine {min_cosine} / SQNR {min_sqnr_db} dB: {bad}"
    return rows


def check_decoded_close(
    p_ref: np.ndarray, p_test: np.ndarray, max_box_px: float = FP16_MAX_BOX_PX, max_score: float = FP16_MAX_SCORE,
    min_obj: float = FP16_MIN_OBJ,
) -> tuple[float, float]:
    """Decoded predictions ``[B, N, 5+nc]`` (xywh px, obj, class probs): on every candidate whose
    reference objectness is at least ``min_obj`` (at least one must be), boxes within ``max_box_px``
    and scores within ``max_score``. Returns (box px, score) differences."""
    assert p_ref.shape == p_test.shape, f"shapes {p_test.shape} != {p_ref.shape}"
    keep = p_ref[..., 4] >= min_obj
    assert keep.any(), f"no reference candidate has objectness >= {min_obj}: nothing to compare"
    box = float(np.abs(p_test[..., :4] - p_ref[..., :4])[keep].max())
    score = float(np.abs(p_test[..., 4:] - p_ref[..., 4:])[keep].max())
    assert box < max_box_px and score < max_score, f"box {box:.3g} px (< {max_box_px}), score {score:.3g} (< {max_score})"
    return box, score


def check_detections_match(
    ref: list[np.ndarray], test: list[np.ndarray], min_iou: float = DET_MIN_IOU, max_conf_delta: float = DET_MAX_CONF_DELTA,
    min_ref: int = 1,
) -> dict:
    """Detections ``[n, 6]`` (x1, y1, x2, y2, conf, cls) per image vs the reference's: the same count,
    each reference box matched one to one by a test box of the same class at IoU >= ``min_iou`` whose
    confidence is within ``max_conf_delta``. ``min_ref``: the reference must have at least this many
    detections in all (a comparison of two empty lists proves nothing)."""
    assert len(ref) == len(test), f"{len(test)} images != {len(ref)}"
    n_ref = sum(len(r) for r in ref)
    assert n_ref >= min_ref, f"the reference has only {n_ref} detections: nothing to compare"
    worst_iou, worst_conf = 1.0, 0.0
    for k, (r, t) in enumerate(zip(ref, test)):
        assert len(r) == len(t), f"image {k}: {len(t)} detections != {len(r)}"
        pairs = match_detections(r, t, min_iou)  # same class only
        assert len(pairs) == len(r), f"image {k}: {len(r) - len(pairs)} of {len(r)} boxes unmatched at IoU {min_iou} and same class"
        for i, j, iou in pairs:
            worst_iou = min(worst_iou, float(iou))
            worst_conf = max(worst_conf, abs(float(t[j, 4]) - float(r[i, 4])))
        assert worst_conf <= max_conf_delta, f"image {k}: confidence changed by {worst_conf:.3g} > {max_conf_delta}"
    return {"ref_detections": n_ref, "min_iou": worst_iou, "max_conf_delta": worst_conf}


def check_compare_report(rep: dict, min_sqnr_db: float, min_cosine: float = 0.0) -> None:
    """A ``compare_runners`` report: every head output above ``min_sqnr_db`` and ``min_cosine``."""
    bad = [(o["output"], o["sqnr_db"], o["cosine"]) for o in rep["outputs"] if not (float(o["sqnr_db"]) > min_sqnr_db and float(o["cosine"]) > min_cosine)]
    assert not bad, f"outputs below SQNR {min_sqnr_db} dB / cosine {min_cosine}: {bad}"


def check_disjoint(calibration_paths, eval_paths) -> None:
    """The images an agreement is judged on share no file (by content) with the calibration set."""
    digest = lambda p: hashlib.sha256(Path(p).read_bytes()).hexdigest()  # noqa: E731
    calib = {digest(p) for p in calibration_paths}
    shared = [str(p) for p in eval_paths if digest(p) in calib]
    assert eval_paths and not shared, f"evaluation images used for calibration: {shared}"
