"""ONNX Runtime int8: how each SiLU runs between its two uint8 grids (``silu_op``).

``quantize_static`` quantizes both ops of every SiLU, ``x * sigmoid(x)``, so a Conv -> SiLU unit in the QDQ
graph reads ``Q(conv) -> DQ -> Sigmoid -> Q(s) -> DQ -> Mul -> Q(m)`` and ONNX Runtime runs it as
``QLinearConv -> QLinearSigmoid -> QLinearMul``: the sigmoid is rounded onto a grid of its own and the product
again onto the Mul's grid (``silu_op: qlinear``, the graph as ``quantize_static`` writes it).

``silu_op: quickgelu`` rewrites each such unit to ``Q(conv) -> DQ -> QuickGelu(alpha=1) -> Q(m)``. A QAT
model's QDQ graph (:func:`yoloport.deploy.qdq_export.insert_qdq`) leaves the sigmoid float,
``DQ -> Sigmoid -> Mul -> Q``, which ONNX Runtime runs as three float ops after two DequantizeLinear (its
optimiser does not make a QuickGelu there); the same rewrite is exact for it and always applied.
``QuickGelu`` is ONNX Runtime's own fused float operator (``com.microsoft``, in every CPU build; its optimiser
makes it from ``x * sigmoid(x)`` in float graphs) and computes ``x * sigmoid(alpha * x)``, SiLU for
``alpha = 1``. The conv's output grid and the Mul's grid stay exactly as calibrated; only the sigmoid's own
rounding goes. One rounding per unit instead of two, in one vectorised pass (dequantize, SiLU and
quantize are each one loop over the tensor) instead of two table lookups: measured in
``docs/notes/2026-11-30-session8.md``.

:func:`fuse_silu_units` is a pure graph edit on the quantized model (no calibration, no session). A
``Sigmoid`` that is not half of ``x * sigmoid(x)`` (the Detect head's) is never touched.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..deploy.onnx_graph import tensor_consumers, tensor_producers

CHOICES = ("qlinear", "quickgelu")
MS_DOMAIN = "com.microsoft"


def _dq_source(producer, tensor: str):
    """``(dq, codes)`` when ``tensor`` is a DequantizeLinear's output (``codes``: the tensor it reads), else
    ``(None, None)``."""
    dq = producer.get(tensor)
    if dq is None or dq.op_type != "DequantizeLinear":
        return None, None
    return dq, dq.input[0]


@dataclass(frozen=True)
class QdqSiluUnit:
    """One ``x * sigmoid(x)`` of a QDQ graph, by node: ``dq_x`` reads the quantized ``x`` for the Mul,
    ``dq_in`` (possibly the same node) for the Sigmoid; ``q_s`` / ``dq_s`` round the sigmoid (both None where
    the sigmoid stays float, as in a QAT model's QDQ graph)."""

    dq_in: object
    sigmoid: object
    q_s: object
    dq_s: object
    mul: object
    dq_x: object


def qdq_silu_units(model) -> list[QdqSiluUnit]:
    """Every SiLU unit of a quantized QDQ graph (the QDQ form of :func:`yoloport.deploy.onnx_graph.silu_units`):
    a Mul of a dequantized tensor by its own sigmoid, the sigmoid rounded once in between (``Q -> DQ``) or not
    at all, where the Sigmoid and the Mul read the same codes on the same grid and nothing else reads the
    sigmoid."""
    nodes = list(model.graph.node)
    return _units(nodes, tensor_consumers(nodes))


def _units(nodes: list, consumers: dict) -> list[QdqSiluUnit]:
    """:func:`qdq_silu_units` over ``nodes`` (one list, so node identity holds for the caller's edit), with
    their ``consumers`` (:func:`~yoloport.deploy.onnx_graph.tensor_consumers`)."""
    producer = tensor_producers(nodes)
    units = []
    for sig in nodes:
        if sig.op_type != "Sigmoid":
            continue
        dq_in, codes = _dq_source(producer, sig.input[0])
        readers = consumers.get(sig.output[0], [])
        if dq_in is None or len(readers) != 1:
            continue
        q_s = dq_s = None
        if readers[0].op_type == "QuantizeLinear":  # the sigmoid rounded (quantize_static's graph)
            q_s = readers[0]
            dq_readers = consumers.get(q_s.output[0], [])
            if len(dq_readers) != 1 or dq_readers[0].op_type != "DequantizeLinear":
                continue
            dq_s = dq_readers[0]
        s_out = (dq_s or sig).output[0]
        muls = consumers.get(s_out, [])
        if len(muls) != 1 or muls[0].op_type != "Mul" or len(muls[0].input) != 2:
            continue
        mul = muls[0]
        other = mul.input[1] if mul.input[0] == s_out else mul.input[0]
        dq_x, x_codes = _dq_source(producer, other)
        if dq_x is None or x_codes != codes or list(dq_x.input) != list(dq_in.input):
            continue  # not x * sigmoid(x) of one quantized tensor on one grid
        units.append(QdqSiluUnit(dq_in, sig, q_s, dq_s, mul, dq_x))
    return units


def fuse_silu_units(model) -> int:
    """Rewrite every SiLU unit of ``model`` (an ``onnx.ModelProto`` in QDQ format, edited in place) to
    ``DQ -> QuickGelu(alpha=1) -> Q`` on the same two grids (see the module docstring). Returns how many
    units were fused."""
    import onnx  # the runtime imports this module; onnx only where a graph is edited
    from onnx import helper

    graph = model.graph
    nodes = list(graph.node)
    consumers = tensor_consumers(nodes)
    units = _units(nodes, consumers)
    if not units:
        return 0
    fused = {id(u.mul): helper.make_node("QuickGelu", [u.dq_x.output[0]], [u.mul.output[0]], name=f"{u.mul.name}/silu",
                                         domain=MS_DOMAIN, alpha=1.0) for u in units}
    drop = {id(n) for u in units for n in (u.sigmoid, u.q_s, u.dq_s) if n is not None}
    drop |= {id(u.dq_in) for u in units  # a DQ of its own that fed only the Sigmoid
             if u.dq_in is not u.dq_x and all(c is u.sigmoid for c in consumers.get(u.dq_in.output[0], []))}
    kept = []
    for n in nodes:
        if id(n) in drop:
            continue
        copy = onnx.NodeProto()
        copy.CopyFrom(fused.get(id(n), n))
        kept.append(copy)
    del graph.node[:]
    graph.node.extend(kept)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return len(units)


__all__ = ["CHOICES", "QdqSiluUnit", "fuse_silu_units", "qdq_silu_units"]
