"""What exporting a v5.0 Focus stem as its equivalent Conv buys (each backend's ``SPEC.focus_to_conv``): each backend's
artifact built twice from one checkpoint, with the stem's strided slices (``focus``) and as one 6x6
stride-2 Conv (``conv``), timed round-robin (:func:`yoloport.analysis.bench.time_interleaved`, every
configuration at the same thread count; one round-robin per runtime, since ONNX Runtime's intra-op threads
spin after a run and slow whatever runs next in the process) and compared output for output on real images.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_focus_stem.py --weights yolov5s-v5.0 --threads 2

Prints per backend and precision: min / median wall and CPU ms of each variant, the speed-up of ``conv``
over ``focus`` (by min and by median wall, by min CPU), and how far the two variants' raw head outputs are
apart (max |diff| over the images, relative to the outputs' range), whether the detections match, and each
variant's SQNR against the PyTorch model's raw outputs (what compares two int8 builds, whose roundings flip).
int8 builds calibrate on ``--calib`` (default coco-extra calib2017, 32 images) and both variants see the
same calibration images. Timings on a shared machine are noisy: the load and the other processes' CPU
share are printed beside them. Numbers, not asserts: never a test.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = {"focus": False, "conv": True}


def build_variants(model, backend: str, precision: str, hw, calibration, work: Path, threads: int) -> dict:
    """``{variant: Runner}``: ``backend``'s artifact built with and without the Focus surgery."""
    from yoloport.backends.registry import build_artifact, load_runner

    runners = {}
    for label, convert in VARIANTS.items():
        out = work / backend / precision / label
        art = build_artifact(backend, model, out, hw, calibration=calibration if precision == "int8" else None,
                             qconfig={"precision": precision}, export_options={"focus_to_conv": convert})
        runners[label] = load_runner(backend, art, model=model, threads=threads)
    return runners


