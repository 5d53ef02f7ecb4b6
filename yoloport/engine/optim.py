"""Optimiser, learning-rate schedule and warm-up of YOLOv5 v7.0 (``smart_optimizer`` and train.py).

Parameter groups, in this order (warm-up treats group 0 specially):

0. biases — no weight decay; warm-up starts their lr at ``warmup_bias_lr`` (0.1) and lowers it;
1. other weights (conv) — weight decay ``hyp['weight_decay'] * batch * accumulate / 64``;
2. normalisation-layer weights (BatchNorm gammas) — no weight decay.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..errors import YoloportError

NOMINAL_BATCH = 64
OPTIMIZERS = ("SGD", "Adam", "AdamW")


def param_groups(model: nn.Module) -> tuple[list, list, list]:
    """``(weights with decay, norm weights, biases)`` of the trainable parameters of ``model``."""
    norm_types = tuple(v for k, v in nn.__dict__.items() if "Norm" in k and isinstance(v, type))
    decay, no_decay_norm, bias = [], [], []
    for mod in model.modules():
        for name, p in mod.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if name == "bias":
                bias.append(p)
            elif name == "weight" and isinstance(mod, norm_types):
                no_decay_norm.append(p)
            else:
                decay.append(p)
    return decay, no_decay_norm, bias


def build_optimizer(model: nn.Module, name: str = "SGD", lr: float = 0.01, momentum: float = 0.937,
                    weight_decay: float = 5e-4) -> torch.optim.Optimizer:
    """SGD (Nesterov), Adam or AdamW with YOLOv5's three parameter groups (biases first)."""
    decay, norm_w, bias = param_groups(model)
    if name == "SGD":
        opt = torch.optim.SGD(bias, lr=lr, momentum=momentum, nesterov=True)
    elif name == "Adam":
        opt = torch.optim.Adam(bias, lr=lr, betas=(momentum, 0.999))
    elif name == "AdamW":
        opt = torch.optim.AdamW(bias, lr=lr, betas=(momentum, 0.999), weight_decay=0.0)
    else:
        raise YoloportError(f"unknown optimizer {name!r}: choose one of {', '.join(OPTIMIZERS)}")
    opt.add_param_group({"params": decay, "weight_decay": weight_decay})
    opt.add_param_group({"params": norm_w, "weight_decay": 0.0})
    for g in opt.param_groups:
        g["initial_lr"] = lr
    return opt


def accumulate_steps(batch_size: int, nbs: int = NOMINAL_BATCH) -> int:
    """Batches whose gradients are summed before a step, so the effective batch is ~``nbs``."""
    return max(round(nbs / batch_size), 1)


def lr_lambda(epochs: int, lrf: float, cos: bool = False):
    """The epoch factor of ``lr0``: linear from 1 to ``lrf``, or a one-cycle cosine (``cos``)."""
    if cos:
        return lambda x: ((1 - math.cos(x * math.pi / epochs)) / 2) * (lrf - 1) + 1
    return lambda x: (1 - x / epochs) * (1.0 - lrf) + lrf


def set_epoch_lr(optimizer: torch.optim.Optimizer, lf, epoch: int) -> None:
    """What ``LambdaLR`` holds during ``epoch``: ``lr = initial_lr * lf(epoch)`` for every group."""
    for g in optimizer.param_groups:
        g["lr"] = g["initial_lr"] * lf(epoch)


def warmup(optimizer: torch.optim.Optimizer, ni: int, nw: int, lf, epoch: int, hyp: dict,
           batch_size: int, nbs: int = NOMINAL_BATCH) -> int:
    """Apply warm-up at iteration ``ni`` of ``nw``; returns the accumulation to use now.

    lr ramps linearly from ``warmup_bias_lr`` (biases, group 0) or 0 (others) to
    ``initial_lr * lf(epoch)``; SGD momentum from ``warmup_momentum`` to ``momentum``;
    accumulation from 1 to ``nbs / batch_size``.
    """
    xi = [0, nw]
    acc = max(1, int(np.interp(ni, xi, [1, nbs / batch_size]).round()))
    for j, g in enumerate(optimizer.param_groups):
        g["lr"] = float(np.interp(ni, xi, [hyp["warmup_bias_lr"] if j == 0 else 0.0, g["initial_lr"] * lf(epoch)]))
        mom = float(np.interp(ni, xi, [hyp["warmup_momentum"], hyp["momentum"]]))
        if "momentum" in g:  # SGD only; Adam's betas are left alone, as YOLOv5
            g["momentum"] = mom
    return acc
