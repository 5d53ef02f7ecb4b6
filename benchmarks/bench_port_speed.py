"""What the port bought in speed: YOLOv5s (v5.0) on the CPU runtimes, fp32 and int8, in one run.

    python benchmarks/bench_port_speed.py                                   # 640 and 736x416, batch 1 and 16
    python benchmarks/bench_port_speed.py --sizes 640 --batches 1 --repeat 10 --json speed.json

Configurations (each a yoloport Runner, timed with :func:`yoloport.analysis.bench.bench_runner`, model only):

- ``pytorch-fp32``: the DetectionModel in eval mode (eager);
- ``ort-fp32`` / ``ort-int8``: ONNX Runtime CPU, the fp32 export and the backend's static int8 QDQ
  artifact (U8S8: uint8 activations, int8 per-channel weights, MinMax; head decode kept in float);
- ``ov-fp32`` / ``ov-int8``: OpenVINO CPU, IR run with ``INFERENCE_PRECISION_HINT f32`` and the
  NNCF int8 IR (preset mixed).

int8 artifacts are calibrated on 32 COCO128 train images through
:func:`yoloport.data.calibration.load_calibration` (the one preprocessing path). Every graph is built
for the batch it is timed at (batch 16 = a batch-16 graph, int8 calibrated at that batch). Batch 1
reports latency (median, p90 ms), larger batches throughput (images/s). Speed-ups: each config over
PyTorch fp32 eager, and ORT int8 over ORT fp32 (ratios of median latency at batch 1, of throughput
otherwise). Targets checked: OpenVINO int8 >= 3x PyTorch fp32 and ORT int8 >= 1.5x ORT fp32
(640, batch 1). Timings depend on the machine and what else runs on it: the JSON records it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CONFIGS = (  # label, backend, int8
    ("pytorch-fp32", "torch", False),
    ("ort-fp32", "onnxruntime", False),
    ("ort-int8", "onnxruntime", True),
    ("ov-fp32", "openvino", False),
    ("ov-int8", "openvino", True),
)
TARGETS = (  # (config, reference, size, batch, minimum speed-up)
    ("ov-int8", "pytorch-fp32", (640, 640), 1, 3.0),
    ("ort-int8", "ort-fp32", (640, 640), 1, 1.5),
)


def parse_sizes(values: list[str]) -> list[tuple[int, int]]:
    """``['640', '736x416']`` -> ``[(640, 640), (416, 736)]`` as (h, w)."""
    out = []
    for v in values:
        parts = [int(p) for p in str(v).lower().split("x")]
        w, h = (parts[0], parts[0]) if len(parts) == 1 else parts[:2]
        out.append((h, w))
    return out


def speedup(results: list[dict], label: str, ref: str, hw, batch: int) -> float | None:
    """How many times faster ``label`` is than ``ref`` at one size and batch (latency at batch 1,
    throughput otherwise)."""
    a = _find(results, label, hw, batch)
    b = _find(results, ref, hw, batch)
    if a is None or b is None:
        return None
    if batch == 1:
        return b["latency_ms"]["median"] / a["latency_ms"]["median"]
    return a["throughput_ips"] / b["throughput_ips"]


def _find(results, label, hw, batch):
    return next((r for r in results if r["label"] == label and tuple(r["img_hw"]) == tuple(hw) and r["batch"] == batch), None)


def run_config(label, backend, int8, model, hw, batch, calibration, work, threads, warmup, repeat) -> dict:
    """Build (export / quantize) and time one configuration; returns bench_runner's dict + label, build_s."""
    from yoloport.analysis.bench import bench_runner, runner_for_batch

    t0 = time.perf_counter()
    runner = runner_for_batch(backend, model, hw, batch, Path(work) / label, threads, calibration if int8 else None)
    build_s = time.perf_counter() - t0
    try:
        res = bench_runner(runner, batch, hw, warmup, repeat)
    finally:
        runner.close()
    return {**res, "label": label, "build_s": round(build_s, 1), "precision": "int8" if int8 else "fp32"}


