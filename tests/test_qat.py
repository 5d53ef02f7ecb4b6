"""Quantization-aware fine-tuning (``yoloport qat``): learned grids, the training hook, the QDQ export
that ONNX Runtime and OpenVINO run in int8, mlu-sim taking the learned ranges, and bad input.

Fast: the embedded default model (a yolov5n trained on synthetic shapes) at 128x128, one epoch on 8
synthetic images. Agreement is judged on images disjoint from the calibration and training images.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from _checks import check_disjoint, cosine, sqnr
from conftest import detect_layer, write_synth_images
from yoloport.backends.registry import export_for, get_spec
from yoloport.data.calibration import load_calibration
from yoloport.errors import YoloportError
from yoloport.quant import qat
from yoloport.quant.fake_quant import fake_quant, fake_quant_asym, fake_quant_learned

HW = (128, 128)

# ONNX Runtime (exact int32 accumulation, requantised by a float multiplier) and OpenVINO break
# rounding ties differently from PyTorch's float fake quantization: measured on the default model,
# 1e-4 of the first convolution's output codes differ by one step, and each flip spreads to the
# next layer's codes (3-5x more flips per layer), so at the head the runtimes sit 33-40 dB from the
# fake-quant model while the fake-quant model is 29-34 dB from float. Two bounds therefore: the first
# quantized convolution (before any cascade) gives the same integer codes on >= 99.9% of its outputs
# and never more than one step apart, and at the head every runtime output is at least MARGIN_DB
# closer to the fake-quant model than the fake-quant model is to float, with cosine >= MIN_COSINE. A
# graph with other grids (the runtime's own PTQ of the same weights: the negative control below) is
# no closer to the fake-quant model than float is, and fails it.
MARGIN_DB = 1.5
MIN_CODES_EQUAL = 0.999
MIN_COSINE = 0.999


# ----------------------------------------------------------------------------- grids


def test_learned_grid_forward_is_the_ptq_grid_and_passes_gradients():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 5, 5) * 3
    s = torch.tensor(0.05)
    assert torch.equal(fake_quant_learned(x, s, 0.0, -127, 127), fake_quant(x, s, 127))
    lo, hi = float(x.min()), float(x.max())
    scale = (hi - lo) / 255.0
    z = float(round(-lo / scale))
    assert torch.allclose(fake_quant_learned(x, torch.tensor(scale), torch.tensor(z), 0, 255), fake_quant_asym(x, lo, hi), atol=1e-6)
    sp = torch.tensor(0.05, requires_grad=True)
    xp = x.clone().requires_grad_(True)
    fake_quant_learned(xp, sp, 0.0, -127, 127).pow(2).sum().backward()
    assert sp.grad is not None and float(sp.grad.abs()) > 0
    inside = (x / 0.05).abs() < 127
    assert torch.allclose(xp.grad[inside], (2 * fake_quant(x, s, 127))[inside], atol=1e-5)  # straight through inside
    assert torch.all(xp.grad[~inside] == 0)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "rknn", "mlu-sim"])
def test_scheme_is_read_from_the_backend_spec(backend):
    spec = get_spec(backend)
    s = qat.scheme_for(spec)
    assert s.activations == spec.act_scheme
    assert s.per_channel_weights == spec.weights_per_channel({})
    assert s.quantize_outputs == spec.qdq_rounds_conv_outputs
    assert s.head_fp32 == spec.head_fp32({})
    assert qat.scheme_for(spec, {"head_fp32": "none"}).head_fp32 == "none"


def test_mlu_scheme_is_per_tensor_symmetric_and_ort_asymmetric_per_channel():
    mlu, ort_ = qat.scheme_for(get_spec("mlu-sim")), qat.scheme_for(get_spec("onnxruntime"))
    assert (mlu.activations, mlu.per_channel_weights) == ("symmetric", False)
    assert (ort_.activations, ort_.per_channel_weights, ort_.quantize_outputs) == ("asymmetric", True, True)


def calib_and_held_back(d, n_calib: int, n_held: int, seeds: tuple[int, int]):
    """``(calibration set of n_calib synthetic images, held-back float32 [n_held, 3, H, W])``, disjoint, made in ``d``."""
    calib = write_synth_images(d / "calib", n=n_calib, size_hw=HW, seed=seeds[0])
    held = write_synth_images(d / "held", n=n_held, size_hw=HW, seed=seeds[1])
    check_disjoint(sorted(calib.glob("*.jpg")), sorted(held.glob("*.jpg")))
    x = np.concatenate(list(load_calibration(str(held), n=n_held, img_size_hw=HW).batches(n_held)))
    return load_calibration(str(calib), n=n_calib, img_size_hw=HW), x


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return calib_and_held_back(tmp_path_factory.mktemp("qat_images"), 3, 2, (0, 7))


def test_wrapped_model_starts_on_the_ptq_ranges_and_keeps_the_float_weights(tiny_model, images):
    calib, _ = images
    q = qat.wrap_for_qat(tiny_model, qat.scheme_for(get_spec("onnxruntime")))
    stats = qat.init_ranges(q, calib.batches(1))
    layers = {layer.layer_name: layer for layer in qat.qat_layers(q)}
    head_convs = {f"{detect_layer(tiny_model)}.m.{i}" for i in range(3)}
    assert head_convs <= {n for n, m in tiny_model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert len(layers) == len(stats) and not head_convs & set(layers)  # head_fp32=convs: Detect convs float
    name = "model.2.cv1.conv"
    lo, hi = stats[name]["input"]["lo"], stats[name]["input"]["hi"]
    g = layers[name].qat_input.grid()
    assert g["scale"] == pytest.approx((max(hi, 0) - min(lo, 0)) / 255, rel=1e-6) and g["qmin"] == 0
    assert layers["model.0.conv"].qat_input.grid()["scale"] == pytest.approx(1 / 255)  # the image: exact uint8
    w, _ = layers[name].folded()
    assert torch.allclose(layers[name].qat_weight.scale, w.detach().abs().amax(dim=(1, 2, 3)) / 127)
    back = qat.float_model(q)
    ref = tiny_model.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in back.state_dict().items())


def test_silu_conv_outputs_start_on_the_silu_zero_grid(tiny_model, images):
    """ONNX Runtime's scheme rounds each conv output: the grids of those followed by a SiLU start where ORT's
    PTQ default puts them (narrowed from MinMax, the lower end at or below the silu_zero floor); ``minmax``
    keeps the observed ranges; a generator of batches serves both passes; an unknown rule is refused."""
    from yoloport.quant.fake_quant import asymmetric_grid
    from yoloport.quant.silu_ranges import HIST_BINS, SILU_ARGMIN, silu, uint8_grid, zero_floor

    calib, _ = images
    scheme = qat.scheme_for(get_spec("onnxruntime"))
    plain = qat.wrap_for_qat(tiny_model, scheme)
    minmax = qat.init_ranges(plain, calib.batches(1), preact="minmax")
    q = qat.wrap_for_qat(tiny_model, scheme)
    stats = qat.init_ranges(q, calib.batches(1))  # a generator: kept for the second pass
    layers = {layer.layer_name: layer for layer in qat.qat_layers(q)}
    ruled = [n for n, st in stats.items() if st["output"] and st["output"].get("rule") == "silu_zero"]
    assert ruled and set(ruled) == {n for n, m in layers.items() if isinstance(getattr(m, "act", None), torch.nn.SiLU)}
    narrowed = 0
    for n in ruled:
        out, mm = stats[n]["output"], minmax[n]["output"]
        assert out["observed"] == pytest.approx([mm["lo"], mm["hi"]])
        assert mm["lo"] - 1e-6 <= out["lo"] and out["hi"] <= mm["hi"] + 1e-6
        s_lo = float(silu(max(mm["lo"], SILU_ARGMIN)))  # SiLU's lowest value over the observed range
        floor = zero_floor(float(uint8_grid(s_lo, float(silu(mm["hi"])))[0]), None)  # MinMax's step of the SiLU output
        half_bin = (mm["hi"] - mm["lo"]) / HIST_BINS
        # clipped only where SiLU rounds to 0; a range above the floor keeps its low end (to the histogram's bin)
        assert out["lo"] <= floor + 0.05 or out["lo"] == pytest.approx(mm["lo"], abs=half_bin)
        assert layers[n].qat_output.grid()["scale"] == pytest.approx(asymmetric_grid(out["lo"], out["hi"])[0], rel=1e-6)
        narrowed += (out["hi"] - out["lo"]) < 0.99 * (mm["hi"] - mm["lo"])
    assert narrowed >= len(ruled) // 2
    assert all(st["output"] is None or "rule" not in st["output"] for st in minmax.values())
    assert qat.init_ranges(qat.wrap_for_qat(tiny_model, scheme), lambda: calib.batches(1)) == stats  # a callable
    with pytest.raises(YoloportError, match="preact rule 'mse'"):
        qat.init_ranges(plain, calib.batches(1), preact="mse")


def test_symmetric_inputs_start_on_the_mse_range_mlu_sim_ptq_gives_them(tiny_model, images):
    """The MLU scheme's symmetric input grids start where mlu-sim's PTQ default (act_range: mse) puts them: the
    range minimising the squared rounding error of a histogram of |x| over the same images, at or below max |x|
    and narrower than it on most layers; ``max`` keeps max |x| / 127; the histograms are not kept on the model;
    an unknown rule is refused."""
    from yoloport.quant.range_estimators import AbsHistogram, mse_range

    calib, _ = images
    scheme = qat.scheme_for(get_spec("mlu-sim"))
    assert scheme.activations == "symmetric"
    plain = qat.wrap_for_qat(tiny_model, scheme)
    maxed = qat.init_ranges(plain, calib.batches(1), symmetric="max")
    q = qat.wrap_for_qat(tiny_model, scheme)
    stats = qat.init_ranges(q, calib.batches(1))
    layers = {layer.layer_name: layer for layer in qat.qat_layers(q)}
    ruled = [n for n, st in stats.items() if st["input"].get("rule") == "mse"]
    assert set(ruled) == {n for n, m in layers.items() if m.qat_input.kind == "symmetric"} and ruled
    # one layer's range recomputed from its own input, captured with a hook on the float model
    name = ruled[len(ruled) // 2]
    hist = AbsHistogram()
    module = dict(tiny_model.named_modules())[name]
    handle = module.register_forward_pre_hook(lambda m, inp: hist.add(inp[0]))
    try:
        with torch.no_grad():
            tiny_model.eval()
            for x in calib.batches(1):
                tiny_model(torch.from_numpy(x))
    finally:
        handle.remove()
    assert layers[name].qat_input.grid()["scale"] == pytest.approx(mse_range(hist, 127) / 127, rel=1e-5)
    narrower = 0
    for n in ruled:
        m = max(abs(maxed[n]["input"]["lo"]), abs(maxed[n]["input"]["hi"]))
        assert maxed[n]["input"]["scale"] == pytest.approx(m / 127, rel=1e-6) and "rule" not in maxed[n]["input"]
        assert stats[n]["input"]["scale"] <= maxed[n]["input"]["scale"] * (1 + 1e-6)
        narrower += stats[n]["input"]["scale"] < 0.98 * maxed[n]["input"]["scale"]
    assert narrower >= len(ruled) // 2
    assert all(a.abs_hist is None for a in q.modules() if isinstance(a, qat.ActQuant))
    with pytest.raises(YoloportError, match="symmetric input rule 'minmax'"):
        qat.init_ranges(plain, calib.batches(1), symmetric="minmax")


# ----------------------------------------------------------------------------- one QAT epoch, exported


def synthetic_qat_port(root, n_train: int, n_val: int, seed: int, **port_kw):
    """``qat_port`` of the default model to onnxruntime on a small synthetic set made in ``root``
    (4 calibration images, the test size): ``(result, data YAML)``."""
    from yoloport.analysis.qat import qat_port
    from yoloport.data.synth import make_synthetic_dataset

    data = make_synthetic_dataset(root / "data", {"train": n_train, "val": n_val}, HW, seed=seed, workers=1,
                                  max_objects=3, min_object_size=12)
    out = root / "out"
    out.mkdir()
    return qat_port("default", data, "onnxruntime", out, calib_n=4, img_size_hw=HW, log=lambda *a: None, **port_kw), data


@pytest.fixture(scope="module")
def qat_run(tmp_path_factory):
    return synthetic_qat_port(tmp_path_factory.mktemp("qat_run"), 8, 4, 2, epochs=1, batch_size=4, workers=0)


def _raw(outputs) -> list[np.ndarray]:
    """The eval forward's raw levels ``[B, na, H, W, no]`` -> ``[B, na*no, H, W]`` (the raw export layout)."""
    return [r.permute(0, 1, 4, 2, 3).reshape(r.shape[0], -1, r.shape[2], r.shape[3]).numpy() for r in outputs[1]]


