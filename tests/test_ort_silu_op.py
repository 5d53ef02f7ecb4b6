"""ONNX Runtime int8 with each SiLU as one fused QuickGelu between the conv's and the Mul's grids
(``silu_op: quickgelu``, yoloport.backends.onnxruntime_silu_op): one rounding instead of two on a constructed
graph, what must not be fused, the grids chosen for the fused unit, a built model's kernels and its agreement
with torch, and bad settings refused."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from yoloport.backends.onnxruntime_backend import resolve_qconfig  # noqa: E402
from yoloport.backends.onnxruntime_silu_grids import unit_grid_ranges, unit_outputs  # noqa: E402
from yoloport.backends.onnxruntime_silu_op import fuse_silu_units, qdq_silu_units  # noqa: E402
from yoloport.backends.registry import build_artifact, load_runner  # noqa: E402
from yoloport.backends.torch_backend import TorchRunner  # noqa: E402
from yoloport.data.calibration import load_calibration  # noqa: E402
from yoloport.errors import YoloportError  # noqa: E402

import _checks as C  # noqa: E402
from conftest import write_synth_images  # noqa: E402

HW = (96, 128)
SX, ZX = 0.05, 100  # the conv output's grid
SM, ZM = 0.03, 12  # the Mul output's grid


def silu_graph(other_codes: bool = False, rounded_sigmoid: bool = True) -> onnx.ModelProto:
    """``x -> Q/DQ -> Sigmoid -> Q/DQ (1/255) -> Mul(x, s) -> Q/DQ -> y`` plus a lone head-like
    ``Sigmoid -> Q/DQ -> h`` on the same codes. ``other_codes``: the Mul's ``x`` is read from another
    quantized tensor (``x2``) on the same grid, so the unit is not ``x * sigmoid(x)``. ``rounded_sigmoid``
    False: the sigmoid goes to the Mul in float (a QAT model's QDQ graph)."""
    c = lambda name, v, dt: numpy_helper.from_array(np.array(v, dt), name)  # noqa: E731
    inits = [c("sx", SX, np.float32), c("zx", ZX, np.uint8), c("ss", 1 / 255, np.float32), c("zs", 0, np.uint8),
             c("sm", SM, np.float32), c("zm", ZM, np.uint8)]
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["qx"], name="qx"),
             helper.make_node("DequantizeLinear", ["qx", "sx", "zx"], ["dx"], name="dx"),
             helper.make_node("Sigmoid", ["dx"], ["s"], name="sig"),
             helper.make_node("QuantizeLinear", ["s", "ss", "zs"], ["qs"], name="qs"),
             helper.make_node("DequantizeLinear", ["qs", "ss", "zs"], ["ds"], name="ds"),
             helper.make_node("Mul", ["dx2" if other_codes else "dx", "ds"], ["m"], name="mul"),
             helper.make_node("QuantizeLinear", ["m", "sm", "zm"], ["qm"], name="qm"),
             helper.make_node("DequantizeLinear", ["qm", "sm", "zm"], ["y"], name="dy"),
             # the head's kind of Sigmoid: not half of x * sigmoid(x)
             helper.make_node("Sigmoid", ["dx"], ["h0"], name="head_sig"),
             helper.make_node("QuantizeLinear", ["h0", "ss", "zs"], ["qh"], name="qh"),
             helper.make_node("DequantizeLinear", ["qh", "ss", "zs"], ["h"], name="dh")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])]
    if other_codes:
        nodes[:0] = [helper.make_node("QuantizeLinear", ["x2", "sx", "zx"], ["qx2"], name="qx2"),
                     helper.make_node("DequantizeLinear", ["qx2", "sx", "zx"], ["dx2"], name="dx2")]
        inputs.append(helper.make_tensor_value_info("x2", TensorProto.FLOAT, [1, 2, 8, 8]))
    if not rounded_sigmoid:
        nodes = [n for n in nodes if n.name not in ("qs", "ds")]
        nodes[[n.name for n in nodes].index("mul")].input[1] = "s"
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "h")]
    return helper.make_model(helper.make_graph(nodes, "silu", inputs, outputs, inits), opset_imports=[helper.make_opsetid("", 13)])


def run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(["y", "h"], {"x": x})


def on_grid(v, scale, zero) -> np.ndarray:
    return (np.clip(np.round(v / np.float32(scale)) + zero, 0, 255) - zero) * np.float32(scale)


def test_fused_unit_rounds_silu_once_and_leaves_the_head_sigmoid():
    x = np.random.default_rng(0).uniform(-5.0, 7.0, (1, 2, 8, 8)).astype(np.float32)
    xq = on_grid(x, SX, ZX)
    once = on_grid(xq / (1 + np.exp(-xq)), SM, ZM)  # exact SiLU of the conv's codes, rounded on the Mul grid
    plain = silu_graph()
    y_before, h_before = run(plain, x)
    fused = silu_graph()
    assert fuse_silu_units(fused) == 1
    ops = [n.op_type for n in fused.graph.node]
    assert ops.count("QuickGelu") == 1 and ops.count("Sigmoid") == 1 and "Mul" not in ops  # the head's Sigmoid stays
    q = next(n for n in fused.graph.node if n.op_type == "QuickGelu")
    assert q.domain == "com.microsoft" and helper.get_attribute_value(q.attribute[0]) == pytest.approx(1.0)
    y_after, h_after = run(fused, x)
    np.testing.assert_allclose(y_after, once, atol=SM * 0.01)  # one rounding, on the Mul grid
    assert np.abs(y_before - once).max() >= SM * 0.99  # the sigmoid's own rounding moved some values a whole step
    np.testing.assert_array_equal(h_after, h_before)
    assert fuse_silu_units(fused) == 0  # nothing left to fuse


