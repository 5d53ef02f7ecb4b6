"""yoloport.analysis.compare (SQNR, cosine, greedy box matching, runner comparison) and the compare CLI."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from yoloport.analysis.compare import (
    compare_detections,
    compare_outputs,
    compare_runners,
    cosine,
    format_compare_table,
    jsonable,
    match_detections,
    reference_runner,
    sqnr,
)
from yoloport.backends.torch_backend import TorchRunner
from yoloport.cli import main
from yoloport.errors import YoloportError

import _checks as C

HW = (96, 128)


def test_sqnr_and_cosine_values():
    ref = np.ones(100, np.float32)
    assert sqnr(ref, ref) == math.inf
    assert sqnr(ref, ref + 0.1) == pytest.approx(20.0, abs=1e-4)  # 10 log10(1 / 0.01)
    assert sqnr(np.zeros(3), np.ones(3)) == -math.inf
    assert cosine(ref, 3 * ref) == pytest.approx(1.0)
    assert cosine([1, 0], [0, 1]) == pytest.approx(0.0)
    assert cosine(np.zeros(4), np.zeros(4)) == 1.0 and cosine(np.zeros(4), np.ones(4)) == 0.0
    with pytest.raises(YoloportError, match="shapes"):
        sqnr(np.zeros(3), np.zeros(4))
    rows = compare_outputs([ref.reshape(1, -1)], [ref.reshape(1, -1) + 0.1])
    assert rows[0]["sqnr_db"] == pytest.approx(20.0, abs=1e-4) and rows[0]["max_abs_diff"] == pytest.approx(0.1, abs=1e-6)


def _det(*rows):
    return np.array(rows, dtype=np.float32).reshape(-1, 6)


def test_match_detections_greedy_by_iou_and_class():
    a = _det([0, 0, 10, 10, 0.9, 0], [20, 20, 30, 30, 0.8, 1], [50, 50, 60, 60, 0.7, 2])
    b = _det([1, 0, 11, 10, 0.85, 0], [0, 0, 10, 10, 0.5, 0], [20, 20, 30, 30, 0.8, 2], [80, 80, 90, 90, 0.3, 0])
    pairs = match_detections(a, b, 0.5)
    assert pairs[0][:2] == (0, 1) and pairs[0][2] == pytest.approx(1.0)  # exact box wins over the shifted one
    assert len(pairs) == 1  # box 1 changed class, box 2 has no partner
    agnostic = match_detections(a, b, 0.5, class_aware=False)
    assert {(i, j) for i, j, _ in agnostic} == {(0, 1), (1, 2)}
    assert match_detections(a, _det(), 0.5) == [] and match_detections(_det(), b, 0.5) == []
    s = compare_detections(a, b, 0.5)
    assert (s["n_ref"], s["n_test"], s["matched"]) == (3, 4, 1)
    assert s["mean_conf_delta"] == pytest.approx(0.5 - 0.9) and len(s["unmatched_ref"]) == 2 and len(s["unmatched_test"]) == 3


class NoisyRunner:
    """A runner that returns the reference outputs plus fixed relative noise (a stand-in backend)."""

    backend = "noisy"

    def __init__(self, ref, rel=0.01):
        self.ref, self.rel, self.head, self.input_hw, self.batch, self.stride = ref, rel, ref.head, HW, 1, ref.stride

    def __call__(self, x):
        rng = np.random.default_rng(0)
        return [o + self.rel * o.std() * rng.standard_normal(o.shape).astype(np.float32) for o in self.ref(x)]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from test_backend_ort import write_calib_images

    return sorted(write_calib_images(tmp_path_factory.mktemp("cmp"), n=2).glob("*.jpg"))


def test_compare_runners_identical_and_noisy(tiny_model, images):
    ref = TorchRunner(tiny_model)
    same = compare_runners(ref, TorchRunner(tiny_model), images, HW, conf_thres=0.001, max_det=30)
    assert all(o["sqnr_db"] == math.inf and o["cosine"] == pytest.approx(1.0) for o in same["outputs"])
    s = same["summary"]
    assert s["images"] == 2 and s["matched"] == s["ref_detections"] == s["test_detections"] > 0 and s["match_rate"] == 1.0
    noisy = compare_runners(ref, NoisyRunner(ref, 0.01), images, HW, conf_thres=0.001, max_det=30)
    for o in noisy["outputs"]:
        assert 25.0 < o["sqnr_db"] < 60.0 and o["cosine"] > 0.99
    assert noisy["settings"]["input_hw"] == list(HW) and noisy["decoded"]["sqnr_db"] > 20
    assert [p["output"] for p in noisy["decoded_parts"]] == ["decoded.xywh", "decoded.obj", "decoded.cls"]
    assert noisy["decoded_parts"][1]["shape"][-1] == 1 and noisy["decoded_parts"][2]["shape"][-1] == 6
    table = format_compare_table(noisy)
    assert "SQNR" in table and "out0" in table and images[0].name[:20] in table
    json.dumps(jsonable(same))  # strict JSON: inf written as "inf"
    assert jsonable({"a": [math.inf]}) == {"a": ["inf"]}


def test_reference_runner_in_graph_modes(tiny_model):
    from yoloport.ops.postprocess import HeadSpec

    x = np.random.default_rng(0).random((1, 3, *HW), dtype=np.float32)
    raw = reference_runner(tiny_model, HeadSpec.from_model(tiny_model, "raw"))
    sig = reference_runner(tiny_model, HeadSpec.from_model(tiny_model, "raw", sigmoid_applied=True), HW)
    for a, b in zip(raw(x), sig(x)):
        np.testing.assert_allclose(1 / (1 + np.exp(-a)), b, atol=1e-5)


# ----------------------------------------------------------------------------- the compare command


@pytest.fixture(scope="module")
def built(tiny_model, tmp_path_factory, images):
    from yoloport.models import save_model

    d = tmp_path_factory.mktemp("cli")
    ckpt = save_model(tiny_model, d / "tiny.safetensors")
    assert main(["quantize", "--weights", str(ckpt), "--backend", "onnxruntime", "--img-size", "128", "96", "--out", str(d / "q")]) == 0
    return ckpt, d / "q" / "model.onnxruntime.fp32.onnx"


def test_compare_cli(built, images, tmp_path, capsys):
    ckpt, art = built
    src = str(images[0].parent)
    out = tmp_path / "cmp.json"
    assert main(["compare", "--weights", str(ckpt), "--artifact", str(art), "--source", src, "--conf-thres", "0.001", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "SQNR" in text and "matched" in text
    rep = json.loads(out.read_text())
    assert rep["summary"]["images"] == 2
    C.check_compare_report(rep, 80.0, 0.9999)  # fp32 vs torch
    assert rep["settings"]["test"] == "onnxruntime"
    assert main(["compare", "--weights", str(ckpt), "--artifact", str(art), "--source", src, "--min-sqnr", "1000"]) == 1
    assert "FAIL" in capsys.readouterr().out
    assert art.with_name(art.name + ".compare.json").is_file()  # the default report path
    # an existing report (the user's file, or an earlier run's) is kept unless --overwrite
    out.write_text("mine")
    assert main(["compare", "--weights", str(ckpt), "--artifact", str(art), "--source", src, "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and "Traceback" not in err and out.read_text() == "mine"
    assert main(["compare", "--weights", str(ckpt), "--artifact", str(art), "--source", src, "--json", str(out),
                 "--overwrite"]) == 0
    assert json.loads(out.read_text())["summary"]["images"] == 2
    assert main(["compare", "--weights", str(ckpt), "--backend", "torch", "--source", src]) == 0


def test_compare_cli_user_errors(built, images, tmp_path, capsys):
    from conftest import random_model
    from yoloport.models import save_model

    ckpt, art = built
    src = str(images[0].parent)
    other = save_model(random_model(nc=6), tmp_path / "other.safetensors")
    assert main(["compare", "--weights", str(other), "--artifact", str(art), "--source", src]) == 2
    assert "another model" in capsys.readouterr().err
    assert main(["compare", "--weights", str(ckpt), "--backend", "openvino", "--artifact", str(art), "--source", src]) == 2
    assert main(["compare", "--weights", str(ckpt), "--artifact", str(art), "--source", str(tmp_path / "none")]) == 2
    assert main(["compare", "--weights", str(ckpt), "--backend", "onnxruntime", "--source", src]) == 2
