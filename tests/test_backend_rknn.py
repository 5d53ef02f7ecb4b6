"""RKNN backend: builds in rknn-toolkit2's simulator (no board), float and int8, against PyTorch.

RKNN's "float" is float16 (``float_dtype`` has no other value), so float builds agree with PyTorch to
fp16 precision. The model is the embedded default model (input-sensitive: an all-zeros backend is
hundreds of pixels off, see test_negative_controls.py); int8 is judged on images that were not
calibration images. Measured (2.5.0, this machine, default model at 160x128 on two synthetic-shape
images): float raw and split heads 0.109 px / scores 0.041 on the candidates with objectness >= 0.1
(near-empty candidates move by up to 8 px: RKNN's fp16 logits are off by up to 1.2 where PyTorch's
own fp16 is off by 0.019), same detections; int8 (3 calibration images) cosine 0.9986-0.9996,
SQNR 25-31 dB. Fixture yolov5n-v6.1 on bus.jpg at 640x480: Ultralytics' 5 detections, 0.12 px (raw)
/ 0.20 px (split) from PyTorch.
"""
from __future__ import annotations

import json
import time

import cv2
import numpy as np
import pytest

pytest.importorskip("rknn.api")

from yoloport.backends import rknn as rb  # noqa: E402
from yoloport.backends.torch_backend import TorchRunner  # noqa: E402
from yoloport.data.calibration import load_calibration  # noqa: E402
from yoloport.deploy.export import export_onnx  # noqa: E402
from yoloport.errors import YoloportError  # noqa: E402
from yoloport.ops.postprocess import decode_outputs, postprocess  # noqa: E402

import _checks as C  # noqa: E402
from conftest import signal_model, write_synth_images  # noqa: E402

HW = (128, 160)


@pytest.fixture(scope="module")
def tiny():
    """The embedded default model (yolov5n, 6 shape classes): outputs that depend on the image."""
    return signal_model()


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    """Three synthetic-shape images as a calibration set."""
    d = write_synth_images(tmp_path_factory.mktemp("calib"), 3, (200, 240), seed=0)
    return load_calibration(d, n=3, img_size_hw=HW)


@pytest.fixture(scope="module")
def batch(calib, tmp_path_factory):
    """Two evaluation images, none of them a calibration image."""
    d = write_synth_images(tmp_path_factory.mktemp("eval"), 2, (200, 240), seed=1, prefix="eval")
    ev = load_calibration(d, n=2, img_size_hw=HW, seed=None)
    C.check_disjoint(calib.paths, ev.paths)
    return np.concatenate(ev.arrays(), 0)


def _cos(a, b):
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _build(model, tmp_path, mode, calibration=None, **q):
    onnx, head = export_onnx(model, tmp_path / f"m.{mode}.onnx", HW, mode)
    return rb.build(model, onnx, head, tmp_path, calibration, q)


# ----------------------------------------------------------------------------- options (fast)


@pytest.mark.parametrize("bad", ["rk1808", "rv1126", "rk3399pro"])
def test_legacy_platform_names_toolkit1(bad):
    with pytest.raises(YoloportError, match=r"rknn-toolkit 1\.x") as e:
        rb.resolve_qconfig({"platform": bad}, calibrated=False)
    assert "rk3588" in str(e.value)


def test_unknown_platform_lists_supported():
    with pytest.raises(YoloportError) as e:
        rb.check_platform("rk9999")
    msg = str(e.value)
    for p in ("rk3588", "rk3568", "rk3566", "rk3562", "rk3576", "rv1106", "rv1103"):
        assert p in msg
    assert "rk1808" in msg


def test_qconfig_names():
    q = rb.resolve_qconfig({"platform": "RK3568", "quantized_algorithm": "mmse", "quantized_method": "layer"}, calibrated=True)
    assert q["platform"] == "rk3568" and q["do_quantization"] and q["quantized_dtype"] == "w8a8"
    with pytest.raises(YoloportError, match="w8a8"):
        rb.resolve_qconfig({"quantized_dtype": "asymmetric_quantized-8"}, calibrated=True)
    with pytest.raises(YoloportError, match="kl_divergence"):
        rb.resolve_qconfig({"quantized_algorithm": "entropy"}, calibrated=True)
    assert rb._hybrid_dict(["out0", "/model.23/cv3/act/Mul_output_0:int16"]) == {
        "out0": "float16",
        "/model.23/cv3/act/Mul_output_0": "int16",
    }


