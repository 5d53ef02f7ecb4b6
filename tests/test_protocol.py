"""The honest protocol (issue 11 item 1): calibration, selection and reporting sets never share an
image - by path or by content; overlaps are split deterministically or refused; the port says so."""
import json
import shutil

import cv2
import numpy as np
import pytest

from yoloport.cli import main
from yoloport.data.protocol import fingerprint, find_overlap, image_set, make_disjoint, protocol_record
from yoloport.errors import YoloportError


def make_images(folder, n, start=0):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + n):
        im = np.full((24, 32, 3), i * 7 % 255, np.uint8)
        im[i % 24, :, :] = 255 - i
        p = folder / f"im{i:03d}.png"
        cv2.imwrite(str(p), im)
        paths.append(p)
    return paths


def test_overlap_by_path_and_by_content(tmp_path):
    a = make_images(tmp_path / "a", 6)
    b = make_images(tmp_path / "b", 4, start=10)
    shutil.copy(a[0], tmp_path / "b" / "renamed.png")  # same content, another name
    sa = image_set("calibration", "a", a[:3])
    sb = image_set("reporting", "b", [*b, tmp_path / "b" / "renamed.png", a[1]])  # a[1]: the same file
    ov = find_overlap(sa, sb)
    assert (ov.n_shared, ov.same_file, ov.same_content) == (2, 1, 1)
    assert find_overlap(image_set("calibration", "x", b), image_set("reporting", "y", a)).n_shared == 0


def test_split_is_deterministic_balanced_and_disjoint(tmp_path):
    imgs = make_images(tmp_path / "same", 10)
    warnings = []
    (c, r), found = make_disjoint([image_set("calibration", "s", imgs), image_set("reporting", "s", imgs)],
                                  warn=warnings.append)
    assert len(c) == len(r) == 5 and not set(c.hashes) & set(r.hashes)
    assert found == [{"sets": ["calibration", "reporting"], "shared": 10, "same_file": 10, "same_content": 0}]
    assert len(warnings) == 1 and "share 10 image(s)" in warnings[0] and "--overlap error" in warnings[0]
    # the same content under other names, listed in another order: the same split, by content
    copies = tmp_path / "copies"
    copies.mkdir()
    renamed = [shutil.copy(p, copies / f"z{9 - i}.png") for i, p in enumerate(imgs)]
    (c2, r2), _ = make_disjoint([image_set("calibration", "t", renamed[::-1]), image_set("reporting", "s", imgs)])
    assert set(c2.hashes) == set(c.hashes) and set(r2.hashes) == set(r.hashes)
    assert c.fingerprint == fingerprint(c2.hashes) != r.fingerprint
    rec = protocol_record([c, r], found, "split", not_used={"selection": "no search"})
    assert rec["calibration"]["n_images"] == 5 and rec["selection"]["source"] is None
    # a partial overlap leaves each set its own images
    (c3, r3), _ = make_disjoint([image_set("calibration", "a", imgs[:6]), image_set("reporting", "b", imgs[4:])])
    assert len(c3) + len(r3) == 10 and set(imgs[:4]) <= set(c3.paths) and set(imgs[6:]) <= set(r3.paths)


def test_overlap_error_and_empty_set(tmp_path):
    imgs = make_images(tmp_path / "same", 3)
    sets = [image_set("calibration", "s", imgs), image_set("reporting", "s", imgs[:1])]
    with pytest.raises(YoloportError, match="share 1 image") as e:
        make_disjoint(sets, "error")
    assert "\n" not in str(e.value)
    one = [image_set("calibration", "s", imgs[:1]), image_set("selection", "s", imgs[:1]),
           image_set("reporting", "s", imgs[:1])]
    with pytest.raises(YoloportError, match="set .* is empty"):
        make_disjoint(one)
    with pytest.raises(YoloportError, match="split or error|must be one of"):
        make_disjoint(sets, "merge")


def test_duplicates_inside_one_set_count_once(tmp_path):
    imgs = make_images(tmp_path / "a", 3)
    shutil.copy(imgs[0], tmp_path / "a" / "dup.png")
    assert len(image_set("calibration", "a", list((tmp_path / "a").glob("*.png")))) == 3


# ------------------------------------------------------------------------------- the port says so


