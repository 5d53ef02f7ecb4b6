"""``yoloport quantize --weights X --backend B --calib SRC --out DIR``: build a backend artifact.

Exports the model to ONNX (``--mode`` head, fixed ``--img-size``), draws ``--calib-n`` calibration
images through the one preprocessing path, and builds the backend's int8 (or float) artifact with its
JSON sidecar. Prints a summary table and writes it as JSON (``DIR/quantize.json`` or ``--json``).
Backend options go into one ``qconfig`` dict; each backend reads the keys it knows.

Exit status: 0 built, 2 user error (bad path, unknown backend, missing package, ...).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..errors import YoloportError
from ..data.letterbox import input_multiple

# flags whose values go into the qconfig (filled by add_arguments; each backend's SPEC says which keys it takes)
QCONFIG_DESTS: set[str] = set()


def _qconfig_flag(group, *flags, **kwargs):
    """Add a flag whose value is a qconfig entry (its dest is the key)."""
    action = group.add_argument(*flags, **kwargs)
    QCONFIG_DESTS.add(action.dest)
    return action


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..backends.registry import ARTIFACT_BACKENDS
    from ..config import add_common_arguments
    from .export import add_graph_arguments

    add_common_arguments(parser)
    parser.add_argument("--backend", choices=ARTIFACT_BACKENDS, help="target backend")
    parser.add_argument("--calib", metavar="SRC", help="calibration images: folder, glob, data YAML[:split] or list file (int8)")
    parser.add_argument("--calib-n", type=int, default=None, help="number of calibration images (default 100)")
    parser.add_argument("--calib-seed", type=int, default=None, help="seed for sampling them (default 0)")
    parser.add_argument("--img-size", nargs="+", type=int, metavar="W H", help="fixed input size, W H (default: the model's, else 640)")
    parser.add_argument("--batch", type=int, default=None, help="fixed batch size of the artifact (default 1)")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset for the export (default: the backend's choice)")
    parser.add_argument("--out", help="output folder (default runs/quantize/<backend>)")
    parser.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty --out folder and over an existing --json file")
    parser.add_argument("--json", metavar="OUT", help="summary JSON path (default OUT/quantize.json)")
    parser.add_argument("--overlap", choices=("split", "error"), default=None,
                        help="with --val-data: when calibration and --val-data images overlap (same file or content), "
                             "split them by content hash (default) or refuse")
    add_graph_arguments(parser, "the backend's convention: rknn rknn_model_zoo, onnxruntime/openvino ultralytics, "
                                "mlu-sim mlu")
    _qconfig_flag(parser, "--precision", choices=("int8", "fp32", "fp16", "bf16"), help="default int8 with --calib, else fp32")
    _qconfig_flag(parser, "--exclude", nargs="+", metavar="NODE", help="node names, globs or op types kept in float")
    _qconfig_flag(parser, "--ptq", nargs="*", metavar="STEP", help="post-training steps on the calibration images "
                  "(equalize, adaround, bias_correction); --ptq alone: none (default: the backend's, mlu-sim bias_correction)")
    _qconfig_flag(parser, "--head-fp32", choices=("tail", "convs", "none"), help="keep the head's decode (tail), also its convs, or nothing in float (default: onnxruntime convs, openvino tail)")

    g = parser.add_argument_group("onnxruntime")
    _qconfig_flag(g, "--act-type", choices=("uint8", "int8"), help="activation type (default uint8: U8S8 is the fast path on x86)")
    _qconfig_flag(g, "--weight-type", choices=("int8", "uint8"), help="weight type (default int8)")
    _qconfig_flag(g, "--per-channel", dest="per_channel", action="store_true", default=None, help="per-channel weights (default; also mlu-sim)")
    _qconfig_flag(g, "--per-tensor", dest="per_channel", action="store_false", help="per-tensor weights")
    _qconfig_flag(g, "--calib-method", choices=("minmax", "entropy", "percentile"), help="activation range calibration (default minmax)")
    _qconfig_flag(g, "--percentile", type=float, help="percentile for --calib-method percentile (default 99.999)")
    _qconfig_flag(g, "--reduce-range", action="store_true", default=None, help="7-bit weights (old CPUs without VNNI)")
    _qconfig_flag(g, "--no-pre-process", dest="pre_process", action="store_false", default=None, help="skip quant_pre_process")
    _qconfig_flag(g, "--silu-op", choices=("qlinear", "quickgelu"),
                  help="each SiLU as QLinearSigmoid + QLinearMul (qlinear) or one fused QuickGelu between the conv's and "
                       "the Mul's grids (quickgelu: the sigmoid not rounded)")

    g = parser.add_argument_group("openvino")
    _qconfig_flag(g, "--preset", choices=("mixed", "performance"), help="NNCF preset (default mixed)")
    _qconfig_flag(g, "--subset-size", type=int, help="NNCF calibration subset size (default: all calibration images)")
    _qconfig_flag(g, "--no-fast-bias-correction", dest="fast_bias_correction", action="store_false", default=None)
    _qconfig_flag(g, "--max-drop", type=float, help="accuracy control: largest mAP50-95 drop allowed (default 0.01)")
    _qconfig_flag(g, "--val-data", dest="validation", metavar="YAML[:SPLIT]", help="accuracy-controlled quantization on this labelled set")
    _qconfig_flag(g, "--val-n", dest="validation_n", type=int, help="images of --val-data used (default 32)")
    _qconfig_flag(g, "--ov-precision", dest="inference_precision", choices=("f32", "f16", "bf16"), help="runtime INFERENCE_PRECISION_HINT stored in the artifact (default f32 for fp32/int8)")

    g = parser.add_argument_group("rknn")
    _qconfig_flag(g, "--platform", help="target platform, e.g. rk3588, rk3566, rv1106")
    _qconfig_flag(g, "--quantized-dtype", help="e.g. asymmetric_quantized-8 (w8a8)")
    _qconfig_flag(g, "--quantized-algorithm", help="normal, mmse or kl_divergence")
    _qconfig_flag(g, "--quantized-method", help="channel or layer")
    _qconfig_flag(g, "--hybrid", nargs="*", metavar="NODE", help="hybrid quantization: layers kept in float16")
    _qconfig_flag(g, "--optimization-level", type=int, help="rknn optimization level (0-3)")

    g = parser.add_argument_group("mlu-sim")
    _qconfig_flag(g, "--use-avg", action="store_true", default=None, help="average (not max) of calibration ranges")
    _qconfig_flag(g, "--data-scale", type=float, help="scale applied to the calibrated ranges")
    _qconfig_flag(g, "--firstconv", action="store_true", default=None, help="first convolution takes uint8 image input")
    _qconfig_flag(g, "--act-range", choices=("max", "mse", "percentile"),
                  help="conv input ranges: max |x|, least squared error, or a percentile of |x| (default mse)")
    _qconfig_flag(g, "--act-percentile", type=float, help="percentile of |x| for --act-range percentile (default 99.99)")
    _qconfig_flag(g, "--weight-range", choices=("max", "mse"), help="weight ranges: max |w| or least squared error (default max)")


def qconfig_from_args(args: argparse.Namespace) -> dict:
    """The backend options given on the command line (or the run config), as a qconfig dict."""
    return {k: getattr(args, k) for k in sorted(QCONFIG_DESTS) if getattr(args, k, None) is not None}


def resolve_img_size(args, model) -> tuple[int, int]:
    """``--img-size W H`` / the run config's / the model's own / 640 -> ``(h, w)``."""
    from ..data.letterbox import parse_img_size

    stride = input_multiple(model.stride)
    if args.img_size:
        return parse_img_size(args.img_size, stride)
    if getattr(model, "img_size", None):
        return tuple(int(v) for v in model.img_size)
    return (640, 640)


def load_model_from_args(args):
    from ..config import model_source
    from ..models import load_model

    return load_model(model_source(args), getattr(args, "registry", None))


def registry_export(args) -> dict:
    """The ``export:`` settings of ``--model-key``'s registry entry (``{}`` without a key)."""
    from ..config import lookup_model_key

    key = getattr(args, "model_key", None)
    if not key or getattr(args, "weights", None):
        return {}
    return dict(lookup_model_key(key, getattr(args, "registry", None)).export or {})


