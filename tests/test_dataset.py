"""Data YAML, label parsing, rectangular batches (synthetic files only)."""
from pathlib import Path

import cv2
import numpy as np
import pytest

from yoloport.data.dataset import (
    ValDataset,
    img2label_path,
    list_images,
    load_data_yaml,
    load_image,
    read_labels,
    rect_batch_shapes,
)
from yoloport.errors import YoloportError
from yoloport.ops.boxes import scale_boxes, xywhn2xyxy


def make_dataset(root: Path, sizes_wh, labels=None, split="val"):
    """Write grey images of the given sizes and optional label text per image; return the image dir."""
    img_dir, lb_dir = root / "images" / split, root / "labels" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    lb_dir.mkdir(parents=True, exist_ok=True)
    for i, (w, h) in enumerate(sizes_wh):
        cv2.imwrite(str(img_dir / f"im{i:02d}.png"), np.full((h, w, 3), 100, np.uint8))
        if labels is not None and labels[i] is not None:
            (lb_dir / f"im{i:02d}.txt").write_text(labels[i])
    return img_dir


def write_yaml(root: Path, text: str) -> Path:
    p = root / "data.yaml"
    p.write_text(text)
    return p


# ------------------------------------------------------------------------------------- data YAML
def test_load_data_yaml_relative_and_names(tmp_path):
    make_dataset(tmp_path / "ds", [(64, 48)])
    (tmp_path / "ds" / "list.txt").write_text("./images/val/im00.png\n")
    cfg = load_data_yaml(write_yaml(tmp_path, "path: ds\ntrain: list.txt\nval: [images/val]\nnames: {0: cat, 1: dog}\n"))
    assert cfg.names == ["cat", "dog"] and cfg.nc == 2
    assert cfg.root == (tmp_path / "ds").resolve()
    assert cfg.split("val") == [cfg.root / "images" / "val"]
    assert list_images(cfg.split("train")) == [cfg.root / "images" / "val" / "im00.png"]
    with pytest.raises(YoloportError, match="no 'test' split"):
        cfg.split("test")


@pytest.mark.parametrize(
    "text, msg",
    [
        ("path: .\nval: nowhere\nnames: [a]\n", "does not exist"),
        ("path: .\nval: images/val\n", "names"),
        ("path: .\nval: images/val\nnc: 3\nnames: [a, b]\n", "nc is 3"),
        ("path: .\nnames: [a]\n", "no 'train', 'val' or 'test'"),
        ("- just\n- a list\n", "expected a mapping"),
        ("path: [unclosed\n", "not valid YAML"),
        ("path: .\nval: images/val\nnames: {0: a, 2: b}\n", "without gaps"),
    ],
)
def test_bad_data_yaml(tmp_path, text, msg):
    make_dataset(tmp_path, [(32, 32)])
    with pytest.raises(YoloportError, match=msg):
        load_data_yaml(write_yaml(tmp_path, text))


def test_missing_yaml(tmp_path):
    with pytest.raises(YoloportError, match="not found"):
        load_data_yaml(tmp_path / "nope.yaml")


def test_empty_split(tmp_path):
    (tmp_path / "images" / "val").mkdir(parents=True)
    with pytest.raises(YoloportError, match="no images"):
        list_images(tmp_path / "images" / "val")


def test_img2label_path():
    assert img2label_path("/d/images/train/a.b.jpg") == Path("/d/labels/train/a.b.txt")
    assert img2label_path("/images/x/images/y/z.png") == Path("/images/x/labels/y/z.txt")


def test_list_images_txt_missing(tmp_path):
    make_dataset(tmp_path, [(32, 32), (32, 32)])
    lst = tmp_path / "l.txt"
    lst.write_text("./images/val/im01.png\nimages/val/im00.png\n./images/val/gone.jpg\nnotes.md\n")
    missing = []
    files = list_images(lst, missing)
    assert [f.name for f in files] == ["im00.png", "im01.png"]
    assert missing == [str(tmp_path / "images/val/gone.jpg")]


