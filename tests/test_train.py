"""``yoloport train``: runs, exact resume, fine-tuning, freezing, AutoAnchor, bad input, DDP."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from yoloport.cli import main
from yoloport.engine.train import STATE_FILE, load_state, train
from yoloport.io.checkpoint import read_checkpoint
from yoloport.nn.model import DetectionModel

REPO = Path(__file__).resolve().parent.parent


def tiny_cfg() -> dict:
    """yolov5n's layout with a very small width: trains in seconds on two CPU cores."""
    return dict(DetectionModel("yolov5n").yaml, width_multiple=0.125, depth_multiple=0.33)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from yoloport.data.synth import make_synthetic_dataset

    out = tmp_path_factory.mktemp("synth")
    return make_synthetic_dataset(out, {"train": 8, "val": 4}, (96, 96), seed=2, workers=1, max_objects=3,
                                  min_object_size=10, classes=["circle", "rectangle", "triangle"])


def run_train(tmp_path, data, **kw):
    s = dict(data=str(data), cfg=tiny_cfg(), epochs=2, batch_size=4, img_size=[96], device="cpu", workers=0,
             seed=3, project=str(tmp_path / "runs"), name="exp", progress=False, noplots=True)
    s.update(kw)
    return train(s)


def test_train_writes_run_dir_and_checkpoints(tmp_path, synth):
    res = run_train(tmp_path, synth, noplots=False)
    d = Path(res["save_dir"])
    assert d.name == "exp" and res["epochs_completed"] == 2
    for f in ("args.yaml", "hyp.yaml", "results.csv", "results.json", "results.png", "labels.png",
              "weights/last.safetensors", "weights/best.safetensors", f"weights/{STATE_FILE}"):
        assert (d / f).is_file(), f
    rows = (d / "results.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("epoch,train/box_loss")
    sd, meta = read_checkpoint(d / "weights/last.safetensors")
    assert meta["names"] == ["circle", "rectangle", "triangle"] and meta["img_size"] == [96, 96]
    assert meta["origin"] == "yoloport train" and meta["epoch"] == 1
    from yoloport.models import load_model

    m = load_model(d / "weights/best.safetensors")
    assert m.nc == 3 and m.img_size == (96, 96)
    # the state loads without executing code
    st = load_state(d / "weights" / STATE_FILE)
    assert st["epoch"] == 1 and "optimizer" in st and "rng" in st
    # a second run never overwrites the first
    res2 = run_train(tmp_path, synth, epochs=1, noval=True)
    assert Path(res2["save_dir"]).name == "exp2"
    assert json.loads((d / "results.json").read_text())["epochs_completed"] == 2


def test_resume_reproduces_uninterrupted_run_exactly(tmp_path, synth):
    full = run_train(tmp_path, synth, name="full")
    part = run_train(tmp_path, synth, name="part", stop_after=1)
    assert part["epochs_completed"] == 1
    pd = Path(part["save_dir"])
    assert load_state(pd / "weights" / STATE_FILE)["epoch"] == 0
    resumed = train({"resume": str(pd), "progress": False})
    assert resumed["save_dir"] == str(pd) and resumed["epochs_completed"] == 2
    a, _ = read_checkpoint(Path(full["save_dir"]) / "weights/last.safetensors")
    b, _ = read_checkpoint(pd / "weights/last.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    sa = load_state(Path(full["save_dir"]) / "weights" / STATE_FILE)
    sb = load_state(pd / "weights" / STATE_FILE)
    for k in sa["model"]:
        assert torch.equal(sa["model"][k], sb["model"][k]), k
    for pa, pb in zip(sa["optimizer"]["state"].values(), sb["optimizer"]["state"].values()):
        assert torch.equal(pa["momentum_buffer"], pb["momentum_buffer"])
    assert sa["ema"]["updates"] == sb["ema"]["updates"]
    csv_a = Path(full["save_dir"], "results.csv").read_text().splitlines()
    csv_b = (pd / "results.csv").read_text().splitlines()
    assert len(csv_b) == 3
    assert [r.split(",")[:9] for r in csv_a] == [r.split(",")[:9] for r in csv_b]  # all but lr/time columns
    # a finished run has nothing left to resume
    assert main(["train", "--resume", str(pd)]) == 2


def test_finetune_new_nc_freeze_and_adamw(tmp_path, synth, capsys):
    from yoloport.data.synth import make_synthetic_dataset

    base = run_train(tmp_path, synth, epochs=1, noval=True, name="base")
    data2 = make_synthetic_dataset(tmp_path / "two", {"train": 4, "val": 2}, (96, 96), seed=5, workers=1,
                                   max_objects=2, min_object_size=10, classes=["star", "ring"])
    before, _ = read_checkpoint(base["last"])
    res = run_train(tmp_path, data2, cfg=None, weights=base["last"], epochs=1, freeze=[3], optimizer="AdamW",
                    name="ft", noval=True, cos_lr=True, label_smoothing=0.1)
    out = capsys.readouterr().out
    assert "nc 3 -> 2" in out and "frozen:" in out
    after, meta = read_checkpoint(res["last"])
    assert meta["nc"] == 2 and after["model.24.m.0.weight"].shape[0] == 3 * 7
    for k in before:
        if k.startswith(("model.0.", "model.1.", "model.2.")) and "num_batches" not in k:
            if k.endswith(("running_mean", "running_var")):
                continue  # BN statistics still adapt in train mode, as in YOLOv5
            assert torch.equal(before[k], after[k]), k
    assert not torch.equal(before["model.4.cv1.bn.bias"], after["model.4.cv1.bn.bias"])  # bias lr 0.1 in warm-up


def test_autoanchor_replaces_bad_anchors():
    from yoloport.engine.autoanchor import anchor_metrics, check_anchors

    cfg = tiny_cfg()
    cfg["anchors"] = [[1, 1, 2, 2, 3, 3], [4, 4, 5, 5, 6, 6], [7, 7, 8, 8, 9, 9]]  # far too small
    torch.manual_seed(0)
    model = DetectionModel(cfg, nc=1)
    rng = np.random.default_rng(0)
    labels = [np.concatenate([np.zeros((5, 1)), rng.uniform(0.3, 0.7, (5, 2)), rng.uniform(0.05, 0.5, (5, 2))], 1)
              .astype(np.float32) for _ in range(20)]
    shapes = np.full((20, 2), 320)
    rep = check_anchors(model, shapes, labels, 320, thr=4.0, seed=0, gen=200)
    assert rep.bpr < 0.98 and rep.replaced and rep.new_bpr > rep.bpr and rep.new_bpr > 0.98
    px = (model.detect.anchors * model.detect.stride.view(-1, 1, 1)).view(-1, 2).numpy()
    assert anchor_metrics(np.concatenate([lb[:, 3:5] * 320 for lb in labels]), px)[0] > 0.98
    assert "new anchors" in rep.message()


def test_cli_bad_inputs(tmp_path, synth, capsys):
    assert main(["train", "--resume", str(tmp_path / "nope")]) == 2
    assert "cannot resume" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "missing.yaml"), "--cfg", "yolov5n"]) == 2
    assert "data YAML not found" in capsys.readouterr().err
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "data.yaml").write_text(f"path: {empty}\ntrain: images\nval: images\nnames: [a]\n")
    assert main(["train", "--data", str(empty / "data.yaml"), "--cfg", "yolov5n", "--device", "cpu"]) == 2
    assert "no images" in capsys.readouterr().err
    assert main(["train", "--data", str(synth), "--device", "cpu", "--workers", "0"]) == 2
    assert "nothing to train" in capsys.readouterr().err
    root = Path(synth).parent
    noval = tmp_path / "noval.yaml"
    noval.write_text(f"path: {root}\ntrain: images/train\nnames: [circle, rectangle, triangle]\n")
    assert main(["train", "--data", str(noval), "--cfg", "yolov5n", "--device", "cpu"]) == 2
    assert "no 'val' split" in capsys.readouterr().err
    missing = tmp_path / "missing_split.yaml"
    missing.write_text(f"path: {root}\ntrain: images/nope\nval: images/val\nnames: [a, b, c]\n")
    assert main(["train", "--data", str(missing), "--cfg", "yolov5n", "--device", "cpu"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["train", "--data", str(synth), "--cfg", "yolov5n", "--hyp", str(noval), "--device", "cpu"]) == 2
    assert "unknown hyperparameter" in capsys.readouterr().err


def test_one_image_dataset_with_bad_labels_and_background(tmp_path, capsys):
    import shutil

    from yoloport.data.synth import make_synthetic_dataset

    src = make_synthetic_dataset(tmp_path / "one", {"train": 2, "val": 1}, (64, 64), seed=1, workers=1,
                                 max_objects=2, min_object_size=8, classes=["circle"])
    root = src.parent
    lbl = sorted((root / "labels" / "train").glob("*.txt"))
    lbl[0].write_text(lbl[0].read_text() + "5 0.5 0.5 0.2 0.2\n0 1.5 0.5 0.2 0.2\n")  # bad class, out of range
    lbl[1].unlink()  # background image
    shutil.rmtree(root / "labels" / "val")
    res = run_train(tmp_path, src, epochs=1, batch_size=8, img_size=[64])
    out = capsys.readouterr().out
    assert "1 background" in out and "2 bad label lines" in out
    assert f"{lbl[0]}:" in out and "class 5 is not in 0..0" in out
    assert res["dataset"]["background"] == 1 and res["epochs_completed"] == 1


@pytest.mark.slow
def test_ddp_two_processes_matches_single_process(tmp_path):
    """torchrun with 2 CPU processes (gloo): runs, writes one run dir, and validates like one process.

    With the embedded default model as the start (when present) both runs fine-tune a detector that
    already works, so their mAPs are comparable numbers rather than two zeros."""
    import yaml

    from yoloport.data.synth import make_synthetic_dataset

    default = REPO / "yoloport" / "assets" / "default.safetensors"
    size = 160 if default.is_file() else 96
    data = make_synthetic_dataset(tmp_path / "d", {"train": 8, "val": 8}, (size, size), seed=11, workers=1,
                                  max_objects=3, min_object_size=16)
    if default.is_file():
        start = ["--weights", str(default), "--hyp", str(tmp_path / "hyp.yaml"), "--noautoanchor"]
        (tmp_path / "hyp.yaml").write_text(yaml.safe_dump({"lr0": 0.001, "warmup_bias_lr": 0.001}))
    else:
        cfg_path = tmp_path / "tiny.yaml"
        cfg_path.write_text(yaml.safe_dump(tiny_cfg()))
        start = ["--cfg", str(cfg_path)]
    args = ["--data", str(data), *start, "--epochs", "1", "--batch-size", "4", "--img-size", str(size),
            "--device", "cpu", "--workers", "0", "--seed", "3", "--noplots", "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
                        "-m", "yoloport", "train", *args, "--project", str(tmp_path / "ddp")],
                       env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == ["exp"]
    ddp = json.loads((tmp_path / "ddp" / "exp" / "results.json").read_text())
    assert ddp["world_size"] == 2 and ddp["epochs_completed"] == 1
    r1 = subprocess.run([sys.executable, "-m", "yoloport", "train", *args, "--project", str(tmp_path / "one")],
                        env=env, capture_output=True, text=True, timeout=900)
    assert r1.returncode == 0, r1.stderr[-3000:]
    single = json.loads((tmp_path / "one" / "exp" / "results.json").read_text())
    m1, m2 = single["metrics"], ddp["metrics"]
    print(f"mAP50 single {m1['mAP50']:.4f} ddp {m2['mAP50']:.4f}; mAP50-95 single {m1['mAP50_95']:.4f} ddp {m2['mAP50_95']:.4f}")
    assert abs(m1["mAP50"] - m2["mAP50"]) <= 0.05 + 0.1 * max(m1["mAP50"], m2["mAP50"])


def test_cli_run_config_with_flag_overrides(tmp_path, synth):
    import yaml

    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_cfg()))
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(yaml.safe_dump({
        "data": str(synth), "model": "tiny.yaml", "epochs": 5, "batch_size": 4, "img_size": [96, 96],
        "device": "cpu", "workers": 0, "project": str(tmp_path / "runs"), "name": "cfgrun", "noplots": True,
        "hyp": {"lr0": 0.005, "mosaic": 0.5},
    }))
    rc = main(["train", "--config", str(run_yaml), "--epochs", "1", "--noval", "--no-progress", "--seed", "4"])
    assert rc == 0
    d = tmp_path / "runs" / "cfgrun"
    args = yaml.safe_load((d / "args.yaml").read_text())
    hyp = yaml.safe_load((d / "hyp.yaml").read_text())
    assert args["epochs"] == 1 and args["seed"] == 4 and args["cfg"] == str(cfg_path)  # relative to run.yaml
    assert hyp["lr0"] == 0.005 and hyp["mosaic"] == 0.5 and hyp["momentum"] == 0.937
    assert json.loads((d / "results.json").read_text())["epochs_completed"] == 1


