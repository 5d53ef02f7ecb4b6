"""The rknn-lite backend (issue 15 item 2): a ``.rknn`` built by the rknn backend, run by rknn-toolkit-lite2 on a
board. rknnlite is aarch64-only, so everything up to the runtime call is tested here: the core-mask options,
the missing-runtime message, a stand-in ``RKNNLite`` that records what the board adapter passes it (input
layout and dtype, data format, core mask, release), and the same runner on rknn-toolkit2's simulator through
the simulator adapter, against the rknn backend's own simulator run and against PyTorch.
"""
from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from yoloport.backends import rknn_lite as rl
from yoloport.backends.registry import get_spec, prepare_qconfig, runtime_backends
from yoloport.errors import DependencyMissing, YoloportError

HW = (128, 160)


# ----------------------------------------------------------------------------- options (no toolkit needed)


@pytest.mark.parametrize("value, platform, constant", [
    (None, "rk3588", "NPU_CORE_AUTO"), ("auto", "rk3568", "NPU_CORE_AUTO"), ("0", "rk3588", "NPU_CORE_0"),
    ("2", "rk3588", "NPU_CORE_2"), ("0_1_2", "rk3588", "NPU_CORE_0_1_2"), ("0,1", "rk3576", "NPU_CORE_0_1"),
    ("NPU_CORE_1", "rk3576", "NPU_CORE_1"),
])
def test_core_mask_parsing(value, platform, constant):
    assert rl.parse_core_mask(value, platform) == constant


@pytest.mark.parametrize("value, platform, needle", [
    ("2", "rk3576", "2 NPU cores"), ("0_1_2", "rk3576", "2 NPU cores"), ("0", "rk3568", "one NPU core .only auto."),
    ("3", "rk3588", "unknown --core-mask"), ("all", "rk3588", "unknown --core-mask"),
])
def test_core_mask_refused(value, platform, needle):
    with pytest.raises(YoloportError, match=needle):
        rl.parse_core_mask(value, platform)


def test_runtime_choice(monkeypatch):
    monkeypatch.delenv(rl.RUNTIME_ENV, raising=False)
    assert rl.choose_runtime(None) == "board"
    monkeypatch.setenv(rl.RUNTIME_ENV, "simulator")
    assert rl.choose_runtime(None) == "simulator" and rl.choose_runtime("board") == "board"
    monkeypatch.setenv(rl.RUNTIME_ENV, "emulator")
    with pytest.raises(YoloportError, match="board, simulator"):
        rl.choose_runtime(None)


def test_missing_rknnlite_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "rknnlite", None)
    monkeypatch.setitem(sys.modules, "rknnlite.api", None)
    with pytest.raises(DependencyMissing) as e:
        rl._import_rknnlite()
    msg = str(e.value)
    assert "yoloport[rknn-lite]" in msg and "rknn-toolkit-lite2" in msg and rl.RUNTIME_ENV in msg


def test_spec_builds_nothing_and_runs_the_rknn_artifacts():
    spec = get_spec("rknn-lite")
    assert spec.built_by == "rknn" and spec.board and not spec.benchmarkable and "core_mask" in spec.runtime_options
    assert runtime_backends("rknn") == ["rknn", "rknn-lite"] and runtime_backends("onnxruntime") == ["onnxruntime"]
    with pytest.raises(YoloportError, match="builds nothing.*--backend rknn"):
        prepare_qconfig("rknn-lite", {"precision": "fp32"})


def test_core_mask_refused_for_a_backend_without_it(tmp_path, capsys):
    from yoloport.cli import main

    from conftest import write_synth_images

    src = write_synth_images(tmp_path / "im", 1, (96, 128))
    rc = main(["detect", "--core-mask", "0", "--source", str(src), "--project", str(tmp_path), "--name", "d"])
    err = capsys.readouterr().err
    assert rc != 0 and "--core-mask" in err and "rknn-lite" in err and "Traceback" not in err


