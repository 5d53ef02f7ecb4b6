"""How far one int8 build's mAP drop moves when its activation scales move by one float32 ulp.

Two builds that differ only in the last bit of some scales are equally good builds: the same recipe,
calibration images and model. Yet the last bit decides a few roundings, and a few changed roundings
change some detections. This script measures that floor: it takes one built artifact, moves every
activation scale by -1, 0 or +1 ulp (drawn at random, ``--draws`` times), and validates each
variant on the reporting sets. The spread of the drop over the draws is noise that no calibration
seed, recipe or bootstrap over images accounts for; a seed spread or a recipe difference smaller than
it is not a property of the recipe.

Backends: ``mlu-sim`` (each simulated convolution's input scale) and ``onnxruntime`` (the scale of
every QuantizeLinear, i.e. every quantized activation; the weights keep theirs). The artifact is one
``bench_int8_accuracy.py`` left (``--out`` of that run); the fp32 reference is ONNX Runtime fp32 at the
same size, as there.

    python benchmarks/bench_build_noise.py --weights yolov5n-v6.1 --backend mlu-sim \\
        --artifact runs/int8-accuracy/yolov5n-v6.1/640x640/mlu-sim/new_default/n128-s0/model.mlusim.safetensors
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_int8_accuracy import bootstrap_interval, fp32_reference, load_model_or_exit, reporting_sets  # noqa: E402

BACKENDS = ("mlu-sim", "onnxruntime")


def ulp_steps(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` steps of -1, 0 or +1 ulp, equally likely."""
    return rng.integers(-1, 2, size=n)


def nudge(values: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """float32 ``values`` moved by ``steps`` ulps each (-1, 0, +1): the neighbouring float32 below/above."""
    v = np.asarray(values, dtype=np.float32)
    up = np.nextafter(v, np.float32(np.inf))
    down = np.nextafter(v, np.float32(0))
    return np.where(steps > 0, up, np.where(steps < 0, down, v)).astype(np.float32)


class MluSimVariants:
    """The mlu-sim artifact's runner; ``variant(steps)`` sets the input scales nudged by ``steps``."""

    def __init__(self, artifact, model, threads):
        from yoloport.backends import mlu_sim as ms

        self.runner = ms.load(artifact, model, output="raw")
        self.convs = [c for c in self.runner.qconvs if not c.keep_float and not (c.first and c.firstconv)]
        self.base = np.array([float(c.input_scale) for c in self.convs], dtype=np.float32)

    def __len__(self):
        return len(self.base)

    def variant(self, steps):
        import torch

        for c, s in zip(self.convs, nudge(self.base, steps)):
            c.input_scale = torch.tensor(float(s), dtype=torch.float32)
        return self.runner


class OrtVariants:
    """The ONNX Runtime QDQ artifact; ``variant(steps)`` is a runner on a copy whose QuantizeLinear scales
    are nudged by ``steps`` (written to a temporary folder; the copy has no sidecar of its own)."""

    def __init__(self, artifact, model, threads):
        import onnx
        from onnx import numpy_helper

        from yoloport.backends.base import read_sidecar
        from yoloport.ops.postprocess import HeadSpec

        self.info = read_sidecar(artifact, expect_backend="onnxruntime")
        self.head = HeadSpec.from_dict(self.info["head"])  # what onnxruntime_backend.load reads; the copies have no sidecar
        self.proto = onnx.load(str(artifact))
        inits = {i.name: i for i in self.proto.graph.initializer}
        names = list(dict.fromkeys(n.input[1] for n in self.proto.graph.node if n.op_type == "QuantizeLinear"))
        self.scales = [inits[n] for n in names if n in inits]
        self.base = np.array([float(numpy_helper.to_array(i).reshape(-1)[0]) for i in self.scales], dtype=np.float32)
        self.threads = threads
        self.tmp = tempfile.TemporaryDirectory(prefix="build-noise-")
        self.runner = None

    def __len__(self):
        return len(self.base)

    def variant(self, steps):
        import onnx
        from onnx import numpy_helper

        from yoloport.backends.onnxruntime_backend import OrtRunner
        from yoloport.data.letterbox import input_multiple

        for init, s in zip(self.scales, nudge(self.base, steps)):
            dims = list(init.dims)
            init.CopyFrom(numpy_helper.from_array(np.full(dims, s, dtype=np.float32), init.name))
        path = Path(self.tmp.name) / "variant.onnx"
        onnx.save(self.proto, str(path))
        if self.runner is not None:
            self.runner.close()
        self.runner = OrtRunner(path, self.head, tuple(self.info["input_hw"]), self.info.get("batch"), threads=self.threads,
                                stride=input_multiple(self.head.strides))
        return self.runner


def validate(runner, data, hw):
    from yoloport.engine.val import validate_runner

    res = validate_runner(runner, data, img_hw=hw, batch_size=1, image_stats=True)
    return res["mAP50_95"], res["image_stats"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default="yolov5n-v6.1", help="checkpoint or model key the artifact was built from")
    p.add_argument("--backend", required=True, choices=BACKENDS)
    p.add_argument("--artifact", required=True, help="an int8 artifact of that backend (bench_int8_accuracy's --out)")
    p.add_argument("--img-size", type=int, nargs="+", default=[640], help="W [H]")
    p.add_argument("--val", nargs="+", help="reporting data YAMLs (default: coco-extra val2017, COCO128)")
    p.add_argument("--draws", type=int, default=8, help="nudged variants besides the build itself")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json")
    a = p.parse_args(argv)
    import torch

    from yoloport.errors import YoloportError

    torch.set_num_threads(a.threads)
    if not Path(a.artifact).is_file():
        raise SystemExit(f"--artifact {a.artifact}: no such file")
    hw = (a.img_size[-1], a.img_size[0])
    sets = reporting_sets(a.val)
    model = load_model_or_exit(a.weights)
    try:
        variants = (MluSimVariants if a.backend == "mlu-sim" else OrtVariants)(a.artifact, model, a.threads)
    except YoloportError as e:
        raise SystemExit(str(e)) from None
    ref = fp32_reference(model, hw, sets, a.threads)
    rng = np.random.default_rng(a.seed)
    drops = {Path(v).stem: [] for v in sets}
    interval = {}
    print(f"{a.backend} {a.artifact}: {len(variants)} activation scales; draw 0 is the build itself", flush=True)
    for k in range(a.draws + 1):
        steps = np.zeros(len(variants), dtype=np.int64) if k == 0 else ulp_steps(len(variants), rng)
        runner = variants.variant(steps)
        row = []
        for v in sets:
            m, stats = validate(runner, v, hw)
            drop = (ref[v]["mAP50_95"] - m) * 100
            drops[Path(v).stem].append(drop)
            if k == 0:
                interval[Path(v).stem] = bootstrap_interval(ref[v]["stats"], stats)
            row.append(f"{Path(v).stem} {drop:+.2f}")
        moved = int(np.count_nonzero(steps))
        print(f"draw {k}: {moved} scales moved by one ulp; drop " + ", ".join(row), flush=True)
    print()
    print("| set | the build | its 95% image-bootstrap interval | over the draws: mean | SD | min .. max |")
    print("|---|---|---|---|---|---|")
    for name, d in drops.items():
        ci = interval.get(name)
        ci_s = f"[{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "-"
        print(f"| {name} | {d[0]:+.2f} | {ci_s} | {statistics.mean(d):+.2f} | {statistics.stdev(d):.2f} | "
              f"{min(d):+.2f} .. {max(d):+.2f} |")
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "drops": drops, "interval": interval}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