@pytest.mark.slow
def test_sigkill_mid_training_then_resume(tmp_path, synth):
    """Kill -9 while training (after the first state was written); every file stays readable and
    --resume finishes the run."""
    import signal
    import time

    import yaml

    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_cfg()))
    epochs = 40  # enough that the kill lands mid-run on a fast machine too (a finished run proves nothing)
    cmd = [sys.executable, "-m", "yoloport", "train", "--data", str(synth), "--cfg", str(cfg_path), "--epochs", str(epochs),
           "--batch-size", "4", "--img-size", "96", "--device", "cpu", "--workers", "0", "--noplots", "--no-progress",
           "--project", str(tmp_path / "runs")]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = tmp_path / "runs" / "exp" / "weights" / STATE_FILE
    t0 = time.time()
    while not state.exists() and time.time() - t0 < 300 and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)  # into the next epoch (or its checkpoint writes)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    wdir = state.parent
    st = load_state(state)
    assert 0 <= st["epoch"] < epochs - 1
    read_checkpoint(wdir / "last.safetensors")
    assert main(["train", "--resume", str(tmp_path / "runs" / "exp"), "--no-progress"]) == 0
    assert load_state(state)["epoch"] == epochs - 1
    assert not [p for p in wdir.iterdir() if ".tmp-" in p.name]  # a killed write's temp file is cleaned up
    _, meta = read_checkpoint(wdir / "last.safetensors")
    assert meta["epoch"] == epochs - 1


