"""Calibration sets (yoloport.data.calibration): sources, sampling, the one preprocessing path."""
from __future__ import annotations


import cv2
import numpy as np
import pytest

from yoloport.data.calibration import (
    CalibrationSet,
    CalibrationWarning,
    load_calibration,
    read_list_file,
    write_list_file,
    write_preprocessed,
)
from yoloport.data.letterbox import preprocess
from yoloport.errors import YoloportError

HW = (96, 128)


def _write_images(d, n, prefix="im", shape=(80, 120)):
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(prefix) + n)
    paths = []
    for i in range(n):
        im = np.full((*shape, 3), 114, np.uint8)
        x, y = (int(v) for v in rng.integers(0, 60, 2))
        cv2.rectangle(im, (x, y), (x + 30, y + 20), tuple(int(c) for c in rng.integers(0, 255, 3)), -1)
        p = d / f"{prefix}{i}.jpg"
        cv2.imwrite(str(p), im)
        paths.append(p)
    return paths


@pytest.fixture
def img_dir(tmp_path):
    d = tmp_path / "imgs"
    _write_images(d, 5)
    _write_images(d / "sub", 2, prefix="deep")
    return d


def _data_yaml(tmp_path):
    root = tmp_path / "ds"
    _write_images(root / "images" / "train", 4, prefix="tr")
    _write_images(root / "images" / "val", 2, prefix="va")
    y = root / "data.yaml"
    y.write_text("path: .\ntrain: images/train\nval: images/val\nnames: [a, b, c]\n")
    return y


def test_dir_source_recursive_and_preprocess_is_the_one_path(img_dir):
    cs = load_calibration(img_dir, n=10, img_size_hw=HW, warn=lambda m: None)
    assert len(cs) == 7 and all(p.exists() for p in cs.paths)
    arrays = cs.arrays()
    assert all(a.shape == (1, 3, *HW) and a.dtype == np.float32 for a in arrays)
    expect, _ = preprocess(cv2.imread(str(cs.paths[0])), HW, auto=False)
    np.testing.assert_array_equal(arrays[0][0], expect)


def test_sampling_is_seeded_and_sized(img_dir):
    a = load_calibration(img_dir, n=3, img_size_hw=HW, seed=1)
    b = load_calibration(img_dir, n=3, img_size_hw=HW, seed=1)
    assert a.paths == b.paths and len(a) == 3
    first = load_calibration(img_dir, n=3, img_size_hw=HW, seed=None)
    assert first.paths == sorted(first.paths)[:3]


def test_fewer_images_than_asked_warns_and_goes_on(img_dir):
    with pytest.warns(CalibrationWarning, match="only 7 usable"):
        cs = load_calibration(img_dir, n=100, img_size_hw=HW)
    assert len(cs) == 7 and cs.to_dict()["warnings"]


def test_unreadable_images_are_skipped_and_counted(img_dir):
    (img_dir / "broken.jpg").write_bytes(b"not a jpeg")
    msgs = []
    cs = load_calibration(img_dir, n=100, img_size_hw=HW, warn=msgs.append)
    assert len(cs) == 7 and cs.to_dict()["skipped_unreadable"] == 1
    assert any("unreadable" in m for m in msgs)


def test_yaml_source_default_train_and_named_split(tmp_path):
    y = _data_yaml(tmp_path)
    tr = load_calibration(y, n=10, img_size_hw=HW, warn=lambda m: None)
    assert len(tr) == 4 and all(p.name.startswith("tr") for p in tr.paths)
    va = load_calibration(f"{y}:val", n=10, img_size_hw=HW, warn=lambda m: None)
    assert len(va) == 2 and all(p.name.startswith("va") for p in va.paths)
    with pytest.raises(YoloportError, match="test"):
        load_calibration(f"{y}:test", n=1, img_size_hw=HW)


def test_list_file_relative_to_itself_and_round_trip(tmp_path, img_dir):
    paths = sorted(img_dir.glob("*.jpg"))[:3]
    lst = write_list_file(paths, tmp_path / "lists" / "dataset.txt", relative=True)
    assert not lst.read_text().splitlines()[0].startswith("/")
    found, missing = read_list_file(lst)
    assert [p.resolve() for p in found] == [p.resolve() for p in paths] and not missing
    cs = load_calibration(lst, n=3, img_size_hw=HW)
    assert len(cs) == 3
    absolute = write_list_file(cs.paths, tmp_path / "abs.txt")
    assert absolute.read_text().splitlines()[0].startswith("/")


def test_list_file_missing_entries_are_reported(tmp_path, img_dir):
    lst = tmp_path / "dataset.txt"
    lst.write_text(f"{sorted(img_dir.glob('*.jpg'))[0]}\nnope/missing.jpg\n\n# comment\n")
    msgs = []
    cs = load_calibration(lst, n=1, img_size_hw=HW, warn=msgs.append)
    assert len(cs) == 1 and any("do not exist" in m for m in msgs)


def test_glob_source(img_dir):
    cs = load_calibration(str(img_dir / "**" / "deep*.jpg"), n=2, img_size_hw=HW)
    assert len(cs) == 2 and all(p.name.startswith("deep") for p in cs.paths)


@pytest.mark.parametrize("make", ["empty_dir", "missing", "no_images_glob", "all_broken"])
def test_bad_sources_are_user_errors(tmp_path, make):
    if make == "empty_dir":
        src = tmp_path / "empty"
        src.mkdir()
    elif make == "missing":
        src = tmp_path / "does_not_exist"
    elif make == "no_images_glob":
        src = str(tmp_path / "*.png")
    else:
        src = tmp_path / "broken"
        src.mkdir()
        (src / "a.jpg").write_bytes(b"x")
    with pytest.raises(YoloportError):
        load_calibration(src, n=3, img_size_hw=HW, warn=lambda m: None)


def test_bad_arguments(img_dir):
    with pytest.raises(YoloportError):
        load_calibration(img_dir, n=0, img_size_hw=HW)
    with pytest.raises(YoloportError, match="stride"):
        load_calibration(img_dir, n=1, img_size_hw=(100, 128))


def test_to_dict_batches_and_files(tmp_path, img_dir):
    cs = load_calibration(img_dir, n=5, img_size_hw=HW)
    d = cs.to_dict()
    assert d["count"] == 5 and d["img_size"] == list(HW) and "preprocess" in d["preprocessing"] and len(d["paths"]) == 5
    sizes = [b.shape[0] for b in cs.batches(2)]
    assert sizes == [2, 2, 1]
    pngs = write_preprocessed(cs, tmp_path / "png", fmt="png")
    back = cv2.imread(str(pngs[0]))[:, :, ::-1].transpose(2, 0, 1) / 255.0
    np.testing.assert_allclose(back, cs.arrays()[0][0], atol=1e-6)
    npys = write_preprocessed(cs, tmp_path / "npy", fmt="npy", layout="nhwc")
    assert np.load(npys[0]).shape == (1, *HW, 3)
    assert isinstance(cs.with_size((64, 64)), CalibrationSet) and next(iter(cs.with_size((64, 64)))).shape == (1, 3, 64, 64)
