"""ONNX Runtime's histogram range estimators (yoloport.backends.onnxruntime_ranges): entropy really
searches a threshold (through quantize_static alone it wrote MinMax's artifact), percentile is collected
chunk by chunk, and both stay inside the observed range. Judged on images disjoint from calibration."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from yoloport.backends import onnxruntime_ranges as rg  # noqa: E402
from yoloport.backends.onnxruntime_backend import resolve_qconfig  # noqa: E402
from yoloport.errors import YoloportError  # noqa: E402
from yoloport.backends.registry import build_artifact, load_runner  # noqa: E402
from yoloport.backends.torch_backend import TorchRunner  # noqa: E402
from yoloport.data.calibration import load_calibration  # noqa: E402
from yoloport.quant.calib_stats import qdq_activation_ranges  # noqa: E402

import _checks as C  # noqa: E402
from conftest import write_synth_images  # noqa: E402

HW = (96, 128)  # (h, w)


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    return load_calibration(write_synth_images(tmp_path_factory.mktemp("calib"), 6, HW, seed=0), n=6, img_size_hw=HW)


@pytest.fixture(scope="module")
def batch(tmp_path_factory, calib):
    ev = load_calibration(write_synth_images(tmp_path_factory.mktemp("eval"), 3, HW, seed=1, prefix="eval"), n=3,
                          img_size_hw=HW, seed=None)
    C.check_disjoint(calib.paths, ev.paths)
    return np.concatenate(ev.arrays(), 0)


MINMAX_GRIDS = {"preact_range": "minmax", "sigmoid_range": "minmax", "mul_range": "minmax"}


@pytest.fixture(scope="module")
def built(tiny_model, calib, tmp_path_factory):
    """int8 artifacts per ORT calibration method alone (SiLU grids off; head in float, the backend's default;
    512 histogram bins keep ORT's entropy search, a Python loop per candidate threshold, to seconds)."""
    out = tmp_path_factory.mktemp("ortranges")
    return {m: build_artifact("onnxruntime", tiny_model, out / m, HW, calib, {"calib_method": m, "calib_bins": 512, **MINMAX_GRIDS})
            for m in ("minmax", "entropy", "percentile")}


def test_chunks_keep_order_and_sizes():
    feeds = [{"x": i} for i in range(7)]
    parts = list(rg.chunks(feeds, 3))
    assert [len(p) for p in parts] == [3, 3, 1] and [f["x"] for p in parts for f in p] == list(range(7))
    assert list(rg.chunks([], 3)) == []


def test_entropy_differs_from_minmax_and_only_narrows(built):
    mm, ent = qdq_activation_ranges(built["minmax"]), qdq_activation_ranges(built["entropy"])
    assert set(mm) == set(ent)
    narrower = [t for t in mm if ent[t] < mm[t] * (1 - 1e-3)]
    assert narrower, "entropy chose MinMax's range for every tensor (its threshold search did not run)"
    assert all(ent[t] <= mm[t] * (1 + 1e-3) for t in mm), "an entropy range is wider than the observed one"


def test_percentile_only_narrows(built):
    mm, pc = qdq_activation_ranges(built["minmax"]), qdq_activation_ranges(built["percentile"])
    assert any(pc[t] < mm[t] * (1 - 1e-3) for t in mm)
    assert all(pc[t] <= mm[t] * (1 + 1e-3) for t in mm)


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_histogram_builds_agree_with_torch(tiny_model, built, batch, method):
    C.check_int8_agrees(TorchRunner(tiny_model)(batch), load_runner("onnxruntime", built[method])(batch))


def test_chunked_collection_matches_one_pass(tiny_model, calib, tmp_path):
    """Images fed one at a time (merged histograms) give the ranges of one pass over all of them, to
    within two histogram bins at either end (the bins' edges depend on the first chunk's extent)."""
    import onnx

    from yoloport.backends.onnxruntime_backend import calibration_reader

    art = build_artifact("onnxruntime", tiny_model, tmp_path / "fp32", HW, None, {})
    feeds = list(rg.reader_feeds(calibration_reader(calib, onnx.load(str(art)).graph.input[0].name, 1)))
    assert len(feeds) == 6
    kw = dict(num_bins=256, num_quantized_bins=128, percentile=99.9)
    one = rg.histogram_ranges(art, feeds, "percentile", chunk=1, **kw)
    whole = rg.histogram_ranges(art, feeds, "percentile", chunk=len(feeds), **kw)
    assert one.keys() == whole.keys() and len(one) > 10
    for t in one:
        width = max(abs(whole[t][0]), abs(whole[t][1])) / 256
        assert abs(one[t][0] - whole[t][0]) <= 2 * width + 1e-7, t
        assert abs(one[t][1] - whole[t][1]) <= 2 * width + 1e-7, t


@pytest.mark.parametrize("bad", [{"calib_bins": 8}, {"calib_bins": "many"}, {"calib_quantized_bins": 4096},
                                 {"calib_quantized_bins": 1}, {"calib_bins": 64, "calib_quantized_bins": 128}])
def test_bad_histogram_settings_are_user_errors(bad):
    with pytest.raises(YoloportError, match="calib_(quantized_)?bins"):
        resolve_qconfig({"calib_method": "entropy", **bad})


def test_histogram_settings_are_kept_only_where_they_act():
    assert "calib_quantized_bins" in resolve_qconfig({"calib_method": "entropy"})
    pc = resolve_qconfig({"calib_method": "percentile"})
    assert "calib_bins" in pc and "calib_quantized_bins" not in pc
    mm = resolve_qconfig({})
    assert "calib_bins" not in mm and mm["calib_moving_average"] is False


def test_floor_ranges_raises_only_low_ends_of_named_tensors():
    ranges = {"a": (-20.0, 5.0), "b": (-3.0, 4.0), "c": (-20.0, 1.0)}
    assert rg.floor_ranges(ranges, ["a", "b"], -6.0) == {"a": (-6.0, 5.0), "b": (-3.0, 4.0), "c": (-20.0, 1.0)}


def q_lower_ends(path) -> dict[str, float]:
    """tensor -> the lower end of its activation QuantizeLinear's uint8 grid (-zero_point * scale)."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    return {n.input[0]: float(-inits[n.input[2]].astype(np.float64).reshape(-1)[0] * inits[n.input[1]].reshape(-1)[0])
            for n in m.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits and n.input[1] in inits}


def test_silu_floor_narrows_preactivations_only(tiny_model, calib, batch, built, tmp_path):
    import onnx

    floor = -3.0  # SiLU(x < -3) is within 0.15 of 0: clipping there costs little (-1.0 cost 17.7 dB on the P2 default model)
    art = build_artifact("onnxruntime", tiny_model, tmp_path, HW, calib, {"silu_floor": floor})
    fp32 = build_artifact("onnxruntime", tiny_model, tmp_path / "fp32", HW, None, {})
    pre = set(rg.silu_inputs(onnx.load(str(fp32))))
    assert len(pre) > 10  # every Conv-SiLU of the model
    lo_mm, lo_fl = q_lower_ends(built["minmax"]), q_lower_ends(art)
    scale_tol = 0.05  # a zero point is an integer: the grid's lower end moves by under one step
    assert all(lo_fl[t] >= floor - scale_tol for t in pre)
    assert any(lo_mm[t] < floor - 0.5 for t in pre), "no pre-activation reached below the floor: the test shows nothing"
    assert all(lo_fl[t] == pytest.approx(lo_mm[t], abs=1e-6) for t in lo_mm if t not in pre and t in lo_fl)
    C.check_int8_agrees(TorchRunner(tiny_model)(batch), load_runner("onnxruntime", art)(batch))


def test_silu_floor_must_be_negative():
    for bad in (0, 2.0, "low", True):
        with pytest.raises(YoloportError, match="silu_floor"):
            resolve_qconfig({"silu_floor": bad})