@pytest.fixture(scope="module")
def qdq_raw(qat_run, tmp_path_factory):
    """``(fine-tuned float model, its fake-quant twin, its raw-head QDQ graph, the learned ranges)``."""
    return _qdq_raw(qat_run, tmp_path_factory.mktemp("qdq_raw"))


def _qdq_raw(run, tmp_path, backend="onnxruntime"):
    """The fine-tuned float model, its fake-quant twin and its raw-head QDQ graph."""
    from yoloport.io.checkpoint import read_checkpoint
    from yoloport.models import model_from_state
    from yoloport.deploy.qdq_export import insert_qdq

    res, _ = run
    tensors, meta = read_checkpoint(res.checkpoint)
    scheme, ranges = qat.ranges_from_checkpoint(meta)
    tuned = model_from_state(meta["yaml"], tensors, names=meta["names"], stride=meta["stride"]).eval()
    fq = qat.rebuild(tuned, scheme, ranges)
    ex = export_for(backend, tuned, tmp_path / "raw.onnx", HW, mode="raw", opset=13)
    insert_qdq(ex.path, tmp_path / "raw.qdq.onnx", ranges)
    return tuned, fq, tmp_path / "raw.qdq.onnx", ranges


def _run_ort(path, x) -> list[np.ndarray]:
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outs = [s.run(None, {s.get_inputs()[0].name: x[i : i + 1]}) for i in range(len(x))]
    return [np.concatenate(z) for z in zip(*outs)]


