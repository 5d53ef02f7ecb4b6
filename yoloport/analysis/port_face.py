"""``yoloport port`` for a keypoint head (yolov5-face): the face metric suite of the port.

The detector port (:mod:`yoloport.analysis.port`) scores every target by mAP on a data YAML; a face
model is scored the way face models are compared, and :func:`run_face_port` is selected by the model's
head (``detect.nkpt > 0``):

- on a WIDER FACE folder (``images/<event>/*.jpg`` + ``ground_truth/wider_*_val.mat``): easy / medium /
  hard AP by the official protocol (:func:`yoloport.engine.widerface.evaluate_wider_folder`), and NME
  where ``labels/`` has landmarks;
- on a folder of ``images/`` + 15-column ``labels/``: mAP@0.5 and NME
  (:func:`yoloport.engine.face_val.evaluate_face_labels`);
- an optional second folder with landmark labels (``nme_data``) gives every target an NME even when
  the AP folder has none (WIDER FACE val has no landmark labels);
- between float and int8 on the same letterboxed images (:func:`yoloport.analysis.compare.compare_runners`):
  matched detections and the displacement of their landmarks in pixels.

Every target and the fp32 reference see the same fixed input (``img_hw``, one letterbox), so a drop
is what the port cost, not a change of preprocessing. Calibration images must be other images than
the reported ones: a calibration set that shares an image (same file or same bytes) with the
evaluated folders is refused.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from ..errors import YoloportError
from .bootstrap import gate_not_judged, gate_verdict, reference_not_judgeable
from ..data.letterbox import input_multiple

#: the WIDER FACE settings, in report order
SETTINGS = ("easy", "medium", "hard")


class FixedInputRunner:
    """A runner seen through a fixed input size: ``input_hw`` set, so every image is letterboxed to it
    exactly as for a built artifact (the fp32 reference of the face port)."""

    def __init__(self, runner, input_hw):
        self.runner = runner
        self.input_hw = tuple(int(v) for v in input_hw)
        self.head, self.stride, self.batch = runner.head, runner.stride, None
        self.backend = runner.backend

    def __call__(self, images):
        return self.runner(images)

    def close(self) -> None:
        close = getattr(self.runner, "close", None)
        if close:
            close()


def is_wider_folder(folder) -> bool:
    """Whether ``folder`` holds the official WIDER FACE ground truth (``ground_truth/wider_face_val.mat``)."""
    return (Path(folder) / "ground_truth" / "wider_face_val.mat").is_file()


def face_images(folder) -> list[Path]:
    """The images a face folder reports on (``images/**``), sorted."""
    from ..engine.face_val import IMAGE_SUFFIXES

    images = sorted(p for p in (Path(folder) / "images").rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise YoloportError(f"{folder}: no images under {Path(folder) / 'images'} (a face port needs a WIDER FACE "
                            "folder or images/ + 15-column labels/)")
    return images


def check_disjoint(calibration_paths, reported_paths) -> None:
    """A YoloportError when a calibration image is one of the reported images (same resolved path or
    same bytes): accuracy is measured on images the calibration never saw."""
    from ..data.protocol import file_sha256

    reported = {Path(p).resolve() for p in reported_paths}
    digests = {file_sha256(p) for p in reported}
    shared = [str(p) for p in calibration_paths if Path(p).resolve() in reported or file_sha256(p) in digests]
    if shared:
        raise YoloportError(f"{len(shared)} calibration image(s) are also reported on (e.g. {shared[0]}): calibrate on "
                            "other images (--calib), e.g. a synthetic face set or a disjoint part of the data")


def face_metrics(runner, data, img_hw, nme_data=None) -> dict:
    """The face suite's numbers for one runner: ``{"AP": {easy, medium, hard} | None, "mAP50": float | None,
    "NME": float | None, "nme_faces": int, "images": int}`` on ``data`` (WIDER FACE folder, or images +
    15-column labels), with ``NME`` from ``nme_data`` when given (a folder with landmark labels)."""
    from ..engine.face_val import evaluate_face_labels
    from ..engine.widerface import evaluate_wider_folder

    size = max(img_hw)
    if is_wider_folder(data):
        res = evaluate_wider_folder(runner, data, img_size=size)
        out = {"AP": {k: float(res["AP"][k]) for k in SETTINGS}, "mAP50": None, "NME": res["NME"],
               "nme_faces": res["nme_faces"], "images": res["images"]}
    else:
        res = evaluate_face_labels(runner, data, img_size=size)
        out = {"AP": None, "mAP50": res.get("mAP50"), "NME": res["NME"], "nme_faces": res["nme_faces"],
               "images": res["images"]}
    if nme_data is not None:
        lm = evaluate_face_labels(runner, nme_data, img_size=size)
        out.update(NME=lm["NME"], nme_faces=lm["nme_faces"], nme_source=str(nme_data))
    return out


def face_drop(ref: dict, val: dict) -> dict:
    """Drops in points (x100) from the reference: per WIDER setting (``AP_easy`` ...), or ``mAP50``;
    ``worst``: the largest of them (what ``--max-drop`` gates)."""
    drops = {}
    if ref.get("AP") and val.get("AP"):
        drops = {f"AP_{k}": round((ref["AP"][k] - val["AP"][k]) * 100, 3) for k in SETTINGS}
    elif ref.get("mAP50") is not None and val.get("mAP50") is not None:
        drops = {"mAP50": round((ref["mAP50"] - val["mAP50"]) * 100, 3)}
    drops["worst"] = max(drops.values()) if drops else None
    if ref.get("NME") is not None and val.get("NME") is not None:
        drops["NME_increase"] = round(val["NME"] - ref["NME"], 5)
    return drops


def face_reference_not_judgeable(ref_val: dict, max_drop: float) -> str | None:
    """Why the fp32 reference's face scores cannot anchor a ``--max-drop`` gate (its best WIDER setting's
    AP, or its mAP@0.5, is at most ``max_drop`` points), or None
    (:func:`~yoloport.analysis.bootstrap.reference_not_judgeable`)."""
    if ref_val.get("AP"):
        return reference_not_judgeable(max(ref_val["AP"].values()), None, max_drop, "WIDER FACE AP (its best setting)")
    return reference_not_judgeable(ref_val.get("mAP50"), None, max_drop, "face mAP@0.5")


def run_face_target(t, model, data, ctx: dict, progress) -> dict:
    """Export -> lint -> build -> face metrics -> compare (landmark displacement) for one target."""
    from ..backends.registry import artifact_size, build, export_for, load_runner
    from ..deploy.lint import lint_model
    from .compare import compare_runners
    from .port import target_graph

    out = Path(ctx["run_dir"]) / t.name
    out.mkdir(parents=True, exist_ok=True)
    img_hw = ctx["img_hw"]
    rec: dict = {"name": t.name, "backend": t.backend, "precision": t.precision, "options": t.options,
                 "lint_target": t.lint_target}
    if t.spec.simulated_note:
        rec["note"] = t.spec.simulated_note
    with progress.stage(f"{t.name}: export + lint ({t.lint_target})"):
        mode, sigmoid, conv, opts = target_graph(t, ctx["graph"], model.detect.nkpt)
        exp = export_for(t.backend, model, out / "model.fp32.onnx", img_hw, mode=mode, batch=1,
                         export_options={**opts, "sigmoid": sigmoid}, convention=conv)
        rep = lint_model(str(exp.path), t.lint_target)
        rec["convention"] = {"name": conv, "mode": mode, "sigmoid": sigmoid}
        rec["lint"] = {"errors": len(rep.errors), "warnings": len(rep.warnings), "rules": sorted(rep.rule_ids())}
    with progress.stage(f"{t.name}: build artifact"):
        t0 = time.perf_counter()
        qconfig = {"precision": t.precision, **t.options}
        art = build(t.backend, model, exp, out, calibration=ctx["calibration"] if t.precision == "int8" else None,
                    qconfig=qconfig)
        rec.update(build_s=round(time.perf_counter() - t0, 2), artifact=str(art), qconfig=qconfig,
                   size_mb=round(artifact_size(art) / 1e6, 3))
    runner = load_runner(t.backend, artifact=art, model=model, threads=ctx["threads"], output="raw")
    try:
        with progress.stage(f"{t.name}: face metrics"):
            rec["val"] = face_metrics(runner, data, img_hw, ctx["nme_data"])
            rec["drop"] = face_drop(ctx["reference"]["val"], rec["val"])
            worst = rec["drop"]["worst"]
            rec["gate"] = gate_verdict(0.0 if worst is None else worst, None, ctx["max_drop"], ctx["not_judged"])
            rec["passed"] = rec["gate"]["passed"]
        with progress.stage(f"{t.name}: compare with fp32 (landmark displacement)"):
            cmp_ = compare_runners(ctx["ref_runner"], runner, ctx["sample_images"], img_hw, conf_thres=0.25, iou_thres=0.45)
            rec["compare"] = {"summary": cmp_["summary"]}
    finally:
        runner.close()
    return rec


def format_face_table(report: dict) -> str:
    """The face port's summary table (markdown): per target, AP easy/medium/hard and their drops, NME,
    and the landmark displacement between fp32 and the target."""
    def f(v, nd=3):
        return "-" if v is None else f"{v:.{nd}f}"

    head = ("target", "AP easy", "AP medium", "AP hard", "drop easy", "drop medium", "drop hard", "NME",
            "lm px mean", "lm px p90", "matched", "status")
    rows = [head, tuple("---" for _ in head)]
    for rec in [report["reference"], *report["targets"]]:
        if rec.get("error"):
            rows.append((rec["name"], *("-",) * (len(head) - 2), f"FAILED: {rec['error'][:80]}"))
            continue
        ap = rec["val"].get("AP") or {}
        d = rec.get("drop") or {}
        s = (rec.get("compare") or {}).get("summary") or {}
        status = "reference" if rec is report["reference"] else (
            "ok" if rec.get("passed") else "not judged" if gate_not_judged(rec.get("gate")) else "over --max-drop")
        rows.append((rec["name"], f(ap.get("easy")), f(ap.get("medium")), f(ap.get("hard")), f(d.get("AP_easy"), 2),
                     f(d.get("AP_medium"), 2), f(d.get("AP_hard"), 2), f(rec["val"].get("NME"), 4),
                     f(s.get("landmark_px_mean"), 2), f(s.get("landmark_px_p90"), 2),
                     f"{s.get('matched')}/{max(s.get('ref_detections', 0), s.get('test_detections', 0))}" if s else "-", status))
    return "\n".join("| " + " | ".join(str(c) for c in r) + " |" for r in rows)


def write_face_report(run_dir, report: dict) -> dict:
    """``report.json`` and ``report.md`` in ``run_dir`` (atomic writes); returns their paths."""
    from ..io.paths import write_text_atomic

    run_dir = Path(run_dir)
    md = [f"# Face port of {report['model']['name']}", "",
          f"- data: {report['data']['folder']} ({report['data']['images']} images; {report['data']['protocol']})",
          f"- calibration: {report['calibration'].get('count')} images from {report['calibration'].get('source')} "
          "(disjoint from the reported images)",
          f"- input: {report['img_hw'][1]}x{report['img_hw'][0]} (W x H), one letterbox for the reference and every target",
          "- drops in AP points (x100); lm px: landmark displacement fp32 -> target of matched detections, input pixels",
          "", format_face_table(report), ""]
    md += [f"note: {n}" for n in report.get("notes", [])]
    paths = {"json": run_dir / "report.json", "md": run_dir / "report.md"}
    write_text_atomic(paths["json"], json.dumps(report, indent=2, default=float) + "\n")
    write_text_atomic(paths["md"], "\n".join(md) + "\n")
    return {k: str(v) for k, v in paths.items()}


def run_face_port(model, data, targets, run_dir, img_hw, calib_source, calib_n: int = 32, max_drop: float = 1.0,
                  threads=None, n_compare: int = 4, quiet: bool = False, graph: dict | None = None,
                  nme_data=None, **_unused) -> dict:
    """The face port: every target of ``targets`` (:func:`yoloport.analysis.port.parse_targets`) scored with
    the face suite on ``data`` (a WIDER FACE folder or images + 15-column labels) against the fp32 torch
    reference at the same fixed input ``img_hw``; calibration from ``calib_source`` (refused when it shares
    an image with what is reported). Returns the report dict (also written into ``run_dir``).
    Keyword options of :func:`yoloport.analysis.port.run_port` that the face suite does not use (the
    benchmark settings) are accepted and ignored."""
    from ..backends.registry import REFERENCE, load_runner
    from ..data.calibration import load_calibration
    from .port import Progress, run_guarded

    if not getattr(model.detect, "nkpt", 0):
        raise YoloportError("the face port needs a face model (a head with landmarks, e.g. a yolov5-face checkpoint)")
    data = Path(data)
    if not data.is_dir():
        raise YoloportError(f"--data {data}: a face port reads a folder (WIDER FACE: images/<event>/*.jpg + "
                            "ground_truth/wider_*_val.mat; or images/ + 15-column labels/)")
    reported = face_images(data) + (face_images(nme_data) if nme_data else [])
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    progress = Progress(2 + 4 * len(targets), quiet)
    with progress.stage("calibration set"):
        calib = load_calibration(calib_source, n=calib_n, img_size_hw=tuple(img_hw), stride=input_multiple(model.stride),
                                 warn=lambda m: print(f"warning: {m}"))
        check_disjoint(calib.paths, reported)
    ref_runner = FixedInputRunner(load_runner(REFERENCE, model=model, threads=threads), img_hw)
    ctx = {"run_dir": run_dir, "img_hw": tuple(img_hw), "graph": dict(graph or {}), "calibration": calib,
           "threads": threads, "nme_data": nme_data, "max_drop": max_drop, "ref_runner": ref_runner,
           "sample_images": [str(p) for p in face_images(data)[:n_compare]]}
    report = {
        "task": "face",
        "model": {"name": Path(str((getattr(model, "source", None) or {}).get("path") or "model")).stem,
                  "nkpt": int(model.detect.nkpt), "names": list(model.names)},
        "data": {"folder": str(data), "images": len(face_images(data)),
                 "protocol": "WIDER FACE easy/medium/hard AP (official)" if is_wider_folder(data) else "mAP@0.5 on 15-column labels",
                 "nme_data": str(nme_data) if nme_data else None},
        "calibration": calib.to_dict(), "img_hw": list(img_hw), "max_drop": max_drop, "targets": [],
        "notes": list(dict.fromkeys(t.spec.simulated_note for t in targets if t.spec.simulated_note)),
    }
    with progress.stage(f"{REFERENCE} fp32 reference: face metrics"):
        report["reference"] = ctx["reference"] = {"name": f"{REFERENCE}-fp32", "backend": REFERENCE, "precision": "fp32",
                                                  "val": face_metrics(ref_runner, data, img_hw, nme_data)}
    ctx["not_judged"] = face_reference_not_judgeable(ctx["reference"]["val"], max_drop)
    failed = []
    for t in targets:
        rec = run_guarded(t, lambda t: run_face_target(t, model, data, ctx, progress))
        if rec.get("error"):
            failed.append(f"{t.name}: {rec['error']}")
        elif rec.get("passed") is False and gate_not_judged(rec.get("gate")):
            failed.append(f"{t.name}: --max-drop gate {rec['gate']['status']}")
        elif rec.get("passed") is False:
            failed.append(f"{t.name}: AP drop {rec['drop']['worst']:.2f} points > --max-drop {max_drop}")
        report["targets"].append(rec)
    ref_runner.close()
    report["failed"] = failed
    report["stages"] = progress.stages
    report["total_s"] = round(time.perf_counter() - progress.t0, 1)
    report["paths"] = write_face_report(run_dir, report)
    return report
