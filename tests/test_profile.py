"""``yoloport.analysis.profile`` and ``yoloport profile``: per-op-type tables from the runtimes' own
profilers. Tables are checked for structure against the graph itself (every node of the graph
profiled once, each op type's row counts its nodes, the Focus stem has its own row), never for
timings."""
import json

import numpy as np
import pytest
import torch

from yoloport.analysis import profile as prof
from yoloport.cli import main
from yoloport.errors import YoloportError

HW = (128, 128)


@pytest.fixture(scope="module")
def v5_model():
    from yoloport.nn.model import DetectionModel

    torch.manual_seed(0)
    return DetectionModel("yolov5n-v5.0", nc=3).eval()


@pytest.fixture(scope="module")
def onnx_pair(tmp_path_factory, v5_model):
    """(v5.0 Focus ONNX, the same model after focus_to_conv) at 128x128, batch 1."""
    from yoloport.deploy.export import export_onnx
    from yoloport.deploy.surgery import focus_to_conv

    d = tmp_path_factory.mktemp("prof")
    focus, _ = export_onnx(v5_model, d / "focus.onnx", HW, "raw", 1)
    conv, _ = export_onnx(focus_to_conv(v5_model), d / "conv.onnx", HW, "raw", 1)
    return focus, conv


@pytest.fixture(scope="module")
def images():
    return prof.synthetic_images(1, HW)


def _check_sums(table):
    """Structure only. (Rows summing to the total and ratios to 1 hold by construction - the table
    aggregates its own nodes - so they are not checked; ``_check_against_graph`` checks the nodes.)"""
    rows = table.rows
    assert rows, "empty profile"
    assert all(r.time_us >= 0 and r.count >= 1 for r in rows)
    assert [r.time_us for r in rows] == sorted((r.time_us for r in rows), reverse=True)
    text = table.format(per_node=True)
    assert "layer type" in text and "total" in text and "100.0%" in text
    json.dumps(table.to_dict(per_node=True))


def _labels(table):
    return {r.layer for r in table.rows}


def _check_against_graph(table, onnx_path):
    """An unoptimised ORT profile ran every node of the ONNX graph exactly once per run: its nodes
    are the graph's computing nodes, and each op type's count is the graph's count of that type."""
    import collections

    import onnx

    # Constant nodes become initializers when ORT loads the graph, at every level
    graph = [n for n in onnx.load(str(onnx_path)).graph.node if n.op_type != "Constant"]
    assert sorted(n.name for n in table.nodes) == sorted(n.name for n in graph)
    by_type = collections.Counter(n.op_type for n in graph)
    assert table.row("Conv").count == by_type["Conv"]


def test_onnxruntime_table_sums_and_focus_row(onnx_pair, images):
    focus, conv = onnx_pair
    t = prof.profile_artifact("onnxruntime", focus, images, runs=2, threads=1, warmup=1)
    _check_sums(t)
    assert "Conv" in _labels(t)
    assert any(label.endswith("(Focus)") for label in _labels(t))  # ORT fuses the slices: SpaceToDepth + Gather
    raw = prof.profile_artifact("onnxruntime", focus, images, runs=1, threads=1, warmup=1, opt_level="none")
    _check_sums(raw)
    _check_against_graph(raw, focus)
    assert raw.row("Slice (Focus)").count == 6  # the graph as exported: Focus' strided slices
    after = prof.profile_artifact("onnxruntime", conv, images, runs=1, threads=1, warmup=1, opt_level="none")
    _check_against_graph(after, conv)
    assert not any("Focus" in label or label == "Slice" for label in _labels(after))


def test_openvino_table_sums_and_focus_row(onnx_pair, images):
    pytest.importorskip("openvino")
    focus, conv = onnx_pair
    t = prof.profile_artifact("openvino", focus, images, runs=2, threads=1, warmup=1)
    _check_sums(t)
    assert "Conv" in _labels(t) and "Slice (Focus)" in _labels(t)
    after = prof.profile_artifact("openvino", conv, images, runs=1, threads=1, warmup=1)
    _check_sums(after)
    assert not any("Focus" in label for label in _labels(after))


