"""yolov5-face against upstream on the fixture checkpoint and WIDER FACE images (reference.json)."""
from __future__ import annotations

import json
from functools import partial

import cv2
import numpy as np
import pytest

from conftest import fixture_path
from yoloport.errors import YoloportError

pytestmark = pytest.mark.fixtures  # every test here reads the face fixtures


@pytest.fixture(scope="module")
def face_ref():
    return json.loads(fixture_path("face/reference.json").read_text())


@pytest.fixture(scope="module")
def face_model():
    from yoloport.models import load_model

    return load_model(fixture_path("face/weights/yolov5n-0.5.pt"))


@pytest.fixture(scope="module")
def face_runner(face_model):
    from yoloport.backends.torch_backend import TorchRunner

    return TorchRunner(face_model)


def test_checkpoint_imports_safely_with_its_keypoint_head(face_model, face_ref):
    w = face_ref["weights"]
    assert face_model.source["param_count"] == w["params_unfused"] == 447_456
    assert sum(p.numel() for p in face_model.parameters()) == 447_456
    assert face_model.detect.nkpt == 5 and face_model.names == w["names"]
    assert face_model.stride.tolist() == w["stride"]
    assert face_model.detect.anchors_px().tolist() == w["anchors_px"]
    assert face_model.yaml["nkpt"] == 5 and face_model.source["family"] == "yolov5-face"


def test_face_checkpoint_naming_a_callable_is_refused(tmp_path):
    """The face import is the restricted unpickler: a pickle calling os.system never runs."""
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > /dev/null",))

    bad = tmp_path / "face.pt"
    import torch

    torch.save({"model": Evil()}, bad)
    from yoloport.models import load_model

    with pytest.raises(YoloportError, match="system"):
        load_model(bad)


def test_safetensors_round_trip_keeps_landmarks(face_model, tmp_path):
    import torch

    from yoloport.io.checkpoint import read_checkpoint
    from yoloport.models import load_model, save_model

    path = save_model(face_model, tmp_path / "face.safetensors")
    _, meta = read_checkpoint(path)
    assert meta["nkpt"] == 5
    again = load_model(path)
    assert again.detect.nkpt == 5
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        np.testing.assert_array_equal(face_model(x)[0].numpy(), again(x)[0].numpy())


def _detect(runner, rel):
    from yoloport.engine.face import face_input
    from yoloport.engine.predict import detect_image

    im = cv2.imread(str(fixture_path(f"face/{rel}")))
    return detect_image(runner, im, (640, 640), 0.25, 0.5, prepare=partial(face_input, img_size=640, pre_resize=True))


def _check_against(det, ref_dets, input_hw):
    assert list(det.input_hw) == list(input_hw)
    assert len(det) == len(ref_dets)
    ref_xyxy = np.array([d["xyxy"] for d in ref_dets])
    ref_conf = np.array([d["conf"] for d in ref_dets])
    ref_lmk = np.array([d["landmarks"] for d in ref_dets]).reshape(-1, 5, 2)
    assert det.landmarks.shape == (len(det), 5, 2)
    assert np.abs(det.xyxy - ref_xyxy).max() <= 0.5
    assert np.abs(det.landmarks - ref_lmk).max() <= 0.5
    assert np.abs(det.conf - ref_conf).max() <= 1e-3


def test_detections_match_upstream_detect_face(face_runner, face_ref):
    images = face_ref["detections_detect_face_84bc943"]["images"]
    assert images
    for img in images:
        det = _detect(face_runner, img["image"])
        _check_against(det, img["detections_unrounded"], img["network_input_hw (letterbox auto, pad to x64, value 114)"])


def test_landmark_image_matches_upstream_and_its_labels(face_runner, face_ref):
    ref = face_ref["detections_landmark_image_detect_face_84bc943"]
    det = _detect(face_runner, ref["image"])
    rounded = ref["detections_rounded_as_upstream"]
    assert len(det) == len(rounded)
    assert np.abs(np.round(det.xyxy) - np.array([d["xyxy"] for d in rounded])).max() <= 1
    gt = np.array(ref["gt_landmarks_px"]).reshape(5, 2)
    err = np.linalg.norm(det.landmarks[0] - gt, axis=1).mean()
    assert err == pytest.approx(ref["mean_point_error_px_top_detection_vs_gt"], abs=0.5)


