"""Export a DetectionModel to ONNX with one of the NPU-friendly head modes.

Steps (each a small function, :func:`export_model` runs them in order):

1. :func:`prepare_model` - deep copy, eval, float32; optional surgery (BN fusion, Focus -> Conv,
   SiLU as ``x * sigmoid(x)``); the Detect head's ``export_mode`` / ``export_options`` set.
2. :func:`build_onnx` - trace with the TorchScript exporter into memory, optional onnxslim,
   metadata written into ``metadata_props`` (see :mod:`yoloport.deploy.onnx_meta`).
3. lint for ``target`` (:func:`yoloport.deploy.lint.check_or_raise`) *before* anything is written,
   so a refused graph never replaces a good file.
4. :func:`write_export` - the ONNX and its ``.onnx.json`` sidecar, each written atomically.

File policy: an existing ``path`` that yoloport exported earlier is replaced (as Ultralytics
re-exports over its own output); any other existing file is refused unless ``overwrite=True``
(``--overwrite``), so nothing the user had is lost by accident.
"""
from __future__ import annotations

import copy
import io
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import YoloportError
from ..ops.postprocess import HeadSpec
from ..nn.heads import DEFAULT_CONF_THRES, DEFAULT_IOU_THRES, DEFAULT_MAX_DET, EXPORT_MODES
from .onnx_meta import META_MARKER, build_meta, is_yoloport_export, sidecar_path, write_onnx_meta
from ..data.letterbox import input_multiple

OPSET_RANGE = (11, 19)
DEFAULT_OPSET = 12  # RKNN-Toolkit2's documented sweet spot; NonMaxSuppression needs >= 10
SILU_MODES = ("keep", "mul-sigmoid")
OUTPUT_NAMES = {"split": ["xy", "wh", "conf"], "decoded": ["output0"], "end2end": ["num_dets", "detections"]}
KEYPOINT_OUTPUT = "kpts"  # the split mode's fourth output when the head has keypoints


@dataclass
class ExportResult:
    """What :func:`export_model` produced."""

    path: Path
    head: HeadSpec
    meta: dict
    sidecar: Path | None = None
    lint: object | None = None  # yoloport.deploy.lint.LintReport when a target was linted
    surgery: list = field(default_factory=list)
    output_shapes: dict = field(default_factory=dict)  # output name -> dims (ints, or 'batch')
    img_size_hw: tuple[int, int] = (640, 640)  # the graph's fixed input (h, w)
    batch: int = 1  # its fixed batch (1 for a dynamic batch)
    opset: int = 13


def output_names(mode: str, nl: int, nkpt: int = 0) -> list[str]:
    """Graph output names of a head mode (``raw``: ``out0 .. out{nl-1}``, stride 8 first; a keypoint
    head's ``split`` adds ``kpts``)."""
    if mode == "raw":
        return [f"out{i}" for i in range(nl)]
    return list(OUTPUT_NAMES[mode]) + ([KEYPOINT_OUTPUT] if mode == "split" and nkpt else [])


def check_export_args(model, img_size_hw, mode: str, batch: int, opset: int, sigmoid: bool, dynamic: bool,
                      conf_thres: float, iou_thres: float, max_det: int, silu: str) -> tuple[int, int]:
    """Validate user-facing export settings; returns ``(h, w)``. Raises :class:`YoloportError`."""
    if mode not in EXPORT_MODES:
        raise YoloportError(f"unknown export mode {mode!r}; choose from {', '.join(EXPORT_MODES)}")
    if not OPSET_RANGE[0] <= int(opset) <= OPSET_RANGE[1]:
        raise YoloportError(f"opset {opset} is not supported; use {OPSET_RANGE[0]}..{OPSET_RANGE[1]} (default {DEFAULT_OPSET})")
    if int(batch) < 1:
        raise YoloportError(f"batch must be >= 1, got {batch}")
    if sigmoid and mode != "raw":
        raise YoloportError(f"--sigmoid applies to --mode raw only ({mode} always applies the sigmoid in the graph)")
    if dynamic and mode == "end2end":
        raise YoloportError("--dynamic is not available for --mode end2end (its NMS outputs are laid out per image)")
    if silu not in SILU_MODES:
        raise YoloportError(f"unknown --silu {silu!r}; choose from {', '.join(SILU_MODES)}")
    if not (0 <= conf_thres <= 1 and 0 <= iou_thres <= 1):
        raise YoloportError(f"conf_thres and iou_thres must be in [0, 1], got {conf_thres}, {iou_thres}")
    if int(max_det) < 1:
        raise YoloportError(f"max_det must be >= 1, got {max_det}")
    h, w = (int(img_size_hw), int(img_size_hw)) if isinstance(img_size_hw, int) else (int(img_size_hw[0]), int(img_size_hw[1]))
    s = input_multiple(model.stride)
    if h <= 0 or w <= 0 or h % s or w % s:
        raise YoloportError(f"input size {w}x{h} (W x H) must be positive multiples of the model's stride {s}")
    return h, w


