"""What exporting a v5.0 Focus stem as its equivalent Conv buys (each backend's ``SPEC.focus_to_conv``): each backend's
artifact built from one checkpoint with the stem's strided slices (``focus``), as one 6x6 stride-2 Conv
(``conv``), and as one ``SpaceToDepth`` feeding the 12-channel 3x3 conv (``s2d``: the slices as one op, the
conv's input-channel blocks permuted to SpaceToDepth's order; exact in float; what ONNX Runtime's optimiser makes of
the slices itself), timed round-robin (:func:`yoloport.analysis.bench.time_interleaved`, every
configuration at the same thread count; one round-robin per runtime, since ONNX Runtime's intra-op threads
spin after a run and slow whatever runs next in the process) and compared output for output on real images.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_focus_stem.py --weights yolov5s-v5.0 --threads 2

Prints per backend, precision and variant: min / median wall and min CPU ms, the speed-up over ``focus`` (by min
and by median wall), how far its raw head outputs are from ``focus``'s (max |diff| over the images, relative to
the outputs' range), whether the detections match ``focus``'s, and its SQNR against the PyTorch model's raw
outputs (what compares two int8 builds, whose roundings flip).
int8 builds calibrate on ``--calib`` (default coco-extra calib2017, 32 images) and every variant sees the
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

VARIANTS = ("focus", "conv", "s2d")
SPACE_TO_DEPTH_BLOCKS = (0, 2, 1, 3)  # Focus concatenates (dy, dx) = (0,0) (1,0) (0,1) (1,1); SpaceToDepth (0,0) (0,1) (1,0) (1,1)


def focus_slices_to_space_to_depth(onnx_path) -> int:
    """Rewrite, in place, an export whose Focus stem is strided slices + Concat as one ``SpaceToDepth``
    (blocksize 2) on the graph input, with the stem conv's input-channel blocks permuted to match; returns
    how many nodes it replaced. Exact in float (the same products, summed in another order)."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    from yoloport.deploy.onnx_graph import tensor_producers

    m = onnx.load(str(onnx_path))
    g = m.graph
    source = g.input[0].name
    producer = tensor_producers(g)
    concat = next((n for n in g.node if n.op_type == "Concat" and len(n.input) == 4
                   and all(getattr(producer.get(i), "op_type", None) == "Slice" for i in n.input)), None)
    if concat is None:
        raise SystemExit(f"{onnx_path}: no Focus stem (four slices into a Concat) to rewrite")
    conv = next(n for n in g.node if n.op_type == "Conv" and n.input[0] == concat.output[0])
    w_init = next(t for t in g.initializer if t.name == conv.input[1])
    w = numpy_helper.to_array(w_init)
    c = w.shape[1] // 4
    w_init.CopyFrom(numpy_helper.from_array(
        np.concatenate([w[:, b * c:(b + 1) * c] for b in SPACE_TO_DEPTH_BLOCKS], 1), w_init.name))
    gone, frontier = {concat.name}, list(concat.input)
    while frontier:  # the slices and their constant operands, back to the graph input
        n = producer.get(frontier.pop())
        if n is not None and n.name not in gone:
            gone.add(n.name)
            frontier += [i for i in n.input if i != source]
    kept = [n for n in g.node if n.name not in gone]
    del g.node[:]
    g.node.extend([helper.make_node("SpaceToDepth", [source], [concat.output[0]], blocksize=2,
                                    name="/model.0/SpaceToDepth")] + kept)
    onnx.checker.check_model(m)
    onnx.save(m, str(onnx_path))
    return len(gone)


def build_variants(model, backend: str, precision: str, hw, calibration, work: Path, threads: int) -> dict:
    """``{variant: Runner}``: ``backend``'s artifact built with the slices, with the Focus surgery, and with the
    slices rewritten as SpaceToDepth."""
    from yoloport.backends.registry import build, build_artifact, export_for, load_runner

    runners = {}
    calib = calibration if precision == "int8" else None
    for label in VARIANTS:
        out = work / backend / precision / label
        q = {"precision": precision}
        if label == "s2d":
            export = export_for(backend, model, out / "model.fp32.onnx", hw, export_options={"focus_to_conv": False})
            focus_slices_to_space_to_depth(export.path)
            art = build(backend, model, export, out, calib, q)
        else:
            art = build_artifact(backend, model, out, hw, calibration=calib, qconfig=q,
                                 export_options={"focus_to_conv": label == "conv"})
        runners[label] = load_runner(backend, art, model=model, threads=threads)
    return runners


def agreement(runners: dict, images, head, reference: list) -> dict:
    """How each variant compares with ``focus`` on ``images``: ``{variant: {max_rel_diff, same_detections,
    sqnr_db}}``: the max |diff| between its raw outputs and focus's (relative to the range of focus's), whether
    every image's detections match (boxes within 0.5 px, same classes), and its SQNR (dB) against ``reference``
    (the PyTorch model's raw outputs per image): int8 variants differ from each other by rounding flips, so
    their SQNRs are what compares them."""
    import numpy as np

    from yoloport.ops.postprocess import postprocess
    from yoloport.quant.error import sqnr_db

    worst, same = dict.fromkeys(VARIANTS, 0.0), dict.fromkeys(VARIANTS, True)
    outs = {k: [] for k in VARIANTS}
    for x in images:
        got = {k: runners[k](x[None]) for k in VARIANTS}
        base = postprocess(got["focus"], head, 0.25, 0.45)[0]
        for k, o in got.items():
            outs[k].append(o)
            for ya, yb in zip(got["focus"], o):
                rng = float(np.ptp(ya)) or 1.0
                worst[k] = max(worst[k], float(np.abs(np.asarray(ya) - np.asarray(yb)).max()) / rng)
            d = postprocess(o, head, 0.25, 0.45)[0]
            if len(d) != len(base) or (len(d) and (np.abs(d[:, :4] - base[:, :4]).max() > 0.5 or (d[:, 5] != base[:, 5]).any())):
                same[k] = False
    flat = [y for r in reference for y in r]
    return {k: {"max_rel_diff": worst[k], "same_detections": same[k], "sqnr_db": sqnr_db(flat, [y for r in v for y in r])}
            for k, v in outs.items()}


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
                report["rows"].append({"backend": backend, "precision": precision, "variants": agree})
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
    print(f"{'backend/precision/variant':<28} {'min/median ms':>17} {'min cpu ms':>10} {'vs focus min/med':>17} "
          f"{'max rel diff':>12} {'SQNR dB':>8} same dets")
    for row in report["rows"]:
        key = f"{row['backend']}/{row['precision']}"
        f = res[f"{key}/focus"]
        for label, v in row["variants"].items():
            t = res[f"{key}/{label}"]
            v.update(timing={m: x for m, x in t.items() if m != "times_ms"}, speedup_min=f["min_ms"] / t["min_ms"],
                     speedup_median=f["median_ms"] / t["median_ms"])
            print(f"{key + '/' + label:<28} {t['min_ms']:8.2f}/{t['median_ms']:8.2f} {t['min_cpu_ms']:10.1f} "
                  f"{v['speedup_min']:7.3f}x/{v['speedup_median']:6.3f}x {v['max_rel_diff']:12.2e} {v['sqnr_db']:8.2f} "
                  f"{v['same_detections']}")
    report["timing"] = {b: {k: v for k, v in t.items() if k != "results"} for b, t in timings.items()}
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
