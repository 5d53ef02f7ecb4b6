"""ONNX Runtime int8 artifacts side by side: the op counts of the graph ORT actually runs (its optimised
model: every quantized conv should be a QLinearConv) and one-thread inference time, round-robin
(:func:`yoloport.analysis.bench.time_interleaved`: each round runs every artifact once).

    python benchmarks/bench_ort_fusion_speed.py minmax=runs/.../model.onnxruntime.int8.onnx grids=runs/.../model.onnxruntime.int8.onnx

Timings on a shared machine are noisy: compare ``min_cpu_ms`` (CPU time of the call itself) and read the
load printed beside it. Numbers, not asserts: never a test.
"""
from __future__ import annotations

import argparse
import collections
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def session(path, threads: int, optimized_out=None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if optimized_out:
        so.optimized_model_filepath = str(optimized_out)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def fused_op_counts(path) -> dict[str, int]:
    """op type -> count in ORT's optimised graph of ``path`` (what the CPU provider runs)."""
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "optimized.onnx"
        session(path, 1, out)
        return dict(collections.Counter(n.op_type for n in onnx.load(str(out)).graph.node))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("artifacts", nargs="+", help="label=path.onnx")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=12)
    p.add_argument("--warmup", type=int, default=3)
    a = p.parse_args(argv)

    import numpy as np

    from yoloport.analysis.bench import time_interleaved

    arts = dict(s.split("=", 1) for s in a.artifacts)
    for label, path in arts.items():
        counts = fused_op_counts(path)
        print(f"{label}: QLinearConv {counts.get('QLinearConv', 0)}, float Conv {counts.get('Conv', 0)}; {dict(sorted(counts.items()))}")
    sessions = {label: session(path, a.threads) for label, path in arts.items()}
    shape = [d if isinstance(d, int) else 1 for d in next(iter(sessions.values())).get_inputs()[0].shape]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    calls = {label: (lambda s=s: s.run(None, {s.get_inputs()[0].name: x})) for label, s in sessions.items()}
    res = time_interleaved(calls, warmup=a.warmup, repeat=a.repeat, threads=a.threads)
    print(f"threads {a.threads}, {a.repeat} rounds round-robin; load {res['load_before']} -> {res['load_after']}, "
          f"other processes' CPU share {res['other_cpu_share']}")
    for label, r in res["results"].items():
        print(f"{label:<12} min {r['min_ms']:7.1f} ms  median {r['median_ms']:7.1f} ms  "
              f"min_cpu {r['min_cpu_ms']:7.1f} ms  median_cpu {r['median_cpu_ms']:7.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
