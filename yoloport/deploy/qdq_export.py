"""Put learned int8 grids into an exported float ONNX graph as QuantizeLinear / DequantizeLinear pairs (QDQ).

:func:`insert_qdq` takes the fp32 graph yoloport exported (BN fused) and the grids of its convolutions
(``{torch module path: {input, weight, output}}``, :func:`yoloport.quant.qat.learned_ranges`) and
writes the QDQ graph ONNX Runtime's own static quantizer would write for those grids, so ONNX Runtime
fuses each ``DQ -> Conv -> Q`` into an int8 ``QLinearConv`` and OpenVINO turns the pairs into
``FakeQuantize`` and runs the convolutions in int8:

- the convolution's **input**: ``x -> QuantizeLinear(s, z) -> DequantizeLinear(s, z) -> Conv``
  (uint8 zero point for an asymmetric grid, int8 0 for a symmetric one);
- its **weight**: stored as int8 ``round(w / s_w)`` clipped to ``[-127, 127]`` with
  ``DequantizeLinear(axis=0)``, one scale per output channel (or one per tensor);
- its **bias**: int32 ``round(b / (s_x * s_w))`` with ``DequantizeLinear(axis=0)`` (ONNX Runtime's rule);
- with an ``output`` grid: ``Conv -> QuantizeLinear -> DequantizeLinear`` before its consumers.

Per-channel DequantizeLinear needs opset 13. Nothing else in the graph changes (the activations, the
decode, concatenations stay float between the pairs).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import YoloportError
from .onnx_graph import conv_map, tensor_producers

MIN_OPSET = 13


def _const(name: str, value: np.ndarray):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(value), name)


def _zero_point_array(grid: dict) -> np.ndarray:
    """The zero point in the grid's integer type: uint8 for ``qmin >= 0``, int8 otherwise."""
    dtype = np.uint8 if int(grid["qmin"]) >= 0 else np.int8
    return np.asarray(int(round(grid["zero_point"])), dtype=dtype)


