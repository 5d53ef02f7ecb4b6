"""``yoloport detect``: detection on an image, a folder, a glob or a video, on any backend.

Saves annotated images (or video), YOLO txt labels with confidences (``cls xc yc w h conf``,
normalised; a face model appends its landmarks ``x1 y1 ... x5 y5``, normalised) and one
``detections.json`` with everything (landmarks in pixels).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from ..config import add_common_arguments, add_run_folder_arguments, resolve_settings
from ..errors import YoloportError
from ..io.paths import (
    claim_run_dir,
    refuse_existing_outputs,
    refuse_output_over_inputs,
    unique_stems,
    write_text_atomic,
)
from ..ops.boxes import xyxy2xywhn
from ._model_args import (
    FACE_MODEL_KEY,
    add_backend_arguments,
    default_model_key,
    img_size_from_settings,
    load_model_from_settings,
    make_runner,
)

DEFAULTS = {
    "source": None,
    "img_size": None,
    "conf_thres": 0.25,
    "iou_thres": 0.45,
    "max_det": 1000,
    "classes": None,
    "agnostic_nms": False,
    "save_dir": None,
    "project": "runs/detect",
    "name": "exp",
    "exist_ok": False,
    "overwrite": False,
    "nosave": False,
    "save_txt": True,
    "backend": "torch",
    "task": None,
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p)
    p.add_argument("--source", help="image, directory, glob ('imgs/*.jpg') or video file")
    p.add_argument("--img-size", "--img_size", dest="img_size", nargs="+", type=int, help="W H (or one number)")
    p.add_argument("--conf-thres", "--conf_thres", dest="conf_thres", type=float, help="confidence threshold (0.25)")
    p.add_argument("--iou-thres", "--iou_thres", dest="iou_thres", type=float, help="NMS IoU threshold (0.45)")
    p.add_argument("--max-det", dest="max_det", type=int, help="maximum detections per image (1000)")
    p.add_argument("--classes", nargs="+", type=int, help="keep only these class ids")
    p.add_argument("--agnostic-nms", dest="agnostic_nms", action="store_true", default=None, help="class-agnostic NMS")
    p.add_argument("--save-dir", "--save_dir", dest="save_dir", help="output folder (default: runs/detect/expN)")
    add_run_folder_arguments(p, "runs/detect", "files of the same name (never the source images)")
    p.add_argument("--nosave", action="store_true", default=None, help="do not save annotated images")
    p.add_argument("--task", choices=("detect", "face"),
                   help="face: yolov5-face's input protocol (long side resized, letterbox padded to 64) and landmarks; "
                        "the default for a model with a landmark head")
    add_backend_arguments(p)


def run(args: argparse.Namespace) -> int:
    from ..data.sources import iter_frames, resolve_source
    from ..engine.draw import draw_detections, draw_landmarks

    s = resolve_settings(args, DEFAULTS)
    model = load_model_from_settings(s, default=default_model_key(s.task))
    source = s.source or _default_source(model)
    files = resolve_source(source)
    runner = make_runner(s, model)
    img_hw = img_size_from_settings(s, model, runner.stride)
    prepare = _face_prepare(s, runner, img_hw)
    save_dir, out_stem = _claim_outputs(s, files)

    skipped: list[str] = []
    results, writers = [], {}
    n_det = 0
    try:
        for fr, det in _zip_frames(iter_frames(files, skipped), runner, img_hw, s, prepare):
            results.append(det.to_dict())
            n_det += len(det)
            stem = out_stem[fr.path] if fr.frame is None else f"{out_stem[fr.path]}_{fr.frame}"
            _write_labels(save_dir / "labels" / f"{stem}.txt", det)
            if not s.nosave:
                im = draw_detections(fr.image, det.xyxy, det.conf, det.cls, det.names)
                if det.landmarks is not None:
                    draw_landmarks(im, det.landmarks)
                if fr.frame is None:
                    cv2.imwrite(str(save_dir / f"{stem}{fr.path.suffix}"), im)
                else:
                    _video_writer(writers, save_dir / f"{out_stem[fr.path]}.mp4", fr, im).write(im)
            summary = ", ".join(f"{n} {det.names[c] if c < len(det.names) else c}" for c, n in _counts(det.cls)) or "no detections"
            where = f"{fr.path.name}" + (f" frame {fr.frame}" if fr.frame is not None else "")
            print(f"{where} ({det.input_hw[1]}x{det.input_hw[0]}): {summary}, {det.times_ms['inference']:.1f} ms")
    finally:
        for w in writers.values():
            w.release()
    for msg in skipped:
        print(f"warning: skipped {msg}")
    if not results:
        raise YoloportError(f"no readable images in {source} ({len(skipped)} skipped)")
    doc = {
        "backend": runner.backend,
        "source": str(source),
        "img_size_hw": list(img_hw),
        "conf_thres": s.conf_thres,
        "iou_thres": s.iou_thres,
        "names": list(runner.head.names),
        "skipped": skipped,
        "images": results,
    }
    write_text_atomic(save_dir / "detections.json", json.dumps(doc, indent=1))
    t = np.array([[r["times_ms"][k] for k in ("pre", "inference", "post")] for r in results])
    print(
        f"{len(results)} images, {n_det} detections, {len(skipped)} skipped; "
        f"speed per image: {t[:, 0].mean():.1f} ms pre, {t[:, 1].mean():.1f} ms inference, {t[:, 2].mean():.1f} ms post"
    )
    print(f"results saved to {save_dir}")
    return 0


def _claim_outputs(s, files: list[Path]) -> tuple[Path, dict]:
    """The run folder (claimed for this run) and each input's output stem; refuses, before anything
    is written, a folder that holds the inputs and files this run would replace (unless --overwrite)."""
    from ..data.sources import VIDEO_SUFFIXES

    overwrite = bool(s.overwrite)
    exist_ok = bool(s.exist_ok) or overwrite
    target = Path(s.save_dir) if s.save_dir else Path(s.project) / s.name
    what = "--save-dir" if s.save_dir else "run folder"
    refuse_output_over_inputs(target, files, what)
    out_stem = unique_stems(files)
    planned = [target / "detections.json"]
    for f, stem in out_stem.items():
        if f.suffix.lower() in VIDEO_SUFFIXES:
            planned.append(target / f"{stem}.mp4")
            planned += sorted((target / "labels").glob(f"{stem}_[0-9]*.txt"))
        else:
            planned += [target / f"{stem}{f.suffix}", target / "labels" / f"{stem}.txt"]
    if target.is_dir() and exist_ok:
        refuse_existing_outputs(planned, overwrite)
    save_dir = claim_run_dir(target, exist_ok=exist_ok, increment=not s.save_dir, what=what)
    refuse_output_over_inputs(save_dir, files, what)
    (save_dir / "labels").mkdir(exist_ok=True)
    return save_dir, out_stem


def _face_prepare(s, runner, img_hw):
    """yolov5-face's preprocessing for ``--task face`` (the default for a landmark head), else None."""
    from ..engine.face import face_prepare_for

    return face_prepare_for(runner, img_hw, s.task)