def test_a_float_sigmoid_unit_fuses_exactly():
    """A QAT graph's unit (the sigmoid not rounded) becomes the same QuickGelu with the same outputs."""
    x = np.random.default_rng(2).uniform(-5.0, 7.0, (1, 2, 8, 8)).astype(np.float32)
    plain, fused = silu_graph(rounded_sigmoid=False), silu_graph(rounded_sigmoid=False)
    assert [u.q_s for u in qdq_silu_units(fused)] == [None]
    assert fuse_silu_units(fused) == 1 and "Mul" not in [n.op_type for n in fused.graph.node]
    for a, b in zip(run(plain, x), run(fused, x)):
        np.testing.assert_allclose(a, b, atol=SM * 1e-3)


def test_a_mul_of_other_codes_is_not_a_silu():
    m = silu_graph(other_codes=True)
    assert qdq_silu_units(m) == [] and fuse_silu_units(m) == 0


def test_bad_silu_op_settings_are_user_errors():
    with pytest.raises(YoloportError, match="silu_op must be one of qlinear, quickgelu"):
        resolve_qconfig({"silu_op": "fused"})
    with pytest.raises(YoloportError, match="sigmoid_range takes 'none'"):
        resolve_qconfig({"silu_op": "quickgelu", "sigmoid_range": "unit"})
    with pytest.raises(YoloportError, match="needs silu_op quickgelu"):
        resolve_qconfig({"silu_op": "qlinear", "sigmoid_range": "none"})
    cfg = resolve_qconfig({"silu_op": "QuickGelu"})
    assert cfg["silu_op"] == "quickgelu" and cfg["sigmoid_range"] == "none"


def test_the_fused_units_grids_assume_an_unrounded_sigmoid():
    """With ``sigmoid_range: none`` the Mul's grid is chosen for ``q(x) * sigmoid(q(x))``, not for the product
    with a rounded sigmoid, and no Sigmoid grid is asked for."""
    rng = np.random.default_rng(1)
    counts, edges = np.histogram(rng.normal(-1.0, 2.5, 200_000), bins=512)
    centers = (edges[:-1] + edges[1:]) / 2
    opts = {"preact_range": "silu_zero", "mul_range": "mse"}
    fused = unit_grid_ranges(centers, counts, {**opts, "sigmoid_range": "none"})
    unit = unit_grid_ranges(centers, counts, {**opts, "sigmoid_range": "unit"})
    assert "sigmoid" not in fused and unit["sigmoid"] == (0.0, 1.0)
    assert fused["mul"] != unit["mul"]
    x_range = fused["preact"]
    m, target = unit_outputs(centers, x_range, None)
    exact = on_grid(centers, *_grid(x_range))
    np.testing.assert_allclose(m, exact / (1 + np.exp(-exact)), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(target, centers / (1 + np.exp(-centers)), rtol=1e-9)


def _grid(r):
    from yoloport.backends.onnxruntime_silu_grids import uint8_grid

    scale, zero = uint8_grid(*r)
    return float(scale), float(zero)


@pytest.fixture(scope="module")
def builds(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("siluop")
    calib = load_calibration(write_synth_images(out / "calib", 4, HW, seed=0), n=4, img_size_hw=HW)
    return {op: build_artifact("onnxruntime", tiny_model, out / op, HW, calib, {"silu_op": op}) for op in ("qlinear", "quickgelu")}


def test_built_model_runs_every_silu_as_one_quickgelu(builds, tmp_path):
    from test_ort_silu_grids import fused_op_counts

    plain, fused = fused_op_counts(builds["qlinear"], tmp_path), fused_op_counts(builds["quickgelu"], tmp_path)
    assert plain["QLinearSigmoid"] > 0 and "QuickGelu" not in plain
    assert fused.get("QuickGelu") == plain["QLinearSigmoid"] and "QLinearSigmoid" not in fused
    assert fused["QLinearConv"] == plain["QLinearConv"]  # every conv still int8
    from yoloport.backends.base import read_sidecar

    settings = read_sidecar(builds["quickgelu"])["qconfig"]
    assert settings["silu_op"] == "quickgelu" and settings["silu_units_fused"] == plain["QLinearSigmoid"]


def test_fused_silu_agrees_with_torch(tiny_model, builds, tmp_path):
    ev = load_calibration(write_synth_images(tmp_path / "eval", 3, HW, seed=1, prefix="eval"), n=3, img_size_hw=HW, seed=None)
    batch = np.concatenate(ev.arrays(), 0)
    C.check_int8_agrees(TorchRunner(tiny_model)(batch), load_runner("onnxruntime", builds["quickgelu"])(batch))
