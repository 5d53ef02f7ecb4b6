"""Validation: a detector's precision, recall and mAP on a YOLO-format split.

:func:`validate` is written against one callable, ``infer(images) -> decoded predictions``, so the
same code measures the PyTorch model and every exported backend. It follows Ultralytics YOLOv5
v7.0 ``val.py`` (``conf 0.001, iou 0.6, max_det 300``, multi-label NMS, rectangular batches with
pad 0.5; predictions and labels compared in original-image pixels) and adds what a port needs:
a fixed input shape for static graphs, label problems reported instead of hidden, per-stage
timings, and official COCO metrics when an instances JSON is given.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..data.dataset import DataConfig, ValDataset, load_data_yaml
from ..errors import DependencyMissing, YoloportError
from ..ops.boxes import scale_boxes, xyxy2xywh
from ..ops.nms import non_max_suppression
from .metrics import IOU_THRESHOLDS, ap_per_class, match_predictions, summarize

# COCO's 80 detection classes -> the category ids of the 91-id COCO annotation files.
COCO80_TO_91 = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21,
    22, 23, 24, 25, 27, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44,
    46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65,
    67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
)  # fmt: skip

Infer = Callable[[np.ndarray], np.ndarray]


def torch_infer(model, device: str = "cpu") -> Infer:
    """Wrap an eval-mode ``DetectionModel`` as ``infer``: float32 ``[B,3,H,W]`` -> numpy ``[B,N,5+nc]``."""
    import torch

    model = model.eval().to(device)

    def infer(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = model(torch.from_numpy(images).to(device))
        out = out[0] if isinstance(out, (tuple, list)) else out
        return out.float().cpu().numpy()

    return infer


def _as_numpy(out) -> np.ndarray:
    if isinstance(out, (tuple, list)):
        out = out[0]
    if hasattr(out, "detach"):
        out = out.detach().float().cpu().numpy()
    return np.asarray(out, dtype=np.float32)


def default_class_map(names, nc: int) -> list[int]:
    """Class index -> category id for COCO JSON: the 80->91 table for COCO's classes, else identity."""
    if nc == 80 and names is not None and list(names)[:2] == ["person", "bicycle"]:
        return list(COCO80_TO_91)
    return list(range(nc))


def _image_id(path: str):
    stem = Path(path).stem
    return int(stem) if stem.isnumeric() else stem


def predictions_to_coco(predn: np.ndarray, image_id, class_map) -> list[dict]:
    """``predn [n, 6]`` (xyxy original pixels, conf, cls) -> COCO result dicts (bbox x, y, w, h)."""
    box = xyxy2xywh(predn[:, :4].astype(np.float64))
    box[:, :2] -= box[:, 2:] / 2
    return [
        {"image_id": image_id, "category_id": int(class_map[int(p[5])]), "bbox": [round(float(x), 3) for x in b],
         "score": round(float(p[4]), 5)}
        for p, b in zip(predn, box)
    ]


