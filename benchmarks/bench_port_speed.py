"""What the port bought in speed: YOLOv5s (v5.0) on the CPU runtimes, fp32 and int8, in one run.

    python benchmarks/bench_port_speed.py                                   # 640 and 736x416, batch 1 and 16
    python benchmarks/bench_port_speed.py --sizes 640 --batches 1 --repeat 10 --json speed.json

Configurations (each a yoloport Runner; for each size and batch all configurations are built first, then
timed **round-robin** with one thread count by :func:`yoloport.analysis.bench.time_interleaved`, model only,
so a change in machine load hits them alike; min and median reported, the machine's load recorded):

- ``pytorch-fp32``: the DetectionModel in eval mode (eager);
- ``ort-fp32`` / ``ort-int8``: ONNX Runtime CPU, the fp32 export and the backend's static int8 QDQ
  artifact (U8S8: uint8 activations, int8 per-channel weights, MinMax; head decode kept in float);
- ``ov-fp32`` / ``ov-int8``: OpenVINO CPU, IR run with ``INFERENCE_PRECISION_HINT f32`` and the
  NNCF int8 IR (preset mixed).

int8 artifacts are calibrated on 32 COCO128 train images through
:func:`yoloport.data.calibration.load_calibration` (the one preprocessing path). Every graph is built
for the batch it is timed at (batch 16 = a batch-16 graph, int8 calibrated at that batch). Batch 1
reports latency (min, median, p90 ms), larger batches throughput (images/s). Speed-ups: each config
over PyTorch fp32 eager (context only: most of that gap is the runtime, not the port), and each int8
config over the fp32 of its own runtime (ratios of minimum latency at batch 1, of throughput
otherwise). Targets checked, what quantization bought inside one runtime (640, batch 1): OpenVINO int8
>= 2.5x OpenVINO fp32 and ORT int8 >= 1.5x ORT fp32 (VNNI int8 GEMMs peak at about 4x fp32 ones).

``--end-to-end``: at the first size, batch 1, each config is also timed as a user feels it (read the
image file, letterbox, model, decode + NMS + scale back; :func:`yoloport.analysis.bench.bench_end_to_end`,
with the stage breakdown) on ``--images`` (default: 16 COCO val2017 images of the fixtures), model-only
and end-to-end calls interleaved; target: OpenVINO int8 end to end <= 1.15x its model-only latency.
Timings depend on the machine and what else runs on it: the JSON records it.
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
TARGETS = (  # (config, reference, size, batch, minimum speed-up): int8 over the fp32 of its own runtime
    ("ov-int8", "ov-fp32", (640, 640), 1, 2.5),
    ("ort-int8", "ort-fp32", (640, 640), 1, 1.5),
)
FP32_OF = {"ort-int8": "ort-fp32", "ov-int8": "ov-fp32"}
E2E_TARGET = ("ov-int8", 1.15)  # end-to-end latency at most this many times the model-only latency


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
        return b["latency_ms"]["min"] / a["latency_ms"]["min"]
    return a["throughput_ips"] / b["throughput_ips"]


def _find(results, label, hw, batch):
    return next((r for r in results if r["label"] == label and tuple(r["img_hw"]) == tuple(hw) and r["batch"] == batch), None)


def build_runner(label, backend, int8, model, hw, batch, calibration, work, threads):
    """Build (export / quantize) one configuration's runner -> ``(runner, build_s)``."""
    from yoloport.analysis.bench import runner_for_batch

    t0 = time.perf_counter()
    runner = runner_for_batch(backend, model, hw, batch, Path(work) / label, threads, calibration if int8 else None)
    return runner, round(time.perf_counter() - t0, 1)


