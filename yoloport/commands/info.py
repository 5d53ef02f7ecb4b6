"""``yoloport info``: a checkpoint's or model key's summary (layers, parameters, GFLOPs, names, anchors)."""
from __future__ import annotations

import argparse
import json

from ..config import add_common_arguments, resolve_settings
from ..nn.summary import summary_line
from ._model_args import img_size_from_settings, load_model_from_settings
from ..data.letterbox import input_multiple


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p)
    p.add_argument("--img-size", dest="img_size", nargs="+", type=int, help="W H for the GFLOPs figure (640)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def run(args: argparse.Namespace) -> int:
    s = resolve_settings(args, {"img_size": None})
    model = load_model_from_settings(s, default=None)
    hw = img_size_from_settings(s, model, input_multiple(model.stride))
    info = model.info(hw)
    doc = {
        **info,
        "nc": model.nc,
        "names": list(model.names),
        "stride": model.stride.tolist(),
        "anchors_px": model.detect.anchors_px().tolist(),
        "layer_types": [m.type for m in model.model],
        "source": getattr(model, "source", None),
    }
    if args.json:
        print(json.dumps(doc, indent=1))
        return 0
    print(summary_line(info))
    print(f"classes ({model.nc}): {', '.join(map(str, model.names[:10]))}{' ...' if model.nc > 10 else ''}")
    print(f"strides: {doc['stride']}  anchors (px): {[[list(map(round, a)) for a in lvl] for lvl in doc['anchors_px']]}")
    print(f"layers: {' '.join(doc['layer_types'])}")
    return 0