def _check_closer_to_fake_quant(float_out, fq_out, runtime_out) -> list[tuple[float, float]]:
    rows = []
    for f, q, r in zip(float_out, fq_out, runtime_out):
        near, quant_err = sqnr(q, r), sqnr(f, q)
        assert near >= quant_err + MARGIN_DB and cosine(q, r) >= MIN_COSINE, \
            f"runtime {near:.1f} dB from the fake-quant model, fake quant {quant_err:.1f} dB from float"
        rows.append((near, quant_err))
    return rows


def test_qat_epoch_exports_an_int8_qdq_artifact_with_the_learned_grids(qat_run, tmp_path):
    import onnx
    from onnx import numpy_helper

    from yoloport.deploy.qdq_export import qdq_summary
    from yoloport.io.checkpoint import read_checkpoint

    res, _ = qat_run
    assert res.epochs_completed == 1 and Path(res.artifact).name == "model.onnxruntime.int8.onnx"
    side = json.loads(Path(str(res.artifact) + ".json").read_text())
    assert side["precision"] == "int8" and side["quantization"]["scheme"]["activations"] == "asymmetric"
    _, meta = read_checkpoint(res.checkpoint)
    _, ranges = qat.ranges_from_checkpoint(meta)
    summ = qdq_summary(res.artifact)
    assert summ["convs_with_int8_weights"] == len(ranges) == res.qdq["convs"]
    assert summ["quantize_nodes"] == 2 * len(ranges)  # inputs and (ORT rounds them) outputs
    # every float SiLU of the QAT graph runs as one QuickGelu (exact: onnxruntime_silu_op)
    from yoloport.backends.onnxruntime_silu_op import qdq_silu_units

    graph = onnx.load(str(res.artifact))
    assert side["qconfig"]["silu_units_fused"] == [n.op_type for n in graph.graph.node].count("QuickGelu") > 0
    assert qdq_silu_units(graph) == []  # none left as Sigmoid + Mul
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(res.artifact)).graph.initializer}
    layer = "model.4.m.0.cv2.conv"
    tag = next(k[: -len("_input_scale")] for k in inits if k.endswith("_input_scale") and "model.4_m_m.0_cv2" in k)
    assert float(inits[f"{tag}_input_scale"]) == pytest.approx(ranges[layer]["input"]["scale"], rel=1e-6)
    assert np.allclose(inits[f"{tag}_weight_scale"], ranges[layer]["weight"]["scale"], rtol=1e-6)
    assert inits[f"{tag}_weight_quantized"].dtype == np.int8
    # the grids were learned: they moved from the PTQ ranges the run started from
    from yoloport.models import load_model

    start = qat.wrap_for_qat(load_model("default"), qat.scheme_for(get_spec("onnxruntime")))
    qat.init_ranges(start, load_calibration(res.calibration["paths"], n=4, img_size_hw=HW).batches(1))
    before = qat.learned_ranges(start)
    moved = [k for k in ranges if abs(ranges[k]["input"]["scale"] - before[k]["input"]["scale"]) > 1e-6 * before[k]["input"]["scale"]]
    assert len(moved) > len(ranges) // 2


