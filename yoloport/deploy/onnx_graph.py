"""Small read-only helpers over an ONNX graph, shared by the lint, the backends and the sensitivity
search (import ``onnx`` lazily: nothing here needs more than the protobuf objects)."""
from __future__ import annotations

from collections import defaultdict


def tensor_consumers(graph) -> dict[str, list]:
    """``{tensor name: [nodes that read it]}`` in graph order; a node reading a tensor twice is
    listed once, empty input names are skipped."""
    consumers: dict[str, list] = defaultdict(list)
    for n in graph.node:
        for name in dict.fromkeys(i for i in n.input if i):
            consumers[name].append(n)
    return consumers