def time_configs(runners: dict, hw, batch: int, threads: int, warmup: int, repeat: int) -> tuple[list[dict], dict]:
    """Time ``{label: runner}`` round-robin on one ``[batch, 3, H, W]`` input -> (one result per label in
    :func:`bench_runner`'s layout + ``min``, the interleaved timing with the machine's load)."""
    from yoloport.analysis.bench import latency_stats, time_interleaved

    x = np.random.default_rng(0).random((batch, 3, hw[0], hw[1]), dtype=np.float32)
    timing = time_interleaved({label: (lambda r=r: r(x)) for label, r in runners.items()}, warmup, repeat, threads)
    results = []
    for label, t in timing["results"].items():
        stats = latency_stats(np.asarray(t["times_ms"]) / 1e3, batch)
        results.append({"mode": "model", "label": label, "backend": getattr(runners[label], "backend", "?"), "batch": batch,
                        "img_hw": list(hw), "warmup": warmup, "repeat": repeat, **stats})
    return results, {k: v for k, v in timing.items() if k != "results"}


def time_end_to_end(runners: dict, hw, files: list, threads: int, warmup: int, repeat: int) -> dict:
    """Per config at batch 1: the stage breakdown (:func:`bench_end_to_end`) and, timed round-robin with
    the model alone, the end-to-end / model-only ratio (both on minimum latency)."""
    from yoloport.analysis.bench import bench_end_to_end, end_to_end_step, time_interleaved

    x = np.random.default_rng(0).random((1, 3, hw[0], hw[1]), dtype=np.float32)
    out = {}
    for label, runner in runners.items():
        e2e = bench_end_to_end(runner, 1, hw, files, warmup, repeat)
        step, cycle = end_to_end_step(runner, 1, hw), {"i": 0}

        def one_image(step=step, cycle=cycle):
            cycle["i"] += 1
            return step([files[cycle["i"] % len(files)]])

        t = time_interleaved({"model": lambda r=runner: r(x), "end_to_end": one_image}, warmup, repeat, threads)
        m, e = t["results"]["model"], t["results"]["end_to_end"]
        out[label] = {"stages_ms": e2e["stages_ms"], "end_to_end": e2e["latency_ms"], "model_min_ms": m["min_ms"],
                      "end_to_end_min_ms": e["min_ms"], "ratio_min": e["min_ms"] / m["min_ms"],
                      "ratio_median": e["median_ms"] / m["median_ms"], "load": t["load_before"],
                      "other_cpu_share": t["other_cpu_share"]}
    return out


def summary(results: list[dict], sizes, batches) -> str:
    """One table: per size and config, batch-1 latency and larger-batch throughput with speed-ups."""
    from yoloport.analysis.tables import fmt_float, format_table

    headers = ["size", "config"]
    if 1 in batches:
        headers += ["b1 min ms", "b1 median ms", "x PyTorch"]
    big = [b for b in batches if b != 1]
    for b in big:
        headers += [f"b{b} images/s", "x PyTorch"]
    headers += ["int8 vs own fp32"]
    rows = []
    for hw in sizes:
        for label, _, _ in CONFIGS:
            row = [f"{hw[1]}x{hw[0]}", label]
            if 1 in batches:
                r = _find(results, label, hw, 1)
                row += [fmt_float(r and r["latency_ms"]["min"], 1), fmt_float(r and r["latency_ms"]["median"], 1),
                        _x(speedup(results, label, "pytorch-fp32", hw, 1))]
            for b in big:
                r = _find(results, label, hw, b)
                row += [fmt_float(r and r["throughput_ips"], 2), _x(speedup(results, label, "pytorch-fp32", hw, b))]
            ref = FP32_OF.get(label)
            row.append(", ".join(f"b{b} {_x(speedup(results, label, ref, hw, b))}" for b in batches) if ref else "")
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


def e2e_lines(e2e: dict, hw) -> list[str]:
    """End-to-end breakdown per config and the OpenVINO int8 end-to-end / model-only verdict."""
    lines = []
    for label, r in e2e.items():
        st = r["stages_ms"]
        lines.append(f"end to end {label} ({hw[1]}x{hw[0]}, batch 1): {r['end_to_end_min_ms']:.1f} ms min vs model "
                     f"{r['model_min_ms']:.1f} ms = {r['ratio_min']:.2f}x (median {r['ratio_median']:.2f}x); medians read "
                     f"{st['read']:.2f}, pre {st['pre']:.2f}, infer {st['inference']:.2f}, post {st['post']:.2f} ms")
    label, limit = E2E_TARGET
    if label in e2e:
        v = e2e[label]["ratio_min"]
        lines.append(f"target {label} end to end <= {limit}x its model-only latency ({hw[1]}x{hw[0]}, batch 1): "
                     f"{v:.2f}x -> {'met' if v <= limit else 'NOT met'}")
    return lines


