"""Inner tensors of an ONNX graph read as extra graph outputs, written once (deploy.onnx_graph.with_outputs) and
used by the lint's dynamic range check, ONNX Runtime's per-conv debug errors and the SiLU grids' pre-activation
histograms. Each caller's figures are compared with the same figures computed here the plain way (the tensors
read straight from an ONNX Runtime session of a hand-exposed graph), so the refactor changed no number."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from yoloport.backends import onnxruntime_debug as dbg  # noqa: E402
from yoloport.backends import onnxruntime_ranges as rg  # noqa: E402
from yoloport.backends import onnxruntime_silu_grids as sg  # noqa: E402
from yoloport.backends.onnxruntime_tensors import tensor_histograms  # noqa: E402
from yoloport.backends.registry import build_artifact  # noqa: E402
from yoloport.data.calibration import load_calibration  # noqa: E402
from yoloport.deploy import lint  # noqa: E402
from yoloport.deploy.onnx_graph import with_outputs  # noqa: E402

from conftest import write_synth_images  # noqa: E402

HW = (96, 128)  # (h, w)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[np.ndarray]:
    """Three ``[1, 3, 96, 128]`` float32 images."""
    calib = load_calibration(write_synth_images(tmp_path_factory.mktemp("im"), 3, HW, seed=0), n=3, img_size_hw=HW)
    return [np.asarray(a, np.float32) for a in calib.arrays()]


@pytest.fixture(scope="module")
def fp32(tiny_model, tmp_path_factory):
    return build_artifact("onnxruntime", tiny_model, tmp_path_factory.mktemp("fp32"), HW, None, {})


def plain_values(path, tensors: list[str], images, optimise: bool = False) -> dict[str, list[np.ndarray]]:
    """``{tensor: [value per image]}``: ``tensors`` appended to a copy of the graph's outputs by hand, one CPU
    session (graph optimisation off unless ``optimise``)."""
    m = onnx.load(str(path))
    have = {o.name for o in m.graph.output}
    for t in tensors:
        if t not in have:
            m.graph.output.add().name = t
            have.add(t)
    so = ort.SessionOptions()
    if not optimise:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    runs = [sess.run(tensors, {name: x}) for x in images]
    return {t: [r[i] for r in runs] for i, t in enumerate(tensors)}


def conv_outputs(path, k: int) -> dict[str, str]:
    """``{Conv node: its output tensor}`` for the first ``k`` Conv nodes of the graph at ``path``."""
    convs = [n for n in onnx.load(str(path)).graph.node if n.op_type == "Conv"][:k]
    return {n.name: n.output[0] for n in convs}


# ----------------------------------------------------------------------------- the helper


def test_with_outputs_adds_each_tensor_once_and_leaves_the_model_alone(fp32):
    m = onnx.load(str(fp32))
    before = m.SerializeToString()
    graph_outputs = [o.name for o in m.graph.output]
    inner = list(conv_outputs(fp32, 3).values())
    out = with_outputs(m, [inner[0], graph_outputs[0], inner[1], inner[0], inner[2]])
    assert m.SerializeToString() == before, "the given model was changed"
    assert [o.name for o in out.graph.output] == graph_outputs + inner
    assert list(out.graph.output)[: len(graph_outputs)] == list(m.graph.output), "an existing output was rewritten"
    assert all(not o.HasField("type") for o in out.graph.output[len(graph_outputs):])  # ORT infers the type
    assert with_outputs(m, []).SerializeToString() == before


def test_exposed_tensors_are_the_graphs_values(fp32, images):
    """The exposed model runs, and its extra outputs are what an independent run of the graph gives: the
    last head output equals the one the unexposed graph returns."""
    m = onnx.load(str(fp32))
    last = m.graph.output[-1].name
    inner = list(conv_outputs(fp32, 2).values())
    sess = ort.InferenceSession(with_outputs(m, inner).SerializeToString(), providers=["CPUExecutionProvider"])
    plain = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    x = images[0]
    got = sess.run(inner + [last], {sess.get_inputs()[0].name: x})
    np.testing.assert_array_equal(got[-1], plain.run([last], {plain.get_inputs()[0].name: x})[0])
    assert [g.shape[0] for g in got[:-1]] == [1, 1] and all(np.isfinite(g).all() for g in got)


# ----------------------------------------------------------------------------- its callers, figure for figure


def test_lint_measure_max_abs_is_the_plain_max(fp32, images):
    inner = list(conv_outputs(fp32, 4).values())
    m = onnx.load(str(fp32))
    got = lint.measure_max_abs(m, inner, images[1])
    ref = plain_values(fp32, inner, images[1:2], optimise=True)
    assert got == {t: float(np.abs(ref[t][0]).max()) for t in inner}


def test_silu_histograms_are_one_histogram_over_every_value(fp32, images):
    """Two passes (min/max, then fixed bins) summed image by image equal one ``np.histogram`` of every value."""
    units = sg.silu_units(onnx.load(str(fp32)))
    tensors = [u.preact for u in units[:3]] + [units[-1].preact]
    bins = 256
    got = tensor_histograms(fp32, lambda: iter([{"images": x} for x in images]), tensors, bins)
    ref = plain_values(fp32, tensors, images)
    assert list(got) == tensors
    for t in tensors:
        v = np.concatenate([a.reshape(-1) for a in ref[t]])
        counts, edges = np.histogram(v, bins=bins, range=(float(v.min()), float(v.max())))
        centers, got_counts = got[t]
        np.testing.assert_array_equal(got_counts, counts)
        np.testing.assert_allclose(edges, np.linspace(v.min(), v.max(), bins + 1), rtol=1e-6)  # float32 edges
        edges64 = np.linspace(float(v.min()), float(v.max()), bins + 1)  # the centres are float64
        np.testing.assert_array_equal(centers, (edges64[:-1] + edges64[1:]) / 2)


def test_ort_debug_errors_are_the_plain_sqnr(tiny_model, fp32, images, tmp_path):
    """Each conv's accumulated SQNR and cosine between the int8 and fp32 graphs, over all images at once."""
    calib = load_calibration(write_synth_images(tmp_path / "calib", 3, HW, seed=5, prefix="cal"), n=3, img_size_hw=HW)
    int8 = build_artifact("onnxruntime", tiny_model, tmp_path / "int8", HW, calib, {"precision": "int8"})
    outs = conv_outputs(fp32, 6)
    int8_outs = {n.name: n.output[0] for n in onnx.load(str(int8)).graph.node if n.op_type == "Conv"}
    nodes = [n for n in outs if n in int8_outs]
    assert len(nodes) >= 4
    got = dbg.ort_activation_errors(fp32, int8, np.concatenate(images, 0), nodes + ["no-such-conv"])
    assert list(got) == nodes
    ref32 = plain_values(fp32, [outs[n] for n in nodes], images)
    ref8 = plain_values(int8, [int8_outs[n] for n in nodes], images)
    for n in nodes:
        r = np.concatenate(ref32[outs[n]]).astype(np.float64)
        t = np.concatenate(ref8[int8_outs[n]]).astype(np.float64)
        assert got[n]["sqnr_db"] == pytest.approx(10 * np.log10((r * r).sum() / ((r - t) ** 2).sum()), rel=1e-9)
        assert got[n]["cosine"] == pytest.approx((r * t).sum() / np.sqrt((r * r).sum() * (t * t).sum()), rel=1e-9)


def test_silu_inputs_are_the_silu_units_preactivations(fp32):
    m = onnx.load(str(fp32))
    assert rg.silu_inputs(m) == [u.preact for u in sg.silu_units(m)]
    assert len(rg.silu_inputs(m)) > 10
