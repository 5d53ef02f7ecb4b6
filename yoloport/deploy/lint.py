"""Lint an ONNX graph against a deployment target's rules (RKNN, MLU, ONNX Runtime, OpenVINO).

The rules are the NPU teams' hard-won ones for YOLOv5 heads, checked statically on the graph:

========================  ==========================================================================
rule id                   what it catches
========================  ==========================================================================
``unsupported-op``        ops the target cannot run (tables in :mod:`yoloport.deploy.op_support`)
``scatternd``             in-place slice assignment in the Detect head (``y[..., 0:2] = ...``)
``rank5``                 tensors of rank >= 5 and broadcasts between a >= 5-D and a lower-rank input
``concat-mixed-range``    one Concat (or ScatterND) joining tensors whose value ranges differ by > 100x
                          (boxes in pixels with 0..1 scores): a single int8 scale collapses the small ones
``sigmoid-multi-consumer`` a Sigmoid feeding several nodes (blocks Conv+activation fusion on NPUs)
``dynamic-shape``         graph inputs with symbolic or unknown dims
``opset-range``           default-domain opset outside what the target accepts (or documents)
``multi-output-head``     a detection graph with fewer than three head outputs (RKNN)
``op-restriction``        ops used outside the restrictions rknn-toolkit2 documents (batch 1, Resize mode)
``landmark-scale``        one tensor joining unbounded values traced to a convolution (landmarks of a
                          keypoint head) with 0..1 probabilities: one int8 scale cannot hold both
                          (severity from the target's profile, ``LintProfile.shared_scale``)
``output-convention``     outputs that are not what the target's standard clients read
                          (:mod:`yoloport.deploy.conventions`): logits where they expect
                          probabilities or the reverse, another head layout, levels out of stride
                          order, or an anchors file next to the graph that disagrees with the model
========================  ==========================================================================

Entry points: :func:`lint_model` (returns a :class:`LintReport`), :func:`check_or_raise` (what
``yoloport export`` calls), :func:`format_report` (the CLI table) and :func:`load_onnx`.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence, Union

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import YoloportError
from . import op_support
from .onnx_graph import tensor_consumers, tensor_producers, with_outputs
from .op_support import INT8_TARGETS, TARGETS

SEVERITIES: tuple[str, ...] = ("error", "warning", "info")
RANGE_RATIO = 100.0
"""Concat inputs whose max-abs values differ by more than this factor fire ``concat-mixed-range``."""

ModelLike = Union[onnx.ModelProto, str, Path]
SampleLike = Union[np.ndarray, Mapping[str, np.ndarray], None]

_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}
_ELEMENTWISE = {
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Mod", "Where", "Equal", "Greater", "GreaterOrEqual",
    "Less", "LessOrEqual", "And", "Or", "Xor", "PRelu", "BitShift", "Sum", "Mean",
}
_BOUNDED_ONE = {"Sigmoid", "HardSigmoid", "Softmax", "Tanh", "Softsign"}
_PASS_FIRST = {
    "Reshape", "Transpose", "Slice", "Gather", "GatherElements", "Squeeze", "Unsqueeze", "Flatten", "Identity",
    "Split", "Expand", "Tile", "Cast", "Relu", "MaxPool", "Dropout", "DepthToSpace", "SpaceToDepth", "Resize",
    "Pad", "Abs", "Neg",
}
_TRACED = _PASS_FIRST | {"Clip", "Concat", "Max", "Min", "Where", "Add", "Sub", "Sum", "Mul", "Div", "Pow"}


# --------------------------------------------------------------------------------------------
# report types
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Finding:
    """One rule violation: ``rule_id``, ``severity`` ('error'|'warning'|'info'), what and where, and a fix."""

    rule_id: str
    severity: str
    message: str
    nodes: list[str] = field(default_factory=list)
    hint: str = ""

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LintReport:
    """All findings for one graph and one target."""

    target: str
    model: str
    opset: int | None
    findings: list[Finding] = field(default_factory=list)

    def by_severity(self, severity: str) -> list[Finding]:
        return [f for f in self.findings if f.severity == severity]

    @property
    def errors(self) -> list[Finding]:
        return self.by_severity("error")

    @property
    def warnings(self) -> list[Finding]:
        return self.by_severity("warning")

    @property
    def ok(self) -> bool:
        """True when no error-level rule fired."""
        return not self.errors

    def rule_ids(self, severity: str | None = None) -> set[str]:
        """Rule ids that fired (at ``severity`` if given)."""
        return {f.rule_id for f in self.findings if severity is None or f.severity == severity}

    def summary(self) -> str:
        """``rknn: 2 errors, 1 warning, 0 info -> FAIL`` style one-liner."""
        n = {s: len(self.by_severity(s)) for s in SEVERITIES}
        plural = lambda k, s: f"{k} {s}{'' if k == 1 or s == 'info' else 's'}"  # noqa: E731
        counts = ", ".join(plural(n[s], s) for s in SEVERITIES)
        return f"{self.target}: {counts} -> {'OK' if self.ok else 'FAIL'}"

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "model": self.model,
            "opset": self.opset,
            "ok": self.ok,
            "counts": {s: len(self.by_severity(s)) for s in SEVERITIES},
            "findings": [f.to_dict() for f in self.findings],
        }


def _short_nodes(nodes: Sequence[str], limit: int = 3) -> str:
    if not nodes:
        return "-"
    shown = ", ".join(nodes[:limit])
    return shown + (f" (+{len(nodes) - limit} more)" if len(nodes) > limit else "")


def format_report(report: LintReport, details: bool = True) -> str:
    """Text table ``rule | severity | nodes | hint``, then each finding's message, then the summary line."""
    rows = [("rule", "severity", "nodes", "hint")]
    rows += [(f.rule_id, f.severity, _short_nodes(f.nodes), f.hint or "-") for f in report.findings]
    widths = [min(max(len(r[i]) for r in rows), cap) for i, cap in enumerate((26, 8, 48, 10_000))]

    def fmt(row: Sequence[str]) -> str:
        cells = [c if len(c) <= w else c[: w - 3] + "..." for c, w in zip(row, widths)]
        return " | ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    lines = [f"lint {report.model} for {report.target} (opset {report.opset})"]
    if report.findings:
        lines += [fmt(rows[0]), "-+-".join("-" * w for w in widths)] + [fmt(r) for r in rows[1:]]
        if details:
            lines.append("")
            lines += [f"[{f.severity}] {f.rule_id}: {f.message}" for f in report.findings]
    else:
        lines.append("no findings")
    lines.append(report.summary())
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# graph view
# --------------------------------------------------------------------------------------------
Shape = list  # list of int | str | None per dim


