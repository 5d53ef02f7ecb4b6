"""SIGKILL sweep (issue 13): ``train``, ``quantize`` and ``port`` killed at random moments of their
work (a seeded generator, uniform over the length of an unbroken run of the same command, counted
from the moment its output folder appears: start-up is not what is tested).

After every kill: no damaged file is accepted (every artifact either passes its sidecar's size and
sha256 check and then loads, or is refused with one YoloportError; every checkpoint a run left reads
back), and every killed training run resumes to the weights of an unbroken run, its stale temp files
removed. The default run kills each command a few times (``N_DEFAULT``); ``pytest -m slow`` runs the
longer sweep (``N_SLOW``).
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml

import yoloport
from yoloport.errors import YoloportError

ROOT = Path(yoloport.__file__).resolve().parent.parent
N_DEFAULT = {"train": 2, "quantize": 2, "port": 1}
N_SLOW = {"train": 8, "quantize": 8, "port": 4}
NAMES = ["circle", "rectangle", "triangle"]


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "yoloport", *args]


def _wait_for(p: subprocess.Popen, marker: Path | None, limit: float = 300) -> None:
    """Until ``marker`` exists (the command has started its work) or the process has ended."""
    t0 = time.perf_counter()
    while marker is not None and not marker.exists() and p.poll() is None and time.perf_counter() - t0 < limit:
        time.sleep(0.02)


def run_to_end(args: list[str], marker: Path | None = None, timeout: float = 600) -> tuple[int, str, float]:
    """``(exit code, stderr, seconds of work)`` of a command run to its end; the seconds are counted
    from the moment ``marker`` appears (from the start without one)."""
    p = subprocess.Popen(_cli(*args), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for(p, marker)
    t0 = time.perf_counter()
    _, err = p.communicate(timeout=timeout)
    return p.returncode, err, time.perf_counter() - t0


def kill_after(args: list[str], delay: float, marker: Path | None = None) -> bool:
    """Start the command and SIGKILL it ``delay`` seconds after ``marker`` appears (the work has
    begun: start-up is not what is tested); True if it was still running then."""
    p = subprocess.Popen(_cli(*args), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(p, marker)
    try:
        p.wait(delay)
        return False
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGKILL)
        p.wait()
        return True


@dataclass
class Sweep:
    """What a sweep saw, for the assertion messages and the report."""

    kills: int = 0
    finished_before_kill: int = 0
    artifacts_accepted: int = 0
    artifacts_refused: int = 0
    resumed: int = 0
    notes: list = field(default_factory=list)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    from yoloport.data.synth import make_synthetic_dataset
    from yoloport.models import save_model
    from yoloport.nn.model import DetectionModel

    root = tmp_path_factory.mktemp("sigkill")
    cfg = dict(DetectionModel("yolov5n").yaml, width_multiple=0.125, depth_multiple=0.33)
    (root / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    torch.manual_seed(0)
    save_model(DetectionModel(cfg, nc=3, names=NAMES).eval(), root / "tiny.safetensors")
    make_synthetic_dataset(root / "ds", {"train": 8, "val": 4}, (96, 96), seed=2, workers=1, max_objects=3,
                           min_object_size=10, classes=NAMES)
    return root


# ------------------------------------------------------------------------------------ checks
def check_artifacts(folder: Path, sweep: Sweep) -> None:
    """Every artifact under ``folder`` (a file with a ``<file>.json`` backend sidecar) is either
    refused with a YoloportError or passes its integrity check and loads and runs."""
    import numpy as np

    from yoloport.backends.base import read_sidecar
    from yoloport.backends.registry import load_runner

    for sc in folder.rglob("*.json"):
        art = sc.with_name(sc.name[: -len(".json")])
        if not art.exists():
            continue
        try:
            info = json.loads(sc.read_text())
        except ValueError:
            info = None
        if not isinstance(info, dict) or "backend" not in info:
            continue  # an export's own sidecar or a report, not a backend artifact
        try:
            read_sidecar(art)
        except YoloportError:
            sweep.artifacts_refused += 1
            continue
        runner = load_runner(info["backend"], artifact=art)
        h, w = info["input_hw"]
        outs = runner(np.zeros((int(info.get("batch") or 1), 3, h, w), np.float32))
        assert all(np.isfinite(o).all() for o in outs), art
        sweep.artifacts_accepted += 1
    for js in folder.rglob("*.json"):  # reports and summaries are written atomically: whole or absent
        if not js.name.startswith("."):
            json.loads(js.read_text())


def check_run_files(run: Path) -> None:
    """Every checkpoint and state a killed training run left reads back completely."""
    from yoloport.engine.train import STATE_FILE, load_state
    from yoloport.io.checkpoint import read_checkpoint

    for f in (run / "weights").glob("*.safetensors"):
        if f.name.startswith("."):  # a write the kill interrupted: by design never read, removed on resume
            continue
        read_checkpoint(f)
    if (run / "weights" / STATE_FILE).exists():
        load_state(run / "weights" / STATE_FILE)


def same_weights(a: Path, b: Path) -> bool:
    from yoloport.io.checkpoint import read_checkpoint

    sa, _ = read_checkpoint(a)
    sb, _ = read_checkpoint(b)
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------------ sweeps
def train_args(w: Path, project: Path) -> list[str]:
    return ["train", "--data", str(w / "ds" / "data.yaml"), "--cfg", str(w / "tiny.yaml"), "--epochs", "6",
            "--batch-size", "4", "--img-size", "96", "--device", "cpu", "--workers", "0", "--seed", "3",
            "--project", str(project), "--name", "exp", "--no-progress", "--noplots"]


def sweep_train(w: Path, n: int, seed: int) -> Sweep:
    rc, err, t_work = run_to_end(train_args(w, w / "train-full"), marker=w / "train-full" / "exp" / "args.yaml")
    assert rc == 0, err
    reference = w / "train-full" / "exp" / "weights" / "last.safetensors"
    rng, sweep = random.Random(seed), Sweep()
    for i in range(n):
        project = w / f"train-kill-{seed}-{i}"
        killed = kill_after(train_args(w, project), rng.uniform(0.0, 1.0) * t_work, marker=project / "exp" / "args.yaml")
        sweep.kills += killed
        run = project / "exp"
        if not killed:
            sweep.finished_before_kill += 1
        if not (run / "args.yaml").exists():
            sweep.notes.append(f"kill {i}: before the run folder held its settings (nothing to resume)")
            continue
        check_run_files(run)
        rc, err, _ = run_to_end(["train", "--resume", str(run), "--no-progress"])
        if rc == 2 and "nothing to resume" in err:  # it had saved its last epoch: a resume says so in one line
            assert len(err.strip().splitlines()) == 1, err
            sweep.notes.append(f"kill {i}: after the last epoch was saved")
            assert same_weights(reference, run / "weights" / "last.safetensors"), f"kill {i}: final weights differ"
        else:
            assert rc == 0, f"kill {i}: resume failed: {err[-2000:]}"
            sweep.resumed += 1
        assert not [p.name for p in [*run.glob(".*.tmp-*"), *(run / "weights").glob(".*.tmp-*")]]
        assert same_weights(reference, run / "weights" / "last.safetensors"), f"kill {i}: resumed weights differ"
    return sweep


def quantize_args(w: Path, out: Path) -> list[str]:
    return ["quantize", "--weights", str(w / "tiny.safetensors"), "--backend", "onnxruntime", "--calib",
            str(w / "ds" / "images" / "train"), "--calib-n", "2", "--img-size", "96", "96", "--out", str(out)]


def sweep_quantize(w: Path, n: int, seed: int) -> Sweep:
    rc, err, t_work = run_to_end(quantize_args(w, w / "q-full"), marker=w / "q-full")
    assert rc == 0, err
    rng, sweep = random.Random(seed), Sweep()
    for i in range(n):
        out = w / f"q-kill-{seed}-{i}"
        killed = kill_after(quantize_args(w, out), rng.uniform(0.0, 1.0) * t_work, marker=out)
        sweep.kills += killed
        sweep.finished_before_kill += not killed
        if out.exists():
            check_artifacts(out, sweep)
            # the folder a killed run left is never silently reused; --overwrite rebuilds it (the
            # kernel dropped the dead run's lock)
            rc, err, _ = run_to_end(quantize_args(w, out))
            assert rc in (0, 2) and "Traceback" not in err, err
            if i == 0:
                rc, err, _ = run_to_end(quantize_args(w, out) + ["--overwrite"])
                assert rc == 0, err
                check_artifacts(out, sweep)
    return sweep


def port_args(w: Path, project: Path) -> list[str]:
    return ["port", "--weights", str(w / "tiny.safetensors"), "--data", str(w / "ds" / "data.yaml"), "--targets",
            "onnxruntime", "--img-size", "96", "96", "--calib-n", "2", "--no-bench", "--no-profile",
            "--project", str(project)]


def sweep_port(w: Path, n: int, seed: int) -> Sweep:
    rc, err, t_work = run_to_end(port_args(w, w / "port-full"), marker=w / "port-full" / "exp")
    assert rc in (0, 1), err  # 1: a target over --max-drop (random weights); the run itself completed
    rng, sweep = random.Random(seed), Sweep()
    for i in range(n):
        project = w / f"port-kill-{seed}-{i}"
        killed = kill_after(port_args(w, project), rng.uniform(0.0, 1.0) * t_work, marker=project / "exp")
        sweep.kills += killed
        sweep.finished_before_kill += not killed
        if project.exists():
            check_artifacts(project, sweep)
    return sweep


SWEEPS = {"train": sweep_train, "quantize": sweep_quantize, "port": sweep_port}


@pytest.mark.parametrize("command", list(SWEEPS))
def test_sigkill_sweep(command, workdir, capsys):
    sweep = SWEEPS[command](workdir, N_DEFAULT[command], seed=13)
    with capsys.disabled():
        print(f"\nSIGKILL sweep {command}: {sweep}")
    assert sweep.kills + sweep.finished_before_kill == N_DEFAULT[command] and sweep.kills >= 1, sweep


@pytest.mark.slow
@pytest.mark.parametrize("command", list(SWEEPS))
def test_sigkill_sweep_long(command, workdir, capsys):
    sweep = SWEEPS[command](workdir, N_SLOW[command], seed=2026)
    with capsys.disabled():
        print(f"\nSIGKILL sweep (long) {command}: {sweep}")
    assert sweep.kills >= N_SLOW[command] // 2, sweep  # most kills land inside the run