def prepare_model(model, mode: str = "raw", img_size_hw=(640, 640), sigmoid: bool = False, fuse: bool = True,
                  focus_to_conv: bool = False, silu: str = "keep", conf_thres: float = DEFAULT_CONF_THRES,
                  iou_thres: float = DEFAULT_IOU_THRES, max_det: int = DEFAULT_MAX_DET):
    """Deep copy of ``model`` ready to trace: float32 eval, surgery applied, head mode set.

    Returns ``(model_copy, applied)`` with ``applied`` the surgery names in order.
    """
    from . import surgery

    m = copy.deepcopy(model).float().eval()
    applied = []
    if focus_to_conv and any(type(x).__name__ == "Focus" for x in m.model):
        m = surgery.focus_to_conv(m)
        applied.append("focus-to-conv")
    if fuse:
        m = surgery.fuse_conv_bn(m)
        applied.append("fuse-conv-bn")
    if silu == "mul-sigmoid":
        m = surgery.silu_to_x_sigmoid(m)
        applied.append("silu-mul-sigmoid")
    det = m.detect
    det.export_mode = mode
    det.export_options = {
        "sigmoid": bool(sigmoid),
        "level_hw": [(img_size_hw[0] // int(s), img_size_hw[1] // int(s)) for s in det.stride.tolist()],
        "conf_thres": float(conf_thres),
        "iou_thres": float(iou_thres),
        "max_det": int(max_det),
    }
    for p in m.parameters():
        p.requires_grad_(False)
    return m, applied


def trace_to_onnx(m, img_size_hw, batch: int, opset: int, names: list[str], dynamic: bool = False) -> bytes:
    """TorchScript-exporter trace of a prepared model -> serialized ONNX bytes."""
    x = torch.zeros(batch, 3, *img_size_hw)
    axes = None
    if dynamic:
        axes = {"images": {0: "batch"}, **{n: {0: "batch"} for n in names}}
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx.*")
        # dynamo=False: torch >= 2.9 defaults to the dynamo exporter, which needs onnxscript (not a
        # yoloport dependency) and emits different graphs; the TorchScript exporter gives the plain
        # static-shape opset-11..19 graphs NPU toolchains (rknn-toolkit2, MagicMind) expect.
        torch.onnx.export(m, x, buf, opset_version=int(opset), input_names=["images"], output_names=names,
                          dynamic_axes=axes, do_constant_folding=True, dynamo=False)
    return buf.getvalue()


def recorded_convention(mode: str, sigmoid: bool, convention: str | None = None) -> str | None:
    """The output convention an export of ``mode``/``sigmoid`` follows, as recorded in its metadata:
    ``convention`` when given (a YoloportError when the layout contradicts it), else the first one with
    that layout (None: none has it)."""
    from .conventions import get_convention, matching_convention

    if convention:
        c = get_convention(convention)
        if (c.mode, c.sigmoid) != (mode, bool(sigmoid) and mode == "raw"):
            raise YoloportError(f"the {c.name} convention is --mode {c.mode}{' --sigmoid' if c.sigmoid else ''}, "
                                f"not --mode {mode}{' --sigmoid' if sigmoid else ''}")
        return c.name
    return matching_convention(mode, sigmoid)


def build_onnx(model, img_size_hw=(640, 640), mode: str = "raw", batch: int = 1, opset: int = DEFAULT_OPSET,
               sigmoid: bool = False, *, dynamic: bool = False, simplify: bool = False, fuse: bool = True,
               focus_to_conv: bool = False, silu: str = "keep", conf_thres: float = DEFAULT_CONF_THRES,
               iou_thres: float = DEFAULT_IOU_THRES, max_det: int = DEFAULT_MAX_DET, convention: str | None = None):
    """Export in memory: ``(onnx.ModelProto with metadata, HeadSpec, meta dict, applied surgery)``.

    ``convention``: the output convention the graph is meant to follow (recorded; must match ``mode``
    and ``sigmoid``); None records the convention the layout matches."""
    import onnx

    hw = check_export_args(model, img_size_hw, mode, batch, opset, sigmoid, dynamic, conf_thres, iou_thres, max_det, silu)
    convention = recorded_convention(mode, sigmoid, convention)
    m, applied = prepare_model(model, mode, hw, sigmoid, fuse, focus_to_conv, silu, conf_thres, iou_thres, max_det)
    nkpt = int(getattr(m.detect, "nkpt", 0))
    names = output_names(mode, m.detect.nl, nkpt)
    proto = onnx.load_from_string(trace_to_onnx(m, hw, int(batch), int(opset), names, dynamic))
    if mode == "end2end":
        _refresh_shapes(proto, {names[0]: [int(batch), 1], names[1]: [int(batch), int(max_det), 7 + 2 * nkpt]})
    if simplify:
        from .surgery import simplify_onnx

        proto = simplify_onnx(proto)
        applied.append("onnxslim")
    head = HeadSpec.from_model(model, mode, sigmoid_applied=bool(sigmoid), convention=convention)
    extra = {"surgery": applied, "dynamic": bool(dynamic), "convention": convention}
    if mode == "end2end":
        extra.update({"conf_thres": float(conf_thres), "iou_thres": float(iou_thres), "max_det": int(max_det)})
    if getattr(model, "img_size", None):
        extra["train_img_size_hw"] = list(model.img_size)
    meta = build_meta(head, hw, "dynamic" if dynamic else int(batch), int(opset), names, extra)
    proto.producer_name = "yoloport"
    proto.graph.name = f"yoloport-{mode}"
    write_onnx_meta(proto, meta)
    return proto, head, meta, applied


def _refresh_shapes(proto, output_dims: dict) -> None:
    """Drop the tracer's value_info (it records the example's data-dependent NMS count as a fixed
    size), declare the fixed output shapes ``output_dims`` and let ONNX shape inference recompute
    the rest (``NonMaxSuppression -> [?, 3]``)."""
    import onnx

    del proto.graph.value_info[:]
    for o in proto.graph.output:
        if o.name in output_dims:
            shape = o.type.tensor_type.shape
            del shape.dim[:]
            for d in output_dims[o.name]:
                shape.dim.add().dim_value = d
    inferred = onnx.shape_inference.infer_shapes(proto)
    proto.graph.value_info.extend(inferred.graph.value_info)


# ----------------------------------------------------------------------------- files


def check_destination(path, overwrite: bool | None = None) -> None:
    """Refuse to replace a file yoloport did not export (unless ``overwrite``); never a directory."""
    p = Path(path)
    if p.is_dir():
        raise YoloportError(f"cannot write {p}: it is a directory")
    if p.suffix.lower() != ".onnx":
        raise YoloportError(f"export path {p} must end in .onnx")
    if overwrite:
        return
    side = sidecar_path(p)
    if overwrite is False and (p.exists() or side.exists()):
        raise YoloportError(f"{p if p.exists() else side} exists and overwrite=False")
    if p.exists() and not is_yoloport_export(p):
        raise YoloportError(f"{p} exists and is not a previous yoloport export; pass --overwrite to replace it or choose another --out")
    if side.exists() and not _is_our_sidecar(side):
        raise YoloportError(f"{side} exists and was not written by yoloport export; pass --overwrite to replace it")


def _is_our_sidecar(path: Path) -> bool:
    try:
        return META_MARKER in json.loads(path.read_text())
    except (OSError, ValueError, TypeError):
        return False


def graph_output_shapes(proto) -> dict:
    """``{output name: [dims]}`` of a ModelProto (symbolic dims by name)."""
    return {o.name: [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in o.type.tensor_type.shape.dim]
            for o in proto.graph.output}


def write_export(proto, path, meta: dict, sidecar: bool = True, sidecar_extra: dict | None = None) -> tuple[Path, Path | None]:
    """Write the ONNX (and its JSON sidecar: ``meta`` + ``sidecar_extra``) atomically: temp file,
    fsync, rename."""
    import onnx

    from ..io.checkpoint import atomic_path

    p = Path(path)
    with atomic_path(p) as tmp:
        onnx.save(proto, str(tmp))
    side = None
    if sidecar:
        side = sidecar_path(p)
        doc = dict(meta, onnx=p.name, **(sidecar_extra or {}))
        with atomic_path(side) as tmp:
            tmp.write_text(json.dumps(doc, indent=2) + "\n")
    return p, side


def export_model(model, path, img_size_hw=(640, 640), mode: str = "raw", batch: int = 1, opset: int = DEFAULT_OPSET,
                 sigmoid: bool = False, *, dynamic: bool = False, simplify: bool = False, fuse: bool = True,
                 focus_to_conv: bool = False, silu: str = "keep", conf_thres: float = DEFAULT_CONF_THRES,
                 iou_thres: float = DEFAULT_IOU_THRES, max_det: int = DEFAULT_MAX_DET, target: str | None = None,
                 force: bool = False, overwrite: bool | None = None, sidecar: bool = True,
                 sidecar_extra: dict | None = None, convention: str | None = None) -> ExportResult:
    """Build, lint (when ``target``) and write an export; see the module docstring for the policy.
    ``convention`` is recorded (see :func:`build_onnx`); the lint checks the graph against the target's."""
    check_destination(path, overwrite)
    proto, head, meta, applied = build_onnx(
        model, img_size_hw, mode, batch, opset, sigmoid, dynamic=dynamic, simplify=simplify, fuse=fuse,
        focus_to_conv=focus_to_conv, silu=silu, conf_thres=conf_thres, iou_thres=iou_thres, max_det=max_det,
        convention=convention)
    report = None
    if target:
        from .lint import check_or_raise

        report = check_or_raise(proto, target, force=force)
        meta["lint"] = {"target": target, "ok": report.ok, "errors": len(report.errors), "warnings": len(report.warnings)}
        write_onnx_meta(proto, {"lint": meta["lint"]})
    shapes = graph_output_shapes(proto)
    extra = {"output_shapes": shapes, **(sidecar_extra or {})}
    if report is not None:
        extra["lint_report"] = report.to_dict()
    p, side = write_export(proto, path, meta, sidecar, extra)
    return ExportResult(p, head, meta, side, report, applied, shapes, tuple(int(v) for v in img_size_hw), int(batch), int(opset))


def export_onnx(model, path, img_size_hw=(640, 640), mode: str = "raw", batch: int = 1, opset: int = DEFAULT_OPSET,
                sigmoid: bool = False, **kwargs) -> tuple[Path, HeadSpec]:
    """Write ``model`` as ONNX with a ``mode`` head; returns ``(path, HeadSpec)``.

    ``img_size_hw``: ``(h, w)`` multiples of the stride; ``mode``: raw | split | decoded | end2end;
    keyword options as :func:`export_model` (``dynamic``, ``simplify``, ``fuse``, ``focus_to_conv``,
    ``silu``, ``conf_thres``, ``iou_thres``, ``max_det``, ``target``, ``force``, ``overwrite``).
    """
    res = export_model(model, path, img_size_hw, mode, batch, opset, sigmoid, **kwargs)
    return res.path, res.head


# ----------------------------------------------------------------------------- verification


def verify_export(model, path, image=None, seed: int = 0) -> dict:
    """Run the ONNX at ``path`` with onnxruntime and the same head in PyTorch on one input; returns
    ``{"max_abs_diff": {output: float}, "summary": str}``.

    ``image``: a file letterboxed to the graph's input size, or None for a fixed random image.
    end2end graphs are compared on the detection rows (counts must match).
    """
    import numpy as np

    from ..data.letterbox import preprocess
    from .onnx_meta import read_onnx_meta

    try:
        import onnxruntime as ort
    except ImportError:
        from ..errors import DependencyMissing

        raise DependencyMissing("onnxruntime", "--check") from None
    meta = read_onnx_meta(path)
    hw = tuple(meta["input_hw"])
    if image:
        from ..data.sources import require_image

        im = require_image(image, "--check image")
    else:
        im = np.random.default_rng(seed).integers(0, 256, (hw[0], hw[1], 3), dtype=np.uint8)
    x, _ = preprocess(im, hw, auto=False)
    batch = 1 if meta.get("batch") == "dynamic" else int(meta.get("batch", 1))
    x = np.repeat(x[None], batch, 0)
    surgery = meta.get("surgery", [])
    m, _ = prepare_model(model, meta["mode"], hw, bool(meta.get("sigmoid")), "fuse-conv-bn" in surgery,
                         "focus-to-conv" in surgery, "mul-sigmoid" if "silu-mul-sigmoid" in surgery else "keep",
                         meta.get("conf_thres", DEFAULT_CONF_THRES), meta.get("iou_thres", DEFAULT_IOU_THRES),
                         meta.get("max_det", DEFAULT_MAX_DET))
    with torch.no_grad():
        ref = [t.numpy() for t in m(torch.from_numpy(x))]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})
    names = [o.name for o in sess.get_outputs()]
    diffs = {}
    if meta["mode"] == "end2end":
        if not np.array_equal(ref[0], got[0]):
            return {"max_abs_diff": {}, "summary": f"detection counts differ: torch {ref[0].ravel().tolist()}, onnx {got[0].ravel().tolist()}"}
        diffs = {names[1]: float(np.abs(ref[1] - got[1]).max()) if ref[1].size else 0.0}
    else:
        diffs = {n: float(np.abs(r - g).max()) for n, r, g in zip(names, ref, got)}
    summary = "onnxruntime vs torch max |diff|: " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items())
    return {"max_abs_diff": diffs, "summary": summary}
