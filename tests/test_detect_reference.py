"""Detections of the official checkpoints match what Ultralytics' own code outputs (reference.json)."""
import cv2
import numpy as np
import pytest

from yoloport.backends.torch_backend import TorchRunner
from yoloport.engine.predict import detect_image
from conftest import fixture_path

pytestmark = pytest.mark.fixtures


@pytest.mark.parametrize("weights", ["yolov5s-v5.0", "yolov5n-v6.1"])
@pytest.mark.parametrize("image", ["bus.jpg", "zidane.jpg"])
def test_matches_ultralytics(weights, image, reference, request):
    model = request.getfixturevalue("v5s_model" if weights.startswith("yolov5s") else "v5n_model")
    ref = reference["detect"][weights][image]
    im = cv2.imread(str(fixture_path(f"images/{image}")))
    det = detect_image(TorchRunner(model), im, (ref["img_size"],) * 2, ref["conf_thres"], ref["iou_thres"])
    assert list(det.input_hw) == ref["letterbox_input_hw"]
    rb = np.array([d["xyxy"] for d in ref["detections"]])
    assert len(det) == len(rb)
    assert det.cls.tolist() == [d["cls"] for d in ref["detections"]]
    assert np.abs(det.xyxy - rb).max() < 0.5
    assert np.abs(det.conf - np.array([d["conf"] for d in ref["detections"]])).max() < 1e-3


def test_parameter_counts(v5s_model, v5n_model):
    assert sum(p.numel() for p in v5s_model.parameters()) == 7_276_605
    assert sum(p.numel() for p in v5n_model.parameters()) == 1_872_157
    assert len(list(v5s_model.modules())) == 283 and len(list(v5n_model.modules())) == 270