@pytest.mark.fixtures
@pytest.mark.slow
def test_finetune_official_ultralytics_checkpoint(tmp_path, synth):
    from yoloport.fixtures import fixtures_dir

    fx = fixtures_dir()
    pt = fx / "weights" / "yolov5n-v6.1.pt" if fx else None
    if pt is None or not pt.is_file():
        pytest.skip("fixture weights/yolov5n-v6.1.pt not present (set YOLOPORT_FIXTURES)")
    from yoloport.models import load_model

    src = load_model(pt)
    res = run_train(tmp_path, synth, cfg=None, weights=str(pt), epochs=1, freeze=[10], noval=True, name="pt",
                    noautoanchor=True)
    sd, meta = read_checkpoint(res["last"])
    assert meta["nc"] == 3 and meta["yaml"]["nc"] == 3
    own = src.state_dict()
    assert sd["model.24.m.0.weight"].shape[0] == 3 * 8 and own["model.24.m.0.weight"].shape[0] == 3 * 85
    assert torch.equal(sd["model.0.conv.weight"], own["model.0.conv.weight"].float())  # frozen backbone
    assert torch.equal(sd["model.24.anchors"], own["model.24.anchors"].float())  # pretrained anchors kept


def test_optimizer_groups_schedule_warmup_and_ema():
    from yoloport.engine.ema import ModelEMA, ema_decay
    from yoloport.engine.optim import accumulate_steps, build_optimizer, lr_lambda, param_groups, set_epoch_lr, warmup

    torch.manual_seed(0)
    model = DetectionModel(tiny_cfg(), nc=2)
    decay, norm_w, bias = param_groups(model)
    assert len(decay) + len(norm_w) + len(bias) == len(list(model.parameters()))
    bn = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norm_w) == len(bn) and all(p.ndim == 1 for p in bias)
    opt = build_optimizer(model, "SGD", lr=0.01, momentum=0.937, weight_decay=5e-4)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 5e-4, 0.0]
    assert opt.param_groups[0]["nesterov"] is True
    assert accumulate_steps(16) == 4 and accumulate_steps(128) == 1
    lf = lr_lambda(10, 0.01)
    assert lf(0) == 1.0 and lf(10) == pytest.approx(0.01)
    cf = lr_lambda(10, 0.01, cos=True)
    assert cf(0) == 1.0 and cf(10) == pytest.approx(0.01) and cf(5) == pytest.approx(0.505)
    hyp = {"warmup_bias_lr": 0.1, "warmup_momentum": 0.8, "momentum": 0.937}
    acc = warmup(opt, 0, 100, lf, 0, hyp, batch_size=16)
    assert acc == 1 and opt.param_groups[0]["lr"] == pytest.approx(0.1) and opt.param_groups[1]["lr"] == 0.0
    assert opt.param_groups[1]["momentum"] == pytest.approx(0.8)
    acc = warmup(opt, 100, 100, lf, 0, hyp, batch_size=16)
    assert acc == 4 and all(g["lr"] == pytest.approx(0.01) for g in opt.param_groups)
    set_epoch_lr(opt, lf, 5)
    assert opt.param_groups[2]["lr"] == pytest.approx(0.01 * lf(5))
    ema = ModelEMA(model)
    assert ema_decay(0) == 0.0 and ema_decay(10**6) == pytest.approx(0.9999)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    d = ema_decay(1)
    k = "model.0.conv.weight"
    expect = d * (model.state_dict()[k] - 1.0) + (1 - d) * model.state_dict()[k]
    assert torch.allclose(ema.ema.state_dict()[k], expect, atol=1e-6)
