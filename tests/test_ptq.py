"""Post-training quantization steps (yoloport.quant.bias_correction / adaround / equalization / recipe).

Each step is judged on the embedded default model (input-sensitive) by the SQNR of its head outputs on
held-back synthetic images (never calibration images) with its weights on the same int8 grid as plain
PTQ; the AdaRound grid must survive ONNX Runtime's own weight quantizer exactly.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import _checks as C
from conftest import detect_layer, signal_model, write_synth_images
from yoloport.backends.registry import build_artifact, check_qconfig, load_runner
from yoloport.data.calibration import load_calibration
from yoloport.errors import YoloportError
from yoloport.quant.adaround import adaround
from yoloport.quant.bias_correction import bias_correction
from yoloport.quant.equalization import equalize
from yoloport.quant.error import sqnr_db
from yoloport.quant.layers import WeightGrid, folded_copy, quant_layers, raw_outputs, weights_on_grid
from yoloport.quant.recipe import STEPS, apply_recipe, check_steps

HW = (96, 128)
PER_CHANNEL = WeightGrid(127, per_channel=True)
PER_TENSOR = WeightGrid(127, per_channel=False)
# AdaRound on the first stages only (its cost grows with each layer's weights, not with the image size):
# 300 iterations, measured +1.9 dB per-tensor / +0.4 dB per-channel on the held-back images (40: +-0.1 dB)
ROUNDED = ("model.0", "model.1", "model.2", "model.3")
FAST_ADAROUND = {"iters": 300, "rows_per_image": 128, "max_rank": 64, "only": list(ROUNDED)}


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    d = write_synth_images(tmp_path_factory.mktemp("calib"), 6, (150, 200), seed=0)
    return load_calibration(d, n=6, img_size_hw=HW)


@pytest.fixture(scope="module")
def held_back(calib, tmp_path_factory):
    """Three evaluation images, none of them a calibration image, as one batch."""
    ev = load_calibration(write_synth_images(tmp_path_factory.mktemp("eval"), 3, (150, 200), seed=1), n=3, img_size_hw=HW)
    C.check_disjoint(calib.paths, ev.paths)
    return [np.concatenate(ev.arrays(), 0)]


@pytest.fixture(scope="module")
def folded():
    return folded_copy(signal_model())


@pytest.fixture(scope="module")
def calib_batch(calib):
    return [np.concatenate(calib.arrays(), 0)]


def _sqnr(reference, model, grid, images) -> float:
    return sqnr_db(raw_outputs(reference, images), raw_outputs(weights_on_grid(model, grid), images))


def test_folded_copy_is_the_same_function_and_keeps_keys(folded, held_back):
    original = signal_model()
    assert set(folded.state_dict()) == set(original.state_dict())
    assert sqnr_db(raw_outputs(original, held_back), raw_outputs(folded, held_back)) > 100


@pytest.mark.parametrize("grid", [PER_CHANNEL, PER_TENSOR], ids=["per-channel", "per-tensor"])
def test_bias_correction_raises_sqnr_on_held_back_images(folded, calib_batch, held_back, grid):
    corrected, record = bias_correction(folded, calib_batch, grid)
    plain = _sqnr(folded, folded, grid, held_back)
    better = _sqnr(folded, corrected, grid, held_back)
    assert record["layers"] == len(quant_layers(folded))
    assert better > plain + 0.2, (plain, better)


@pytest.mark.parametrize("grid, gain_db", [
    (PER_CHANNEL, 0.15),
    pytest.param(PER_TENSOR, 0.8, marks=pytest.mark.xfail(strict=True, reason=(
        "measured: per-tensor AdaRound over 4 layers lowers the calibration reconstruction error but not the "
        "held-back SQNR: it overfits the 4 calibration images (fine-tuned yolov5n default model: 38.27 -> 37.07 dB; "
        "the stride-4 yolov5n-p2 default model: 40.77 -> 40.42 dB; the first default model gained +1.9 dB). "
        "Strict: this fails when it generalises again"))),
], ids=["per-channel", "per-tensor"])
def test_adaround_raises_sqnr_on_held_back_images(folded, calib_batch, held_back, grid, gain_db):
    rounded, record = adaround(folded, calib_batch, grid, **FAST_ADAROUND)
    plain = _sqnr(folded, folded, grid, held_back)
    better = _sqnr(folded, rounded, grid, held_back)
    assert record["layers"] == 8 and record["learned"] > record["layers"] // 2
    assert record["mean_rel_error_adaround"] < 0.9 * record["mean_rel_error_nearest"]
    assert better > plain + gain_db, (plain, better)


def test_adaround_weights_lie_on_the_grid_with_qmax_in_every_channel(folded, calib_batch):
    rounded, _ = adaround(folded, calib_batch, PER_CHANNEL, **FAST_ADAROUND)
    for layer in (q for q in quant_layers(rounded) if q.name.startswith(tuple(r + "." for r in ROUNDED))):
        w = layer.conv.weight.detach()
        q = PER_CHANNEL.integers(w)
        assert (q.abs().flatten(1).amax(1) == 127).all() or (w.abs().flatten(1).amax(1) == 0).any(), layer.name
        assert torch.equal(PER_CHANNEL.quantize(w), w) or torch.allclose(PER_CHANNEL.quantize(w), w, rtol=0, atol=1e-7 * float(w.abs().max()))
    # it did change roundings somewhere (which layers it changes depends on the model: on the stride-4 default
    # model it leaves model.2.m.0.cv1, the layer this used to check, at nearest)
    changed = [a.name for a, b in zip(quant_layers(folded), quant_layers(rounded)) if a.name.startswith(tuple(r + "." for r in ROUNDED))
               and not torch.equal(PER_CHANNEL.integers(a.conv.weight), PER_CHANNEL.integers(b.conv.weight))]
    assert changed


def test_equalization_with_selection_never_lowers_calibration_sqnr(folded, calib_batch, held_back):
    eq, record = equalize(folded, calib_batch, PER_TENSOR, max_scale=2.0)
    assert record["selected"] and record["sqnr_after_db"] >= record["sqnr_before_db"]
    unselected, _ = equalize(folded, max_scale=2.0, select=False)
    # SiLU is not positively homogeneous: scaling every pair changes the float function (measured, not exact)
    assert sqnr_db(raw_outputs(folded, held_back), raw_outputs(unselected, held_back)) < 60
    assert _sqnr(folded, eq, PER_TENSOR, held_back) >= _sqnr(folded, folded, PER_TENSOR, held_back) - 0.5


def test_unknown_or_misordered_steps_are_refused_with_one_message():
    assert check_steps("adaround, bias_correction") == ("adaround", "bias_correction")
    assert check_steps(None) == () and check_steps([]) == ()
    with pytest.raises(YoloportError, match="unknown ptq step.*'smoothquant'.*choose from equalize, adaround, bias_correction"):
        check_qconfig("onnxruntime", {"ptq": ["adaround", "smoothquant"]})
    with pytest.raises(YoloportError, match="order"):
        check_steps(["bias_correction", "adaround"])
    with pytest.raises(YoloportError, match="twice"):
        check_steps(["adaround", "adaround"])
    from yoloport.backends.registry import get_spec

    # a backend's default steps are valid and ordered; only measured ones are on (mlu-sim: bias correction on its
    # MSE-range default, docs/notes/2026-11-30-mlusim-ranges.md)
    defaults = {b: tuple(get_spec(b).qconfig_defaults["ptq"]) for b in ("onnxruntime", "openvino", "rknn", "mlu-sim")}
    assert all(check_steps(list(v)) == v for v in defaults.values())
    assert defaults == {"onnxruntime": (), "openvino": (), "rknn": (), "mlu-sim": ("bias_correction",)}


def test_recipe_records_its_steps(folded, calib):
    _, record = apply_recipe(folded, ["bias_correction"], calib, PER_CHANNEL, skip=(f"{detect_layer(folded)}.m.",))
    assert record["steps"] == ["bias_correction"] and record["images"] == len(calib)
    assert record["results"]["bias_correction"]["layers"] == len(quant_layers(folded)) - 3


def _qdq_weights(path) -> dict[str, np.ndarray]:
    """``{Conv node: dequantized weight}`` of a QDQ ONNX (int8 initializer * scale, zero point 0)."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    producer = {o: n for n in m.graph.node for o in n.output}
    out = {}
    for n in m.graph.node:
        if n.op_type != "Conv":
            continue
        dq = producer.get(n.input[1])
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        q, s = inits[dq.input[0]].astype(np.float64), inits[dq.input[1]].astype(np.float64)
        assert q.dtype == np.float64 and np.abs(q).max() <= 127
        out[n.name] = (q, q * s.reshape(-1, *([1] * (q.ndim - 1))))
    return out


