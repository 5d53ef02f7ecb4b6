"""Does a backend's own weight quantizer land on AdaRound's grid? OpenVINO/NNCF, measured on the IR it saves.

    python benchmarks/bench_ptq_grid.py [--layers model.0 model.1 model.2 model.3] [--out runs/bench_ptq_grid]

Builds an OpenVINO int8 artifact of the embedded default model (96x128, six synthetic calibration images) with
``ptq=[adaround]`` on ``--layers`` and one without (the control), then, for each of those convolutions, reads the
int8 weights and scales of the saved IR and compares them with the float weights of the graph it was built from:
the scale ratio to ``max|w| / 127`` per channel, the share of equal integers, and ``max|dequantized - w| / max|w|``
(~4e-8 on the grid, ~0.004 for plain rounding). ONNX Runtime's check is a test (``tests/test_ptq.py``).
Numbers, not asserts.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

HW = (96, 128)


def _const(node):
    import numpy as np

    while node.get_type_name() == "Convert":
        node = node.input_value(0).get_node()
    return node.get_data().astype(np.float64) if node.get_type_name() == "Constant" else None


def compressed_weights(xml, prefixes) -> dict:
    """``{conv name: (integers, per-channel scale)}`` of the compressed int8 weights in an OpenVINO IR."""
    import openvino as ov

    out = {}
    for op in ov.Core().read_model(str(xml)).get_ordered_ops():
        name = op.get_friendly_name().replace("/WithoutBiases", "")
        if op.get_type_name() != "Convolution" or not name.startswith(prefixes):
            continue
        mul = op.input_value(1).get_node()
        if mul.get_type_name() != "Multiply":
            continue
        a, b = (_const(mul.input_value(i).get_node()) for i in range(2))
        if a is None or b is None:
            continue
        out[name] = (a, b) if a.size > b.size else (b, a)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", nargs="+", default=["model.0", "model.1", "model.2", "model.3"])
    p.add_argument("--iters", type=int, default=300)
    p.add_argument("--out", default="runs/bench_ptq_grid")
    a = p.parse_args(argv)

    import numpy as np
    import onnx
    from onnx import numpy_helper

    from conftest import signal_model, write_synth_images
    from yoloport.backends.registry import build_artifact
    from yoloport.data.calibration import load_calibration

    out = Path(a.out)
    calib = load_calibration(write_synth_images(out / "calib", 6, (150, 200), seed=0), n=6, img_size_hw=HW)
    prefixes = tuple(f"/{x}/" for x in a.layers)
    options = {"adaround": {"iters": a.iters, "rows_per_image": 128, "max_rank": 64, "only": list(a.layers)}}
    for tag, steps in (("adaround", ["adaround"]), ("plain", [])):
        art = build_artifact("openvino", signal_model(), out / tag, HW, calib, {"ptq": steps, "ptq_options": options})
        src = onnx.load(str(out / tag / ("model.ptq.fp32.onnx" if steps else "model.fp32.onnx")))
        inits = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in src.graph.initializer}
        floats = {n.name: inits[n.input[1]] for n in src.graph.node if n.op_type == "Conv"}
        for name, (ints, scale) in compressed_weights(art, prefixes).items():
            w = floats[name]
            s = np.abs(w).reshape(w.shape[0], -1).max(1) / 127
            q = np.round(w / s.reshape(-1, 1, 1, 1))
            err = np.abs(ints * scale.reshape(-1, 1, 1, 1) - w).max() / np.abs(w).max()
            print(f"{tag:<9} {name:<32} scale ratio {np.median(scale.reshape(-1) / s):.6f}  integers equal "
                  f"{(q == ints).mean():.4f}  max|deq - w|/max|w| {err:.2e}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
