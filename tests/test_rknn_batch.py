"""RKNN with more than one image per inference call (rknn-toolkit2's ``rknn_batch_size``), and the runner's
conversion to what the board receives.

Measured on rknn-toolkit2 2.5.0 (docs/notes/2026-11-30-rknn-batch.md): a model built with
``rknn_batch_size=N`` from the batch-1 graph gives the batch-1 model's outputs bit for bit, but the
simulator runs it image by image inside and is slower per image, so the port keeps validating the batch-1
``.rknn``; the batch is compiled only when asked for (``quantize --batch N``, ``qconfig['batch']``).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from yoloport.backends import registry
from yoloport.errors import YoloportError

pytest.importorskip("rknn.api")

from yoloport.backends import rknn as rb  # noqa: E402

import _checks as C  # noqa: E402
from conftest import signal_model  # noqa: E402

HW = (64, 96)


class RecordingToolkit:
    """An RKNN object whose ``inference`` takes exactly ``batch`` uint8 NHWC images and returns, per image,
    the sum of its bytes and its top-left 2x2 red patch (float16, as a board returns its own dtypes)."""

    def __init__(self, batch: int):
        self.batch = batch
        self.calls: list[np.ndarray] = []

    def inference(self, inputs, data_format=None):
        (x,) = inputs
        assert data_format == "nhwc" and x.dtype == np.uint8 and x.shape[0] == self.batch and x.shape[3] == 3
        self.calls.append(x.copy())
        return [x.reshape(len(x), -1).sum(1, dtype=np.int64).astype(np.float64)[:, None], x[:, :2, :2, 0].astype(np.float16)]

    def release(self):
        pass


def _images(n: int, seed: int = 0) -> np.ndarray:
    """``n`` distinct float32 ``[3, H, W]`` images on the 1/255 grid (what letterboxing makes)."""
    return np.random.default_rng(seed).integers(0, 256, (n, 3, *HW)).astype(np.float32) / np.float32(255)


def _per_image_expected(x: np.ndarray) -> list[np.ndarray]:
    u8 = np.rint(x.transpose(0, 2, 3, 1) * 255).astype(np.uint8)
    return [u8.reshape(len(u8), -1).sum(1, dtype=np.int64).astype(np.float32)[:, None], u8[:, :2, :2, 0].astype(np.float32)]


@pytest.mark.parametrize("batch,n_images,calls", [(4, 5, 2), (4, 8, 2), (4, 3, 1), (1, 5, 5), (3, 1, 1)])
def test_runner_splits_into_calls_of_the_compiled_batch(batch, n_images, calls):
    """A batch-N model gets calls of exactly N images, the last one padded with zeros; the padding's
    outputs are dropped and every image's outputs are its own, in order, as float32."""
    tk = RecordingToolkit(batch)
    runner = rb.RknnRunner(tk, None, HW, batch=batch)
    x = _images(n_images)
    outs = runner(x)
    assert len(tk.calls) == calls
    sent = np.concatenate(tk.calls, 0)
    np.testing.assert_array_equal(sent[:n_images], np.rint(x.transpose(0, 2, 3, 1) * 255).astype(np.uint8))
    assert not sent[n_images:].any()  # the remainder is padded with black images
    for got, want in zip(outs, _per_image_expected(x)):
        assert got.dtype == np.float32 and got.shape[0] == n_images
        np.testing.assert_array_equal(got, want)
    assert runner.batch == (batch if batch > 1 else None)  # None: a batch-1 model, validation groups freely


@pytest.mark.parametrize("bad", [0, -2, 2.5, "four", True, [4]])
def test_bad_batch_is_one_clear_error(bad, tmp_path):
    """A batch that is not a whole number >= 1 is refused before anything is exported or built."""
    with pytest.raises(YoloportError, match=r"RKNN batch must be a whole number of images, 1 or more"):
        registry.check_qconfig("rknn", {"precision": "fp16", "batch": bad})
    with pytest.raises(YoloportError, match=r"RKNN batch"):
        rb.RknnRunner(RecordingToolkit(1), None, HW, batch=bad)
    if isinstance(bad, int) and not isinstance(bad, bool):
        with pytest.raises(YoloportError, match=r"RKNN batch"):
            registry.build_artifact("rknn", signal_model(), tmp_path / "out", HW, qconfig={"precision": "fp16"}, batch=bad)
        assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_batch_accepted_spellings():
    assert [rb.check_batch(v) for v in (None, 1, 4, "8", np.int64(2))] == [1, 1, 4, 8, 2]


