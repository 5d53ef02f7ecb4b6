"""Static vs dynamic-batch int8 artifacts (ONNX Runtime, OpenVINO): the same outputs, and the batch-1 cost.

    python benchmarks/bench_batch_dynamic.py WEIGHTS SIZE      # e.g. yolov5n-v6.1.pt 320

``yoloport port`` builds ONNX Runtime and OpenVINO targets with a dynamic batch (one artifact validated at
batch 8 and benchmarked at every batch). This prints, for each backend, the largest difference between the
static and the dynamic artifact at batch 1 and between the dynamic artifact at batch 8 and the static one
image by image (int8 from 8 calib2017 images, inputs 8 val2017 images), then the batch-1 CPU-time minima of
all four with one thread each, timed round-robin (CPU time holds on a busy machine; the load is printed).
"""
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import numpy as np  # noqa: E402

from yoloport.analysis.bench import time_interleaved  # noqa: E402
from yoloport.backends.registry import build_artifact, load_runner  # noqa: E402
from yoloport.data.calibration import load_calibration  # noqa: E402
from yoloport.fixtures import fixtures_dir  # noqa: E402
from yoloport.models import load_model  # noqa: E402


def main():
    w, size = sys.argv[1], int(sys.argv[2])
    m = load_model(w)
    hw = (size, size)
    calib = load_calibration(fixtures_dir() / "coco-extra/images/calib2017", 8, hw, 32)
    x1 = np.concatenate(load_calibration(fixtures_dir() / "coco-extra/images/val2017", 8, hw, 32, seed=None).arrays(), 0)
    tmp = tempfile.mkdtemp()
    rs = {}
    for b in ("onnxruntime", "openvino"):
        for dyn in (False, True):
            art = build_artifact(b, m, f"{tmp}/{b}-{dyn}", hw, calibration=calib, qconfig={"precision": "int8"}, mode=None,
                                 export_options={"dynamic": dyn})
            rs[f"{b} {'dynamic' if dyn else 'static'}"] = load_runner(b, artifact=art, model=m, threads=1)
    outs = {k: r(x1[:1]) for k, r in rs.items()}
    for b in ("onnxruntime", "openvino"):
        a, d = outs[f"{b} static"], outs[f"{b} dynamic"]
        print(b, "static vs dynamic batch-1 outputs max |diff|:", max(float(np.abs(p - q).max()) for p, q in zip(a, d)), flush=True)
        d8 = rs[f"{b} dynamic"](x1)
        s1 = [rs[f"{b} static"](x1[i:i+1]) for i in range(8)]
        print(b, "dynamic batch 8 vs static batch 1 x8 max |diff|:", max(float(np.abs(d8[j] - np.concatenate([s[j] for s in s1])).max()) for j in range(len(d8))), flush=True)
    t = time_interleaved({k: (lambda r=r: r(x1[:1])) for k, r in rs.items()}, 2, 10, 1)
    print(f"batch 1, 1 thread, load {t['load_before']['load1']}->{t['load_after']['load1']}")
    for k, r in t["results"].items():
        print(f"  {k:24s} CPU min {r['min_cpu_ms']:8.2f} ms  wall min {r['min_ms']:8.2f} ms")



if __name__ == "__main__":
    main()
