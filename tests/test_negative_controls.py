"""Negative controls: every comparison the suite relies on must FAIL on a known-wrong runner.

A fault-injection table: wrong runners (``_faults.py``, each wrapping the real ``Runner`` interface)
against the shared checks (``_checks.py``) that the backend, int8, compare and detection tests call.
Each pair is one test, and it passes only when the check raises. Add a row when the suite gains a
check or a way to be wrong.
"""
from __future__ import annotations

import numpy as np
import pytest

import _checks as C
import _faults as F
from conftest import random_model, write_synth_images
from yoloport.analysis.compare import compare_runners, reference_runner
from yoloport.backends.torch_backend import TorchRunner
from yoloport.data.calibration import load_calibration
from yoloport.ops.postprocess import decode_outputs, postprocess

HW = (96, 128)

FAULTS = {
    "zeros": lambda tr, model: F.ZerosRunner(tr),
    "bias-only": lambda tr, model: F.BiasOnlyRunner(tr, model),
    # same layout, other weights: the checks must see it in the numbers, not in a shape mismatch
    "another-model": lambda tr, model: TorchRunner(random_model(nc=model.nc, cfg=model.yaml)),
    "classes-permuted": lambda tr, model: F.ClassesPermutedRunner(tr),
    "boxes-shifted-3px": lambda tr, model: F.BoxesShiftedRunner(tr, 3.0),
    "another-image": lambda tr, model: F.OtherImageRunner(tr),
}


def _float_match(ref, out, head, ref_dets, images):
    C.check_float_outputs_match(ref, out)


def _int8_agreement(ref, out, head, ref_dets, images):
    C.check_int8_agrees(ref, out)


def _fp16_decoded(ref, out, head, ref_dets, images):
    C.check_decoded_close(decode_outputs(ref, head), decode_outputs(out, head))


def _detections(ref, out, head, ref_dets, images):
    C.check_detections_match(ref_dets, postprocess(out, head))


CHECKS = {
    "float backend vs torch (ORT/OV fp32, export)": _float_match,
    "int8 vs fp32 (ORT/OV/RKNN/mlu-sim)": _int8_agreement,
    "fp16 decoded vs torch (RKNN float)": _fp16_decoded,
    "detections vs reference": _detections,
}


@pytest.fixture(scope="module")
def setup(tiny_model, tmp_path_factory):
    d = write_synth_images(tmp_path_factory.mktemp("neg"), 3, HW, seed=11)
    paths = sorted(d.glob("*.jpg"))
    x = np.concatenate(load_calibration(d, n=3, img_size_hw=HW, seed=None).arrays(), 0)
    tr = TorchRunner(tiny_model)
    ref = tr(x)
    return tr, x, ref, postprocess(ref, tr.head), paths


@pytest.mark.parametrize("check", list(CHECKS))
@pytest.mark.parametrize("fault", list(FAULTS))
def test_check_fails_on_wrong_runner(tiny_model, setup, fault, check):
    tr, x, ref, ref_dets, paths = setup
    out = FAULTS[fault](tr, tiny_model)(x)
    with pytest.raises(AssertionError):
        CHECKS[check](ref, out, tr.head, ref_dets, paths)


@pytest.mark.parametrize("check", list(CHECKS))
def test_check_passes_on_the_right_runner(tiny_model, setup, check):
    """The positive control: the same check accepts PyTorch against itself."""
    tr, x, ref, ref_dets, paths = setup
    CHECKS[check](ref, TorchRunner(tiny_model)(x), tr.head, ref_dets, paths)


@pytest.mark.parametrize("fault", list(FAULTS))
def test_compare_report_fails_on_wrong_runner(tiny_model, setup, fault):
    """``compare_runners`` (the compare command's numbers) sees the fault: SQNR below the int8 bound."""
    tr, x, ref, ref_dets, paths = setup
    wrong = FAULTS[fault](tr, tiny_model)
    rep = compare_runners(reference_runner(tiny_model, tr.head), wrong, paths, HW)
    with pytest.raises(AssertionError):
        C.check_compare_report(rep, C.INT8_MIN_SQNR_DB, C.INT8_MIN_COSINE)


def test_compare_report_passes_on_the_right_runner(tiny_model, setup):
    tr, x, ref, ref_dets, paths = setup
    rep = compare_runners(reference_runner(tiny_model, tr.head), TorchRunner(tiny_model), paths, HW)
    C.check_compare_report(rep, 80.0, 0.9999)
    assert rep["summary"]["ref_detections"] > 0 and rep["summary"]["match_rate"] == 1.0