def agreement(runners: dict, images, head, reference: list) -> dict:
    """How the two variants compare on ``images``: the max |diff| between their raw outputs (relative to
    the range of the focus variant's), whether every image's detections match (boxes within 0.5 px, same
    classes), and each variant's SQNR (dB) against ``reference`` (the PyTorch model's raw outputs per image):
    int8 variants differ from each other by rounding flips, so their SQNRs are what compares them."""
    import numpy as np

    from yoloport.ops.postprocess import postprocess
    from yoloport.quant.error import sqnr_db

    worst, same = 0.0, True
    outs = {k: [] for k in VARIANTS}
    for x in images:
        a, b = (runners[k](x[None]) for k in VARIANTS)
        outs["focus"].append(a)
        outs["conv"].append(b)
        for ya, yb in zip(a, b):
            rng = float(np.ptp(ya)) or 1.0
            worst = max(worst, float(np.abs(np.asarray(ya) - np.asarray(yb)).max()) / rng)
        da, db = (postprocess(o, head, 0.25, 0.45)[0] for o in (a, b))
        if len(da) != len(db) or (len(da) and (np.abs(da[:, :4] - db[:, :4]).max() > 0.5 or (da[:, 5] != db[:, 5]).any())):
            same = False
    flat = [y for r in reference for y in r]
    sqnr = {k: sqnr_db(flat, [y for r in v for y in r]) for k, v in outs.items()}
    return {"max_rel_diff": worst, "same_detections": same, "sqnr_focus_db": sqnr["focus"], "sqnr_conv_db": sqnr["conv"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default="yolov5s-v5.0", help="a v5.0 checkpoint (Focus stem): path or fixture name")
    p.add_argument("--img-size", type=int, nargs=2, default=[640, 640], metavar=("W", "H"))
    p.add_argument("--backends", nargs="+", default=["onnxruntime", "openvino"])
    p.add_argument("--precisions", nargs="+", default=["fp32", "int8"])
    p.add_argument("--calib", default=None, help="calibration images (default fixtures coco-extra calib2017)")
    p.add_argument("--calib-n", type=int, default=32)
    p.add_argument("--images", default=None, help="images to compare outputs on (default fixtures coco-extra val2017)")
    p.add_argument("--n-images", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)

    import numpy as np

    from yoloport.analysis.bench import load_bgr_images, time_interleaved
    from yoloport.data.calibration import load_calibration
    from yoloport.data.letterbox import preprocess
    from yoloport.fixtures import fixtures_dir
    from yoloport.models import load_model

    from yoloport.errors import YoloportError
    from yoloport.config import weights_path

    try:
        model = load_model(weights_path(a.weights))
    except YoloportError as e:
        raise SystemExit(str(e)) from None
    if not any(type(m).__name__ == "Focus" for m in model.model):
        raise SystemExit(f"{a.weights} has no Focus stem: nothing to compare")
    hw = (a.img_size[1], a.img_size[0])
    fx = fixtures_dir()
    calib_dir = a.calib or (fx / "coco-extra" / "images" / "calib2017" if fx else None)
    val_dir = a.images or (fx / "coco-extra" / "images" / "val2017" if fx else None)
    calibration = load_calibration(calib_dir, a.calib_n, hw) if "int8" in a.precisions else None
    images = [preprocess(im, hw, auto=False)[0] for im in load_bgr_images(val_dir, a.n_images)]
    from yoloport.backends.registry import load_runner

    torch_runner = load_runner("torch", model=model)
    reference = [torch_runner(x[None]) for x in images]
    report = {"weights": str(a.weights), "img_hw": list(hw), "threads": a.threads, "rows": []}
    with tempfile.TemporaryDirectory(prefix="bench-focus-") as tmp:
        runners = {}
        for backend in a.backends:
            for precision in a.precisions:
                pair = build_variants(model, backend, precision, hw, calibration, Path(tmp), a.threads)
                agree = agreement(pair, images, pair["focus"].head, reference)
                report["rows"].append({"backend": backend, "precision": precision, **agree})
                for label, r in pair.items():
                    runners[f"{backend}/{precision}/{label}"] = r
        x = images[0][None]
        timings, res = {}, {}
        for backend in a.backends:  # one round-robin per runtime: ORT's spinning threads would slow the next runtime
            calls = {k: (lambda r=r: r(x)) for k, r in runners.items() if k.startswith(backend + "/")}
            timings[backend] = time_interleaved(calls, a.warmup, a.repeat, a.threads)
            res.update(timings[backend]["results"])
    for backend, timing in timings.items():
        print(f"{a.weights} {hw[1]}x{hw[0]}, batch 1, threads {a.threads}, {backend}: {a.repeat} rounds round-robin; "
              f"load {timing['load_before'].get('load1')} -> {timing['load_after'].get('load1')}, "
              f"other processes' CPU share {timing['other_cpu_share']}")
    print(f"{'backend/precision':<22} {'focus min/med ms':>18} {'conv min/med ms':>18} {'speed-up min/med':>17} "
          f"{'cpu focus/conv':>15} {'max rel diff':>12} {'SQNR focus/conv dB':>19} same dets")
    for row in report["rows"]:
        key = f"{row['backend']}/{row['precision']}"
        f, c = res[f"{key}/focus"], res[f"{key}/conv"]
        row.update(focus=f, conv=c, speedup_min=f["min_ms"] / c["min_ms"], speedup_median=f["median_ms"] / c["median_ms"],
                   speedup_cpu=f["min_cpu_ms"] / c["min_cpu_ms"])
        print(f"{key:<22} {f['min_ms']:8.2f}/{f['median_ms']:8.2f} {c['min_ms']:8.2f}/{c['median_ms']:8.2f} "
              f"{row['speedup_min']:7.3f}x/{row['speedup_median']:6.3f}x {f['min_cpu_ms']:7.1f}/{c['min_cpu_ms']:6.1f} "
              f"{row['max_rel_diff']:12.2e} {row['sqnr_focus_db']:9.2f}/{row['sqnr_conv_db']:<9.2f} {row['same_detections']}")
    report["timing"] = {b: {k: v for k, v in t.items() if k != "results"} for b, t in timings.items()}
    if a.json:
        for row in report["rows"]:
            for k in ("focus", "conv"):
                row[k] = {m: v for m, v in row[k].items() if m != "times_ms"}
        Path(a.json).write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
