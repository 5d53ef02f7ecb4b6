"""``yoloport profile``: time per operator type on a backend (the CNRT-style table).

    yoloport profile --backend onnxruntime --weights yolov5s.pt --img-size 640 640 --runs 20
    yoloport profile --backend openvino --artifact out/model.openvino.int8.xml --per-node
    yoloport profile --backend onnxruntime --weights yolov5s.pt --no-focus-to-conv  # a v5.0 Focus stem as the checkpoint has it

Prints ``layer type | count | time (us) | ratio`` sorted by time with a total row (per-node detail
with ``--per-node``) and writes the table as JSON (``--json``, default ``runs/profile/expN/profile.json``).
With ``--weights`` (or ``--model-key``) the model is exported to a temporary fp32 ONNX at
``--img-size``/``--batch``; with ``--artifact`` the artifact itself is profiled at its own shape.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from ..config import add_common_arguments, resolve_settings
from ..errors import YoloportError
from ..data.letterbox import input_multiple

DEFAULTS = {"backend": None, "runs": 10, "warmup": 3, "batch": 1, "opt_level": "all", "project": "runs/profile", "name": "exp"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p)
    p.add_argument("--backend", help="runtime to profile: onnxruntime, openvino (here), rknn (a connected board)")
    p.add_argument("--artifact", help="built artifact (.onnx for onnxruntime, .xml for openvino, .rknn)")
    p.add_argument("--img-size", "--img_size", dest="img_size", nargs="+", type=int, help="W H (or one number) for --weights")
    p.add_argument("--batch", type=int, help="batch of the exported graph for --weights (1)")
    p.add_argument("--runs", type=int, help="timed inferences to average (10)")
    p.add_argument("--warmup", type=int, help="inferences before timing (3)")
    p.add_argument("--threads", type=int, help="CPU threads for the runtime (default: the runtime's)")
    p.add_argument("--per-node", dest="per_node", action="store_true", default=None, help="also list every node")
    p.add_argument("--top", type=int, help="with --per-node: only the slowest N nodes")
    p.add_argument("--json", help="write the table here (default runs/profile/expN/profile.json)")
    p.add_argument("--markdown", action="store_true", default=None, help="print a markdown table")
    p.add_argument("--opt-level", dest="opt_level", help="onnxruntime graph optimisation: all (as the runner), extended, basic, none")
    p.add_argument("--focus-to-conv", dest="focus_to_conv", action=argparse.BooleanOptionalAction, default=None,
                   help="with --weights: export a v5.0 Focus stem as its equivalent Conv (--no-focus-to-conv: as the "
                        "strided slices); default: as quantize and port do for the backend")
    p.add_argument("--source", help="an image to profile on (default: uniform noise)")
    p.add_argument("--target", help="rknn: the connected board's platform (rk3588, ...)")
    p.add_argument("--device-id", dest="device_id", help="rknn: adb device id when several boards are connected")
    p.add_argument("--overwrite", action="store_true", default=None, help="replace an existing --json file")
    p.add_argument("--project", help="parent of the run folder (runs/profile)")
    p.add_argument("--name", help="run folder name (exp)")


def run(args: argparse.Namespace) -> int:
    from ..analysis import profile as prof
    from ..backends.registry import ARTIFACT_BACKENDS, canonical_name, get_spec

    s = resolve_settings(args, DEFAULTS)
    if not s.backend:
        raise YoloportError("--backend is required: the runtime whose profiler to read (e.g. onnxruntime, openvino)")
    backend = canonical_name(s.backend)
    spec = get_spec(backend)
    if not spec.profiler:
        profiled = [b for b in ARTIFACT_BACKENDS if get_spec(b).profiler]
        raise YoloportError(f"profile reads a runtime's own profiler: {', '.join(profiled)}; {backend} has none")
    out = _json_path(s) if s.json else None  # an existing --json file is refused before any work
    if s.artifact and s.focus_to_conv is not None:
        raise YoloportError("--focus-to-conv / --no-focus-to-conv apply to --weights (an artifact is profiled as it was built)")
    shape = None
    if not spec.benchmarkable:  # an NPU's own timers: its built artifact, on a connected board
        if not s.artifact:
            raise YoloportError(f"{backend} profiling needs --artifact (built by 'yoloport quantize --backend {backend}')")
        table = prof.profile_artifact(backend, s.artifact, None, target=s.target, device_id=s.device_id)
    else:
        with tempfile.TemporaryDirectory(prefix="yoloport-profile-") as tmp:
            path, shape, precision = _graph(s, backend, Path(tmp))
            images = _images(s.source, shape)
            table = prof.profile_artifact(backend, path, images, int(s.runs), s.threads, int(s.warmup),
                                          opt_level=str(s.opt_level), inference_precision=precision)
            table.source = str(s.artifact or getattr(s, "weights", None) or getattr(s, "model_key", None) or "default model")
    print(table.format(per_node=bool(s.per_node), style="markdown" if s.markdown else "text", top=s.top))
    out = out or _json_path(s)
    from ..io.paths import write_text_atomic

    doc = {**table.to_dict(per_node=bool(s.per_node)), "input_shape": list(shape) if shape else None}
    write_text_atomic(out, json.dumps(doc, indent=1))
    print(f"saved to {out}")
    return 0


def _graph(s, backend: str, tmp: Path):
    """``(graph path, input shape [B,3,H,W], OpenVINO inference precision)`` for the settings."""
    from ..backends.base import read_sidecar
    from ..data.letterbox import parse_img_size

    if s.artifact:
        model = None
        if getattr(s, "weights", None) or getattr(s, "model_key", None):
            from ._model_args import load_model_from_settings

            model = load_model_from_settings(s)
        from ..backends.base import model_fingerprint

        info = read_sidecar(s.artifact, expect_backend=backend, expect_fingerprint=model_fingerprint(model) if model is not None else None)
        hw = tuple(int(v) for v in info["input_hw"])
        if s.img_size and parse_img_size(s.img_size, warn=None) != hw:
            raise YoloportError(f"{s.artifact} takes {hw[1]}x{hw[0]} (W x H) inputs; drop --img-size or rebuild it")
        batch = int(info.get("batch") or 1)
        return Path(s.artifact), (batch, 3, *hw), str(info.get("inference_precision") or "f32")
    from ..deploy.export import export_onnx
    from ._model_args import img_size_from_settings, load_model_from_settings

    model = load_model_from_settings(s)
    hw = img_size_from_settings(s, model, input_multiple(model.stride))
    from ..backends.registry import get_spec

    focus_to_conv = get_spec(backend).focus_to_conv if s.focus_to_conv is None else bool(s.focus_to_conv)
    path, _ = export_onnx(model, tmp / "model.onnx", hw, "raw", int(s.batch), focus_to_conv=focus_to_conv, overwrite=True)
    return path, (int(s.batch), 3, *hw), "f32"


def _images(source, shape):
    """The profiling input: ``source``'s first image letterboxed to the graph's shape, or noise."""
    import numpy as np

    from ..analysis.profile import synthetic_images

    b, _, h, w = shape
    if not source:
        return synthetic_images(b, (h, w))
    from ..analysis.bench import load_bgr_images
    from ..data.letterbox import preprocess

    x, _ = preprocess(load_bgr_images(source, 1)[0], (h, w), auto=False)
    return np.repeat(x[None], b, 0)


def _json_path(s) -> Path:
    from ..io.paths import json_output_path

    return json_output_path(s.json, s.project, s.name, "profile.json", overwrite=bool(getattr(s, "overwrite", False)))