def quantize_weight(w: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``w [C, ...]`` float -> int8 ``clip(round(w / s), -127, 127)`` with ``scale`` ``[C]`` or ``[1]``."""
    s = np.asarray(scale, np.float32).reshape((-1,) + (1,) * (w.ndim - 1))
    return np.clip(np.rint(w.astype(np.float32) / s), -127, 127).astype(np.int8)


def quantize_bias(b: np.ndarray, input_scale: float, weight_scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(int32 round(b / (s_x * s_w)) [C], scale s_x * s_w [C])`` (the scale broadcast to ``C``)."""
    s = (np.float32(input_scale) * np.broadcast_to(np.asarray(weight_scale, np.float32), b.shape)).astype(np.float32)
    return np.rint(b.astype(np.float64) / s).astype(np.int32), s


def _check_grids(ranges: dict) -> None:
    for name, g in ranges.items():
        try:
            ok = g["input"]["scale"] > 0 and min(g["weight"]["scale"]) > 0 and (not g.get("output") or g["output"]["scale"] > 0)
        except (KeyError, TypeError, ValueError):
            raise YoloportError(f"QDQ export: the grid of {name} is malformed") from None
        if not ok:
            raise YoloportError(f"QDQ export: the grid of {name} has a scale <= 0")


def insert_qdq(onnx_in, onnx_out, ranges: dict) -> dict:
    """Write ``onnx_out``: ``onnx_in`` (opset >= 13, not modified) with QDQ pairs carrying ``ranges``
    (see the module docstring). Returns ``{convs, quantize_nodes, dequantize_nodes, opset}``."""
    import onnx
    from onnx import helper

    _check_grids(ranges)
    model = onnx.load(str(onnx_in))
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < MIN_OPSET:
        raise YoloportError(f"QDQ export needs opset >= {MIN_OPSET} (per-channel DequantizeLinear), the graph has {opset}")
    layer_nodes, _ = conv_map(model, list(ranges))
    by_node = {node: layer for layer, node in layer_nodes.items()}
    inits = {t.name: t for t in model.graph.initializer}
    new_inits: list = []
    drop_inits: set[str] = set()
    nodes: list = []
    n_q = n_dq = 0
    for node in model.graph.node:
        layer = by_node.get(node.name)
        if layer is None:
            nodes.append(node)
            continue
        g = ranges[layer]
        tag = node.name.strip("/").replace("/", "_") or layer
        # input: Q -> DQ
        x = node.input[0]
        s_name, z_name = f"{tag}_input_scale", f"{tag}_input_zero_point"
        new_inits += [_const(s_name, np.float32(g["input"]["scale"])), _const(z_name, _zero_point_array(g["input"]))]
        nodes.append(helper.make_node("QuantizeLinear", [x, s_name, z_name], [f"{tag}_input_q"], name=f"{tag}_input_QuantizeLinear"))
        nodes.append(helper.make_node("DequantizeLinear", [f"{tag}_input_q", s_name, z_name], [f"{tag}_input_dq"],
                                      name=f"{tag}_input_DequantizeLinear"))
        n_q, n_dq = n_q + 1, n_dq + 1
        node.input[0] = f"{tag}_input_dq"
        # weight (and bias): integers + DequantizeLinear(axis=0)
        w_name = node.input[1]
        if w_name not in inits:
            raise YoloportError(f"QDQ export: the weight of {node.name} is not a constant of the graph")
        w = onnx.numpy_helper.to_array(inits[w_name])
        w_scale = np.asarray(g["weight"]["scale"], np.float32).reshape(-1)
        if w_scale.size not in (1, w.shape[0]):
            raise YoloportError(f"QDQ export: {layer} has {w.shape[0]} output channels, its grid {w_scale.size} weight scales")
        per_channel = w_scale.size > 1 or bool(g["weight"].get("per_channel"))
        w_scale_arr = np.broadcast_to(w_scale, (w.shape[0],)).astype(np.float32) if per_channel else np.float32(w_scale[0])
        w_zp = np.zeros(w.shape[0], np.int8) if per_channel else np.int8(0)
        new_inits += [_const(f"{tag}_weight_quantized", quantize_weight(w, w_scale)),
                      _const(f"{tag}_weight_scale", w_scale_arr), _const(f"{tag}_weight_zero_point", w_zp)]
        attrs = {"axis": 0} if per_channel else {}
        nodes.append(helper.make_node("DequantizeLinear", [f"{tag}_weight_quantized", f"{tag}_weight_scale",
                                                           f"{tag}_weight_zero_point"], [f"{tag}_weight_dq"],
                                      name=f"{tag}_weight_DequantizeLinear", **attrs))
        n_dq += 1
        node.input[1] = f"{tag}_weight_dq"
        drop_inits.add(w_name)
        if len(node.input) > 2 and node.input[2]:
            b_name = node.input[2]
            if b_name not in inits:
                raise YoloportError(f"QDQ export: the bias of {node.name} is not a constant of the graph")
            b_q, b_scale = quantize_bias(onnx.numpy_helper.to_array(inits[b_name]), g["input"]["scale"], w_scale)
            new_inits += [_const(f"{tag}_bias_quantized", b_q), _const(f"{tag}_bias_scale", b_scale),
                          _const(f"{tag}_bias_zero_point", np.zeros(b_q.shape, np.int32))]
            nodes.append(helper.make_node("DequantizeLinear", [f"{tag}_bias_quantized", f"{tag}_bias_scale",
                                                               f"{tag}_bias_zero_point"], [f"{tag}_bias_dq"],
                                          name=f"{tag}_bias_DequantizeLinear", axis=0))
            n_dq += 1
            node.input[2] = f"{tag}_bias_dq"
            drop_inits.add(b_name)
        nodes.append(node)
        # output: Conv -> Q -> DQ -> (the consumers, under the output's old name)
        if g.get("output"):
            y = node.output[0]
            node.output[0] = f"{tag}_output_float"
            so, zo = f"{tag}_output_scale", f"{tag}_output_zero_point"
            new_inits += [_const(so, np.float32(g["output"]["scale"])), _const(zo, _zero_point_array(g["output"]))]
            nodes.append(helper.make_node("QuantizeLinear", [node.output[0], so, zo], [f"{tag}_output_q"],
                                          name=f"{tag}_output_QuantizeLinear"))
            nodes.append(helper.make_node("DequantizeLinear", [f"{tag}_output_q", so, zo], [y],
                                          name=f"{tag}_output_DequantizeLinear"))
            n_q, n_dq = n_q + 1, n_dq + 1
    still_used = {i for n in nodes for i in n.input}
    keep = [t for t in model.graph.initializer if t.name not in drop_inits or t.name in still_used]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep + new_inits)
    try:
        onnx.checker.check_model(model)
    except Exception as e:  # noqa: BLE001 - onnx raises its own types
        raise YoloportError(f"QDQ export produced an invalid graph: {str(e).splitlines()[0]}") from None
    from ..io.atomic import atomic_write

    data = model.SerializeToString()
    atomic_write(Path(onnx_out), lambda f: f.write(data))
    return {"convs": len(layer_nodes), "quantize_nodes": n_q, "dequantize_nodes": n_dq, "opset": int(opset)}


def qdq_summary(onnx_path) -> dict:
    """What a QDQ graph holds: ``{quantize_nodes, dequantize_nodes, int8_weights: {initializer: shape},
    convs_with_int8_weights}`` (for tests and reports)."""
    import onnx
    from onnx import TensorProto

    m = onnx.load(str(onnx_path))
    ints = {t.name: list(t.dims) for t in m.graph.initializer if t.data_type == TensorProto.INT8 and len(t.dims) == 4}
    producers = tensor_producers(m.graph)
    convs = 0
    for n in m.graph.node:
        if n.op_type == "Conv" and len(n.input) > 1:
            p = producers.get(n.input[1])
            if p is not None and p.op_type == "DequantizeLinear" and p.input[0] in ints:
                convs += 1
    return {"quantize_nodes": sum(n.op_type == "QuantizeLinear" for n in m.graph.node),
            "dequantize_nodes": sum(n.op_type == "DequantizeLinear" for n in m.graph.node),
            "int8_weights": ints, "convs_with_int8_weights": convs}
