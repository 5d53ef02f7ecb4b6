"""Fake quantization in PyTorch, shared by the simulated MLU backend and the sensitivity ranking (and
by any future algorithm that emulates an int8 grid). The error measure is :mod:`.error`."""
from __future__ import annotations

import torch

from ..data.letterbox import input_multiple


def fake_quant(x: torch.Tensor, scale: torch.Tensor, qmax: int, qmin: int | None = None) -> torch.Tensor:
    """Symmetric fake quantization: ``clip(round(x / scale), qmin, qmax) * scale`` (``qmin=-qmax``).

    ``scale`` is a scalar or broadcastable (per-channel ``[C, 1, 1, 1]``); zero scales pass zeros.
    """
    qmin = -qmax if qmin is None else qmin
    s = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.clamp(torch.round(x / s), qmin, qmax) * s
    return torch.where(scale > 0, q, torch.zeros_like(q))


def fake_quant_asym(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Asymmetric uint8 fake quantization over the calibrated range ``[lo, hi]`` (widened to hold 0,
    as ONNX Runtime's MinMax calibration does): ``(clip(round(x / s) + z, 0, 255) - z) * s``."""
    grid = asymmetric_grid(lo, hi)
    if grid is None:
        return torch.zeros_like(x)
    s, z = grid
    return (torch.clamp(torch.round(x / s) + z, 0, 255) - z) * s


def asymmetric_grid(lo: float, hi: float, levels: int = 255) -> tuple[float, float] | None:
    """``(scale, zero_point)`` of the uint8 grid over ``[lo, hi]`` widened to hold 0 (ONNX Runtime's
    MinMax rule, :func:`asymmetric_grids`): ``scale = (hi - lo) / levels``, ``zero_point = round(-lo / scale)``;
    None for an empty range."""
    if max(float(hi), 0.0) - min(float(lo), 0.0) <= 0:
        return None
    s, z = asymmetric_grids(lo, hi, levels)
    return float(s), float(z)


def asymmetric_grids(lo, hi, levels: int = 255):
    """Vectorised :func:`asymmetric_grid` (numpy, float64): ``(scale, zero_point)`` arrays of ``lo``/``hi``'s
    shape; an empty range gets scale 1 and zero point 0 (nothing to represent)."""
    import numpy as np

    lo = np.minimum(np.asarray(lo, dtype=np.float64), 0.0)
    hi = np.maximum(np.asarray(hi, dtype=np.float64), 0.0)
    scale = (hi - lo) / float(levels)
    scale = np.where(scale > 0, scale, 1.0)
    return scale, np.clip(np.round(-lo / scale), 0, levels)


def weight_scale(w: torch.Tensor, qmax: int, per_channel: bool) -> torch.Tensor:
    """``max |w| / qmax`` over the whole tensor, or per output channel (``[C, 1, 1, 1]``)."""
    if per_channel:
        return (w.detach().abs().amax(dim=(1, 2, 3)) / qmax).view(-1, 1, 1, 1).float()
    return (w.detach().abs().max() / qmax).float()


def forward_order(model, modules: list) -> list:
    """``modules`` (of ``model``) sorted by when they run on a tiny input, the ones that never run
    last in their given order (the first convolution takes the image)."""
    seen: list = []
    hooks = [q.register_forward_pre_hook(lambda mod, _inp: seen.append(mod)) for q in modules]
    try:
        s = input_multiple(getattr(model, "stride", None))  # 32 also for a P2-P3-P4 head (its backbone reaches P5)
        with torch.no_grad():
            model(torch.zeros(1, 3, s * 2, s * 2))
    finally:
        for h in hooks:
            h.remove()
    seen = list(dict.fromkeys(seen))  # a module called twice is listed once
    return seen + [q for q in modules if q not in seen]


# ----------------------------------------------------------------------------- learned grids (QAT)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` forward, identity backward (the straight-through estimator)."""
    return x + (torch.round(x) - x).detach()


def scale_grad(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``x`` forward, gradient multiplied by ``factor`` backward (LSQ's step-size gradient scale)."""
    return x * factor + (x - x * factor).detach()


def fake_quant_learned(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | float, qmin: int, qmax: int,
                       grad_factor: float = 1.0) -> torch.Tensor:
    """The grid of :func:`fake_quant` / :func:`fake_quant_asym` with a trainable ``scale`` (and
    ``zero_point``): ``(clip(round(x / s) + round(z), qmin, qmax) - round(z)) * s``, rounding passed
    straight through, so gradients reach ``x`` inside the range and ``scale`` / ``zero_point``
    everywhere (LSQ, Esser et al. 2019; ``grad_factor`` scales the step-size gradient, LSQ uses
    ``1 / sqrt(numel * qmax)``). ``scale``: a scalar or broadcastable (per channel ``[C, 1, 1, 1]``),
    kept positive by the caller. Forward values equal :func:`fake_quant` (``z = 0``,
    ``qmin = -qmax``) and :func:`fake_quant_asym` (the zero point of :func:`asymmetric_grid`)."""
    s = scale_grad(scale, grad_factor)
    z = round_ste(zero_point) if isinstance(zero_point, torch.Tensor) else float(round(zero_point))
    return (torch.clamp(round_ste(x / s) + z, qmin, qmax) - z) * s
