"""``yoloport detect`` end to end, and its bad-input behaviour (one line, non-zero exit, nothing lost)."""
import json

import cv2
import numpy as np
import pytest

from yoloport.cli import main


@pytest.fixture()
def tiny_ckpt(tmp_path, tiny_model):
    from yoloport.models import save_model

    return save_model(tiny_model, tmp_path / "tiny.safetensors")


def _images(folder, n=2):
    """``n`` synthetic-shape images (120 x 200, 160 x 200, ...): the default model detects something on each,
    so label files get written (on uniform noise the stride-4 default model rightly finds nothing)."""
    from yoloport.data.synth import render_image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(folder / f"im{i}.jpg"), render_image((120 + 40 * i, 200), np.random.default_rng(i)).image)
    return folder


def test_detect_folder_writes_outputs(tmp_path, tiny_ckpt):
    src = _images(tmp_path / "imgs")
    (src / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    rc = main(["detect", "--weights", str(tiny_ckpt), "--source", str(src), "--img-size", "224", "160",
               "--conf-thres", "0.001", "--save-dir", str(out)])
    assert rc == 0
    doc = json.loads((out / "detections.json").read_text())
    assert len(doc["images"]) == 2 and len(doc["skipped"]) == 1
    assert (out / "im0.jpg").exists() and (out / "labels" / "im1.txt").exists()
    for line in (out / "labels" / "im0.txt").read_text().split("\n")[:5]:
        if line:
            assert len(line.split()) == 6


def test_detect_video(tmp_path, tiny_ckpt):
    vid = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(vid), cv2.VideoWriter_fourcc(*"MJPG"), 5, (96, 64))
    for i in range(3):
        w.write(np.full((64, 96, 3), 40 * i, np.uint8))
    w.release()
    out = tmp_path / "vout"
    assert main(["detect", "--weights", str(tiny_ckpt), "--source", str(vid), "--img-size", "96", "--save-dir", str(out)]) == 0
    doc = json.loads((out / "detections.json").read_text())
    assert [im["frame"] for im in doc["images"]] == [0, 1, 2]


