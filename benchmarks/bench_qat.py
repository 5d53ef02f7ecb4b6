"""QAT vs PTQ vs fp32: mAP50-95 on images that neither calibration nor fine-tuning saw.

    python benchmarks/bench_qat.py --weights yolov5n-v6.1 --train-n 64 --epochs 1 --out /tmp/bench_qat

fp32 (ONNX Runtime fp32, the same mAP as torch at a fixed shape) and plain PTQ (``yoloport quantize``'s
default for the backend, calibrated on ``--calib-n`` images of coco-extra calib2017) against QAT
(:func:`yoloport.analysis.qat.qat_port`: fine-tuned on the first ``--train-n`` images of calib2017,
ranges initialised from the same calibration images), all validated on coco-extra val2017 (disjoint
from calib2017) at one fixed ``--img-size``. Prints a table and writes JSON into ``--out``. Numbers, not asserts.

Measured once (2026-11-29, 2 cores at load 20-24, yolov5n-v6.1, 64 calibration images, ONNX Runtime,
mAP50-95 on the 100 val2017 images):

- at 640 (``--train-n 64 --epochs 1 --batch-size 8 --lr0 5e-5``): fp32 0.3321, PTQ 0.3281 (0.40), QAT
  0.3214 (1.07); with the calibration drawn from the first 96 calib2017 images instead, PTQ was 0.3122 (1.99);
- at 320 (``--img-size 320 --train-n 64 --epochs 1 --batch-size 8``: 8 optimiser steps): fp32 0.2915,
  PTQ 0.2903 (0.13); the QDQ graph with QAT's starting grids (MinMax, no training) 0.2837 (0.78);
  QAT ``--lr0 5e-5`` 0.2893 (0.23), ``--lr0 5e-4`` 0.2733 (1.82): the low rate recovers most of what its
  starting grids lose, the high one does harm; neither beats ONNX Runtime's own PTQ at this size.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def validate_artifact(backend: str, artifact, data, hw, val_n: int | None) -> dict:
    """mAP of an artifact on ``data``'s val split (the first ``val_n`` images) at the fixed shape ``hw``."""
    from yoloport.backends.registry import load_runner
    from yoloport.data.dataset import list_images, load_data_yaml
    from yoloport.engine.val import validate
    from yoloport.ops.postprocess import decode_outputs

    runner = load_runner(backend, artifact)
    cfg = load_data_yaml(data)
    if val_n:
        cfg.val = list_images(cfg.split("val"))[:val_n]
    res = validate(lambda x: decode_outputs(runner(x), runner.head), cfg, img_size=max(hw), batch_size=1,
                   fixed_shape_hw=hw, progress=False)
    return {"mAP50": res["mAP50"], "mAP50_95": res["mAP50_95"], "images": res["n_images"]}


def training_subset(fixtures: Path, n: int, out: Path) -> Path:
    """A data YAML over coco-extra: train = the first ``n`` calib2017 images (a list file), val = val2017."""
    import yaml

    from yoloport.data.dataset import list_images, load_data_yaml

    src = fixtures / "coco-extra" / "coco-extra.yaml"
    cfg = load_data_yaml(src)
    train = list_images(cfg.split("train"))[:n]
    (out / "train.txt").write_text("\n".join(str(p) for p in train) + "\n")
    doc = yaml.safe_load(src.read_text())
    doc.update(path=str(out), train="train.txt", val=str(src.parent / "images" / "val2017"))
    (out / "data.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return out / "data.yaml"


def main(argv=None) -> int:
    from yoloport.analysis.qat import qat_port
    from yoloport.backends.registry import build_artifact
    from yoloport.data.calibration import load_calibration
    from yoloport.data.letterbox import input_multiple
    from yoloport.fixtures import fixtures_dir
    from yoloport.models import load_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default="yolov5n-v6.1", help="fixture weights name or a checkpoint path")
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--img-size", type=int, default=640)
    ap.add_argument("--calib-n", type=int, default=64)
    ap.add_argument("--train-n", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr0", type=float, default=None)
    ap.add_argument("--val-n", type=int, default=None, help="validate on the first N val2017 images (default all 100)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    fx = fixtures_dir()
    if fx is None:
        raise SystemExit("shared fixtures not found (set YOLOPORT_FIXTURES)")
    weights = args.weights if Path(args.weights).is_file() else str(fx / "weights" / f"{args.weights}.pt")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=False)
    hw = (args.img_size, args.img_size)
    data = training_subset(fx, args.train_n, out)
    model = load_model(weights)
    calib = load_calibration(str(data) + ":train", n=args.calib_n, img_size_hw=hw, stride=input_multiple(model.stride), seed=0)
    rows = {}
    t = time.perf_counter()
    fp32 = build_artifact(args.backend, model, out / "fp32", hw, None, {"precision": "fp32"})
    rows["fp32"] = {**validate_artifact(args.backend, fp32, data, hw, args.val_n), "seconds": round(time.perf_counter() - t, 1)}
    print("fp32", rows["fp32"], flush=True)
    t = time.perf_counter()
    ptq = build_artifact(args.backend, model, out / "ptq", hw, calib, {"precision": "int8"})
    rows["ptq"] = {**validate_artifact(args.backend, ptq, data, hw, args.val_n), "seconds": round(time.perf_counter() - t, 1)}
    print("ptq", rows["ptq"], flush=True)
    t = time.perf_counter()
    (out / "qat").mkdir()
    res = qat_port(weights, data, args.backend, out / "qat", calib=str(data) + ":train", calib_n=args.calib_n,
                   epochs=args.epochs, batch_size=args.batch_size, img_size_hw=hw, lr0=args.lr0, workers=1, progress=True)
    rows["qat"] = {**validate_artifact(args.backend, res.artifact, data, hw, args.val_n),
                   "fake_quant_val": res.metrics, "seconds": round(time.perf_counter() - t, 1)}
    print("qat", rows["qat"], flush=True)
    ref = rows["fp32"]["mAP50_95"]
    print(f"\n{'variant':<8}{'mAP50':>9}{'mAP50-95':>10}{'drop (points)':>15}")
    for k, r in rows.items():
        print(f"{k:<8}{r['mAP50']:>9.4f}{r['mAP50_95']:>10.4f}{100 * (ref - r['mAP50_95']):>15.2f}")
    doc = {"weights": weights, "backend": args.backend, "img_size": hw, "calib_n": args.calib_n, "train_n": args.train_n,
           "epochs": args.epochs, "batch_size": args.batch_size, "lr0": args.lr0, "rows": rows,
           "qat": res.to_dict(), "validation": "coco-extra val2017 (disjoint from calib2017)"}
    (out / "bench_qat.json").write_text(json.dumps(doc, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
