"""ONNX Runtime backend: fp32 and int8 (QDQ) artifacts of the embedded default model, sidecars, the
quantize CLI. int8 agreement is judged on images disjoint from the calibration images.

Measured (ORT 1.32, 96x128, 4 calibration / 3 evaluation synthetic-shape images): fp32 max |diff|
1.4e-5; int8 cosine 0.9995 / 0.9995 / 0.9996, SQNR 30.0 / 29.9 / 31.3 dB."""
from __future__ import annotations

import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from yoloport.backends import onnxruntime_backend as ob  # noqa: E402
from yoloport.backends.base import read_sidecar  # noqa: E402
from yoloport.backends.registry import build_artifact, get_backend, load_runner  # noqa: E402
from yoloport.backends.torch_backend import TorchRunner  # noqa: E402
from yoloport.cli import main  # noqa: E402
from yoloport.data.calibration import load_calibration  # noqa: E402
from yoloport.errors import DependencyMissing, YoloportError  # noqa: E402

import _checks as C  # noqa: E402
from conftest import random_model, write_synth_images  # noqa: E402

HW = (96, 128)  # (h, w)


def write_calib_images(d, n=4, seed=0):
    """Small synthetic-shape images (the default model's domain) for calibration."""
    return write_synth_images(d, n, HW, seed=seed)


def write_eval_images(d, n=3):
    """Synthetic-shape images never used for calibration (another seed)."""
    return write_synth_images(d, n, HW, seed=1, prefix="eval")


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory):
    return write_calib_images(tmp_path_factory.mktemp("calib"))


@pytest.fixture(scope="module")
def calib(calib_dir):
    return load_calibration(calib_dir, n=4, img_size_hw=HW)


@pytest.fixture(scope="module")
def eval_set(tmp_path_factory):
    return load_calibration(write_eval_images(tmp_path_factory.mktemp("eval")), n=3, img_size_hw=HW, seed=None)


@pytest.fixture(scope="module")
def batch(calib, eval_set):
    """Three evaluation images, none of them a calibration image."""
    C.check_disjoint(calib.paths, eval_set.paths)
    return np.concatenate(eval_set.arrays(), 0)


@pytest.fixture(scope="module")
def artifacts(tiny_model, calib, tmp_path_factory):
    out = tmp_path_factory.mktemp("ort")
    fp32 = build_artifact("onnxruntime", tiny_model, out, HW, None, {})
    int8 = build_artifact("onnxruntime", tiny_model, out, HW, calib, {})
    return fp32, int8


def test_fp32_matches_torch(tiny_model, artifacts, batch):
    ref = TorchRunner(tiny_model)(batch)
    runner = load_runner("onnxruntime", artifacts[0], model=tiny_model, threads=1)
    out = runner(batch)  # a batch-1 graph runs a batch of 3 in chunks
    C.check_float_outputs_match(ref, out)
    assert runner.input_hw == HW and runner.batch == 1 and runner.head.mode == "raw"


def test_int8_agrees_with_torch(tiny_model, artifacts, batch):
    ref = TorchRunner(tiny_model)(batch)
    out = load_runner(None, artifacts[1], model=tiny_model)(batch)  # backend read from the sidecar
    C.check_int8_agrees(ref, out)


def test_int8_graph_is_u8s8_per_channel_qdq(artifacts):
    m = onnx.load(str(artifacts[1]))
    inits = {t.name: t for t in m.graph.initializer}
    q = [n for n in m.graph.node if n.op_type == "QuantizeLinear"]
    dq = [n for n in m.graph.node if n.op_type == "DequantizeLinear"]
    assert q and dq
    act_zp = {inits[n.input[2]].data_type for n in q if len(n.input) > 2 and n.input[2] in inits}
    assert act_zp == {onnx.TensorProto.UINT8}
    w_dq = [n for n in dq if n.input[0] in inits and inits[n.input[0]].data_type == onnx.TensorProto.INT8]
    assert w_dq, "weights should be stored as int8"
    per_channel = [n for n in w_dq if len(onnx.numpy_helper.to_array(inits[n.input[1]]).shape) == 1 and onnx.numpy_helper.to_array(inits[n.input[1]]).size > 1]
    assert per_channel, "weight scales should be per output channel"


def test_sidecar_records_what_was_built(tiny_model, artifacts, calib):
    from yoloport.backends.base import model_fingerprint

    info = read_sidecar(artifacts[1], expect_backend="onnxruntime")
    assert info["precision"] == "int8" and info["input_hw"] == list(HW) and info["batch"] == 1
    assert info["model_fingerprint"] == model_fingerprint(tiny_model)
    assert info["head"]["mode"] == "raw" and info["head"]["nc"] == 6
    assert info["calibration"]["count"] == len(calib) and info["calibration"]["paths"]
    q = info["qconfig"]
    assert (q["act_type"], q["weight_type"], q["per_channel"], q["calib_method"]) == ("uint8", "int8", True, "minmax")
    assert q["head_fp32"] == "convs" and len(q["excluded_nodes"]) == 3  # the Detect convs stay float
    assert info["size_bytes"] > 0 and info["build_seconds"] >= 0
    assert read_sidecar(artifacts[0])["calibration"] is None


