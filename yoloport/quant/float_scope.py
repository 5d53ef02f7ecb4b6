"""``FloatScope``: the layers an int8 build keeps in float, in one vocabulary every backend translates.

Modelled on NNCF's ``IgnoredScope``. The user's ``--head-fp32``, ``--exclude`` and ``--hybrid`` and the
mixed-precision search all produce one; each backend turns it into its own mechanism inside its
``build`` (ONNX Runtime ``nodes_to_exclude``, NNCF ``IgnoredScope``, RKNN hybrid quantization,
mlu-sim float convolutions).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ..errors import YoloportError

HEAD_CHOICES = ("tail", "convs", "none")
FLOAT_DTYPES = ("float16", "int16")


@dataclass(frozen=True)
class FloatScope:
    """What to keep out of int8.

    - ``layers``: convolutions by torch module path (``model.2.cv1.conv``, ``model.24.m.0``): what the
      sensitivity ranking names; each backend maps them to its graph (the conv and its activation).
    - ``nodes``: graph node names, globs or op types in the backend's own graph (ONNX names such as
      ``/model.24/m.0/Conv`` or ``Sigmoid`` for ONNX Runtime, OpenVINO and RKNN; module names or
      prefixes for mlu-sim, which runs the PyTorch model).
    - ``head``: ``tail`` (the decode after the Detect convolutions), ``convs`` (those convolutions too)
      or ``none``; None leaves the backend's default.
    - ``dtype``: the float type where a backend offers a choice (RKNN hybrid: ``float16`` or ``int16``).
    """

    layers: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()
    head: str | None = None
    dtype: str = "float16"

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(dict.fromkeys(str(x) for x in self.layers)))
        object.__setattr__(self, "nodes", tuple(dict.fromkeys(str(x) for x in self.nodes)))
        if self.head is not None and self.head not in HEAD_CHOICES:
            raise YoloportError(f"head_fp32 must be one of {', '.join(HEAD_CHOICES)}, got {self.head!r}")
        if self.dtype not in FLOAT_DTYPES:
            raise YoloportError(f"float dtype {self.dtype!r}: choose one of {', '.join(FLOAT_DTYPES)}")

    def __bool__(self) -> bool:
        return bool(self.layers or self.nodes or (self.head not in (None, "none")))

    def merged(self, other: "FloatScope | None") -> "FloatScope":
        """Both scopes together (``other``'s head and dtype win where it sets them)."""
        if other is None:
            return self
        return FloatScope(self.layers + other.layers, self.nodes + other.nodes,
                          other.head if other.head is not None else self.head,
                          other.dtype if other.dtype != "float16" else self.dtype)

    def with_head(self, default: str) -> "FloatScope":
        """This scope with ``head`` filled in from a backend's default when unset."""
        return self if self.head is not None else FloatScope(self.layers, self.nodes, default, self.dtype)

    def to_dict(self) -> dict:
        return {"layers": list(self.layers), "nodes": list(self.nodes), "head": self.head, "dtype": self.dtype}

    @classmethod
    def from_any(cls, value) -> "FloatScope":
        """A FloatScope, its dict, or None (empty scope)."""
        if value is None:
            return cls()
        if isinstance(value, FloatScope):
            return value
        if isinstance(value, Mapping):
            unknown = set(value) - {"layers", "nodes", "head", "dtype"}
            if unknown:
                raise YoloportError(f"float_scope: unknown field(s) {', '.join(sorted(unknown))} "
                                    "(fields: layers, nodes, head, dtype)")
            return cls(tuple(value.get("layers") or ()), tuple(value.get("nodes") or ()), value.get("head"),
                       value.get("dtype") or "float16")
        raise YoloportError(f"float_scope must be a FloatScope or a dict, got {type(value).__name__}")


def scope_from_qconfig(qconfig: Mapping | None, default_head: str) -> FloatScope:
    """The whole float scope of a qconfig: its ``float_scope`` plus the user-facing keys ``exclude``
    (-> ``nodes``; a comma-separated string or a list) and ``head_fp32`` (-> ``head``, default
    ``default_head``)."""
    q = qconfig or {}
    exclude = q.get("exclude") or []
    if isinstance(exclude, str):
        exclude = [s for s in exclude.split(",") if s]
    scope = FloatScope.from_any(q.get("float_scope")).merged(FloatScope(nodes=tuple(exclude), head=q.get("head_fp32")))
    return scope.with_head(default_head)
