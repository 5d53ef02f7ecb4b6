"""``yoloport lint model.onnx --target rknn|mlu|onnxruntime|openvino``.

Prints a table (rule | severity | nodes | hint), each finding's message and a summary line; writes
the report as JSON with ``--json``. Exit status: 1 when an error-level rule fires, 0 otherwise, 2 for
a missing or unreadable file (via :class:`~yoloport.errors.YoloportError`).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ..errors import DependencyMissing, YoloportError


TARGETS = ("rknn", "mlu", "onnxruntime", "openvino")  # == yoloport.deploy.op_support.TARGETS (no onnx import here)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="ONNX file to check")
    parser.add_argument("--target", choices=TARGETS, default="rknn", help="deployment target (default: rknn)")
    parser.add_argument("--json", metavar="OUT", help="also write the report as JSON to OUT")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    parser.add_argument(
        "--sample-image",
        metavar="IMG",
        help="letterbox IMG to the graph's input size and measure the Concat input ranges with onnxruntime "
        "(makes the concat-mixed-range check a measurement instead of a static estimate)",
    )
    parser.add_argument("--quiet", action="store_true", help="print only the summary line")


def _static_input_hw(model) -> tuple[int, int]:
    """(h, w) of the first graph input, which must be static [B, 3, H, W]."""
    init = {t.name for t in model.graph.initializer}
    inp = next(v for v in model.graph.input if v.name not in init)
    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in inp.type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[2] <= 0 or dims[3] <= 0:
        raise YoloportError(f"--sample-image needs a static [B, 3, H, W] input, got {inp.name} {dims}")
    return dims[2], dims[3]


def sample_from_image(path: str, model) -> np.ndarray:
    """Preprocess ``path`` exactly as detect/val do, at the graph's input size: float32 [1, 3, H, W]."""
    from ..data.letterbox import preprocess
    from ..data.sources import require_image

    im = require_image(path, "sample image")
    chw, _ = preprocess(im, _static_input_hw(model), auto=False)
    return chw[None]


def run(args: argparse.Namespace) -> int:
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise DependencyMissing("onnx", "yoloport lint", "pip install 'yoloport[deploy]'") from None
    from ..deploy.lint import format_report, lint_model, load_onnx
    from ..io.paths import claim_output_file, write_text_atomic

    if args.json:
        claim_output_file(args.json, bool(args.overwrite), what="--json")  # refused before any work
    model = load_onnx(args.model)
    sample = sample_from_image(args.sample_image, model) if args.sample_image else None
    report = lint_model(model, args.target, sample_input=sample, model_dir=Path(args.model).parent)
    report.model = str(args.model)
    print(report.summary() if args.quiet else format_report(report))
    if args.json:
        write_text_atomic(args.json, json.dumps(report.to_dict(), indent=2))
    return 0 if report.ok else 1
