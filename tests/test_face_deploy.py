"""Landmark heads through export, lint, int8 and compare (issue 12 item 6).

Every head mode of a keypoint head (raw, raw with the sigmoid in the graph, split, decoded, end2end)
against the torch model's own decode; the ONNX graphs against the eager head; the lint rule that
keeps landmarks and probabilities out of one int8 tensor; the conventions a face head takes by
default; compare's landmark displacement; the face port's refusals. A random-init face model needs
no fixture; the fixture checkpoint's tests skip without it.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from yoloport.analysis.compare import compare_detections, keypoint_displacement, landmark_summary
from yoloport.deploy.conventions import default_for_head, head_default_convention, resolve_export_choice
from yoloport.deploy.export import prepare_model
from yoloport.errors import YoloportError
from yoloport.nn.heads import decode_raw_torch
from yoloport.nn.model import DetectionModel
from yoloport.ops.decode import decode_raw
from yoloport.ops.nms import non_max_suppression
from yoloport.ops.nms_torch import torch_non_max_suppression
from yoloport.ops.postprocess import HeadSpec, decode_outputs, end2end_to_detections, postprocess, split_outputs_in_order

from conftest import fixture_path, with_signal

HW = (128, 160)
MODES = [("raw", False), ("raw", True), ("split", False), ("decoded", False)]


def face_model(seed: int = 0):
    """A random-init yolov5n-0.5-face whose outputs depend on the image (``with_signal``) and whose
    scores spread over 0..1 (head biases), so detections have no exact score ties."""
    torch.manual_seed(seed)
    m = with_signal(DetectionModel("yolov5n-0.5-face"), seed).eval()
    with torch.no_grad():
        for conv in m.detect.m:
            conv.bias.normal_(0, 1.5)
    return m


def by_score(det: np.ndarray) -> np.ndarray:
    """Detection rows best first (ties by x1): NMS outputs compared row for row."""
    return det[np.lexsort((det[:, 0], -det[:, 4]))]


def mode_outputs(model, mode: str, sigmoid: bool, x: torch.Tensor, hw=HW) -> list[np.ndarray]:
    m, _ = prepare_model(model, mode, hw, sigmoid, fuse=False)
    with torch.no_grad():
        out = m(x)
    return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]


@pytest.fixture(scope="module")
def model():
    return face_model()


@pytest.fixture(scope="module")
def image():
    return torch.rand(1, 3, *HW, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def reference(model, image):
    """The torch model's own eval decode ``[1, N, 5+nc+2K]`` (keypoints last) and its detections."""
    with torch.no_grad():
        dec, _ = model(image)
    dec = dec.numpy()
    return dec, non_max_suppression(dec, 0.5, 0.45, nc=1)[0]


@pytest.mark.parametrize("mode, sigmoid", MODES)
def test_each_head_mode_decodes_to_the_torch_models_predictions(model, image, reference, mode, sigmoid):
    out = mode_outputs(model, mode, sigmoid, image)
    head = HeadSpec.from_model(model, mode, sigmoid_applied=sigmoid)
    assert head.nkpt == 5
    dec = decode_outputs(out, head)
    assert dec.shape == reference[0].shape == (1, 630 * 2, 16)
    np.testing.assert_allclose(dec, reference[0], atol=2e-3, rtol=1e-5)  # pixels; float32 order of additions
    det = postprocess(out, head, 0.5, 0.45)[0]
    assert det.shape[1] == 16 and len(det) == len(reference[1]) > 5
    np.testing.assert_allclose(by_score(det), by_score(reference[1]), atol=2e-3)


def test_split_mode_gives_landmarks_their_own_output(model, image):
    xy, wh, conf, kpts = mode_outputs(model, "split", False, image)
    assert xy.shape[-1] == wh.shape[-1] == 2 and conf.shape[-1] == 2 and kpts.shape[-1] == 10
    assert conf.min() >= 0 and conf.max() <= 1  # probabilities only: no landmark shares their tensor
    assert np.abs(kpts).max() > 1.5  # pixels, unbounded


def test_raw_sigmoid_leaves_keypoint_channels_unsquashed(model, image):
    plain = mode_outputs(model, "raw", False, image)
    squashed = mode_outputs(model, "raw", True, image)
    for p, s in zip(plain, squashed):
        p = p.reshape(1, 3, 16, -1)
        s = s.reshape(1, 3, 16, -1)
        np.testing.assert_array_equal(s[:, :, 5:15], p[:, :, 5:15])
        np.testing.assert_allclose(s[:, :, :5], 1 / (1 + np.exp(-p[:, :, :5])), atol=1e-6)