def validate(
    infer: Infer,
    data: str | os.PathLike | DataConfig,
    img_size: int = 640,
    batch_size: int = 8,
    conf_thres: float = 0.001,
    iou_thres: float = 0.6,
    max_det: int = 300,
    rect: bool = True,
    fixed_shape_hw: tuple[int, int] | None = None,
    split: str = "val",
    stride: int = 32,
    coco_json: str | os.PathLike | None = None,
    names=None,
    progress: bool = True,
    save_json: str | os.PathLike | None = None,
    class_map=None,
    strict: bool = False,
    pad: float = 0.5,
    nkpt: int = 0,
    image_stats: bool = False,
) -> dict:
    """Validate ``infer`` on a split of a data YAML (or :class:`DataConfig`).

    ``infer(images float32 [B, 3, H, W] RGB 0..1) -> [B, N, 5 + nc]`` decoded predictions (xywh in
    input pixels, objectness, class probabilities; a torch tensor or a ``(decoded, ...)`` tuple is
    accepted). Images are batched as Ultralytics v7.0 val (``rect``: aspect-ratio sorted batches
    with pad ``pad``), square (``rect=False``) or letterboxed to ``fixed_shape_hw`` ``(h, w)``.

    ``image_stats``: also return ``results["image_stats"]``, one
    :class:`~yoloport.engine.image_stats.ImageStats` per validated image in validation order (what a
    paired bootstrap over images needs); no other number changes. Never written to JSON.
    ``coco_json``: a COCO instances JSON; also compute the official COCO metrics (image ids matched
    by file stem, classes through ``class_map``, default :func:`default_class_map`).
    ``save_json``: write the predictions as COCO results JSON there. ``strict``: a malformed label
    line raises instead of being dropped and reported.

    Returns a dict: ``precision, recall, mAP50, mAP50_95, n_images, n_labels, per_class`` (rows
    with ``class, name, images, instances, precision, recall, mAP50, mAP50_95``; ``images`` counts
    the images that contain the class), ``speed_ms`` (per image: ``preprocess`` = reading,
    letterbox and normalising, which Ultralytics leaves out; ``inference``; ``nms``),
    ``n_background, n_skipped, n_label_problems,
    warnings``, ``settings``, and ``coco`` when ``coco_json`` is given.
    """
    if coco_json is not None and not Path(coco_json).is_file():
        raise YoloportError(f"COCO annotations not found: {coco_json}")
    cfg = data if isinstance(data, DataConfig) else load_data_yaml(data)
    names = list(names) if names is not None else list(cfg.names)
    nc = len(names)
    if nc != cfg.nc:
        raise YoloportError(f"{len(names)} class names given but the data config has {cfg.nc} classes")
    ds = ValDataset(
        cfg.split(split), nc, img_size=img_size, batch_size=batch_size, stride=stride, rect=rect, pad=pad,
        fixed_shape_hw=fixed_shape_hw, strict=strict, nkpt=nkpt,
    )
    class_map = list(class_map) if class_map is not None else default_class_map(names, nc)
    iouv = IOU_THRESHOLDS
    stats: list[tuple] = []
    per_image: list = []  # ImageStats, only when image_stats
    images_per_class = np.zeros(nc, dtype=np.int64)
    jdict: list[dict] = []
    dt = [0.0, 0.0, 0.0]
    seen = 0

    batches = ds.batches()
    bar = None
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=len(ds), desc=f"val {split}", unit="batch", file=sys.stderr, leave=False)
        except ImportError:
            bar = None
    for batch in batches:
        t0 = time.perf_counter()
        out = _as_numpy(infer(batch.images))
        t1 = time.perf_counter()
        if out.ndim != 3 or out.shape[0] != len(batch.images):
            raise YoloportError(f"infer returned shape {out.shape}; expected [{len(batch.images)}, N, 5 + nc]")
        if out.shape[2] - 5 != nc:
            raise YoloportError(f"the model predicts {out.shape[2] - 5} classes but the dataset has {nc}")
        preds = non_max_suppression(out, conf_thres, iou_thres, multi_label=True, max_det=max_det)
        t2 = time.perf_counter()
        dt[0] += batch.load_s
        dt[1] += t1 - t0
        dt[2] += t2 - t1
        input_hw = batch.images.shape[2:]
        for si, pred in enumerate(preds):
            tg = batch.targets[batch.targets[:, 0] == si]
            orig_hw, ratio_pad = batch.shapes[si]
            tcls = tg[:, 1].copy()
            images_per_class[np.unique(tcls.astype(np.int64))] += 1
            seen += 1
            if image_stats:
                per_image.append(_image_record(batch.paths[si], pred, tg, input_hw, orig_hw, ratio_pad, iouv))
            if not len(pred):
                if len(tg):
                    stats.append((np.zeros((0, len(iouv)), bool), np.zeros(0), np.zeros(0), tcls))
                continue
            predn = pred.copy()
            scale_boxes(input_hw, predn[:, :4], orig_hw, ratio_pad)
            if len(tg):
                tbox = tg[:, 2:6].copy()
                scale_boxes(input_hw, tbox, orig_hw, ratio_pad)
                correct = match_predictions(predn, np.concatenate([tg[:, 1:2], tbox], 1), iouv)
            else:
                correct = np.zeros((len(pred), len(iouv)), bool)
            stats.append((correct, pred[:, 4], pred[:, 5], tcls))
            if save_json or coco_json:
                jdict += predictions_to_coco(predn, _image_id(batch.paths[si]), class_map)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()

    cat = [np.concatenate(x, 0) for x in zip(*stats)] if stats else [np.zeros((0, len(iouv)), bool)] + [np.zeros(0)] * 3
    target_cls = cat[3].astype(np.int64)
    ap_stats = ap_per_class(*cat) if len(cat[0]) and cat[0].any() else None
    res = summarize(ap_stats, nc, names, target_cls=target_cls, images_per_class=images_per_class)
    rep = ds.report
    res.update(
        n_images=seen,
        n_labels=int(len(target_cls)),
        speed_ms={k: v / max(seen, 1) * 1e3 for k, v in zip(("preprocess", "inference", "nms"), dt)},
        n_background=rep.n_background,
        n_missing_labels=rep.n_missing_labels,
        n_skipped=rep.n_skipped,
        n_label_problems=rep.n_bad_lines,
        warnings=list(rep.warnings),
        settings={
            "split": split,
            "img_size": img_size,
            "batch_size": batch_size,
            "conf_thres": conf_thres,
            "iou_thres": iou_thres,
            "max_det": max_det,
            "mode": "fixed" if fixed_shape_hw else ("rect" if rect else "square"),
            "fixed_shape_hw": list(fixed_shape_hw) if fixed_shape_hw else None,
            "pad": pad,
        },
    )
    if image_stats:
        res["image_stats"] = per_image
    if save_json:
        path = Path(save_json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(jdict))
        res["predictions_json"] = str(path)
    if coco_json:
        res["coco"] = coco_evaluate(jdict, coco_json, [str(f) for f in ds.files])
    return res