def test_artifact_of_another_model_or_backend_is_refused(artifacts):
    other = random_model(nc=6)
    with pytest.raises(YoloportError, match="another model"):
        load_runner("onnxruntime", artifacts[1], model=other)
    with pytest.raises(YoloportError, match="built for backend"):
        load_runner("openvino", artifacts[1])
    bare = artifacts[1].with_name("bare.onnx")
    bare.write_bytes(artifacts[1].read_bytes())
    with pytest.raises(YoloportError, match="no sidecar"):
        ob.load(bare)


def test_wrong_input_size_is_a_user_error(artifacts):
    runner = load_runner("onnxruntime", artifacts[0])
    with pytest.raises(YoloportError, match="fixed shape"):
        runner(np.zeros((1, 3, 64, 64), np.float32))


def test_batched_artifact_takes_any_number_of_images(tiny_model, calib, batch, tmp_path):
    art = build_artifact("onnxruntime", tiny_model, tmp_path, HW, None, {}, batch=2)
    runner = load_runner("onnxruntime", art)
    assert runner.batch == 2
    C.check_float_outputs_match(TorchRunner(tiny_model)(batch), runner(batch))


def test_head_tail_stays_float_and_exclude(tiny_model, calib, tmp_path):
    """With the sigmoid in the graph, the nodes after the last Conv are not quantized."""
    from yoloport.deploy.export import export_onnx

    onnx_path, head = export_onnx(tiny_model, tmp_path / "sig.onnx", HW, "raw", sigmoid=True)
    model = ob.name_nodes(onnx.load(str(onnx_path)))
    tail = ob.head_tail_nodes(model)
    assert len(tail) == 3 and all(model.graph.node[[n.name for n in model.graph.node].index(t)].op_type == "Sigmoid" for t in tail)
    assert len(ob.head_conv_nodes(model)) == 3
    art = ob.build(tiny_model, onnx_path, head, tmp_path / "q", calib, {"precision": "int8", "exclude": ["Concat"]})
    info = read_sidecar(art)
    excl = info["qconfig"]["excluded_nodes"]
    assert set(tail) <= set(excl) and any("Concat" in n for n in excl)
    q = onnx.load(str(art))
    producers = {o: n for n in q.graph.node for o in n.output}
    for out in q.graph.output:  # graph outputs come straight from the float Sigmoids
        assert producers[out.name].op_type == "Sigmoid"
    with pytest.raises(YoloportError, match="matches no node"):
        ob.build(tiny_model, onnx_path, head, tmp_path / "bad", calib, {"precision": "int8", "exclude": ["/no/such/node"]})


@pytest.mark.parametrize("settings", [{"calib_method": "percentile", "act_type": "int8"}, {"per_channel": False, "head_fp32": "tail"}])
def test_other_quantization_settings_run(tiny_model, calib, batch, tmp_path, settings):
    art = build_artifact("onnxruntime", tiny_model, tmp_path, HW, calib, settings)
    out = load_runner("onnxruntime", art)(batch)
    C.check_int8_agrees(TorchRunner(tiny_model)(batch), out)
    q = read_sidecar(art)["qconfig"]
    assert all(q[k] == v for k, v in settings.items())


def test_bad_settings_are_user_errors(tiny_model, calib, tmp_path):
    with pytest.raises(YoloportError, match="act_type"):
        build_artifact("onnxruntime", tiny_model, tmp_path, HW, calib, {"act_type": "int4"})
    with pytest.raises(YoloportError, match="calibration"):
        build_artifact("onnxruntime", tiny_model, tmp_path, HW, None, {"precision": "int8"})
    with pytest.raises(YoloportError, match="unknown backend"):
        get_backend("tensorrt")
    with pytest.raises(YoloportError, match="no artifact"):
        build_artifact("torch", tiny_model, tmp_path, HW)


def test_missing_package_is_dependency_missing(monkeypatch):
    import builtins
    import sys

    real_import = builtins.__import__

    def fake_import(name, *a, **k):
        if name == "openvino" or name.startswith("openvino."):
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)
        return real_import(name, *a, **k)

    monkeypatch.delitem(sys.modules, "yoloport.backends.openvino_backend", raising=False)
    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(DependencyMissing, match="pip install"):
        get_backend("openvino")


# ----------------------------------------------------------------------------- the quantize command