# ------------------------------------------------------------------------------------- labels
def test_read_labels_problems(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text(
        "0 0.5 0.5 0.2 0.2\n"  # 1 ok
        "1 0.5 0.5 0.2\n"  # 2 columns
        "x 0.5 0.5 0.2 0.2\n"  # 3 non-numeric
        "7 0.5 0.5 0.2 0.2\n"  # 4 class out of range
        "1 1.2 0.5 0.2 0.2\n"  # 5 outside [0, 1]
        "1 0.5 0.5 0 0.2\n"  # 6 zero size
        "\n"  # 7 blank: ignored
        "0 0.5 0.5 0.2 0.2\n"  # 8 duplicate of 1
        "2 0.1 0.1 0.3 0.1 0.3 0.4\n"  # 9 polygon -> box
        "1.5 0.5 0.5 0.2 0.2\n"  # 10 non-integer class
    )
    lb, problems = read_labels(f, nc=3)
    assert lb.dtype == np.float32 and lb.shape == (2, 5)
    assert lb[0].tolist() == pytest.approx([0, 0.5, 0.5, 0.2, 0.2])
    assert lb[1].tolist() == pytest.approx([2, 0.2, 0.25, 0.2, 0.3])
    lines = sorted(int(p.split(":")[1]) for p in problems)
    assert lines == [2, 3, 4, 5, 6, 8, 10]
    by_line = {int(p.split(":")[1]): p for p in problems}
    assert by_line[2].startswith(f"{f}:2: ") and "columns" in by_line[2]
    assert "non-numeric" in by_line[3] and "'x'" in by_line[3]
    assert "0..2" in by_line[4]
    assert "outside [0, 1]" in by_line[5]
    assert "size" in by_line[6]
    assert "duplicate of line 1" in by_line[8]


def test_read_labels_empty_and_missing(tmp_path):
    f = tmp_path / "e.txt"
    f.write_text("\n")
    lb, problems = read_labels(f, 80)
    assert lb.shape == (0, 5) and problems == []
    with pytest.raises(YoloportError, match="not found"):
        read_labels(tmp_path / "none.txt", 80)


# ------------------------------------------------------------------------------------- batches
def test_rect_batch_shapes():
    # (w, h): 2 landscape 2:1, 2 portrait 1:2, 2 square -> sorted by h/w: landscape, square, portrait
    shapes = np.array([[100, 200], [200, 100], [50, 50], [400, 200], [60, 120], [80, 80]])
    order, bi, bs = rect_batch_shapes(shapes, batch_size=2, img_size=640, stride=32, pad=0.5)
    ar = shapes[order, 1] / shapes[order, 0]
    assert (np.diff(ar) >= 0).all()
    assert bi.tolist() == [0, 0, 1, 1, 2, 2]
    # landscape batch: [h, w] = [0.5, 1] -> ceil(0.5*640/32 + .5)*32 = 352, ceil(20.5)*32 = 672
    assert bs.tolist() == [[352, 672], [672, 672], [672, 352]]


def test_load_image_v70_rounding(tmp_path):
    p = tmp_path / "i.png"
    cv2.imwrite(str(p), np.zeros((313, 500, 3), np.uint8))
    im, hw0, hw = load_image(p, 640)
    assert hw0 == (313, 500) and hw == (400, 640)  # int(313 * 1.28) = 400 (v7.0 truncates)


def test_val_dataset_rect_background_and_mapping(tmp_path):
    sizes = [(640, 480), (300, 600), (500, 313), (640, 640), (200, 100)]
    labels = ["0 0.5 0.5 0.5 0.5\n", "1 0.25 0.5 0.5 0.2\n", None, "", "0 0.1 0.1 0.2 0.2\n7 0.5 0.5 0.1 0.1\n"]
    img_dir = make_dataset(tmp_path, sizes, labels)
    (img_dir / "broken.jpg").write_bytes(b"not an image")
    ds = ValDataset(img_dir, nc=2, img_size=640, batch_size=2)
    rep = ds.report
    assert rep.n_images == 5 and rep.n_skipped == 1
    assert rep.n_missing_labels == 1 and rep.n_empty_labels == 1 and rep.n_background == 2
    assert rep.n_labels == 3 and rep.n_bad_lines == 1
    assert any("im04.txt:2:" in w for w in rep.warnings) and any("broken.jpg" in w for w in rep.warnings)
    assert len(ds) == 3
    seen = 0
    for b in ds:
        assert b.images.dtype == np.float32 and b.images.shape[1] == 3
        assert 0 <= b.images.min() and b.images.max() <= 1
        h, w = b.images.shape[2:]
        assert h % 32 == 0 and w % 32 == 0
        for k, (path, (orig_hw, ratio_pad)) in enumerate(zip(b.paths, b.shapes)):
            i = int(Path(path).stem[2:])
            assert orig_hw == (sizes[i][1], sizes[i][0])
            tg = b.targets[b.targets[:, 0] == k]
            lb, _ = read_labels(img2label_path(path), 2) if img2label_path(path).exists() else (np.zeros((0, 5)), [])
            assert len(tg) == len(lb)
            if len(lb):  # targets map back to the original-image boxes
                back = scale_boxes((h, w), tg[:, 2:6].copy(), orig_hw, ratio_pad)
                want = xywhn2xyxy(lb[:, 1:], orig_hw[1], orig_hw[0])
                assert np.abs(back - want).max() < 1.5
            seen += 1
    assert seen == 5


def test_val_dataset_strict(tmp_path):
    img_dir = make_dataset(tmp_path, [(64, 64)], ["0 0.5 0.5 0.5\n"])
    with pytest.raises(YoloportError, match=r"im00.txt:1: expected 5 columns"):
        ValDataset(img_dir, nc=1, strict=True)


@pytest.mark.parametrize("fixed", [None, (416, 736)])
def test_val_dataset_square_and_fixed(tmp_path, fixed):
    img_dir = make_dataset(tmp_path, [(640, 480), (300, 600), (100, 50)], ["0 0.5 0.5 0.5 0.5\n"] * 3)
    ds = ValDataset(img_dir, nc=1, img_size=320, batch_size=2, rect=False, fixed_shape_hw=fixed)
    want = fixed or (320, 320)
    names = []
    for b in ds:
        assert b.images.shape[2:] == want
        names += [Path(p).name for p in b.paths]
        for k, (orig_hw, ratio_pad) in enumerate(b.shapes):
            back = scale_boxes(want, b.targets[b.targets[:, 0] == k, 2:6].copy(), orig_hw, ratio_pad)
            ref = xywhn2xyxy(np.array([[0.5, 0.5, 0.5, 0.5]]), orig_hw[1], orig_hw[0])
            assert np.abs(back - ref).max() < 1.5
    assert names == ["im00.png", "im01.png", "im02.png"]  # file order when not rect


def test_fixed_shape_must_be_stride_multiple(tmp_path):
    img_dir = make_dataset(tmp_path, [(64, 64)])
    with pytest.raises(YoloportError, match="stride"):
        ValDataset(img_dir, nc=1, fixed_shape_hw=(400, 736))
