"""The training scripts' one speed probe and epoch budget (yoloport.engine.train_budget)."""
from __future__ import annotations

import ast
import math
import subprocess
import sys
from pathlib import Path

import pytest

from yoloport.engine.train_budget import epoch_seconds, epochs_for_budget, measure_images_per_s, probe_targets

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = ("train_face_model.py", "train_default_model.py")


def test_epoch_estimate_counts_loading_and_validation():
    # 100 training images at 10/s with 15 % loading = 11.5 s, 30 validation images 3x faster = 1 s
    assert epoch_seconds(100, 30, 10.0) == pytest.approx(12.5)
    assert epochs_for_budget(1000.0, 100, 30, 10.0) == (80, pytest.approx(12.5))


def test_epochs_stay_within_their_bounds():
    assert epochs_for_budget(1.0, 100, 30, 10.0)[0] == 2  # a budget that fits nothing still trains 2 epochs
    assert epochs_for_budget(1e9, 100, 30, 10.0)[0] == 300
    assert epochs_for_budget(1000.0, 100, 30, 10.0, min_epochs=1, max_epochs=50)[0] == 50


def test_probe_targets_carry_the_heads_landmarks():
    det = probe_targets(4, nc=3)
    assert det.shape == (4, 6) and det[:, 0].tolist() == [0, 1, 2, 3] and det[:, 1].tolist() == [0, 1, 2, 0]
    face = probe_targets(2, nc=1, nkpt=5)
    assert face.shape == (2, 16) and (face[:, 1] == 0).all()
    pts = face[:, 6:].reshape(2, 5, 2)
    box_x1y1, box_x2y2 = face[0, 2:4] - face[0, 4:6] / 2, face[0, 2:4] + face[0, 4:6] / 2
    assert ((pts >= box_x1y1) & (pts <= box_x2y2)).all()  # landmarks inside their face


@pytest.mark.parametrize("cfg, nc", [("yolov5n", 2), ("yolov5n-0.5-face", 1)])
def test_speed_probe_trains_detector_and_face_heads(cfg, nc):
    ips = measure_images_per_s(cfg, nc, img_size=64, batch=2, hyp_overrides={"lr0": 0.002}, steps=1)
    assert math.isfinite(ips) and ips > 0


@pytest.mark.parametrize("script", SCRIPTS)
def test_training_scripts_use_the_one_speed_probe(script):
    tree = ast.parse((REPO / "scripts" / script).read_text())
    own = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "measure_images_per_s" not in own
    imported = {(n.module, a.name) for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names}
    assert ("yoloport.engine.train_budget", "measure_images_per_s") in imported


@pytest.mark.parametrize("script", SCRIPTS)
def test_training_scripts_start_from_the_repo_root(script):
    """The scripts run as ``python scripts/x.py``: their imports resolve (``--help`` imports everything)."""
    r = subprocess.run([sys.executable, f"scripts/{script}", "--help"], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "--budget-min" in r.stdout
