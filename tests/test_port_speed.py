"""Issue 14 item 5, a faster port: batch-dynamic artifacts (one build validates batched and serves every
benchmarked batch, with the metrics of batch 1) and the simulated MLU's fake quantization without
per-call weight rounding (same numbers)."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("onnx")

from yoloport.backends.registry import build_artifact, get_spec, load_runner  # noqa: E402
from yoloport.cli import main  # noqa: E402
from yoloport.data.calibration import load_calibration  # noqa: E402
from yoloport.engine.val import validate_runner  # noqa: E402

from conftest import signal_model  # noqa: E402

HW = (128, 160)  # (h, w)


@pytest.fixture(scope="module")
def shapes_model():
    m = signal_model()
    m.img_size = HW
    return m


@pytest.fixture(scope="module")
def shapes_data(tmp_path_factory, shapes_model):
    """The embedded model's synthetic shapes: ``(data yaml, calibration set from the train split)``;
    validation reads the val split only (disjoint images)."""
    from yoloport.commands._model_args import synthetic_val_set

    root = tmp_path_factory.mktemp("shapes")
    yaml_path, _ = synthetic_val_set(shapes_model, root / "data", HW, 12)
    calib = load_calibration(root / "data" / "images" / "train", n=4, img_size_hw=HW)
    return yaml_path, calib


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_batch_dynamic_int8_artifact_validates_batched_with_batch1_metrics(tmp_path, backend, shapes_model, shapes_data):
    if backend == "openvino":
        pytest.importorskip("openvino")
        pytest.importorskip("nncf")
    assert get_spec(backend).batch_dynamic
    data, calib = shapes_data
    art = build_artifact(backend, shapes_model, tmp_path / backend, HW, calibration=calib, qconfig={"precision": "int8"},
                         mode=None, export_options={"dynamic": True})
    runner = load_runner(backend, artifact=art, model=shapes_model)
    try:
        assert runner.batch is None  # the artifact takes any batch: validation runs batched
        x = np.random.default_rng(0).random((5, 3, *HW), dtype=np.float32)
        whole = runner(x)
        one_by_one = [runner(x[i : i + 1]) for i in range(5)]
        for j, out in enumerate(whole):
            assert out.shape[0] == 5
            np.testing.assert_allclose(out, np.concatenate([o[j] for o in one_by_one], 0), rtol=1e-5, atol=1e-4)
        calls: list[int] = []
        real_call = type(runner).__call__

        def counting(self, images):
            calls.append(images.shape[0])
            return real_call(self, images)

        type(runner).__call__ = counting
        try:
            b8 = validate_runner(runner, data, HW, batch_size=8, names=list(shapes_model.names))
            assert max(calls) == 8  # batched, not one image per call
            calls.clear()
            b1 = validate_runner(runner, data, HW, batch_size=1, names=list(shapes_model.names))
            assert max(calls) == 1
        finally:
            type(runner).__call__ = real_call
    finally:
        runner.close()
    assert b8["mAP50"] > 0.3  # the model finds the shapes: the comparison below means something
    for key in ("mAP50", "mAP50_95", "precision", "recall"):
        assert abs(b8[key] - b1[key]) <= 1e-6, (key, b8[key], b1[key])


def test_port_builds_a_batch_dynamic_target_once_for_validation_and_every_batch(tmp_path, shapes_model, shapes_data):
    from yoloport.models import save_model

    ckpt = save_model(shapes_model, tmp_path / "shapes.safetensors")
    rc = main(["port", "--weights", str(ckpt), "--targets", "onnxruntime", "--val-n", "4", "--calib-n", "2", "--max-drop", "100",
               "--bench-batches", "1", "4", "--repeat", "4", "--warmup", "1", "--no-profile",
               "--project", str(tmp_path), "--name", "p"])
    assert rc == 0
    rep = json.loads((tmp_path / "p" / "report.json").read_text())
    t = rep["targets"][0]
    assert not t.get("error"), t.get("error")
    assert sorted(b["batch"] for b in t["bench"]) == [1, 4]
    target_dir = tmp_path / "p" / t["name"]
    assert not (target_dir / "bench").exists()  # no second export or build for batch 4
    assert len(list(target_dir.glob("model.onnxruntime.*.onnx"))) == 1
    assert json.loads((target_dir / "model.onnxruntime.int8.onnx.json").read_text())["batch"] is None


def test_mlu_sim_activation_integers_are_fake_quants_and_leave_their_input():
    import torch

    from yoloport.backends import mlu_sim as ms
    from yoloport.quant.fake_quant import fake_quant

    g = torch.Generator().manual_seed(0)
    scale = 0.0371
    x = torch.randn(2, 8, 16, 16, generator=g) * 3
    x[0, 0, 0, :6] = torch.tensor([0.5, 1.5, -2.5, 200.0, -200.0, 0.0]) * scale  # ties and clipping
    before = x.clone()
    for s, qmax, qmin in ((scale, 127, None), (1.0 / 255.0, 255, 0), (0.0, 127, None)):
        q = ms.quantize_activation(x, s, qmax, qmin)
        assert torch.equal(q, q.round()) and q.max() <= qmax and q.min() >= (-qmax if qmin is None else qmin)
        assert torch.equal(q * torch.tensor(s, dtype=torch.float32), fake_quant(x, torch.tensor(s), qmax, qmin))
    assert torch.equal(x, before)


def test_mlu_sim_conv_rounds_its_weight_once_and_again_after_a_dtype_change():
    import torch

    from yoloport.backends import mlu_sim as ms
    from yoloport.quant.fake_quant import fake_quant

    conv = torch.nn.Conv2d(4, 6, 3, padding=1)
    q = ms.QConv(conv, "c")
    q.set_scales(0.02, 127, True, firstconv=True)
    q.mode = "quant"
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))

    def reference():  # the per-call formula: activation and current weight rounded now (float32, as fake_quant), summed exactly
        xi = torch.clamp(torch.round(x / q.input_scale.float()), -127, 127).double()
        wi = torch.clamp(torch.round(conv.weight.float() / q.w_scale.float()), -127, 127).double()
        acc = torch.nn.functional.conv2d(xi, wi, None, padding=1).float()
        return acc * (q.input_scale * q.w_scale).reshape(1, -1, 1, 1) + conv.bias.view(1, -1, 1, 1)

    with torch.no_grad():
        assert torch.equal(q(x), reference())
        cached = q.integer_weight()
        assert q.integer_weight() is cached  # not rounded again at the next call
        torch.testing.assert_close(q.quantized_weight(), fake_quant(conv.weight.float(), q.w_scale, 127), rtol=0, atol=0)
        q.half().float()  # the weight passes through float16: the cached copy must follow it
        assert q.integer_weight() is not cached
        assert torch.equal(q(x), reference())


def test_cpu_time_speedups_ignore_time_a_call_spends_off_the_cpu():
    """A call that waits (as a call preempted by other processes waits) has its wall time inflated but
    not its CPU time: the speed-up on CPU time is the ratio of the work. (No wall-time bound is asserted:
    on a busy machine the spinning itself takes longer in wall time.)"""
    import time

    from yoloport.analysis.bench import cpu_time_speedups, time_interleaved

    def spin(seconds):
        end = time.process_time() + seconds
        while time.process_time() < end:
            pass

    calls = {"ref": lambda: spin(0.012), "fast": lambda: (spin(0.004), time.sleep(0.03))}
    timing = time_interleaved(calls, warmup=0, repeat=3)
    cpu = cpu_time_speedups(timing, {"ref": "ref", "fast": "fast"}, "ref")
    fast = timing["results"]["fast"]
    assert cpu["ref"] == 1.0
    assert 2.0 < cpu["fast"] < 3.5  # 12 ms of work against 4 (a busy machine only lengthens CPU time a little)
    assert fast["min_cpu_ms"] < fast["min_ms"] - 25  # the 30 ms off the CPU count in wall time only