def _float_weights(path) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    return {n.name: inits[n.input[1]].astype(np.float64) for n in m.graph.node if n.op_type == "Conv"}


@pytest.mark.parametrize("steps", [["adaround"], []], ids=["adaround", "plain"])
def test_adaround_grid_round_trips_through_onnxruntime_quantize_static(tmp_path, calib, held_back, steps):
    """ORT's quantizer recomputes s = max|w|/127 per channel: on AdaRound's weights it must find exactly
    the same grid points (dequantized weight == float weight), and ORT's integers must be AdaRound's;
    plain float weights (the control) are not on a grid."""
    model = signal_model()
    q = {"head_fp32": "tail", "ptq": steps, "ptq_options": {"adaround": FAST_ADAROUND}}
    art = build_artifact("onnxruntime", model, tmp_path, HW, calib, q)
    float_onnx = tmp_path / ("model.ptq.fp32.onnx" if steps else "model.fp32.onnx")
    floats = _float_weights(float_onnx)
    qdq = _qdq_weights(art)
    assert len(qdq) == len(quant_layers(folded_copy(model)))
    qdq = {k: v for k, v in qdq.items() if k.startswith(tuple(f"/{r}/" for r in ROUNDED))}
    assert len(qdq) == 8
    worst = max(np.abs(deq - floats[name]).max() / np.abs(floats[name]).max() for name, (_, deq) in qdq.items())
    if steps:
        assert worst < 1e-6, worst
        for name, (ints, _) in qdq.items():
            assert (np.abs(ints).reshape(ints.shape[0], -1).max(1) == 127).all(), name
        info = json.loads((tmp_path / (art.name + ".json")).read_text())
        assert info["ptq"]["steps"] == ["adaround"] and info["ptq"]["grid"]["per_channel"] is True
        runner = load_runner("onnxruntime", art, model=model)  # checked against the original checkpoint
        assert np.isfinite(runner(held_back[0][:1])[0]).all()
    else:
        assert worst > 1e-3, worst