def summary(results: list[dict], sizes, batches) -> str:
    """One table: per size and config, batch-1 latency and larger-batch throughput with speed-ups."""
    from yoloport.analysis.tables import fmt_float, format_table

    headers = ["size", "config"]
    if 1 in batches:
        headers += ["b1 median ms", "b1 p90 ms", "x PyTorch"]
    big = [b for b in batches if b != 1]
    for b in big:
        headers += [f"b{b} images/s", "x PyTorch"]
    headers += ["int8 vs fp32 (ORT)"]
    rows = []
    for hw in sizes:
        for label, _, _ in CONFIGS:
            row = [f"{hw[1]}x{hw[0]}", label]
            if 1 in batches:
                r = _find(results, label, hw, 1)
                row += [fmt_float(r and r["latency_ms"]["median"], 1), fmt_float(r and r["latency_ms"]["p90"], 1),
                        _x(speedup(results, label, "pytorch-fp32", hw, 1))]
            for b in big:
                r = _find(results, label, hw, b)
                row += [fmt_float(r and r["throughput_ips"], 2), _x(speedup(results, label, "pytorch-fp32", hw, b))]
            row.append(", ".join(f"b{b} {_x(speedup(results, 'ort-int8', 'ort-fp32', hw, b))}" for b in batches) if label == "ort-int8" else "")
            rows.append(row)
    return format_table(headers, rows, align="ll" + "r" * (len(headers) - 2))


def _x(v) -> str:
    return "-" if v is None else f"{v:.2f}x"


def check_targets(results: list[dict]) -> list[str]:
    lines = []
    for label, ref, hw, batch, minimum in TARGETS:
        s = speedup(results, label, ref, hw, batch)
        if s is None:
            lines.append(f"target {label} >= {minimum}x {ref} ({hw[1]}x{hw[0]}, batch {batch}): not measured")
        else:
            lines.append(f"target {label} >= {minimum}x {ref} ({hw[1]}x{hw[0]}, batch {batch}): {s:.2f}x -> "
                         f"{'met' if s >= minimum else 'NOT met'}")
    return lines


def main(argv=None) -> int:
    from yoloport.fixtures import fixtures_dir

    fx = fixtures_dir()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=str(fx / "weights/yolov5s-v5.0.pt") if fx else None)
    ap.add_argument("--calib", default=str(fx / "coco128/images/train2017") if fx else None, help="calibration images")
    ap.add_argument("--calib-n", type=int, default=32)
    ap.add_argument("--sizes", nargs="+", default=["640", "736x416"], help="W or WxH")
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    ap.add_argument("--configs", nargs="+", default=[c[0] for c in CONFIGS], choices=[c[0] for c in CONFIGS])
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=20, help="timed calls at batch 1")
    ap.add_argument("--repeat-batch", type=int, default=5, help="timed calls at batches > 1")
    ap.add_argument("--threads", type=int, default=None, help="threads for every runtime (default: all CPUs)")
    ap.add_argument("--work", help="where to keep the built artifacts (default: a temporary folder)")
    ap.add_argument("--json", help="write all results here")
    a = ap.parse_args(argv)
    if not a.weights or not Path(a.weights).exists():
        print(f"weights {a.weights} not found (pass --weights)", file=sys.stderr)
        return 2

    import torch

    from yoloport.analysis.bench import machine_info
    from yoloport.data.calibration import load_calibration
    from yoloport.models import load_model

    threads = a.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    sizes = parse_sizes(a.sizes)
    model = load_model(a.weights)
    stride = int(model.stride.max())
    calibration = None
    if any(int8 for label, _, int8 in CONFIGS if label in a.configs):
        calibration = load_calibration(a.calib, a.calib_n, sizes[0], stride, warn=lambda m: print(f"warning: {m}"))
    info = machine_info()
    print(f"yolov5s v5.0 from {a.weights}; {threads} threads; {info['processor']}, {info.get('affinity_cpus')} CPUs usable; "
          f"calibration {len(calibration) if calibration else 0} images from {a.calib}")
    results = []
    with tempfile.TemporaryDirectory(prefix="yoloport-speed-") as tmp:
        work = Path(a.work or tmp)
        for hw in sizes:
            for batch in a.batches:
                for label, backend, int8 in CONFIGS:
                    if label not in a.configs:
                        continue
                    rep = a.repeat if batch == 1 else a.repeat_batch
                    r = run_config(label, backend, int8, model, hw, batch, calibration, work / f"{hw[1]}x{hw[0]}-b{batch}",
                                   threads, a.warmup, rep)
                    results.append(r)
                    print(f"  {hw[1]}x{hw[0]} b{batch} {label:13s} median {r['latency_ms']['median']:8.1f} ms  "
                          f"p90 {r['latency_ms']['p90']:8.1f} ms  {r['throughput_ips']:7.2f} images/s  (build {r['build_s']} s)",
                          flush=True)
    print()
    print(summary(results, sizes, a.batches))
    print()
    for line in check_targets(results):
        print(line)
    if a.json:
        doc = {"weights": a.weights, "threads": threads, "machine": info, "calibration": calibration.to_dict() if calibration else None,
               "results": results, "targets": check_targets(results)}
        Path(a.json).write_text(json.dumps(doc, indent=1, default=lambda o: o.tolist() if isinstance(o, np.ndarray) else str(o)))
        print(f"saved to {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
