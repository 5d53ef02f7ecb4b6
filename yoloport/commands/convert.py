"""``yoloport convert``: rewrite a checkpoint into yoloport's safe format, optionally with surgery.

    yoloport convert --weights yolov5s-v5.0.pt --focus-to-conv --out yolov5s-v5.0-conv.safetensors

``--focus-to-conv`` replaces a v5.0 Focus stem by the equivalent ``Conv(k=6, s=2, p=2)`` and rewrites
the model YAML's layer 0 so the file rebuilds; ``--fuse`` folds each BatchNorm into its conv weights
(the BN stays as an identity-scale shift so the YAML still describes the network). The written file
is read back and compared with the source model on a fixed input; the summary shows the difference.
Never replaces an existing file unless ``--overwrite``.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..config import add_common_arguments, resolve_settings
from ..errors import YoloportError


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p)
    p.add_argument("--out", required=True, help="output checkpoint (.safetensors)")
    p.add_argument("--focus-to-conv", dest="focus_to_conv", action="store_true", default=None,
                   help="replace the Focus stem by the equivalent 6x6 stride-2 Conv")
    p.add_argument("--fuse", action="store_true", default=None, help="fold BatchNorm into the conv weights")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def convert_model(model, focus_to_conv: bool = False, fuse: bool = False):
    """``(converted copy, list of applied rewrites)``; the copy still matches its own YAML."""
    from ..deploy import surgery

    applied = []
    m = model
    if focus_to_conv:
        m = surgery.focus_to_conv(m)
        if m.focus_converted:
            applied.append("focus-to-conv")
    if fuse:
        m = surgery.fuse_conv_bn(m, keep_bn=True)
        applied.append("fold-bn")
    return m, applied


def max_output_diff(a, b, hw=(256, 256), seed: int = 0) -> float:
    """Max |decoded output difference| of two models on one fixed random input ``[1, 3, *hw]``."""
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, *hw, generator=g)
    with torch.no_grad():
        return float((a.eval()(x)[0] - b.eval()(x)[0]).abs().max())


def run(args: argparse.Namespace) -> int:
    from ..models import load_model, save_model
    from ._model_args import load_model_from_settings

    s = resolve_settings(args, {"focus_to_conv": False, "fuse": False})
    out = Path(s.out)
    if out.suffix != ".safetensors":
        raise YoloportError(f"--out {out}: yoloport checkpoints end in .safetensors")
    from ..io.paths import claim_output_file

    claim_output_file(out, bool(s.overwrite), what="--out")
    t0 = time.perf_counter()
    model = load_model_from_settings(s, default=None)
    if s.focus_to_conv and not any(type(x).__name__ == "Focus" for x in model.model):
        print("note: the model has no Focus layer; --focus-to-conv changes nothing")
    conv, applied = convert_model(model, bool(s.focus_to_conv), bool(s.fuse))
    src = getattr(model, "source", None)
    origin = src.get("path") if isinstance(src, dict) else str(s.weights or s.model_key)
    save_model(conv, out, origin=origin, converted=applied)
    back = load_model(out)
    diff = max_output_diff(model, back)
    rows = [
        ("source", str(origin)),
        ("written", str(out)),
        ("rewrites", ", ".join(applied) or "none (format conversion only)"),
        ("layer 0", f"{back.model[0].type} {back.yaml['backbone'][0][3]}"),
        ("check", f"reloaded vs source, max |diff| of decoded output on a random 256x256 input: {diff:.2e}"),
        ("time", f"{time.perf_counter() - t0:.1f} s"),
    ]
    w = max(len(k) for k, _ in rows)
    print(f"yoloport convert: {out}")
    for k, v in rows:
        print(f"  {k.ljust(w)} | {v}")
    return 0
