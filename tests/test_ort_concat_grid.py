"""ONNX Runtime int8 with every Concat's inputs on the Concat output's grid (``concat_grid: shared``,
yoloport.backends.onnxruntime_concat_grid): one rounding instead of two on a constructed graph, the grids in a
built model, the same fused kernels, agreement with torch, and a bad value refused."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from yoloport.backends.onnxruntime_backend import resolve_qconfig  # noqa: E402
from yoloport.backends.onnxruntime_concat_grid import share_concat_grids  # noqa: E402
from yoloport.backends.registry import build_artifact, load_runner  # noqa: E402
from yoloport.backends.torch_backend import TorchRunner  # noqa: E402
from yoloport.data.calibration import load_calibration  # noqa: E402
from yoloport.errors import YoloportError  # noqa: E402

import _checks as C  # noqa: E402
from conftest import write_synth_images  # noqa: E402

HW = (96, 128)


def concat_graph(extra_reader: bool = False) -> onnx.ModelProto:
    """``a, b -> Q/DQ on their own grids -> Concat -> Q/DQ on the output's grid`` (float in, float out);
    ``extra_reader``: ``a``'s quantized codes are also read by a ``Cast`` (an op that is not a DQ)."""
    c = lambda name, v, dt: numpy_helper.from_array(np.array(v, dt), name)  # noqa: E731
    inits = [c("sa", 0.013, np.float32), c("za", 40, np.uint8), c("sb", 0.031, np.float32), c("zb", 3, np.uint8),
             c("so", 0.047, np.float32), c("zo", 30, np.uint8)]
    nodes = [helper.make_node("QuantizeLinear", ["a", "sa", "za"], ["qa"]),
             helper.make_node("DequantizeLinear", ["qa", "sa", "za"], ["da"]),
             helper.make_node("QuantizeLinear", ["b", "sb", "zb"], ["qb"]),
             helper.make_node("DequantizeLinear", ["qb", "sb", "zb"], ["db"]),
             helper.make_node("Concat", ["da", "db"], ["cat"], axis=1),
             helper.make_node("QuantizeLinear", ["cat", "so", "zo"], ["qo"]),
             helper.make_node("DequantizeLinear", ["qo", "so", "zo"], ["y"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if extra_reader:
        nodes.append(helper.make_node("Cast", ["qa"], ["codes"], to=TensorProto.INT32))
        outputs.append(helper.make_tensor_value_info("codes", TensorProto.INT32, None))
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 2, 8, 8]) for n in ("a", "b")]
    return helper.make_model(helper.make_graph(nodes, "cat", ins, outputs, inits),
                             opset_imports=[helper.make_opsetid("", 13)])


def run(model: onnx.ModelProto, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(["y"], {"a": a, "b": b})[0]


def out_grid(x: np.ndarray) -> np.ndarray:
    """``x`` rounded once onto the output grid (scale 0.047, zero point 30, uint8)."""
    return (np.clip(np.round(x / np.float32(0.047)) + 30, 0, 255) - 30) * np.float32(0.047)


def test_shared_grid_rounds_concat_inputs_once():
    rng = np.random.default_rng(0)
    a = rng.uniform(-0.5, 3.0, (1, 2, 8, 8)).astype(np.float32)
    b = rng.uniform(-0.09, 7.8, (1, 2, 8, 8)).astype(np.float32)
    own = concat_graph()
    before = run(own, a, b)
    shared = concat_graph()
    assert share_concat_grids(shared) == 2
    after = run(shared, a, b)
    once = out_grid(np.concatenate([a, b], 1))
    np.testing.assert_allclose(after, once, atol=1e-6)  # exactly one rounding, on the output's grid
    assert np.abs(before - once).max() > 0.04  # the own grids rounded twice: up to a whole step off
    assert share_concat_grids(shared) == 0  # nothing left to move


def test_codes_read_by_another_op_keep_their_grid():
    m = concat_graph(extra_reader=True)
    assert share_concat_grids(m) == 1  # only b moves: a's codes are also read raw by the Cast
    q = {n.output[0]: n for n in m.graph.node if n.op_type == "QuantizeLinear"}
    assert q["qa"].input[1] == "sa" and q["qb"].input[1] == "so" and q["qb"].input[2] == "zo"


def test_bad_concat_grid_is_a_user_error():
    with pytest.raises(YoloportError, match="concat_grid must be one of own, shared"):
        resolve_qconfig({"concat_grid": "union"})
    assert resolve_qconfig({"concat_grid": "SHARED"})["concat_grid"] == "shared"
    assert resolve_qconfig({})["concat_grid"] == "own"


@pytest.fixture(scope="module")
def builds(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("concatgrid")
    calib = load_calibration(write_synth_images(out / "calib", 4, HW, seed=0), n=4, img_size_hw=HW)
    return {g: build_artifact("onnxruntime", tiny_model, out / g, HW, calib, {"concat_grid": g}) for g in ("own", "shared")}


def test_built_model_concat_inputs_share_the_output_grid(builds):
    """Concat inputs read by nothing else and not made by MaxPool / Resize are on the output's grid; the
    others keep their own (see the module docstring)."""
    g = onnx.load(str(builds["shared"])).graph
    producer = {o: n for n in g.node for o in n.output}
    readers = {}
    for n in g.node:
        for t in n.input:
            readers.setdefault(t, []).append(n)
    shared = kept = 0
    for cat in (n for n in g.node if n.op_type == "Concat"):
        q_out = [r for r in readers.get(cat.output[0], []) if r.op_type == "QuantizeLinear"]
        for t in cat.input:
            dq = producer.get(t)
            if not q_out or dq is None or dq.op_type != "DequantizeLinear":
                continue
            q_in = producer[dq.input[0]]
            only_concat = all(c is cat for r in readers[q_in.output[0]] for c in readers.get(r.output[0], []))
            by_code_op = getattr(producer.get(q_in.input[0]), "op_type", "") in ("MaxPool", "Resize")
            if only_concat and not by_code_op:
                assert tuple(dq.input[1:3]) == tuple(q_out[0].input[1:3]), cat.name
                shared += 1
            else:
                kept += 1
    assert shared >= 4 and kept >= 1


def test_shared_grid_keeps_the_kernels_and_agrees_with_torch(tiny_model, builds, tmp_path):
    from test_ort_silu_grids import fused_op_counts

    own, shared = fused_op_counts(builds["own"], tmp_path), fused_op_counts(builds["shared"], tmp_path)
    assert shared == own and own.get("QLinearConv", 0) > 0  # the same kernels: only grids differ
    ev = load_calibration(write_synth_images(tmp_path / "eval", 3, HW, seed=1, prefix="eval"), n=3, img_size_hw=HW, seed=None)
    batch = np.concatenate(ev.arrays(), 0)
    C.check_int8_agrees(TorchRunner(tiny_model)(batch), load_runner("onnxruntime", builds["shared"])(batch))