def test_run_dirs_are_never_reused(tmp_path, tiny_ckpt, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = _images(tmp_path / "imgs", 1)
    for _ in range(2):
        assert main(["detect", "--weights", str(tiny_ckpt), "--source", str(src), "--img-size", "96"]) == 0
    assert (tmp_path / "runs/detect/exp").is_dir() and (tmp_path / "runs/detect/exp2").is_dir()


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--source", "/no/such/dir"], "does not exist"),
        (["--source", "{src}", "--conf-thres", "1.5"], "between 0 and 1"),
        (["--source", "{empty}"], "no images or videos"),
        (["--weights", "{junk}", "--source", "{src}"], "not a checkpoint"),
        (["--weights", "/no/such.pt", "--source", "{src}"], "no such file"),
        (["--source", "{src}", "--img-size", "1", "2", "3"], "image size"),
    ],
)
def test_bad_input_is_one_clear_line(argv, needle, tmp_path, tiny_ckpt, capsys):
    src = _images(tmp_path / "imgs", 1)
    (tmp_path / "empty").mkdir()
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00garbage" * 10)
    fill = {"{src}": str(src), "{empty}": str(tmp_path / "empty"), "{junk}": str(junk)}
    argv = [fill.get(a, a) for a in argv]
    if "--weights" not in argv:
        argv = ["--weights", str(tiny_ckpt)] + argv
    rc = main(["detect", *argv, "--save-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc != 0
    assert needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


# --- output safety: nothing the user had is overwritten (issue 13, item 1) -------------------------

def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _detect(tiny_ckpt, src, *extra):
    return main(["detect", "--weights", str(tiny_ckpt), "--source", str(src), "--img-size", "96", *extra])


@pytest.mark.parametrize("extra", [[], ["--exist-ok"], ["--overwrite"], ["--exist-ok", "--overwrite"]])
def test_detect_never_writes_into_the_source_folder(tmp_path, tiny_ckpt, capsys, extra):
    src = _images(tmp_path / "photos", 2)
    before = _snapshot(src)
    rc = _detect(tiny_ckpt, src, "--save-dir", str(src), *extra)
    err = capsys.readouterr().err
    assert rc != 0 and "source images" in err and "Traceback" not in err
    assert _snapshot(src) == before  # no image replaced, no labels/ or detections.json added


def test_detect_source_file_beside_save_dir_is_refused(tmp_path, tiny_ckpt, capsys):
    src = _images(tmp_path / "photos", 1)
    before = _snapshot(src)
    assert _detect(tiny_ckpt, src / "im0.jpg", "--save-dir", str(src), "--exist-ok") != 0
    assert _snapshot(src) == before


def test_detect_existing_save_dir_needs_exist_ok_and_keeps_files(tmp_path, tiny_ckpt, capsys):
    src = _images(tmp_path / "imgs", 2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "labels").mkdir()
    (out / "im0.jpg").write_bytes(b"user's own file")
    (out / "labels" / "im1.txt").write_text("user's labels")
    (out / "detections.json").write_text("{}")
    before = _snapshot(out)
    assert _detect(tiny_ckpt, src, "--save-dir", str(out)) != 0
    assert "--exist-ok" in capsys.readouterr().err
    assert _detect(tiny_ckpt, src, "--save-dir", str(out), "--exist-ok") != 0  # clashes without --overwrite
    err = capsys.readouterr().err
    assert "already exist" in err and "--overwrite" in err
    assert _snapshot(out) == before
    assert _detect(tiny_ckpt, src, "--save-dir", str(out), "--overwrite") == 0
    assert (out / "im0.jpg").read_bytes() != b"user's own file"
    assert (out / "labels" / "im1.txt").read_text() != "user's labels"


def test_detect_exist_ok_without_clash_adds_files_and_keeps_others(tmp_path, tiny_ckpt):
    src = _images(tmp_path / "imgs", 1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert _detect(tiny_ckpt, src, "--save-dir", str(out), "--exist-ok") == 0
    assert (out / "notes.txt").read_text() == "keep me" and (out / "im0.jpg").exists()


def test_detect_same_name_in_two_folders_keeps_both_outputs(tmp_path, tiny_ckpt):
    a, b = _images(tmp_path / "src" / "a", 1), _images(tmp_path / "src" / "b", 1)
    out = tmp_path / "out"
    assert _detect(tiny_ckpt, str(tmp_path / "src" / "*" / "*.jpg"), "--save-dir", str(out)) == 0
    assert (out / "im0.jpg").exists() and (out / "im0_2.jpg").exists()
    assert (out / "labels" / "im0.txt").exists() and (out / "labels" / "im0_2.txt").exists()
    doc = json.loads((out / "detections.json").read_text())
    assert len(doc["images"]) == 2
    assert a != b


def test_save_dir_that_is_a_file_is_one_line(tmp_path, tiny_ckpt, capsys):
    src = _images(tmp_path / "imgs", 1)
    f = tmp_path / "afile"
    f.write_text("mine")
    assert _detect(tiny_ckpt, src, "--save-dir", str(f)) != 0
    err = capsys.readouterr().err
    assert "is an existing file" in err and "Traceback" not in err
    assert f.read_text() == "mine"


def test_run_folders_are_claimed_atomically(tmp_path):
    """Many concurrent claims of one run name: every claimant gets its own folder."""
    from concurrent.futures import ThreadPoolExecutor

    from yoloport.io.paths import claim_run_dir

    with ThreadPoolExecutor(8) as ex:
        dirs = list(ex.map(lambda _: claim_run_dir(tmp_path / "runs" / "exp"), range(16)))
    assert len(set(dirs)) == 16
    assert sorted(d.name for d in dirs) == sorted(["exp"] + [f"exp{i}" for i in range(2, 17)])