@pytest.fixture(scope="module")
def tiny_ckpt(tiny_model, tmp_path_factory):
    from yoloport.models import save_model

    return save_model(tiny_model, tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


def test_quantize_cli_end_to_end(tiny_ckpt, calib_dir, tmp_path, capsys):
    out = tmp_path / "q"
    args = ["quantize", "--weights", str(tiny_ckpt), "--backend", "onnxruntime", "--calib", str(calib_dir),
            "--calib-n", "2", "--img-size", "128", "96", "--out", str(out), "--calib-method", "minmax", "--per-tensor"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "int8" in text and "MB" in text
    summary = json.loads((out / "quantize.json").read_text())
    art = out / "model.onnxruntime.int8.onnx"
    assert summary["artifact"] == str(art) and art.is_file() and summary["calibration"]["count"] == 2
    assert summary["qconfig"]["per_channel"] is False and summary["input_hw"] == [96, 128]
    assert summary["protocol"]["calibration"]["n_images"] == 2  # issue 11: the sets are stated
    assert main(args) == 2  # the folder is not empty now
    assert "--overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0


def test_quantize_cli_errors(tiny_ckpt, calib_dir, tmp_path, capsys):
    base = ["quantize", "--weights", str(tiny_ckpt), "--img-size", "128", "96", "--out", str(tmp_path / "x")]
    assert main(base + ["--backend", "onnxruntime", "--precision", "int8"]) == 2  # no --calib
    assert main(base + ["--backend", "onnxruntime", "--calib", str(tmp_path / "nothing")]) == 2
    assert main(base + ["--calib", str(calib_dir)]) == 2  # no backend
    with pytest.raises(SystemExit):
        main(base + ["--backend", "tensorrt"])
    capsys.readouterr()
    cfg = tmp_path / "run.yaml"  # settings from a run config; the command line still wins
    cfg.write_text(f"weights: {tiny_ckpt}\nbackend: onnxruntime\nimg_size: [64, 64]\n")
    assert main(["quantize", "--config", str(cfg), "--img-size", "128", "96", "--out", str(tmp_path / "x")]) == 0  # fp32
    assert read_sidecar(tmp_path / "x" / "model.onnxruntime.fp32.onnx")["input_hw"] == [96, 128]


def real_weight_agreement(backend, model, tmp_path):
    """int8 of the real yolov5n-v6.1 (COCO128, 320 px, 8 calibration images) against PyTorch fp32."""
    from conftest import fixture_path

    from yoloport.analysis.compare import compare_runners, reference_runner

    data = fixture_path("coco128/coco128.yaml")
    hw = (320, 320)
    first = load_calibration(data, n=14, img_size_hw=hw, seed=None).paths  # sorted: 8 to calibrate, 6 to judge
    calib = load_calibration(first[:8], n=8, img_size_hw=hw, seed=None)
    images = first[8:]
    C.check_disjoint(calib.paths, images)
    art = build_artifact(backend, model, tmp_path, hw, calib, {})
    runner = load_runner(backend, art, model=model)
    return compare_runners(reference_runner(model, runner.head), runner, images, hw)


@pytest.mark.slow
@pytest.mark.fixtures
def test_int8_real_weights_agree_with_fp32(v5n_model, tmp_path):
    """Measured (ORT 1.32): raw cosine >= 0.999, boxes 34 dB, objectness 20 dB, 85% of boxes matched
    at mean IoU 0.96. Thresholds leave margin for other CPUs / runtime versions."""
    rep = real_weight_agreement("onnxruntime", v5n_model, tmp_path)
    parts = {p["output"]: p for p in rep["decoded_parts"]}
    assert all(o["cosine"] > 0.995 for o in rep["outputs"])
    assert parts["decoded.xywh"]["sqnr_db"] > 25 and parts["decoded.obj"]["sqnr_db"] > 15
    s = rep["summary"]
    assert s["ref_detections"] > 5 and s["match_rate"] >= 0.7 and s["mean_iou"] > 0.9 and s["mean_abs_conf_delta"] < 0.08


def test_session_options_are_the_runners_and_the_profilers():
    """One table of graph optimisation levels and one thread rule for the runner and the profiler."""
    import onnxruntime as ort

    so = ob.session_options(3, "none")
    assert (so.intra_op_num_threads, so.inter_op_num_threads) == (3, 1)
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    default = ort.SessionOptions()
    so = ob.session_options(None, "all")
    assert (so.intra_op_num_threads, so.inter_op_num_threads) == (default.intra_op_num_threads, default.inter_op_num_threads)
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert ob.OPT_LEVELS == ("all", "extended", "basic", "none")
    assert {ob.session_options(1, k).graph_optimization_level for k in ob.OPT_LEVELS} == set(ob.GRAPH_OPTIMIZATION.values())


def test_unknown_graph_optimisation_is_one_clear_error():
    """The runner's ``graph_optimization`` is checked like the profiler's ``--opt-level`` (was a bare KeyError)."""
    from yoloport.errors import YoloportError

    with pytest.raises(YoloportError, match="must be one of all, extended, basic, none"):
        ob.session_options(1, "fastest")
