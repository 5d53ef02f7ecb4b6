"""Tests for ``yoloport lint`` (yoloport.deploy.lint): small graphs from torch exports and onnx.helper."""
from __future__ import annotations

import io
import json
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from torch import nn  # noqa: E402

from yoloport.cli import main  # noqa: E402
from yoloport.deploy.lint import (  # noqa: E402
    Finding,
    LintReport,
    check_or_raise,
    format_report,
    lint_model,
    load_onnx,
    value_bound,
    _Graph,
)
from yoloport.deploy.op_support import RKNN_SUPPORTED_OPS, RKNN_UNSUPPORTED_OPS, op_support  # noqa: E402
from yoloport.errors import YoloportError  # noqa: E402

NC, NA, NO = 2, 3, 7  # classes, anchors per level, outputs per anchor (5 + nc)
STRIDES = (8, 16)
ANCHORS_PX = ((10, 13, 16, 30, 33, 23), (30, 61, 62, 45, 59, 119))
IMG = 64


def export(module: nn.Module, x: torch.Tensor, opset: int = 12, dynamic_batch: bool = False) -> onnx.ModelProto:
    """Export ``module`` with the TorchScript exporter into an in-memory ModelProto."""
    buf = io.BytesIO()
    n_out = len(module(x)) if isinstance(module(x), (list, tuple)) else 1
    outs = [f"out{i}" for i in range(n_out)]
    axes = {"images": {0: "batch"}, **{o: {0: "batch"} for o in outs}} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (x,), buf, opset_version=opset, dynamo=False, input_names=["images"],
                          output_names=outs, dynamic_axes=axes)
    return onnx.load_from_string(buf.getvalue())


class Backbone(nn.Module):
    """Two feature levels (stride 8 and 16) from a 3-channel image."""

    def __init__(self):
        super().__init__()
        self.p3 = nn.Sequential(nn.Conv2d(3, 8, 3, 8, 1), nn.SiLU())
        self.p4 = nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.SiLU())

    def forward(self, x):
        p3 = self.p3(x)
        return [p3, self.p4(p3)]


def _grid(ny: int, nx: int) -> torch.Tensor:
    yv, xv = torch.meshgrid(torch.arange(ny), torch.arange(nx), indexing="ij")
    return torch.stack((xv, yv), 2).float()  # [ny, nx, 2]


