"""SiLU-aware uint8 grids for ONNX Runtime's QDQ Conv-SiLU units (issue 11).

Why this room exists: in ONNX Runtime's QDQ int8 every Conv-SiLU is rounded three times: at the Conv
output ``x`` (QLinearConv needs that Q), at the Sigmoid output ``s`` and at the Mul output ``m = x * s``.
MinMax gives each rounding the observed range of its tensor, so the Conv output's uint8 grid spends its
levels on the whole pre-activation range, down to large negative values that SiLU squashes to ~0
(``docs/notes/2026-11-30-accuracy-ort-yolov5s.md``: removing those roundings took yolov5s seed 2 from
+1.76 to -0.11 points, but then ORT cannot fuse QLinearConv). Here the roundings stay where they are and
only their grids move, chosen from a histogram of ``x`` over the calibration images:

- ``preact_range="silu_mse"``: the Conv output's ``[lo, hi]`` minimising the error *after* SiLU,
  ``E[(SiLU(q(x)) - SiLU(x))^2]`` (``"silu_mse_low"``: only ``lo`` moves, ``hi`` stays the observed max).
  Measured on yolov5n: worse than MinMax. The lower end it picks (-3 to -5) clips the many strongly
  negative pre-activations to SiLU(lo) ~ -0.07, which the Mul's grid no longer rounds to 0: a small error
  per element, but the same sign on a large share of the next conv's inputs (a bias, which MSE does not see);
- ``preact_range="silu_zero"``: the same search with ``lo`` kept at or below :func:`zero_floor`, where
  the unit's Mul output is under half a step of the Mul's grid (MinMax's), so what is clipped still reaches
  the next layer as exactly 0, as it did unclipped (``"silu_zero_low"``: only ``lo`` moves). The default;
- ``sigmoid_range="unit"``: the Sigmoid output on ``[0, 1]`` (1.0 exactly on the grid); ``"none"``: the
  Sigmoid is not rounded at all, because the unit runs as one fused op (``silu_op: quickgelu``,
  :mod:`.onnxruntime_silu_op`), and the other two grids are chosen for that unit;
- ``mul_range="mse"``: the Mul output's ``[lo, hi]`` minimising ``E[(q(m) - SiLU(x))^2]`` where ``m`` is
  what the quantized unit feeds it (``q(x) * q(sigmoid(q(x)))`` on the chosen grids);
  ``"reachable"``: the range of those ``m`` over the histogram, no clipping (after a narrowed Conv
  output range MinMax would still span the float SiLU's larger maximum, which the unit can no longer reach).
  With ``silu_zero`` the floor is taken from the Mul grid these choose, not MinMax's (:func:`zero_preact_range`).

The range mathematics is pure numpy and lives in :mod:`yoloport.quant.silu_ranges` (QAT starts from it too);
this room applies it to ORT's graph: the pre-activation histograms (:func:`silu_grid_ranges`) and the options.
The grids follow ONNX Runtime's own uint8 rule (:func:`uint8_grid`) and reach ``quantize_static`` as
``TensorQuantOverrides`` (``rmin``/``rmax``), like :mod:`.onnxruntime_ranges`' ranges. Same graph, same
fused kernels: only scales and zero points change.
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from ..deploy.onnx_graph import SiluUnit, silu_units
from ..errors import YoloportError
from ..quant.silu_ranges import (HIST_BINS, SILU_ARGMIN, ZERO_MARGIN, best_range, candidate_ranges,  # noqa: F401 (names of this room)
                                 fake_quant, mul_output_range, reachable_mul_range, rounded_sigmoid, sigmoid, silu,
                                 silu_preact_range, uint8_grid, unit_grid_ranges, unit_outputs, zero_floor,
                                 zero_preact_range)
from .onnxruntime_tensors import tensor_histograms

GRID_CHOICES = {
    "preact_range": ("minmax", "silu_mse", "silu_mse_low", "silu_zero", "silu_zero_low"),
    "sigmoid_range": ("minmax", "unit", "none"),
    "mul_range": ("minmax", "mse", "reachable"),
}


def check_grid_options(cfg: dict) -> dict[str, str]:
    """``{key: choice}`` for the three grid keys of ``cfg`` (missing/None: ``"minmax"``); a YoloportError for
    an unknown choice, or for ``silu_floor`` together with a searched pre-activation range (both set the
    same lower end)."""
    out = {}
    for key, choices in GRID_CHOICES.items():
        value = cfg.get(key)
        value = "minmax" if value is None else value
        if not isinstance(value, str) or value.lower() not in choices:
            raise YoloportError(f"onnxruntime: {key} must be one of {', '.join(choices)}, got {value!r}")
        out[key] = value.lower()
    if out["preact_range"] != "minmax" and cfg.get("silu_floor") is not None:
        raise YoloportError("onnxruntime: silu_floor and preact_range both choose the SiLU pre-activation range: set one")
    return out


def resolve_grid_options(user: dict, cfg: dict) -> dict[str, str]:
    """The three grid choices for a build: ``cfg``'s (defaults filled in), checked by
    :func:`check_grid_options`, except that a default grid falls back to ``minmax`` where it cannot act:
    ``act_type`` int8 (symmetric activations, not the uint8 grids chosen here) or a ``silu_floor`` the user
    gave. A choice the user gave (``user``: their qconfig) that cannot act is a YoloportError."""
    given = {k for k in GRID_CHOICES if user.get(k) is not None}
    fallback = cfg.get("act_type") != "uint8" or cfg.get("silu_floor") is not None
    options = check_grid_options({**cfg, **({k: "minmax" for k in GRID_CHOICES if k not in given} if fallback else {})})
    if cfg.get("act_type") != "uint8" and grids_requested(options):
        raise YoloportError("onnxruntime: preact_range, sigmoid_range and mul_range choose uint8 grids; "
                            f"act_type {cfg.get('act_type')!r} takes minmax")
    return options


def grids_requested(options: dict[str, str]) -> bool:
    """Whether any of the three grids differs from MinMax's."""
    return any(v != "minmax" for v in options.values())


def silu_grid_ranges(onnx_path, model, feeds: Callable[[], Iterable[dict]], options: dict[str, str],
                     skip: Iterable[str] = ()) -> dict[str, tuple[float, float]]:
    """``{tensor: (rmin, rmax)}`` for the Conv output, Sigmoid output and Mul output of every SiLU unit
    of ``model`` (the graph at ``onnx_path``) none of whose three tensors is in ``skip`` (the outputs of
    float-kept nodes), as ``options`` (:func:`check_grid_options`) asks; tensors left on MinMax are absent."""
    skip = set(skip)
    units: list[SiluUnit] = [u for u in silu_units(model) if not skip & {u.preact, u.sigmoid, u.mul}]
    if not units or not grids_requested(options):
        return {}
    hists = tensor_histograms(onnx_path, feeds, [u.preact for u in units], HIST_BINS)
    ranges: dict[str, tuple[float, float]] = {}
    for u in units:
        chosen = unit_grid_ranges(*hists[u.preact], options)
        ranges.update({getattr(u, role): r for role, r in chosen.items()})
    return ranges
