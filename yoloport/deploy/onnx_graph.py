"""Small read-only helpers over an ONNX graph, shared by the lint, the backends and the sensitivity
search (import ``onnx`` lazily: nothing here needs more than the protobuf objects), and the naming
between yoloport's torch modules (``model.2.cv1.conv``) and the exported graph's nodes
(``/model.2/cv1/conv/Conv``)."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import NamedTuple, Sequence

from ..errors import YoloportError


def tensor_consumers(graph) -> dict[str, list]:
    """``{tensor name: [nodes that read it]}`` in graph order; a node reading a tensor twice is
    listed once, empty input names are skipped."""
    consumers: dict[str, list] = defaultdict(list)
    for n in graph.node:
        for name in dict.fromkeys(i for i in n.input if i):
            consumers[name].append(n)
    return consumers


def onnx_name_to_module(node_name: str) -> str:
    """ONNX node name from yoloport's exporter -> torch module path.

    The TorchScript exporter names a node by the scopes of the modules *called* on the way to it,
    each relative to the previous one: ``/model.2/m/m.0/cv1/conv/Conv`` is ``model.2.m.0.cv1.conv``
    (the called Sequential ``m`` and its child ``m.0``), ``/model.24/m.0/Conv`` is ``model.24.m.0``.
    """
    segs = [s for s in node_name.strip("/").split("/") if s][:-1]  # drop the op part ("Conv")
    path: list[str] = []
    for seg in segs:
        head, _, tail = seg.rpartition(".")
        if path and head and path[-1] == head and tail.isdigit():
            path.append(tail)  # "m" then "m.0" -> m.0
        else:
            path.extend(seg.split("."))
    return ".".join(path)


def onnx_conv_names(onnx_model, layer_names: Sequence[str]) -> dict[str, str]:
    """``{torch module path: ONNX Conv node name}`` for ``layer_names``.

    Names are matched through :func:`onnx_name_to_module` (a v5.0 Focus stem's ``model.0.conv.conv``
    also matches ``model.0.conv`` of a graph exported with focus-to-conv,
    :func:`yoloport.deploy.surgery.focus_converted_path`); if that does not account for every layer
    but the graph has as many Conv nodes as there are layers, they are paired in order (the exporter
    keeps the forward order). Anything else is a YoloportError.
    """
    import onnx

    m = onnx.load(str(onnx_model), load_external_data=False) if isinstance(onnx_model, (str, Path)) else onnx_model
    from .surgery import focus_converted_path

    nodes = [n.name for n in m.graph.node if n.op_type == "Conv"]
    by_module = {onnx_name_to_module(n): n for n in nodes if n}
    out = {name: by_module[name] for name in layer_names if name in by_module}
    for name in layer_names:  # a Focus stem's conv in a graph exported with focus-to-conv
        alias = focus_converted_path(name)
        if name not in out and alias in by_module and alias not in layer_names:
            out[name] = by_module[alias]
    if len(out) == len(layer_names):
        return out
    if len(nodes) == len(layer_names) and all(nodes):
        return dict(zip(layer_names, nodes))
    missing = [n for n in layer_names if n not in out]
    raise YoloportError(
        f"cannot map {len(missing)} convolution(s) to the ONNX graph's Conv nodes (first: {missing[0]}; "
        f"the graph has {len(nodes)} Conv nodes, e.g. {nodes[:1]})"
    )


class ConvIO(NamedTuple):
    """A Conv node's data input tensor (``""`` for the image), output tensor and activation nodes."""

    input: str
    output: str
    activation: tuple[str, ...] = ()


ACTIVATION_OPS = {"Relu", "LeakyRelu", "HardSwish", "HardSigmoid", "Clip", "Elu", "Selu"}


def onnx_conv_tensors(onnx_model, nodes: Sequence[str]) -> dict[str, ConvIO]:
    """``{Conv node name: ConvIO}``. A Detect convolution's output is a graph output (``raw0`` ...),
    not ``<scope>/...``; ``activation`` is the conv's own SiLU (``Sigmoid`` and the ``Mul`` of the
    conv output by it) or single activation op, ``()`` when there is none (the Detect convs)."""
    import onnx

    m = onnx.load(str(onnx_model), load_external_data=False) if isinstance(onnx_model, (str, Path)) else onnx_model
    graph_inputs = {i.name for i in m.graph.input}
    consumers = tensor_consumers(m.graph)
    want = set(nodes)
    out = {}
    for n in m.graph.node:
        if n.name not in want:
            continue
        y = n.output[0]
        users = consumers.get(y, [])
        act: tuple[str, ...] = ()
        sig = [u for u in users if u.op_type == "Sigmoid"]
        if sig:
            mul = [u for u in users if u.op_type == "Mul" and sig[0].output[0] in u.input]
            if mul:
                act = (sig[0].name, mul[0].name)
        elif len(users) == 1 and users[0].op_type in ACTIVATION_OPS:
            act = (users[0].name,)
        out[n.name] = ConvIO("" if n.input[0] in graph_inputs else n.input[0], y, act)
    return out


def conv_map(onnx_model, layers: Sequence[str]) -> tuple[dict[str, str], dict[str, "ConvIO"]]:
    """``({layer: Conv node}, {Conv node: ConvIO})`` for torch module paths ``layers`` in ``onnx_model``."""
    import onnx

    m = onnx.load(str(onnx_model), load_external_data=False) if isinstance(onnx_model, (str, Path)) else onnx_model
    names = onnx_conv_names(m, list(layers))
    return names, onnx_conv_tensors(m, list(names.values()))