class NaiveDetect(nn.Module):
    """YOLOv5 v5.0-style Detect: 5-D view, sigmoid, in-place slice assignment (-> ScatterND)."""

    def __init__(self):
        super().__init__()
        self.backbone = Backbone()
        self.m = nn.ModuleList(nn.Conv2d(c, NA * NO, 1) for c in (8, 16))
        for i, s in enumerate(STRIDES):
            ny = nx = IMG // s
            self.register_buffer(f"grid{i}", _grid(ny, nx).view(1, 1, ny, nx, 2))
            self.register_buffer(f"ag{i}", torch.tensor(ANCHORS_PX[i], dtype=torch.float32).view(1, NA, 1, 1, 2))

    def forward(self, x):
        z = []
        for i, f in enumerate(self.backbone(x)):
            x_i = self.m[i](f)
            bs, _, ny, nx = x_i.shape
            x_i = x_i.view(bs, NA, NO, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            y = x_i.sigmoid()
            y[..., 0:2] = (y[..., 0:2] * 2.0 - 0.5 + getattr(self, f"grid{i}")) * STRIDES[i]
            y[..., 2:4] = (y[..., 2:4] * 2) ** 2 * getattr(self, f"ag{i}")
            z.append(y.view(bs, -1, NO))
        return torch.cat(z, 1)


class SplitCatDetect(NaiveDetect):
    """Ultralytics v6-style Detect: sigmoid().split() then torch.cat((xy, wh, conf), 4) on the 5-D view."""

    def forward(self, x):
        z = []
        for i, f in enumerate(self.backbone(x)):
            x_i = self.m[i](f)
            bs, _, ny, nx = x_i.shape
            x_i = x_i.view(bs, NA, NO, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            xy, wh, conf = x_i.sigmoid().split((2, 2, NC + 1), 4)
            xy = (xy * 2 + getattr(self, f"grid{i}")) * STRIDES[i]
            wh = (wh * 2) ** 2 * getattr(self, f"ag{i}")
            z.append(torch.cat((xy, wh, conf), 4).view(bs, -1, NO))
        return torch.cat(z, 1)


class ConcatDecodeDetect(nn.Module):
    """4-D decode that concatenates pixel boxes with sigmoid scores in one output."""

    def __init__(self):
        super().__init__()
        self.backbone = Backbone()
        self.m = nn.ModuleList(nn.Conv2d(c, NA * NO, 1) for c in (8, 16))
        for i, s in enumerate(STRIDES):
            ny = nx = IMG // s
            self.register_buffer(f"grid{i}", _grid(ny, nx).view(1, 1, ny * nx, 2))
            self.register_buffer(f"ag{i}", torch.tensor(ANCHORS_PX[i], dtype=torch.float32).view(1, NA, 1, 2))

    def forward(self, x):
        z = []
        for i, f in enumerate(self.backbone(x)):
            x_i = self.m[i](f)
            bs, _, ny, nx = x_i.shape
            x_i = x_i.view(bs, NA, NO, ny * nx).permute(0, 1, 3, 2)
            box = x_i[..., :4].sigmoid()
            xy = (box[..., :2] * 2.0 - 0.5 + getattr(self, f"grid{i}")) * STRIDES[i]
            wh = (box[..., 2:4] * 2) ** 2 * getattr(self, f"ag{i}")
            scores = x_i[..., 4:].sigmoid()
            z.append(torch.cat((xy, wh, scores), -1).reshape(bs, -1, NO))
        return torch.cat(z, 1)


class RawDetect(nn.Module):
    """Clean head: three conv outputs [B, na*no, H, W], no decode."""

    def __init__(self):
        super().__init__()
        self.p3 = nn.Sequential(nn.Conv2d(3, 8, 3, 8, 1), nn.ReLU())
        self.p4 = nn.Sequential(nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU())
        self.p5 = nn.Sequential(nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU())
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.m = nn.ModuleList(nn.Conv2d(c, NA * NO, 1) for c in (16, 16, 8))

    def forward(self, x):
        p3 = self.p3(x)
        p4 = self.p4(p3)
        p5 = self.p5(p4)
        n4 = torch.cat((p4, self.up(p5)), 1)
        n3 = torch.cat((p3, self.up(p4)), 1)
        return [self.m[0](n3), self.m[1](n4), self.m[2](p5)]


@pytest.fixture(scope="module")
def x():
    torch.manual_seed(0)
    return torch.rand(1, 3, IMG, IMG)


@pytest.fixture(scope="module")
def naive(x):
    torch.manual_seed(0)
    return export(NaiveDetect(), x, opset=12)


@pytest.fixture(scope="module")
def concat_head(x):
    torch.manual_seed(0)
    return export(ConcatDecodeDetect(), x, opset=13)


@pytest.fixture(scope="module")
def clean(x):
    torch.manual_seed(0)
    return export(RawDetect(), x, opset=12)


def _nms_topk_graph(opset: int = 12) -> onnx.ModelProto:
    boxes = helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 100, 4])
    scores = helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1, 100])
    k = numpy_helper.from_array(np.array([10], dtype=np.int64), "k")
    nodes = [
        helper.make_node("NonMaxSuppression", ["boxes", "scores"], ["sel"], name="nms"),
        helper.make_node("TopK", ["scores", "k"], ["vals", "idx"], name="topk", axis=-1),
    ]
    outs = [helper.make_tensor_value_info("sel", TensorProto.INT64, None),
            helper.make_tensor_value_info("vals", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("idx", TensorProto.INT64, None)]
    g = helper.make_graph(nodes, "nms", [boxes, scores], outs, [k])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _fired(report: LintReport, rule: str, severity: str | None = None) -> list[Finding]:
    return [f for f in report.findings if f.rule_id == rule and (severity is None or f.severity == severity)]


# ---------------------------------------------------------------------------------------------
def test_op_tables_are_disjoint_and_cover_the_yolov5_ops():
    from yoloport.commands import lint as lint_cmd
    from yoloport.deploy.op_support import TARGETS

    assert lint_cmd.TARGETS == TARGETS
    assert not RKNN_SUPPORTED_OPS & RKNN_UNSUPPORTED_OPS
    for op in ("Conv", "Sigmoid", "Mul", "Concat", "Resize", "Reshape", "Transpose", "MaxPool"):
        assert op_support("rknn", op)[0] and op_support("mlu", op)[0]
    assert not op_support("rknn", "NonMaxSuppression")[0]
    assert not op_support("rknn", "TopK")[0]
    assert not op_support("onnxruntime", "NoSuchOp")[0]
    assert op_support("onnxruntime", "NonMaxSuppression", opset=12)[0]


def test_naive_v5_head_fires_scatternd_and_rank5_for_rknn(naive):
    assert any(n.op_type == "ScatterND" for n in naive.graph.node)
    report = lint_model(naive, "rknn")
    assert not report.ok
    scatter = _fired(report, "scatternd", "error")
    assert scatter and all("ScatterND" in n for n in scatter[0].nodes)
    assert "--mode split or raw" in scatter[0].hint
    rank5 = _fired(report, "rank5", "error")
    assert rank5 and rank5[0].nodes
    # ScatterND is reported by its own rule, not twice
    assert not any("ScatterND" in f.message for f in _fired(report, "unsupported-op"))
    assert _fired(report, "sigmoid-multi-consumer", "warning")
    # mlu: rank5 is a warning there; onnxruntime runs it all
    mlu = lint_model(naive, "mlu")
    assert _fired(mlu, "rank5", "warning") and _fired(mlu, "scatternd", "error")
    assert lint_model(naive, "onnxruntime").ok


def test_concat_of_pixel_boxes_and_scores_fires(concat_head):
    report = lint_model(concat_head, "rknn")
    fired = _fired(report, "concat-mixed-range", "error")
    assert fired, format_report(report)
    assert not _fired(report, "rank5")
    assert _fired(lint_model(concat_head, "onnxruntime"), "concat-mixed-range", "warning")


def test_v6_split_cat_head_fires_concat_and_rank5(x):
    torch.manual_seed(0)
    report = lint_model(export(SplitCatDetect(), x, opset=12), "rknn")
    assert {"concat-mixed-range", "rank5"} <= report.rule_ids("error")
    assert "scatternd" not in report.rule_ids()


def test_concat_dynamic_check_with_a_sample(concat_head, x):
    report = lint_model(concat_head, "rknn", sample_input=x.numpy())
    fired = _fired(report, "concat-mixed-range", "error")
    assert fired and "measured" in fired[0].message


def _scaled_concat_graph() -> onnx.ModelProto:
    """Concat(sigmoid(a), tanh(b) * 1000): static bounds say 1000x; with a tiny b the ranges agree."""
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 4])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])
    c = numpy_helper.from_array(np.array(1000.0, dtype=np.float32), "c")
    nodes = [helper.make_node("Sigmoid", ["a"], ["sa"], name="sig"),
             helper.make_node("Tanh", ["b"], ["tb"], name="tanh"),
             helper.make_node("Mul", ["tb", "c"], ["bc"], name="scale"),
             helper.make_node("Concat", ["sa", "bc"], ["y"], name="cat", axis=1)]
    g = helper.make_graph(nodes, "g", [a, b], [y], [c])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def test_dynamic_check_overrides_static_estimate():
    model = _scaled_concat_graph()
    assert _fired(lint_model(model, "rknn"), "concat-mixed-range", "error")  # static: sigmoid vs x1000
    g = _Graph(model)
    assert value_bound(g, "sa").mag == 1.0 and value_bound(g, "bc").mag == 1000.0
    assert value_bound(g, "b").mag is None and value_bound(g, "c").data is False
    small = {"a": np.full((1, 4), 3.0, np.float32), "b": np.full((1, 4), 1e-3, np.float32)}
    assert not _fired(lint_model(model, "rknn", sample_input=small), "concat-mixed-range")
    large = {"a": np.zeros((1, 4), np.float32), "b": np.full((1, 4), 0.5, np.float32)}
    assert _fired(lint_model(model, "rknn", sample_input=large), "concat-mixed-range", "error")


