"""Start a new architecture from a trained checkpoint (:mod:`yoloport.nn.warm_start`): tensors that match
by name and shape are copied, Detect levels matched by stride; new layers keep a fresh initialisation.

    python scripts/warm_start.py --weights default --cfg yolov5n-p2 --out runs/p2/start.safetensors

How the embedded default model's stride-4 head (``yoloport/nn/cfg/yolov5n-p2.yaml``) was started from the
yolov5n one; then ``scripts/train_default_model.py --weights runs/p2/start.safetensors`` trains it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> int:
    from yoloport.models import load_model, save_model
    from yoloport.nn.warm_start import warm_start

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default="default", help="the trained checkpoint (path or model key)")
    p.add_argument("--cfg", required=True, help="the new architecture (bundled config name or YAML path)")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0, help="initialisation of the layers that are not copied")
    a = p.parse_args()
    new, copied, kept = warm_start(load_model(a.weights), a.cfg, seed=a.seed)
    new.img_size = new.img_size or (320, 320)
    save_model(new, a.out, origin="scripts/warm_start.py", warm_started_from=str(a.weights))
    print(f"copied {len(copied)} of {len(copied) + len(kept)} tensors; new: "
          f"{sorted({'.'.join(k.split('.')[:2]) for k in kept})}")
    print(f"saved {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
