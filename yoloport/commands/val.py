"""``yoloport val``: P, R, mAP@0.5 and mAP@0.5:0.95 on a data YAML, on any backend (the seed's test.py)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..config import add_common_arguments, add_run_folder_arguments, resolve_settings
from ..errors import YoloportError
from ..io.paths import claim_results_dir, write_text_atomic
from ._model_args import (
    add_backend_arguments,
    img_size_from_settings,
    load_model_from_settings,
    make_runner,
    default_model_key,
    synthetic_face_val_set,
    synthetic_val_set,
)

DEFAULTS = {
    "data": None,
    "img_size": None,
    "batch_size": 8,
    "conf_thres": 0.001,
    "iou_thres": 0.6,
    "max_det": 300,
    "split": "val",
    "coco_json": None,
    "save_json": False,
    "project": "runs/val",
    "name": "exp",
    "exist_ok": False,
    "overwrite": False,
    "no_rect": False,
    "strict_labels": False,
    "task": "detect",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p)
    p.add_argument("--data", help="Ultralytics data YAML (path, train, val, names)")
    p.add_argument("--split", help="split to validate: val (default), train or test")
    p.add_argument("--img-size", "--img_size", dest="img_size", nargs="+", type=int,
                   help="one number (longest side, rectangular batches) or W H (fixed letterbox)")
    p.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, help="batch size (8)")
    p.add_argument("--conf-thres", "--conf_thres", dest="conf_thres", type=float, help="confidence threshold (0.001)")
    p.add_argument("--iou-thres", "--iou_thres", dest="iou_thres", type=float, help="NMS IoU threshold (0.6)")
    p.add_argument("--max-det", dest="max_det", type=int, help="maximum detections per image (300)")
    p.add_argument("--no-rect", dest="no_rect", action="store_true", default=None, help="square batches, no rectangular shapes")
    p.add_argument("--coco-json", dest="coco_json", help="COCO instances JSON: also report the official COCO metrics")
    p.add_argument("--save-json", dest="save_json", action="store_true", default=None, help="save predictions as COCO JSON")
    p.add_argument("--strict-labels", dest="strict_labels", action="store_true", default=None,
                   help="stop on a malformed label line instead of reporting and skipping it")
    p.add_argument("--task", choices=("detect", "face"),
                   help="face: on --data FOLDER with images/<event>/*.jpg and ground_truth/wider_*_val.mat, WIDER FACE "
                        "easy/medium/hard AP (official protocol); with images/ and labels/ (15-column face labels), "
                        "mAP@0.5; landmark NME where labels have landmarks")
    add_run_folder_arguments(p, "runs/val", "val.json / predictions.json")
    add_backend_arguments(p)


def claim_val_dir(s) -> Path:
    """The run folder (a new ``exp{N}``, or the named one with --exist-ok); refuses, before any work,
    to replace result files already there unless --overwrite."""
    return claim_results_dir(s.project, s.name, ["val.json", "predictions.json"], s.exist_ok, s.overwrite)


def run(args: argparse.Namespace) -> int:
    from ..engine.val import format_val_table, validate_runner

    s = resolve_settings(args, DEFAULTS)
    model = load_model_from_settings(s, default=default_model_key(s.task))
    runner = make_runner(s, model, for_val=True)
    if s.task == "face":
        return _run_face(s, model, runner)
    if getattr(runner.head, "nkpt", 0):
        raise YoloportError(
            "this is a face model (a head with landmarks): validate it with --task face (on a WIDER FACE folder, "
            "or a folder with images/ and 15-column labels/)"
        )
    size = s.img_size
    fixed = tuple(runner.input_hw) if runner.input_hw else None
    if size is not None and len(size) == 2 and fixed is None:
        fixed = img_size_from_settings(s, model, runner.stride)
    longest = max(fixed) if fixed else (size[0] if size else max(img_size_from_settings(s, model, runner.stride)))
    save_dir = claim_val_dir(s)
    data = s.data
    if data is None:
        hw = fixed or img_size_from_settings(s, model, runner.stride)
        data, note = synthetic_val_set(model, save_dir / "data", hw, 48)
        print(f"no --data given: validating on a {note}")

    if (runner.batch or s.batch_size) < 1:
        raise YoloportError(f"--batch-size must be at least 1, got {s.batch_size}")
    results = validate_runner(
        runner, data, fixed, s.batch_size, names=list(model.names), img_size=longest, progress=True,
        conf_thres=s.conf_thres, iou_thres=s.iou_thres, max_det=s.max_det, rect=not s.no_rect, split=s.split,
        coco_json=s.coco_json, strict=bool(s.strict_labels),
        save_json=(save_dir / "predictions.json") if s.save_json else None,
    )
    results["backend"] = runner.backend
    results["weights"] = str(getattr(model, "source", {}).get("path", "")) if getattr(model, "source", None) else None
    print(format_val_table(results))
    write_text_atomic(save_dir / "val.json", json.dumps(results, indent=1, default=str))
    print(f"results saved to {save_dir}")
    return 0


def _run_face(s, model, runner) -> int:
    """``--task face``: WIDER FACE AP (easy / medium / hard) when ``--data FOLDER`` has the official
    ``ground_truth/``, else mAP on its 15-column YOLO face labels; landmark NME where labels have them."""
    from ..engine.widerface import evaluate_wider_folder

    if not getattr(runner.head, "nkpt", 0):
        raise YoloportError("--task face needs a face model (a head with landmarks, e.g. a yolov5-face checkpoint)")
    if s.data is not None:
        from ..engine.face_val import face_folder

        s.data = face_folder(s.data, s.split)  # a folder, or a face data YAML's split
    size = s.img_size[0] if s.img_size else max(getattr(model, "img_size", None) or (640,))
    save_dir = claim_val_dir(s)
    if s.data is None:
        s.data, note = synthetic_face_val_set(save_dir / "data", (size, size), 48)
        print(f"no --data given: validating on a {note}")
    wider = (Path(s.data) / "ground_truth").is_dir()
    if wider:  # upstream test_widerface.py's defaults unless given
        conf = 0.02 if s.conf_thres == DEFAULTS["conf_thres"] else s.conf_thres
        iou = 0.5 if s.iou_thres == DEFAULTS["iou_thres"] else s.iou_thres
        res = evaluate_wider_folder(runner, s.data, img_size=size, conf_thres=conf, iou_thres=iou)
    else:
        from ..engine.face_val import evaluate_face_labels

        conf, iou = s.conf_thres, s.iou_thres
        res = evaluate_face_labels(runner, s.data, img_size=size, conf_thres=conf, iou_thres=iou, max_det=s.max_det)
    res.update(backend=runner.backend, img_size=size, conf_thres=conf, iou_thres=iou,
               weights=str(getattr(model, "source", {}).get("path", "")) if getattr(model, "source", None) else None)
    nme = "n/a (no landmark labels)" if res["NME"] is None else f"{res['NME']:.4f} ({res['nme_faces']} faces)"
    if wider:
        ap = res["AP"]
        print(f"{'images':>8} {'easy AP':>9} {'medium AP':>10} {'hard AP':>9}  NME")
        print(f"{res['images']:>8} {ap['easy']:>9.4f} {ap['medium']:>10.4f} {ap['hard']:>9.4f}  {nme}")
    else:
        print(f"{'images':>8} {'labels':>7} {'mAP@0.5':>8} {'mAP@.5:.95':>11}  NME")
        print(f"{res['images']:>8} {res['labels']:>7} {res['mAP50']:>8.4f} {res['mAP50_95']:>11.4f}  {nme}")
    write_text_atomic(save_dir / "val.json", json.dumps(res, indent=1, default=str))
    print(f"results saved to {save_dir}")
    return 0
