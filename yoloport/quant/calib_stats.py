"""What a calibration decided, read back from a quantized graph: the activation ranges of a QDQ ONNX
(ONNX Runtime's int8 artifacts), summarised for the sidecar so two builds' calibrations can be compared
without rerunning them."""
from __future__ import annotations

import numpy as np


def qdq_activation_ranges(onnx_model) -> dict[str, float]:
    """``{tensor: float range}`` of every activation QuantizeLinear in ``onnx_model`` (a path or
    ModelProto): ``scale * (qmax - qmin)`` of its uint8/int8 grid (255 levels' width)."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(onnx_model), load_external_data=False) if not isinstance(onnx_model, onnx.ModelProto) else onnx_model
    inits = {i.name: i for i in m.graph.initializer}
    out = {}
    for n in m.graph.node:
        if n.op_type != "QuantizeLinear" or n.input[0] in inits or n.input[1] not in inits:
            continue
        scale = numpy_helper.to_array(inits[n.input[1]])
        if scale.size == 1:
            out[n.input[0]] = float(scale.reshape(-1)[0]) * 255.0
    return out


def range_summary(ranges: dict[str, float]) -> dict:
    """Count, min, median, max of activation ranges and the three widest tensors (what the sidecar keeps)."""
    if not ranges:
        return {"tensors": 0}
    v = np.array(list(ranges.values()), dtype=np.float64)
    widest = sorted(ranges.items(), key=lambda kv: -kv[1])[:3]
    return {"tensors": int(v.size), "min": float(v.min()), "median": float(np.median(v)), "max": float(v.max()),
            "widest": [{"tensor": k, "range": r} for k, r in widest]}
