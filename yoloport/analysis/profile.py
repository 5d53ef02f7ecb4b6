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
  (:data:`OV_LAYER_TYPES`, e.g. ``Convolution -> Conv``, ``Interpolate -> Resize``,
  ``FakeQuantize -> FakeQuantize (int8)``, ``Subgraph`` = elementwise ops fused by the CPU plugin's
  snippets, ``Reorder`` = layout conversions the plugin inserted); the raw type stays in the per-node
  detail.
- **RKNN**: ``RKNN.eval_perf`` after ``init_runtime(target=..., perf_debug=True)``, which needs a
  connected board: the simulator has no timings.

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

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import YoloportError
from .tables import fmt_float, fmt_pct, format_table

# ONNX Runtime op names -> layer type (others are kept): fusions with a plain meaning.
ORT_LAYER_TYPES = {
    "QuickGelu": "SiLU",  # ORT fuses x * sigmoid(x) into QuickGelu(alpha=1)
    "ReorderInput": "Reorder (layout)",
    "ReorderOutput": "Reorder (layout)",
    "Upsample": "Resize",
}
# OpenVINO CPU plugin node types -> layer type (others are kept).
OV_LAYER_TYPES = {
    "Convolution": "Conv",
    "GroupConvolution": "Conv",
    "Deconvolution": "ConvTranspose",
    "FullyConnected": "Gemm",
    "Interpolate": "Resize",
    "Pooling": "MaxPool",
    "StridedSlice": "Slice",
    "Multiply": "Mul",
    "Subtract": "Sub",
    "Divide": "Div",
    "SwishCPU": "SiLU",
    "Swish": "SiLU",
    "Convert": "Cast",
    "FakeQuantize": "FakeQuantize (int8)",
    "Subgraph": "Subgraph (fused elementwise)",
    "Reorder": "Reorder (layout)",
}
CONV_TYPES = {"Conv", "QLinearConv", "ConvInteger", "FusedConv", "NhwcFusedConv", "ConvTranspose"}
# ops of a space-to-depth stem before the first convolution (Focus: Slice + Concat; ORT's rewrite of it:
# SpaceToDepth + Gather); a stem needs one of STEM_ANCHORS. Transposes/Reorders there are layout changes.
STEM_TYPES = {"Slice", "Concat", "SpaceToDepth", "Gather", "Split"}
STEM_ANCHORS = {"Slice", "SpaceToDepth", "Split"}
FOCUS_SUFFIX = " (Focus)"
ORT_OPT_LEVELS = ("all", "extended", "basic", "none")
_OV_SKIP_TYPES = {"Parameter", "Result", "Constant", "Input", "Output"}


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


def mean_node_times(runs: list[list[tuple]]) -> list[tuple]:
    """Per-run lists of ``(name, runtime_type, kernel, us)`` in execution order -> one list with the
    mean time of each node over the runs (a node missing from a run counts 0 there)."""
    if not runs:
        return []
    order: dict[tuple, int] = {}
    sums: dict[tuple, float] = {}
    for run in runs:
        for name, rtype, kernel, us in run:
            key = (name, rtype, kernel)
            order.setdefault(key, len(order))
            sums[key] = sums.get(key, 0.0) + float(us)
    return [(k[0], k[1], k[2], sums[k] / len(runs)) for k in sorted(order, key=order.get)]


# ----------------------------------------------------------------------------- ONNX Runtime


