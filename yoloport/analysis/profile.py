"""Time per operator type on a backend: the seed's CNRT table (``layer type | count | time (us) | ratio``).

Each runtime's own profiler is read, nothing is timed from the outside:

- **ONNX Runtime**: ``SessionOptions.enable_profiling``; :meth:`InferenceSession.end_profiling` writes
  a Chrome-trace JSON whose ``cat == "Node"`` events named ``<node>_kernel_time`` carry ``dur`` (us)
  and ``args.op_name``; ``cat == "Session"`` events named ``model_run`` delimit the runs. The session
  is built with the same graph optimisation level as the ORT runner (``all``), so the table shows the
  graph that really runs (fused ops have the fused op's type; ``--opt-level none`` shows the graph as
  exported).
- **OpenVINO**: ``PERF_COUNT`` on the compiled model; after each inference ``InferRequest.profiling_info``
  lists the executed graph's nodes (``node_type``, ``exec_type`` = kernel and precision,
  ``real_time``, ``status``). Nodes ``NOT_RUN``/``OPTIMIZED_OUT`` were fused into a neighbour and are
  left out. OpenVINO's node types are mapped to the ONNX names where the operation is the same
  (the OpenVINO backend's ``PROFILE_LAYER_TYPES``, e.g. ``Convolution -> Conv``, ``Interpolate -> Resize``,
  ``FakeQuantize -> FakeQuantize (int8)``, ``Subgraph`` = elementwise ops fused by the CPU plugin's
  snippets, ``Reorder`` = layout conversions the plugin inserted); the raw type stays in the per-node
  detail.
- **RKNN**: ``RKNN.eval_perf`` after ``init_runtime(target=..., perf_debug=True)``, which needs a
  connected board: the simulator has no timings.

Each backend that has a profiler (its spec's ``profiler``) reads it in its own ``profile_run``
(:class:`yoloport.backends.base.RuntimeProfile`); this module builds the table from it.

Times are averaged over ``runs`` inferences after ``warmup`` ones; a node's ``count`` is per
inference. ``total`` is the sum of the rows (so ratios sum to 1); the wall time of an inference is
reported beside it (the difference is the runtime's own overhead between kernels).

The Focus stem: the space-to-depth operations that run before the first convolution (the v5.0
``Focus`` layer's strided ``Slice`` nodes and their ``Concat``; what ORT's optimiser turns them into,
``SpaceToDepth`` + ``Gather``) are labelled ``<type> (Focus)`` so the stem's cost is its own row
(layout ``Transpose``/``Reorder`` nodes before the first convolution are not). A model converted with
``focus_to_conv`` has none.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..backends.base import mean_node_times  # noqa: F401 - part of this module's interface
from ..errors import YoloportError
from .tables import fmt_float, fmt_pct, format_table

CONV_TYPES = {"Conv", "QLinearConv", "ConvInteger", "FusedConv", "NhwcFusedConv", "ConvTranspose"}
# ops of a space-to-depth stem before the first convolution (Focus: Slice + Concat; ORT's rewrite of it:
# SpaceToDepth + Gather); a stem needs one of STEM_ANCHORS. Transposes/Reorders there are layout changes.
STEM_TYPES = {"Slice", "Concat", "SpaceToDepth", "Gather", "Split"}
STEM_ANCHORS = {"Slice", "SpaceToDepth", "Split"}
FOCUS_SUFFIX = " (Focus)"


@dataclass
class NodeTime:
    """One executed node: ``layer`` (the table's layer type), ``runtime_type`` (the runtime's own op
    type), ``kernel`` (ORT provider / OpenVINO exec type), mean ``time_us`` per inference."""

    name: str
    layer: str
    runtime_type: str
    time_us: float
    kernel: str = ""
    focus: bool = False

    @property
    def label(self) -> str:
        return self.layer + (FOCUS_SUFFIX if self.focus else "")


@dataclass
class ProfileRow:
    """One line of the table: a layer type, how many nodes of it run per inference, their time."""

    layer: str
    count: int
    time_us: float
    ratio: float


@dataclass
class ProfileTable:
    """Per-node times of one model on one backend, aggregated by layer type on demand."""

    backend: str
    nodes: list[NodeTime]
    runs: int
    warmup: int = 0
    threads: int | None = None
    wall_us: float | None = None
    source: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def rows(self) -> list[ProfileRow]:
        """Layer types sorted by time (largest first), ratios of :attr:`total`."""
        return aggregate(self.nodes)

    @property
    def total(self) -> float:
        """Sum of the node times (us per inference)."""
        return float(sum(n.time_us for n in self.nodes))

    def row(self, label: str) -> ProfileRow | None:
        return next((r for r in self.rows if r.layer == label), None)

    def to_dict(self, per_node: bool = False) -> dict:
        d = {
            "backend": self.backend,
            "source": self.source,
            "runs": self.runs,
            "warmup": self.warmup,
            "threads": self.threads,
            "total_us": self.total,
            "wall_us": self.wall_us,
            "rows": [asdict(r) for r in self.rows],
            "notes": list(self.notes),
        }
        if per_node:
            d["nodes"] = [{**asdict(n), "label": n.label} for n in self.nodes]
        return d

    def format(self, per_node: bool = False, style: str = "text", top: int | None = None) -> str:
        """The CNRT-style table (and the per-node table when ``per_node``), with a total row."""
        rows = self.rows
        body = [[r.layer, r.count, fmt_float(r.time_us), fmt_pct(r.ratio)] for r in rows]
        foot = [["total", sum(r.count for r in rows), fmt_float(self.total), fmt_pct(1.0 if rows else None)]]
        out = [format_table(["layer type", "count", "time (us)", "ratio"], body, style=style, footer=foot)]
        if self.wall_us is not None:
            out.append(f"wall time per inference: {self.wall_us:.1f} us (kernels {self.total:.1f} us); "
                       f"{self.backend}, mean of {self.runs} runs after {self.warmup} warm-up, threads {self.threads or 'default'}")
        if per_node:
            nodes = sorted(self.nodes, key=lambda n: -n.time_us)[:top]
            tot = self.total or 1.0
            out.append("")
            out.append(format_table(
                ["node", "layer type", "runtime op", "kernel", "time (us)", "ratio"],
                [[n.name, n.label, n.runtime_type, n.kernel, fmt_float(n.time_us), fmt_pct(n.time_us / tot)] for n in nodes],
                align="llllrr", style=style))
        out += [f"note: {m}" for m in self.notes]
        return "\n".join(out)


def aggregate(nodes: list[NodeTime]) -> list[ProfileRow]:
    """Nodes -> one row per label (layer type, ``(Focus)`` marked), sorted by time, ratio of the sum."""
    acc: dict[str, list] = {}
    for n in nodes:
        a = acc.setdefault(n.label, [0, 0.0])
        a[0] += 1
        a[1] += n.time_us
    total = sum(a[1] for a in acc.values())
    rows = [ProfileRow(k, c, t, (t / total) if total > 0 else 0.0) for k, (c, t) in acc.items()]
    return sorted(rows, key=lambda r: (-r.time_us, r.layer))


def mark_focus_stem(nodes: list[NodeTime]) -> list[NodeTime]:
    """Flag the space-to-depth nodes (:data:`STEM_TYPES`) executed before the first convolution: the
    Focus stem's slices and concat (or what the runtime fused them into), provided one of them slices
    (:data:`STEM_ANCHORS`). ``nodes`` in execution order; returns ``nodes``."""
    stem = []
    for n in nodes:
        if n.layer in CONV_TYPES:
            break
        if n.layer in STEM_TYPES:
            stem.append(n)
    if any(n.layer in STEM_ANCHORS for n in stem):
        for n in stem:
            n.focus = True
    return nodes








# ----------------------------------------------------------------------------- any backend


def profile_artifact(backend: str, artifact, images: np.ndarray | None = None, runs: int = 10, threads: int | None = None,
                     warmup: int = 3, **options) -> ProfileTable:
    """Per-node times of ``artifact`` (or a graph the backend reads) from ``backend``'s own profiler over
    ``runs`` inferences of ``images`` after ``warmup``; ``options`` are the backend's (``opt_level`` for
    ONNX Runtime, ``inference_precision`` for OpenVINO, ``target``/``device_id`` for a RKNN board)."""
    from ..backends.registry import get_backend, get_spec

    spec = get_spec(backend)
    if not spec.profiler:
        raise YoloportError(f"{spec.name} has no profiler to read")
    res = get_backend(spec.name).profile_run(artifact, images, runs=runs, threads=threads, warmup=warmup, **options)
    nodes = mark_focus_stem([NodeTime(*n) for n in res.nodes])
    return ProfileTable(spec.name, nodes, res.runs, res.warmup, threads, res.wall_us, str(res.source), list(res.notes))


def synthetic_images(batch: int, img_hw, seed: int = 0) -> np.ndarray:
    """A float32 ``[batch, 3, H, W]`` batch of uniform noise in [0, 1] (timing input)."""
    return np.random.default_rng(seed).random((int(batch), 3, int(img_hw[0]), int(img_hw[1])), dtype=np.float32)