def test_int8_qdq_artifact_profiles(tmp_path, v5_model, images):
    """An ORT int8 QDQ artifact profiles (quantized op rows). Built by default it keeps the v5.0 stem's
    slices (ORT's ``SPEC.focus_to_conv`` is False) and has a Focus row; built with the stem as its Conv
    (``focus_to_conv: True``) no Focus row, even with the NHWC transposes ORT puts before the first int8
    convolution."""
    import cv2

    from yoloport.backends.registry import build_artifact
    from yoloport.data.calibration import load_calibration
    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(tmp_path / f"c{i}.png"), rng.integers(0, 255, (100, 120, 3), dtype=np.uint8))
    cal = load_calibration(tmp_path, 2, HW)
    for options, focus in ((None, True), ({"focus_to_conv": True}, False)):
        art = build_artifact("onnxruntime", v5_model, tmp_path / str(focus), HW, calibration=cal, export_options=options)
        t = prof.profile_artifact("onnxruntime", art, images, runs=1, threads=1, warmup=1)
        _check_sums(t)
        assert any("Quantize" in label or label.startswith("QLinear") for label in _labels(t))
        assert any("(Focus)" in label for label in _labels(t)) == focus


def test_parse_ort_trace_splits_runs_and_drops_warmup():
    def node(name, op, ts, dur):
        return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur, "args": {"op_name": op, "provider": "CPU"}}

    events = [
        {"cat": "Session", "name": "model_run", "ts": 0, "dur": 100},
        node("a", "Slice", 1, 10), node("b", "Conv", 20, 50),
        {"cat": "Session", "name": "model_run", "ts": 200, "dur": 100},
        node("a", "Slice", 201, 4), node("b", "Conv", 210, 30),
        {"cat": "Node", "name": "b_fence_before", "ts": 209, "dur": 1, "args": {}},
        {"cat": "Session", "name": "model_run", "ts": 400, "dur": 80},
        node("a", "Slice", 401, 6), node("b", "Conv", 410, 50),
    ]
    from yoloport.backends import onnxruntime_backend as ob

    runs, walls = ob.parse_ort_trace(events, skip_runs=1)
    assert walls == [100.0, 80.0]
    assert [[r[0] for r in run] for run in runs] == [["a", "b"], ["a", "b"]]
    mean = prof.mean_node_times(runs)
    assert mean == [("a", "Slice", "CPU", 5.0), ("b", "Conv", "CPU", 40.0)]
    nodes = prof.mark_focus_stem([prof.NodeTime(*n) for n in ob.ort_nodes(mean)])
    assert nodes[0].label == "Slice (Focus)" and nodes[1].label == "Conv"


def test_focus_marking_stops_at_first_conv():
    nodes = [prof.NodeTime(n, t, t, 1.0) for n, t in [("q", "QuantizeLinear"), ("s", "Slice"), ("c", "Concat"),
                                                       ("conv", "Conv"), ("s2", "Slice"), ("c2", "Concat")]]
    marked = [n.label for n in prof.mark_focus_stem(nodes)]
    assert marked == ["QuantizeLinear", "Slice (Focus)", "Concat (Focus)", "Conv", "Slice", "Concat"]
    layout_only = [prof.NodeTime(n, t, t, 1.0) for n, t in [("g", "Gather"), ("t", "Transpose"), ("conv", "QLinearConv")]]
    assert not any(n.focus for n in prof.mark_focus_stem(layout_only))  # no slicing: not a Focus stem
    from yoloport.backends import openvino_backend as vb

    ov = prof.mark_focus_stem([prof.NodeTime(*n) for n in vb.ov_nodes(
        [("r", "Reorder", "ref", 2.0), ("x", "Convolution", "jit", 3.0), ("y", "Interpolate", "jit", 1.0)])])
    assert not any(n.focus for n in ov)
    assert [n.label for n in ov] == ["Reorder (layout)", "Conv", "Resize"]