def test_end2end_rows_carry_the_selected_boxes_landmarks(model, image, reference):
    out = mode_outputs(model, "end2end", False, image)
    assert out[1].shape == (1, 300, 17)
    head = HeadSpec.from_model(model, "end2end")
    det = postprocess(out, head, 0.5, 0.45)[0]
    assert len(det) == len(reference[1])
    np.testing.assert_allclose(by_score(det), by_score(reference[1]), atol=2e-3)


def test_torch_twins_carry_landmarks(model, image, reference):
    raw = mode_outputs(model, "raw", False, image)
    head = HeadSpec.from_model(model)
    ours = decode_raw_torch([torch.from_numpy(r) for r in raw], head.anchors_px, head.strides, nkpt=5).numpy()
    np.testing.assert_allclose(ours, decode_raw(raw, np.asarray(head.anchors_px), head.strides, nkpt=5), atol=1e-3)
    det = torch_non_max_suppression(torch.from_numpy(ours), 0.5, 0.45, nc=1)[0].numpy()
    assert det.shape[1] == 16
    np.testing.assert_allclose(by_score(det), by_score(reference[1]), atol=2e-3)


def test_split_outputs_told_apart_by_order_or_width():
    xy, wh, conf, k = (np.full((1, 4, w), v, np.float32) for w, v in ((2, 1), (2, 2), (2, 3), (10, 4)))
    assert [o[0, 0, 0] for o in split_outputs_in_order([xy, wh, conf, k], nc=1, nkpt=5)] == [1, 2, 3, 4]
    conf3 = np.zeros((1, 4, 4), np.float32)
    parts = split_outputs_in_order([k, conf3, xy, wh], nc=3, nkpt=5)  # widths unique: any order
    assert [p.shape[-1] for p in parts] == [2, 2, 4, 10]
    with pytest.raises(ValueError, match="unexpected shapes"):
        split_outputs_in_order([k, conf, xy, wh], nc=1, nkpt=5)  # nc=1 conf is 2 wide: order needed


def test_mlu_detection_output_packs_landmarks_after_the_box():
    from yoloport.backends.mlu_sim import pack_detection_output

    det = np.array([[1, 2, 3, 4, 0.9, 0, *range(10, 20)]], np.float32)
    count, rows = pack_detection_output([det, det[:0]], 5, nkpt=5)
    assert rows.shape == (2, 5, 17) and count.ravel().tolist() == [1, 0]
    back = end2end_to_detections([count, rows], 2, nkpt=5)
    np.testing.assert_array_equal(back[0], det)
    assert back[1].shape == (0, 16)


# ----------------------------------------------------------------------------- ONNX and lint


@pytest.fixture(scope="module")
def exports(model, tmp_path_factory):
    from yoloport.deploy.export import export_model

    d = tmp_path_factory.mktemp("face-onnx")
    return {(mode, sig): export_model(model, d / f"{mode}-{int(sig)}.onnx", HW, mode=mode, sigmoid=sig)
            for mode, sig in MODES + [("end2end", False)]}


@pytest.mark.parametrize("mode, sigmoid", MODES)
def test_onnx_graphs_match_the_eager_head(exports, model, image, mode, sigmoid):
    ort = pytest.importorskip("onnxruntime")
    res = exports[(mode, sigmoid)]
    sess = ort.InferenceSession(str(res.path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"images": image.numpy()})
    want = mode_outputs(model, mode, sigmoid, image)
    assert len(got) == len(want) == {"raw": 3, "split": 4, "decoded": 1}[mode]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=2e-3, rtol=1e-4)
    if mode == "split":
        assert [o.name for o in sess.get_outputs()] == ["xy", "wh", "conf", "kpts"]
    assert res.head.nkpt == 5


def test_end2end_graph_declares_rows_with_landmarks(exports):
    assert exports[("end2end", False)].output_shapes["detections"] == [1, 300, 17]


def test_lint_flags_landmarks_sharing_a_tensor_with_probabilities(exports):
    from yoloport.deploy.lint import lint_model

    for key in (("raw", True), ("decoded", False)):  # sigmoid outside the keypoints / one decoded tensor
        rep = lint_model(str(exports[key].path), "rknn")
        found = [f for f in rep.findings if f.rule_id == "landmark-scale"]
        assert found and found[0].severity == "error" and "5 landmarks" in found[0].message, key
        assert "landmark-scale" in lint_model(str(exports[key].path), "onnxruntime").rule_ids("info")
    for key in (("raw", False), ("split", False)):  # landmarks in their own tensors
        assert "landmark-scale" not in lint_model(str(exports[key].path), "rknn").rule_ids(), key


