"""Does an int8 build's mAP drop depend on how many images it is measured on?

mAP@0.5:0.95 is a mean over classes of a ranking metric, not a mean over images: on a small set many
classes have one or two labels, and one detection changed by quantization swings such a class's AP. So
the drop measured on 100-128 images may differ from what the same build would show on a larger set of the
same kind of images; where it is larger, the paired bootstrap (whose resamples hold about 63% distinct
images) centres its interval above the measured drop.

For each artifact and reporting set this prints the mean drop over subsets of 1/4, 1/2 and 3/4 of the
images (distinct images, ``analysis.bootstrap.drop_by_sample_size``), the drop on all of them, and the
paired-bootstrap interval with its resamples' mean. A mean that falls as the subsets grow says the
measured drop still overstates the large-set drop; a flat one says the set is large enough for the
drop to hold.

    python benchmarks/bench_drop_vs_sample_size.py --weights yolov5n-v6.1 --backend onnxruntime \\
        --artifact runs/int8-accuracy/yolov5n-v6.1/640x640/onnxruntime/new_default/n128-s*/model.onnxruntime.int8.onnx
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_int8_accuracy import evaluate, fp32_reference, load_model_or_exit, reporting_sets  # noqa: E402

FRACTIONS = (0.25, 0.5, 0.75, 1.0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default="yolov5n-v6.1", help="checkpoint or model key the artifacts were built from")
    p.add_argument("--backend", required=True, choices=("onnxruntime", "openvino", "rknn", "mlu-sim"))
    p.add_argument("--artifact", nargs="+", required=True, help="int8 artifacts of that backend (bench_int8_accuracy's --out)")
    p.add_argument("--img-size", type=int, nargs="+", default=[640], help="W [H]")
    p.add_argument("--val", nargs="+", help="reporting data YAMLs (default: coco-extra val2017, COCO128)")
    p.add_argument("--draws", type=int, default=500, help="subsets per size")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json")
    a = p.parse_args(argv)
    import torch

    from yoloport.analysis.bootstrap import drop_by_sample_size, paired_bootstrap_drop
    torch.set_num_threads(a.threads)
    missing = [x for x in a.artifact if not Path(x).is_file()]
    if missing:
        raise SystemExit(f"--artifact {missing[0]}: no such file")
    hw = (a.img_size[-1], a.img_size[0])
    sets = reporting_sets(a.val)
    model = load_model_or_exit(a.weights)
    ref = {v: r["stats"] for v, r in fp32_reference(model, hw, sets, a.threads).items()}
    rows = []
    for art in a.artifact:
        for v in sets:
            q = evaluate(a.backend, art, model, v, hw, a.threads, 0)["stats"]
            n = len(q)
            sizes = sorted({max(1, round(f * n)) for f in FRACTIONS})
            by = drop_by_sample_size(ref[v], q, sizes, n_draws=a.draws)
            ci = paired_bootstrap_drop(ref[v], q)
            boot_mean = ci["resampled_mean"]
            rows.append({"artifact": art, "set": Path(v).stem, "n_images": n, "drop": by["drop"],
                         "by_size": {str(k): r for k, r in by["sizes"].items()},
                         "bootstrap": {"low": ci["low"], "high": ci["high"], "mean": boot_mean}})
            sizes_s = "  ".join(f"{k}: {r['mean']:+.2f}" for k, r in by["sizes"].items())
            print(f"{Path(art).parent.name} {Path(v).stem}: mean drop by subset size  {sizes_s}  | bootstrap "
                  f"[{ci['low']:+.2f}, {ci['high']:+.2f}], resamples' mean {boot_mean:+.2f}", flush=True)
    print()
    print("| set | builds | mean drop over the builds, by subset size (images: points) | bootstrap resamples' mean |")
    print("|---|---|---|---|")
    for v in sets:
        mine = [r for r in rows if r["set"] == Path(v).stem]
        sizes = list(mine[0]["by_size"])
        cols = "  ".join(f"{k}: {np.mean([r['by_size'][k]['mean'] for r in mine]):+.2f}" for k in sizes)
        print(f"| {Path(v).stem} | {len(mine)} | {cols} | {np.mean([r['bootstrap']['mean'] for r in mine]):+.2f} |")
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