def test_end2end_head_refused(tiny, tmp_path):
    from yoloport.ops.postprocess import HeadSpec

    with pytest.raises(YoloportError, match="raw or split"):
        rb.build(tiny, tmp_path / "none.onnx", HeadSpec.from_model(tiny, "end2end"), tmp_path, None, {})


def test_toolkit_failure_is_yoloport_error(tmp_path):
    from rknn.api import RKNN

    with rb.quiet():
        rk = RKNN(verbose=False)
    rb.call("config", rk.config, target_platform="rk3588")
    with pytest.raises(YoloportError, match="rknn load_onnx failed"):
        rb.call("load_onnx", rk.load_onnx, model=str(tmp_path / "missing.onnx"))


# ----------------------------------------------------------------------------- simulator builds


@pytest.mark.parametrize("mode,tol_px", [("raw", C.FP16_MAX_BOX_PX), ("split", 2 * C.FP16_MAX_BOX_PX)])
def test_float_build_matches_torch(tiny, batch, tmp_path, mode, tol_px):
    """Float (fp16) build: decoded predictions agree with PyTorch to fp16 precision."""
    art = _build(tiny, tmp_path, mode)
    info = json.loads((tmp_path / "model.rknn.json").read_text())
    assert info["backend"] == "rknn" and info["precision"] == "fp16" and info["platform"] == "rk3588"
    assert (tmp_path / info["rknn"]["source_onnx"]).is_file()
    runner = rb.load(art, model=tiny)
    try:
        out = runner(batch)
    finally:
        runner.close()
    tr = TorchRunner(tiny)
    ref = tr(batch)
    if mode == "raw":
        assert [o.shape for o in out] == [o.shape for o in ref]
    p1, p0 = decode_outputs(out, runner.head), decode_outputs(ref, tr.head)
    assert p1.dtype == np.float32
    box, score = C.check_decoded_close(p0, p1, tol_px, C.FP16_MAX_SCORE)
    print(f"{mode}: max box difference {box:.4f} px, score {score:.2e}")
    C.check_detections_match(postprocess(ref, tr.head), postprocess(out, runner.head))


def test_load_reuses_the_simulator_in_a_process_and_rebuilds_it_in_a_fresh_one(tiny, batch, tmp_path, monkeypatch):
    """The first load takes the build's RKNN object; a closed simulator runner hands it back, so the next load of
    the same artifact (validation then compare, or a second reporting set) runs without a rebuild. A fresh
    process has neither: load() rebuilds from the artifact's recipe. Same outputs every time."""
    from yoloport.backends.rknn import runner as rr

    builds = []
    real = rr.make_rknn
    monkeypatch.setattr(rr, "make_rknn", lambda *a, **k: (builds.append(1), real(*a, **k))[1])
    art = _build(tiny, tmp_path, "raw")
    first = rb.load(art)
    a = first(batch[:1])
    first.close()
    assert len(rb._LIVE) == 1 and next(iter(rb._LIVE.values())).runtime_ready  # handed back, runtime ready
    again = rb.load(art)  # reused: no rebuild
    b = again(batch[:1])
    again.close()
    assert builds == []
    rb._LIVE.clear()  # as in a fresh process
    fresh = rb.load(art)  # rebuilt from model.rknn.build/
    c = fresh(batch[:1])
    fresh.close()
    assert builds == [1]
    for x, y, z in zip(a, b, c):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x, z)
    with pytest.raises(YoloportError, match="expected images"):
        again_runner = rb.RknnRunner(None, first.head, HW)
        again_runner(np.zeros((1, 160, 128), np.float32))


class _FakeSimulator:
    released = False

    def release(self):
        self.released = True


@pytest.fixture
def empty_pool():
    saved = dict(rb._LIVE)
    rb._LIVE.clear()
    yield rb._LIVE
    rb._LIVE.clear()
    rb._LIVE.update(saved)


def _artifact(path, content: bytes = b"rknn") -> tuple:
    from yoloport.backends.rknn.build import _live_key

    path.write_bytes(content)
    return _live_key(path)


def test_a_handed_back_simulator_evicts_the_older_ready_one(tmp_path, empty_pool):
    """At most ``KEEP_READY`` (1) ready simulators are kept: handing one back releases the older one; an object a
    build left and nobody loaded yet stays."""
    from yoloport.backends.rknn.build import LiveSimulator, hand_back

    pending, a, b = _FakeSimulator(), _FakeSimulator(), _FakeSimulator()
    key_built, key_a, key_b = (_artifact(tmp_path / f"{n}.rknn") for n in ("built", "a", "b"))
    empty_pool[key_built] = LiveSimulator(pending, False)
    hand_back(key_a, a)
    hand_back(key_b, b)
    assert a.released and not b.released and not pending.released
    assert list(empty_pool) == [key_built, key_b] and empty_pool[key_b].runtime_ready
    hand_back(key_b, b)  # the same artifact again: nothing else released
    assert not b.released


