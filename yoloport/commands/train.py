"""``yoloport train``: train a YOLOv5 model with the flags Ultralytics users know.

Examples::

    yoloport train --data data.yaml --cfg yolov5n --epochs 100 --img-size 640
    yoloport train --data data.yaml --weights yolov5s.pt --freeze 10 --epochs 30
    yoloport train --config run.yaml --epochs 5          # flags override the run config
    yoloport train --resume runs/train/exp3              # continue after the last completed epoch
    torchrun --nproc_per_node 2 -m yoloport train --data data.yaml --cfg yolov5n --device cpu
    yoloport train --task face --data faces/data.yaml --weights yolov5n-0.5.pt --epochs 1   # landmarks too

A model whose head has landmarks (yolov5-face) reads its data as 15-column face labels and learns
its landmarks; ``--task face`` says that is wanted (a model without landmarks is then refused) and,
when no model is named, starts from the ``yolov5n-0.5-face`` config.

Everything a run writes goes to ``runs/train/exp{N}`` (see :mod:`yoloport.engine.train`).
"""
from __future__ import annotations

import argparse

from ..config import add_common_arguments, resolve_settings
from ..errors import YoloportError

TRUE = dict(action="store_true", default=None)
FACE_DEFAULT_CFG = "yolov5n-0.5-face"  # what --task face trains when no model is named


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p, weights=False)  # --config, --model-key, --registry
    p.add_argument("--weights", help="checkpoint to start from (.safetensors or Ultralytics .pt; or --model-key)")
    p.add_argument("--data", help="data YAML (path, train, val, names)")
    p.add_argument("--cfg", "--model", dest="cfg", help="model YAML or bundled config (yolov5n, yolov5s, ...)")
    p.add_argument("--epochs", type=int, help="epochs (100)")
    p.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, help="total batch size over all processes (16)")
    p.add_argument("--img-size", "--img_size", "--imgsz", dest="img_size", nargs="+", type=int, metavar="W H",
                   help="training size, W H or one number (640)")
    p.add_argument("--hyp", help="hyperparameter YAML (default: YOLOv5's hyp.scratch-low)")
    p.add_argument("--rect", help="rectangular batches (no mosaic)", **TRUE)
    p.add_argument("--cos-lr", "--cos_lr", dest="cos_lr", help="cosine one-cycle lr schedule", **TRUE)
    p.add_argument("--optimizer", choices=("SGD", "Adam", "AdamW"), help="optimizer (SGD)")
    p.add_argument("--freeze", nargs="+", type=int, help="freeze the first N layers, or the listed layer indices")
    p.add_argument("--device", help="cpu, 0, or 0,1 (default: CUDA if available)")
    p.add_argument("--workers", type=int, help="data loader processes per training process (8)")
    p.add_argument("--seed", type=int, help="global seed (0)")
    p.add_argument("--project", help="parent of the run directory (runs/train)")
    p.add_argument("--name", help="run directory name (exp)")
    p.add_argument("--exist-ok", "--exist_ok", dest="exist_ok", help="reuse project/name if it exists", **TRUE)
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last completed epoch")
    p.add_argument("--noval", help="validate only after the final epoch", **TRUE)
    p.add_argument("--nosave", help="save weights only after the final epoch", **TRUE)
    p.add_argument("--noplots", help="no PNG plots", **TRUE)
    p.add_argument("--noautoanchor", help="keep the model's anchors", **TRUE)
    p.add_argument("--label-smoothing", "--label_smoothing", dest="label_smoothing", type=float, help="label smoothing epsilon (0)")
    p.add_argument("--sync-bn", "--sync_bn", dest="sync_bn", help="SyncBatchNorm under DDP (CUDA)", **TRUE)
    p.add_argument("--cache", help="keep resized training images in memory", **TRUE)
    p.add_argument("--stop-after", dest="stop_after", type=int, metavar="N",
                   help="stop after N epochs of this invocation (resume later with --resume)")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bars")
    p.add_argument("--task", choices=("detect", "face"),
                   help="face: train landmarks too (the model must have a landmark head; default cfg yolov5n-0.5-face)")


def run(args: argparse.Namespace) -> int:
    from ..engine.train import DEFAULTS, train

    defaults = dict(DEFAULTS)
    s = resolve_settings(args, defaults)
    if getattr(args, "resume", None):
        # a resumed run takes its settings from the run; only what was typed now overrides
        s = argparse.Namespace(**{k: v for k, v in vars(args).items() if v is not None})
    for k in ("batch_size", "epochs", "workers"):
        v = getattr(s, k, None)
        if v is not None and int(v) < (0 if k == "workers" else 1):
            raise YoloportError(f"--{k.replace('_', '-')} must be >= {0 if k == 'workers' else 1}, got {v}")
    if getattr(s, "task", None) == "face" and not (s.cfg or s.weights or getattr(s, "model_key", None) or s.resume):
        s.cfg = FACE_DEFAULT_CFG
    res = train(s)
    if res.get("save_dir"):
        m = res.get("metrics") or {}
        print(f"\n{'run':<12}{res['save_dir']}")
        print(f"{'epochs':<12}{res['epochs_completed']}/{res['epochs']}")
        if m:
            print(f"{'P':<12}{m.get('precision', 0):.4f}\n{'R':<12}{m.get('recall', 0):.4f}")
            print(f"{'mAP50':<12}{m.get('mAP50', 0):.4f}\n{'mAP50-95':<12}{m.get('mAP50_95', 0):.4f}")
        print(f"{'best':<12}{res.get('best')}\n{'last':<12}{res.get('last')}")
        print(f"{'summary':<12}{res['save_dir']}/results.json")
    return 0
