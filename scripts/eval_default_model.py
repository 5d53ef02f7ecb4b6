"""Measure a synthetic-shapes model (default: the embedded one) on freshly generated synthetic sets.

    python scripts/eval_default_model.py                                  # 64 and 200 new images, seeds below
    python scripts/eval_default_model.py --weights runs/d.safetensors --sets 64:11 200:12

For each ``N:SEED`` it generates a new ``val`` split (seed never used for training: the shipped model was
trained on seeds 0 and 1001) and validates (conf 0.001, IoU 0.6, Ultralytics metrics) under two protocols:

- ``native``: images generated at ``--img-size`` (320x320, the model's size) and validated there, as
  ``scripts/train_default_model.py`` measures;
- ``downscaled``: images generated at 640x640 (``yoloport data synth``'s default size) and letterboxed to
  ``--img-size``: every object is half as large (down to 4 px), which is how issue 15 measured 0.765.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PROTOCOLS = {"native": 1, "downscaled": 2}  # generated image side = img_size x this


def parse_sets(items: list[str]) -> list[tuple[int, int]]:
    """``["64:11", "200:12"]`` -> ``[(64, 11), (200, 12)]``."""
    out = []
    for item in items:
        n, _, seed = item.partition(":")
        out.append((int(n), int(seed)))
    return out


def main() -> int:
    import torch

    from yoloport.data.synth import make_synthetic_dataset
    from yoloport.engine.val import torch_infer, validate
    from yoloport.models import load_model

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default="default")
    p.add_argument("--sets", nargs="+", default=["64:20261201", "200:20261202"], metavar="N:SEED")
    p.add_argument("--img-size", type=int, default=320)
    p.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=list(PROTOCOLS))
    p.add_argument("--work", default=str(REPO / "runs" / "eval_default_model"))
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model = load_model(a.weights).eval()
    rows = []
    for n, seed in parse_sets(a.sets):
        for protocol in a.protocols:
            side = a.img_size * PROTOCOLS[protocol]
            data = make_synthetic_dataset(Path(a.work) / f"{protocol}_{n}_{seed}", {"val": n}, side, seed=seed,
                                          overwrite=True)
            m = validate(torch_infer(model), data, img_size=a.img_size, batch_size=16, progress=False)
            rows.append({"images": n, "seed": seed, "protocol": protocol, "generated_px": side, "labels": m["n_labels"],
                         "precision": round(m["precision"], 4), "recall": round(m["recall"], 4),
                         "mAP50": round(m["mAP50"], 4), "mAP50_95": round(m["mAP50_95"], 4)})
            r = rows[-1]
            print(f"{n:4d} images seed {seed} {protocol:10s} ({side}px -> {a.img_size}): P {r['precision']:.3f} "
                  f"R {r['recall']:.3f} mAP50 {r['mAP50']:.4f} mAP50-95 {r['mAP50_95']:.4f} ({r['labels']} objects)",
                  flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"weights": a.weights, "img_size": a.img_size, "results": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
