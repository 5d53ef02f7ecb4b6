"""``yoloport compare --weights X --artifact A --source imgs/``: float vs ported model, image by image.

The reference is the PyTorch model with its head in the artifact's mode; both see the same
letterboxed inputs (the artifact's fixed shape). Prints per-output SQNR / cosine and per-image
detection matching (IoU, confidence change, boxes only one side finds); writes the report as JSON
(``--json``, default ``<artifact>.compare.json`` next to the artifact). Exit status: 0; 1 when ``--min-sqnr`` or ``--min-match-rate`` is not met; 2 on a user
error (an artifact of another model or backend, a missing file, ...).
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from ..errors import YoloportError
from ..data.letterbox import input_multiple


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..backends.registry import BACKENDS
    from ..config import add_common_arguments

    add_common_arguments(parser)
    parser.add_argument("--backend", choices=BACKENDS, help="backend of the artifact (default: read from its sidecar)")
    parser.add_argument("--artifact", help="artifact built by 'yoloport quantize' (not needed for --backend torch)")
    parser.add_argument("--source", help="images: folder, glob, data YAML[:split] or list file")
    parser.add_argument("--max-images", type=int, default=None, help="compare on at most this many images (default 16)")
    parser.add_argument("--img-size", nargs="+", type=int, metavar="W H", help="input size when the artifact has no fixed one")
    parser.add_argument("--conf-thres", type=float, default=None, help="detection confidence threshold (default 0.25)")
    parser.add_argument("--iou-thres", type=float, default=None, help="NMS IoU threshold (default 0.45)")
    parser.add_argument("--match-iou", type=float, default=None, help="IoU for a float and a quantized box to match (default 0.5)")
    parser.add_argument("--class-agnostic-match", action="store_true", help="match boxes whatever their classes")
    parser.add_argument("--threads", type=int, default=None, help="runtime threads")
    parser.add_argument("--json", metavar="OUT", help="write the report as JSON here (default: <artifact>.compare.json)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    parser.add_argument("--min-sqnr", type=float, default=None, help="exit 1 if an output's SQNR (dB) is below this")
    parser.add_argument("--min-match-rate", type=float, default=None, help="exit 1 if fewer boxes than this fraction match")


def _note(msg: str) -> None:
    """Calibration-loader notes worth showing here (``--max-images`` is a cap, not a request)."""
    if "asked" not in msg:
        print(f"note: {msg}")


def run(args: argparse.Namespace) -> int:
    from ..analysis.compare import compare_runners, format_compare_table, jsonable, reference_runner
    from ..backends.registry import load_runner
    from ..config import resolve_settings
    from ..data.calibration import load_calibration
    from .quantize import load_model_from_args, resolve_img_size

    args = resolve_settings(args, {"max_images": 16, "conf_thres": 0.25, "iou_thres": 0.45, "match_iou": 0.5})
    if not args.source:
        raise YoloportError("no images given: pass --source (folder, glob, data YAML or list file)")
    from ..backends.registry import REFERENCE, canonical_name

    if not args.artifact and args.backend is not None and canonical_name(args.backend) != REFERENCE:
        raise YoloportError(f"--backend {args.backend} needs --artifact (build one with 'yoloport quantize')")
    if not args.artifact and args.backend is None:
        raise YoloportError("pass --artifact (and optionally --backend)")
    model = load_model_from_args(args)
    test = load_runner(args.backend, args.artifact, model=model, threads=args.threads)
    js = args.json or (str(Path(args.artifact).with_name(Path(args.artifact).name + ".compare.json")) if args.artifact else None)
    if js:
        from ..io.paths import claim_output_file

        claim_output_file(js, bool(args.overwrite), what="--json")  # refused before the comparison runs
    hw = tuple(test.input_hw) if test.input_hw else resolve_img_size(args, model)
    ref = reference_runner(model, test.head, hw)
    images = load_calibration(args.source, n=args.max_images, img_size_hw=hw, stride=input_multiple(model.stride),
                              seed=None, warn=_note)
    report = compare_runners(
        ref, test, images.paths, img_size_hw=hw, conf_thres=args.conf_thres, iou_thres=args.iou_thres,
        match_iou=args.match_iou, class_aware=not args.class_agnostic_match,
    )
    report["artifact"] = str(args.artifact) if args.artifact else None
    print(format_compare_table(report))
    if js:
        from ..io.paths import write_text_atomic

        print(f"report: {write_text_atomic(js, json.dumps(jsonable(report), indent=2))}")
    failed = []
    s = report["summary"]
    if args.min_sqnr is not None:
        vals = [o["sqnr_db"] for o in report["outputs"]] or ([report["decoded"]["sqnr_db"]] if report.get("decoded") else [])
        low = [v for v in vals if not (isinstance(v, float) and math.isinf(v) and v > 0) and v < args.min_sqnr]
        if low:
            failed.append(f"output SQNR {min(low):.2f} dB < {args.min_sqnr} dB")
    if args.min_match_rate is not None and s["match_rate"] < args.min_match_rate:
        failed.append(f"match rate {s['match_rate']:.3f} < {args.min_match_rate}")
    for f in failed:
        print(f"FAIL: {f}")
    return 1 if failed else 0
