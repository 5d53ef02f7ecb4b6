"""int8 accuracy: mAP50-95 of fp32 vs ONNX Runtime int8 vs OpenVINO int8 on a labelled set.

    python benchmarks/bench_int8_accuracy.py                       # both fixture models, COCO128, 640
    python benchmarks/bench_int8_accuracy.py --weights yolov5n-v6.1.pt --calib-n 32 --variants ort-int8

Every backend is validated with the same fixed 640x640 letterbox (``fixed_shape_hw``), the one
preprocessing path; calibration images are drawn from ``--calib`` (default the data YAML's train split)
and kept apart from the validation images (issue 11: an overlap, as COCO128's train = val, is split by
content hash, :func:`protocol_sets`); every drop carries a 95% paired-bootstrap interval over the
validation images (:func:`add_intervals`, callable for any rows with ``image_stats``). fp32 (torch, fixed
shape, or ``ort-fp32``, which gives the identical mAP and runs far faster) is the reference; the
drop column is against the first of torch-fp32 / ort-fp32 / ov-fp32 that was run. Prints a table and
writes JSON (``--json``). Numbers, not asserts: a benchmark, never a test.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = {
    # name: (backend, precision, qconfig)
    "torch-fp32": ("torch", "fp32", {}),
    "ort-fp32": ("onnxruntime", "fp32", {}),
    "ort-int8": ("onnxruntime", "int8", {}),
    "ort-int8-head-tail": ("onnxruntime", "int8", {"head_fp32": "tail"}),
    "ort-int8-entropy": ("onnxruntime", "int8", {"calib_method": "entropy"}),
    "ort-int8-percentile": ("onnxruntime", "int8", {"calib_method": "percentile"}),
    "ov-fp32": ("openvino", "fp32", {}),
    "ov-int8": ("openvino", "int8", {}),
    "ov-int8-head-convs": ("openvino", "int8", {"head_fp32": "convs"}),
}
DEFAULT_VARIANTS = ("ort-fp32", "ort-int8", "ov-int8")  # ort-fp32 == torch-fp32 (measured), and 10x faster here


def fixtures():
    from yoloport.fixtures import fixtures_dir

    fx = fixtures_dir()
    if fx is None:
        raise SystemExit("shared fixtures not found (set YOLOPORT_FIXTURES)")
    return fx


def run_variant(name, model, data, hw, calib, out_dir, threads, val_images):
    from yoloport.backends.registry import build_artifact, load_runner
    from yoloport.engine.val import validate
    from yoloport.ops.postprocess import decode_outputs

    backend, precision, q = VARIANTS[name]
    t0 = time.perf_counter()
    if backend == "torch":
        runner = load_runner("torch", model=model, threads=threads)
        build_s = 0.0
    else:
        art = build_artifact(backend, model, out_dir / name, hw, calib if precision == "int8" else None, {"precision": precision, **q})
        build_s = time.perf_counter() - t0
        runner = load_runner(backend, art, model=model, threads=threads)

    def infer(x):
        return decode_outputs(runner(x), runner.head)

    data_arg = data
    if val_images and not hasattr(data, "val"):
        from yoloport.data.dataset import list_images, load_data_yaml

        cfg = load_data_yaml(data)
        cfg.val = list_images(cfg.split("val"))[:val_images]
        data_arg = cfg
    t1 = time.perf_counter()
    res = validate(infer, data_arg, img_size=max(hw), batch_size=1, fixed_shape_hw=hw, progress=False, image_stats=True)
    return {
        "image_stats": res["image_stats"],  # for add_intervals; not written to JSON
        "variant": name, "backend": backend, "precision": precision, "qconfig": q,
        "mAP50": res["mAP50"], "mAP50_95": res["mAP50_95"], "images": res["n_images"],
        "build_s": round(build_s, 1), "val_s": round(time.perf_counter() - t1, 1),
        "infer_ms": round(res["speed_ms"]["inference"], 1),
    }


def protocol_sets(calib_source, data, val_images: int = 0):
    """Calibration pool and validation images made disjoint (split by content hash when they overlap,
    one warning line): ``(calibration paths, validation DataConfig, protocol record)``."""
    from dataclasses import replace

    from yoloport.data.calibration import resolve_source
    from yoloport.data.protocol import image_set, labelled_split, make_disjoint, protocol_record

    cfg, _, images = labelled_split(data)
    images = images[:val_images] if val_images else images
    pool, _ = resolve_source(calib_source)
    sets, found = make_disjoint([image_set("calibration", str(calib_source), pool), image_set("reporting", str(data), images)],
                                warn=lambda m: print(f"warning: {m}"))
    return list(sets[0].paths), replace(cfg, val=list(sets[1].paths)), protocol_record(sets, found, "split")


def add_intervals(results: list[dict], reference=("torch-fp32", "ort-fp32", "ov-fp32"), n_boot: int = 1000) -> None:
    """Give every row with ``image_stats`` a ``drop_ci`` (points, paired bootstrap over images against the
    first ``reference`` variant run for the same weights; :func:`yoloport.analysis.bootstrap.paired_bootstrap_drop`)."""
    from yoloport.analysis.bootstrap import paired_bootstrap_drop

    for r in results:
        ref = next((x for v in reference for x in results if x["weights"] == r["weights"] and x["variant"] == v), None)
        if ref is not None and r.get("image_stats") is not None and ref.get("image_stats") is not None:
            r["drop_ci"] = paired_bootstrap_drop(ref["image_stats"], r["image_stats"], n_boot=n_boot)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", nargs="+", help="checkpoints (default: the fixture yolov5s-v5.0 and yolov5n-v6.1)")
    p.add_argument("--data", help="data YAML (default: fixture COCO128)")
    p.add_argument("--img-size", type=int, default=640)
    p.add_argument("--calib-n", type=int, default=32)
    p.add_argument("--calib", help="calibration images (default: the data YAML's train split); kept apart from validation")
    p.add_argument("--val-images", type=int, default=0, help="validate on the first N images only (0: all)")
    p.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), choices=list(VARIANTS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="runs/bench_int8_accuracy")
    p.add_argument("--json", help="write the results as JSON here")
    a = p.parse_args(argv)

    import torch

    from yoloport.data.calibration import load_calibration
    from yoloport.models import load_model

    torch.set_num_threads(a.threads)
    fx = None if (a.weights and a.data) else fixtures()
    weights = a.weights or [str(fx / "weights" / "yolov5s-v5.0.pt"), str(fx / "weights" / "yolov5n-v6.1.pt")]
    data = a.data or str(fx / "coco128" / "coco128.yaml")
    hw = (a.img_size, a.img_size)
    results = []
    calib_paths, val_cfg, protocol = protocol_sets(a.calib or f"{data}:train", data, a.val_images)
    for w in weights:
        model = load_model(w)
        calib = load_calibration(calib_paths, n=a.calib_n, img_size_hw=hw, stride=int(model.stride.max()))
        out_dir = Path(a.out) / Path(w).stem
        for v in a.variants:
            r = run_variant(v, model, val_cfg, hw, calib, out_dir, a.threads, a.val_images)
            r["weights"] = Path(w).name
            results.append(r)
            print(f"{r['weights']:<20} {v:<26} mAP50-95 {r['mAP50_95']:.4f}  mAP50 {r['mAP50']:.4f}  "
                  f"build {r['build_s']:.0f}s  val {r['val_s']:.0f}s  infer {r['infer_ms']:.0f} ms/img", flush=True)
    add_intervals(results)
    print()
    print(f"{'weights':<20} {'variant':<26} {'mAP50-95':>9} {'drop (pts) [95% interval]':>28} {'mAP50':>7} {'infer ms':>9}")
    for r in results:
        ci = r.get("drop_ci")
        drop = f"{ci['drop']:+.2f} [{ci['low']:+.2f}, {ci['high']:+.2f}]" + ("*" if ci["within_noise"] else " ") if ci else "-"
        print(f"{r['weights']:<20} {r['variant']:<26} {r['mAP50_95']:>9.4f} {drop:>28} {r['mAP50']:>7.4f} {r['infer_ms']:>9.1f}")
    print(f"* within noise (the interval holds 0); {len(val_cfg.val)} validation images, calibration: "
          f"{protocol['calibration']['n_images']} disjoint candidates")
    for r in results:
        r.pop("image_stats", None)
    doc = {"data": data, "img_size": a.img_size, "calib_n": a.calib_n, "threads": a.threads, "protocol": protocol,
           "results": results}
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
