"""The light runtime install: ``detect``, ``val`` and ``bench`` on an ONNX Runtime artifact run from its
sidecar alone and import neither torch nor onnx (issue 15, item 1).

The artifact is built once with the full install (the embedded default model, int8, calibrated on
synthetic ``train`` images; detect and val run on the disjoint ``val`` images). Each command runs in a
fresh interpreter (a subprocess), so ``sys.modules`` holds only what that path imported. Where
``YOLOPORT_LIGHT_VENV`` names a venv with ``pip install . onnxruntime`` and nothing else (``.ci/run``
builds one), the same commands run there too and must give the full install's detections and mAP.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Runs the CLI with the given argv, then prints which heavy modules it imported, as JSON on the last line.
# ``blocked`` modules are made unimportable first (``sys.modules[name] = None``): a torch-free install.
_PROBE = """
import json, sys
blocked = json.loads(sys.argv[1])
for name in blocked:
    sys.modules[name] = None
from yoloport.cli import main
rc = main(sys.argv[2:])
heavy = ("torch", "onnx", "onnxruntime.quantization", "openvino", "nncf", "matplotlib", "safetensors")
print(json.dumps({"rc": rc, "imported": [m for m in heavy if sys.modules.get(m) is not None]}))
"""


def _probe(python, argv, cwd, blocked=(), this_tree: bool = True):
    """Run the CLI (``argv``) in a fresh ``python`` process in ``cwd``; returns ``(report, stdout+stderr)``
    with ``report`` the probe's ``{"rc", "imported"}``. ``this_tree``: import this checkout's yoloport,
    else the one installed in ``python``'s venv (a light venv's own copy)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if this_tree:
        env["PYTHONPATH"] = str(REPO)
    p = subprocess.run([str(python), "-c", _PROBE, json.dumps(list(blocked)), *argv], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=600)
    out = p.stdout + p.stderr
    last = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
    assert last.startswith("{"), f"the probe did not finish:\n{out[-3000:]}"
    return json.loads(last), out


@pytest.fixture(scope="module")
def ort_int8(tmp_path_factory):
    """``(workdir, artifact, data_yaml)``: an int8 ONNX Runtime artifact of the default model built by the
    full install, and a synthetic data set whose ``val`` images were not used to calibrate."""
    from yoloport.cli import main
    from yoloport.data.synth import make_synthetic_dataset

    work = tmp_path_factory.mktemp("light")
    data = make_synthetic_dataset(work / "synth", {"train": 8, "val": 12}, (320, 320), seed=7, workers=1)
    rc = main(["quantize", "--model-key", "default", "--backend", "onnxruntime", "--calib", str(work / "synth/images/train"),
               "--calib-n", "8", "--out", str(work / "ort")])
    assert rc == 0
    artifact = work / "ort" / "model.onnxruntime.int8.onnx"
    assert artifact.is_file()
    return work, artifact, data


def _detect_argv(artifact, data, project):
    return ["detect", "--backend", "onnxruntime", "--artifact", str(artifact), "--source",
            str(Path(data).parent / "images" / "val"), "--project", str(project)]


def _val_argv(artifact, data, project):
    return ["val", "--backend", "onnxruntime", "--artifact", str(artifact), "--data", str(data), "--project", str(project)]


def _detections(run_dir: Path) -> list:
    """detect's per-image results without the timings."""
    doc = json.loads((run_dir / "detections.json").read_text())
    return [{k: v for k, v in im.items() if k != "times_ms"} for im in doc["images"]]


def _metrics(run_dir: Path) -> dict:
    doc = json.loads((run_dir / "val.json").read_text())
    return {k: doc[k] for k in ("precision", "recall", "mAP50", "mAP50_95")}


@pytest.mark.parametrize("command", ["detect", "val", "bench"])
def test_artifact_commands_never_import_torch_or_onnx(ort_int8, command):
    """Run from the sidecar alone (no --weights): neither torch nor onnx (nor the quantizer) is loaded."""
    work, artifact, data = ort_int8
    project = work / f"runs_{command}"
    argv = {
        "detect": _detect_argv(artifact, data, project),
        "val": _val_argv(artifact, data, project),
        "bench": ["bench", "--backend", "onnxruntime", "--artifact", str(artifact), "--repeat", "2", "--warmup", "1",
                  "--project", str(project)],
    }[command]
    report, out = _probe(sys.executable, argv, work)
    assert report["rc"] == 0, out[-3000:]
    assert "torch" not in report["imported"] and "onnx" not in report["imported"], report
    assert report["imported"] == [], report  # nor openvino, nncf, matplotlib, safetensors, the ORT quantizer