class _Graph:
    """Read-only index over a (shape-inferred) ONNX graph: producers, consumers, constants, shapes."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        graph = model.graph
        self._const_cache: dict[str, np.ndarray | None] = {}
        self.nodes: list[onnx.NodeProto] = list(graph.node)
        self.labels: dict[int, str] = {
            id(n): n.name or f"{n.op_type}#{i}" for i, n in enumerate(self.nodes)
        }
        self.producer: dict[str, onnx.NodeProto] = tensor_producers(self.nodes)
        self.consumers: dict[str, list[onnx.NodeProto]] = tensor_consumers(graph)
        self.initializers: dict[str, onnx.TensorProto] = {t.name: t for t in graph.initializer}
        self.constant_nodes: dict[str, onnx.NodeProto] = {
            n.output[0]: n for n in self.nodes if n.op_type == "Constant" and n.output
        }
        self.inputs = [v for v in graph.input if v.name not in self.initializers]
        self.outputs: list[str] = [v.name for v in graph.output]
        self.opset: int | None = next(
            (o.version for o in model.opset_import if o.domain in op_support.DEFAULT_DOMAINS), None
        )
        self.shapes: dict[str, Shape | None] = {}
        self.elem_types: dict[str, int] = {}
        for v in list(graph.input) + list(graph.value_info) + list(graph.output):
            self._record_value_info(v)
        for t in graph.initializer:
            self.shapes[t.name] = list(t.dims)
            self.elem_types[t.name] = t.data_type
        for name, n in self.constant_nodes.items():
            arr = self.constant(name)
            if arr is not None:
                self.shapes[name] = list(arr.shape)

    def _record_value_info(self, v: onnx.ValueInfoProto) -> None:
        if not v.type.HasField("tensor_type"):
            return
        tt = v.type.tensor_type
        if tt.elem_type:
            self.elem_types[v.name] = tt.elem_type
        if tt.HasField("shape"):
            self.shapes[v.name] = [
                d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim
            ]

    def label(self, node: onnx.NodeProto) -> str:
        return self.labels[id(node)]

    def rank(self, name: str) -> int | None:
        shape = self.shapes.get(name)
        return None if shape is None else len(shape)

    def constant(self, name: str) -> np.ndarray | None:
        """Value of an initializer or Constant-node output, else None."""
        if name in self._const_cache:
            return self._const_cache[name]
        value = None
        if name in self.initializers:
            value = numpy_helper.to_array(self.initializers[name])
        elif name in self.constant_nodes:
            value = _constant_node_value(self.constant_nodes[name])
        self._const_cache[name] = value
        return value

    def is_float(self, name: str) -> bool | None:
        t = self.elem_types.get(name)
        return None if t is None else t in _FLOAT_TYPES

    def all_op_types(self) -> list[tuple[onnx.NodeProto, str]]:
        """Every node including those in subgraphs (If/Loop/Scan bodies), with a display label."""
        out: list[tuple[onnx.NodeProto, str]] = []

        def walk(nodes: Iterable[onnx.NodeProto], prefix: str) -> None:
            for i, n in enumerate(nodes):
                label = prefix + (n.name or f"{n.op_type}#{i}")
                out.append((n, label))
                for attr in n.attribute:
                    subgraphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
                    for sg in subgraphs:
                        walk(sg.node, f"{label}/{attr.name}/")

        walk(self.nodes, "")
        return out


def _constant_node_value(node: onnx.NodeProto) -> np.ndarray | None:
    for attr in node.attribute:
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
        if attr.name == "value_float":
            return np.asarray(attr.f, dtype=np.float32)
        if attr.name == "value_floats":
            return np.asarray(list(attr.floats), dtype=np.float32)
        if attr.name == "value_int":
            return np.asarray(attr.i, dtype=np.int64)
        if attr.name == "value_ints":
            return np.asarray(list(attr.ints), dtype=np.int64)
    return None


def _infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Shape-inferred copy of ``model``; the model itself when inference fails (custom ops, > 2 GB)."""
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # noqa: BLE001 - best effort: rules degrade to what is already annotated
        return model


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