def test_lint_rule_on_a_hand_built_graph():
    """Structural: Concat(Sigmoid(conv), conv) fires, Concat(conv, conv) does not (no metadata needed)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from yoloport.deploy.lint import lint_model

    w = numpy_helper.from_array(np.ones((2, 3, 1, 1), np.float32), "w")

    def graph(squash: bool):
        nodes = [helper.make_node("Conv", ["x", "w"], ["a"]), helper.make_node("Conv", ["x", "w"], ["b"])]
        first = "a"
        if squash:
            nodes.append(helper.make_node("Sigmoid", ["a"], ["p"]))
            first = "p"
        nodes.append(helper.make_node("Concat", [first, "b"], ["y"], axis=1))
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])], [w])
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])

    bad, good = lint_model(graph(True), "rknn"), lint_model(graph(False), "rknn")
    assert "landmark-scale" in bad.rule_ids("error")
    assert "landmark-scale" not in good.rule_ids()
    onnx.checker.check_model(graph(True))


# ----------------------------------------------------------------------------- conventions


def test_default_conventions_for_a_face_head():
    assert default_for_head("rknn_model_zoo", 5) == "rknn_face"
    assert default_for_head("rknn_model_zoo", 0) == "rknn_model_zoo"
    assert default_for_head("ultralytics", 5) == "ultralytics"
    assert head_default_convention("rknn", 5) == "rknn_face"
    assert resolve_export_choice(default="rknn_model_zoo", nkpt=5) == ("raw", False, "rknn_face")
    # a convention the user names is kept (lint then says what it costs)
    assert resolve_export_choice(convention="rknn_model_zoo", nkpt=5) == ("raw", True, "rknn_model_zoo")


def test_export_for_rknn_takes_the_face_convention(model, tmp_path):
    pytest.importorskip("onnx")
    from yoloport.backends.registry import export_for

    res = export_for("rknn", model, tmp_path / "m.onnx", HW, mode=None)
    assert (res.head.mode, res.head.sigmoid_applied, res.head.convention) == ("raw", False, "rknn_face")


# ----------------------------------------------------------------------------- compare


def test_keypoint_displacement_of_matched_detections():
    ref = np.array([[0, 0, 10, 10, 0.9, 0, *[5.0] * 10], [20, 20, 30, 30, 0.8, 0, *[25.0] * 10]], np.float32)
    test = ref.copy()
    test[0, 6::2] += 3.0
    test[0, 7::2] += 4.0  # every landmark of the first face moved 5 px
    test = test[::-1].copy()  # another order: matching, not position, pairs them
    res = compare_detections(ref, test)
    assert res["matched"] == 2
    assert res["landmark_px_max"] == pytest.approx(5.0)
    assert res["landmark_px_mean"] == pytest.approx(2.5)
    s = landmark_summary([res])
    assert s["landmark_pairs"] == 2 and s["landmark_px_max"] == pytest.approx(5.0)
    assert keypoint_displacement(ref[:, :6], test[:, :6], [(0, 1, 1.0)]).shape == (1, 0)
    plain = compare_detections(ref[:, :6], test[:, :6])
    assert plain["landmark_px_mean"] is None and plain["matched"] == 2


# ----------------------------------------------------------------------------- the face port's refusals


def test_face_port_refuses_calibration_on_reported_images(tmp_path):
    from yoloport.analysis.port_face import check_disjoint

    a = tmp_path / "a.jpg"
    a.write_bytes(b"one")
    b = tmp_path / "copy.jpg"
    b.write_bytes(b"one")
    c = tmp_path / "c.jpg"
    c.write_bytes(b"two")
    with pytest.raises(YoloportError, match="also reported on"):
        check_disjoint([b], [a])  # same bytes under another name
    check_disjoint([c], [a])


def test_port_task_checks_fit_the_head(model):
    from types import SimpleNamespace

    from yoloport.commands.port import check_task

    s = SimpleNamespace(task="detect", data="d", calib="c")
    with pytest.raises(YoloportError, match="face model"):
        check_task(s, model)
    with pytest.raises(YoloportError, match="needs a face model"):
        check_task(SimpleNamespace(task="face", data="d", calib="c"), DetectionModel("yolov5n", nc=2))
    assert check_task(SimpleNamespace(task=None, data="d", calib="c"), model) == "face"
    assert check_task(SimpleNamespace(task=None, data=None, calib=None), model) == "face"  # synthetic faces


def test_face_port_with_no_data_runs_the_embedded_face_model_on_synthetic_faces(capsys, tmp_path):
    """``port --task face`` on a fresh machine: the embedded face model, reported on new synthetic faces,
    calibrated on other synthetic faces (disjoint: the port refuses shared images)."""
    import json

    from yoloport.cli import main

    rc = main(["port", "--task", "face", "--targets", "onnxruntime", "--calib-n", "4", "--val-n", "6",
               "--project", str(tmp_path), "--name", "face"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "reporting on a synthetic face set" in out and "calibrating on synthetic faces" in out
    report = json.loads((tmp_path / "face" / "report.json").read_text())
    ref = report["reference"]
    assert report["task"] == "face" and report["model"]["nkpt"] == 5
    assert ref["val"]["mAP50"] > 0.5 and ref["val"]["NME"] is not None, ref  # the embedded face model finds its faces
    assert [t["name"] for t in report["targets"]] == ["onnxruntime-int8"] and not report["failed"]


@pytest.mark.fixtures
def test_face_checkpoint_given_to_the_detector_port_is_one_clear_message(capsys, tmp_path):
    from yoloport.cli import main

    pt = fixture_path("face/weights/yolov5n-0.5.pt")
    rc = main(["port", "--weights", str(pt), "--task", "detect", "--project", str(tmp_path), "--no-bench"])
    err = capsys.readouterr().err
    assert rc != 0 and "face model" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- the fixture checkpoint


@pytest.fixture(scope="module")
def face_ckpt():
    from yoloport.models import load_model

    return load_model(fixture_path("face/weights/yolov5n-0.5.pt")).float().eval()


@pytest.fixture(scope="module")
def wider_image():
    import cv2

    from yoloport.data.letterbox import preprocess

    img = sorted(fixture_path("face/widerface_val/images").rglob("*.jpg"))[0]
    x, _ = preprocess(cv2.imread(str(img)), (320, 320), auto=False)
    return torch.from_numpy(x[None])


@pytest.mark.fixtures
@pytest.mark.parametrize("mode, sigmoid", MODES + [("end2end", False)])
def test_fixture_checkpoint_every_mode_gives_the_torch_detections(face_ckpt, wider_image, mode, sigmoid):
    with torch.no_grad():
        dec, _ = face_ckpt(wider_image)
    ref = non_max_suppression(dec.numpy(), 0.25, 0.45, nc=1)[0]
    assert len(ref) >= 5  # real faces in a real image
    out = mode_outputs(face_ckpt, mode, sigmoid, wider_image, hw=(320, 320))
    det = postprocess(out, HeadSpec.from_model(face_ckpt, mode, sigmoid_applied=sigmoid), 0.25, 0.45)[0]
    assert det.shape == ref.shape
    np.testing.assert_allclose(by_score(det), by_score(ref), atol=1e-2)  # boxes and landmarks in pixels


def test_a_face_gate_is_not_judged_against_a_reference_that_finds_no_face():
    """The face port's gate uses the detector's rule: a reference whose best WIDER setting (or mAP@0.5)
    scores no more than --max-drop points cannot anchor it (a face model that finds nothing would pass)."""
    from yoloport.analysis.port_face import face_drop, face_reference_not_judgeable

    found = {"AP": {"easy": 0.80, "medium": 0.70, "hard": 0.40}}
    blind = {"AP": {"easy": 0.0, "medium": 0.004, "hard": 0.0}}
    assert face_reference_not_judgeable(found, 1.0) is None
    why = face_reference_not_judgeable(blind, 1.0)
    assert why and "WIDER FACE AP (its best setting) 0.40 points" in why
    assert face_reference_not_judgeable({"AP": None, "mAP50": 0.0}, 1.0).startswith("the fp32 reference scores face mAP@0.5")
    assert face_reference_not_judgeable({"AP": None, "mAP50": None}, 1.0)  # nothing measured is nothing to judge by
    assert face_reference_not_judgeable(blind, 100.0) is None  # no gate asked for
    assert face_drop(blind, blind)["worst"] == 0.0  # what the gate passed before