def test_a_simulator_whose_artifact_was_rewritten_or_removed_is_released_not_kept(tmp_path, empty_pool):
    """The pool is keyed by the file as it was when the runner loaded it: a runner that closes after its ``.rknn``
    was rewritten in place (or deleted) runs a model no later load can ask for, so it is released."""
    from yoloport.backends.rknn.build import hand_back, take_live

    kept, rewritten, removed = _FakeSimulator(), _FakeSimulator(), _FakeSimulator()
    key_kept = _artifact(tmp_path / "kept.rknn")
    hand_back(key_kept, kept)
    key_old = _artifact(tmp_path / "model.rknn", b"old")
    _artifact(tmp_path / "model.rknn", b"a rewritten model")  # another size: another file
    hand_back(key_old, rewritten)
    assert rewritten.released and not kept.released and list(empty_pool) == [key_kept]
    key_gone = _artifact(tmp_path / "gone.rknn")
    (tmp_path / "gone.rknn").unlink()
    hand_back(key_gone, removed)
    assert removed.released and not kept.released and list(empty_pool) == [key_kept]
    assert take_live(tmp_path / "model.rknn") is None and take_live(tmp_path / "kept.rknn").rk is kept


def test_loading_a_rewritten_artifact_releases_what_its_old_version_left(tmp_path, empty_pool):
    """A build leaves its object for the first load; if the file is rebuilt by another process before that load,
    the load finds nothing for the new file and releases the old object instead of leaving it until exit."""
    from yoloport.backends.rknn.build import LiveSimulator, take_live

    stale, other = _FakeSimulator(), _FakeSimulator()
    empty_pool[_artifact(tmp_path / "model.rknn", b"old")] = LiveSimulator(stale, False)
    key_other = _artifact(tmp_path / "other.rknn")
    empty_pool[key_other] = LiveSimulator(other, True)
    _artifact(tmp_path / "model.rknn", b"rebuilt elsewhere")
    assert take_live(tmp_path / "model.rknn") is None
    assert stale.released and not other.released and list(empty_pool) == [key_other]


def test_runtime_input_is_uint8_nhwc():
    x = np.random.default_rng(0).integers(0, 256, (2, 3, 4, 5)).astype(np.float32) / 255.0
    u8 = rb.RknnRunner.to_runtime_input(x)
    assert u8.dtype == np.uint8 and u8.shape == (2, 4, 5, 3)
    np.testing.assert_array_equal(u8.transpose(0, 3, 1, 2).astype(np.float32) / 255.0, x)


def test_int8_build_agrees_with_fp32(tiny, batch, calib, tmp_path):
    """int8 (w8a8, 3 calibration images) agrees with PyTorch fp32: cosine > 0.995 per head output
    (measured 0.998-0.999; the fixture weights reach 0.9996, see the slow test)."""
    t0 = time.perf_counter()
    art = _build(tiny, tmp_path, "raw", calib, platform="rk3566")
    info = json.loads((tmp_path / "model.rknn.json").read_text())
    assert info["precision"] == "int8" and info["platform"] == "rk3566" and info["calibration"]["count"] == 3
    assert len((tmp_path / info["rknn"]["dataset"]).read_text().split()) == 3
    runner = rb.load(art)
    out = runner(batch)
    runner.close()
    ref = TorchRunner(tiny)(batch)
    rows = C.check_int8_agrees(ref, out)
    print(f"int8 build+run {time.perf_counter() - t0:.1f}s, (cosine, SQNR dB) per level {rows}")


def test_int8_hybrid_layers(tiny, batch, calib, tmp_path):
    """Named layers go to float16/int16 through hybrid_quantization_step1/step2; unknown names fail."""
    last_c3 = f"model.{len(tiny.model) - 2}"  # the C3 before Detect (model.23 in yolov5n, model.24 in yolov5n-p2)
    art = _build(tiny, tmp_path, "raw", calib, hybrid={last_c3: "int16", "out0": "float16"})
    info = json.loads((tmp_path / "model.rknn.json").read_text())
    layers = info["rknn"]["hybrid_layers"]
    assert layers["out0"] == "float16"
    assert any(k.startswith(f"/{last_c3}/") and v == "int16" for k, v in layers.items())
    runner = rb.load(art)
    out = runner(batch[:1])
    runner.close()
    assert len(out) == 3 and all(o.dtype == np.float32 for o in out)
    with pytest.raises(YoloportError, match="matches no tensor"):
        _build(tiny, tmp_path / "bad", "raw", calib, hybrid=["/model.99/nothing"])


