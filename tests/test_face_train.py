"""Training with landmarks (issue 12 item 5): face labels, augmentation that moves landmarks, the
yolov5-face landmark loss, the synthetic face set, ``train --task face`` and the embedded face model."""
from __future__ import annotations

import math
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from yoloport.data.augment import FACE_FLIP_INDEX, flip, random_perspective, warp_points
from yoloport.data.face_labels import read_face_labels, read_face_labels_strict
from yoloport.errors import YoloportError

KPTS = [0.40, 0.40, 0.60, 0.40, 0.50, 0.50, 0.42, 0.60, 0.58, 0.60]
FACE_LINE = "0 0.5 0.5 0.4 0.5 " + " ".join(f"{v:g}" for v in KPTS)


# ------------------------------------------------------------------------------------ face labels
def test_face_labels_are_read_as_faces_with_missing_landmarks_kept(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text(FACE_LINE + "\n" + "0 0.2 0.2 0.1 0.1 " + " ".join(["-1"] * 10) + "\n")
    lb, problems = read_face_labels(f, nc=1, nkpt=5)
    assert problems == [] and lb.shape == (2, 15)
    np.testing.assert_allclose(lb[0, 1:5], [0.5, 0.5, 0.4, 0.5])  # the box as given, not a polygon's box
    np.testing.assert_allclose(lb[0, 5:], KPTS, atol=1e-6)
    assert (lb[1, 5:] == -1).all()


@pytest.mark.parametrize("line, reason", [
    ("0 0.5 0.5 0.4 0.5 " + " ".join(["0.5"] * 9), "a face label has 15 values"),
    ("0 0.5 0.5 0.4 0.5 " + " ".join(["0.5"] * 11), "got 16"),
    ("0 0.5 0.5 0.4 0.5 0.4 0.4 0.6 0.4 1.2 0.5 0.42 0.6 0.58 0.6", "landmark 3 (1.2, 0.5) is outside the image"),
    ("0 0.5 0.5 0.4 0.5 0.4 0.4 0.6 0.4 0.5 0.5 -1 0.6 0.58 0.6", "landmark 4 has one coordinate -1"),
    ("0 0.5 0.5 0.4 0.5 -0.1 0.4 0.6 0.4 0.5 0.5 0.42 0.6 0.58 0.6", "landmark 1 (-0.1, 0.4) is outside"),
    ("0 1.5 0.5 0.4 0.5 " + " ".join(f"{v:g}" for v in KPTS), "box outside the image"),
    ("1 0.5 0.5 0.4 0.5 " + " ".join(f"{v:g}" for v in KPTS), "class 1 is not in 0..0"),
])
def test_bad_face_label_lines_are_refused_naming_file_and_line(tmp_path, line, reason):
    f = tmp_path / "b.txt"
    f.write_text(FACE_LINE + "\n" + line + "\n")
    lb, problems = read_face_labels(f, nc=1, nkpt=5)
    assert len(lb) == 1 and len(problems) == 1  # only the bad line is left out
    assert problems[0].startswith(f"{f}:2: ") and reason in problems[0]
    with pytest.raises(YoloportError, match=f"b.txt:2: .*{re.escape(reason)}"):
        read_face_labels_strict(f, nc=1, nkpt=5)


def test_training_split_reads_faces_by_the_heads_landmark_count(tmp_path):
    """15 columns are a polygon to the detector reader; with nkpt they are a face (never guessed)."""
    from yoloport.data.dataset import ValDataset

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.jpg"), np.zeros((64, 64, 3), np.uint8))
    (tmp_path / "labels" / "a.txt").write_text(FACE_LINE + "\n")
    faces = ValDataset(tmp_path / "images", 1, img_size=64, rect=False, nkpt=5, warn=None)
    np.testing.assert_allclose(faces.labels[0][0, 1:5], [0.5, 0.5, 0.4, 0.5])
    assert faces.labels[0].shape == (1, 15)
    boxes = ValDataset(tmp_path / "images", 1, img_size=64, rect=False, warn=None)
    assert boxes.labels[0].shape == (1, 5) and not np.allclose(boxes.labels[0][0, 1:5], [0.5, 0.5, 0.4, 0.5])


# ------------------------------------------------------------------------------------ augmentation
def _face_rows_px():
    """One face (cls, xyxy, 5 landmarks) in pixels, the 4th landmark missing."""
    return np.array([[0, 20, 10, 60, 70, 30, 30, 50, 30, 40, 45, -1, -1, 48, 60]], np.float32)


def test_horizontal_flip_mirrors_landmarks_and_swaps_left_and_right():
    lb = np.array([[0, 0.5, 0.5, 0.4, 0.5] + KPTS], np.float32)
    lb[0, 11:13] = -1  # left mouth corner missing
    im = np.zeros((8, 8, 3), np.uint8)
    _, out = flip(im, lb.copy(), np.random.default_rng(0), fliplr=1.0, flipud=0.0)
    # left eye <- mirrored right eye, right eye <- mirrored left eye, nose mirrored in place,
    # left mouth <- mirrored right mouth, right mouth <- the missing left mouth (still missing)
    expect = [1 - 0.60, 0.40, 1 - 0.40, 0.40, 1 - 0.50, 0.50, 1 - 0.58, 0.60, -1, -1]
    np.testing.assert_allclose(out[0, 5:], expect, atol=1e-6)
    np.testing.assert_allclose(out[0, 1], 0.5, atol=1e-6)
    assert FACE_FLIP_INDEX == (1, 0, 2, 4, 3)


def test_vertical_flip_mirrors_y_and_keeps_the_order():
    lb = np.array([[0, 0.5, 0.3, 0.4, 0.5] + KPTS], np.float32)
    _, out = flip(np.zeros((8, 8, 3), np.uint8), lb.copy(), np.random.default_rng(0), fliplr=0.0, flipud=1.0)
    np.testing.assert_allclose(out[0, 5::2], KPTS[0::2], atol=1e-6)
    np.testing.assert_allclose(out[0, 6::2], [1 - v for v in KPTS[1::2]], atol=1e-6)


def test_warp_points_with_a_known_transform_and_points_leaving_the_image():
    M = np.array([[2.0, 0, 10], [0, 0.5, -5], [0, 0, 1]])
    pts = np.array([[[10, 20], [50, 40], [-1, -1], [5, 100]]], np.float64)
    out = warp_points(pts, M, (60, 100), perspective=False)
    np.testing.assert_allclose(out[0, 0], [30, 5])
    assert (out[0, 1] == -1).all()  # x = 110 > 100: left the image
    assert (out[0, 2] == -1).all()  # missing stays missing
    np.testing.assert_allclose(out[0, 3], [20, 45])


def test_random_perspective_translation_moves_landmarks_with_the_boxes():
    """A pure shift (the mosaic's border crop, no random warp): landmarks move like the box corners."""
    im = np.zeros((80, 80, 3), np.uint8)
    lb = _face_rows_px()
    _, out = random_perspective(im, lb.copy(), np.random.default_rng(0), degrees=0, translate=0, scale=0,
                                shear=0, perspective=0, border=(-10, -15))
    # output 60 x 50: the input centre goes to the output centre, a shift of (-15, -10)
    np.testing.assert_allclose(out[0, 1:5], [5, 0, 45, 60])  # y1 = 0 clipped
    pts = out[0, 5:].reshape(5, 2)
    np.testing.assert_allclose(pts[[0, 1, 2, 4]], [[15, 20], [35, 20], [25, 35], [33, 50]])
    assert (pts[3] == -1).all()


def _dotted_face_dataset(root: Path, n: int = 4, size: int = 96) -> Path:
    """Images with one face each whose landmarks are drawn as coloured dots: eyes red, nose green,
    mouth corners blue (BGR). 15-column labels beside them."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir(parents=True)
    rng = np.random.default_rng(5)
    for i in range(n):
        im = np.full((size, size, 3), 128, np.uint8)
        cx, cy, w = rng.uniform(35, 60), rng.uniform(35, 60), rng.uniform(40, 55)
        pts = np.array([[cx - 0.25 * w, cy - 0.2 * w], [cx + 0.25 * w, cy - 0.2 * w], [cx, cy],
                        [cx - 0.2 * w, cy + 0.25 * w], [cx + 0.2 * w, cy + 0.25 * w]])
        colors = [(0, 0, 255), (0, 0, 255), (0, 255, 0), (255, 0, 0), (255, 0, 0)]
        for p, c in zip(pts, colors):
            cv2.circle(im, (int(p[0]), int(p[1])), 4, c, -1)
        px = pts.astype(int) + 0.5  # the centre of the dot's centre pixel
        cv2.imwrite(str(root / "images" / f"{i}.png"), im)
        box = [cx / size, cy / size, w / size, w / size]
        (root / "labels" / f"{i}.txt").write_text(
            "0 " + " ".join(f"{v:.6f}" for v in box) + " " + " ".join(f"{v:.6f}" for v in (px / size).ravel()) + "\n")
    return root / "images"


@pytest.mark.parametrize("mosaic", [1.0, 0.0])
def test_training_samples_keep_each_landmark_on_its_dot(tmp_path, mosaic):
    """Mosaic, letterbox, random affine (scale, translation) and horizontal flips: every landmark a
    sample carries lies on a dot of its kind, and after a flip the left eye is still the left one."""
    from yoloport.data.train_dataset import TrainDataset

    images = _dotted_face_dataset(tmp_path)
    hyp = {"hsv_h": 0, "hsv_s": 0, "hsv_v": 0, "degrees": 0, "translate": 0.1, "scale": 0.3, "shear": 0,
           "perspective": 0, "flipud": 0, "fliplr": 0.5, "mosaic": mosaic, "mixup": 0}
    ds = TrainDataset(images, 1, (96, 96), hyp, augment=True, nkpt=5, seed=1)
    want = {0: 0, 1: 0, 2: 1, 3: 2, 4: 2}  # landmark -> colour channel of its dot (RGB out: red = 0, blue = 2)
    checked = 0
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            img, lb, _ = ds[i]
            assert lb.shape[1] == 6 + 10
            rgb = img.numpy().transpose(1, 2, 0)
            h, w = rgb.shape[:2]
            for row in lb.numpy():
                pts = row[6:].reshape(5, 2)
                for k, (x, y) in enumerate(pts):
                    if x < 0:
                        continue
                    px = rgb[min(int(y * h), h - 1), min(int(x * w), w - 1)].astype(int)
                    assert px[want[k]] > 150 and px.sum() - px[want[k]] < 150, (epoch, i, k, px)
                    checked += 1
                if (pts[[0, 1], 0] >= 0).all():
                    assert pts[0, 0] < pts[1, 0]  # left eye left of the right eye, flipped or not
    assert checked > 40


# ------------------------------------------------------------------------------------ loss
def test_wing_loss_values():
    from yoloport.engine.loss import wing_loss

    d = torch.tensor([0.0, 1.0, 10.0, 20.0])
    c = 10 - 10 * math.log(1 + 10 / 2)
    expect = [0.0, 10 * math.log(1.5), 10 * math.log(6), 20 - c]
    np.testing.assert_allclose(wing_loss(d, torch.zeros(4)).numpy(), expect, rtol=1e-6)
    assert abs((10 - c) - 10 * math.log(6)) < 1e-9  # continuous at |d| = w


def _face_head():
    from yoloport.nn.model import DetectionModel

    torch.manual_seed(0)
    return DetectionModel("yolov5n-0.5-face", nc=1)


def test_landmark_targets_agree_with_how_the_head_decodes_them():
    """Raw landmark outputs set to the loss's targets (target / anchor) decode to the labelled
    landmarks in pixels, and give zero landmark loss; other outputs give a positive one."""
    from yoloport.engine.loss import build_targets, landmark_loss

    m = _face_head().eval()
    det = m.detect
    size = 128
    t = torch.tensor([[0, 0, 0.47, 0.53, 0.30, 0.35] + KPTS], dtype=torch.float32)
    shapes = [(size // int(s), size // int(s)) for s in det.stride]
    assigned = build_targets(shapes, t, det.anchors, anchor_t=4.0)
    n_checked = 0
    for i, asg in enumerate(assigned):
        if not len(asg.b):
            continue
        raw = torch.zeros(1, det.na, *shapes[i], det.no)
        raw_kpt = asg.tkpt / asg.anchors[:, None, :]
        raw[asg.b, asg.a, asg.gj, asg.gi, 5:15] = raw_kpt.reshape(len(asg.b), 10)
        pred = raw[asg.b, asg.a, asg.gj, asg.gi, 5:15].reshape(-1, 5, 2) * asg.anchors[:, None, :]
        assert landmark_loss(pred, asg.tkpt, asg.kpt_present).item() == pytest.approx(0.0, abs=1e-6)
        assert landmark_loss(pred + 0.3, asg.tkpt, asg.kpt_present).item() > 0.1
        dec = det.decode_level(raw, i).view(1, det.na, *shapes[i], det.no)
        for b, a, gj, gi in zip(asg.b, asg.a, asg.gj, asg.gi):
            kp = dec[b, a, gj, gi, -10:].reshape(5, 2)
            np.testing.assert_allclose(kp.detach().numpy(), np.array(KPTS).reshape(5, 2) * size, atol=1e-3)
            n_checked += 1
    assert n_checked >= 3  # own cell and neighbours on at least one level


def test_missing_landmarks_cost_nothing_and_detector_loss_is_unchanged():
    from yoloport.engine.loss import ComputeLoss

    m = _face_head().train()
    hyp = {"box": 0.05, "obj": 1.0, "cls": 0.5, "anchor_t": 4.0}
    x = torch.rand(1, 3, 128, 128)
    p = m(x)
    loss_fn = ComputeLoss(m, hyp)
    missing = torch.tensor([[0, 0, 0.5, 0.5, 0.3, 0.3] + [-1.0] * 10])
    present = torch.tensor([[0, 0, 0.5, 0.5, 0.3, 0.3] + KPTS])
    _, items_missing = loss_fn(p, missing)
    _, items_present = loss_fn(p, present)
    assert items_missing.shape == (4,) and items_missing[3] == 0
    assert items_present[3] > 0
    torch.testing.assert_close(items_missing[:3], items_present[:3])  # box, obj, cls do not see landmarks
    with pytest.raises(ValueError, match="16"):
        loss_fn(p, missing[:, :6])


def test_landmark_loss_drives_landmarks_toward_their_labels():
    """A few steps on one batch lower the landmark loss (the gradient reaches the landmark channels)."""
    from yoloport.engine.loss import ComputeLoss

    m = _face_head().train()
    loss_fn = ComputeLoss(m, {"box": 0.05, "obj": 1.0, "cls": 0.5, "anchor_t": 4.0, "landmark": 0.5})
    opt = torch.optim.Adam(m.parameters(), lr=2e-3)
    x = torch.rand(2, 3, 128, 128)
    t = torch.tensor([[0, 0, 0.5, 0.5, 0.3, 0.35] + KPTS, [1, 0, 0.3, 0.6, 0.2, 0.25] + KPTS], dtype=torch.float32)
    first = None
    for _ in range(12):
        loss, items = loss_fn(m(x), t)
        first = float(items[3]) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.isfinite(loss).all()
    assert float(items[3]) < 0.5 * first


# ------------------------------------------------------------------------------------ synthetic faces
def test_synthetic_faces_are_deterministic_and_their_labels_exact(tmp_path):
    from yoloport.data.synth_face import LANDMARKS_UNIT, face_geometry, make_face_dataset

    y1 = make_face_dataset(tmp_path / "a", {"train": 3, "val": 2}, (160, 128), seed=4)
    y2 = make_face_dataset(tmp_path / "b", {"train": 3, "val": 2}, (160, 128), seed=4)
    y3 = make_face_dataset(tmp_path / "c", {"train": 3}, (160, 128), seed=5)
    a = sorted((y1.parent / "train").rglob("*.*"))
    assert len(a) == 6
    for f in a:
        assert f.read_bytes() == (y2.parent / f.relative_to(y1.parent)).read_bytes()
    assert (y1.parent / "train/images/000000.jpg").read_bytes() != (y3.parent / "train/images/000000.jpg").read_bytes()
    n_faces = 0
    for lf in (y1.parent / "train" / "labels").glob("*.txt"):
        lb, problems = read_face_labels(lf, 1, 5)
        assert not problems
        for r in lb:
            pts = r[5:].reshape(5, 2)
            x1, x2 = r[1] - r[3] / 2, r[1] + r[3] / 2
            y1_, y2_ = r[2] - r[4] / 2, r[2] + r[4] / 2
            assert ((pts[:, 0] > x1) & (pts[:, 0] < x2) & (pts[:, 1] > y1_) & (pts[:, 1] < y2_)).all()
            n_faces += 1
    assert n_faces >= 3
    # the geometry: an upright face's landmarks are the unit layout scaled by the semi-axes
    box, pts = face_geometry(50, 60, 10, 20, 0.0)
    np.testing.assert_allclose(box, [40, 40, 60, 80])
    np.testing.assert_allclose(pts, LANDMARKS_UNIT * [10, 20] + [50, 60])
    box90, _ = face_geometry(50, 60, 10, 20, 90.0)
    np.testing.assert_allclose(box90, [30, 50, 70, 70], atol=1e-9)


def test_synthetic_eyes_are_drawn_where_their_landmarks_are(tmp_path):
    """The pupils are the darkest part of a face: the eye landmarks fall on darker pixels than the face's rim."""
    from yoloport.data.synth import image_rng
    from yoloport.data.synth_face import FaceOptions, render_face_image

    darker = total = 0
    for i in range(6):
        s = render_face_image((160, 160), image_rng(9, "t", i), FaceOptions(min_face=40, max_faces=2))
        gray = cv2.cvtColor(s.image, cv2.COLOR_BGR2GRAY).astype(float)
        for box, pts in zip(s.boxes, s.landmarks):
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            cheek = gray[int(cy), int(cx + 0.3 * (box[2] - box[0]) / 2)]
            for x, y in pts[:2]:
                total += 1
                darker += gray[int(y), int(x)] < cheek
    assert total >= 6 and darker / total > 0.8


def test_data_synth_task_face_cli(tmp_path, capsys):
    from yoloport.cli import main

    assert main(["data", "synth", "--task", "face", "--out", str(tmp_path / "f"), "--n", "4", "--img-size", "128"]) == 0
    out = capsys.readouterr().out
    assert "5 landmarks" in out and "val --task face" in out
    lb, problems = read_face_labels(next((tmp_path / "f" / "train" / "labels").glob("*.txt")), 1, 5)
    assert not problems and lb.shape[1] == 15
    assert main(["data", "synth", "--task", "face", "--out", str(tmp_path / "g"), "--n", "4", "--classes", "star"]) == 2
    assert "one class" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ training
def test_train_task_face_refuses_a_detector(tmp_path, capsys):
    from yoloport.cli import main
    from yoloport.data.synth_face import make_face_dataset

    data = make_face_dataset(tmp_path / "d", {"train": 2, "val": 1}, 64, seed=0)
    rc = main(["train", "--task", "face", "--data", str(data), "--cfg", "yolov5n", "--epochs", "1",
               "--img-size", "64", "--project", str(tmp_path / "runs"), "--workers", "0", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "landmark" in err and "Traceback" not in err


def test_one_short_face_epoch_from_a_face_config_reads_faces_and_logs_the_landmark_loss(tmp_path):
    """``train`` on a face config: the data are read as faces (no bad lines), the landmark loss is
    logged and finite, and the saved checkpoint keeps its landmark head."""
    from yoloport.data.synth_face import make_face_dataset
    from yoloport.engine.train import train

    data = make_face_dataset(tmp_path / "d", {"train": 6, "val": 2}, 96, seed=2)
    res = train({"data": str(data), "cfg": "yolov5n-0.5-face", "task": "face", "epochs": 1, "batch_size": 3,
                 "img_size": [96], "workers": 0, "project": str(tmp_path / "runs"), "progress": False,
                 "noplots": True, "device": "cpu", "warmup_min_iters": 1, "conf_thres": 0.25})
    row = res["history"][-1]
    assert math.isfinite(row["train/landmark_loss"]) and row["train/landmark_loss"] > 0
    assert res["dataset"]["labels"] > 0 and res["dataset"]["bad_label_lines"] == 0
    from yoloport.models import load_model

    assert load_model(res["last"]).detect.nkpt == 5


@pytest.mark.fixtures
def test_fine_tuning_the_fixture_checkpoint_does_not_collapse(tmp_path):
    """One short epoch (three optimiser steps) of the real yolov5n-0.5 face checkpoint on synthetic
    faces: the losses stay finite, and on unseen synthetic faces the fine-tuned model keeps at least
    half its box mAP@0.5 and its landmarks do not drift (NME within 1.5x of the checkpoint's)."""
    from conftest import fixture_path

    from yoloport.backends.torch_backend import TorchRunner
    from yoloport.data.synth_face import make_face_dataset
    from yoloport.engine.face_val import evaluate_face_labels
    from yoloport.engine.train import train
    from yoloport.models import load_model

    weights = fixture_path("face/weights/yolov5n-0.5.pt")
    data = make_face_dataset(tmp_path / "d", {"train": 12, "val": 4}, 160, seed=3)
    fresh = make_face_dataset(tmp_path / "e", {"val": 6}, 160, seed=99).parent / "val"
    before = evaluate_face_labels(TorchRunner(load_model(weights)), fresh, img_size=160)
    res = train({"data": str(data), "weights": str(weights), "task": "face", "epochs": 1, "batch_size": 4,
                 "img_size": [160], "workers": 0, "project": str(tmp_path / "runs"), "progress": False,
                 "noplots": True, "device": "cpu", "noautoanchor": True, "optimizer": "AdamW",
                 "hyp": {"lr0": 0.001, "warmup_epochs": 0}, "nbs": 4, "warmup_min_iters": 1, "conf_thres": 0.01})
    row = res["history"][-1]
    assert all(math.isfinite(row[k]) for k in ("train/box_loss", "train/obj_loss", "train/landmark_loss"))
    after = evaluate_face_labels(TorchRunner(load_model(res["last"])), fresh, img_size=160)
    assert before["mAP50"] > 0.05 and after["mAP50"] >= 0.5 * before["mAP50"]
    assert after["NME"] is not None and after["NME"] < 1.5 * before["NME"]


# ------------------------------------------------------------------------------------ the embedded face model
def test_embedded_face_model_is_small_and_says_how_it_was_made():
    import json

    from yoloport.config import PACKAGE_DIR
    from yoloport.models import load_model

    asset = PACKAGE_DIR / "assets" / "face.safetensors"
    assert asset.stat().st_size < 2e6
    info = json.loads(asset.with_suffix(".json").read_text())
    assert info["eval"]["eval_seed"] != info["train_seed"]
    m = load_model("face")
    assert m.detect.nkpt == 5 and list(m.names) == ["face"] and tuple(m.img_size) == (320, 320)


def test_detect_task_face_with_no_arguments_finds_the_sample_faces(tmp_path, capsys, monkeypatch):
    import json

    from yoloport.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["detect", "--task", "face"]) == 0
    doc = json.loads(next(tmp_path.glob("runs/detect/*/detections.json")).read_text())
    assert doc["names"] == ["face"] and [Path(im["image"]).name for im in doc["images"]] == ["faces0.jpg"]
    dets = doc["images"][0]["detections"]
    assert len(dets) >= 1 and all(len(d["landmarks"]) == 5 for d in dets)
    labels = next(tmp_path.glob("runs/detect/*/labels/*.txt")).read_text().splitlines()
    assert len(labels) == len(dets) and len(labels[0].split()) == 6 + 10  # cls, box, conf, 5 landmarks


def test_val_task_face_with_no_arguments_scores_a_fresh_synthetic_set(tmp_path, capsys, monkeypatch):
    import json

    from yoloport.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["val", "--task", "face"]) == 0
    out = capsys.readouterr().out
    assert "synthetic face set generated with seed" in out
    res = json.loads(next(tmp_path.glob("runs/val/*/val.json")).read_text())
    # the shipped model: mAP@0.5 0.98, NME 0.075 on this set (face.json: 0.979 / 0.076 on 100 other images)
    assert res["labels"] > 50 and res["mAP50"] > 0.8 and res["NME"] is not None and res["NME"] < 0.15


def test_val_task_face_reads_a_face_data_yaml_and_refuses_anything_else(tmp_path, capsys):
    from yoloport.cli import main
    from yoloport.data.synth_face import make_face_dataset

    data = make_face_dataset(tmp_path / "d", {"train": 1, "val": 3}, 160, seed=31)
    assert main(["val", "--task", "face", "--data", str(data), "--project", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "mAP@0.5" in out and "NME" in out
    (tmp_path / "x.txt").write_text("")
    rc = main(["val", "--task", "face", "--data", str(tmp_path / "x.txt"), "--project", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert rc == 2 and "not a folder" in err and "Traceback" not in err