@pytest.fixture(scope="module")
def shapes_data(tmp_path_factory):
    """A small synthetic-shapes data set (train 6, val 4) and the embedded default model at 128x160."""
    from conftest import signal_model
    from yoloport.data.synth import SHAPE_CLASSES, make_synthetic_dataset
    from yoloport.models import save_model

    root = tmp_path_factory.mktemp("proto")
    yaml_path = make_synthetic_dataset(root / "data", {"train": 6, "val": 4}, (160, 128), seed=5, classes=list(SHAPE_CLASSES))
    m = signal_model()
    m.img_size = (128, 160)
    return yaml_path, save_model(m, root / "shapes.safetensors")


def test_port_with_calibration_equal_to_validation_says_so_and_splits(tmp_path, shapes_data, capsys):
    yaml_path, ckpt = shapes_data
    rc = main(["port", "--weights", str(ckpt), "--data", str(yaml_path), "--calib", f"{yaml_path}:val", "--calib-n", "4",
               "--targets", "onnxruntime", "--no-bench", "--no-profile", "--project", str(tmp_path), "--name", "p",
               "--max-drop", "100"])  # the split is under test here, not the gate (2 reporting images)
    out = capsys.readouterr().out
    assert rc == 0, out
    warn = [ln for ln in out.splitlines() if ln.startswith("warning:") and "share" in ln]
    assert len(warn) == 1 and warn[0].startswith("warning: the calibration and reporting sets share 4 image(s) (4 same file(s))")
    rep = json.loads((tmp_path / "p" / "report.json").read_text())
    proto = rep["protocol"]
    assert proto["calibration"]["n_images"] == 2 and proto["reporting"]["n_images"] == 2
    assert proto["overlap"]["found"][0]["shared"] == 4 and proto["selection"]["source"] is None
    assert rep["data"]["n_images"] == 2 and rep["reference"]["val"]["n_images"] == 2
    assert not set(rep["calibration"]["paths"]) & {str(p) for p in (yaml_path.parent / "images" / "val").iterdir()
                                                   if str(p) not in rep["calibration"]["paths"]}
    t = rep["targets"][0]
    ci = t["drop_ci"]
    assert ci["n_images"] == 2 and ci["low"] <= ci["high"] and ci["drop"] == pytest.approx(t["drop"], abs=1e-3)
    assert t["gate"]["status"].startswith("passed") and "gate onnxruntime-int8" in out
    html = (tmp_path / "p" / "report.html").read_text()
    for section in ("Image sets", "Drop per target", "calibration set:", "reporting set:", "Stages"):
        assert section in html, section


def test_port_overlap_error_refuses_same_content_under_another_name(tmp_path, shapes_data, capsys):
    yaml_path, ckpt = shapes_data
    calib = tmp_path / "calib"
    calib.mkdir()
    for i, p in enumerate(sorted((yaml_path.parent / "images" / "val").iterdir())[:2]):
        shutil.copy(p, calib / f"copy{i}{p.suffix}")
    rc = main(["port", "--weights", str(ckpt), "--data", str(yaml_path), "--calib", str(calib), "--overlap", "error",
               "--targets", "onnxruntime", "--no-bench", "--no-profile", "--project", str(tmp_path), "--name", "e"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "share 2 image(s) (2 same image(s) under another name)" in err
    assert "Traceback" not in err


def test_quantize_selection_is_kept_apart_from_calibration(tmp_path, shapes_data, capsys):
    """quantize --val-data: the accuracy control's selection images never calibrate (same files split)."""
    import argparse

    from yoloport.commands.quantize import selection_protocol

    yaml_path, _ = shapes_data
    args = argparse.Namespace(calib=f"{yaml_path}:val", overlap=None)
    calib_paths, selection, rec = selection_protocol(args, {"validation": str(yaml_path), "validation_n": 8}, tmp_path)
    assert "share 4 image(s)" in capsys.readouterr().out
    chosen = (tmp_path / "selection.txt").read_text().split()
    assert selection == f"{tmp_path / 'selection.yaml'}:val" and len(chosen) == 2 == len(calib_paths)
    assert not {str(p.resolve()) for p in calib_paths} & set(chosen)
    assert rec["selection"]["n_images"] == 2 and rec["reporting"]["source"] is None
    args.overlap = "error"
    with pytest.raises(YoloportError, match="share 4 image"):
        selection_protocol(args, {"validation": str(yaml_path), "validation_n": 8}, tmp_path)