def graph_settings(args, backend: str, nkpt: int = 0) -> tuple[str, bool, str | None, dict]:
    """``(mode, sigmoid, convention, other graph options)`` of the export: the flags, else the backend's
    output convention (``SPEC.output_convention``); the model key's ``export:`` entry fills the other
    graph options (and a ``convention`` it names)."""
    from ..backends.registry import get_spec
    from .export import GRAPH_OPTIONS, graph_choice

    from .export import TARGET_LAYOUT_KEYS

    entry = registry_export(args)
    for k in ("convention", *GRAPH_OPTIONS):
        if k in TARGET_LAYOUT_KEYS:
            continue  # the backend's convention outranks the registry entry's generic head layout
        if getattr(args, k, None) is None and k in entry:
            setattr(args, k, entry[k])
    return graph_choice(args, get_spec(backend).output_convention, nkpt)


def summary_rows(info: dict) -> list[tuple[str, str]]:
    cal = info.get("calibration") or {}
    rows = [
        ("backend", info["backend"]),
        ("precision", str(info.get("precision"))),
        ("artifact", info["artifact"]),
        ("size", f"{info['size_bytes'] / 1e6:.2f} MB (fp32 ONNX {info['onnx_size_bytes'] / 1e6:.2f} MB)"),
        ("input", f"{input_shape_text(info)}, head {info['head']['mode']}"
                  + (" (sigmoid in graph)" if info["head"].get("sigmoid_applied") else "")),
        ("convention", str(info["head"].get("convention"))),
        ("calibration", f"{cal.get('count')} images from {cal.get('source')}" if cal else "-"),
        ("time", f"{info['seconds']:.1f} s (export + build)"),
    ]
    q = info.get("qconfig") or {}
    hidden = ("excluded_nodes", "ignored_ops", "ignored_types", "batch")  # the input row says the artifact's batch
    shown = {k: v for k, v in q.items() if k not in hidden and not isinstance(v, dict) and v not in (None, [], "")}
    rows.append(("settings", ", ".join(f"{k}={v}" for k, v in shown.items())))
    n_ex = len(q.get("excluded_nodes") or q.get("ignored_ops") or [])
    types = q.get("ignored_types") or []
    if n_ex or types:
        rows.append(("kept float", f"{n_ex} node(s)" + (f", all of type {', '.join(types)}" if types else "")))
    return rows


