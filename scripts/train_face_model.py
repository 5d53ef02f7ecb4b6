"""Train yoloport's embedded face model: yolov5-face's yolov5n-0.5 at 320 on synthetic faces, on this CPU.

    nice -n 15 python scripts/train_face_model.py                      # ~35 minutes wall time
    python scripts/train_face_model.py --budget-min 4 --out /tmp/f.safetensors   # a quick one
    nice -n 15 python scripts/train_face_model.py --resume --budget-min 30      # train the last run on

1. generates a synthetic face dataset (:func:`yoloport.data.synth_face.make_face_dataset`: drawn
   faces with five exactly known landmarks, 15-column labels) at ``--img-size``;
2. measures this machine's training speed and picks the number of epochs that fits ``--budget-min``
   (a time limit also stops training after the epoch that would overrun it);
3. trains ``yolov5n-0.5-face`` from scratch (random init, nothing but this repository needed) with
   :func:`yoloport.engine.train.train`: box, objectness and yolov5-face's landmark wing loss;
4. evaluates the best weights on a freshly generated face set with a seed it was not trained on
   (:func:`yoloport.engine.face_val.evaluate_face_labels`: mAP@0.5 on the 15-column labels and the
   landmark NME), saves them to ``--out`` in float16 (yoloport's safe format; under 1 MB) with the
   metrics, and a JSON summary next to it.

The numbers of the shipped ``yoloport/assets/face.safetensors`` are in ``face.json`` beside it.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from yoloport.data.synth_face import FaceOptions, make_face_dataset  # noqa: E402
from yoloport.engine.train import train  # noqa: E402
from yoloport.engine.train_budget import default_threads, epochs_for_budget, measure_images_per_s  # noqa: E402
from yoloport.io.checkpoint import atomic_write  # noqa: E402
from yoloport.models import load_model, save_model  # noqa: E402

# Few optimiser steps fit in a CPU budget: AdamW, a step every batch, short warm-up.
HYP = {"lr0": 0.002, "lrf": 0.1, "warmup_epochs": 1.0, "warmup_bias_lr": 0.01}
CFG = "yolov5n-0.5-face"
EVAL_SEED = 20261129  # not a training seed


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(REPO / "yoloport" / "assets" / "face.safetensors"))
    p.add_argument("--work", default=str(REPO / "runs" / "face_model"), help="datasets and the training run")
    p.add_argument("--img-size", type=int, default=320)
    p.add_argument("--n-train", type=int, default=400)
    p.add_argument("--n-val", type=int, default=24)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--budget-min", type=float, default=35.0, help="wall-time budget for everything, minutes")
    p.add_argument("--epochs", type=int, default=None, help="default: what fits the budget")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-n", type=int, default=100, help="images in the fresh evaluation set")
    p.add_argument("--eval-seed", type=int, default=EVAL_SEED)
    p.add_argument("--resume", action="store_true",
                   help="continue the previous run in --work (e.g. one a time limit stopped) for another budget")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: 1 when the CPU is oversubscribed, else all cores)")
    a = p.parse_args()
    if a.eval_seed == a.seed:
        p.error("--eval-seed must differ from --seed (evaluate on faces the model was not trained on)")
    threads = a.threads or default_threads()
    torch.set_num_threads(threads)

    t_start = time.time()
    budget_s = a.budget_min * 60
    work = Path(a.work)
    if a.resume:
        res = train({"resume": str(work / "runs" / "train"), "time_limit_s": budget_s - 120,
                     "progress": sys.stderr.isatty()})
        return finish(a, res, t_start)
    data_yaml = make_face_dataset(work / "data", {"train": a.n_train, "val": a.n_val}, a.img_size, seed=a.seed)
    print(f"dataset: {data_yaml} ({a.n_train} train, {a.n_val} val) in {time.time() - t_start:.0f} s")

    ips = measure_images_per_s(CFG, 1, a.img_size, a.batch_size, HYP, steps=2)
    left = budget_s - (time.time() - t_start) - 120  # keep time for the final evaluation and saving
    fit, per_epoch = epochs_for_budget(left, a.n_train, a.n_val, ips)
    epochs = a.epochs or fit
    print(f"measured {ips:.1f} training images/s ({threads} threads) -> {epochs} epochs of ~{per_epoch:.0f} s")

    res = train({
        "data": str(data_yaml), "cfg": CFG, "task": "face", "epochs": epochs, "batch_size": a.batch_size,
        "img_size": [a.img_size], "hyp": HYP, "optimizer": "AdamW", "device": "cpu", "workers": 0,
        "seed": a.seed, "project": str(work / "runs"), "name": "train", "exist_ok": False, "nbs": a.batch_size,
        "warmup_min_iters": 20, "time_limit_s": left, "cache": True, "progress": sys.stderr.isatty(),
        "noplots": True,
    })
    return finish(a, res, t_start)


def finish(a, res: dict, t_start: float) -> int:
    """Evaluate the best weights on a fresh synthetic face set and save them with their metrics."""
    from yoloport.backends.registry import REFERENCE, load_runner
    from yoloport.engine.face_val import evaluate_face_labels

    work = Path(a.work)
    weights = res["best"] or res["last"]
    model = load_model(weights)
    model.names = ["face"]
    model.img_size = (a.img_size, a.img_size)

    eval_yaml = make_face_dataset(work / "eval", {"val": a.eval_n}, a.img_size, seed=a.eval_seed,
                                  options=FaceOptions())
    runner = load_runner(REFERENCE, model=model)
    m = evaluate_face_labels(runner, eval_yaml.parent / "val", img_size=a.img_size)
    metrics = {"mAP50": m["mAP50"], "mAP50_95": m["mAP50_95"], "precision": m["precision"], "recall": m["recall"],
               "NME": m["NME"], "nme_faces": m["nme_faces"], "eval_images": m["images"], "eval_faces": m["labels"],
               "eval_seed": a.eval_seed}
    info = {"origin": "scripts/train_face_model.py", "cfg": CFG, "img_size_wh": [a.img_size, a.img_size],
            "init": "random (trained from scratch)", "train_images": a.n_train, "train_seed": a.seed,
            "epochs": res["epochs_completed"], "train_time_s": round(res["time_s"], 1), "eval": metrics,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    out = Path(a.out)
    save_model(model, out, half=True, **info)
    atomic_write(out.with_suffix(".json"), lambda f: f.write((json.dumps(info, indent=2) + "\n").encode()))
    print(f"\nsaved {out} ({out.stat().st_size / 1e6:.2f} MB), {res['epochs_completed']} epochs in "
          f"{res['time_s'] / 60:.1f} min")
    nme = "n/a" if m["NME"] is None else f"{m['NME']:.4f} over {m['nme_faces']} faces"
    print(f"fresh synthetic face set (seed {a.eval_seed}, {m['images']} images, {m['labels']} faces): "
          f"P {m['precision']:.3f} R {m['recall']:.3f} mAP50 {m['mAP50']:.4f} mAP50-95 {m['mAP50_95']:.4f} NME {nme}")
    print(f"total wall time {(time.time() - t_start) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
