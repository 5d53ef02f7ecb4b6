"""Why a synthetic-shapes model misses objects: per label size, is a miss unfound, the wrong class, or a loose box?

    python scripts/diagnose_default_model.py                                   # the embedded model, 100 new images
    python scripts/diagnose_default_model.py --weights runs/d.safetensors --n 100 --seed 20261290

Generates a fresh ``val`` set at ``--img-size`` (the native protocol of ``scripts/eval_default_model.py``),
validates it, then sorts every label by its longest side (original pixels) into bins and, using only the
detections at or above ``--conf`` (default 0.25, a deployment threshold; mAP itself uses 0.001), calls it:

- ``found``: a detection of its class with IoU >= 0.5;
- ``loose box``: a detection of its class overlaps it (0.1 <= IoU < 0.5) and none reaches 0.5;
- ``wrong class``: a detection of another class has IoU >= 0.5 with it (the confused pair is counted);
- ``unfound``: nothing above ``--conf`` overlaps it by IoU >= 0.1.

A label is given the first of these that holds. Diagnosis only: mAP is measured by ``eval_default_model.py``.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SIZE_BINS_PX = (0, 12, 16, 24, 48, 10_000)  # label longest side, original pixels: [lo, hi)


def size_bin(longest_side_px: float) -> int:
    """Index into :data:`SIZE_BINS_PX` of a label's longest side."""
    return int(np.searchsorted(SIZE_BINS_PX, longest_side_px, side="right") - 1)


def main() -> int:
    import torch

    from yoloport.data.synth import make_synthetic_dataset
    from yoloport.engine.image_stats import LABEL_OUTCOMES as OUTCOMES
    from yoloport.engine.image_stats import label_outcomes
    from yoloport.engine.val import torch_infer, validate
    from yoloport.models import load_model

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default="default")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--seed", type=int, default=20261290)
    p.add_argument("--img-size", type=int, default=320)
    p.add_argument("--conf", type=float, default=0.25)
    p.add_argument("--work", default=str(REPO / "runs" / "diagnose_default_model"))
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model = load_model(a.weights).eval()
    names = list(model.names)
    data = make_synthetic_dataset(Path(a.work) / f"val_{a.n}_{a.seed}", {"val": a.n}, a.img_size, seed=a.seed,
                                  overwrite=True)
    m = validate(torch_infer(model), data, img_size=a.img_size, batch_size=16, progress=False, image_stats=True)
    print(f"{a.n} images seed {a.seed}: mAP50 {m['mAP50']:.4f} mAP50-95 {m['mAP50_95']:.4f} "
          f"P {m['precision']:.3f} R {m['recall']:.3f}")
    counts = np.zeros((len(SIZE_BINS_PX) - 1, len(OUTCOMES)), np.int64)
    pairs: Counter = Counter()  # (true name, predicted name) of the wrong-class labels under 16 px
    per_class_small = Counter()  # (name, outcome) under 16 px
    for s in m["image_stats"]:
        for c, side, outcome, other in label_outcomes(s, a.conf):
            counts[size_bin(side), OUTCOMES.index(outcome)] += 1
            if side < 16:
                per_class_small[(names[c], outcome)] += 1
                if other >= 0:
                    pairs[(names[c], names[other])] += 1
    print(f"\nlabels by longest side (px), outcome at conf >= {a.conf}:")
    print(f"{'size':>10s} {'labels':>6s} " + " ".join(f"{o:>12s}" for o in OUTCOMES))
    for i in range(len(SIZE_BINS_PX) - 1):
        n = counts[i].sum()
        frac = counts[i] / max(n, 1)
        print(f"{SIZE_BINS_PX[i]:>4d}-{SIZE_BINS_PX[i + 1]:<5d} {n:6d} " + " ".join(f"{f:12.2f}" for f in frac))
    print("\nunder 16 px, per class:")
    for name in names:
        row = {o: per_class_small[(name, o)] for o in OUTCOMES}
        print(f"  {name:10s} " + " ".join(f"{o} {row[o]:3d}" for o in OUTCOMES))
    print("\nunder 16 px, wrong-class pairs (true -> predicted):", dict(pairs.most_common(8)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
