"""How close int8 yolov5s gets to the machine's int8 limit, and which ONNX Runtime quantization gets closest.

In one run (same threads for everything):

1. **Ceilings**, measured here: an int8 GEMM (ONNX Runtime ``MatMulInteger``, uint8 x int8 weights,
   2048^3) and an fp32 GEMM (``torch.mm``, 2048^3), in GMAC/s (fastest call), alone first and then again
   inside every round-robin below, so each % of ceiling divides two figures taken under the same load.
2. **The model's work**: multiply-accumulates of yolov5s v5.0 at 640x640, counted from the fp32 ONNX graph
   (every Conv: output elements x input channels per group x kernel area; about 8.5 GMAC).
3. **ONNX Runtime int8 variants**, each made with ``onnxruntime.quantization.quantize_static`` directly
   (MinMax calibration on ``--calib-n`` images of the fixtures' calib2017 pool through yoloport's one
   preprocessing path; nothing of the backend is used beyond the export):

   - ``qdq-pc``: QDQ, per-channel weights, U8S8, every op type ORT quantizes (Conv, Sigmoid, Mul, Add,
     Concat, MaxPool, Resize: SiLU's Sigmoid and Mul get Q/DQ pairs of their own)
   - ``qdq-pc-head-fp32``: the same with the Detect head's three output convolutions left in float (the
     backend's default ``head_fp32: convs``)
   - ``qdq-pc-quickgelu``: ``qdq-pc`` with each SiLU as one QuickGelu between the conv's and the Mul's grids
     (the backend's ``silu_op: quickgelu``)
   - ``qdq-pt``: the same as ``qdq-pc``, per-tensor weights
   - ``qdq-pc-silu-float``: QDQ per-channel, only Conv/Concat/MaxPool/Resize/Add quantized: SiLU runs in
     float between a DequantizeLinear and a QuantizeLinear
   - ``qdq-pc-conv``: QDQ per-channel, Conv only
   - ``qop-pc`` / ``qop-pt``: QOperator format (QLinearConv, QLinearMul, QLinearSigmoid...), per-channel /
     per-tensor
   - ``qdq-pc-s8s8``: QDQ per-channel, int8 activations (symmetric)

   then, on the fastest variant, graph optimisation level (basic / extended / all), 1 vs ``--threads``
   intra-op threads, the session config entries of :data:`ORT_SESSION_CONFIGS` (no spinning, dynamic
   blocks, denormals as zero) and the parallel executor (independent branches at once: 1 intra-op thread and
   ``--threads`` inter-op threads, or both at ``--threads``); with ``--openvino`` also the OpenVINO properties of :data:`OV_CONFIGS`
   (THROUGHPUT hint, one stream, no CPU pinning) on the int8 IR, each runtime's settings in a round-robin of their
   own (ONNX Runtime's spinning threads slow whatever runs after them). All variants and the fp32 graph are timed round-robin
   (:func:`yoloport.analysis.bench.time_interleaved`), batch 1, min and median.
4. Optionally (``--openvino``) OpenVINO fp32 and NNCF int8 through the backend, in the same rounds.

For each: min ms, achieved GMAC/s (model GMAC / min latency) and % of the int8 ceiling (fp32 graphs: %
of the fp32 ceiling). ``--batch16`` adds batch-16 throughput for the fastest ORT variant (and OpenVINO
int8 with ``--openvino``).

    python benchmarks/bench_int8_ceiling.py --threads 2 [--calib-n 16] [--repeat 15] [--openvino] [--json out.json]

Timings depend on the machine and its load (recorded in the output): on a shared machine read the
minimum, and the ratios between configurations, which the round-robin keeps comparable. On a busy machine
``--threads 1 --cpu-time`` compares CPU time per call (ceilings included), which other processes do not
lengthen; it measures one core, not the two-thread figures.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ALL_OPS = None  # quantize_static's default: every op type it knows
HEAD_FP32 = "head-fp32"  # marker: also keep the Detect head's convolutions (graph outputs) in float
QUICKGELU = "quickgelu"  # marker: then each SiLU as one QuickGelu (yoloport.backends.onnxruntime_silu_op)
VARIANTS = {  # name: (format, per_channel, activation type, op types to quantize[, HEAD_FP32 | QUICKGELU])
    "qdq-pc": ("QDQ", True, "QUInt8", ALL_OPS),
    "qdq-pc-head-fp32": ("QDQ", True, "QUInt8", ALL_OPS, HEAD_FP32),
    "qdq-pc-quickgelu": ("QDQ", True, "QUInt8", ALL_OPS, QUICKGELU),
    "qdq-pt": ("QDQ", False, "QUInt8", ALL_OPS),
    "qdq-pc-silu-float": ("QDQ", True, "QUInt8", ["Conv", "Concat", "MaxPool", "Resize", "Add"]),
    "qdq-pc-conv": ("QDQ", True, "QUInt8", ["Conv"]),
    "qop-pc": ("QOperator", True, "QUInt8", ALL_OPS),
    "qop-pt": ("QOperator", False, "QUInt8", ALL_OPS),
    "qdq-pc-s8s8": ("QDQ", True, "QInt8", ALL_OPS),
}
GEMM_N = 2048


# ----------------------------------------------------------------------------- ceilings


def int8_gemm_call(threads: int):
    """A call of ONNX Runtime ``MatMulInteger`` (uint8 [N, N] x int8 constant [N, N] -> int32), N = 2048."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.integers(-127, 128, (GEMM_N, GEMM_N), dtype=np.int8), "B")
    node = helper.make_node("MatMulInteger", ["A", "B"], ["Y"])
    graph = helper.make_graph([node], "gemm", [helper.make_tensor_value_info("A", TensorProto.UINT8, [GEMM_N, GEMM_N])],
                              [helper.make_tensor_value_info("Y", TensorProto.INT32, [GEMM_N, GEMM_N])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    a = rng.integers(0, 256, (GEMM_N, GEMM_N), dtype=np.uint8)
    return lambda: sess.run(None, {"A": a})


def fp32_gemm_call(threads: int):
    """A call of ``torch.mm`` on two float32 [2048, 2048] matrices (torch set to ``threads`` threads)."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.rand(GEMM_N, GEMM_N), torch.rand(GEMM_N, GEMM_N)
    return lambda: torch.mm(a, b)


def gmac_per_s(min_ms: float) -> float:
    """GMAC/s of one 2048^3 GEMM that took ``min_ms``."""
    return GEMM_N ** 3 / (min_ms / 1e3) / 1e9


def conv_gmac(onnx_path) -> float:
    """Multiply-accumulates of every Conv in the graph (batch 1), in GMAC, from inferred shapes."""
    import onnx
    from onnx import numpy_helper, shape_inference

    m = shape_inference.infer_shapes(onnx.load(str(onnx_path)))
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(m.graph.value_info) + list(m.graph.output) + list(m.graph.input)}
    weights = {t.name: numpy_helper.to_array(t).shape for t in m.graph.initializer}
    macs = 0
    for n in m.graph.node:
        if n.op_type != "Conv":
            continue
        out = shapes[n.output[0]]
        cout, cin_per_group, kh, kw = weights[n.input[1]]
        macs += int(np.prod(out[1:])) * cin_per_group * kh * kw  # out elements (batch 1) x MACs each
    return macs / 1e9


# ----------------------------------------------------------------------------- quantization variants


class _Reader:
    """``CalibrationDataReader`` over yoloport's calibration set, ``batch`` images per feed (a batch graph
    takes only full batches: a short last batch is dropped, a set smaller than one batch repeated)."""

    def __init__(self, calibration, input_name: str, batch: int = 1):
        self.calibration, self.input_name, self.batch = calibration, input_name, batch
        self.rewind()

    def get_next(self):
        x = next(self._it, None)
        if x is None or (len(x) < self.batch and self.fed):
            return None
        if len(x) < self.batch:
            x = np.concatenate([x] * -(-self.batch // len(x)), 0)[: self.batch]
        self.fed += 1
        return {self.input_name: x}

    def rewind(self):
        self._it, self.fed = iter(self.calibration.batches(self.batch)), 0


def quantize_variant(src: Path, out: Path, calibration, fmt: str, per_channel: bool, act: str, op_types,
                     marker: str | None = None, batch: int = 1) -> float:
    """``quantize_static`` with one variant's settings (graph of batch ``batch``; ``marker``: HEAD_FP32 or
    QUICKGELU); returns the seconds it took."""
    import onnx
    from onnxruntime import quantization as q

    graph = onnx.load(str(src), load_external_data=False).graph
    input_name = graph.input[0].name
    outputs = {o.name for o in graph.output}
    exclude = [n.name for n in graph.node if n.op_type == "Conv" and n.output[0] in outputs] if marker == HEAD_FP32 else None
    t0 = time.perf_counter()
    q.quantize_static(str(src), str(out), _Reader(calibration, input_name, batch),
                      quant_format=getattr(q.QuantFormat, fmt), per_channel=per_channel,
                      activation_type=getattr(q.QuantType, act), weight_type=q.QuantType.QInt8,
                      op_types_to_quantize=op_types, nodes_to_exclude=exclude, calibrate_method=q.CalibrationMethod.MinMax,
                      extra_options={"ActivationSymmetric": act == "QInt8", "WeightSymmetric": True})
    if marker == QUICKGELU:
        from yoloport.backends.onnxruntime_silu_op import fuse_silu_units

        m = onnx.load(str(out))
        fuse_silu_units(m)
        onnx.save(m, str(out))
    return time.perf_counter() - t0


ORT_SESSION_CONFIGS = {  # label: ONNX Runtime session config entries tried on the fastest variant
    "no spinning": {"session.intra_op.allow_spinning": "0"},
    "dynamic blocks": {"session.dynamic_block_base": "4"},
    "denormals as zero": {"session.set_denormal_as_zero": "1"},
}
OV_CONFIGS = {  # label: OpenVINO CPU properties tried on the int8 IR (besides the backend's LATENCY hint)
    "THROUGHPUT hint": {"hint": "THROUGHPUT"},
    "1 stream": {"streams": 1},
    "no pinning": {"ENABLE_CPU_PINNING": False},
}


def timed(calls: dict, warmup: int, repeat: int, threads: int, cpu_time: bool) -> dict:
    """:func:`yoloport.analysis.bench.time_interleaved`; with ``cpu_time`` every ``min_ms``/``median_ms`` is the
    call's CPU time instead (the wall figures kept as ``wall_min_ms``): with one thread, the work itself,
    which other processes on a busy machine do not lengthen."""
    from yoloport.analysis.bench import time_interleaved

    t = time_interleaved(calls, warmup=warmup, repeat=repeat, threads=threads)
    if cpu_time:
        for r in t["results"].values():
            r.update(wall_min_ms=r["min_ms"], wall_median_ms=r["median_ms"], min_ms=r["min_cpu_ms"], median_ms=r["median_cpu_ms"])
    return t


def ort_session(path, threads: int, level: str = "all", config: dict | None = None, inter_op: int = 0):
    """A call running ``path`` on ONNX Runtime's CPU provider with ``threads`` intra-op threads; ``inter_op`` > 0
    runs independent branches at once (the parallel executor, with that many inter-op threads)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = max(1, inter_op)
    if inter_op > 0:
        so.execution_mode = ort.ExecutionMode.ORT_PARALLEL
    for k, v in (config or {}).items():
        so.add_session_config_entry(k, v)
    so.graph_optimization_level = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                   "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                   "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[level]
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})


