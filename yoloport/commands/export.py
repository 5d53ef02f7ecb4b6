"""``yoloport export``: a checkpoint or model key -> ONNX with an NPU-friendly Detect head.

    yoloport export --weights yolov5s.pt --img-size 736 416 --mode split --target rknn --focus-to-conv
    yoloport export --model-key yolov5s-v5.0 --mode end2end --conf-thres 0.25 --iou-thres 0.45 --max-det 100
    yoloport export --weights yolov5s.pt --target rknn      # rknn_model_zoo's convention: raw + sigmoid

The head layout follows ``--convention`` (:mod:`yoloport.deploy.conventions`), by default the one the
``--target``'s clients expect (rknn: rknn_model_zoo; onnxruntime/openvino: ultralytics; mlu: mlu), else
raw logits; ``--mode`` / ``--sigmoid`` override it and the metadata records the convention the result
follows.

Settings: flag > ``--config`` run config > the registry entry's ``export:`` dict > defaults
(mode raw, opset 12, batch 1, BN fusion on); with ``--target`` its clients' convention outranks the
registry entry's ``mode``/``sigmoid``. With ``--target`` the graph is linted *before* it is
written and refused on errors unless ``--force``. Writes ``OUT`` and ``OUT.json`` (metadata, HeadSpec,
output shapes, lint report); prints a summary table. Exit 2 on a user error, 0 otherwise.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..config import add_common_arguments, lookup_model_key, resolve_settings
from ..data.letterbox import input_multiple

DEFAULTS = {"opset": 12, "batch": 1, "fuse": True, "silu": "keep", "conf_thres": 0.25,
            "iou_thres": 0.45, "max_det": 300, "target": None, "dynamic": False,
            "simplify": False}
REGISTRY_KEYS = ("mode", "opset", "batch", "target", "sigmoid", "dynamic", "simplify", "focus_to_conv", "fuse",
                 "silu", "conf_thres", "iou_thres", "max_det", "img_size", "convention")
# registry ``export:`` keys that a --target's (or a backend's) output convention outranks
TARGET_LAYOUT_KEYS = ("mode", "sigmoid")
# the options that shape the exported graph, besides size, batch and opset (export, quantize and port take them)
GRAPH_OPTIONS = ("sigmoid", "focus_to_conv", "fuse", "silu", "simplify", "conf_thres", "iou_thres", "max_det")


def add_graph_arguments(p: argparse.ArgumentParser, default_note: str = "the --target's convention, else raw") -> None:
    """The flags that shape the exported graph (head layout, surgery, end2end settings): one definition
    for ``export``, ``quantize`` and ``port``. Every default is None (filled where the command resolves)."""
    from ..deploy.conventions import CONVENTIONS
    from ..deploy.export import SILU_MODES
    from ..nn.heads import EXPORT_MODES

    g = p.add_argument_group("graph (what the exported outputs look like)")
    g.add_argument("--convention", choices=tuple(CONVENTIONS), default=None,
                   help="output convention of the target's clients: " + "; ".join(f"{c.name}: {c.definition}" for c in CONVENTIONS.values())
                   + f" (default: {default_note})")
    g.add_argument("--mode", choices=EXPORT_MODES, default=None, help=f"Detect head variant (default: {default_note})")
    g.add_argument("--sigmoid", action=argparse.BooleanOptionalAction, default=None,
                   help="raw mode: apply the sigmoid in the graph (default: as the convention says)")
    g.add_argument("--focus-to-conv", dest="focus_to_conv", action=argparse.BooleanOptionalAction, default=None,
                   help="replace a v5.0 Focus stem by the equivalent 6x6 stride-2 Conv (default: as the target's "
                        "backend declares, on for rknn, mlu and openvino; off for onnxruntime and a plain export)")
    g.add_argument("--fuse", action=argparse.BooleanOptionalAction, default=None,
                   help="fold BatchNorm into the convolutions (default on)")
    g.add_argument("--silu", choices=SILU_MODES, default=None, help="mul-sigmoid: SiLU as explicit x*sigmoid(x) modules (the TorchScript exporter "
                   "already writes SiLU as Sigmoid + Mul at opsets 11..19; this pins it for any exporter)")
    g.add_argument("--simplify", action="store_true", default=None, help="simplify the graph with onnxslim")
    g.add_argument("--conf-thres", dest="conf_thres", type=float, default=None, help="end2end: score threshold (0.25)")
    g.add_argument("--iou-thres", dest="iou_thres", type=float, default=None, help="end2end: NMS IoU threshold (0.45)")
    g.add_argument("--max-det", dest="max_det", type=int, default=None, help="end2end: detections per image (300)")


def graph_choice(s, default_convention: str | None, nkpt: int = 0) -> tuple[str, bool, str | None, dict]:
    """``(mode, sigmoid, convention, other graph options)`` of settings ``s``: ``--convention``, else
    ``default_convention`` (the target's; its keypoint variant for a head with ``nkpt`` keypoints),
    overridden by ``--mode``/``--sigmoid``; the other options are those of :data:`GRAPH_OPTIONS` that
    were given."""
    from ..deploy.conventions import resolve_export_choice

    mode, sigmoid, conv = resolve_export_choice(getattr(s, "convention", None), getattr(s, "mode", None),
                                                getattr(s, "sigmoid", None), default=default_convention, nkpt=nkpt)
    others = {k: getattr(s, k) for k in GRAPH_OPTIONS if k != "sigmoid" and getattr(s, k, None) is not None}
    return mode, sigmoid, conv, others


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..deploy.op_support import TARGETS

    add_common_arguments(p)
    p.add_argument("--img-size", dest="img_size", nargs="+", type=int, metavar="W H",
                   help="input width and height (one value: square); default: the model's, else 640")
    p.add_argument("--batch", type=int, default=None, help="static batch size (default 1)")
    p.add_argument("--dynamic", action="store_true", default=None, help="dynamic batch axis (not for rknn)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset, 11..19 (default 12)")
    p.add_argument("--target", choices=TARGETS, default=None,
                   help="lint the graph for this target before writing it; its clients' output convention is the default")
    p.add_argument("--force", action="store_true", help="write the graph even when the --target lint finds errors")
    add_graph_arguments(p)
    p.add_argument("--out", help="ONNX path (default ./<weights stem>-<mode>-<W>x<H>.onnx)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out (and its .json sidecar)")
    p.add_argument("--check", nargs="?", const="", default=None, metavar="IMG",
                   help="run the written graph with onnxruntime on IMG (default: a fixed random image) and "
                        "report its difference to the PyTorch model")


def export_settings(args: argparse.Namespace) -> argparse.Namespace:
    """Merge flags, run config, the registry entry's ``export:`` dict and the defaults."""
    s = resolve_settings(args, {})
    if getattr(s, "model_key", None) and not getattr(s, "weights", None):
        entry = lookup_model_key(s.model_key, getattr(s, "registry", None))
        for k in REGISTRY_KEYS:
            if k in TARGET_LAYOUT_KEYS and getattr(s, "target", None):
                continue  # a --target's convention outranks the registry entry's generic head layout
            if getattr(s, k, None) is None and k in entry.export:
                setattr(s, k, entry.export[k])
    for k, v in DEFAULTS.items():
        if getattr(s, k, None) is None:
            setattr(s, k, v)
    if getattr(s, "focus_to_conv", None) is None:
        from ..backends.registry import focus_to_conv_for_target

        s.focus_to_conv = focus_to_conv_for_target(s.target)
    from ..deploy.conventions import TARGET_CONVENTIONS

    s.mode, s.sigmoid, s.convention, _ = graph_choice(s, TARGET_CONVENTIONS.get(s.target))
    return s


def default_out(s: argparse.Namespace, mode: str, hw) -> Path:
    stem = Path(s.weights).stem if getattr(s, "weights", None) else str(s.model_key)
    return Path(f"{stem}-{mode}-{hw[1]}x{hw[0]}.onnx")


def refuse_existing_export(out: Path, overwrite: bool) -> None:
    """Before any work: an existing ``out`` or ``out.json`` (even an earlier export) is replaced only
    with --overwrite; a folder never."""
    from ..deploy.onnx_meta import sidecar_path
    from ..io.paths import claim_output_file

    claim_output_file(out, overwrite, what="--out")
    claim_output_file(sidecar_path(out), overwrite, what="--out's sidecar")


def run(args: argparse.Namespace) -> int:
    from ..deploy.export import export_model
    from ._model_args import img_size_from_settings, load_model_from_settings

    s = export_settings(args)
    model = load_model_from_settings(s, default=None)
    if getattr(model.detect, "nkpt", 0) and not any(getattr(args, k, None) is not None for k in ("convention", "mode", "sigmoid")):
        from ..deploy.conventions import TARGET_CONVENTIONS, resolve_export_choice  # a face head: the target's keypoint variant

        s.mode, s.sigmoid, s.convention = resolve_export_choice(default=TARGET_CONVENTIONS.get(s.target), nkpt=model.detect.nkpt)
    hw = img_size_from_settings(s, model, input_multiple(model.stride))
    out = Path(s.out) if getattr(s, "out", None) else default_out(s, s.mode, hw)
    overwrite = bool(getattr(s, "overwrite", False))
    refuse_existing_export(out, overwrite)
    t0 = time.perf_counter()
    res = export_model(
        model, out, hw, s.mode, int(s.batch), int(s.opset), bool(s.sigmoid), dynamic=bool(s.dynamic),
        simplify=bool(s.simplify), fuse=bool(s.fuse), focus_to_conv=bool(s.focus_to_conv), silu=s.silu,
        conf_thres=float(s.conf_thres), iou_thres=float(s.iou_thres), max_det=int(s.max_det), target=s.target,
        convention=s.convention,
        force=bool(getattr(s, "force", False)), overwrite=overwrite,
        sidecar_extra={"source": str(getattr(model, "source", {}).get("path", s.weights or s.model_key))
                       if isinstance(getattr(model, "source", None), dict) else str(s.weights or s.model_key)},
    )
    seconds = time.perf_counter() - t0
    check = None
    if getattr(s, "check", None) is not None:
        from ..deploy.export import verify_export

        check = verify_export(model, res.path, s.check or None)
    print_summary(res, s, hw, seconds, check)
    if res.lint is not None and res.lint.findings:
        from ..deploy.lint import format_report

        print()
        print(format_report(res.lint))
    return 0


def _convention_row(name: str | None) -> str:
    from ..deploy.conventions import CONVENTIONS

    return f"{name} ({CONVENTIONS[name].client})" if name in CONVENTIONS else "none of the known conventions"


def print_summary(res, s, hw, seconds: float, check: dict | None = None) -> None:
    """The summary table: one ``key | value`` row per fact of the export."""
    size = res.path.stat().st_size
    rows = [
        ("onnx", str(res.path)),
        ("sidecar", str(res.sidecar) if res.sidecar else "-"),
        ("mode", res.head.mode + (" (sigmoid in graph)" if res.head.sigmoid_applied else "")),
        ("convention", _convention_row(res.head.convention)),
        ("input", f"images [{'batch' if s.dynamic else s.batch}, 3, {hw[0]}, {hw[1]}]  (W x H {hw[1]} x {hw[0]}, RGB 0..1)"),
        ("outputs", ", ".join(f"{k} {v}" for k, v in res.output_shapes.items())),
        ("opset", str(s.opset)),
        ("surgery", ", ".join(res.surgery) or "none"),
        ("classes", f"{res.head.nc}"),
        ("size", f"{size / 1e6:.1f} MB"),
        ("time", f"{seconds:.1f} s"),
    ]
    if res.head.mode == "end2end":
        rows.append(("nms", f"conf > {s.conf_thres}, IoU > {s.iou_thres}, max_det {s.max_det} (baked in)"))
    if res.lint is not None:
        rows.append(("lint", res.lint.summary() + (" (written anyway: --force)" if res.lint.errors else "")))
    if check is not None:
        rows.append(("check", check["summary"]))
    w = max(len(k) for k, _ in rows)
    print(f"yoloport export: {res.path}")
    for k, v in rows:
        print(f"  {k.ljust(w)} | {v}")