def _image_record(path: str, pred: np.ndarray, tg: np.ndarray, input_hw, orig_hw, ratio_pad, iouv):
    """One image's :class:`ImageStats`, computed apart from the validator's own arrays (same functions,
    same inputs) so that asking for them cannot change a reported number. ``pred [n, 6]`` in input
    pixels, ``tg [m, 6]`` (image, cls, xyxy input pixels)."""
    from .image_stats import ImageStats

    predn = pred.copy()
    scale_boxes(input_hw, predn[:, :4], orig_hw, ratio_pad)
    tbox = tg[:, 2:6].copy()
    scale_boxes(input_hw, tbox, orig_hw, ratio_pad)
    if len(pred) and len(tg):
        correct = match_predictions(predn, np.concatenate([tg[:, 1:2], tbox], 1), iouv)
    else:
        correct = np.zeros((len(pred), len(iouv)), bool)
    return ImageStats(str(path), pred[:, 4].copy(), pred[:, 5].copy(), correct, predn[:, :4].astype(np.float32),
                      tg[:, 1].copy(), tbox.astype(np.float32))


def validate_runner(runner, data, img_hw=None, batch_size: int = 8, names=None, img_size: int | None = None,
                    progress: bool = False, **kwargs) -> dict:
    """:func:`validate` on any Runner (torch or a compiled artifact): its head outputs decoded on the
    host (:func:`~yoloport.ops.postprocess.decode_outputs`), batched by the artifact's own batch when
    it has one. ``img_hw``: letterbox every image to this fixed ``(h, w)`` (the shape a compiled
    artifact takes); without it, Ultralytics-style batches at ``img_size``. Other keywords go to
    :func:`validate`."""
    from ..ops.postprocess import decode_outputs

    head = runner.head

    def infer(images):
        return decode_outputs(runner(images), head)

    if img_size is None:
        img_size = max(img_hw) if img_hw else 640
    return validate(infer, data, img_size=img_size, batch_size=runner.batch or batch_size,
                    fixed_shape_hw=tuple(img_hw) if img_hw else None, stride=runner.stride, names=names, progress=progress,
                    **kwargs)


def _coco_api():
    try:
        from faster_coco_eval import COCO, COCOeval_faster

        return COCO, COCOeval_faster, "faster_coco_eval"
    except ImportError:
        pass
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, COCOeval, "pycocotools"
    except ImportError:
        raise DependencyMissing("faster-coco-eval", "COCO metrics (--coco-json)") from None


