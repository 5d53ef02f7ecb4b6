"""Exact graph surgery (yoloport.deploy.surgery): Conv+BN fusion, Focus -> Conv, SiLU, onnxslim.

Focus -> Conv on the v5.0 fixture: the rewrite is exact (float64: max |diff| ~1e-12, asserted
< 1e-5 on bus.jpg and zidane.jpg); in float32 the two kernels sum in a different order, so the
decoded output differs by float rounding only (asserted < 1e-2 px / raw < 1e-3) and the detections
are identical.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from yoloport.deploy.surgery import (  # noqa: E402
    MulSigmoid,
    focus_to_conv,
    focus_weight_to_conv,
    fuse_conv_bn,
    silu_to_x_sigmoid,
    simplify_onnx,
)
from yoloport.fixtures import fixtures_dir  # noqa: E402
from yoloport.nn.modules import Conv, Focus, space_to_depth  # noqa: E402

FX = fixtures_dir()
V5 = FX / "weights" / "yolov5s-v5.0.pt" if FX else None
def needs_v5(test):
    """Marked ``fixtures`` and skipped, saying so, when the v5.0 fixture weights are absent."""
    skip = pytest.mark.skipif(V5 is None or not V5.is_file(), reason="fixture weights/yolov5s-v5.0.pt not found")
    return pytest.mark.fixtures(skip(test))


@pytest.fixture(scope="module")
def tiny_v5():
    """yolov5n-v5.0 (Focus stem) from its YAML, float64, re-initialised so that its outputs depend on
    the input (``conftest.with_signal``; random BN statistics exercise the fusion)."""
    from conftest import with_signal
    from yoloport.nn.model import DetectionModel

    return with_signal(DetectionModel("yolov5n-v5.0", nc=3)).double().eval()


def test_guard_tiny_v5_outputs_depend_on_the_input(tiny_v5):
    """Every level's raw output moves between two inputs by far more than the 1e-6 / 1e-9 the
    surgery tests allow (measured 0.50 / 0.087 / 0.018)."""
    x = torch.rand(2, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        raw = tiny_v5(x)[1]
    assert min(float((r[0] - r[1]).abs().max()) for r in raw) > 1e-3


@pytest.mark.parametrize("k", [1, 3])
def test_focus_weight_rearrangement_exact(k):
    torch.manual_seed(k)
    focus = nn.Conv2d(12, 8, k, 1, k // 2, bias=False).double()
    conv = nn.Conv2d(3, 8, 2 * k, 2, 2 * (k // 2), bias=False).double()
    conv.weight.data = focus_weight_to_conv(focus.weight.data)
    x = torch.randn(2, 3, 32, 48, dtype=torch.float64)
    assert (focus(space_to_depth(x)) - conv(x)).abs().max() < 1e-12


def test_focus_to_conv_model(tiny_v5):
    m = focus_to_conv(tiny_v5)
    assert isinstance(tiny_v5.model[0], Focus), "the input model is not modified"
    assert type(m.model[0]) is Conv and m.model[0].conv.kernel_size == (6, 6) and m.model[0].conv.stride == (2, 2)
    assert m.yaml["backbone"][0] == [-1, 1, "Conv", [64, 6, 2, 2]]
    assert tiny_v5.yaml["backbone"][0][2] == "Focus"
    x = torch.rand(1, 3, 96, 128, dtype=torch.float64)
    with torch.no_grad():
        assert (tiny_v5(x)[0] - m(x)[0]).abs().max() < 1e-9


def test_focus_to_conv_rebuilds_from_yaml(tiny_v5):
    """The rewritten YAML builds a model whose state dict takes the converted weights."""
    from yoloport.models import model_from_state

    m = focus_to_conv(tiny_v5).float()
    rebuilt = model_from_state(m.yaml, m.state_dict(), names=m.names)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert (rebuilt(x)[0] - m.eval()(x)[0]).abs().max() == 0


def test_focus_to_conv_no_focus_is_a_copy():
    from yoloport.nn.model import DetectionModel

    m = DetectionModel("yolov5n", nc=2).eval()
    c = focus_to_conv(m)
    assert c is not m and c.focus_converted == 0 and c.yaml == m.yaml


def test_fuse_conv_bn_exact(tiny_v5):
    fused = fuse_conv_bn(tiny_v5)
    assert not any(isinstance(x, nn.BatchNorm2d) for x in fused.model[0].modules())
    n_bn_left = sum(isinstance(x, nn.BatchNorm2d) for x in fused.modules())
    assert n_bn_left == sum(1 for x in tiny_v5.modules() if type(x).__name__ == "BottleneckCSP")  # CSP's own bn
    kept = fuse_conv_bn(tiny_v5, keep_bn=True)
    assert kept.state_dict().keys() == tiny_v5.state_dict().keys()
    x = torch.rand(2, 3, 64, 96, dtype=torch.float64)
    with torch.no_grad():
        ref = tiny_v5(x)[0]
        assert (fused(x)[0] - ref).abs().max() < 1e-9
        assert (kept(x)[0] - ref).abs().max() < 1e-6  # var = 1 - eps: scale 1 up to float rounding


def test_fuse_after_focus_and_focus_after_fuse(tiny_v5):
    x = torch.rand(1, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        ref = tiny_v5(x)[0]
        a = fuse_conv_bn(focus_to_conv(tiny_v5))(x)[0]
        b = focus_to_conv(fuse_conv_bn(tiny_v5))(x)[0]
    assert (a - ref).abs().max() < 1e-9 and (b - ref).abs().max() < 1e-9


def test_silu_to_x_sigmoid(tiny_v5):
    m = silu_to_x_sigmoid(tiny_v5)
    assert not any(isinstance(x, nn.SiLU) for x in m.modules())
    assert any(isinstance(x, MulSigmoid) for x in m.modules())
    x = torch.rand(1, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        assert (m(x)[0] - tiny_v5(x)[0]).abs().max() < 1e-9


def test_simplify_onnx_keeps_outputs():
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxslim")
    ort = pytest.importorskip("onnxruntime")
    from conftest import signal_model
    from yoloport.deploy.export import build_onnx

    m = signal_model()
    proto, *_ = build_onnx(m, (64, 64), "raw", fuse=False)
    slim = simplify_onnx(copy.deepcopy(proto))
    assert len(slim.graph.node) <= len(proto.graph.node)
    x = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)  # the trained model responds to noise too
    run = lambda p: ort.InferenceSession(p.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"images": x})  # noqa: E731
    for a, b in zip(run(proto), run(slim)):
        np.testing.assert_allclose(a, b, atol=1e-4)
    assert onnx.checker.check_model(slim) is None


# ----------------------------------------------------------------------------- fixture: v5.0 Focus


@pytest.fixture(scope="module")
def v5():
    from yoloport.models import load_model

    return load_model(V5)


@pytest.fixture(scope="module")
def v5_inputs():
    cv2 = pytest.importorskip("cv2")
    from yoloport.data.letterbox import preprocess

    return {n: preprocess(cv2.imread(str(FX / "images" / f"{n}.jpg")), (640, 640), auto=False)[0][None] for n in ("bus", "zidane")}


@needs_v5
def test_v5_focus_to_conv_float64_exact(v5, v5_inputs):
    m64 = copy.deepcopy(v5).double()
    c64 = focus_to_conv(m64)
    for name, x in v5_inputs.items():
        xd = torch.from_numpy(x).double()
        with torch.no_grad():
            (a, ra), (b, rb) = m64(xd), c64(xd)
        assert (a - b).abs().max() < 1e-5, name
        assert max((p - q).abs().max() for p, q in zip(ra, rb)) < 1e-5, name


@needs_v5
def test_v5_focus_to_conv_float32_same_detections(v5, v5_inputs):
    from yoloport.backends.torch_backend import TorchRunner
    from yoloport.ops.postprocess import postprocess

    conv = focus_to_conv(v5)
    ra, rb = TorchRunner(v5), TorchRunner(conv)
    for name, x in v5_inputs.items():
        oa, ob = ra(x), rb(x)
        assert max(np.abs(p - q).max() for p, q in zip(oa, ob)) < 1e-3, name
        da, db = postprocess(oa, ra.head)[0], postprocess(ob, rb.head)[0]
        assert len(da) == len(db) >= 4
        np.testing.assert_array_equal(da[:, 5], db[:, 5])
        assert np.abs(da[:, :4] - db[:, :4]).max() < 1e-2 and np.abs(da[:, 4] - db[:, 4]).max() < 1e-4


@needs_v5
@pytest.mark.slow
def test_convert_cli_roundtrip(tmp_path, capsys):
    pytest.importorskip("safetensors")
    from yoloport.cli import main
    from yoloport.models import load_model

    out = tmp_path / "v5-conv.safetensors"
    rc = main(["convert", "--weights", str(V5), "--focus-to-conv", "--out", str(out)])
    assert rc == 0, capsys.readouterr()
    m = load_model(out)
    assert m.yaml["backbone"][0] == [-1, 1, "Conv", [64, 6, 2, 2]] and type(m.model[0]) is Conv
    rc = main(["convert", "--weights", str(V5), "--out", str(out)])
    assert rc == 2 and "--overwrite" in capsys.readouterr().err
    rc = main(["convert", "--weights", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "x.safetensors")])
    assert rc == 2


# ----------------------------------------------------------------------------- Focus -> Conv by default for targets


def test_focus_converted_path_names_only_a_focus_stem_conv():
    from yoloport.deploy.surgery import focus_converted_path

    assert focus_converted_path("model.0.conv.conv") == "model.0.conv"
    assert focus_converted_path("model.3.conv.conv") == "model.3.conv"
    for other in ("model.0.conv", "model.2.cv1.conv", "model.24.m.0", "model.2.m.0.conv.conv", "x.0.conv.conv"):
        assert focus_converted_path(other) is None


def _first_ops(onnx_path, n=3):
    import onnx

    return [node.op_type for node in onnx.load(str(onnx_path)).graph.node][:n]


def test_export_for_a_backend_takes_the_stem_as_its_spec_says(tmp_path, tiny_v5):
    """Exports for a backend (quantize, port, bench) take the stem as the backend's ``SPEC.focus_to_conv``
    says (OpenVINO: the Conv; ONNX Runtime: the slices) and ``export_options`` outranks it. The
    sensitivity ranking's name for the Focus conv (``model.0.conv.conv``) finds its node either way."""
    from yoloport.backends.registry import export_for, get_spec
    from yoloport.deploy.onnx_graph import onnx_conv_names

    assert get_spec("openvino").focus_to_conv and get_spec("rknn").focus_to_conv and get_spec("mlu-sim").focus_to_conv
    assert not get_spec("onnxruntime").focus_to_conv
    model = copy.deepcopy(tiny_v5).float()
    conv = export_for("openvino", model, tmp_path / "conv.onnx", (64, 64))
    kept = export_for("onnxruntime", model, tmp_path / "focus.onnx", (64, 64))
    forced = export_for("onnxruntime", model, tmp_path / "forced.onnx", (64, 64), export_options={"focus_to_conv": True})
    assert "focus-to-conv" in conv.meta["surgery"] and "focus-to-conv" not in (kept.meta.get("surgery") or [])
    assert _first_ops(conv.path, 1) == ["Conv"] and _first_ops(forced.path, 1) == ["Conv"]
    assert "Slice" in _first_ops(kept.path, 6) and "Conv" not in _first_ops(kept.path, 4)
    names = onnx_conv_names(conv.path, ["model.0.conv.conv", "model.1.conv"])
    assert names["model.0.conv.conv"].startswith("/model.0/") and names["model.1.conv"].startswith("/model.1/")
    assert onnx_conv_names(kept.path, ["model.0.conv.conv"])["model.0.conv.conv"].startswith("/model.0/conv/")


@pytest.mark.parametrize("argv, converted", [
    ([], False),                                                 # a plain export keeps the checkpoint's stem
    (["--target", "rknn"], True),                                # for an NPU target: the Conv
    (["--target", "mlu"], True),
    (["--target", "onnxruntime"], False),                        # ONNX Runtime's int8 runs the slices faster
    (["--target", "rknn", "--no-focus-to-conv"], False),
    (["--focus-to-conv"], True),
])
def test_export_cli_focus_default_follows_the_target(argv, converted, tmp_path, tiny_v5, capsys):
    from yoloport.cli import main
    from yoloport.models import save_model

    ckpt = save_model(copy.deepcopy(tiny_v5).float(), tmp_path / "v5n.safetensors")
    out = tmp_path / "m.onnx"
    rc = main(["export", "--weights", str(ckpt), "--img-size", "64", "--out", str(out), *argv])
    assert rc == 0, capsys.readouterr()
    assert (_first_ops(out, 1) == ["Conv"]) == converted