def test_mlu_sim_artifact_from_a_ptq_model_reloads_against_the_original(tmp_path, calib, held_back):
    model = signal_model()
    art = build_artifact("mlu-sim", model, tmp_path, HW, calib, {"ptq": ["bias_correction"], "output": "raw"})
    runner = load_runner("mlu-sim", art, model=model)
    plain = load_runner("mlu-sim", build_artifact("mlu-sim", model, tmp_path / "plain", HW, calib, {"output": "raw", "ptq": []}), model=model)
    ref = raw_outputs(folded_copy(model), held_back)
    ref = [r.transpose(0, 1, 4, 2, 3).reshape(r.shape[0], -1, *r.shape[2:4]) for r in ref]
    assert sqnr_db(ref, runner(held_back[0])) > sqnr_db(ref, plain(held_back[0])) - 0.3
    assert json.loads((tmp_path / (art.name + ".json")).read_text())["ptq"]["steps"] == ["bias_correction"]


def test_steps_listed_once():
    assert STEPS == ("equalize", "adaround", "bias_correction")


def test_face_blocks_fold_and_bias_correct_into_a_checkpoint_that_rebuilds(calib):
    """yolov5-face's ShuffleV2 branches are bare Conv2d -> BatchNorm2d pairs, not ``Conv`` blocks: the folded copy
    folds them too (same function, same keys), and bias correction writes their shift into the BN's shift, so
    the corrected model saves and rebuilds from its YAML. Before, the correction gave those convs a new ``bias``
    and the checkpoint no longer fitted its model (mlu-sim's face build failed to load)."""
    from conftest import with_signal
    from yoloport.models import model_from_state
    from yoloport.nn.model import DetectionModel

    torch.manual_seed(0)
    model = with_signal(DetectionModel("yolov5n-0.5-face"), 0).eval()
    folded = folded_copy(model)
    x = torch.rand(1, 3, *HW)
    with torch.no_grad():
        assert sqnr_db(raw_outputs(model, [x]), raw_outputs(folded, [x])) > 80
    assert set(folded.state_dict()) == set(model.state_dict())
    branch = [n for n, _ in folded.named_modules() if n.startswith("model.1.branch")]
    assert branch and all(n in {q.name for q in quant_layers(folded)} for n in ("model.1.branch1.0", "model.1.branch2.0"))
    corrected, record = bias_correction(folded, calib.batches(2), PER_CHANNEL)
    assert record["layers"] > 0 and set(corrected.state_dict()) == set(model.state_dict())
    back = model_from_state(model.yaml, corrected.state_dict(), names=list(model.names))
    with torch.no_grad():
        assert sqnr_db(raw_outputs(corrected, [x]), raw_outputs(back, [x])) > 80