def test_help_says_what_is_simulated(capsys):
    from yoloport.cli import main

    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "rknn-lite" in out and "board timings come from the board" in out and "simulator" in out


# ----------------------------------------------------------------------------- with rknn-toolkit2's simulator

rknn_api = pytest.importorskip("rknn.api")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """An int8 rk3588 ``.rknn`` of the embedded default model at 160x128 (3 calibration images), and two
    evaluation images that are not calibration images, as a float32 batch."""
    import _checks as C
    from conftest import signal_model, write_synth_images

    from yoloport.backends import rknn as rb
    from yoloport.data.calibration import load_calibration
    from yoloport.deploy.export import export_onnx

    tmp = tmp_path_factory.mktemp("rknnlite")
    cal = load_calibration(write_synth_images(tmp / "calib", 3, (200, 240), seed=0), n=3, img_size_hw=HW)
    ev = load_calibration(write_synth_images(tmp / "eval", 2, (200, 240), seed=1, prefix="eval"), n=2, img_size_hw=HW,
                          seed=None)
    C.check_disjoint(cal.paths, ev.paths)
    model = signal_model()
    onnx, head = export_onnx(model, tmp / "m.onnx", HW, "raw")
    art = rb.build(model, onnx, head, tmp / "out", cal, {"platform": "rk3588"})
    rb._LIVE.clear()  # every load below rebuilds from the recorded recipe, as a fresh process does
    return model, art, np.concatenate(ev.arrays(), 0), ev.paths


class FakeRKNNLite:
    """Stands in for ``rknnlite.api.RKNNLite`` (same constants as rknn-toolkit2's RKNN): records the calls the
    board adapter makes and answers with fixed outputs of the model's layout."""

    NPU_CORE_AUTO, NPU_CORE_0, NPU_CORE_1, NPU_CORE_2, NPU_CORE_0_1, NPU_CORE_0_1_2 = 0, 1, 2, 4, 3, 7
    instances: list = []
    outputs: list = []
    init_ret = 0

    def __init__(self, verbose=False):
        self.calls = []
        FakeRKNNLite.instances.append(self)

    def load_rknn(self, path):
        self.calls.append(("load_rknn", path))
        return 0

    def init_runtime(self, core_mask=0):
        self.calls.append(("init_runtime", core_mask))
        return FakeRKNNLite.init_ret

    def inference(self, inputs, data_format=None):
        self.calls.append(("inference", [(x.dtype, x.shape, x.flags.c_contiguous) for x in inputs], data_format,
                           inputs[0].copy()))
        return [o.copy() for o in FakeRKNNLite.outputs]

    def release(self):
        self.calls.append(("release",))


def test_board_adapter_passes_uint8_nhwc_and_the_core_mask(built, monkeypatch):
    """The board path with a recording RKNNLite: load_rknn(the .rknn), init_runtime(core_mask=NPU_CORE_0_1 = 3),
    one uint8 [1, H, W, 3] NHWC image per call with data_format='nhwc' (the bytes rint(x * 255)), float32
    outputs concatenated over the batch, release() on close; a non-zero init code is one clear error."""
    _, art, batch, _ = built
    sim = rl.load(art, runtime="simulator")
    FakeRKNNLite.outputs = [o[:1].astype(np.float16) for o in sim(batch[:1])]  # the board returns its own dtypes
    sim.close()
    FakeRKNNLite.instances.clear()
    monkeypatch.setitem(sys.modules, "rknnlite", types.ModuleType("rknnlite"))
    monkeypatch.setitem(sys.modules, "rknnlite.api", types.SimpleNamespace(RKNNLite=FakeRKNNLite))
    monkeypatch.delenv(rl.RUNTIME_ENV, raising=False)
    runner = rl.load(art, core_mask="0_1")
    outs = runner(batch)
    runner.close()
    calls = FakeRKNNLite.instances[-1].calls
    assert calls[0] == ("load_rknn", str(art.resolve())) and calls[1] == ("init_runtime", 3)
    infer = [c for c in calls if c[0] == "inference"]
    assert len(infer) == 2 and calls[-1] == ("release",)
    for i, (_, shapes, fmt, x) in enumerate(infer):
        assert shapes == [(np.dtype(np.uint8), (1, HW[0], HW[1], 3), True)] and fmt == "nhwc"
        np.testing.assert_array_equal(x[0], np.rint(batch[i].transpose(1, 2, 0) * 255).astype(np.uint8))
    assert [o.shape[0] for o in outs] == [2] * len(outs) and all(o.dtype == np.float32 for o in outs)
    assert runner.describe()["runtime"] == "board" and runner.simulated_note is None
    FakeRKNNLite.init_ret = -1
    try:
        with pytest.raises(YoloportError, match=r"init_runtime failed \(return code -1\)"):
            rl.load(art)
    finally:
        FakeRKNNLite.init_ret = 0


