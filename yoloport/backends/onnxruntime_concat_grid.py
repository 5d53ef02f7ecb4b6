"""ONNX Runtime int8: every Concat's inputs on the Concat output's uint8 grid (``concat_grid: shared``).

In the QDQ graph ``quantize_static`` writes, each input of a ``Concat`` keeps the grid calibrated for its own
tensor (``Q(s_i) -> DQ(s_i) -> Concat -> Q(s_o)``). ONNX Runtime fuses that into ``QLinearConcat``, which
*requantizes* every input whose grid differs from the output's: a second rounding of values already rounded
once, through a per-input lookup, in a kernel that showed as the largest non-convolution item of yolov5s's
int8 profile (``benchmarks/bench_conv_layers.py``). With the inputs on the output's grid the Concat copies
uint8 codes and nothing is rounded twice.

:func:`share_concat_grids` rewrites a quantized QDQ model in place: for every ``Concat`` whose output goes
through one ``QuantizeLinear`` (``q_out``), each input that is ``DQ(Q(x))`` gets ``q_out``'s scale and zero
point on that ``Q`` and on every ``DequantizeLinear`` reading it. An input is left on its own grid when
another op reads it too (a backbone feature that also feeds the next convolution: moving it changed which
convolutions ORT fused, 56 instead of 57 QLinearConv on the test model) or when it is the output of a
``MaxPool`` / ``Resize`` (ORT runs those on uint8 codes only while their input and output grids are equal).
The output's calibrated range covers every input's (MinMax: the union), so no value is clipped that was not
before; the step is coarser for an input whose own range was narrower. Pure graph edit: no calibration, no
ORT session.
"""
from __future__ import annotations

from ..deploy.onnx_graph import tensor_consumers, tensor_producers

CHOICES = ("own", "shared")
CODE_OPS = ("MaxPool", "Resize")  # ops ONNX Runtime runs on the codes when their input and output grids are equal


def share_concat_grids(model) -> int:
    """Put each Concat's quantized inputs on its output's grid (see the module docstring); ``model`` is an
    ``onnx.ModelProto`` in QDQ format, edited in place. Returns how many Concat inputs moved."""
    graph = model.graph
    producer = tensor_producers(graph)
    consumers = tensor_consumers(graph)
    moved = 0
    for concat in graph.node:
        if concat.op_type != "Concat":
            continue
        q_outs = [c for c in consumers.get(concat.output[0], []) if c.op_type == "QuantizeLinear"]
        if len(q_outs) != 1 or len(q_outs[0].input) < 3:
            continue
        scale, zero = q_outs[0].input[1], q_outs[0].input[2]
        for t in concat.input:
            dq = producer.get(t)
            q_in = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q_in is None or q_in.op_type != "QuantizeLinear" or len(q_in.input) < 3:
                continue
            readers = consumers.get(q_in.output[0], [])
            if not all(r.op_type == "DequantizeLinear" and len(r.input) >= 3 for r in readers):
                continue  # an op reading the uint8 codes directly would see them change meaning
            if any(c is not concat for r in readers for c in consumers.get(r.output[0], [])):
                continue  # read by another op too: its grid is that op's input grid as well (ORT fuses on it)
            src = producer.get(q_in.input[0])
            if src is not None and src.op_type in CODE_OPS:
                continue  # ORT runs MaxPool / Resize on uint8 codes only while input and output share a grid
            if (q_in.input[1], q_in.input[2]) == (scale, zero):
                continue
            for node in [q_in, *readers]:
                node.input[1], node.input[2] = scale, zero
            moved += 1
    return moved


__all__ = ["CHOICES", "share_concat_grids"]
