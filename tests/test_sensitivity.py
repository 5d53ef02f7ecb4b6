"""``yoloport sensitivity``: per-layer ranking, backend name mapping, mixed-precision search, CLI.

The ranking tests use the embedded default model (trained yolov5n, 6 shape classes) at 128x96:
calibrated on three synthetic-shape images, every error measured on three others (never on the
calibration images). The ranking's error counts where the model sees objects, which a random model
never does.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from yoloport.analysis import mixed_precision as mp
from yoloport.deploy import onnx_graph
from yoloport.quant import ranking
from yoloport.cli import main
from yoloport.data.calibration import load_calibration
from yoloport.errors import YoloportError
import _checks as C
from conftest import detect_layer, write_synth_images

HW = (96, 128)


@pytest.fixture(scope="module")
def tiny():
    """The embedded default model (a trained yolov5n, 6 shape classes): the ranking measures the error
    in decoded boxes and scores where the model sees objects, so it needs a model that sees some (a
    random one's scores are all 0.5 and hide any int8 error)."""
    from yoloport.models import load_model

    return load_model("default").float().eval()


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory):
    return write_synth_images(tmp_path_factory.mktemp("calib"), 3, (200, 240), seed=0)


@pytest.fixture(scope="module")
def calib(calib_dir):
    return load_calibration(calib_dir, n=3, img_size_hw=HW)


@pytest.fixture(scope="module")
def eval_x(calib, tmp_path_factory):
    """Three evaluation images ``[3, 3, 96, 128]``, none of them a calibration image."""
    ev = load_calibration(write_synth_images(tmp_path_factory.mktemp("eval"), 3, (200, 240), seed=1, prefix="eval"),
                          n=3, img_size_hw=HW, seed=None)
    C.check_disjoint(calib.paths, ev.paths)
    return np.concatenate(ev.arrays(), 0)


@pytest.fixture(scope="module")
def report(tiny, calib, eval_x):
    return ranking.layer_sensitivity(tiny, calib, images=[eval_x])


# ----------------------------------------------------------------------------- ranking


