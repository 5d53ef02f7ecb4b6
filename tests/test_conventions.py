"""Output conventions (issue 17): each convention against its written definition, on a model with
signal (the embedded default model on synthetic shapes), the same detections from every convention,
the lint rule, the graph options on quantize/port, and RKNN's client files and relative paths."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

HW = (320, 320)


@pytest.fixture(scope="module")
def model():
    from yoloport.models import load_model

    return load_model("default")


@pytest.fixture(scope="module")
def batch():
    """Two letterboxed synthetic-shapes images (float32 [2, 3, H, W]) the default model finds objects in."""
    from yoloport.data.letterbox import preprocess
    from yoloport.data.synth import render_image

    ims = []
    for seed in (3, 11):
        rng = np.random.default_rng(seed)
        im = render_image((HW[0], HW[1]), rng).image
        ims.append(preprocess(im, HW, auto=False)[0])
    return np.stack(ims)


def _run(proto, x):
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return [np.asarray(o) for o in sess.run(None, {sess.get_inputs()[0].name: x})]


def _export(model, convention, batch=2):
    from yoloport.deploy.conventions import get_convention
    from yoloport.deploy.export import build_onnx

    c = get_convention(convention)
    proto, head, meta, _ = build_onnx(model, HW, c.mode, batch, sigmoid=c.sigmoid, convention=convention)
    return proto, head, meta


@pytest.fixture(scope="module")
def outputs(model, batch):
    """``{convention: (outputs, head, meta)}`` for every convention, run with ONNX Runtime on ``batch``."""
    from yoloport.deploy.conventions import CONVENTIONS

    res = {}
    for name in CONVENTIONS:
        proto, head, meta = _export(model, name)
        res[name] = (_run(proto, batch), head, meta)
    return res


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def test_rknn_convention_is_sigmoid_of_the_raw_head(outputs):
    logits, _, _ = outputs["yoloport"]
    probs, head, meta = outputs["rknn_model_zoo"]
    assert meta["sigmoid"] is True and meta["convention"] == "rknn_model_zoo" and head.convention == "rknn_model_zoo"
    assert [o.shape for o in probs] == [o.shape for o in logits]
    assert [o.shape[-1] for o in probs] == sorted((o.shape[-1] for o in probs), reverse=True)  # stride 8 first
    assert max(float(np.abs(o).max()) for o in logits) > 5  # logits with signal, not probabilities already
    for p, raw in zip(probs, logits):
        np.testing.assert_allclose(p, _sigmoid(raw), atol=2e-6)
    assert 0 <= min(float(o.min()) for o in probs) and max(float(o.max()) for o in probs) <= 1


def _ultralytics_decode(raw_outputs, anchors_px, strides, na=3):
    """Ultralytics' Detect decode, written from its definition (float64): per level
    ``[B, na*no, H, W] -> [B, na, H, W, no]``, sigmoid, ``xy = (2 s - 0.5 + grid) * stride``,
    ``wh = (2 s)^2 * anchor``, rows ordered level, anchor, y, x."""
    rows = []
    for o, anchors, stride in zip(raw_outputs, anchors_px, strides):
        b, c, h, w = o.shape
        y = _sigmoid(o.reshape(b, na, c // na, h, w).transpose(0, 1, 3, 4, 2))
        gy, gx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        grid = np.stack((gx, gy), -1)[None, None]
        xy = (y[..., :2] * 2 - 0.5 + grid) * stride
        wh = (y[..., 2:4] * 2) ** 2 * np.asarray(anchors, np.float64).reshape(1, na, 1, 1, 2)
        rows.append(np.concatenate((xy, wh, y[..., 4:]), -1).reshape(b, -1, c // na))
    return np.concatenate(rows, 1)


def test_ultralytics_convention_is_ultralytics_decode_of_the_head(outputs):
    logits, head, _ = outputs["yoloport"]
    (decoded,), dhead, meta = outputs["ultralytics"]
    assert meta["mode"] == "decoded" and dhead.convention == "ultralytics"
    want = _ultralytics_decode(logits, head.anchors_px, head.strides)
    assert decoded.shape == want.shape and decoded.shape[-1] == 5 + head.nc
    scale = np.array([1, 1, 1, 1] + [1] * (1 + head.nc)) * np.maximum(1, np.abs(want).max(axis=(0, 1)))
    np.testing.assert_allclose(decoded / scale, want / scale, atol=2e-5)


def test_every_convention_gives_the_same_detections(outputs):
    from yoloport.ops.postprocess import postprocess

    ref, head, _ = outputs["yoloport"]
    want = postprocess(ref, head, conf_thres=0.25, iou_thres=0.45)
    assert sum(len(d) for d in want) >= 2  # the model finds objects in these images
    for name, (outs, h, _) in outputs.items():
        got = postprocess(outs, h, conf_thres=0.25, iou_thres=0.45)
        for g, w in zip(got, want):
            assert g.shape == w.shape, name
            np.testing.assert_allclose(g[:, :4], w[:, :4], atol=2e-3, err_msg=name)
            np.testing.assert_allclose(g[:, 4], w[:, 4], atol=1e-5, err_msg=name)
            np.testing.assert_array_equal(g[:, 5], w[:, 5], err_msg=name)


def test_every_backend_declares_a_known_convention():
    from yoloport.backends.registry import BACKENDS, get_spec
    from yoloport.deploy.conventions import CONVENTIONS, TARGET_CONVENTIONS

    for b in BACKENDS:
        spec = get_spec(b)
        assert spec.output_convention in CONVENTIONS, b
        if spec.lint_target:
            assert TARGET_CONVENTIONS[spec.lint_target] == spec.output_convention, b


# ----------------------------------------------------------------------------- choice of layout


def test_resolve_export_choice():
    from yoloport.deploy.conventions import resolve_export_choice
    from yoloport.errors import YoloportError

    assert resolve_export_choice(default="rknn_model_zoo") == ("raw", True, "rknn_model_zoo")
    assert resolve_export_choice(mode="raw", default="rknn_model_zoo") == ("raw", True, "rknn_model_zoo")
    assert resolve_export_choice(sigmoid=False, default="rknn_model_zoo") == ("raw", False, "yoloport")
    assert resolve_export_choice(mode="split", default="rknn_model_zoo") == ("split", False, "split")
    assert resolve_export_choice(default="ultralytics") == ("decoded", False, "ultralytics")
    assert resolve_export_choice() == ("raw", False, "yoloport")
    assert resolve_export_choice("rknn-model-zoo") == ("raw", True, "rknn_model_zoo")
    with pytest.raises(YoloportError, match="--mode decoded"):
        resolve_export_choice("ultralytics", mode="raw")
    with pytest.raises(YoloportError, match="sigmoid"):
        resolve_export_choice("rknn_model_zoo", sigmoid=False)
    with pytest.raises(YoloportError, match="raw only"):
        resolve_export_choice(mode="split", sigmoid=True)
    with pytest.raises(YoloportError, match="unknown output convention"):
        resolve_export_choice("tflite")


def test_export_target_defaults_to_its_clients_convention(model, tmp_path):
    from yoloport.cli import main
    from yoloport.deploy.onnx_meta import read_onnx_meta

    for target, mode, sigmoid, conv in (("rknn", "raw", True, "rknn_model_zoo"), ("onnxruntime", "decoded", False, "ultralytics"),
                                        (None, "raw", False, "yoloport")):
        out = tmp_path / f"{target}.onnx"
        argv = ["export", "--model-key", "default", "--out", str(out)] + (["--target", target] if target else [])
        assert main(argv) == 0
        meta = read_onnx_meta(out)
        assert (meta["mode"], meta["sigmoid"], meta["convention"]) == (mode, sigmoid, conv), target
        assert json.loads((tmp_path / f"{target}.onnx.json").read_text())["head_spec"]["convention"] == conv
    out = tmp_path / "explicit.onnx"
    assert main(["export", "--model-key", "default", "--target", "rknn", "--no-sigmoid", "--out", str(out)]) == 0
    assert (read_onnx_meta(out)["sigmoid"], read_onnx_meta(out)["convention"]) == (False, "yoloport")
    assert main(["export", "--model-key", "default", "--convention", "ultralytics", "--mode", "raw", "--out", str(out)]) == 2


def test_quantize_and_port_take_every_graph_option():
    """Every flag of ``export`` that shapes the graph is a flag of ``quantize`` and ``port`` too."""
    import argparse

    from yoloport.commands import export, port, quantize
    from yoloport.commands.export import GRAPH_OPTIONS

    def dests(mod):
        p = argparse.ArgumentParser()
        mod.add_arguments(p)
        return {a.dest for a in p._actions}

    graph = {"convention", "mode", *GRAPH_OPTIONS}
    assert graph <= dests(export)
    assert graph <= dests(quantize)
    assert graph <= dests(port)


def test_port_targets_export_their_convention_unless_told():
    from yoloport.analysis.port import parse_targets, target_graph

    ort_t, rknn_t, mlu_t = parse_targets("onnxruntime,rknn:rk3588,mlu-sim")
    assert target_graph(rknn_t, {})[:3] == ("raw", True, "rknn_model_zoo")
    assert target_graph(ort_t, {})[:3] == ("decoded", False, "ultralytics")
    assert target_graph(mlu_t, {})[:3] == ("raw", False, "mlu")
    assert target_graph(rknn_t, {"sigmoid": False})[:3] == ("raw", False, "yoloport")
    assert target_graph(ort_t, {"convention": "yoloport", "simplify": True}) == ("raw", False, "yoloport", {"simplify": True})


def test_quantize_records_the_convention_in_the_sidecar(tmp_path):
    from yoloport.backends.base import read_sidecar
    from yoloport.cli import main

    out = tmp_path / "ort"
    assert main(["quantize", "--model-key", "default", "--backend", "onnxruntime", "--precision", "fp32", "--out", str(out)]) == 0
    summary = json.loads((out / "quantize.json").read_text())
    head = read_sidecar(summary["artifact"])["head"]
    assert (head["mode"], head["convention"]) == ("decoded", "ultralytics")
    out2 = tmp_path / "ort-raw"
    assert main(["quantize", "--model-key", "default", "--backend", "onnxruntime", "--precision", "fp32",
                 "--convention", "yoloport", "--out", str(out2)]) == 0
    head = json.loads((out2 / "quantize.json").read_text())["head"]
    assert (head["mode"], head["sigmoid_applied"], head["convention"]) == ("raw", False, "yoloport")
    assert main(["quantize", "--model-key", "default", "--backend", "onnxruntime", "--precision", "fp32",
                 "--mode", "split", "--sigmoid", "--out", str(tmp_path / "bad")]) == 2


# ----------------------------------------------------------------------------- lint


def test_lint_flags_logits_for_rknn_and_passes_the_default_export(model):
    from yoloport.deploy.lint import lint_model

    logits, _, _ = _export(model, "yoloport", batch=1)
    probs, _, _ = _export(model, "rknn_model_zoo", batch=1)
    bad = [f for f in lint_model(logits, "rknn").findings if f.rule_id == "output-convention"]
    assert len(bad) == 1 and bad[0].severity == "warning" and "logits" in bad[0].message
    assert "--convention rknn_model_zoo" in bad[0].hint
    assert not [f for f in lint_model(probs, "rknn").findings if f.rule_id == "output-convention"]
    # the reverse: MLU's yolov5_detection_output applies the sigmoid itself
    rev = [f for f in lint_model(probs, "mlu").findings if f.rule_id == "output-convention"]
    assert len(rev) == 1 and "already carry it" in rev[0].message
    assert not [f for f in lint_model(logits, "mlu").findings if f.rule_id == "output-convention"]


def test_lint_flags_outputs_out_of_stride_order(model):
    from yoloport.deploy.lint import lint_model

    proto, _, _ = _export(model, "rknn_model_zoo", batch=1)
    outs = list(proto.graph.output)
    del proto.graph.output[:]
    proto.graph.output.extend(outs[::-1])  # stride 32 first
    found = [f for f in lint_model(proto, "rknn").findings if f.rule_id == "output-convention"]
    assert len(found) == 1 and "stride order" in found[0].message


# ----------------------------------------------------------------------------- RKNN


def _rknn_or_skip():
    pytest.importorskip("rknn.api", reason="rknn-toolkit2 not installed")


def test_rknn_quantize_writes_the_client_files_and_loads_from_a_relative_path(model, tmp_path, monkeypatch):
    """Default ``quantize --backend rknn``: rknn_model_zoo's convention, its anchors/labels/README next
    to the ``.rknn``, and a simulator rebuild from a *relative* artifact path (the hybrid head steps run
    inside the build folder, where a relative dataset path used to be 'not found')."""
    _rknn_or_skip()
    from yoloport.backends import rknn
    from yoloport.backends.base import read_sidecar
    from yoloport.backends.registry import load_runner
    from yoloport.cli import main
    from yoloport.data.synth import render_image
    from yoloport.deploy.lint import lint_model

    import cv2

    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(2):
        cv2.imwrite(str(calib / f"{i}.png"), render_image(HW, np.random.default_rng(100 + i)).image)
    monkeypatch.chdir(tmp_path)
    assert main(["quantize", "--model-key", "default", "--backend", "rknn", "--calib", "calib", "--calib-n", "2", "--out", "q"]) == 0
    info = read_sidecar(tmp_path / "q" / "model.rknn")
    assert (info["head"]["mode"], info["head"]["sigmoid_applied"], info["convention"]) == ("raw", True, "rknn_model_zoo")
    assert info["client_files"] == {"anchors": "anchors_yolov5.txt", "names": "labels.txt", "readme": "model.rknn.README.md"}
    anchors = [float(v) for v in (tmp_path / "q" / "anchors_yolov5.txt").read_text().split()]
    assert anchors == [float(v) for level in model.detect.anchors_px().tolist() for pair in level for v in pair]
    assert (tmp_path / "q" / "labels.txt").read_text().splitlines() == list(model.names)
    readme = (tmp_path / "q" / "model.rknn.README.md").read_text()
    assert "--anchors anchors_yolov5.txt" in readme and "320x320" in readme
    assert not [f for f in lint_model("q/model.fp32.onnx", "rknn").findings if f.rule_id == "output-convention"]

    rknn._LIVE.clear()  # as in a new process: the simulator is rebuilt from the recorded recipe
    runner = load_runner("rknn", artifact="q/model.rknn", model=model)
    try:
        x = np.stack([np.zeros((3, *HW), np.float32)])
        outs = runner(x)
        assert [o.shape[-2:] for o in outs] == [(HW[0] // int(st), HW[1] // int(st)) for st in model.stride]  # 80/40/20
        assert 0 <= min(o.min() for o in outs) and max(o.max() for o in outs) <= 1.0 + 1e-3  # probabilities
    finally:
        runner.close()

    # an anchors file that disagrees with the model is an error with a fix hint
    (tmp_path / "q" / "anchors_yolov5.txt").write_text("10\n13\n" * 9)
    bad = [f for f in lint_model("q/model.fp32.onnx", "rknn").errors if f.rule_id == "output-convention"]
    assert len(bad) == 1 and "anchors" in bad[0].message and bad[0].hint