def test_simulator_adapter_runs_the_same_runner(built):
    """Through the simulator adapter the rknn-lite runner gives the rknn backend's simulator outputs exactly,
    and int8 outputs that agree with PyTorch's fp32 on images that were not calibration images."""
    import _checks as C

    from yoloport.backends import rknn as rb
    from yoloport.backends.torch_backend import TorchRunner

    model, art, batch, _ = built
    lite = rl.load(art, core_mask="0_1_2", runtime="simulator")
    a = lite(batch)
    assert lite.describe()["core_mask"] == "NPU_CORE_0_1_2" and "simulator" in lite.simulated_note
    lite.close()
    ref = rb.load(art)
    b = ref(batch)
    ref.close()
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    C.check_int8_agrees(TorchRunner(model)(batch), a)  # int8 on the simulator vs PyTorch fp32, per head output


def test_cli_detect_val_bench_on_the_simulator(built, tmp_path, monkeypatch, capsys):
    """``--backend rknn-lite --artifact model.rknn`` for detect, val and bench, with the simulator chosen by
    the environment (what a deploy folder's README commands do on this machine)."""
    import json

    from yoloport.cli import main
    from yoloport.data.synth import make_synthetic_dataset

    _, art, _, eval_paths = built
    monkeypatch.delenv(rl.RUNTIME_ENV, raising=False)
    monkeypatch.setitem(sys.modules, "rknnlite", None)  # this x86 machine has no rknn-toolkit-lite2
    monkeypatch.setitem(sys.modules, "rknnlite.api", None)
    rc = main(["detect", "--backend", "rknn-lite", "--artifact", str(art), "--source", str(eval_paths[0]),
               "--project", str(tmp_path), "--name", "missing"])
    err = capsys.readouterr().err
    assert rc != 0 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "yoloport[rknn-lite]" in err and rl.RUNTIME_ENV in err
    monkeypatch.setenv(rl.RUNTIME_ENV, "simulator")
    rc = main(["detect", "--backend", "rknn-lite", "--artifact", str(art), "--source", str(eval_paths[0]),
               "--core-mask", "0", "--project", str(tmp_path), "--name", "d"])
    out = capsys.readouterr().out
    assert rc == 0, out
    data = make_synthetic_dataset(tmp_path / "synth", {"val": 4}, (160, 128), seed=11, workers=1)
    rc = main(["val", "--backend", "rknn-lite", "--artifact", str(art), "--data", str(data), "--project", str(tmp_path),
               "--name", "v"])
    out = capsys.readouterr().out
    assert rc == 0, out
    rc = main(["bench", "--backend", "rknn-lite", "--artifact", str(art), "--batch", "1", "--repeat", "2", "--warmup", "1",
               "--json", str(tmp_path / "b.json")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "simulator" in out and "board" in out  # the note: these timings are not the board's
    doc = json.loads((tmp_path / "b.json").read_text())
    assert doc["backend"] == "rknn-lite" and any("simulator" in n for n in doc["notes"])