def ov_variant(runner, threads: int, config: dict):
    """The OpenVINO int8 IR of ``runner`` compiled again with ``config`` (``hint``/``streams`` as the backend
    takes them, other keys as CPU properties)."""
    from yoloport.backends import openvino_backend as ob

    cfg = dict(config)
    compiled = ob.core().compile_model(ob.core().read_model(str(runner.path)), "CPU",
                                       {**ob.compile_config("f32", threads, cfg.pop("streams", None), cfg.pop("hint", "LATENCY")), **cfg})
    request = compiled.create_infer_request()
    return lambda x: request.infer({0: x})


def op_histogram(path) -> dict:
    """Op types of a graph and how many of each (what the quantizer left where)."""
    import onnx

    hist: dict = {}
    for n in onnx.load(str(path)).graph.node:
        hist[n.op_type] = hist.get(n.op_type, 0) + 1
    return dict(sorted(hist.items(), key=lambda kv: -kv[1]))


# ----------------------------------------------------------------------------- main


def add_model_args(ap: argparse.ArgumentParser) -> None:
    """The options every ceiling benchmark takes: weights (default the fixtures' yolov5s v5.0), calibration
    images (calib2017) and their number, square size, threads, GEMM repeats."""
    from yoloport.fixtures import fixtures_dir

    fx = fixtures_dir()
    ap.add_argument("--weights", default=str(fx / "weights/yolov5s-v5.0.pt") if fx else None)
    ap.add_argument("--calib", default=str(fx / "coco-extra/images/calib2017") if fx else None)
    ap.add_argument("--calib-n", type=int, default=16)
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gemm-repeat", type=int, default=10)
    ap.add_argument("--focus-to-conv", dest="focus_to_conv", action=argparse.BooleanOptionalAction, default=None,
                    help="export a v5.0 Focus stem as its equivalent Conv (or not) for every runtime; default: as quantize "
                         "and port do for each backend (SPEC.focus_to_conv)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(ap)
    ap.add_argument("--repeat", type=int, default=15, help="timed round-robin rounds")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--openvino", action="store_true", help="also OpenVINO fp32 and NNCF int8 (backend), same rounds")
    ap.add_argument("--ov-head-fp32", nargs="*", default=[], metavar="HEAD_FP32",
                    help="with --openvino: also OpenVINO int8 built with each of these head_fp32 settings (e.g. tail convs), "
                         "same rounds: the speed cost of keeping the Detect convolutions float")
    ap.add_argument("--batch16", action="store_true", help="batch-16 throughput of the fastest ORT variant (and OV int8)")
    ap.add_argument("--profile", action="store_true",
                    help="per-op-type time of every ORT int8 variant (ONNX Runtime's profiler): where the gap to the ceiling goes")
    ap.add_argument("--work", help="keep the graphs here (default: a temporary folder)")
    ap.add_argument("--cpu-time", action="store_true",
                    help="compare CPU time per call instead of wall time (needs --threads 1): figures that hold on a busy machine")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    if a.cpu_time and a.threads != 1:
        print("--cpu-time needs --threads 1 (the CPU time of several threads counts their waiting too)", file=sys.stderr)
        return 2
    if not a.weights or not Path(a.weights).exists():
        print(f"weights {a.weights} not found (pass --weights)", file=sys.stderr)
        return 2

    from yoloport.analysis.bench import machine_info, runner_for_batch
    from yoloport.data.calibration import load_calibration
    from yoloport.data.letterbox import input_multiple
    from yoloport.deploy.export import export_onnx
    from yoloport.models import load_model

    from yoloport.backends.registry import get_spec

    hw = (a.size, a.size)
    t = a.threads
    ort_stem = get_spec("onnxruntime").focus_to_conv if a.focus_to_conv is None else a.focus_to_conv
    gemms = {"ceiling int8 GEMM": int8_gemm_call(t), "ceiling fp32 GEMM": fp32_gemm_call(t)}
    g = timed(gemms, 1, a.gemm_repeat, t, a.cpu_time)
    i8, f32 = (gmac_per_s(g["results"][k]["min_ms"]) for k in gemms)
    print(f"ceilings alone ({t} threads): int8 GEMM (ORT MatMulInteger {GEMM_N}^3) {i8:.1f} GMAC/s, fp32 GEMM (torch.mm) "
          f"{f32:.1f} GMAC/s, ratio {i8 / f32:.2f}; load average {g['load_before']['load1']} on {g['load_before']['cpus']} "
          f"CPUs", flush=True)
    model = load_model(a.weights)
    calibration = load_calibration(a.calib, a.calib_n, hw, input_multiple(model.stride), warn=lambda m: print(f"warning: {m}"))
    doc = {"machine": machine_info(), "threads": t, "ceilings_alone_gmac_s": {"int8": i8, "fp32": f32}, "variants": {}}
    with tempfile.TemporaryDirectory(prefix="yoloport-ceiling-") as tmp:
        work = Path(a.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        fp32_path, _ = export_onnx(model, work / "fp32.onnx", hw, "raw", opset=13, overwrite=True, focus_to_conv=ort_stem)  # per-channel QDQ: opset 13
        gmac = conv_gmac(fp32_path)
        doc["model_gmac"] = gmac
        print(f"{Path(a.weights).stem} {a.size}x{a.size}: {gmac:.2f} GMAC per image (Conv layers)", flush=True)
        from onnxruntime import quantization as q

        prep = work / "prep.onnx"
        q.quant_pre_process(str(fp32_path), str(prep), skip_symbolic_shape=True)
        calls, kinds = {"ort-fp32": ort_session(fp32_path, t)}, {"ort-fp32": "fp32"}
        for name in a.variants:
            out = work / f"{name}.onnx"
            secs = quantize_variant(prep, out, calibration, *VARIANTS[name])
            calls[name], kinds[name] = ort_session(out, t), "int8"
            doc["variants"][name] = {"settings": dict(zip(("format", "per_channel", "activation", "op_types", "keep"), VARIANTS[name])),
                                     "quantize_s": round(secs, 1), "ops": op_histogram(out)}
            print(f"  quantized {name} in {secs:.0f} s", flush=True)
        ov = {}
        stem = {"focus_to_conv": a.focus_to_conv}
        if a.openvino:
            for label, int8 in (("ov-fp32", False), ("ov-int8", True)):
                r = runner_for_batch("openvino", model, hw, 1, work / label, t, calibration if int8 else None, export_options=stem)
                ov[label] = r
                calls[label], kinds[label] = r, "int8" if int8 else "fp32"
            for head in a.ov_head_fp32:
                label = f"ov-int8 head_fp32={head}"
                calls[label] = runner_for_batch("openvino", model, hw, 1, work / label.replace("=", "-"), t, calibration,
                                                qconfig={"head_fp32": head}, export_options=stem)
                kinds[label] = "int8"
        x = next(iter(calibration))  # [1, 3, H, W]: a real image (only the speed is measured here)
        rounds = {**{k: (lambda f=f: f(x)) for k, f in calls.items()}, **gemms}  # the ceilings in the same rounds
        timing = timed(rounds, 2, a.repeat, t, a.cpu_time)
        i8, f32 = (gmac_per_s(timing["results"][k]["min_ms"]) for k in gemms)
        doc["ceilings_gmac_s"] = {"int8": i8, "fp32": f32}
        rows = _rows({k: v for k, v in timing["results"].items() if k not in gemms}, kinds, gmac, i8, f32)
        print()
        _print_rows(rows, f"batch 1, round-robin with the GEMMs (in-round ceilings: int8 {i8:.1f}, fp32 {f32:.1f} GMAC/s)")
        print(f"  (load average {timing['load_before']['load1']} -> {timing['load_after']['load1']}; other processes used "
              f"{timing['other_cpu_share']} of the CPUs)", flush=True)
        best = min((r for r in rows if r["config"].startswith(("qdq", "qop"))), key=lambda r: r["min_ms"], default=None)
        extra = {}
        if best:
            path = work / f"{best['config']}.onnx"
            extra_calls = {f"{best['config']} opt={lvl}": ort_session(path, t, lvl) for lvl in ("basic", "extended", "all")}
            extra_calls[f"{best['config']} 1 thread"] = ort_session(path, 1)
            extra_calls[f"{best['config']} baseline 'all'"] = calls[best["config"]]
            for label, cfg in ORT_SESSION_CONFIGS.items():
                extra_calls[f"{best['config']} {label}"] = ort_session(path, t, config=cfg)
            if t > 1:  # C3's two branches and the SPP pools are independent: run them at once
                extra_calls[f"{best['config']} parallel executor, 1+{t}"] = ort_session(path, 1, inter_op=t)
                extra_calls[f"{best['config']} parallel executor, {t}+{t}"] = ort_session(path, t, inter_op=t)
            ov_calls = {}
            if a.openvino:
                ov_calls["ov-int8 baseline (LATENCY hint)"] = ov["ov-int8"]
                for label, cfg in OV_CONFIGS.items():
                    ov_calls[f"ov-int8 {label}"] = ov_variant(ov["ov-int8"], t, cfg)
            extra = {}
            # one round-robin per runtime: ORT's intra-op threads spin after a run and slow whatever runs next
            for runtime, group in (("onnxruntime", extra_calls), ("openvino", ov_calls)):
                if not group:
                    continue
                et = timed({**{k: (lambda f=f: f(x)) for k, f in group.items()}, **gemms}, 2, a.repeat, t, a.cpu_time)
                e_i8, e_f32 = (gmac_per_s(et["results"][k]["min_ms"]) for k in gemms)
                extra[runtime] = {"rows": _rows({k: v for k, v in et["results"].items() if k not in gemms},
                                                {k: "int8" for k in group}, gmac, e_i8, e_f32),
                                  "ceilings_gmac_s": {"int8": e_i8, "fp32": e_f32},
                                  "load": et["load_before"], "other_cpu_share": et["other_cpu_share"]}
                c = extra[runtime]["ceilings_gmac_s"]
                print()
                _print_rows(extra[runtime]["rows"], f"{runtime} session settings{' on ' + best['config'] if runtime == 'onnxruntime' else ''} "
                                                    f"(in-round ceilings: int8 {c['int8']:.1f}, fp32 {c['fp32']:.1f} GMAC/s)")
                print(flush=True)
        if a.profile:
            doc["profiles"] = profile_variants(work, [k for k in calls if kinds[k] == "int8" and not k.startswith("ov")], x, t)
        b16 = {}
        if a.batch16 and best:
            xb = np.repeat(x, 16, 0)
            b16_calls = {}
            b16_fp32, _ = export_onnx(model, work / "fp32-b16.onnx", hw, "raw", batch=16, opset=13, overwrite=True,
                                      focus_to_conv=ort_stem)
            prep16 = work / "prep-b16.onnx"
            q.quant_pre_process(str(b16_fp32), str(prep16), skip_symbolic_shape=True)
            b16_path = work / f"{best['config']}-b16.onnx"
            quantize_variant(prep16, b16_path, calibration, *VARIANTS[best["config"]], batch=16)
            b16_calls[f"{best['config']} b16"] = ort_session(b16_path, t)
            if a.openvino:
                b16_calls["ov-int8 b16"] = runner_for_batch("openvino", model, hw, 16, work / "ov-int8-b16", t, calibration,
                                                                  export_options=stem)
            bt = timed({**{k: (lambda f=f: f(xb)) for k, f in b16_calls.items()}, **gemms}, 1, max(3, a.repeat // 3), t, a.cpu_time)
            b_i8 = gmac_per_s(bt["results"]["ceiling int8 GEMM"]["min_ms"])
            for k, r in bt["results"].items():
                if k in gemms:
                    continue
                b16[k] = {"min_ms": r["min_ms"], "images_per_s": 16e3 / r["min_ms"], "gmac_s": 16 * gmac / (r["min_ms"] / 1e3),
                          "pct_int8_ceiling": 100 * 16 * gmac / (r["min_ms"] / 1e3) / b_i8, "int8_ceiling_gmac_s": b_i8}
            for r in b16_calls.values():
                if hasattr(r, "close"):
                    r.close()
        for r in ov.values():
            r.close()
    doc.update(rows=rows, timing_load={"before": timing["load_before"], "after": timing["load_after"],
                                       "other_cpu_share": timing["other_cpu_share"]}, session_variants=extra, batch16=b16)
    if b16:
        print()
        for k, r in b16.items():
            print(f"{k:28s} {r['min_ms']:8.1f} ms/batch  {r['images_per_s']:6.1f} images/s  {r['gmac_s']:7.1f} GMAC/s  "
                  f"{r['pct_int8_ceiling']:5.1f}% of int8 ceiling")
    if a.json:
        Path(a.json).write_text(json.dumps(doc, indent=1, default=str))
        print(f"saved to {a.json}")
    return 0


def profile_variants(work: Path, names: list[str], x: np.ndarray, threads: int) -> dict:
    """Per-op-type milliseconds per inference of each ORT variant (top 6 printed), from ORT's profiler."""
    from yoloport.analysis.profile import profile_artifact

    out = {}
    for name in names:
        table = profile_artifact("onnxruntime", work / f"{name}.onnx", x, runs=5, threads=threads, warmup=2)
        out[name] = {r.layer: round(r.time_us / 1e3, 2) for r in table.rows}
        top = ", ".join(f"{k} {v:.1f}" for k, v in list(out[name].items())[:6])
        print(f"profile {name}: {table.total / 1e3:.1f} ms in ops: {top} ms", flush=True)
    return out


def _rows(results: dict, kinds: dict, gmac: float, i8: float, f32: float) -> list[dict]:
    rows = []
    for k, r in results.items():
        rate = gmac / (r["min_ms"] / 1e3)
        ceiling = i8 if kinds[k] == "int8" else f32
        rows.append({"config": k, "precision": kinds[k], "min_ms": r["min_ms"], "median_ms": r["median_ms"],
                     "gmac_s": rate, "pct_of_ceiling": 100 * rate / ceiling,
                     "ceiling": "int8" if kinds[k] == "int8" else "fp32"})
    return rows


def _print_rows(rows: list[dict], title: str) -> None:
    print(f"{title}:")
    print(f"{'config':34s} {'min ms':>8} {'median ms':>10} {'GMAC/s':>8} {'% of ceiling':>14}")
    for r in sorted(rows, key=lambda r: r["min_ms"]):
        print(f"{r['config']:34s} {r['min_ms']:8.1f} {r['median_ms']:10.1f} {r['gmac_s']:8.1f} "
              f"{r['pct_of_ceiling']:8.1f}% {r['ceiling']}")


if __name__ == "__main__":
    raise SystemExit(main())