def coco_evaluate(predictions: list[dict], coco_json: str | os.PathLike, image_paths: list[str]) -> dict:
    """Official COCO bbox metrics of ``predictions`` (COCO result dicts whose ``image_id`` is the
    image file stem, int when numeric, as :func:`validate` makes them) against ``coco_json``.

    Images are matched by file stem to the JSON's ``file_name``; only the validated images found in
    the JSON are evaluated. Returns ``{mAP50_95, mAP50, stats (the 12 COCO numbers), n_images,
    n_unmatched_images, backend}``.
    """
    coco_json = Path(coco_json)
    if not coco_json.is_file():
        raise YoloportError(f"COCO annotations not found: {coco_json}")
    COCO, COCOeval, backend = _coco_api()
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            gt = COCO(str(coco_json))
    except Exception as e:  # noqa: BLE001 - any parse failure is the user's file
        raise YoloportError(f"{coco_json}: not a COCO instances JSON ({e})") from None
    by_stem = {Path(im["file_name"]).stem: im["id"] for im in gt.dataset.get("images", [])}
    stems = [Path(p).stem for p in image_paths]
    img_ids = [by_stem[s] for s in stems if s in by_stem]
    n_unmatched = len(stems) - len(img_ids)
    if not img_ids:
        raise YoloportError(f"{coco_json}: none of the {len(stems)} validated images is in it (matched by file stem)")
    # result image ids are the stems (int when numeric) of image_paths: map them to the JSON's ids
    to_gt = {_image_id(p): by_stem[Path(p).stem] for p in image_paths if Path(p).stem in by_stem}
    dets = [{**d, "image_id": to_gt[d["image_id"]]} for d in predictions if d["image_id"] in to_gt]
    out = {"mAP50_95": 0.0, "mAP50": 0.0, "stats": [0.0] * 12, "n_images": len(img_ids),
           "n_unmatched_images": n_unmatched, "backend": backend}
    if not dets:
        return out
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, "bbox")
        ev.params.imgIds = img_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [float(x) for x in ev.stats[:12]]
    out.update(mAP50_95=stats[0], mAP50=stats[1], stats=stats)
    return out


def format_val_table(results: dict) -> str:
    """Ultralytics-style table: ``Class Images Instances P R mAP50 mAP50-95``, an ``all`` row, one
    row per class with labels, then speeds and data-quality counts."""
    head = ("%22s" + "%11s" * 6) % ("Class", "Images", "Instances", "P", "R", "mAP50", "mAP50-95")
    row = "%22s" + "%11i" * 2 + "%11.3g" * 4
    lines = [head, row % ("all", results["n_images"], results["n_labels"], results["precision"], results["recall"],
                          results["mAP50"], results["mAP50_95"])]
    for c in results.get("per_class", []):
        imgs = c["images"] if c["images"] is not None else results["n_images"]
        lines.append(row % (c["name"][:22], imgs, c["instances"], c["precision"], c["recall"], c["mAP50"], c["mAP50_95"]))
    sp = results.get("speed_ms")
    if sp:
        lines.append(f"Speed: {sp['preprocess']:.1f}ms pre-process, {sp['inference']:.1f}ms inference, "
                     f"{sp['nms']:.1f}ms NMS per image")
    notes = []
    if results.get("n_background"):
        notes.append(f"{results['n_background']} background images")
    if results.get("n_skipped"):
        notes.append(f"{results['n_skipped']} images skipped (missing or unreadable)")
    if results.get("n_label_problems"):
        notes.append(f"{results['n_label_problems']} label lines dropped (see warnings)")
    if notes:
        lines.append("Data: " + ", ".join(notes))
    coco = results.get("coco")
    if coco:
        lines.append(f"COCO ({coco['backend']}, {coco['n_images']} images): mAP50-95 {coco['mAP50_95']:.3f}, "
                     f"mAP50 {coco['mAP50']:.3f}")
    return "\n".join(lines)


__all__ = ["COCO80_TO_91", "coco_evaluate", "default_class_map", "format_val_table", "predictions_to_coco",
           "torch_infer", "validate"]
