"""Head-output SQNR of int8 artifacts against fp32 on validation images (a low-noise proxy beside the
mAP drop: one seed's mAP drop on 100 images moves by tenths of a point with any change of ranges).

    python benchmarks/bench_ort_output_sqnr.py --fp32 runs/.../fp32/model.onnxruntime.fp32.onnx \\
        --val /path/coco-extra/images/val2017 --n 32 minmax=runs/.../int8.onnx grids=runs/.../int8.onnx

Prints, per artifact, the SQNR (dB) of each raw head output (the Detect convs' logits, one per level)
over the images, and the SQNR of the sigmoids at the anchors whose fp32 objectness passes ``--obj-thres``
(what detections are made of), each with its mean over levels. Numbers, not asserts: never a test.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def confident_sigmoids(refs, outs, level: int, obj_thres: float, no: int):
    """``(ref [M], test [M])``: the sigmoids of every channel (box, objectness, classes) at the anchors of
    output ``level`` where the fp32 objectness exceeds ``obj_thres`` (the candidates that can become
    detections; raw logits elsewhere are large negative numbers that no detection reads)."""
    import numpy as np

    def split(o):  # [B, na*no, H, W] -> [B, na, no, H, W]
        b, c, h, w = o.shape
        return o.reshape(b, c // no, no, h, w)

    ref = np.concatenate([split(r[level]) for r in refs])
    out = np.concatenate([split(o[level]) for o in outs])
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    keep = np.broadcast_to(sig(ref[:, :, 4:5]) > obj_thres, ref.shape)
    return sig(ref[keep]), sig(out[keep])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("artifacts", nargs="+", help="label=path.onnx (ONNX Runtime int8 artifacts with sidecars)")
    p.add_argument("--fp32", required=True, help="the fp32 ONNX Runtime artifact (same input size)")
    p.add_argument("--val", required=True, help="folder (or data source) of validation images")
    p.add_argument("--n", type=int, default=32, help="images (the first n, sorted)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--obj-thres", type=float, default=0.05, help="fp32 objectness above which anchors count in the second SQNR")
    a = p.parse_args(argv)

    import numpy as np

    from yoloport.backends.registry import load_runner
    from yoloport.data.calibration import load_calibration
    from yoloport.quant.error import sqnr_db

    ref_runner = load_runner("onnxruntime", artifact=a.fp32, threads=a.threads, output="raw")
    images = load_calibration(a.val, n=a.n, img_size_hw=tuple(ref_runner.input_hw), seed=None)
    refs = [ref_runner(x) for x in images.arrays()]
    for spec in a.artifacts:
        label, path = spec.split("=", 1)
        runner = load_runner("onnxruntime", artifact=path, threads=a.threads, output="raw")
        outs = [runner(x) for x in images.arrays()]
        per_level = [sqnr_db(np.concatenate([r[i].ravel() for r in refs]), np.concatenate([o[i].ravel() for o in outs]))
                     for i in range(len(refs[0]))]
        where = [sqnr_db(*confident_sigmoids(refs, outs, i, a.obj_thres, 5 + runner.head.nc + 2 * runner.head.nkpt)) for i in range(len(refs[0]))]
        print(f"{label:<28} SQNR dB per output {' '.join(f'{s:6.2f}' for s in per_level)}  mean {np.mean(per_level):6.2f}"
              f" | where fp32 objectness > {a.obj_thres}: {' '.join(f'{s:6.2f}' for s in where)}  mean {np.mean(where):6.2f}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