def _zip_frames(frames, runner, img_hw, s, prepare=None):
    from ..engine.predict import detect_image

    for fr in frames:
        det = detect_image(
            runner, fr.image, img_hw, s.conf_thres, s.iou_thres, s.classes, bool(s.agnostic_nms), s.max_det,
            path=str(fr.path), frame=fr.frame, prepare=prepare,
        )
        yield fr, det


def _counts(cls):
    u, n = np.unique(cls, return_counts=True)
    return [(int(c), int(k)) for c, k in zip(u, n)]


def _write_labels(path: Path, det) -> None:
    h, w = det.orig_hw
    if not len(det):
        path.write_text("")
        return
    xywhn = xyxy2xywhn(det.xyxy.astype(np.float64), w, h)
    lines = [f"{int(c)} {b[0]:.6f} {b[1]:.6f} {b[2]:.6f} {b[3]:.6f} {p:.6f}" for c, b, p in zip(det.cls, xywhn, det.conf)]
    if det.landmarks is not None:  # then the landmarks, normalised: x1 y1 ... xK yK
        pts = det.landmarks.astype(np.float64) / np.array([w, h])
        lines = [line + "".join(f" {v:.6f}" for v in p.reshape(-1)) for line, p in zip(lines, pts)]
    path.write_text("\n".join(lines) + "\n")


def _video_writer(writers: dict, path: Path, fr, im):
    if path not in writers:
        h, w = im.shape[:2]
        writers[path] = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (w, h))
    return writers[path]


def _default_source(model) -> str:
    from ..config import PACKAGE_DIR

    folder = {"default": "samples", FACE_MODEL_KEY: "face_samples"}.get(getattr(model, "model_key", None))
    sample = PACKAGE_DIR / "assets" / folder if folder else None
    if sample is not None and sample.is_dir():
        return str(sample)
    raise YoloportError("no --source given: pass an image, a folder, a glob or a video")