def test_onnxruntime_runs_the_qdq_graph_in_int8_and_agrees_with_the_fake_quant_model(qdq_raw, images, tmp_path):
    import onnx
    import onnxruntime as ort

    tuned, fq, qdq, ranges = qdq_raw
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(qdq), so, providers=["CPUExecutionProvider"])
    ops = Counter(n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node)
    assert ops["QLinearConv"] == len(ranges)  # every quantized conv fused into an int8 kernel
    _, x = images
    check_qdq_agrees_with_fake_quant(tuned, fq, qdq, x, tmp_path)


def check_qdq_agrees_with_fake_quant(tuned, fq, qdq, x, tmp_path) -> None:
    """The QDQ graph ``qdq`` on ``x`` is closer to the fake-quant model ``fq`` than to the float ``tuned``, and
    its first layer's uint8 codes equal the fake-quant ones (at least ``MIN_CODES_EQUAL`` of them, none off by > 1)."""
    with torch.no_grad():
        ref, quant = _raw(tuned(torch.from_numpy(x))), _raw(fq(torch.from_numpy(x)))
    _check_closer_to_fake_quant(ref, quant, _run_ort(qdq, x))
    ort_codes, torch_codes = _first_layer_codes(qdq, fq, x, tmp_path)
    diff = np.abs(ort_codes.astype(int) - torch_codes.astype(int))
    assert (diff == 0).mean() >= MIN_CODES_EQUAL and diff.max() <= 1, ((diff == 0).mean(), diff.max())


