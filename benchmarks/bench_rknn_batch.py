"""RKNN simulator: per-image time and outputs of a batch-1 ``.rknn`` against ones compiled for N images a call.

    python benchmarks/bench_rknn_batch.py WEIGHTS SIZE [--batches 1 4 8] [--images 8] [--calib-n 8] [--repeat 3]

Builds the port's RKNN int8 target (``SPEC.port_qconfig``: the Detect convolutions in float16, hybrid
quantization) once per batch (``build_artifact(..., batch=N)``: ``rknn_batch_size=N`` from the batch-1
graph), calibrated on coco-extra calib2017, and runs the first ``--images`` val2017 images (never calibration
images) through each runner. Prints the largest output difference of every batch against batch 1 and of a
second batch-1 run against the first (the simulator's own nondeterminism), then per-image wall and CPU time
of each runner timed round-robin (``analysis.bench.time_interleaved``; the load is printed), and the
runner's float32 -> uint8 NHWC conversion against the previous formula on the same images.
"""
import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import numpy as np  # noqa: E402

from yoloport.analysis.bench import time_interleaved  # noqa: E402
from yoloport.backends import rknn as rb  # noqa: E402
from yoloport.backends.registry import build_artifact, load_runner  # noqa: E402
from yoloport.data.calibration import load_calibration  # noqa: E402
from yoloport.fixtures import fixtures_dir  # noqa: E402
from yoloport.models import load_model  # noqa: E402


def previous_conversion(images: np.ndarray) -> np.ndarray:
    """The runner's conversion before this benchmark's session: four float passes, then the transpose."""
    x = np.clip(np.rint(np.asarray(images, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def max_diff(a: list, b: list) -> float:
    return max(float(np.abs(x.astype(np.float64) - y).max()) for x, y in zip(a, b))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("weights")
    ap.add_argument("size", type=int)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--calib-n", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    model = load_model(a.weights)
    hw = (a.size, a.size)
    calib = load_calibration(fixtures_dir() / "coco-extra/images/calib2017", a.calib_n, hw)
    x = np.concatenate(load_calibration(fixtures_dir() / "coco-extra/images/val2017", a.images, hw, seed=None).arrays(), 0)
    tmp = tempfile.mkdtemp()
    q = {"precision": "int8", **rb.SPEC.port_qconfig}
    runners = {}
    for b in a.batches:
        art = build_artifact("rknn", model, f"{tmp}/b{b}", hw, calibration=calib, qconfig=dict(q), mode=None, batch=b)
        runners[b] = load_runner("rknn", artifact=art, model=model)
    outs = {b: r(x) for b, r in runners.items()}
    base = min(a.batches)
    print(f"yolov5 {Path(a.weights).name} at {a.size}, int8 {q}, {a.images} val2017 images")
    print(f"batch {base} run twice: max |diff| {max_diff(outs[base], runners[base](x))}")
    for b in a.batches:
        if b != base:
            print(f"batch {b} vs batch {base}, image by image: max |diff| {max_diff(outs[base], outs[b])}")
    res = time_interleaved({f"rknn_batch_size {b}": (lambda r=r: r(x)) for b, r in runners.items()}, warmup=0, repeat=a.repeat)
    print(f"load {res['load_before']} -> {res['load_after']}, other processes' CPU share {res['other_cpu_share']}")
    for label, t in res["results"].items():
        print(f"{label}: per image wall min {t['min_ms'] / a.images:.1f} ms, median {t['median_ms'] / a.images:.1f}; "
              f"CPU min {t['min_cpu_ms'] / a.images:.1f}, median {t['median_cpu_ms'] / a.images:.1f}")
    assert np.array_equal(previous_conversion(x), rb.RknnRunner.to_runtime_input(x))
    conv = time_interleaved({"previous": lambda: previous_conversion(x), "now": lambda: rb.RknnRunner.to_runtime_input(x)},
                            warmup=2, repeat=10)
    for label, t in conv["results"].items():
        print(f"uint8 NHWC conversion, {label}: per image CPU min {t['min_cpu_ms'] / a.images:.2f} ms, "
              f"median {t['median_cpu_ms'] / a.images:.2f} (same bytes)")
    for r in runners.values():
        r.close()


if __name__ == "__main__":
    main()
