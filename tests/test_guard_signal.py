"""Guard: the shared test model's outputs depend strongly on the image.

Every agreement check in the suite compares a backend's outputs with PyTorch's on the same images.
Such a check only means something when the model's outputs move with the image by far more than the
check's tolerance; a random-weight yolov5n does not (its outputs change by ~1e-5 between a photo and
all zeros). Measured with the embedded default model at 96x128 on two synthetic-shape images:
max |difference| 18.1 / 13.6 / 11.5 per level (raw logits) against the fp32 tolerance 1e-4 (the
largest absolute tolerance on raw outputs), cosine 0.61-0.72 against the int8 bound 0.98, decoded
scores 0.997 against the RKNN fp16 bound 0.06; different detections.
"""
from __future__ import annotations

import numpy as np
import pytest

import _checks as C
from conftest import write_synth_images
from yoloport.analysis.compare import cosine, sqnr
from yoloport.backends.torch_backend import TorchRunner
from yoloport.data.calibration import load_calibration
from yoloport.ops.postprocess import decode_outputs, postprocess

HW = (96, 128)


@pytest.fixture(scope="module")
def two_images(tmp_path_factory):
    """Two different synthetic-shape images as one float32 ``[2, 3, 96, 128]`` batch."""
    d = write_synth_images(tmp_path_factory.mktemp("guard"), 2, HW, seed=7)
    x = np.concatenate(load_calibration(d, n=2, img_size_hw=HW, seed=None).arrays(), 0)
    return x


def test_outputs_move_with_the_image_far_beyond_every_tolerance(tiny_model, two_images):
    tr = TorchRunner(tiny_model)
    out = tr(two_images)
    a, b = [o[:1] for o in out], [o[1:] for o in out]
    diffs = [float(np.abs(x - y).max()) for x, y in zip(a, b)]
    print("max |difference| between two images per level:", diffs, "cosine:", [cosine(x, y) for x, y in zip(a, b)])
    assert min(diffs) > 1e4 * C.FP32_MAX_ABS  # >= 1 logit on every level, 10^4 times the fp32 tolerance
    assert all(cosine(x, y) < C.INT8_MIN_COSINE - 0.1 and sqnr(x, y) < C.INT8_MIN_SQNR_DB - 5 for x, y in zip(a, b))
    pa, pb = decode_outputs(a, tr.head), decode_outputs(b, tr.head)
    assert np.abs(pa[..., 4:] - pb[..., 4:]).max() > 10 * C.FP16_MAX_SCORE  # scores: 0.997 vs 0.06
    # every check the suite relies on tells the two images apart
    for check in (C.check_float_outputs_match, C.check_int8_agrees):
        with pytest.raises(AssertionError):
            check(a, b)
    with pytest.raises(AssertionError):
        C.check_decoded_close(pa, pb)
    da, db = postprocess(a, tr.head), postprocess(b, tr.head)
    assert len(da[0]) >= 2 and len(db[0]) >= 2  # the model finds the shapes
    with pytest.raises(AssertionError):
        C.check_detections_match(da, db)


def test_a_random_model_would_not_do(two_images):
    """Why the guard exists: a random yolov5n ignores its input (this test documents it)."""
    from conftest import random_model

    out = TorchRunner(random_model())(two_images)
    assert max(float(np.abs(o[0] - o[1]).max()) for o in out) < 1e-3