def _first_layer_codes(qdq, fq, x, tmp_path) -> tuple[np.ndarray, np.ndarray]:
    """uint8 output codes of the first convolution: ONNX Runtime's (its output QuantizeLinear made a
    graph output) and the fake-quant model's (``round(y / s) + z`` clipped, from a forward hook)."""
    import onnx

    first = next(layer for layer in qat.qat_layers(fq) if layer.qat_input.kind == "image")
    m = onnx.load(str(qdq))
    q_out = next(n.output[0] for n in m.graph.node if n.op_type == "QuantizeLinear" and n.output[0].endswith("_output_q")
                 and n.output[0].startswith("model.0_"))
    m.graph.output.append(onnx.helper.make_tensor_value_info(q_out, onnx.TensorProto.UINT8, None))
    onnx.save(m, str(tmp_path / "codes.onnx"))
    import onnxruntime as ort

    s = ort.InferenceSession(str(tmp_path / "codes.onnx"), providers=["CPUExecutionProvider"])
    ort_codes = np.concatenate([s.run([q_out], {s.get_inputs()[0].name: x[i : i + 1]})[0] for i in range(len(x))])
    seen = []
    g = first.qat_output.grid()
    hook = first.qat_output.register_forward_hook(
        lambda mod, inp, out: seen.append(np.clip(np.rint(inp[0].numpy() / g["scale"]) + g["zero_point"], 0, 255)))
    try:
        with torch.no_grad():
            fq(torch.from_numpy(x))
    finally:
        hook.remove()
    return ort_codes, seen[0]