def parse_ort_trace(events: list[dict], skip_runs: int = 0) -> tuple[list[list[tuple]], list[float]]:
    """ORT profiler events -> (per run: ``[(node, op_name, provider, dur_us)]`` in execution order,
    per run: wall ``model_run`` duration in us). The first ``skip_runs`` runs (warm-up) are dropped.
    A node event belongs to the ``model_run`` whose time span contains it."""
    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"), key=lambda e: e["ts"])
    kernels = sorted(
        (e for e in events if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")), key=lambda e: e["ts"]
    )
    per_run: list[list[tuple]] = [[] for _ in runs]
    j = 0
    for e in kernels:
        while j < len(runs) and e["ts"] > runs[j]["ts"] + runs[j]["dur"]:
            j += 1
        if j == len(runs):
            break
        if e["ts"] < runs[j]["ts"]:
            continue
        args = e.get("args", {})
        name = str(e["name"])[: -len("_kernel_time")]
        per_run[j].append((name, str(args.get("op_name", "?")), str(args.get("provider", "")), float(e.get("dur", 0))))
    walls = [float(r["dur"]) for r in runs]
    return per_run[skip_runs:], walls[skip_runs:]


def ort_nodes(per_node: list[tuple]) -> list[NodeTime]:
    """``(name, op_name, provider, us)`` -> :class:`NodeTime` with ORT's layer-type mapping and the
    Focus stem marked."""
    nodes = [NodeTime(name, ORT_LAYER_TYPES.get(op, op), op, us, kernel) for name, op, kernel, us in per_node]
    return mark_focus_stem(nodes)


def profile_onnxruntime(onnx_path, images: np.ndarray, runs: int = 10, threads: int | None = None, warmup: int = 3,
                        opt_level: str = "all") -> ProfileTable:
    """Per-node times of ``onnx_path`` on ONNX Runtime's CPU provider over ``runs`` inferences of
    ``images`` (float32 ``[B,3,H,W]`` matching the graph) after ``warmup`` ones."""
    import onnxruntime as ort

    _check_runs(runs, warmup)
    levels = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }
    if opt_level not in levels:
        raise YoloportError(f"--opt-level must be one of {', '.join(ORT_OPT_LEVELS)}, got {opt_level!r}")
    with tempfile.TemporaryDirectory(prefix="yoloport-ortprof-") as tmp:
        so = ort.SessionOptions()
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(tmp, "ort")
        so.graph_optimization_level = levels[opt_level]
        if threads:
            so.intra_op_num_threads = int(threads)
            so.inter_op_num_threads = 1
        try:
            sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise YoloportError(f"onnxruntime cannot load {onnx_path}: {str(e).splitlines()[0]}") from None
        feed = {sess.get_inputs()[0].name: _check_images(images, sess.get_inputs()[0].shape)}
        for _ in range(warmup + runs):
            sess.run(None, feed)
        trace = sess.end_profiling()
        events = json.loads(Path(trace).read_text())
    per_run, walls = parse_ort_trace(events, skip_runs=warmup)
    nodes = ort_nodes(mean_node_times(per_run))
    notes = [f"graph optimisation level {opt_level!r} (the ORT runner uses 'all'); QuickGelu is ORT's fused x*sigmoid(x) (SiLU)"]
    if any(n.focus and n.layer == "SpaceToDepth" for n in nodes):
        notes.append("ORT's optimiser rewrote the Focus slices into SpaceToDepth + Gather (see them with --opt-level none)")
    return ProfileTable("onnxruntime", nodes, len(per_run), warmup, threads, float(np.mean(walls)) if walls else None,
                        str(onnx_path), notes)


# ----------------------------------------------------------------------------- OpenVINO


def ov_nodes(infos: list[tuple]) -> list[NodeTime]:
    """``(name, node_type, exec_type, us)`` of executed nodes -> :class:`NodeTime` with the OpenVINO
    layer-type mapping and the Focus stem marked (``Reorder`` layout nodes never count as stem)."""
    nodes = [NodeTime(name, OV_LAYER_TYPES.get(t, t), t, us, kernel) for name, t, kernel, us in infos]
    return mark_focus_stem(nodes)


def _ov_executed(profiling_info) -> list[tuple]:
    """OpenVINO ``ProfilingInfo`` list -> ``(name, node_type, exec_type, us)`` of the nodes that ran."""
    out = []
    for p in profiling_info:
        if str(p.status).split(".")[-1] != "EXECUTED" or p.node_type in _OV_SKIP_TYPES:
            continue
        out.append((p.node_name, p.node_type, p.exec_type, p.real_time.total_seconds() * 1e6))
    return out


def profile_openvino(model_path, images: np.ndarray, runs: int = 10, threads: int | None = None, warmup: int = 3,
                     inference_precision: str = "f32") -> ProfileTable:
    """Per-node times of an ONNX or IR (``.xml``) model on OpenVINO's CPU plugin with ``PERF_COUNT``.

    Compiled with :func:`yoloport.backends.openvino_backend.compile_config` (the runner's settings:
    explicit ``INFERENCE_PRECISION_HINT``, ``PERFORMANCE_HINT=LATENCY``) plus ``PERF_COUNT``."""
    from ..backends import openvino_backend as ovb

    _check_runs(runs, warmup)
    try:
        model = ovb.core().read_model(str(model_path))
        config = {**ovb.compile_config(inference_precision, threads), "PERF_COUNT": True}
        compiled = ovb.core().compile_model(model, "CPU", config)
    except RuntimeError as e:
        raise YoloportError(f"openvino cannot load {model_path}: {str(e).splitlines()[0]}") from None
    request = compiled.create_infer_request()
    x = _check_images(images, [d.get_length() if d.is_static else None for d in compiled.inputs[0].get_partial_shape()])
    per_run, walls = [], []
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        request.infer({0: x})
        dt = (time.perf_counter() - t0) * 1e6
        if i >= warmup:
            walls.append(dt)
            per_run.append(_ov_executed(request.profiling_info))
    nodes = ov_nodes(mean_node_times(per_run))
    notes = [f"INFERENCE_PRECISION_HINT {inference_precision}; OpenVINO types mapped to ONNX names where equal "
             "(Convolution->Conv, Interpolate->Resize, SwishCPU->SiLU); Subgraph = elementwise ops fused by the CPU plugin, "
             "Reorder = layout conversions it inserted; nodes fused into others (NOT_RUN) are left out"]
    return ProfileTable("openvino", nodes, runs, warmup, threads, float(np.mean(walls)), str(model_path), notes)