# --------------------------------------------------------------------------------------------
# value-range tracing (static upper bound of |x| per tensor)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Bound:
    """Upper bound of ``|x|`` (None: unknown, inf: unbounded) and whether x depends on the input data."""

    mag: float | None
    data: bool


def _max_abs(arr: np.ndarray) -> float:
    return float(np.max(np.abs(arr.astype(np.float64)))) if arr.size else 0.0


def _min_abs(arr: np.ndarray) -> float:
    return float(np.min(np.abs(arr.astype(np.float64)))) if arr.size else 0.0


def value_bound(g: _Graph, name: str, _memo: dict[str, _Bound] | None = None, _depth: int = 0) -> _Bound:
    """Static upper bound on ``max |x|`` of tensor ``name``, traced back through its producers.

    Sigmoid-like ops bound to 1, Exp is unbounded, Mul/Add/Sub/Div/Pow combine their inputs' bounds
    (constants contribute their max-abs value), shape ops pass the bound through; anything else
    (Conv, MatMul, graph inputs) is unknown.
    """
    memo = {} if _memo is None else _memo
    if name in memo:
        return memo[name]
    const = g.constant(name)
    if const is not None:
        result = _Bound(_max_abs(const), False)
    elif name not in g.producer or _depth > 200:
        result = _Bound(None, True)
    else:
        node = g.producer[name]
        if node.op_type in _BOUNDED_ONE or node.op_type == "Exp":
            data = any(i and g.constant(i) is None for i in node.input)
            result = _Bound(math.inf if node.op_type == "Exp" else 1.0, data)
        elif node.op_type in _TRACED:
            ins = [value_bound(g, i, memo, _depth + 1) if i else _Bound(0.0, False) for i in node.input]
            result = _propagate(g, node, ins)
        else:  # Conv, MatMul, ...: unknown range, and no need to trace further back
            result = _Bound(None, True)
    memo[name] = result
    return result


def _propagate(g: _Graph, node: onnx.NodeProto, ins: list[_Bound]) -> _Bound:
    """Bound of ``node``'s output from its inputs' bounds (``node.op_type`` in ``_TRACED``)."""
    op = node.op_type
    data = any(b.data for b in ins)
    mags = [b.mag for b in ins]
    if op in _PASS_FIRST and ins:
        return _Bound(mags[0], ins[0].data)
    if op == "Clip" and ins:
        hi = _attr(node, "max")
        if hi is None and len(node.input) > 2 and node.input[2]:
            c = g.constant(node.input[2])
            hi = None if c is None else _max_abs(c)
        lo = _attr(node, "min")
        if lo is None and len(node.input) > 1 and node.input[1]:
            c = g.constant(node.input[1])
            lo = None if c is None else _max_abs(c)
        if hi is not None and lo is not None:
            return _Bound(max(abs(hi), abs(lo)), data)
        return _Bound(mags[0], data)
    if any(m is None for m in mags):
        return _Bound(None, data)
    if op in ("Concat", "Max", "Min", "Where"):
        return _Bound(max(mags[1:] if op == "Where" else mags), data)
    if op in ("Add", "Sub", "Sum"):
        return _Bound(sum(mags), data)
    if op == "Mul":
        return _Bound(math.prod(mags), data)
    if op == "Div" and len(node.input) == 2:
        c = g.constant(node.input[1])
        if c is not None and _min_abs(c) > 0:
            return _Bound(mags[0] / _min_abs(c), data)
        return _Bound(None, data)
    if op == "Pow" and len(node.input) == 2:
        e = g.constant(node.input[1])
        if e is not None and e.size and float(np.min(e)) > 0:
            base = mags[0]
            return _Bound(max(base ** float(np.max(e)), base ** float(np.min(e))), data)
        return _Bound(None, data)
    return _Bound(None, data)