def input_shape_text(info: dict) -> str:
    """The artifact's input from its sidecar: ``1x3x320x320 (B,C,H,W)``, or for one that takes any batch
    ``Bx3x320x320 (B,C,H,W), batch dynamic``."""
    from ..backends.registry import describe_batch

    h, w = info["input_hw"]
    batch = info.get("batch")
    if batch is None:
        return f"Bx3x{h}x{w} (B,C,H,W), batch {describe_batch(batch)}"
    return f"{describe_batch(batch)}x3x{h}x{w} (B,C,H,W)"


def format_table(rows) -> str:
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)


def run(args: argparse.Namespace) -> int:
    from ..backends.registry import canonical_name, check_qconfig, require_artifact_backend
    from ..config import resolve_settings
    from ..io.paths import claim_out_dir, claim_output_file, unlock_run_dir

    args = resolve_settings(args, {"calib_n": 100, "calib_seed": 0, "batch": 1, "opset": None})
    if not args.backend:
        raise YoloportError("no backend given: pass --backend (onnxruntime, openvino, rknn, mlu-sim)")
    backend = canonical_name(args.backend)
    require_artifact_backend(backend, "quantize")
    qconfig = qconfig_from_args(args)
    precision = qconfig.get("precision") or ("int8" if args.calib else "fp32")
    qconfig["precision"] = precision
    if precision == "int8" and not args.calib:
        raise YoloportError("int8 needs calibration images: pass --calib SRC (or --precision fp32)")
    check_qconfig(backend, qconfig)  # options this backend does not take are refused before any work
    if args.json:
        claim_output_file(args.json, bool(args.overwrite), what="--json")  # refused before any work
    model = load_model_from_args(args)
    hw = resolve_img_size(args, model)
    graph = graph_settings(args, backend, int(getattr(model.detect, "nkpt", 0)))
    out, lock = claim_out_dir(args.out or f"runs/quantize/{backend}", overwrite=bool(args.overwrite),
                              explicit=bool(args.out))
    try:
        return _build_and_report(args, backend, model, hw, graph, qconfig, out)
    finally:
        unlock_run_dir(lock)