def test_openvino_runs_the_qdq_graph_in_int8_and_agrees_with_the_fake_quant_model(qdq_raw, images, tmp_path):
    import openvino as ov

    tuned, fq, qdq, ranges = qdq_raw
    compiled = ov.Core().compile_model(str(qdq), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    convs = Counter(op.get_rt_info()["runtimePrecision"].astype(str) for op in compiled.get_runtime_model().get_ordered_ops()
                    if op.get_rt_info()["layerType"].astype(str) == "Convolution")
    assert convs["u8"] + convs["i8"] == len(ranges), convs
    _, x = images
    out = [np.concatenate(z) for z in zip(*[[compiled(x[i : i + 1])[k] for k in range(len(compiled.outputs))] for i in range(len(x))])]
    with torch.no_grad():
        ref, quant = _raw(tuned(torch.from_numpy(x))), _raw(fq(torch.from_numpy(x)))
    _check_closer_to_fake_quant(ref, quant, out)


def test_negative_control_the_runtimes_own_ptq_is_not_as_close_to_the_fake_quant_model(qdq_raw, images, tmp_path):
    from yoloport.backends.registry import build_artifact

    tuned, fq, _, _ = qdq_raw
    calib, x = images
    art = build_artifact("onnxruntime", tuned, tmp_path / "ptq", HW, calib, {"precision": "int8"}, mode="raw")
    with torch.no_grad():
        ref, quant = _raw(tuned(torch.from_numpy(x))), _raw(fq(torch.from_numpy(x)))
    with pytest.raises(AssertionError, match="from the fake-quant model"):
        _check_closer_to_fake_quant(ref, quant, _run_ort(art, x))


def test_val_runs_the_qat_artifact_from_its_sidecar(qat_run, tmp_path):
    from yoloport.cli import main

    res, data = qat_run
    rc = main(["val", "--backend", "onnxruntime", "--artifact", str(res.artifact), "--data", str(data),
               "--project", str(tmp_path), "--name", "v"])
    assert rc == 0


def test_the_saved_checkpoint_is_a_plain_model_with_its_grids(qat_run):
    from yoloport.io.checkpoint import read_checkpoint
    from yoloport.models import load_model

    res, _ = qat_run
    m = load_model(res.checkpoint)  # loads as an ordinary float model
    assert not qat.qat_layers(m)
    _, meta = read_checkpoint(res.checkpoint)
    assert meta["qat"]["scheme"]["head_fp32"] == "convs" and meta["qat"]["ranges"]


# ----------------------------------------------------------------------------- mlu-sim


def test_mlu_sim_takes_the_learned_ranges(tiny_model, images, tmp_path):
    from yoloport.backends.registry import build_artifact, build_prequantized, load_runner

    calib, x = images
    scheme = qat.scheme_for(get_spec("mlu-sim"))
    q = qat.wrap_for_qat(tiny_model, scheme)
    qat.init_ranges(q, calib.batches(1))
    with torch.no_grad():  # "learned" grids, distinct from what calibration gives
        for layer in qat.qat_layers(q):
            if layer.qat_input.kind != "image":
                layer.qat_input.scale.mul_(1.3)
            layer.qat_weight.scale.mul_(0.9)
    ranges = qat.learned_ranges(q)
    fm = qat.float_model(q)
    ex = export_for("mlu-sim", fm, tmp_path / "m.onnx", HW, mode="raw")
    pre = qat.PrequantizedModel(ranges, scheme, None, calib)
    art = build_prequantized("mlu-sim", fm, ex, tmp_path / "qat", pre, {})
    runner = load_runner("mlu-sim", art, output="raw")
    c = next(c for c in runner.qconvs if c.name == "model.2.cv1.conv")
    assert float(c.input_scale) == pytest.approx(ranges["model.2.cv1.conv"]["input"]["scale"], rel=1e-6)
    assert float(c.w_scale) == pytest.approx(ranges["model.2.cv1.conv"]["weight"]["scale"][0], rel=1e-6)
    # Layer by layer on the same input (the fake-quant layer's own input fed to the simulated conv): the same
    # grids give the same numbers, but for a rare code where the two BN folds' float rounding straddles a
    # rounding tie. End to end the two differ by float rounding (~5e-7) of the layers' sums,
    # which now and then moves one activation across a rounding boundary: one code, then a cascade, so an
    # end-to-end figure measures the model's luck, not the grid (a model fine-tuned in issue 15 flipped one code
    # at model.6.cv1 and ended at 34 dB; the previous one never flipped).
    seen: dict = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: seen.__setitem__(n, (mod, i[0].detach(), o.detach())))
             for n, m in q.named_modules() if hasattr(m, "qat_input")]
    with torch.no_grad():
        fq = _raw(q.eval()(torch.from_numpy(x)))
    for h in hooks:
        h.remove()
    checked = flipped = 0
    for c in runner.qconvs:
        layer = c.name[: -len(".conv")] if c.name.endswith(".conv") else c.name
        if c.keep_float or layer not in seen:
            continue
        mod, inp, want = seen[layer]
        with torch.no_grad():
            got = c(inp.float())
            act = getattr(mod, "act", None)  # a Conv block's activation follows its conv
            got = act(got) if isinstance(act, torch.nn.Module) else got
        off = ((got - want.float()).abs() > 1e-4 + 1e-4 * want.float().abs()).float().mean().item()
        assert off < 0.02, (c.name, off)  # a weight one ulp from a rounding tie (BN folded twice) flips one channel
        flipped += off > 0
        checked += 1
    assert checked >= 50 and flipped <= 3, (checked, flipped)
    out = runner(x)
    assert all(sqnr(a, b) > 25 for a, b in zip(fq, out)), [sqnr(a, b) for a, b in zip(fq, out)]
    calibrated = load_runner("mlu-sim", build_artifact("mlu-sim", fm, tmp_path / "ptq", HW, calib, {"precision": "int8"},
                                                       mode="raw"), output="raw")
    assert min(sqnr(a, b) for a, b in zip(fq, calibrated(x))) < 40  # calibrated scales are other grids
    side = json.loads(Path(str(art) + ".json").read_text())
    assert side["mlu_sim"]["scales_from"].startswith("quantization-aware")