def test_artifact_runs_where_torch_and_onnx_cannot_be_imported(ort_int8):
    """With torch and onnx unimportable (as in the light install), detect and val give what the full path
    gives, and a command that needs a checkpoint says which extra to install in one line."""
    work, artifact, data = ort_int8
    blocked = ("torch", "onnx")
    full_d, full_v = work / "full_d", work / "full_v"
    from yoloport.cli import main

    assert main(_detect_argv(artifact, data, full_d)) == 0
    assert main(_val_argv(artifact, data, full_v)) == 0
    report, out = _probe(sys.executable, _detect_argv(artifact, data, work / "blocked_d"), work, blocked)
    assert report["rc"] == 0, out[-3000:]
    report, out = _probe(sys.executable, _val_argv(artifact, data, work / "blocked_v"), work, blocked)
    assert report["rc"] == 0, out[-3000:]
    assert _detections(work / "blocked_d" / "exp") == _detections(full_d / "exp")
    assert sum(len(im["detections"]) for im in _detections(full_d / "exp")) > 0  # not two empty runs agreeing
    assert _metrics(work / "blocked_v" / "exp") == _metrics(full_v / "exp")

    report, out = _probe(sys.executable, ["detect", "--source", str(Path(data).parent / "images" / "val"),
                                          "--project", str(work / "blocked_t")], work, blocked)
    assert report["rc"] == 2 and "Traceback" not in out, out[-3000:]
    assert "yoloport[train]" in out and "--artifact" in out


def test_artifact_with_weights_still_checks_the_fingerprint(ort_int8, tmp_path):
    """Given --weights, the artifact is still checked against that checkpoint (the full install's behaviour)."""
    from conftest import random_model
    from yoloport.cli import main
    from yoloport.models import save_model

    work, artifact, data = ort_int8
    other = save_model(random_model(nc=6), tmp_path / "other.safetensors")
    assert main(["detect", "--weights", str(other), *_detect_argv(artifact, data, tmp_path / "d")[1:]]) == 2


@pytest.mark.skipif(not os.environ.get("YOLOPORT_LIGHT_VENV"),
                    reason="YOLOPORT_LIGHT_VENV not set: no torch-free venv to run in (.ci/run builds one)")
def test_light_venv_gives_the_full_install_detections_and_map(ort_int8):
    """In the torch-free venv (``pip install . onnxruntime``): same detections and mAP as the full install."""
    venv = Path(os.environ["YOLOPORT_LIGHT_VENV"])
    python = venv / "bin" / "python"
    assert python.exists(), f"YOLOPORT_LIGHT_VENV={venv} has no bin/python"
    check = subprocess.run([str(python), "-c", "import importlib.util as u; print(u.find_spec('torch') is None)"],
                           capture_output=True, text=True, cwd="/")
    assert check.stdout.strip() == "True", f"{venv} has torch installed: not a light venv"
    work, artifact, data = ort_int8
    from yoloport.cli import main

    full_d, full_v = work / "venv_full_d", work / "venv_full_v"
    assert main(_detect_argv(artifact, data, full_d)) == 0
    assert main(_val_argv(artifact, data, full_v)) == 0
    light_d, light_v = work / "venv_light_d", work / "venv_light_v"
    report, out = _probe(python, _detect_argv(artifact, data, light_d), work, this_tree=False)
    assert report["rc"] == 0 and report["imported"] == [], out[-3000:]
    report, out = _probe(python, _val_argv(artifact, data, light_v), work, this_tree=False)
    assert report["rc"] == 0 and report["imported"] == [], out[-3000:]
    assert _detections(light_d / "exp") == _detections(full_d / "exp")
    assert _metrics(light_v / "exp") == _metrics(full_v / "exp")
