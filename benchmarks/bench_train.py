"""Training throughput (images/s) of a YOLOv5 model on this machine: forward + loss + backward +
optimiser step on random images with random targets, timed after a few warm-up iterations.

    python benchmarks/bench_train.py                         # yolov5n, 640x640, batch 8, CPU
    python benchmarks/bench_train.py --cfg yolov5s --img-size 320 --batch-size 16 --iters 10

Prints one table row and a JSON line. The data pipeline is not included (see ``--with-data`` for
mosaic-augmented samples from a synthetic dataset, measured separately).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from yoloport.engine.loss import ComputeLoss, scale_loss_gains  # noqa: E402
from yoloport.engine.optim import build_optimizer  # noqa: E402
from yoloport.engine.train import load_hyp  # noqa: E402
from yoloport.nn.model import DetectionModel  # noqa: E402


def random_targets(batch: int, per_image: int, nc: int, g: torch.Generator) -> torch.Tensor:
    """``[batch * per_image, 6]`` rows (img, cls, xc, yc, w, h) with plausible box sizes."""
    n = batch * per_image
    img = torch.arange(batch).repeat_interleave(per_image).float()
    cls = torch.randint(0, nc, (n,), generator=g).float()
    wh = torch.rand(n, 2, generator=g) * 0.3 + 0.02
    xy = torch.rand(n, 2, generator=g) * (1 - wh) + wh / 2
    return torch.cat([img[:, None], cls[:, None], xy, wh], 1)


def bench_model(cfg: str, img_size: int, batch: int, iters: int, warmup: int, device: str) -> dict:
    torch.manual_seed(0)
    model = DetectionModel(cfg, nc=80).to(device).train()
    hyp = load_hyp(None)
    loss_fn = ComputeLoss(model, scale_loss_gains(hyp, model.detect.nl, 80, img_size))
    opt = build_optimizer(model, "SGD", hyp["lr0"], hyp["momentum"], hyp["weight_decay"])
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, img_size, img_size, generator=g).to(device)
    t = random_targets(batch, 8, 80, g).to(device)
    times = []
    for i in range(warmup + iters):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss, _ = loss_fn(model(x), t)
        loss.backward()
        opt.step()
        opt.zero_grad()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    s = sorted(times)[len(times) // 2]
    return {"cfg": cfg, "img_size": img_size, "batch": batch, "device": device, "threads": torch.get_num_threads(),
            "iters": iters, "median_step_s": s, "images_per_s": batch / s, "mean_images_per_s": batch * len(times) / sum(times)}


def bench_data(img_size: int, n: int) -> dict:
    """Samples/s of the augmented training dataset (mosaic + perspective + HSV + flip), one process."""
    from yoloport.data.dataset import load_data_yaml
    from yoloport.data.synth import make_synthetic_dataset
    from yoloport.data.train_dataset import TrainDataset

    with tempfile.TemporaryDirectory() as d:
        y = make_synthetic_dataset(Path(d) / "s", 16, (img_size, img_size), seed=0, workers=1)
        data = load_data_yaml(y)
        ds = TrainDataset(data.train, data.nc, (img_size, img_size), load_hyp(None), seed=0)
        ds[0]
        t0 = time.perf_counter()
        for i in range(n):
            ds[i % len(ds)]
        dt = time.perf_counter() - t0
    return {"data_samples_per_s": n / dt}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", default="yolov5n")
    p.add_argument("--img-size", type=int, default=640)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--with-data", action="store_true", help="also time the augmented data pipeline")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    r = bench_model(a.cfg, a.img_size, a.batch_size, a.iters, a.warmup, a.device)
    if a.with_data:
        r.update(bench_data(a.img_size, 32))
    r["cpu_count"] = os.cpu_count()
    try:
        r["load_avg_1m"] = os.getloadavg()[0]
    except OSError:
        pass
    print(f"{r['cfg']} {r['img_size']}x{r['img_size']} batch {r['batch']} on {r['device']} ({r['threads']} threads): "
          f"{r['images_per_s']:.2f} images/s (median step {r['median_step_s']:.2f} s)"
          + (f"; data pipeline {r['data_samples_per_s']:.1f} samples/s" if "data_samples_per_s" in r else ""))
    print(json.dumps(r))


if __name__ == "__main__":
    main()