def test_mlu_sim_refuses_ranges_of_another_scheme(tiny_model, images, tmp_path):
    from yoloport.backends.registry import build_prequantized

    calib, _ = images
    scheme = qat.scheme_for(get_spec("onnxruntime"))  # asymmetric, head convs float
    q = qat.wrap_for_qat(tiny_model, scheme)
    qat.init_ranges(q, calib.batches(1))
    fm = qat.float_model(q)
    ex = export_for("mlu-sim", fm, tmp_path / "m.onnx", HW, mode="raw")
    with pytest.raises(YoloportError, match="mlu-sim"):
        build_prequantized("mlu-sim", fm, ex, tmp_path / "qat", qat.PrequantizedModel(qat.learned_ranges(q), scheme, None, calib), {})


# ----------------------------------------------------------------------------- bad input


def _cli(args, capsys):
    from yoloport.cli import main

    rc = main(["qat", *args])
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err


def test_cli_bad_input_is_one_message(tmp_path, capsys):
    from yoloport.data.synth import make_synthetic_dataset

    data = make_synthetic_dataset(tmp_path / "d", {"train": 2, "val": 2}, HW, seed=1, workers=1)
    cases = [
        (["--backend", "onnxruntime"], "no dataset"),
        (["--data", str(tmp_path / "nope.yaml"), "--backend", "onnxruntime"], "not found"),
        (["--data", str(data)], "no backend"),
        (["--data", str(data), "--backend", "onnxruntime", "--epochs", "0"], "--epochs must be"),
        (["--data", str(data), "--backend", "onnxruntime", "--lr0", "-1"], "--lr0 must be > 0"),
        (["--data", str(data), "--backend", "onnxruntime", "--platform", "rk3588"], "unknown qconfig key"),
        (["--data", str(data), "--backend", "onnxruntime", "--out", str(tmp_path / "o0")], "no model given"),
        (["--weights", "default", "--data", str(data), "--backend", "onnxruntime", "--calib", f"{data}:val",
          "--out", str(tmp_path / "o1"), "--img-size", "128", "128"], "also in the val split"),
    ]
    for args, msg in cases:
        rc, err = _cli(args, capsys)
        assert rc != 0 and len(err) == 1 and msg in err[0], (args, err)
    keep = tmp_path / "full"
    keep.mkdir()
    (keep / "mine.txt").write_text("user data")
    rc, err = _cli(["--weights", "default", "--data", str(data), "--backend", "onnxruntime", "--out", str(keep)], capsys)
    assert rc != 0 and "not empty" in err[0] and (keep / "mine.txt").read_text() == "user data"


