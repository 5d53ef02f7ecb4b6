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
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(folder / f"im{i}.jpg"), rng.integers(0, 255, (120 + 40 * i, 200, 3), dtype=np.uint8))
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
