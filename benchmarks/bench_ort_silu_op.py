"""ONNX Runtime int8: each SiLU as QLinearSigmoid + QLinearMul (``silu_op: qlinear``, the default) or as one
fused QuickGelu between the conv's and the Mul's grids (``silu_op: quickgelu``), built by the backend from
one checkpoint and one calibration sample, timed round-robin at one thread count, and compared with the fp32
graph output for output.

    python benchmarks/bench_ort_silu_op.py [--weights yolov5s-v5.0] [--img-size 640] [--threads 2] \\
        [--repeat 30] [--calib-n 32] [--n-images 8] [--head-fp32 convs] [--json out.json]

``--head-fp32``: the recipe's float scope (``convs``, the backend's default; ``none``: every conv int8, where
ONNX Runtime keeps its convolutions in a uint8 chain that a float op between them breaks). Prints min and
median latency, CPU time per call, the ratio by minimum, the machine load, and each artifact's SQNR against
fp32 (all outputs, on ``--n-images`` coco-extra val2017 images, none of them calibration images). Numbers,
not asserts: never a test.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OPS = ("qlinear", "quickgelu")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default="yolov5s-v5.0", help="checkpoint or model key (default the fixtures' yolov5s v5.0)")
    ap.add_argument("--img-size", type=int, nargs="+", default=[640], help="W [H]")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--calib-n", type=int, default=32)
    ap.add_argument("--n-images", type=int, default=8)
    ap.add_argument("--head-fp32", default="convs", choices=("convs", "tail", "none"))
    ap.add_argument("--json")
    a = ap.parse_args(argv)

    from yoloport.analysis.bench import load_bgr_images, time_interleaved
    from yoloport.backends.registry import build_artifact, load_runner
    from yoloport.config import weights_path
    from yoloport.data.calibration import load_calibration
    from yoloport.data.letterbox import input_multiple, preprocess
    from yoloport.errors import YoloportError
    from yoloport.fixtures import fixtures_dir
    from yoloport.models import load_model
    from yoloport.quant.error import sqnr_db

    try:
        model = load_model(weights_path(a.weights))
    except YoloportError as e:
        raise SystemExit(str(e)) from None
    fx = fixtures_dir()
    if fx is None:
        raise SystemExit("shared fixtures not found (set YOLOPORT_FIXTURES)")
    w, h = a.img_size[0], a.img_size[-1]
    hw = (h, w)
    calibration = load_calibration(fx / "coco-extra" / "images" / "calib2017", a.calib_n, hw, input_multiple(model.stride))
    images = [preprocess(im, hw, auto=False)[0][None] for im in load_bgr_images(fx / "coco-extra" / "images" / "val2017", a.n_images)]
    with tempfile.TemporaryDirectory(prefix="bench-silu-op-") as tmp:
        fp32 = load_runner("onnxruntime", artifact=build_artifact("onnxruntime", model, Path(tmp) / "fp32", hw, None,
                                                                  {"precision": "fp32"}), model=model, threads=a.threads, output="raw")
        runners = {op: load_runner("onnxruntime", model=model, threads=a.threads, output="raw", artifact=build_artifact(
            "onnxruntime", model, Path(tmp) / op, hw, calibration, {"precision": "int8", "silu_op": op, "head_fp32": a.head_fp32}))
            for op in OPS}
        refs = [fp32(x) for x in images]
        quality = {}
        for op, r in runners.items():
            per = [sqnr_db(np.concatenate([t.ravel() for t in ref]), np.concatenate([t.ravel() for t in r(x)]))
                   for ref, x in zip(refs, images)]
            quality[op] = {"sqnr_db_mean": float(np.mean(per)), "sqnr_db": [float(v) for v in per]}
        x = images[0]
        timing = time_interleaved({op: (lambda r=r: r(x)) for op, r in runners.items()}, a.warmup, a.repeat, a.threads)
        for r in [fp32, *runners.values()]:
            r.close()
    res = timing["results"]
    print(f"{Path(str(a.weights)).name} {w}x{h}, batch 1, head_fp32={a.head_fp32}, {a.threads} threads, {a.repeat} rounds "
          f"round-robin; load {timing['load_before'].get('load1')} -> {timing['load_after'].get('load1')}, other "
          f"processes' CPU share {timing['other_cpu_share']}")
    print(f"{'silu_op':<10} {'min ms':>8} {'median ms':>10} {'min CPU ms':>11} {'SQNR vs fp32 dB':>16}")
    for op in OPS:
        t = res[op]
        print(f"{op:<10} {t['min_ms']:8.2f} {t['median_ms']:10.2f} {t['min_cpu_ms']:11.2f} {quality[op]['sqnr_db_mean']:16.2f}")
    ratio = res["qlinear"]["min_ms"] / res["quickgelu"]["min_ms"]
    print(f"quickgelu speed-up by min: {ratio:.3f}x (by median {res['qlinear']['median_ms'] / res['quickgelu']['median_ms']:.3f}x, "
          f"by CPU {res['qlinear']['min_cpu_ms'] / res['quickgelu']['min_cpu_ms']:.3f}x)")
    if a.json:
        doc = {"args": vars(a), "quality": quality, "timing": {**{k: v for k, v in timing.items() if k != "results"},
               "results": {k: {m: v for m, v in t.items() if m != "times_ms"} for k, t in res.items()}}}
        Path(a.json).write_text(json.dumps(doc, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