# ----------------------------------------------------------------------------- fixture weights


@pytest.mark.slow
@pytest.mark.fixtures
@pytest.mark.parametrize("mode,tol_px", [("raw", 0.25), ("split", 0.5)])
def test_fixture_float_detections_match_torch(reference, tmp_path, mode, tol_px):
    """yolov5n-v6.1 on bus.jpg at Ultralytics' own letterbox size (640x480), float build: the
    detections Ultralytics' code gives (reference.json: count, classes, boxes, scores), and PyTorch's.

    RKNN's float is float16: measured 0.126 px (raw) and 0.280 px (split, decode in fp16 in the
    graph) from PyTorch at 640x640 - the order of PyTorch's own float16 (0.089 px).
    """
    from conftest import fixture_path
    from yoloport.data.letterbox import preprocess
    from yoloport.models import load_model
    from yoloport.ops.boxes import scale_boxes

    ref = reference["detect"]["yolov5n-v6.1"]["bus.jpg"]
    model = load_model(fixture_path("weights/yolov5n-v6.1.pt"))
    im = cv2.imread(str(fixture_path("images/bus.jpg")))
    hw = tuple(ref["letterbox_input_hw"])
    x, meta = preprocess(im, hw, auto=False)
    x = x[None]
    tr = TorchRunner(model)
    d0 = postprocess(tr(x), tr.head, conf_thres=ref["conf_thres"], iou_thres=ref["iou_thres"])[0]
    onnx, head = export_onnx(model, tmp_path / "m.onnx", hw, mode)
    runner = rb.load(rb.build(model, onnx, head, tmp_path, None, {}), model=model)
    d1 = postprocess(runner(x), runner.head, conf_thres=ref["conf_thres"], iou_thres=ref["iou_thres"])[0]
    runner.close()
    np.testing.assert_array_equal(d0[:, 5], d1[:, 5])
    err = np.abs(d0[:, :4] - d1[:, :4]).max()
    print(f"{mode}: max box difference {err:.4f} px, conf {np.abs(d0[:, 4] - d1[:, 4]).max():.2e}")
    assert err < tol_px and np.abs(d0[:, 4] - d1[:, 4]).max() < 3e-3
    expected = np.array([[*d["xyxy"], d["conf"], d["cls"]] for d in ref["detections"]], np.float32)
    in_orig = d1.copy()
    scale_boxes(meta.input_hw, in_orig[:, :4], meta.orig_hw, (meta.ratio, meta.pad))
    C.check_detections_match([expected], [in_orig], min_iou=0.98, max_conf_delta=5e-3)


@pytest.mark.slow
@pytest.mark.fixtures
def test_fixture_int8_agrees_with_fp32(tmp_path):
    """yolov5n-v6.1 at 320, w8a8 per-channel on 8 coco-extra calibration images, judged on two
    COCO128 images (never calibration images): raw outputs cosine > 0.999 per level and the same
    detections count."""
    from conftest import fixture_path
    from yoloport.models import load_model

    model = load_model(fixture_path("weights/yolov5n-v6.1.pt"))
    cal = load_calibration(fixture_path("coco-extra/images/calib2017"), n=8, img_size_hw=(320, 320))
    ev = load_calibration(fixture_path("coco128/images"), n=2, img_size_hw=(320, 320), seed=None)
    C.check_disjoint(cal.paths, ev.paths)
    x = np.concatenate(ev.arrays(), 0)
    tr = TorchRunner(model)
    ref = tr(x)
    onnx, head = export_onnx(model, tmp_path / "m.onnx", (320, 320), "raw")
    runner = rb.load(rb.build(model, onnx, head, tmp_path, cal, {"platform": "rk3588"}))
    out = runner(x)
    runner.close()
    coss = [_cos(a, b) for a, b in zip(out, ref)]
    print("int8 cosine per level", coss)
    assert min(coss) > 0.999
    assert [len(d) for d in postprocess(out, head)] == [len(d) for d in postprocess(ref, tr.head)]
