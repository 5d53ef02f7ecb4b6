"""Small read-only helpers over an ONNX graph, shared by the lint, the backends and the sensitivity
search (import ``onnx`` lazily: nothing here needs more than the protobuf objects), and the naming
between yoloport's torch modules (``model.2.cv1.conv``) and the exported graph's nodes
(``/model.2/cv1/conv/Conv``)."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

from ..errors import YoloportError


def _read_graph(onnx_model):
    """``onnx_model`` as a ModelProto: a path is loaded without its external data (the graph is only read)."""
    import onnx

    return onnx.load(str(onnx_model), load_external_data=False) if isinstance(onnx_model, (str, Path)) else onnx_model


def with_outputs(model, tensors: Iterable[str]):
    """A copy of ``model`` (an onnx ModelProto, left as it is) whose graph also outputs the inner tensors
    ``tensors``: each name not already a graph output is appended once, in the order given, as an untyped
    ``ValueInfoProto`` (the runtime infers its type and shape), after the graph's own outputs. What the
    copy computes is unchanged; a runtime then returns those tensors too (ONNX Runtime's
    ``qdq_loss_debug`` exposes tensors the same way)."""
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    have = {o.name for o in out.graph.output}
    for name in tensors:
        if name not in have:
            out.graph.output.append(onnx.ValueInfoProto(name=name))
            have.add(name)
    return out


def tensor_consumers(graph) -> dict[str, list]:
    """``{tensor name: [nodes that read it]}`` in graph order (``graph``: an onnx graph, or a list of its nodes);
    a node reading a tensor twice is listed once, empty input names are skipped."""
    consumers: dict[str, list] = defaultdict(list)
    for n in getattr(graph, "node", graph):
        for name in dict.fromkeys(i for i in n.input if i):
            consumers[name].append(n)
    return consumers


def tensor_producers(graph) -> dict:
    """``{tensor name: the node that writes it}`` (``graph``: an onnx graph, or a list of its nodes); empty
    output names (optional outputs not produced) are skipped."""
    return {o: n for n in getattr(graph, "node", graph) for o in n.output if o}


@dataclass(frozen=True)
class SiluUnit:
    """One Conv -> Sigmoid -> Mul(x, sigmoid(x)) of an ONNX graph, by tensor name."""

    preact: str  # the Conv output x (Sigmoid's input and the Mul's other input)
    sigmoid: str  # sigmoid(x)
    mul: str  # x * sigmoid(x)


def silu_units(model) -> list[SiluUnit]:
    """Every Conv -> Sigmoid -> Mul(x, sigmoid(x)) of ``model`` (an onnx ModelProto), in the graph order of
    the Sigmoids (one unit per Sigmoid, its first such Mul)."""
    consumers = tensor_consumers(model.graph)
    producers = tensor_producers(model.graph)
    units = []
    for n in model.graph.node:
        x = n.input[0] if n.op_type == "Sigmoid" else None
        if x is None or x not in producers or producers[x].op_type != "Conv":
            continue
        muls = [c for c in consumers.get(n.output[0], []) if c.op_type == "Mul" and set(c.input) == {x, n.output[0]}]
        if muls:
            units.append(SiluUnit(x, n.output[0], muls[0].output[0]))
    return units


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
    from .surgery import focus_converted_path

    m = _read_graph(onnx_model)
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
    m = _read_graph(onnx_model)
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
    m = _read_graph(onnx_model)
    names = onnx_conv_names(m, list(layers))
    return names, onnx_conv_tensors(m, list(names.values()))