def _e2e_files(images, fx) -> list:
    from yoloport.analysis.bench import image_files

    source = images or (fx / "coco-extra/images/val2017" if fx else None)
    if source is None:
        raise SystemExit("--end-to-end needs --images (no fixtures found)")
    return image_files(source, 16)


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
    ap.add_argument("--end-to-end", action="store_true", help="also time read + letterbox + model + post-processing at batch 1")
    ap.add_argument("--images", help="images for --end-to-end (default: 16 COCO val2017 images from the fixtures)")
    ap.add_argument("--json", help="write all results here")
    a = ap.parse_args(argv)
    if not a.weights or not Path(a.weights).exists():
        print(f"weights {a.weights} not found (pass --weights)", file=sys.stderr)
        return 2

    import torch

    from yoloport.analysis.bench import machine_info
    from yoloport.data.calibration import load_calibration
    from yoloport.data.letterbox import input_multiple
    from yoloport.models import load_model

    threads = a.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    sizes = parse_sizes(a.sizes)
    model = load_model(a.weights)
    stride = input_multiple(model.stride)
    calibration = None
    if any(int8 for label, _, int8 in CONFIGS if label in a.configs):
        calibration = load_calibration(a.calib, a.calib_n, sizes[0], stride, warn=lambda m: print(f"warning: {m}"))
    info = machine_info()
    print(f"yolov5s v5.0 from {a.weights}; {threads} threads; {info['processor']}, {info.get('affinity_cpus')} CPUs usable; "
          f"calibration {len(calibration) if calibration else 0} images from {a.calib}")
    results, timings, e2e = [], [], None
    files = _e2e_files(a.images, fx) if a.end_to_end else None
    with tempfile.TemporaryDirectory(prefix="yoloport-speed-") as tmp:
        work = Path(a.work or tmp)
        for hw in sizes:
            for batch in a.batches:
                runners, builds = {}, {}
                try:
                    for label, backend, int8 in CONFIGS:
                        if label in a.configs:
                            runners[label], builds[label] = build_runner(label, backend, int8, model, hw, batch, calibration,
                                                                         work / f"{hw[1]}x{hw[0]}-b{batch}", threads)
                    rep = a.repeat if batch == 1 else a.repeat_batch
                    res, timing = time_configs(runners, hw, batch, threads, a.warmup, rep)
                    timings.append({"img_hw": list(hw), "batch": batch, **timing})
                    for r in res:
                        r.update(build_s=builds[r["label"]], precision="int8" if r["label"].endswith("int8") else "fp32")
                        results.append(r)
                        print(f"  {hw[1]}x{hw[0]} b{batch} {r['label']:13s} min {r['latency_ms']['min']:8.1f} ms  "
                              f"median {r['latency_ms']['median']:8.1f} ms  {r['throughput_ips']:7.2f} images/s  "
                              f"(build {r['build_s']} s)", flush=True)
                    print(f"  load average {timing['load_before']['load1']} -> {timing['load_after']['load1']}, other "
                          f"processes used {timing['other_cpu_share']} of the CPUs while timing", flush=True)
                    if files and batch == 1 and hw == sizes[0]:
                        e2e = time_end_to_end(runners, hw, files, threads, a.warmup, a.repeat)
                finally:
                    for r in runners.values():
                        r.close()
    print()
    print(summary(results, sizes, a.batches))
    print()
    lines = check_targets(results) + (e2e_lines(e2e, sizes[0]) if e2e else [])
    for line in lines:
        print(line)
    if a.json:
        doc = {"weights": a.weights, "threads": threads, "machine": info, "calibration": calibration.to_dict() if calibration else None,
               "results": results, "timings": timings, "end_to_end": e2e, "targets": lines}
        Path(a.json).write_text(json.dumps(doc, indent=1, default=lambda o: o.tolist() if isinstance(o, np.ndarray) else str(o)))
        print(f"saved to {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
