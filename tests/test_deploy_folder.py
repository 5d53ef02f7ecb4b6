"""A deploy folder per port target (issue 15 item 3): the artifact and what its sidecar vouches for, the
sidecar, the calibration list (sha256 + path), a sample image and a README whose ``yoloport`` commands run
in the folder as written (an RKNN target's on rknn-toolkit2's simulator here: its device runtime is
rknn-lite, a board)."""
from __future__ import annotations

import hashlib
import json
import shlex
from pathlib import Path

import pytest

from yoloport.analysis import deploy_folder as dfm
from yoloport.backends.base import read_sidecar
from yoloport.errors import YoloportError

HW = (128, 160)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """``(calibration CalibrationSet of 3 images, a validation image that is not one of them)``."""
    from conftest import write_synth_images

    from yoloport.data.calibration import load_calibration

    d = tmp_path_factory.mktemp("deploy_images")
    cal = load_calibration(write_synth_images(d / "calib", 3, (200, 240), seed=0), n=3, img_size_hw=HW)
    val = sorted(write_synth_images(d / "val", 2, (200, 240), seed=1, prefix="val").glob("*.jpg"))
    return cal, val


@pytest.fixture(scope="module")
def ort_int8(images, tmp_path_factory):
    from conftest import signal_model

    from yoloport.backends.registry import build_artifact

    cal, _ = images
    return build_artifact("onnxruntime", signal_model(), tmp_path_factory.mktemp("ort"), HW, calibration=cal)


def _run_readme(folder: Path, monkeypatch) -> list[str]:
    """Run every ``yoloport`` line of the folder's README in the folder; returns the lines run."""
    from yoloport.cli import main

    monkeypatch.chdir(folder)
    lines = dfm.readme_commands(folder / dfm.README)
    for line in lines:
        argv = shlex.split(line)[1:]
        if argv[0] == "bench":
            argv += ["--repeat", "2", "--warmup", "1"]  # the README's 50 repeats, shortened for the test
        assert main(argv) == 0, line
    return lines


def test_folder_holds_the_artifact_calibration_list_and_runnable_readme(ort_int8, images, tmp_path, monkeypatch):
    cal, val = images
    rec = {"artifact": str(ort_int8), "name": "onnxruntime-int8", "precision": "int8",
           "val": {"mAP50": 0.81, "mAP50_95": 0.55}, "drop": 0.4}
    folder = Path(dfm.for_port_target(tmp_path / "deploy", rec, cal, [cal.paths[0], val[0]]))
    names = {p.name for p in folder.iterdir()}
    assert {ort_int8.name, ort_int8.name + ".json", dfm.README, dfm.CALIBRATION_LIST, "sample.jpg", "deploy.json"} <= names
    copied = read_sidecar(folder / ort_int8.name)  # the copy passes the integrity check
    assert copied["integrity"] == read_sidecar(ort_int8)["integrity"]
    # the sample is a validation image, never a calibration image
    assert (folder / "sample.jpg").read_bytes() == val[0].read_bytes()
    # calibration list: sha256 + path of every calibration image, as sha256sum writes it
    rows = [ln.split("  ", 1) for ln in (folder / dfm.CALIBRATION_LIST).read_text().splitlines()]
    assert [Path(p) for _, p in rows] == [Path(p).resolve() for p in cal.paths]
    assert all(h == hashlib.sha256(Path(p).read_bytes()).hexdigest() for h, p in rows)
    readme = (folder / dfm.README).read_text()
    assert "pip install yoloport" in readme and "pip install onnxruntime" in readme and "0.5500 / 0.8100" in readme
    lines = _run_readme(folder, monkeypatch)
    assert [ln.split()[1] for ln in lines] == ["detect", "bench"]
    dets = json.loads(next(folder.glob("runs/detect/*/detections.json")).read_text())
    assert sum(len(im["detections"]) for im in dets["images"]) > 0  # the model finds shapes in the sample


def test_a_damaged_artifact_is_not_copied_and_nothing_is_overwritten(ort_int8, images, tmp_path):
    import shutil

    cal, val = images
    src = tmp_path / "src"
    src.mkdir()
    for f in (ort_int8, Path(str(ort_int8) + ".json")):
        shutil.copy2(f, src / f.name)
    art = src / ort_int8.name
    with open(art, "r+b") as f:  # one byte changed
        f.seek(100)
        b = f.read(1)
        f.seek(100)
        f.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(YoloportError, match="refusing artifact"):
        dfm.write_deploy_folder(tmp_path / "d1", art, "x", cal, val[0])
    assert not (tmp_path / "d1").exists() or not any((tmp_path / "d1").iterdir())
    busy = tmp_path / "d2"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep")
    with pytest.raises(YoloportError, match="not empty"):
        dfm.write_deploy_folder(busy, ort_int8, "x", cal, val[0])
    assert (busy / "mine.txt").read_text() == "keep" and len(list(busy.iterdir())) == 1


def test_float_artifact_has_no_calibration_list(images, tmp_path):
    from conftest import signal_model

    from yoloport.backends.registry import build_artifact

    _, val = images
    art = build_artifact("onnxruntime", signal_model(), tmp_path / "fp32", HW)
    rec = {"artifact": str(art), "name": "onnxruntime-fp32", "precision": "fp32"}
    folder = Path(dfm.for_port_target(tmp_path / "deploy", rec, images[0], [val[0]]))
    assert not (folder / dfm.CALIBRATION_LIST).exists() and (folder / dfm.README).is_file()


def test_rknn_folder_names_rknn_lite_and_its_commands_run_on_the_simulator(images, tmp_path, monkeypatch):
    """An RKNN target's folder is for the board: rknn-lite, its install line, --core-mask, the board-timing
    warning; its README commands run here through the simulator adapter."""
    pytest.importorskip("rknn.api")
    from conftest import signal_model

    from yoloport.backends import rknn as rb
    from yoloport.backends import rknn_lite
    from yoloport.backends.registry import build_artifact

    cal, val = images
    art = build_artifact("rknn", signal_model(), tmp_path / "rk", HW, calibration=cal, qconfig={"platform": "rk3588"})
    rb._LIVE.clear()  # the folder's commands rebuild the simulator from the copied recipe, as on a fresh process
    rec = {"artifact": str(art), "name": "rknn-rk3588-int8", "precision": "int8"}
    folder = Path(dfm.for_port_target(tmp_path / "deploy", rec, cal, [val[0]]))
    read_sidecar(folder / "model.rknn")
    readme = (folder / dfm.README).read_text()
    assert "On the device: rknn-lite" in readme and "yoloport[rknn-lite]" in readme and "rknn_toolkit_lite2" in readme
    assert "--core-mask" in readme and "only `yoloport bench` on the board measures the NPU" in readme
    assert all("--backend rknn-lite --artifact model.rknn" in ln for ln in dfm.readme_commands(folder / dfm.README))
    monkeypatch.setenv(rknn_lite.RUNTIME_ENV, "simulator")
    assert len(_run_readme(folder, monkeypatch)) == 2