def test_clean_raw_head_has_no_errors_for_rknn(clean):
    report = lint_model(clean, "rknn")
    assert report.ok, format_report(report)
    # its only warning: logits, where rknn_model_zoo's clients read probabilities (issue 17)
    assert {f.rule_id for f in report.warnings} <= {"output-convention"}, format_report(report)
    assert lint_model(clean, "mlu").ok and lint_model(clean, "openvino").ok


def test_nms_and_topk_unsupported_on_rknn_fine_on_onnxruntime():
    model = _nms_topk_graph()
    rknn = lint_model(model, "rknn")
    ops = {f.message.split(" ")[0] for f in _fired(rknn, "unsupported-op", "error")}
    assert {"NonMaxSuppression", "TopK"} <= ops
    nms = next(f for f in rknn.findings if f.message.startswith("NonMaxSuppression"))
    assert nms.nodes == ["nms"] and "host" in nms.hint
    assert lint_model(model, "onnxruntime").ok
    assert lint_model(model, "openvino").ok


def test_dynamic_batch_is_an_error_for_rknn_only(x):
    torch.manual_seed(0)
    model = export(RawDetect(), x, opset=12, dynamic_batch=True)
    rknn = lint_model(model, "rknn")
    dyn = _fired(rknn, "dynamic-shape", "error")
    assert dyn and dyn[0].nodes == ["images"]
    assert "op-restriction" not in rknn.rule_ids()  # no batch-1-only op in this head
    ort = lint_model(model, "onnxruntime")
    assert ort.ok and _fired(ort, "dynamic-shape", "info")


