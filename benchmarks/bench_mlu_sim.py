"""How fast the simulated MLU (``mlu-sim``) runs, against PyTorch fp32 and against its former per-call
fake quantization, with the outputs compared bit for bit.

    python benchmarks/bench_mlu_sim.py [--weights W] [--size 640] [--batch 8] [--repeat 5] [--threads 2]

Three configurations timed round-robin (:func:`yoloport.analysis.bench.time_interleaved`), raw head outputs:
``torch-fp32`` (the DetectionModel), ``mlu-sim int8`` (the backend as it is: each weight rounded once,
activations rounded in place) and ``mlu-sim int8, per-call`` (the former forward: activation and weight
rounded with :func:`yoloport.quant.fake_quant.fake_quant` at every call). Calibration: ``--calib-n`` images
of the fixtures' calib2017 pool; the timed batch is other images (val2017). Timings depend on the
machine's load (printed): read the minima and their ratio.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def per_call_forward(self, x):
    """The QConv forward before issue 14 item 5: activation and weight fake-quantized at every call."""
    import torch
    import torch.nn.functional as F

    from yoloport.quant.fake_quant import fake_quant

    c = self.conv
    if self.mode != "quant":
        return type(self).forward(self, x)
    xf = x.float()
    if self.first and self.firstconv:
        xq = fake_quant(xf, torch.tensor(1.0 / 255.0), 255, 0)
    else:
        xq = fake_quant(xf, self.input_scale, self.qmax)
    wq = fake_quant(c.weight.float(), self.w_scale, self.qmax)
    b = c.bias.float() if c.bias is not None else None
    return F.conv2d(xq, wq, b, c.stride, c.padding, c.dilation, c.groups).to(x.dtype)


def main(argv=None) -> int:
    from yoloport.fixtures import fixtures_dir

    fx = fixtures_dir()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=str(fx / "weights/yolov5s-v5.0.pt") if fx else None)
    ap.add_argument("--calib", default=str(fx / "coco-extra/images/calib2017") if fx else None)
    ap.add_argument("--images", default=str(fx / "coco-extra/images/val2017") if fx else None)
    ap.add_argument("--calib-n", type=int, default=8)
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args(argv)
    if not a.weights or not Path(a.weights).exists():
        print(f"weights {a.weights} not found (pass --weights)", file=sys.stderr)
        return 2
    import torch

    from yoloport.analysis.bench import time_interleaved
    from yoloport.backends.registry import build_artifact, load_runner
    from yoloport.data.calibration import load_calibration
    from yoloport.data.letterbox import input_multiple
    from yoloport.models import load_model

    torch.set_num_threads(a.threads)
    hw = (a.size, a.size)
    model = load_model(a.weights)
    calib = load_calibration(a.calib, a.calib_n, hw, input_multiple(model.stride))
    x = np.concatenate(load_calibration(a.images, a.batch, hw, input_multiple(model.stride), seed=None).arrays(), 0)
    with tempfile.TemporaryDirectory(prefix="yoloport-mlusim-") as tmp:
        art = build_artifact("mlu-sim", model, tmp, hw, calibration=calib, qconfig={"precision": "int8", "per_channel": True,
                                                                                    "head_fp32": "convs"}, mode=None)
        sim = load_runner("mlu-sim", artifact=art, model=model, output="raw")
        legacy = load_runner("mlu-sim", artifact=art, model=model, output="raw")
        for q in legacy.qconvs:
            q.forward = per_call_forward.__get__(q)
        ref = load_runner("torch", model=model, threads=a.threads)
        same = all(np.array_equal(p, q) for p, q in zip(sim.raw(x), legacy.raw(x)))
        timing = time_interleaved({"torch-fp32": lambda: ref(x), "mlu-sim int8": lambda: sim.raw(x),
                                   "mlu-sim int8, per-call": lambda: legacy.raw(x)}, warmup=1, repeat=a.repeat, threads=a.threads)
    res = timing["results"]
    print(f"{Path(a.weights).stem} {a.size}x{a.size}, batch {a.batch}, {a.threads} threads, {a.repeat} round-robin rounds; load average "
          f"{timing['load_before']['load1']} -> {timing['load_after']['load1']} on {timing['load_before']['cpus']} CPUs, "
          f"other processes used {timing['other_cpu_share']} of them")
    for k, r in res.items():
        print(f"  {k:24s} min {r['min_ms']:8.1f} ms  median {r['median_ms']:8.1f} ms  ({r['min_ms'] / a.batch:6.1f} ms/image; "
              f"CPU time min {r['min_cpu_ms']:8.1f} ms)")
    old, new = res["mlu-sim int8, per-call"], res["mlu-sim int8"]
    print(f"mlu-sim now vs per-call: {old['min_ms'] / new['min_ms']:.2f}x faster on wall-time minima, "
          f"{old['min_cpu_ms'] / new['min_cpu_ms']:.2f}x on CPU-time minima; raw outputs bit-identical: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
