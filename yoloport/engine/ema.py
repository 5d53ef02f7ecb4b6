"""Exponential moving average of model weights (YOLOv5's ``ModelEMA``).

``ema = d * ema + (1 - d) * model`` over every floating-point tensor of the state dict (BN running
statistics included), with ``d = decay * (1 - exp(-updates / tau))`` ramping up from 0 so early
epochs are not dominated by the random initialisation.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a ``DistributedDataParallel`` / ``DataParallel`` wrapper."""
    return model.module if isinstance(model, (nn.parallel.DataParallel, nn.parallel.DistributedDataParallel)) else model


def ema_decay(updates: int, decay: float = 0.9999, tau: float = 2000.0) -> float:
    """Decay after ``updates`` optimizer steps: ``decay * (1 - exp(-updates / tau))``."""
    return decay * (1 - math.exp(-updates / tau))


class ModelEMA:
    """Keeps ``self.ema`` (an eval-mode copy, no gradients) and the number of ``updates``."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0, updates: int = 0):
        self.ema = copy.deepcopy(unwrap(model)).eval()
        self.updates, self.decay, self.tau = int(updates), float(decay), float(tau)
        for p in self.ema.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One step towards ``model``'s current weights."""
        self.updates += 1
        d = ema_decay(self.updates, self.decay, self.tau)
        msd = unwrap(model).state_dict()
        for k, v in self.ema.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(msd[k].detach(), alpha=1 - d)

    def state_dict(self) -> dict:
        return {"updates": self.updates, "decay": self.decay, "tau": self.tau, "model": self.ema.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
        self.decay, self.tau = float(state.get("decay", self.decay)), float(state.get("tau", self.tau))
        self.ema.load_state_dict(state["model"])
