"""``yoloport port``: the whole port in one command (export, lint, quantize for every target, validate,
compare, profile, benchmark) and a report people can read (report.md / report.html / report.json).

With no arguments it ports the embedded default model on a freshly generated synthetic validation
set (a different seed from the one it was trained on)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..config import add_common_arguments, add_run_folder_arguments, cache_dir, resolve_settings
from ..errors import YoloportError
from ..io.paths import claim_results_dir, lock_run_dir, unlock_run_dir
from ..data.letterbox import input_multiple
from ._model_args import (
    default_model_key,
    img_size_from_settings,
    load_model_from_settings,
    synthetic_face_calibration,
    synthetic_face_val_set,
    synthetic_val_set,
)

DEFAULTS = {
    "data": None,
    "targets": None,
    "img_size": None,
    "max_drop": 1.0,
    "calib": None,
    "calib_n": 128,
    "bench_batches": [1, 16],
    "warmup": 2,
    "repeat": 10,
    "threads": None,
    "val_n": 48,
    "project": "runs/port",
    "name": "exp",
    "exist_ok": False,
    "overwrite": False,
    "no_profile": False,
    "no_bench": False,
    "no_cache": False,
    "full_int8": False,
    "task": None,
    "nme_data": None,
    "overlap": "split",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..analysis.port import DEFAULT_TARGETS

    add_common_arguments(p)
    p.add_argument("--data", help="data YAML to validate on (default for the embedded model: a new synthetic set)")
    p.add_argument("--targets", help=f"comma-separated targets, backend[:platform][:precision] (default {DEFAULT_TARGETS}); "
                                     "mlu-sim is a PyTorch simulation of Cambricon's int8 scheme, rknn runs on the toolkit's simulator")
    p.add_argument("--img-size", dest="img_size", nargs="+", type=int, help="W H of the exported graphs (default: the model's)")
    p.add_argument("--max-drop", dest="max_drop", type=float, help="largest mAP@0.5:0.95 drop in points a target may have (1.0; 100 or more: no gate). "
                   "A gate fails unjudged when the fp32 reference itself scores no more than it")
    p.add_argument("--calib", help="calibration images: folder, data YAML[:split] or list file (default: the data's train split)")
    p.add_argument("--calib-n", dest="calib_n", type=int, help="number of calibration images (128: with 32, yolov5n's ONNX Runtime "
                                                                         "drop swung by 1.0 point over calibration seeds, with 128 by 0.27)")
    p.add_argument("--overlap", choices=("split", "error"),
                   help="when calibration and validation images overlap (same file or same content): split them "
                        "by content hash (default) or refuse")
    p.add_argument("--bench-batches", dest="bench_batches", nargs="+", type=int, help="batch sizes to benchmark (1 16)")
    p.add_argument("--warmup", type=int, help="benchmark warm-up calls (2)")
    p.add_argument("--repeat", type=int, help="benchmark timed calls at batch 1 (10)")
    p.add_argument("--threads", type=int, help="CPU threads for the runtimes")
    p.add_argument("--val-n", dest="val_n", type=int, help="images in the generated synthetic validation set (48)")
    p.add_argument("--no-profile", dest="no_profile", action="store_true", default=None, help="skip the per-layer-type profile")
    p.add_argument("--no-bench", dest="no_bench", action="store_true", default=None, help="skip the benchmarks")
    p.add_argument("--no-cache", dest="no_cache", action="store_true", default=None,
                   help="validate the fp32 reference again even when model and data are unchanged "
                        "(default: reuse its metrics from $YOLOPORT_CACHE or ~/.cache/yoloport)")
    p.add_argument("--full-int8", dest="full_int8", action="store_true", default=None,
                   help="quantize the Detect convolutions too (by default they stay in float on every target)")
    p.add_argument("--task", choices=("detect", "face"),
                   help="the metric suite (default: by the model's head): face = WIDER FACE easy/medium/hard AP on a "
                        "--data FOLDER with ground_truth/ (or mAP@0.5 on 15-column labels), NME, landmark displacement")
    p.add_argument("--nme-data", dest="nme_data", help="face: a folder of images/ + 15-column labels/ with landmarks, "
                                                       "for NME when --data has none (WIDER FACE val has none)")
    add_run_folder_arguments(p, "runs/port", "the report and artifacts")
    from .export import add_graph_arguments

    add_graph_arguments(p, "each target's own convention (rknn: rknn_model_zoo, onnxruntime/openvino: ultralytics, mlu-sim: mlu)")


def run(args: argparse.Namespace) -> int:
    from ..analysis.port import DEFAULT_TARGETS, parse_targets
    from ..data.letterbox import parse_img_size

    s = resolve_settings(args, DEFAULTS)
    targets = parse_targets(s.targets or DEFAULT_TARGETS, full_int8=bool(s.full_int8))
    graph = graph_options(s)
    if s.max_drop is None or s.max_drop < 0:
        raise YoloportError(f"--max-drop must be >= 0 points, got {s.max_drop}")
    model = load_model_from_settings(s, default=default_model_key(s.task))
    check_task(s, model)
    stride = input_multiple(model.stride)
    img_hw = parse_img_size(s.img_size, stride, warn=lambda m: print(f"warning: {m}")) if s.img_size else \
        img_size_from_settings(s, model, stride)
    run_dir = claim_port_dir(s)
    lock = lock_run_dir(run_dir, "run folder")
    try:
        return _port(s, model, targets, img_hw, run_dir, graph)
    finally:
        unlock_run_dir(lock)


def claim_port_dir(s) -> Path:
    """A new ``runs/port/exp{N}``, or the named folder with --exist-ok, where a previous report is
    refused unless --overwrite (checked before any work)."""
    return claim_results_dir(s.project, s.name, [f"report.{x}" for x in ("json", "md", "html")], s.exist_ok, s.overwrite)


def check_task(s, model) -> str:
    """The metric suite of the port: ``--task`` when given (it must fit the model's head), else the
    head's (``face`` for a head with landmarks), checked before any work. A face port with no ``--data``
    reports on new synthetic faces and, with no ``--calib``, calibrates on other synthetic faces."""
    face = bool(getattr(model.detect, "nkpt", 0))
    task = s.task or ("face" if face else "detect")
    if task == "face" and not face:
        raise YoloportError("--task face needs a face model (a head with landmarks, e.g. a yolov5-face checkpoint)")
    if task == "detect" and face:
        raise YoloportError("this is a face model (a head with landmarks): port it with --task face on a WIDER FACE folder "
                            "(or images/ + 15-column labels/); the detector suite's mAP does not score landmarks")
    return task


def _port(s, model, targets, img_hw, run_dir: Path, graph: dict) -> int:
    from ..analysis.port import run_port

    if getattr(model.detect, "nkpt", 0):
        return _port_face(s, model, targets, img_hw, run_dir, graph)

    data, note = s.data, None
    if data is None:
        data, note = synthetic_val_set(model, run_dir / "data", img_hw, s.val_n, n_train=s.calib_n)
    calib = s.calib or _default_calib(data)
    print(f"porting {getattr(model, 'model_key', None) or s.weights} to {', '.join(t.name for t in targets)} "
          f"at {img_hw[1]}x{img_hw[0]} (W x H); run folder {run_dir}")
    report = run_port(model, data, targets, run_dir, img_hw, calib, calib_n=s.calib_n, max_drop=s.max_drop, graph=graph,
                      bench_batches=[] if s.no_bench else s.bench_batches, warmup=s.warmup, repeat=s.repeat,
                      cache_dir=None if s.no_cache else cache_dir(),
                      threads=s.threads, profile=not s.no_profile, data_note=note, overlap=s.overlap)
    print_summary(report)
    if report["failed"]:
        for f in report["failed"]:
            print(f"FAILED {f}")
        return 1
    return 0


def _port_face(s, model, targets, img_hw, run_dir: Path, graph: dict) -> int:
    """The face suite (:func:`yoloport.analysis.port_face.run_face_port`) and its table."""
    from ..analysis.port_face import format_face_table, run_face_port

    print(f"porting {s.weights or getattr(model, 'model_key', None)} (face, {model.detect.nkpt} landmarks) to "
          f"{', '.join(t.name for t in targets)} at {img_hw[1]}x{img_hw[0]} (W x H); run folder {run_dir}")
    data, calib = s.data, s.calib
    if data is None:
        data, note = synthetic_face_val_set(run_dir / "data", img_hw, s.val_n)
        print(f"no --data given: reporting on a {note}")
    if calib is None:
        calib, note = synthetic_face_calibration(run_dir / "calib", img_hw, s.calib_n)
        print(f"no --calib given: calibrating on {note}")
    report = run_face_port(model, data, targets, run_dir, img_hw, calib, calib_n=s.calib_n, max_drop=s.max_drop,
                           threads=s.threads, graph=graph, nme_data=s.nme_data)
    print()
    print(format_face_table(report))
    for n in report.get("notes", []):
        print(f"note: {n}")
    print(f"report: {report['paths']['md']} (also report.json)")
    for f in report["failed"]:
        print(f"FAILED {f}")
    return 1 if report["failed"] else 0


def graph_options(s) -> dict:
    """The graph-shaping flags given (``convention``, ``mode``, ``sigmoid`` and the rest of
    ``export.GRAPH_OPTIONS``); each target fills the rest from its own convention."""
    from ..deploy.conventions import resolve_export_choice
    from .export import GRAPH_OPTIONS

    g = {k: getattr(s, k) for k in ("convention", "mode", *GRAPH_OPTIONS) if getattr(s, k, None) is not None}
    if "convention" in g or "mode" in g:  # refuse contradictions before any work
        resolve_export_choice(g.get("convention"), g.get("mode"), g.get("sigmoid"))
    return g


def print_summary(report: dict) -> None:
    from ..analysis.report import SUMMARY_COLUMNS, markdown_table, summary_rows

    from ..analysis.report import gate_lines, protocol_lines

    print()
    print(markdown_table(summary_rows(report), SUMMARY_COLUMNS))
    for line in protocol_lines(report) + gate_lines(report):
        print(line)
    for n in report.get("notes", []):
        print(f"note: {n}")
    print(f"report: {report['paths']['html']} (also report.md, report.json)")


def _default_calib(data) -> str:
    from ..data.dataset import load_data_yaml

    cfg = load_data_yaml(data)
    split = "train" if cfg.train else "val"
    return f"{data}:{split}"