def selection_protocol(args, qconfig: dict, out: Path) -> tuple[list, str, dict]:
    """Calibration pool (``--calib``) and the accuracy control's selection images (the first ``--val-n``
    of ``--val-data``) made disjoint (:mod:`yoloport.data.protocol`). Returns ``(calibration paths,
    the selection as a data YAML written into out, protocol record)``."""
    from ..data.calibration import resolve_source
    from ..data.protocol import ImageSet, image_set, labelled_split, make_disjoint, protocol_record, write_image_set_yaml

    policy = args.overlap or "split"
    cfg, split, images = labelled_split(qconfig["validation"])
    pool, _ = resolve_source(args.calib)
    sets, found = make_disjoint([image_set("calibration", str(args.calib), pool),
                                 image_set("selection", f"{qconfig['validation']}", images)], policy,
                                warn=lambda m: print(f"warning: {m}"))
    n = int(qconfig.get("validation_n") or 32)
    selection = sets[1]
    keep = sorted(range(len(selection)), key=lambda k: str(selection.paths[k]))[:n]
    selection = ImageSet("selection", selection.source, tuple(selection.paths[k] for k in keep),
                         tuple(selection.hashes[k] for k in keep))
    yaml_path = write_image_set_yaml(out, "selection", cfg, selection.paths)
    record = protocol_record([sets[0], selection], found, policy,
                             not_used={"reporting": "quantize reports no accuracy: measure it with val on other images"})
    return list(sets[0].paths), f"{yaml_path}:val", record


def _build_and_report(args, backend: str, model, hw, graph: tuple, qconfig: dict, out: Path) -> int:
    """Calibrate, build the artifact (``graph``: :func:`graph_settings`) into the claimed folder ``out``,
    print and write the summary."""
    from ..backends.base import read_sidecar
    from ..backends.registry import artifact_size, build_artifact
    from ..data.calibration import load_calibration
    from ..data.protocol import calibration_only_protocol, used_calibration
    from ..io.paths import write_text_atomic

    mode, sigmoid, convention, graph_opts = graph
    t0 = time.perf_counter()
    calib, protocol = None, None
    if args.calib:  # float builds record it too where a backend uses it (rknn accuracy analysis)
        source = args.calib
        if qconfig.get("validation"):  # accuracy control decides on its images: keep them apart from calibration
            source, qconfig["validation"], protocol = selection_protocol(args, qconfig, out)
        calib = load_calibration(source, n=args.calib_n, img_size_hw=hw, stride=input_multiple(model.stride),
                                 seed=args.calib_seed, warn=lambda m: print(f"warning: {m}"))
        calib.source = str(args.calib)
        if protocol:
            protocol["calibration"] = used_calibration(calib, protocol["calibration"])
        else:
            protocol = calibration_only_protocol(calib, "no accuracy control (--val-data)")
    artifact = build_artifact(backend, model, out, hw, calib, qconfig, mode=mode, batch=args.batch, opset=args.opset,
                              export_options={**graph_opts, "sigmoid": sigmoid}, convention=convention)
    seconds = time.perf_counter() - t0
    info = read_sidecar(artifact)
    onnx_fp32 = out / "model.fp32.onnx"
    summary = {
        **info,
        "artifact": str(artifact),
        "seconds": round(seconds, 3),
        "size_bytes": artifact_size(artifact),
        "onnx_size_bytes": artifact_size(onnx_fp32) if onnx_fp32.exists() else 0,
    }
    if protocol:
        summary["protocol"] = protocol
    print(format_table(summary_rows(summary)))
    js = Path(args.json) if args.json else out / "quantize.json"
    write_text_atomic(js, json.dumps(summary, indent=2, default=str))
    print(f"summary: {js}")
    return 0