def test_rknn_needs_a_board_and_parses_eval_perf_text():
    with pytest.raises(YoloportError, match="board"):
        prof.profile_artifact("rknn", "model.rknn")
    text = """
ID   OpType       DataType Target InputShape    OutputShape   Cycles(DDR/NPU/Total) Time(us) MacUsage(%) WorkLoad(0/1/2) RW(KB) FullName
1    InputOperator UINT8   CPU    \\            (1,3,640,640) 0/0/0                 7        \\           0.0%/0.0%/0.0%  0      InputOperator:images
2    ConvSigmoid  UINT8    NPU    (1,3,640,640) (1,16,320,320) 0/0/0                1034     14.23       100.0%/0.0%/0.0% 1407 Conv:/model.0/conv/Conv
Total Operator Elapsed Per Frame Time(us): 1041
"""
    from yoloport.backends import rknn as rb

    rows = rb.parse_rknn_perf(text)
    assert rows == [("InputOperator:images", "InputOperator", "CPU", 7.0), ("Conv:/model.0/conv/Conv", "ConvSigmoid", "NPU", 1034.0)]


def test_bad_inputs_are_user_errors(onnx_pair, images):
    focus, _ = onnx_pair
    with pytest.raises(YoloportError, match="shape"):
        prof.profile_artifact("onnxruntime", focus, np.zeros((1, 3, 64, 64), np.float32), runs=1)
    with pytest.raises(YoloportError, match="opt-level"):
        prof.profile_artifact("onnxruntime", focus, images, runs=1, opt_level="max")
    with pytest.raises(YoloportError, match="runs"):
        prof.profile_artifact("onnxruntime", focus, images, runs=0)


# ----------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def v5_ckpt(tmp_path_factory, v5_model):
    from yoloport.models import save_model

    return save_model(v5_model, tmp_path_factory.mktemp("ck") / "v5n.safetensors")


def test_cli_profile_writes_json(tmp_path, v5_ckpt, capsys):
    out = tmp_path / "p.json"
    rc = main(["profile", "--backend", "ort", "--weights", str(v5_ckpt), "--img-size", "128", "--runs", "1",
               "--warmup", "1", "--threads", "1", "--per-node", "--json", str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["backend"] == "onnxruntime" and doc["input_shape"] == [1, 3, 128, 128]
    assert doc["nodes"] and {r["layer"] for r in doc["rows"]} == {n["label"] for n in doc["nodes"]}
    assert "total" in capsys.readouterr().out


@pytest.mark.parametrize("backend, flag, focus_row", [
    ("ort", [], True),                          # ONNX Runtime keeps the slices (its SPEC.focus_to_conv)
    ("ort", ["--focus-to-conv"], False),
    ("openvino", [], False),                    # OpenVINO takes the stem as its Conv
    ("openvino", ["--no-focus-to-conv"], True),
])
def test_cli_profile_exports_the_stem_as_port_does(backend, flag, focus_row, tmp_path, v5_ckpt):
    """``--weights`` profiles the graph quantize/port would export for the backend; the flags outrank it.
    The checkpoint's strided slices are marked as the Focus stem."""
    pytest.importorskip("openvino") if backend == "openvino" else None
    out = tmp_path / "p.json"
    rc = main(["profile", "--backend", backend, "--weights", str(v5_ckpt), "--img-size", "128", "--runs", "1",
               "--warmup", "1", "--threads", "1", "--json", str(out), *flag])
    assert rc == 0
    labels = {r["layer"] for r in json.loads(out.read_text())["rows"]}
    assert any("(Focus)" in label for label in labels) == focus_row


@pytest.mark.parametrize("argv, msg", [
    (["--backend", "nosuch"], "unknown backend"),
    (["--backend", "torch"], "profiler"),
    (["--backend", "onnxruntime", "--artifact", "missing.onnx"], "does not exist"),
    (["--backend", "rknn"], "--artifact"),
    (["--backend", "onnxruntime", "--artifact", "a.onnx", "--no-focus-to-conv"], "apply to --weights"),
    ([], "--backend is required"),
])
def test_cli_profile_bad_input_one_line(argv, msg, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc = main(["profile", *argv])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1 and msg in err
    assert not (tmp_path / "runs").exists()
