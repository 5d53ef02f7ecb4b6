"""``yoloport qat``: quantization-aware fine-tuning for one backend, then its int8 artifact.

Examples::

    yoloport qat --weights yolov5n.pt --data coco-extra.yaml --backend onnxruntime --calib-n 128
    yoloport qat --weights yolov5n.pt --data coco-extra.yaml --backend onnxruntime --objective labels --epochs 3 --out q/
    yoloport qat --weights yolov5n.pt --data data.yaml --backend mlu-sim --calib calib/ --lr0 5e-5

The fake-quantized model (the backend's grid, see :mod:`yoloport.analysis.qat`) starts from the PTQ ranges
of ``--calib`` (default the data's train split). ``--objective distill`` (the default) trains it to
reproduce the float model's raw outputs on the calibration images themselves (no labels, no training loop;
``--steps``, ``--batch-size``, ``--lr0``, ``--grid-lr``; see :mod:`yoloport.quant.qat_distill`).
``--objective labels`` runs the training loop on the data's train split instead (``--epochs``, ``--hyp``,
``--time-limit``; given without ``--objective``, they choose it), reporting on its val split (which must not
share an image with the calibration images). Distillation is the default because it measured better:
yolov5n v6.1 640 on ONNX Runtime, mAP@0.5:0.95 drop on unseen images +0.13 / +0.19 points over five
calibration seeds; on seed 0 distillation lost -0.36 / +0.14 and one label epoch +0.66 / +0.79
(docs/notes/2026-11-30-session8.md). The
artifact in ``--out`` is what ``yoloport val/detect --artifact`` run: ``model.onnxruntime.int8.onnx``,
``model.openvino.int8.xml`` (both from ``model.qdq.onnx``, the QDQ graph with the learned grids),
``model.mlusim.safetensors``, ``model.rknn``; the fine-tuning run is in ``--out/train``
(``--out/distill`` with distillation).
Prints a summary and writes it as JSON (``--out/qat.json`` or ``--json``).

Exit status: 0 built, 2 user error.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import YoloportError

LABEL_OPTIONS = ("epochs", "hyp", "time_limit_s")  # --epochs, --hyp, --time-limit: given, they imply labels
LABEL_EPOCHS = 3  # the label loop's default (not in DEFAULTS: a given --epochs chooses the label objective)
DEFAULTS = {"calib_n": 64, "calib_seed": 0, "batch_size": 8, "workers": 2, "seed": 0, "device": "cpu"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..backends.registry import ARTIFACT_BACKENDS
    from ..config import add_common_arguments

    add_common_arguments(p)
    p.add_argument("--data", help="data YAML: fine-tune on its train split, report on its val split")
    p.add_argument("--backend", choices=ARTIFACT_BACKENDS, help="the backend whose int8 grid is learned and built")
    p.add_argument("--calib", metavar="SRC", help="images for the initial (PTQ) ranges (default: the data's train split)")
    p.add_argument("--calib-n", type=int, default=None, help="number of calibration images (default 64)")
    p.add_argument("--calib-seed", type=int, default=None, help="seed for sampling them (default 0)")
    p.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs (default 3)")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=None, help="batch size (default 8 with labels, 4 with distill; one step per batch)")
    p.add_argument("--img-size", nargs="+", type=int, metavar="W H", help="fixed size of training, calibration and the artifact")
    p.add_argument("--lr0", type=float, default=None, help="initial learning rate of the weights (default 5e-5 with labels, 1e-5 with distill; linear decay to a tenth)")
    p.add_argument("--hyp", help="hyperparameter YAML over QAT's defaults")
    p.add_argument("--objective", choices=("labels", "distill"), default=None,
                   help="learn from the float model (distill, the default) or from the data's labels (labels; "
                        "implied by --epochs, --hyp or --time-limit)")
    p.add_argument("--steps", type=int, default=None, help="distill: optimiser steps (default 64)")
    p.add_argument("--grid-lr", dest="grid_lr", type=float, default=None,
                   help="distill: learning rate of the learned scales and zero points (default 1e-3)")
    p.add_argument("--head-fp32", choices=("tail", "convs", "none"), default=None,
                   help="what of the head stays float (default: the backend's)")
    p.add_argument("--per-channel", dest="per_channel", action="store_true", default=None, help="per-channel weights")
    p.add_argument("--per-tensor", dest="per_channel", action="store_false", help="per-tensor weights")
    p.add_argument("--platform", help="rknn: target platform (rk3588, ...)")
    p.add_argument("--device", default=None, help="cpu or a CUDA device (default cpu)")
    p.add_argument("--workers", type=int, default=None, help="data loader processes (default 2)")
    p.add_argument("--seed", type=int, default=None, help="training seed (default 0)")
    p.add_argument("--time-limit", dest="time_limit_s", type=float, default=None, metavar="S",
                   help="stop after the epoch that would overrun S seconds")
    p.add_argument("--out", help="output folder (default runs/qat/<backend>)")
    p.add_argument("--overwrite", action="store_true", help="allow a non-empty --out folder and an existing --json file")
    p.add_argument("--json", metavar="OUT", help="summary JSON path (default OUT/qat.json)")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bars")


def qconfig_from_args(args) -> dict:
    """The backend options of the command line that shape the scheme and the build."""
    return {k: getattr(args, k) for k in ("head_fp32", "per_channel", "platform") if getattr(args, k, None) is not None}


def distill_options(args) -> dict | None:
    """The distillation settings given on the command line (None for the label objective); a setting of
    the other objective is refused."""
    if args.objective != "distill":
        given = [f for f, k in (("--steps", "steps"), ("--grid-lr", "grid_lr")) if getattr(args, k, None) is not None]
        if given:
            raise YoloportError(f"{', '.join(given)} apply to --objective distill")
        return None
    if getattr(args, "epochs_given", False):
        raise YoloportError("--epochs applies to --objective labels; distillation runs --steps")
    from ..quant.qat_distill import DistillSettings

    options = {"steps": args.steps, "grid_lr": args.grid_lr, "batch_size": args.batch_size if args.batch_size_given else None}
    DistillSettings.from_options({**options, "lr": args.lr0})  # bad values refused before any work
    return options


def default_objective(args) -> str:
    """``labels`` when an option of the label loop was given (:data:`LABEL_OPTIONS`), else ``distill``."""
    return "labels" if any(getattr(args, k, None) is not None for k in LABEL_OPTIONS) else "distill"


def _check(args) -> None:
    if not args.data:
        raise YoloportError("no dataset: pass --data DATA_YAML (its train split to fine-tune on, its val split to report on)")
    if not Path(str(args.data)).is_file():
        raise YoloportError(f"data YAML not found: {args.data}")
    if not args.backend:
        raise YoloportError("no backend given: pass --backend (onnxruntime, openvino, rknn, mlu-sim)")
    for k in ("epochs", "batch_size", "calib_n"):
        if int(getattr(args, k)) < 1:
            raise YoloportError(f"--{k.replace('_', '-')} must be >= 1, got {getattr(args, k)}")
    if args.lr0 is not None and not args.lr0 > 0:
        raise YoloportError(f"--lr0 must be > 0, got {args.lr0}")
    if args.time_limit_s is not None and not args.time_limit_s > 0:
        raise YoloportError(f"--time-limit must be > 0, got {args.time_limit_s}")


def summary_rows(r: dict) -> list[tuple[str, str]]:
    m = r.get("metrics") or {}
    sch = r.get("scheme") or {}
    return [
        ("backend", r["backend"]),
        ("artifact", str(r["artifact"])),
        ("scheme", f"{sch.get('activations')} activations, weights per {'channel' if sch.get('per_channel_weights') else 'tensor'}"
                   f"{', outputs rounded' if sch.get('quantize_outputs') else ''}, head_fp32={sch.get('head_fp32')}"),
        ("calibration", f"{r['calibration'].get('count')} images from {r['calibration'].get('source')} (initial ranges)"),
        ("fine-tuning", _fine_tuning(r)),
        ("fake-quant val", f"mAP50 {m.get('mAP50', float('nan')):.4f}  mAP50-95 {m.get('mAP50_95', float('nan')):.4f}" if m else "-"),
        ("QDQ graph", f"{r['qdq_onnx']} ({r['qdq'].get('convs')} convs, {r['qdq'].get('quantize_nodes')} Q, "
                      f"{r['qdq'].get('dequantize_nodes')} DQ)" if r.get("qdq_onnx") else "-"),
    ]


def _fine_tuning(r: dict) -> str:
    d = r.get("distill")
    if r.get("objective") == "distill" and d:
        return (f"distillation from the float model: {d['steps']} steps on {d['images']} image(s), loss "
                f"{d['loss_first']:.5f} -> {d['loss_last']:.5f} ({d['seconds']:.0f} s), run {r['train_dir']}")
    return f"{r['epochs_completed']} epoch(s), run {r['train_dir']}"


def run(args: argparse.Namespace) -> int:
    from ..analysis.qat import qat_port
    from ..backends.registry import canonical_name, require_artifact_backend
    from ..config import model_source, resolve_settings
    from ..io.paths import claim_out_dir, claim_output_file, unlock_run_dir, write_text_atomic
    from .quantize import format_table, load_model_from_args, resolve_img_size

    epochs_given, batch_size_given = args.epochs is not None, args.batch_size is not None
    args = resolve_settings(args, dict(DEFAULTS))
    args.objective = args.objective or default_objective(args)
    if args.epochs is None:
        args.epochs = LABEL_EPOCHS
    args.epochs_given, args.batch_size_given = epochs_given, batch_size_given
    _check(args)
    distill = distill_options(args)
    backend = canonical_name(args.backend)
    spec = require_artifact_backend(backend, "quantize")
    qconfig = qconfig_from_args(args)
    spec.check_qconfig_keys(qconfig)
    if args.json:
        claim_output_file(args.json, bool(args.overwrite), what="--json")
    model = load_model_from_args(args)
    hw = resolve_img_size(args, model)
    out, lock = claim_out_dir(args.out or f"runs/qat/{backend}", overwrite=bool(args.overwrite), explicit=bool(args.out))
    try:
        res = qat_port(model_source(args), args.data, backend, out, calib=args.calib, calib_n=int(args.calib_n),
                       calib_seed=int(args.calib_seed), epochs=int(args.epochs), batch_size=int(args.batch_size),
                       img_size_hw=hw, lr0=args.lr0, hyp=args.hyp, qconfig=qconfig, device=str(args.device),
                       workers=int(args.workers), seed=int(args.seed), time_limit_s=args.time_limit_s,
                       progress=bool(args.progress if args.progress is not None else True),
                       objective=str(args.objective), distill=distill)
    finally:
        unlock_run_dir(lock)
    summary = res.to_dict()
    print(format_table(summary_rows(summary)))
    js = Path(args.json) if args.json else out / "qat.json"
    write_text_atomic(js, json.dumps(summary, indent=2, default=str))
    print(f"summary: {js}")
    return 0