def test_wider_face_ap_matches_upstream(face_runner, face_ref):
    from yoloport.engine.widerface import evaluate_wider_folder

    res = evaluate_wider_folder(face_runner, fixture_path("face/widerface_val"))
    ref = face_ref["widerface_ap"]["halves"]["A"]
    assert res["predictions"] == ref["pred_boxes_written"]
    for k in ("easy", "medium", "hard"):
        assert abs(res["AP"][k] - ref["AP"][k]) <= 0.002, (k, res["AP"][k], ref["AP"][k])
    assert res["NME"] is None  # WIDER val has no landmark labels


def test_nme_from_fifteen_column_labels(face_runner):
    from yoloport.engine.widerface import landmark_nme, read_landmark_labels

    root = fixture_path("face/landmarks_train")
    img = next((root / "images").rglob("*.jpg"))
    label = root / "labels" / img.parent.name / f"{img.stem}.txt"
    det = _detect(face_runner, str(img.relative_to(root.parent)))
    xyxy, kpts = read_landmark_labels(label, det.orig_hw)
    nme = landmark_nme(det.xyxy, det.landmarks, xyxy, kpts)
    assert len(nme) == 1 and 0 < nme[0] < 0.05  # a few pixels on a ~180 px face


def test_face_label_with_wrong_number_of_values_is_one_clear_error(tmp_path):
    from yoloport.engine.widerface import read_landmark_labels

    p = tmp_path / "x.txt"
    p.write_text("0 0.5 0.5 0.1 0.1 0.2 0.2 0.3\n")
    with pytest.raises(YoloportError, match=r"x.txt:1: a face label has 15 values"):
        read_landmark_labels(p, (100, 100))


def test_val_task_face_with_a_detector_is_one_clear_message(capsys):
    from yoloport.cli import main

    data = fixture_path("face/widerface_val")
    rc = main(["val", "--task", "face", "--weights", "yolov5n", "--data", str(data)])
    err = capsys.readouterr().err
    assert rc != 0 and "needs a face model" in err and "Traceback" not in err


def test_face_model_given_to_detector_val_is_one_clear_message(capsys, tmp_path):
    from yoloport.cli import main

    weights = fixture_path("face/weights/yolov5n-0.5.pt")
    rc = main(["val", "--weights", str(weights), "--data", str(tmp_path / "none.yaml"), "--project", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc != 0 and "face model" in err and "--task face" in err and "Traceback" not in err


def test_api_predict_and_detect_command_carry_landmarks(face_model, face_ref, tmp_path, capsys):
    from yoloport.api import Model
    from yoloport.cli import main

    ref = face_ref["detections_detect_face_84bc943"]["images"][1]
    src = fixture_path(f"face/{ref['image']}")
    (r,) = Model(face_model).predict(str(src), img_size=640, conf=0.25, iou=0.5)
    _check_against(r, ref["detections_unrounded"], ref["network_input_hw (letterbox auto, pad to x64, value 114)"])

    out = tmp_path / "det"
    assert main(["detect", "--weights", str(fixture_path("face/weights/yolov5n-0.5.pt")), "--source", str(src),
                 "--iou-thres", "0.5", "--save-dir", str(out)]) == 0
    doc = json.loads((out / "detections.json").read_text())
    d0 = doc["images"][0]["detections"]
    assert len(d0) == len(ref["detections_unrounded"]) and len(d0[0]["landmarks"]) == 5
    line = (out / "labels" / f"{src.stem}.txt").read_text().split()
    assert len(line) == 6 + 10  # cls xc yc w h conf, then 5 normalised landmarks
    annotated = cv2.imread(str(out / src.name))
    assert annotated is not None and annotated.shape[:2] == tuple(doc["images"][0]["orig_hw"])


def test_task_face_on_a_detector_is_one_clear_message(capsys, tmp_path):
    from yoloport.cli import main

    src = next(fixture_path("face/landmarks_train/images").rglob("*.jpg"))
    rc = main(["detect", "--task", "face", "--weights", "yolov5n", "--source", str(src), "--save-dir", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert rc != 0 and "needs a face model" in err


def test_val_on_fifteen_column_labels_gives_map_and_nme(face_runner):
    from yoloport.engine.face_val import evaluate_face_labels

    res = evaluate_face_labels(face_runner, fixture_path("face/landmarks_train"))
    assert res["images"] == 1 and res["labels"] == 1
    assert res["mAP50"] > 0.9 and res["nme_faces"] == 1
    assert 0.005 < res["NME"] < 0.05