def test_ranking_covers_every_conv_with_finite_numbers(tiny, report):
    convs = [n for n, m in tiny.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert sorted(r.name for r in report.layers) == sorted(convs)
    assert [r.rank for r in report.ranked()] == list(range(1, len(convs) + 1))
    for r in report.layers:
        assert math.isfinite(r.sqnr_db) and 0 < r.cosine <= 1 + 1e-9, r
    sq = [r.sqnr_db for r in report.ranked()]
    assert sq == sorted(sq)  # worst first
    # one layer alone costs less than all of them together
    assert report.full_sqnr_db < min(sq)
    assert f"{detect_layer(tiny)}.m.0" in convs and report.ranked()[0].type.split()[0] in {"Conv", "C3", "SPPF", "Detect"}


def test_ranking_is_deterministic(tiny, calib, eval_x, report):
    again = ranking.layer_sensitivity(tiny, calib, images=[eval_x])
    assert again.names() == report.names()
    assert [r.sqnr_db for r in again.ranked()] == [r.sqnr_db for r in report.ranked()]


def test_rank_ties_keep_forward_order():
    rows = [ranking.LayerSensitivity(f"l{i}", "Conv", i, 30.0, 0.99) for i in (2, 0, 1)]
    assert [r.name for r in ranking.rank_layers(rows)] == ["l0", "l1", "l2"]


def test_report_json_round_trip(report):
    d = json.loads(json.dumps(report.to_dict()))
    assert len(d["layers"]) == len(report.layers) and d["layers"][0]["rank"] == 1
    assert "alone" in d["method"]
    table = ranking.format_ranking(report, top=5)
    assert len(table.splitlines()) == 5 + 2


# ----------------------------------------------------------------------------- names


@pytest.mark.parametrize("node, module", [
    ("/model.0/conv/Conv", "model.0.conv"),
    ("/model.2/m/m.0/cv1/conv/Conv", "model.2.m.0.cv1.conv"),
    ("/model.24/m.2/Conv", "model.24.m.2"),
    ("/model.9/cv2/conv/Conv", "model.9.cv2.conv"),
])
def test_onnx_name_to_module(node, module):
    assert onnx_graph.onnx_name_to_module(node) == module


def test_onnx_conv_names_map_every_layer(tiny, report, tmp_path):
    from yoloport.deploy.export import export_onnx

    path, _ = export_onnx(tiny, tmp_path / "m.onnx", HW, "raw")
    names = onnx_graph.onnx_conv_names(path, report.names())
    assert len(names) == len(report.layers)
    head = detect_layer(tiny)  # model.25 in the default model's yolov5n-p2
    assert names["model.0.conv"] == "/model.0/conv/Conv" and names[f"{head}.m.1"] == f"/{head}/m.1/Conv"
    tensors = onnx_graph.onnx_conv_tensors(path, [names["model.0.conv"], names["model.1.conv"], names[f"{head}.m.0"]])
    assert tensors["/model.0/conv/Conv"] == ("", "/model.0/conv/Conv_output_0", ("/model.0/act/Sigmoid", "/model.0/act/Mul"))
    assert tensors["/model.1/conv/Conv"][:2] == ("/model.0/act/Mul_output_0", "/model.1/conv/Conv_output_0")
    assert tensors[f"/{head}/m.0/Conv"].activation == ()
    import onnx

    assert tensors[f"/{head}/m.0/Conv"][1] in {o.name for o in onnx.load(str(path)).graph.output}
    with pytest.raises(YoloportError, match="cannot map"):
        onnx_graph.onnx_conv_names(path, report.names()[:3] + ["model.99.conv"])


def test_float_scope_layers_per_backend():
    """Each backend translates a FloatScope's layers into its own mechanism."""
    from yoloport.backends import mlu_sim, onnxruntime_backend, openvino_backend
    from yoloport.backends.rknn.hybrid import float_layer_hybrid
    from yoloport.quant.float_scope import FloatScope

    nodes = {"model.1.conv": "/model.1/conv/Conv"}
    assert onnxruntime_backend.float_layer_nodes(["model.1.conv"], nodes) == ["/model.1/conv/Conv"]
    io = {"/model.1/conv/Conv": onnx_graph.ConvIO("/model.0/act/Mul_output_0", "/model.1/conv/Conv_output_0",
                                                 ("/model.1/act/Sigmoid", "/model.1/act/Mul"))}
    assert onnxruntime_backend.float_layer_nodes(["model.1.conv"], nodes, io) == [
        "/model.1/conv/Conv", "/model.1/act/Sigmoid", "/model.1/act/Mul"]
    assert openvino_backend.float_layer_patterns(["model.1.conv"], nodes) == ["/model.1/conv/Conv*"]
    assert float_layer_hybrid(["model.1.conv"], nodes, dtype="int16") == {"/model.1/conv": "int16"}
    assert float_layer_hybrid(["model.1.conv"], nodes, io, "float16") == {
        "/model.1/conv/Conv_output_0": "float16", "/model.0/act/Mul_output_0": "float16"}
    scope = {"float_scope": FloatScope(layers=("model.1.conv",))}
    assert mlu_sim.resolve_qconfig(scope)["exclude"] == ["model.1.conv"]
    assert onnxruntime_backend.float_layer_nodes([], nodes) == []
    with pytest.raises(YoloportError, match="float dtype"):
        FloatScope(layers=("model.1.conv",), dtype="bfloat8")


def test_backend_float_anyway(tiny):
    head = detect_layer(tiny)
    assert mp.backend_float_anyway("onnxruntime", tiny, {}) == {f"{head}.m.0", f"{head}.m.1", f"{head}.m.2"}
    assert mp.backend_float_anyway("onnxruntime", tiny, {"head_fp32": "none"}) == set()
    assert mp.backend_float_anyway("mlu-sim", tiny, {}) == {f"{head}.m.0", f"{head}.m.1", f"{head}.m.2"}
    assert mp.backend_float_anyway("mlu-sim", tiny, {"head_fp32": "tail"}) == set()


# ----------------------------------------------------------------------------- exclusion helps (ORT)


def test_ort_keeping_worst_layers_float_improves_sqnr(tiny, calib, eval_x, report, tmp_path):
    """The worst-ranked layers in float raise the int8 output SQNR; the least sensitive ones do not."""
    pytest.importorskip("onnxruntime")
    from yoloport.analysis.compare import sqnr
    from yoloport.backends.registry import build, export_for, load_runner
    from yoloport.backends.torch_backend import TorchRunner
    from yoloport.quant.float_scope import FloatScope

    x = eval_x
    ref = np.concatenate([o.ravel() for o in TorchRunner(tiny)(x)])
    export = export_for("onnxruntime", tiny, tmp_path / "model.fp32.onnx", HW, "raw")
    ranked = report.names()

    def out_sqnr(layers, tag):
        q = {"precision": "int8", "head_fp32": "none", "float_scope": FloatScope(layers=tuple(layers))}
        art = build("onnxruntime", tiny, export, tmp_path / tag, calib, q)
        return sqnr(ref, np.concatenate([o.ravel() for o in load_runner("onnxruntime", art, tiny)(x)]))

    s0 = out_sqnr([], "k0")
    worst = out_sqnr(ranked[:4], "worst4")
    best = out_sqnr(ranked[::-1][:4], "best4")
    assert worst > s0 and worst > best, (s0, worst, best)


@pytest.mark.slow
def test_rknn_hybrid_float_layers_reach_the_build(tiny, calib, eval_x, report, tmp_path):
    """RKNN hybrid quantization with layers' input and output tensors in float16 changes the build:
    with every convolution in float16 (the Detect ones' outputs are graph outputs, named so) the
    output SQNR rises above all-int8: measured 35.35 -> 39.01 dB; every non-head convolution alone
    gave 37.50, the int8 head outputs weigh most.
    (A few layers alone need not help: on this model the worst 4 in float16 measured 35.35 ->
    34.30 dB, the same "float islands" effect seen on onnxruntime; that is why the search measures.)"""
    pytest.importorskip("rknn.api")
    from yoloport.analysis.compare import sqnr
    from yoloport.backends.registry import build, export_for, load_runner
    from yoloport.backends.torch_backend import TorchRunner
    from yoloport.quant.float_scope import FloatScope

    x = eval_x
    ref = np.concatenate([o.ravel() for o in TorchRunner(tiny)(x)])
    export = export_for("rknn", tiny, tmp_path / "model.fp32.onnx", HW, "raw")
    layers = report.names()
    got = []
    for k in (0, len(layers)):
        q = {"precision": "int8", "float_scope": FloatScope(layers=tuple(layers[:k]), dtype="float16")}
        art = build("rknn", tiny, export, tmp_path / f"k{k}", calib, q)
        runner = load_runner("rknn", art, tiny)
        try:
            got.append(sqnr(ref, np.concatenate([o.ravel() for o in runner(x)])))
        finally:
            runner.close()
    assert got[1] > got[0] + 3, got


# ----------------------------------------------------------------------------- mixed-precision loop


def test_k_schedule():
    assert mp.k_schedule(16, 60) == [0, 1, 2, 4, 8, 16]
    assert mp.k_schedule(10, 60) == [0, 1, 2, 4, 8, 10]
    assert mp.k_schedule(16, 5) == [0, 1, 2, 4, 5]
    assert mp.k_schedule(0, 5) == [0]
    with pytest.raises(YoloportError):
        mp.k_schedule(-1, 5)


def test_loop_stops_when_target_met():
    calls = []

    def evaluate(layers):
        calls.append(len(layers))
        return 0.40 - 0.01 * max(0, 4 - len(layers)) / 2, f"art{len(layers)}", {"exclude": layers}

    res = mp.mixed_precision_loop([f"l{i}" for i in range(20)], evaluate, ref_map=0.40, max_drop=0.5, max_float=16)
    # drops: K0 2.0, K1 1.5, K2 1.0, K4 0.0 -> stops at K=4
    assert calls == [0, 1, 2, 4]
    assert res["met"] and res["final"]["k"] == 4 and res["final"]["artifact"] == "art4"
    assert res["final"]["layers"] == ["l0", "l1", "l2", "l3"]
    assert [s["drop"] for s in res["steps"]] == [2.0, 1.5, 1.0, 0.0]


def test_loop_explicit_steps_and_backend_schemes():
    seen = []
    res = mp.mixed_precision_loop(list("abcdef"), lambda layers: (seen.append(len(layers)) or 0.1, None, {}),
                                    ref_map=0.4, max_drop=0.5, max_float=4, steps=[2, 1, 9])
    assert seen == [1, 2, 4] and not res["met"]
    assert mp.ranking_scheme("mlu-sim")[:2] == ("symmetric", False)
    assert mp.ranking_scheme("onnxruntime")[:2] == ("asymmetric", True)
    assert mp.ranking_scheme("rknn", {"quantized_method": "layer"})[:2] == ("asymmetric", False)
    assert mp.ranking_scheme(None)[:2] == ("asymmetric", True)


def test_loop_gives_up_at_max_float_with_best_step():
    res = mp.mixed_precision_loop(["a", "b", "c"], lambda layers: (0.30 + 0.001 * len(layers), None, {}),
                                    ref_map=0.40, max_drop=0.5, max_float=2)
    assert not res["met"] and [s["k"] for s in res["steps"]] == [0, 1, 2]
    assert res["final"]["k"] == 2
    with pytest.raises(YoloportError, match="max-drop"):
        mp.mixed_precision_loop(["a"], lambda layers: (0.3, None, {}), ref_map=0.4, max_drop=-1)


def test_greedy_drops_a_layer_that_does_not_help():
    """'b' ranks second but costs mAP when kept float: greedy tries it, puts it back, goes on to 'c'."""
    gain = {"a": 0.004, "b": -0.002, "c": 0.004, "d": 0.004}
    calls = []

    def evaluate(layers):
        calls.append(list(layers))
        return 0.39 + sum(gain[x] for x in layers), None, {}

    res = mp.greedy_precision_loop(list("abcd"), evaluate, ref_map=0.40, max_drop=0.5, max_float=4)
    assert calls == [[], ["a"], ["a", "b"], ["a", "c"]]
    assert res["met"] and res["strategy"] == "greedy"
    assert res["final"]["layers"] == ["a", "c"] and res["final"]["drop"] == pytest.approx(0.2)
    assert [s["kept"] for s in res["steps"]] == [None, True, False, True]
    # not met: stops after max_tries candidates, final is the best measured
    res = mp.greedy_precision_loop(list("abcd"), evaluate, ref_map=0.45, max_drop=0.5, max_float=4, max_tries=2)
    assert not res["met"] and len(res["steps"]) == 3 and res["final"]["layers"] == ["a"]
    with pytest.raises(YoloportError, match="max-tries"):
        mp.greedy_precision_loop(["a"], evaluate, ref_map=0.4, max_tries=-1)
    # a lazy ranking is computed only when the all-int8 build misses the target
    asked = []
    ranking = lambda: asked.append(1) or list("abcd")  # noqa: E731
    assert mp.greedy_precision_loop(ranking, evaluate, ref_map=0.392, max_drop=0.5)["met"] and not asked
    assert mp.greedy_precision_loop(ranking, evaluate, ref_map=0.40, max_drop=0.5)["met"] and asked == [1]


def test_gain_beats_noise_only_when_the_whole_interval_is_above_zero():
    """Restoring half the images' detections is a gain beyond noise; restoring two images of 40 (+1.5
    points) is not: neither is drawn in about 13% of resamples, so a 90% one-sided bound cannot clear 0."""
    from test_bootstrap import emptied, good_stats

    good = good_stats(40, seed=3)
    holds, gain = mp.gain_beats_noise(emptied(good, 0.5), good, confidence=0.8)
    assert holds and gain["gain"] > 0 and gain["low"] > 0 and gain["confidence"] == 0.8
    holds, gain = mp.gain_beats_noise(emptied(good, 0.5), emptied(good, 0.45), confidence=0.8)
    assert gain["gain"] > 0 and not holds and gain["low"] <= 0 < gain["high"]


def test_greedy_keeps_only_gains_beyond_noise_when_asked():
    """'a' restores 20 of 40 images (a real gain), 'b' two more (+1.5 points, inside the noise): any
    rise keeps both; the noise-aware rule keeps 'a' only and records each gain's interval."""
    from test_bootstrap import emptied, good_stats
    from yoloport.analysis.bootstrap import map_of

    good = good_stats(40, seed=3)
    restored = {"a": 20, "b": 2, "c": 0}

    def evaluate(layers):
        stats = emptied(good, 1.0 - sum(restored[x] for x in layers) / 40)
        return map_of(stats)[1], None, {}, stats

    ref = map_of(good)[1]
    plain = mp.greedy_precision_loop(list("abc"), evaluate, ref_map=ref, max_drop=0.0, max_float=3)
    aware = mp.greedy_precision_loop(list("abc"), evaluate, ref_map=ref, max_drop=0.0, max_float=3, keep_confidence=0.8)
    assert plain["final"]["layers"] == ["a", "b"]
    assert aware["final"]["layers"] == ["a"]
    assert [s["kept"] for s in aware["steps"]] == [None, True, False, False]
    assert aware["steps"][1]["gain_ci"]["low"] > 0 and aware["steps"][2]["gain_ci"]["low"] <= 0
    assert aware["steps"][3]["gain_ci"] is None  # 'c' did not raise mAP: no interval needed
    with pytest.raises(YoloportError, match="keep-confidence"):
        mp.greedy_precision_loop(list("abc"), evaluate, ref_map=ref, keep_confidence=1.5)
    with pytest.raises(YoloportError, match="per-image"):
        mp.greedy_precision_loop(list("abc"), lambda layers: evaluate(layers)[:3], ref_map=ref, max_drop=0.0,
                                 keep_confidence=0.8)


def test_detection_features_weigh_objects_and_small_boxes():
    """The ranking's error: nothing where the float model sees no object, relative to box size."""
    ref = np.zeros((1, 3, 7))
    ref[0, :, :4] = [[100, 100, 10, 10], [100, 100, 200, 200], [50, 50, 10, 10]]
    ref[0, :, 4] = [1.0, 1.0, 0.0]  # the third anchor is background
    ref[0, :, 5:] = 0.5

    def err(anchor, dx):
        test = ref.copy()
        test[0, anchor, 0] += dx
        r, t = ranking._detection_features(ref, test)
        return float(np.sum((r - t) ** 2))

    assert err(2, 5.0) == 0.0  # background: does not count
    assert err(0, 2.0) == pytest.approx(400 * err(1, 2.0))  # 2 px on a 10 px box vs a 200 px box: 20^2
    assert err(0, 2.0) == pytest.approx(0.04)


def test_output_quantization_only_changes_the_detect_rows(tiny, calib, eval_x, report):
    """onnxruntime/RKNN round the head's outputs: the Detect convs get worse, nothing else moves."""
    with_out = ranking.layer_sensitivity(tiny, calib, images=[eval_x], quant_outputs=True)
    assert with_out.quant_outputs and not report.quant_outputs
    plain = {r.name: r.sqnr_db for r in report.layers}
    for r in with_out.layers:
        if r.name.startswith(f"{detect_layer(tiny)}.m."):
            assert r.sqnr_db < plain[r.name]
        else:
            assert r.sqnr_db == plain[r.name], r.name
    assert mp.ranking_scheme("onnxruntime")[2] and mp.ranking_scheme("rknn")[2]
    assert not mp.ranking_scheme("openvino")[2] and not mp.ranking_scheme("mlu-sim")[2]


def test_search_on_mlu_sim_with_fake_validator(tiny, calib, report, tmp_path, monkeypatch):
    """Real mlu-sim builds, validator replaced: mAP rises with the layers kept float; stops at K=2."""
    seen = []

    def fake_validate(runner, data, img_hw, batch_size=8, names=None, image_stats=False):
        kept = sum(1 for c in runner.qconvs if c.keep_float)
        seen.append(kept)
        return {"mAP50_95": 0.50 - 0.006 * max(0, 2 - kept), "image_stats": None}

    monkeypatch.setattr(mp, "validate_runner", fake_validate)
    res = mp.search_mixed_precision("mlu-sim", tiny, report.names(), calib, "unused.yaml", HW, tmp_path / "mp",
                                      max_drop=0.5, max_float=8, ref_map=0.50, qconfig={"head_fp32": "tail"},
                                      keep_confidence=None)
    assert seen == [0, 1, 2] and res["met"] and res["final"]["k"] == 2
    assert res["final"]["layers"] == report.names()[:2]
    from yoloport.backends.base import read_sidecar

    side = read_sidecar(res["final"]["artifact"])
    assert set(side["mlu_sim"]["float_convs"]) == set(report.names()[:2])
    assert "K=2" in mp.format_mixed(res) and "met" in mp.format_mixed(res)


def test_search_refuses_a_reference_that_scores_no_more_than_the_gate(tiny, calib, report, tmp_path, monkeypatch):
    """A reference of 0.3 points on the selection set meets a 0.5-point gate with every layer int8, and
    with nothing found: the search says so instead of reporting K=0 as met; nothing is built."""
    built = []
    monkeypatch.setattr(mp, "validate_runner", lambda *a, **k: built.append(1) or {"mAP50_95": 0.0, "image_stats": None})
    with pytest.raises(YoloportError, match=r"selection set, no more than --max-drop 0.5.*no search can be judged"):
        mp.search_mixed_precision("mlu-sim", tiny, report.names(), calib, "unused.yaml", HW, tmp_path / "mp",
                                  max_drop=0.5, max_float=8, ref_map=0.003, qconfig={"head_fp32": "tail"})
    assert not built and not (tmp_path / "mp" / "k0").exists()


# ----------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory, tiny):
    from yoloport.models import save_model

    return save_model(tiny, tmp_path_factory.mktemp("w") / "tiny.safetensors")


def test_cli_ranking_only(tiny_ckpt, calib_dir, tmp_path, capsys):
    out = tmp_path / "s"
    rc = main(["sensitivity", "--weights", str(tiny_ckpt), "--backend", "onnxruntime", "--calib", str(calib_dir),
               "--calib-n", "2", "--eval-n", "1", "--img-size", "64", "64", "--top", "3", "--ort-debug", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "SQNR dB" in text and "/model." in text and "ORT acc dB" in text
    doc = json.loads((out / "sensitivity.json").read_text())
    assert len(doc["ranking"]["layers"]) == 60 and "mixed_precision" not in doc
    assert doc["protocol"]["calibration"]["n_images"] == 2 and doc["protocol"]["selection"]["source"] is None
    assert doc["ranking"]["nodes"]["model.0.conv"] == "/model.0/conv/Conv"
    assert all(math.isfinite(r["ort_sqnr_db"]) for r in doc["ranking"]["layers"])
    # the folder is not empty now: refused without --overwrite
    rc = main(["sensitivity", "--weights", str(tiny_ckpt), "--calib", str(calib_dir), "--img-size", "64", "64", "--out", str(out)])
    assert rc == 2


def test_cli_mixed_precision_search_end_to_end(tiny_ckpt, tmp_path, capsys):
    """Ranking, then the greedy search on real mlu-sim builds validated on a labelled synthetic set;
    ``--max-drop 0``: it stops at the first build that meets it, else tries ``--max-tries`` layers and says so. Calibrated on
    plain rectangles (not the model's shapes) so that int8 costs mAP: with shape images the all-int8
    build measured 0.99 points above fp32 on these 4 images and the search had nothing to do; with the fine-tuned
    default model (issue 15) and 2 selection images (issue 11's split) it measured 1.55 points above fp32 even when
    calibrated on one rectangle: 12 images (6 to decide on) make int8 cost mAP."""
    from conftest import write_box_images
    from yoloport.data.synth import make_synthetic_dataset

    calib_dir = write_box_images(tmp_path / "boxes", 3, (200, 240), boxes=1, box_wh=(40, 30))

    data = make_synthetic_dataset(tmp_path / "synth", {"val": 12}, (128, 96), seed=2, split="val", workers=1)
    out = tmp_path / "s"
    rc = main(["sensitivity", "--weights", str(tiny_ckpt), "--backend", "mlu-sim", "--calib", str(calib_dir),
               "--calib-n", "2", "--eval-n", "1", "--img-size", "128", "96", "--data", str(data), "--max-drop", "0",
               "--max-tries", "2", "--head-fp32", "tail", "--out", str(out)])  # the Detect convs are candidates too
    assert rc == 0
    text = capsys.readouterr().out
    assert "(greedy)" in text and "tried" in text
    doc = json.loads((out / "sensitivity.json").read_text())
    mp = doc["mixed_precision"]
    assert mp["strategy"] == "greedy" and mp["backend"] == "mlu-sim"
    assert mp["keep_confidence"] == 0.8 and "rises beyond noise (80% bootstrap interval above 0)" in text
    ranked = [r["name"] for r in doc["ranking"]["layers"]]
    steps = mp["steps"]
    assert steps[0]["k"] == 0 and steps[0]["kept"] is None, steps
    # Whether a float layer brings int8 back to fp32 on these 4 images depends on the model: the first default
    # model never got there in 2 tries; the fine-tuned one (issue 15) measured all-int8 0.53 points below fp32
    # and 0.13 above it with model.24.m.1 in float, so the search stops at k=1. Either way the search stops at
    # the first step that meets --max-drop and otherwise tries --max-tries layers.
    if mp["met"]:
        assert steps[-1]["drop"] <= 0 and all(st["drop"] > 0 for st in steps[:-1]) and len(steps) <= 3, steps
    else:
        assert len(steps) == 3 and all(st["drop"] > 0 for st in steps), steps
    assert len(steps) > 1 and steps[1]["layers"] and steps[1]["layers"][-1] == ranked[0], steps
    assert all(isinstance(s["kept"], bool) for s in steps[1:])
    assert all(Path(s["artifact"]).is_file() for s in steps)
    # issue 11: the search decided on half of --data's images, the final build is reported on the other half
    proto = doc["protocol"]
    assert proto["selection"]["n_images"] == 6 and proto["reporting"]["n_images"] == 6
    assert proto["selection"]["fingerprint"] != proto["reporting"]["fingerprint"]
    rep = mp["reporting"]
    assert rep["n_images"] == 6 and rep["drop_ci"]["low"] <= rep["drop_ci"]["high"]
    assert rep["drop_ci"]["drop"] == pytest.approx((rep["reference_mAP50_95"] - rep["mAP50_95"]) * 100, abs=1e-9)
    assert "split by content hash (6 to select, 6 to report)" in text and "reporting set (6 images)" in text


@pytest.mark.parametrize("extra, message", [
    ([], "--calib"),
    (["--calib", "CALIB", "--max-drop", "0.5"], "--max-drop needs --data"),
    (["--calib", "CALIB", "--backend", "tensorrt"], "unknown backend"),
    (["--calib", "CALIB", "--data", "missing.yaml", "--backend", "ort"], "no such file"),
    (["--calib", "CALIB", "--data", "DATA"], "needs --backend"),
    (["--calib", "CALIB", "--calib-n", "0"], "at least 1"),
    (["--calib", "CALIB", "--max-float", "-1"], "max-float"),
    (["--calib", "CALIB", "--max-tries", "-1"], "max-tries"),
    (["--calib", "CALIB", "--keep-confidence", "1.5"], "keep-confidence"),
])
def test_cli_bad_input_one_line_exit_2(tiny_ckpt, calib_dir, tmp_path, capsys, extra, message):
    data = tmp_path / "d.yaml"
    data.write_text("path: .\nval: images\nnames: [a, b, c, d, e, f]\n")
    extra = [str(calib_dir) if a == "CALIB" else str(data) if a == "DATA" else a for a in extra]
    rc = main(["sensitivity", "--weights", str(tiny_ckpt), "--out", str(tmp_path / "o"), *extra])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err