def test_to_runtime_input_rounds_and_saturates_like_numpy():
    """The conversion to the board's uint8 NHWC bytes equals ``clip(rint(x * 255), 0, 255)``: on the whole
    1/255 grid, on random floats, and saturating out-of-range values (a guard for the faster rewrite)."""
    grid = np.arange(256, dtype=np.float32) / np.float32(255)
    x = np.zeros((2, 3, 4, 256), np.float32)
    x[0] = grid
    x[1] = np.random.default_rng(1).random((3, 4, 256), dtype=np.float32) * 1.2 - 0.1
    x[1, 0, 0, :6] = [-1e9, -1.0, 1.5, 1e9, np.inf, -np.inf]
    u8 = rb.RknnRunner.to_runtime_input(x)
    assert u8.dtype == np.uint8 and u8.shape == (2, 4, 256, 3) and u8.flags.c_contiguous
    np.testing.assert_array_equal(u8[0, 0, :, 0], np.arange(256))
    want = np.clip(np.rint(x * np.float32(255)), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(u8, want)


@pytest.mark.parametrize("batch", [1, 4])
def test_client_readme_says_the_compiled_batch(batch, tmp_path):
    """The README written next to the ``.rknn`` for rknn_model_zoo's client says how many images a call
    takes when the build compiled more than one."""
    from yoloport.backends.rknn.build import write_convention_files
    from yoloport.ops.postprocess import HeadSpec

    head = HeadSpec.from_model(signal_model(), "raw", sigmoid_applied=True, convention="rknn_model_zoo")
    files = write_convention_files(tmp_path, head, HW, batch)
    text = (tmp_path / files["readme"]).read_text()
    assert "uint8 RGB NHWC" in text
    assert ("4 images per call ([4, H, W, 3])" in text) == (batch == 4)


def test_batched_build_of_the_embedded_model_matches_batch1(tmp_path):
    """``build_artifact(batch=4)`` exports batch 1, compiles 4 images per call (sidecar batch 4) and its
    float16 outputs equal the batch-1 artifact's on 5 images (a remainder call); the default stays batch 1."""
    model = signal_model()
    one = registry.build_artifact("rknn", model, tmp_path / "b1", HW, qconfig={"precision": "fp16"})
    four = registry.build_artifact("rknn", model, tmp_path / "b4", HW, qconfig={"precision": "fp16"}, batch=4)
    assert json.loads((tmp_path / "b1" / "model.rknn.json").read_text())["batch"] == 1
    info = json.loads((tmp_path / "b4" / "model.rknn.json").read_text())
    assert info["batch"] == 4 and info["rknn"]["rknn_batch_size"] == 4
    x = _images(5, seed=3)
    r1, r4 = rb.load(one), rb.load(four)
    try:
        assert r1.batch is None and r4.batch == 4
        a, b = r1(x), r4(x)
    finally:
        r1.close()
        r4.close()
    for u, v in zip(a, b):
        assert u.shape[0] == 5
        np.testing.assert_array_equal(u, v)
    r4 = rb.load(four)  # rebuilt for the simulator from the recorded recipe, with its batch
    try:
        assert r4.batch == 4
        for u, v in zip(a, r4(x)):
            np.testing.assert_array_equal(u, v)
    finally:
        r4.close()


@pytest.mark.fixtures
def test_fixture_int8_batch4_outputs_equal_batch1(tmp_path):
    """yolov5n v6.1 at 160 with the port's int8 recipe (Detect convolutions in float16: hybrid
    quantization), batch 1 and batch 4: the int8 outputs of 5 coco-extra val2017 images (never calibration
    images) are equal image by image, and a second batch-1 run repeats them exactly (the simulator's own
    nondeterminism is nil)."""
    from conftest import fixture_path
    from yoloport.data.calibration import load_calibration
    from yoloport.models import load_model

    hw = (160, 160)
    model = load_model(fixture_path("weights/yolov5n-v6.1.pt"))
    cal = load_calibration(fixture_path("coco-extra/images/calib2017"), n=4, img_size_hw=hw)
    ev = load_calibration(fixture_path("coco-extra/images/val2017"), n=5, img_size_hw=hw, seed=None)
    C.check_disjoint(cal.paths, ev.paths)
    x = np.concatenate(ev.arrays(), 0)
    q = {"precision": "int8", **rb.SPEC.port_qconfig}
    arts = {b: registry.build_artifact("rknn", model, tmp_path / f"b{b}", hw, cal, dict(q), mode=None, batch=b) for b in (1, 4)}
    runners = {b: rb.load(a) for b, a in arts.items()}
    try:
        assert runners[4].batch == 4
        one, again, four = runners[1](x), runners[1](x), runners[4](x)
    finally:
        for r in runners.values():
            r.close()
    for a, b, c in zip(one, again, four):
        assert a.shape[0] == 5 and np.abs(a).max() > 0
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