# --------------------------------------------------------------------------------------------
# dynamic range measurement (onnxruntime)
# --------------------------------------------------------------------------------------------
def measure_max_abs(model: onnx.ModelProto, names: Sequence[str], sample: SampleLike) -> dict[str, float]:
    """Run ``model`` on ``sample`` with onnxruntime and return ``max |x|`` of each tensor in ``names``.

    ``sample``: one array for the first graph input (a missing batch dim is added) or a name->array map.
    """
    import onnxruntime as ort

    sess = ort.InferenceSession(with_outputs(model, names).SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = _feeds(sess, sample)
    values = sess.run(list(names), feeds)
    return {n: _max_abs(np.asarray(v)) for n, v in zip(names, values)}


_ORT_NP = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def _feeds(sess, sample: SampleLike) -> dict[str, np.ndarray]:
    inputs = sess.get_inputs()
    if isinstance(sample, Mapping):
        pairs = [(i, np.asarray(sample[i.name])) for i in inputs if i.name in sample]
    else:
        pairs = [(inputs[0], np.asarray(sample))]
    feeds = {}
    for meta, arr in pairs:
        if len(meta.shape) == arr.ndim + 1:
            arr = arr[None]
        feeds[meta.name] = arr.astype(_ORT_NP.get(meta.type, arr.dtype), copy=False)
    return feeds


# --------------------------------------------------------------------------------------------
# rules
# --------------------------------------------------------------------------------------------
@dataclass
class _Context:
    g: _Graph
    target: str
    sample: SampleLike = None
    model_dir: Path | None = None  # the folder of the linted file (client files are looked up there)

    @property
    def meta(self) -> dict:
        """The graph's yoloport metadata (empty for a foreign graph)."""
        from .onnx_meta import meta_from_proto

        return meta_from_proto(self.g.model)

    @property
    def int8(self) -> bool:
        return self.target in INT8_TARGETS


Rule = Callable[[_Context], list[Finding]]

SCATTERND_HINT = "head assigns slices in place (y[..., 0:2] = ...); export with --mode split or raw"
CONCAT_HINT = "keep boxes and scores in separate outputs (--mode split) or decode on the host (--mode raw)"


def rule_unsupported_op(ctx: _Context) -> list[Finding]:
    """``unsupported-op``: op types the target cannot run, one finding per op type."""
    dedicated = {"ScatterND"} if ctx.target in INT8_TARGETS else set()
    bad: dict[tuple[str, str], list[str]] = defaultdict(list)
    reasons: dict[tuple[str, str], str] = {}
    for node, label in ctx.g.all_op_types():
        if node.op_type in dedicated:
            continue
        supported, reason = op_support.op_support(ctx.target, node.op_type, node.domain, ctx.g.opset)
        if not supported:
            key = (node.domain, node.op_type)
            bad[key].append(label)
            reasons[key] = reason
    findings = []
    for (domain, op), nodes in sorted(bad.items()):
        qual = f"{domain}::{op}" if domain and domain not in op_support.DEFAULT_DOMAINS else op
        findings.append(
            Finding("unsupported-op", "error", f"{qual} ({len(nodes)} node(s)) is not supported on "
                    f"{ctx.target}: {reasons[(domain, op)]}", nodes, op_support.op_hint(op))
        )
    return findings


def rule_scatternd(ctx: _Context) -> list[Finding]:
    """``scatternd``: in-place slice assignment exported as ScatterND (error on rknn/mlu)."""
    if not ctx.int8:
        return []
    nodes = [ctx.g.label(n) for n in ctx.g.nodes if n.op_type == "ScatterND"]
    if not nodes:
        return []
    return [Finding("scatternd", "error", f"{len(nodes)} ScatterND node(s): the head writes decoded boxes into "
                    "the sigmoid tensor in place; NPU toolchains reject it or rewrite it into Split+Concat, "
                    "which puts pixel boxes and 0..1 scores in one int8 tensor", nodes, SCATTERND_HINT)]


def rule_rank5(ctx: _Context) -> list[Finding]:
    """``rank5``: rank >= 5 tensors and broadcasts between a >= 5-D and a lower-rank input."""
    severity = op_support.PROFILES[ctx.target].rank5
    if severity is None:
        return []
    g = ctx.g
    rank5_nodes = [n for n in g.nodes if n.op_type != "Constant" and any((g.rank(o) or 0) >= 5 for o in n.output if o)]
    # data-path (float) producers first: those are the ones to fix; index tensors follow from them
    rank5_nodes.sort(key=lambda n: not any(g.is_float(o) for o in n.output if o))
    producers = [g.label(n) for n in rank5_nodes]
    broadcasts = []
    for n in g.nodes:
        if n.op_type not in _ELEMENTWISE:
            continue
        ranks = [g.rank(i) for i in n.input if i]
        known = [r for r in ranks if r is not None]
        if known and max(known) >= 5 and len(set(known)) > 1:
            broadcasts.append(g.label(n))
    consts5 = sorted({i for n in g.nodes for i in n.input
                      if i and g.constant(i) is not None and (g.rank(i) or 0) >= 5})
    hint = ("keep the head 4-D ([B, na*no, H, W] or [B, na, H*W, no]) with 4-D anchor/grid constants, "
            "or decode on the host (--mode raw)")
    findings = []
    if producers:
        msg = f"{len(producers)} node(s) produce tensors of rank >= 5"
        if consts5:
            msg += f"; rank >= 5 constants: {', '.join(consts5[:4])}"
        findings.append(Finding("rank5", severity, msg, producers, hint))
    if broadcasts:
        findings.append(Finding("rank5", severity, f"{len(broadcasts)} elementwise node(s) broadcast a >= 5-D "
                                "tensor against a lower-rank one", broadcasts, hint))
    return findings


def _joined_inputs(node: onnx.NodeProto) -> list[str]:
    """Tensors a node packs into one output: every Concat input; ScatterND's data and updates."""
    if node.op_type == "Concat":
        return [i for i in node.input if i]
    if node.op_type == "ScatterND" and len(node.input) >= 3:
        return [node.input[0], node.input[2]]
    return []


def _concat_candidates(g: _Graph) -> list[onnx.NodeProto]:
    """Concat/ScatterND nodes on float data (shape-building Concats of int64 values are skipped)."""
    out = []
    for n in g.nodes:
        joined = _joined_inputs(n)
        if len(joined) < 2:
            continue
        is_float = g.is_float(n.output[0])
        if is_float is None:
            is_float = not any(g.is_float(i) is False for i in joined)
        if is_float:
            out.append(n)
    return out


def _ratio(mags: Sequence[float]) -> float:
    positive = [m for m in mags if m > 0]
    if len(positive) < 2:
        return 1.0
    return max(positive) / min(positive)


def _fmt_mag(m: float) -> str:
    return "unbounded" if math.isinf(m) else f"{m:.3g}"


def rule_concat_mixed_range(ctx: _Context) -> list[Finding]:
    """``concat-mixed-range``: a Concat (or ScatterND data/updates pair) whose inputs' value ranges
    differ by more than :data:`RANGE_RATIO`.

    Static: each input's max-abs bound is traced back to its producers (:func:`value_bound`), only
    data-dependent inputs with a known bound count. Dynamic (when ``ctx.sample`` is given): the
    Concat inputs are measured with onnxruntime, and that measurement decides for every Concat it covers.
    """
    g = ctx.g
    severity = "error" if ctx.int8 else "warning"
    concats = _concat_candidates(g)
    if not concats:
        return []
    findings: list[Finding] = []
    measured: dict[str, float] = {}
    if ctx.sample is not None:
        names = sorted({i for n in concats for i in _joined_inputs(n) if g.constant(i) is None})
        try:
            measured = measure_max_abs(g.model, names, ctx.sample)
        except Exception as e:  # noqa: BLE001 - fall back to the static check, say so
            findings.append(Finding("concat-mixed-range", "info", "dynamic range check could not run "
                                    f"({type(e).__name__}: {str(e).splitlines()[0][:160]}); static check only",
                                    [], "check the sample's shape and dtype against the graph input"))
    memo: dict[str, _Bound] = {}
    for n in concats:
        inputs = _joined_inputs(n)
        if measured and all(i in measured or g.constant(i) is not None for i in inputs):
            mags = [measured[i] if i in measured else _max_abs(g.constant(i)) for i in inputs]
            ratio = _ratio(mags)
            if ratio > RANGE_RATIO:
                detail = ", ".join(f"{i}: {_fmt_mag(m)}" for i, m in zip(inputs, mags))
                findings.append(Finding("concat-mixed-range", severity, f"measured max |x| of the {n.op_type} inputs "
                                        f"differ {ratio:.0f}x ({detail}); one int8 scale cannot hold both",
                                        [g.label(n)], CONCAT_HINT))
            continue
        bounds = [(i, value_bound(g, i, memo)) for i in inputs]
        known = [(i, b.mag) for i, b in bounds if b.data and b.mag is not None]
        ratio = _ratio([m for _, m in known])
        if ratio > RANGE_RATIO:
            detail = ", ".join(f"{i}: <= {_fmt_mag(m)}" for i, m in known)
            findings.append(Finding("concat-mixed-range", severity, f"{n.op_type} joins tensors whose value ranges "
                                    f"differ by > {RANGE_RATIO:.0f}x (static bounds {detail}), e.g. pixel boxes "
                                    "with 0..1 scores; one int8 scale collapses the small ones",
                                    [g.label(n)], CONCAT_HINT))
    return findings


LANDMARK_HINT = ("keep landmarks in their own output: --mode split (kpts [B, N, 2K]) or raw logits without "
                 "--sigmoid (--convention rknn_face / yoloport), decoded on the host")


def _traces_to_conv(g: _Graph, name: str, depth: int = 0) -> bool:
    """Whether float tensor ``name`` is a convolution's output moved only by shape ops, slices and
    arithmetic with constants (a head channel such as a landmark), not an index or a graph input."""
    node = g.producer.get(name)
    if node is None or depth > 40:
        return False
    if node.op_type == "Conv":
        return True
    if node.op_type not in _TRACED and node.op_type not in ("Split",):
        return False
    data = [i for i in node.input if i and g.constant(i) is None]
    return bool(data) and _traces_to_conv(g, data[0], depth + 1)


def _is_probability(g: _Graph, name: str, memo: dict) -> bool:
    """Whether ``name`` holds data bounded by 1 (a sigmoid's output, or products of them)."""
    b = value_bound(g, name, memo)
    return b.data and b.mag is not None and b.mag <= 1.0


def _is_unbounded_head_value(g: _Graph, name: str, memo: dict) -> bool:
    """Whether ``name`` holds data with no static bound that comes straight from a convolution."""
    b = value_bound(g, name, memo)
    return b.data and (b.mag is None or math.isinf(b.mag)) and _traces_to_conv(g, name)


def rule_landmark_scale(ctx: _Context) -> list[Finding]:
    """``landmark-scale``: a Concat joining 0..1 probabilities with unbounded convolution values (a
    keypoint head's landmarks: never squashed, any range), which an int8 target quantizes with one scale.

    Severity from the target's profile (``shared_scale``). The graph's keypoint count (metadata
    ``nkpt``) names the unbounded values landmarks in the message; the check itself is structural."""
    severity = op_support.PROFILES[ctx.target].shared_scale
    if severity is None:
        return []
    g = ctx.g
    memo: dict[str, _Bound] = {}
    bad, pairs = [], []
    for n in _concat_candidates(g):
        inputs = _joined_inputs(n)
        probs = [i for i in inputs if _is_probability(g, i, memo)]
        wild = [i for i in inputs if i not in probs and _is_unbounded_head_value(g, i, memo)]
        if probs and wild:
            bad.append(g.label(n))
            pairs.append(f"{wild[0]} with {probs[0]}")
    if not bad:
        return []
    nkpt = _meta_nkpt(ctx.meta)
    what = f"the {nkpt} landmarks' unbounded values" if nkpt else "unbounded convolution values"
    return [Finding("landmark-scale", severity, f"{len(bad)} Concat node(s) join {what} with 0..1 probabilities "
                    f"({'; '.join(pairs[:2])}): one int8 scale per tensor rounds the probabilities to a few levels "
                    "or clips the landmarks", bad, LANDMARK_HINT)]


def rule_sigmoid_multi_consumer(ctx: _Context) -> list[Finding]:
    """``sigmoid-multi-consumer``: Sigmoid outputs read by more than one node (or also a graph output)."""
    g = ctx.g
    outputs = set(g.outputs)
    nodes = [g.label(n) for n in g.nodes if n.op_type == "Sigmoid"
             and len(g.consumers.get(n.output[0], [])) + (n.output[0] in outputs) > 1]
    if not nodes:
        return []
    severity = "warning" if ctx.int8 else "info"
    return [Finding("sigmoid-multi-consumer", severity, f"{len(nodes)} Sigmoid node(s) feed more than one "
                    "consumer, which blocks fusing the activation into the preceding Conv", nodes,
                    "apply sigmoid once per consumer branch or move it to the host (--mode raw)")]


def rule_dynamic_shape(ctx: _Context) -> list[Finding]:
    """``dynamic-shape``: graph inputs with symbolic or unknown dims."""
    g = ctx.g
    bad = []
    for v in g.inputs:
        shape = g.shapes.get(v.name)
        if shape is None or any(not isinstance(d, int) or d <= 0 for d in shape):
            bad.append(f"{v.name}{list(shape) if shape is not None else '[?]'}")
    if not bad:
        return []
    severity = "error" if ctx.int8 else "info"
    return [Finding("dynamic-shape", severity, f"input(s) with symbolic or unknown dims: {', '.join(bad)}",
                    [b.split("[")[0] for b in bad], "export with a fixed batch and image size (no --dynamic)")]


def rule_opset_range(ctx: _Context) -> list[Finding]:
    """``opset-range``: default-domain opset outside the target's accepted (error) or documented (warning) range."""
    opset = ctx.g.opset
    if opset is None:
        return []
    r = op_support.OPSET_RANGES[ctx.target]
    hard_max = math.inf if r.hard_max is None else r.hard_max
    hint = f"re-export with --opset in {r.documented_min}..{r.documented_max}"
    if not r.hard_min <= opset <= hard_max:
        upper = "" if r.hard_max is None else str(r.hard_max)
        return [Finding("opset-range", "error", f"opset {opset} is outside {r.hard_min}..{upper} accepted by "
                        f"{ctx.target} ({r.source})", [], hint)]
    if not r.documented_min <= opset <= r.documented_max:
        return [Finding("opset-range", "warning", f"opset {opset} is outside {r.documented_min}.."
                        f"{r.documented_max} documented for {ctx.target} ({r.source})", [], hint)]
    return []


def _looks_like_head_output(shape: Shape | None) -> bool:
    """[B, N, 5+nc] decoded, or raw [B, na*(5+nc), H, W] / [B, na, H, W, 5+nc]."""
    if not shape:
        return False
    ints = [d if isinstance(d, int) else -1 for d in shape]
    if len(ints) == 3:
        return ints[-1] >= 6
    if len(ints) == 4:
        return ints[1] > 0 and ints[1] % 3 == 0 and ints[1] // 3 >= 6
    if len(ints) == 5:
        return ints[-1] >= 6
    return False


def rule_multi_output_head(ctx: _Context) -> list[Finding]:
    """``multi-output-head`` (rknn): a detection graph with fewer than three head outputs."""
    g = ctx.g
    if not op_support.PROFILES[ctx.target].split_outputs or len(g.outputs) >= 3:
        return []
    if not any(_looks_like_head_output(g.shapes.get(o)) for o in g.outputs):
        return []
    if not any(n.op_type == "Conv" for n in g.nodes):
        return []
    nodes = [g.label(g.producer[o]) for o in g.outputs if o in g.producer]
    severity = "warning" if len(g.outputs) == 1 else "info"
    return [Finding("multi-output-head", severity, f"{len(g.outputs)} output(s) for a detection graph: RKNN "
                    "quantizes each output with one scale, three separate per-level head outputs keep "
                    "them apart", nodes, "export with --mode raw (three [B, na*(5+nc), H, W] outputs)")]


def rule_op_restriction(ctx: _Context) -> list[Finding]:
    """``op-restriction`` (rknn): batch-1-only ops in a graph whose batch is not 1; Resize modes."""
    if not op_support.PROFILES[ctx.target].batch1_ops:
        return []
    g = ctx.g
    findings = []
    batches = [g.shapes.get(v.name) for v in g.inputs]
    batch_not_1 = any(s and s[0] != 1 for s in batches)
    if batch_not_1:
        nodes = [g.label(n) for n in g.nodes if n.op_type in op_support.BATCH1_OPS]
        if nodes:
            ops = sorted({n.op_type for n in g.nodes if n.op_type in op_support.BATCH1_OPS})
            findings.append(Finding("op-restriction", "warning", f"{', '.join(ops)} support batch size 1 only on "
                                    "rknn-toolkit2, but the input batch is not 1", nodes,
                                    "export with batch 1; run batches as repeated calls"))
    bad_resize = [g.label(n) for n in g.nodes if n.op_type == "Resize"
                  and _as_str(_attr(n, "mode", "nearest")) not in ("nearest", "linear")]
    if bad_resize:
        findings.append(Finding("op-restriction", "error", "Resize mode other than nearest/linear",
                                bad_resize, "use nn.Upsample(mode='nearest') in the neck"))
    return findings


def _raw_head_outputs(g: _Graph) -> list[str]:
    """Graph outputs shaped like raw head levels ``[B, na*(5+nc), H, W]`` (in output order)."""
    return [o for o in g.outputs if len(g.shapes.get(o) or []) == 4 and _looks_like_head_output(g.shapes.get(o))]


def _produced_by_sigmoid(g: _Graph, name: str) -> bool:
    """Whether ``name`` is a Sigmoid's output (through shape-only ops: Reshape, Transpose, Identity)."""
    node = g.producer.get(name)
    while node is not None and node.op_type in ("Reshape", "Transpose", "Identity", "Squeeze", "Unsqueeze"):
        node = g.producer.get(node.input[0])
    return node is not None and node.op_type in ("Sigmoid", "HardSigmoid")


def _anchors_file_values(path: Path) -> list[float] | None:
    """The numbers of an anchors file (one per line), or None when it does not parse."""
    try:
        return [float(x) for x in path.read_text().split()]
    except (OSError, ValueError):
        return None


def rule_output_convention(ctx: _Context) -> list[Finding]:
    """``output-convention``: outputs that the target's standard clients would misread."""
    from .conventions import get_convention, head_default_convention

    name = head_default_convention(ctx.target, _meta_nkpt(ctx.meta))
    conv = get_convention(name) if name else None
    g = ctx.g
    if conv is None or not any(_looks_like_head_output(g.shapes.get(o)) for o in g.outputs):
        return []
    fix = f"export with --convention {conv.name} (the default of --target {ctx.target})"
    meta = ctx.meta
    heads = _raw_head_outputs(g)
    nodes = [g.label(g.producer[o]) for o in heads if o in g.producer]
    findings = []
    if conv.mode == "raw" and not heads:
        findings.append(Finding("output-convention", "warning", f"{conv.client} reads {conv.definition}; this graph's "
                                f"outputs are {', '.join(f'{o} {g.shapes.get(o)}' for o in g.outputs)}", [], fix))
    elif conv.mode != "raw" and heads:
        findings.append(Finding("output-convention", "info", f"{conv.client} reads {conv.definition}; this graph has "
                                f"{len(heads)} raw head output(s) (fine for yoloport's host decode)", nodes, fix))
    if conv.mode == "raw" and heads:
        probs = [_produced_by_sigmoid(g, o) for o in heads]
        if conv.sigmoid and not all(probs):
            findings.append(Finding("output-convention", "warning", f"{conv.client} expects probabilities (sigmoid applied) "
                                    f"but {sum(not p for p in probs)} head output(s) are logits: the client finds garbage "
                                    "boxes with scores far above 1", nodes, fix + " or add --sigmoid"))
        elif not conv.sigmoid and any(probs):
            findings.append(Finding("output-convention", "warning", f"{conv.client} expects logits (it applies the sigmoid "
                                    f"itself) but {sum(probs)} head output(s) already carry it", nodes, fix + " (no --sigmoid)"))
        cells = [int(g.shapes[o][2]) * int(g.shapes[o][3]) if all(isinstance(d, int) for d in g.shapes[o][2:]) else -1
                 for o in heads]
        if -1 not in cells and cells != sorted(cells, reverse=True):
            findings.append(Finding("output-convention", "warning", f"{conv.client} expects the levels in stride order "
                                    f"(8, 16, 32: largest grid first); the outputs' grids are {cells} cells", nodes,
                                    "export with yoloport (outputs out0..out2 in stride order)"))
    anchors = meta.get("anchors")
    if conv.anchors_file and ctx.model_dir is not None and isinstance(anchors, list):
        path = ctx.model_dir / conv.anchors_file
        if path.is_file():
            want = [float(v) for level in anchors for pair in level for v in pair]
            got = _anchors_file_values(path)
            if got is None or len(got) != len(want) or max(abs(a - b) for a, b in zip(got, want)) > 1e-3:
                findings.append(Finding("output-convention", "error", f"{path} holds anchors {got} but the model's are "
                                        f"{want}: the client would decode every box with the wrong anchors", [],
                                        f"rewrite {conv.anchors_file} from the graph's metadata (yoloport quantize writes it)"))
    return findings


def _meta_nkpt(meta: dict) -> int:
    """The keypoint count a graph's yoloport metadata records (0: none, or a foreign graph)."""
    try:
        return int(meta.get("nkpt") or (meta.get("head_spec") or {}).get("nkpt") or 0)
    except (TypeError, ValueError, AttributeError):
        return 0


def _as_str(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


RULES: dict[str, Rule] = {
    "unsupported-op": rule_unsupported_op,
    "scatternd": rule_scatternd,
    "rank5": rule_rank5,
    "concat-mixed-range": rule_concat_mixed_range,
    "sigmoid-multi-consumer": rule_sigmoid_multi_consumer,
    "dynamic-shape": rule_dynamic_shape,
    "opset-range": rule_opset_range,
    "multi-output-head": rule_multi_output_head,
    "op-restriction": rule_op_restriction,
    "landmark-scale": rule_landmark_scale,
    "output-convention": rule_output_convention,
}


# --------------------------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------------------------
def load_onnx(path: str | Path) -> onnx.ModelProto:
    """Load an ONNX model or raise :class:`YoloportError` (missing file, not ONNX)."""
    p = Path(path)
    if not p.is_file():
        raise YoloportError(f"no such ONNX file: {p}")
    try:
        model = onnx.load(str(p))
    except Exception as e:  # noqa: BLE001 - protobuf raises several types
        raise YoloportError(f"{p} is not a readable ONNX model ({type(e).__name__})") from None
    if model.ir_version <= 0 or not model.graph.node or not model.opset_import:
        raise YoloportError(f"{p} is not an ONNX model (no graph or opset)")
    return model


def _severity_key(f: Finding) -> tuple[int, str]:
    return SEVERITIES.index(f.severity), f.rule_id


def lint_model(
    model: ModelLike,
    target: str,
    sample_input: SampleLike = None,
    rules: Sequence[str] | None = None,
    model_dir: str | Path | None = None,
) -> LintReport:
    """Check ``model`` (ModelProto or path) against ``target``'s rules.

    Args:
        model: ONNX model or path to one.
        target: one of ``rknn``, ``mlu``, ``onnxruntime``, ``openvino``.
        sample_input: optional input (``[B,3,H,W]`` or ``[3,H,W]`` float32, or name->array) that turns
            on the measured ``concat-mixed-range`` check (onnxruntime).
        rules: subset of rule ids to run (default: all of :data:`RULES`).
        model_dir: the folder the graph's client files (anchors file) are checked in (default: the
            folder of ``model`` when it is a path).

    Returns:
        A :class:`LintReport`, findings sorted errors first.
    """
    if target not in TARGETS:
        raise YoloportError(f"unknown lint target {target!r}; choose from {', '.join(TARGETS)}")
    name = "<model>"
    if isinstance(model, (str, Path)):
        name = str(model)
        model_dir = Path(model).parent if model_dir is None else model_dir
        model = load_onnx(model)
    elif model.graph.name:
        name = model.graph.name
    selected = list(RULES) if rules is None else list(rules)
    unknown = [r for r in selected if r not in RULES]
    if unknown:
        raise YoloportError(f"unknown lint rule(s): {', '.join(unknown)}; known: {', '.join(RULES)}")
    ctx = _Context(_Graph(_infer_shapes(model)), target, sample_input, Path(model_dir) if model_dir else None)
    findings = [f for r in selected for f in RULES[r](ctx)]
    return LintReport(target, name, ctx.g.opset, sorted(findings, key=_severity_key))


def check_or_raise(
    model: ModelLike, target: str, force: bool = False, sample_input: SampleLike = None
) -> LintReport:
    """Lint ``model`` for ``target``; raise :class:`YoloportError` listing the errors unless ``force``.

    With ``force`` the report is returned even when it has errors (the caller prints them).
    """
    report = lint_model(model, target, sample_input=sample_input)
    if report.errors and not force:
        parts = [f"{f.rule_id} [{_short_nodes(f.nodes, 2)}]: {f.hint}" for f in report.errors]
        raise YoloportError(
            f"graph fails the {target} lint ({len(report.errors)} error(s)): " + "; ".join(parts)
            + " (run `yoloport lint` for details, or pass --force)"
        )
    return report
