"""The synthetic dataset generator (yoloport.data.synth) and ``yoloport data synth``."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from yoloport.cli import main
from yoloport.data.synth import (
    SHAPE_CLASSES,
    image_rng,
    make_synthetic_dataset,
    read_synth_report,
    render_image,
)
from yoloport.errors import YoloportError


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _read_labels(path: Path) -> np.ndarray:
    rows = [line.split() for line in path.read_text().splitlines()]
    return np.array(rows, dtype=np.float64).reshape(-1, 5)


def test_same_seed_gives_identical_files(tmp_path):
    kw = dict(img_size_wh=(192, 160), seed=3)
    make_synthetic_dataset(tmp_path / "a", {"train": 6, "val": 2}, workers=1, **kw)
    make_synthetic_dataset(tmp_path / "b", {"train": 6, "val": 2}, workers=2, **kw)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    a.pop("data.yaml"), b.pop("data.yaml")  # holds the absolute path
    assert a.keys() == b.keys() and len(a) == 2 * 8 + 1
    assert a == b
    make_synthetic_dataset(tmp_path / "c", 6, seed=4, img_size_wh=(192, 160), workers=1)
    assert (tmp_path / "c/images/train/000000.jpg").read_bytes() != a["images/train/000000.jpg"]
    assert a["images/train/000000.jpg"] != a["images/val/000000.jpg"]  # splits are separate streams


def test_layout_yaml_and_label_format(tmp_path):
    yaml_path = make_synthetic_dataset(tmp_path / "ds", {"train": 8, "val": 2}, (160, 128), seed=1)
    data = yaml.safe_load(yaml_path.read_text())
    assert data == {"path": str((tmp_path / "ds").resolve()), "train": "images/train", "val": "images/val",
                    "nc": 6, "names": list(SHAPE_CLASSES)}
    n_boxes = 0
    for split, n in (("train", 8), ("val", 2)):
        ims = sorted((tmp_path / "ds/images" / split).glob("*.jpg"))
        assert len(ims) == n
        for im in ims:
            assert cv2.imread(str(im)).shape == (128, 160, 3)
            txt = (tmp_path / "ds/labels" / split / (im.stem + ".txt")).read_text()
            for line in txt.splitlines():
                parts = line.split(" ")
                assert len(parts) == 5 and parts[0].isdigit() and int(parts[0]) < 6
                assert all(len(p.split(".")[1]) == 6 for p in parts[1:])
            lab = _read_labels(tmp_path / "ds/labels" / split / (im.stem + ".txt"))
            xc, yc, w, h = lab[:, 1:].T
            assert np.all(w > 0) and np.all(h > 0)
            assert np.all(xc - w / 2 >= -1e-6) and np.all(xc + w / 2 <= 1 + 1e-6)
            assert np.all(yc - h / 2 >= -1e-6) and np.all(yc + h / 2 <= 1 + 1e-6)
            n_boxes += len(lab)
    assert n_boxes > 10
    report = read_synth_report(tmp_path / "ds")
    assert report["status"] == "complete" and report["counts"]["train"]["images"] == 8


def test_boxes_are_tight_around_visible_shape_pixels():
    hw = (160, 224)
    n_checked = 0
    for i in range(6):
        s = render_image(hw, image_rng(0, "train", i))
        assert s.image.shape == (*hw, 3) and s.image.dtype == np.uint8
        img = s.image.astype(np.float32)
        bg = s.owner < 0
        for k, ((x1, y1, x2, y2), color) in enumerate(zip(s.boxes.astype(int), s.colors.astype(np.float32))):
            mine = s.owner == k
            ys, xs = np.nonzero(mine)
            assert (x1, y1, x2, y2) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)  # tight, pixel edges
            assert 0 <= x1 < x2 <= hw[1] and 0 <= y1 < y2 <= hw[0]
            # the pixels of the object look like its colour, unlike the background around it
            box_bg = bg[y1:y2, x1:x2]
            d_shape = np.abs(img[mine] - color).mean()
            if len(xs) >= 30 and box_bg.sum() >= 30:
                d_bg = np.abs(img[y1:y2, x1:x2][box_bg] - color).mean()
                assert d_shape < 40 and d_shape < d_bg, (i, k, d_shape, d_bg)
                n_checked += 1
    assert n_checked >= 10


def test_all_classes_appear_and_sizes_vary(tmp_path):
    make_synthetic_dataset(tmp_path / "ds", 20, (256, 256), seed=7)
    labs = np.concatenate([_read_labels(p) for p in (tmp_path / "ds/labels/train").glob("*.txt")])
    counts = np.bincount(labs[:, 0].astype(int), minlength=6)
    assert counts.min() >= 3, counts
    side = np.maximum(labs[:, 3], labs[:, 4]) * 256
    assert side.min() < 16 and side.max() > 64  # small and large objects
    assert (read_synth_report(tmp_path / "ds")["counts"]["train"]["per_class"]
            == dict(zip(SHAPE_CLASSES, counts.tolist())))


def test_class_subset_and_png(tmp_path):
    yaml_path = make_synthetic_dataset(tmp_path / "ds", 4, (96, 64), classes=["star", "ring"], image_format="png")
    data = yaml.safe_load(yaml_path.read_text())
    assert data["nc"] == 2 and data["names"] == ["star", "ring"]
    assert data["val"] == "images/train"  # no val split: falls back to the first split
    assert len(list((tmp_path / "ds/images/train").glob("*.png"))) == 4
    labs = np.concatenate([_read_labels(p) for p in (tmp_path / "ds/labels/train").glob("*.txt")])
    assert set(labs[:, 0].astype(int)) <= {0, 1}


def test_rectangular_size(tmp_path):
    make_synthetic_dataset(tmp_path / "ds", 2, (736, 416))
    for p in (tmp_path / "ds/images/train").glob("*.jpg"):
        assert cv2.imread(str(p)).shape == (416, 736, 3)


@pytest.mark.parametrize("kw", [dict(n_images=0), dict(n_images=-2), dict(img_size_wh=(0, 64)),
                                dict(img_size_wh=(64, 64, 3)), dict(img_size_wh=(64.5, 64)),
                                dict(classes=["hexagon"]), dict(classes=[]), dict(image_format="bmp"),
                                dict(n_images={"../x": 2})])
def test_bad_arguments(tmp_path, kw):
    args = dict(n_images=2, img_size_wh=(64, 64)) | kw
    with pytest.raises(YoloportError):
        make_synthetic_dataset(tmp_path / "ds", **args)
    assert not (tmp_path / "ds").exists()


def test_refuses_user_directory_and_replaces_own(tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    with pytest.raises(YoloportError, match="not empty"):
        make_synthetic_dataset(user, 2, (64, 64))
    assert [p.name for p in user.iterdir()] == ["notes.txt"]
    make_synthetic_dataset(user, 2, (64, 64), overwrite=True)
    assert (user / "notes.txt").read_text() == "mine"

    own = tmp_path / "own"
    make_synthetic_dataset(own, {"train": 5, "test": 2}, (64, 64))
    (own / "extra.txt").write_text("keep")
    make_synthetic_dataset(own, 3, (64, 64))  # a previous synthetic dataset: replaced, no overwrite needed
    assert sorted(p.name for p in (own / "images/train").iterdir()) == [f"{i:06d}.jpg" for i in range(3)]
    assert len(list((own / "labels/train").iterdir())) == 3
    assert not (own / "images/test").exists()
    assert (own / "extra.txt").read_text() == "keep"
    assert json.loads((own / "synth.json").read_text())["splits"] == {"train": 3}


def test_cli(tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(["data", "synth", "--out", str(out), "--n", "5", "--img-size", "128", "96", "--seed", "2"]) == 0
    printed = capsys.readouterr().out
    assert str(out / "data.yaml") in printed and "train" in printed and "val" in printed
    assert len(list((out / "images/train").iterdir())) == 5 and len(list((out / "images/val").iterdir())) == 1
    assert cv2.imread(str(out / "images/val/000000.jpg")).shape == (96, 128, 3)

    assert main(["data", "synth", "--out", str(tmp_path / "bad"), "--n", "0"]) != 0
    err = capsys.readouterr().err
    assert "--n" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()

    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "a.jpg").write_bytes(b"x")
    assert main(["data", "synth", "--out", str(tmp_path / "user"), "--n", "2"]) != 0
    assert "Traceback" not in capsys.readouterr().err
    assert main(["data"]) != 0