def test_library_refusals():
    from yoloport.deploy.qdq_export import insert_qdq

    with pytest.raises(YoloportError, match="no QAT ranges"):
        qat.ranges_from_checkpoint({"format": "yoloport"})
    with pytest.raises(YoloportError, match="graph node"):
        qat.scheme_for(get_spec("onnxruntime"), {"exclude": ["/model.2/Conv"]})
    with pytest.raises(YoloportError, match="scale <= 0"):
        insert_qdq("unused.onnx", "unused.qdq.onnx", {"model.0.conv": {"input": {"scale": 0.0}, "weight": {"scale": [1.0]}}})


def test_qdq_export_refuses_an_opset_below_13(tiny_model, images, tmp_path):
    from yoloport.deploy.qdq_export import insert_qdq

    calib, _ = images
    q = qat.wrap_for_qat(tiny_model, qat.scheme_for(get_spec("openvino")))
    qat.init_ranges(q, calib.batches(1))
    ex = export_for("openvino", tiny_model, tmp_path / "m12.onnx", HW, mode="raw", opset=12)
    with pytest.raises(YoloportError, match="opset >= 13"):
        insert_qdq(ex.path, tmp_path / "m12.qdq.onnx", qat.learned_ranges(q))
    assert not (tmp_path / "m12.qdq.onnx").exists()


# ----------------------------------------------------------------------------- RKNN (simulator)


COARSE = 16  # x 4 was enough for the first default model (a clear margin); the fine-tuned one (issue 15) sat
# 25.6 / 25.4 / 26.1 dB from coarse / fine / float with x 4, too close to tell the grids apart


@pytest.mark.slow
def test_rknn_takes_the_qdq_graph_as_a_prequantized_model(tiny_model, images, tmp_path):
    """rknn-toolkit2 2.5 loads the QDQ graph as a QAT model and builds it without its own quantizer.
    Its simulator keeps the tensors without a QDQ pair in float16 and is ~28 dB from both float and the
    fake-quant model on this model, so agreement cannot show which grids it took; coarse grids can: with
    every activation scale x COARSE the simulator must land nearer the coarse fake-quant model than the
    calibrated one or float (it would not if it ignored the pairs or requantized on its own). Measured:
    with pairs also on the convolutions' outputs before SiLU (ONNX Runtime's layout) it sat 16 dB from
    all three (it fuses Conv + SiLU), hence RKNN's scheme has no such pairs (``qdq_rounds_conv_outputs``)."""
    pytest.importorskip("rknn.api")
    import copy

    from yoloport.backends.registry import build_prequantized, load_runner
    from yoloport.deploy.qdq_export import insert_qdq

    calib, x = images
    scheme = qat.scheme_for(get_spec("rknn"))
    q = qat.wrap_for_qat(tiny_model, scheme)
    qat.init_ranges(q, calib.batches(1))
    fine = qat.learned_ranges(q)
    coarse = copy.deepcopy(fine)
    for g in coarse.values():
        for key in ("input", "output"):
            if g.get(key) and g[key]["qmin"] == 0 and g[key]["scale"] != pytest.approx(1 / 255):
                g[key]["scale"] *= COARSE
    fm = qat.float_model(q)
    ex = export_for("rknn", fm, tmp_path / "rk.onnx", HW, mode=None, opset=13)
    insert_qdq(ex.path, tmp_path / "rk.qdq.onnx", coarse)
    art = build_prequantized("rknn", fm, ex, tmp_path / "qat", qat.PrequantizedModel(coarse, scheme, tmp_path / "rk.qdq.onnx", calib), {})
    side = json.loads(Path(str(art) + ".json").read_text())
    assert side["precision"] == "int8" and side["qconfig"]["do_quantization"] is False
    out = load_runner("rknn", art)(x)

    def probs(model):
        with torch.no_grad():
            return [1 / (1 + np.exp(-r)) for r in _raw(model.eval()(torch.from_numpy(x)))]

    ref, fq_fine, fq_coarse = probs(fm), probs(q), probs(qat.rebuild(fm, scheme, coarse))
    for f, a, b, r in zip(ref, fq_fine, fq_coarse, out):
        assert sqnr(b, r) > max(sqnr(a, r), sqnr(f, r)), (sqnr(b, r), sqnr(a, r), sqnr(f, r))