def test_batch1_only_op_with_dynamic_batch_warns_for_rknn(x):
    """A batch-1-only op (Softmax) under a batch that is not 1: an op-restriction warning naming it;
    the same graph at batch 1 has none."""

    class SoftmaxHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, 2, 1)

        def forward(self, t):
            return torch.softmax(self.conv(t), 1)

    torch.manual_seed(0)
    dyn = lint_model(export(SoftmaxHead(), x, opset=12, dynamic_batch=True), "rknn")
    warn = _fired(dyn, "op-restriction", "warning")
    assert len(warn) == 1 and warn[0].message.startswith("Softmax") and warn[0].nodes
    assert "op-restriction" not in lint_model(export(SoftmaxHead(), x, opset=12), "rknn").rule_ids()


def test_opset_range():
    model = _scaled_concat_graph()
    model.opset_import[0].version = 20
    fired = _fired(lint_model(model, "rknn"), "opset-range", "error")
    assert fired and "19" in fired[0].message
    model.opset_import[0].version = 11
    assert _fired(lint_model(model, "rknn"), "opset-range", "warning")
    model.opset_import[0].version = 5
    assert _fired(lint_model(model, "onnxruntime"), "opset-range", "error")


def test_single_output_detection_graph_warns_for_rknn(concat_head):
    assert _fired(lint_model(concat_head, "rknn"), "multi-output-head", "warning")
    assert not _fired(lint_model(concat_head, "onnxruntime"), "multi-output-head")


def test_report_to_dict_and_table(naive):
    report = lint_model(naive, "rknn")
    d = report.to_dict()
    assert d["ok"] is False and d["counts"]["error"] == len(report.errors)
    assert {"rule_id", "severity", "message", "nodes", "hint"} <= set(d["findings"][0])
    json.dumps(d)
    text = format_report(report)
    assert "rule" in text.splitlines()[1] and "scatternd" in text
    assert text.splitlines()[-1] == report.summary() and "FAIL" in report.summary()
    # errors first
    sev = [f.severity for f in report.findings]
    assert sev == sorted(sev, key=["error", "warning", "info"].index)


def test_check_or_raise(naive, clean):
    with pytest.raises(YoloportError, match="scatternd"):
        check_or_raise(naive, "rknn")
    assert not check_or_raise(naive, "rknn", force=True).ok
    assert check_or_raise(clean, "rknn").ok
    with pytest.raises(YoloportError, match="unknown lint target"):
        lint_model(clean, "tpu")


def test_cli_exit_codes(tmp_path, clean, naive, capsys):
    ok_path, bad_path = tmp_path / "clean.onnx", tmp_path / "naive.onnx"
    onnx.save(clean, str(ok_path))
    onnx.save(naive, str(bad_path))
    out_json = tmp_path / "r" / "lint.json"
    assert main(["lint", str(ok_path), "--target", "rknn", "--json", str(out_json)]) == 0
    assert json.loads(out_json.read_text())["ok"] is True
    out_json.write_text("mine")  # an existing file is kept unless --overwrite
    assert main(["lint", str(ok_path), "--target", "rknn", "--json", str(out_json)]) == 2
    assert "--overwrite" in capsys.readouterr().err and out_json.read_text() == "mine"
    assert main(["lint", str(ok_path), "--target", "rknn", "--json", str(out_json), "--overwrite"]) == 0
    assert json.loads(out_json.read_text())["ok"] is True
    assert main(["lint", str(bad_path), "--target", "rknn"]) == 1
    out = capsys.readouterr().out
    assert "scatternd" in out and "FAIL" in out.splitlines()[-1]
    assert main(["lint", str(bad_path), "--target", "onnxruntime"]) == 0
    assert main(["lint", str(tmp_path / "missing.onnx"), "--target", "rknn"]) == 2
    junk = tmp_path / "junk.onnx"
    junk.write_text("this is not a protobuf\n")
    assert main(["lint", str(junk), "--target", "rknn"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "error:" in err
    with pytest.raises(YoloportError):
        load_onnx(junk)


def test_cli_sample_image(tmp_path, concat_head):
    cv2 = pytest.importorskip("cv2")
    path = tmp_path / "m.onnx"
    onnx.save(concat_head, str(path))
    img = tmp_path / "im.jpg"
    cv2.imwrite(str(img), (np.random.default_rng(0).random((48, 80, 3)) * 255).astype(np.uint8))
    out_json = tmp_path / "lint.json"
    assert main(["lint", str(path), "--target", "rknn", "--sample-image", str(img), "--json", str(out_json)]) == 1
    findings = json.loads(out_json.read_text())["findings"]
    assert any(f["rule_id"] == "concat-mixed-range" and "measured" in f["message"] for f in findings)