# ----------------------------------------------------------------------------- RKNN


def parse_rknn_perf(text: str) -> list[tuple]:
    """rknn-toolkit2's ``eval_perf`` per-layer table (``perf_debug=True``) -> ``(name, op_type, target,
    us)``. Columns are found from the header line (``OpType``, ``Time(us)``/``TimeCost(us)``,
    ``FullName`` or ``Name``); lines that do not parse are skipped."""
    rows, cols = [], None
    for line in str(text).splitlines():
        parts = line.split()
        if not parts:
            continue
        if "OpType" in parts:
            cols = {c: i for i, c in enumerate(parts)}
            continue
        if cols is None or not parts[0].isdigit():
            continue
        t_col = next((cols[c] for c in cols if c.lower().startswith(("time", "timecost"))), None)
        name_col = cols.get("FullName", cols.get("Name"))
        try:
            op = parts[cols["OpType"]]
            us = float(parts[t_col]) if t_col is not None else float("nan")
        except (IndexError, ValueError):
            continue
        name = parts[name_col] if name_col is not None and name_col < len(parts) else f"{op}_{parts[0]}"
        target = parts[cols["Target"]] if "Target" in cols and cols["Target"] < len(parts) else ""
        rows.append((name, op, target, us))
    return rows


def profile_rknn(artifact, target: str | None = None, device_id: str | None = None) -> ProfileTable:
    """Per-layer times from ``RKNN.eval_perf`` on a connected board (``target='rk3588'``, ...).

    The simulator has no NPU timers: without ``target`` this is a YoloportError saying so."""
    if not target:
        raise YoloportError(
            "rknn profiling reads the NPU's own timers (RKNN.eval_perf) and needs a connected board: "
            "no board is connected here (the toolkit's simulator has no timings); connect one over adb and pass --target rk3588"
        )
    from ..backends import rknn_backend as rb

    artifact = Path(artifact)
    rb.read_sidecar(artifact, expect_backend="rknn")
    RKNN = rb._import_rknn()
    log = rb.ToolkitLog()
    with rb.quiet(log):
        rk = RKNN(verbose=False)
    try:
        rb.call("load_rknn", rk.load_rknn, str(artifact), log=log)
        rb.call("init_runtime", rk.init_runtime, log=log, target=rb.check_platform(target), device_id=device_id, perf_debug=True)
        with rb.quiet(log):
            res = rk.eval_perf(is_print=False)
    finally:
        with rb.quiet(log):
            rk.release()
    text = res if isinstance(res, str) else str(res)
    nodes = [NodeTime(n, op, op, us, tgt) for n, op, tgt, us in parse_rknn_perf(text)]
    if not nodes:
        raise YoloportError("RKNN.eval_perf returned no per-layer table (is the runtime recent enough for perf_debug?)")
    return ProfileTable("rknn", mark_focus_stem(nodes), 1, 0, None, None, str(artifact), [f"board {target}, RKNN.eval_perf"])


# ----------------------------------------------------------------------------- helpers


def _check_runs(runs: int, warmup: int) -> None:
    if int(runs) < 1 or int(warmup) < 0:
        raise YoloportError(f"--runs must be >= 1 and --warmup >= 0 (got {runs}, {warmup})")


def _check_images(images: np.ndarray, shape) -> np.ndarray:
    """float32 contiguous batch whose shape fits the graph input's static dims."""
    x = np.ascontiguousarray(images, dtype=np.float32)
    dims = list(shape)
    if x.ndim != len(dims) or any(isinstance(d, int) and d != s for d, s in zip(dims, x.shape)):
        raise YoloportError(f"the model takes inputs of shape {dims}, got {list(x.shape)}")
    return x


def synthetic_images(batch: int, img_hw, seed: int = 0) -> np.ndarray:
    """A float32 ``[batch, 3, H, W]`` batch of uniform noise in [0, 1] (timing input)."""
    return np.random.default_rng(seed).random((int(batch), 3, int(img_hw[0]), int(img_hw[1])), dtype=np.float32)
