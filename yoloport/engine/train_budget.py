"""How much training fits a wall-time budget on this machine: a short speed probe and the epoch count
it implies. The scripts that train yoloport's embedded models (``scripts/train_*_model.py``) use it.

The probe times a few AdamW training steps (forward, loss, backward, step) of a freshly built model on
random images with one box per image (and, for a head with landmarks, its landmarks), after one
warm-up step. It leaves out data loading and augmentation, so it overestimates the speed of real
training; :func:`epochs_for_budget` allows for that (+15 %), and on a busy shared machine the probe
may still overestimate (give the scripts ``--epochs`` there).
"""
from __future__ import annotations

import os
import time

import torch

#: landmarks of the probe's one face per image (normalised x y: eyes, nose, mouth corners), inside its box
PROBE_FACE_LANDMARKS = (0.45, 0.45, 0.55, 0.45, 0.5, 0.5, 0.46, 0.56, 0.54, 0.56)
#: what real training adds to the probe's time per training image (mosaic, loading)
LOADING_OVERHEAD = 1.15
#: how much faster validation runs than training, per image
VAL_SPEEDUP = 3.0


def default_threads() -> int:
    """Torch threads for training: 1 when the CPU is oversubscribed (1-minute load average above the
    core count), else every core."""
    cores = os.cpu_count() or 1
    return 1 if os.getloadavg()[0] > cores else cores


def probe_targets(batch: int, nc: int, nkpt: int = 0) -> torch.Tensor:
    """``[batch, 6 + 2 * nkpt]`` training targets, one box per image: ``(image index, class, xc, yc, w, h,
    x1, y1, ..., xK, yK)`` normalised, classes cycling through ``0..nc-1``."""
    if nkpt == len(PROBE_FACE_LANDMARKS) // 2:
        points = list(PROBE_FACE_LANDMARKS)
    else:
        points = [0.5, 0.5] * int(nkpt)  # the box centre: the probe times the loss, not what it learns
    rows = [[i, i % nc, 0.5, 0.5, 0.2, 0.3] + points for i in range(batch)]
    return torch.tensor(rows, dtype=torch.float32)


def measure_images_per_s(cfg: str, nc: int, img_size: int, batch: int, hyp_overrides: dict, steps: int = 3) -> float:
    """Training images per second of model ``cfg`` (``nc`` classes) at ``img_size`` x ``img_size`` with
    ``batch`` images a step and the AdamW settings of ``hyp_overrides`` (over the default hyp): the mean
    of ``steps`` timed steps after one warm-up step, times ``batch``."""
    from ..nn.model import DetectionModel
    from .loss import ComputeLoss, scale_loss_gains
    from .optim import build_optimizer
    from .train import load_hyp

    torch.manual_seed(0)
    model = DetectionModel(cfg, nc=nc).train()
    hyp = load_hyp(hyp_overrides)
    loss_fn = ComputeLoss(model, scale_loss_gains(hyp, 3, nc, img_size))
    opt = build_optimizer(model, "AdamW", hyp["lr0"], hyp["momentum"], hyp["weight_decay"])
    x = torch.rand(batch, 3, img_size, img_size)
    targets = probe_targets(batch, nc, int(getattr(model.detect, "nkpt", 0) or 0))
    seconds = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        loss, _ = loss_fn(model(x), targets)
        loss.backward()
        opt.step()
        opt.zero_grad()
        if i:  # the first step warms up
            seconds.append(time.perf_counter() - t0)
    return batch / (sum(seconds) / len(seconds))


def epoch_seconds(n_train: int, n_val: int, images_per_s: float) -> float:
    """Estimated seconds of one epoch: training ``n_train`` images at the probe's ``images_per_s`` plus
    loading (:data:`LOADING_OVERHEAD`), and validating ``n_val`` images (:data:`VAL_SPEEDUP` faster)."""
    return n_train / images_per_s * LOADING_OVERHEAD + n_val / (VAL_SPEEDUP * images_per_s)


def epochs_for_budget(seconds_left: float, n_train: int, n_val: int, images_per_s: float,
                      min_epochs: int = 2, max_epochs: int = 300) -> tuple[int, float]:
    """``(epochs, seconds per epoch)``: as many whole epochs as fit ``seconds_left``, kept within
    ``min_epochs..max_epochs`` (a time limit in training stops a run that would overrun anyway)."""
    per_epoch = epoch_seconds(n_train, n_val, images_per_s)
    return max(min_epochs, min(max_epochs, int(seconds_left / per_epoch))), per_epoch
