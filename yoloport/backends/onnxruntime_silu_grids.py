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

The grids follow ONNX Runtime's own uint8 rule (:func:`uint8_grid`) and reach ``quantize_static`` as
``TensorQuantOverrides`` (``rmin``/``rmax``), like :mod:`.onnxruntime_ranges`' ranges. Same graph, same
fused kernels: only scales and zero points change.
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from ..deploy.onnx_graph import SiluUnit, silu_units
from ..errors import YoloportError
from .onnxruntime_tensors import tensor_histograms

GRID_CHOICES = {
    "preact_range": ("minmax", "silu_mse", "silu_mse_low", "silu_zero", "silu_zero_low"),
    "sigmoid_range": ("minmax", "unit", "none"),
    "mul_range": ("minmax", "mse", "reachable"),
}
HIST_BINS = 4096  # histogram bins over each pre-activation's observed [min, max]
LO_STEPS = 48  # candidate lower ends, from the observed min to 0
HI_STEPS = 24  # candidate upper ends, from the observed max down to HI_FLOOR of it
HI_FLOOR = 0.3
ZERO_MARGIN = 0.8  # silu_zero: |SiLU(lo)| at most this share of half the Mul grid's step
FLOOR_ROUNDS = 6  # silu_zero with a chosen Mul grid: tries to settle the floor on the Mul grid that follows
SILU_ARGMIN = -1.2784645  # SiLU falls to its minimum (-0.2785) here and rises towards 0 below it


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


# ----------------------------------------------------------------------------- the uint8 grid


def uint8_grid(lo, hi) -> tuple[np.ndarray, np.ndarray]:
    """ONNX Runtime's asymmetric uint8 grid for a range (:func:`yoloport.quant.fake_quant.asymmetric_grids`):
    the range is widened to contain 0, ``scale = (hi - lo) / 255`` (1 for an empty range) and
    ``zero_point = round(-lo / scale)`` in [0, 255]. ``lo``, ``hi``: arrays of the same shape (or scalars).
    Imported when called: this module loads with the runtime, which must not need torch."""
    from ..quant.fake_quant import asymmetric_grids

    return asymmetric_grids(lo, hi)


def fake_quant(x, lo, hi) -> np.ndarray:
    """``x`` rounded on the uint8 grid of ``[lo, hi]`` and mapped back (QuantizeLinear then
    DequantizeLinear). ``x [B]`` with ``lo``/``hi`` ``[K]`` gives ``[K, B]``; scalars give ``x``'s shape."""
    x = np.asarray(x, dtype=np.float64)
    scale, zp = uint8_grid(lo, hi)
    if scale.ndim:
        scale, zp = scale[:, None], zp[:, None]
    return (np.clip(np.round(x / scale) + zp, 0, 255) - zp) * scale


def silu(x) -> np.ndarray:
    """x * sigmoid(x), float64."""
    x = np.asarray(x, dtype=np.float64)
    return x / (1.0 + np.exp(-x))


def sigmoid(x) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def candidate_ranges(vmin: float, vmax: float, move_hi: bool = True, lo_max: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Candidate ``(lo [K], hi [K])`` pairs: lower ends from ``min(vmin, 0)`` up to ``lo_max`` (<= 0;
    LO_STEPS; only ``vmin`` when it is above ``lo_max``), upper ends from ``max(vmax, 0)`` down to HI_FLOOR
    of it (HI_STEPS; only the observed max when ``move_hi`` is False). The observed range is always a
    candidate."""
    vmin = min(float(vmin), 0.0)
    lo_c = np.linspace(vmin, lo_max, LO_STEPS) if vmin < lo_max else np.array([vmin])
    hi_c = max(float(vmax), 0.0) * (np.linspace(1.0, HI_FLOOR, HI_STEPS) if move_hi else np.ones(1))
    lo, hi = np.meshgrid(lo_c, hi_c, indexing="ij")
    return lo.reshape(-1), hi.reshape(-1)


def best_range(values, weights, target, lo, hi, post: Callable = lambda v: v, chunk: int = 64) -> tuple[float, float]:
    """The candidate ``(lo[k], hi[k])`` minimising ``sum(weights * (post(q_k(values)) - target)^2)``.

    ``values [B]``: what the rounding sees (histogram bin centres), ``weights [B]``: how often
    (counts), ``target [B]``: the exact result downstream, ``post``: the float op after the rounding
    (SiLU for a pre-activation). Ties go to the first candidate (the observed range comes first)."""
    values, weights, target = (np.asarray(a, dtype=np.float64) for a in (values, weights, target))
    keep = weights > 0
    values, weights, target = values[keep], weights[keep], target[keep]
    errors = np.concatenate([
        ((post(fake_quant(values, lo[i:i + chunk], hi[i:i + chunk])) - target) ** 2 * weights).sum(axis=1)
        for i in range(0, len(lo), chunk)
    ])
    k = int(np.argmin(errors))
    return float(lo[k]), float(hi[k])


def silu_preact_range(centers, counts, move_hi: bool = True, lo_max: float = 0.0) -> tuple[float, float]:
    """The Conv output range whose uint8 grid least perturbs SiLU: argmin over :func:`candidate_ranges`
    (lower ends up to ``lo_max``) of ``E[(SiLU(q(x)) - SiLU(x))^2]`` for ``x`` distributed as the
    histogram ``(centers [B], counts [B])``."""
    c = np.asarray(centers, dtype=np.float64)
    nz = np.asarray(counts) > 0
    lo, hi = candidate_ranges(c[nz].min(), c[nz].max(), move_hi, lo_max)
    scale, zp = uint8_grid(lo, hi)
    keep = (-zp * scale <= lo_max) | (lo == lo.min())  # the grid's real lower end (zero point rounded) too
    return best_range(c, counts, silu(c), lo[keep], hi[keep], post=silu)


def rounded_sigmoid(x, sigmoid_range) -> np.ndarray:
    """sigmoid(x) as the unit computes it: rounded on ``sigmoid_range``'s uint8 grid, or exact when
    ``sigmoid_range`` is None (the fused unit of ``silu_op: quickgelu``)."""
    s = sigmoid(x)
    return s if sigmoid_range is None else fake_quant(s, *sigmoid_range)


def zero_floor(mul_step: float, sigmoid_range=(0.0, 1.0), margin: float = ZERO_MARGIN) -> float:
    """The highest ``x`` below SiLU's minimum such that for every ``x' <= x`` the unit's Mul,
    ``x' * q_s(sigmoid(x'))`` (the Sigmoid output rounded on ``sigmoid_range``'s grid), is within
    ``margin * mul_step / 2`` of 0: a Mul grid of step ``mul_step`` (0 is on every ORT grid) then rounds it to
    exactly 0, as it rounds the unclipped value, so clipping up to ``x`` changes nothing downstream. The
    Sigmoid's rounding matters: sigmoid(x) only rounds to 0 below about -6.23 (half a step of 1/255), so for
    fine Mul grids (step < ~0.06) the floor is there; coarser grids allow a higher one. ``sigmoid_range``
    None: the Sigmoid is not rounded (:func:`rounded_sigmoid`).
    Searched down to -60 (returned when nothing above it qualifies)."""
    xs = np.linspace(SILU_ARGMIN, -60.0, 60_000)  # descending
    m = xs * rounded_sigmoid(xs, sigmoid_range)
    bad = np.flatnonzero(np.abs(m) > margin * float(mul_step) / 2)
    if not bad.size:
        return float(xs[0])
    return float(xs[bad[-1] + 1]) if bad[-1] + 1 < xs.size else -60.0


def unit_outputs(centers, x_range, sigmoid_range) -> tuple[np.ndarray, np.ndarray]:
    """``(m [B], target [B])``: what the quantized unit's Mul computes for each pre-activation value,
    ``q_x(c) * q_s(sigmoid(q_x(c)))`` on the grids ``x_range`` and ``sigmoid_range`` (None: the Sigmoid not
    rounded), and the exact ``SiLU(c)``."""
    xq = fake_quant(centers, *x_range)
    return xq * rounded_sigmoid(xq, sigmoid_range), silu(centers)


def mul_output_range(centers, counts, x_range, sigmoid_range) -> tuple[float, float]:
    """The Mul output's range minimising ``E[(q(m) - SiLU(x))^2]``, ``m`` as :func:`unit_outputs` gives it."""
    m, target = unit_outputs(centers, x_range, sigmoid_range)
    nz = np.asarray(counts) > 0
    lo, hi = candidate_ranges(m[nz].min(), m[nz].max())
    return best_range(m, counts, target, lo, hi)


def reachable_mul_range(centers, counts, x_range, sigmoid_range) -> tuple[float, float]:
    """``(min, max)`` of what the quantized unit's Mul computes (:func:`unit_outputs`) over the histogram's
    occupied bins: a Mul grid that clips nothing the unit can produce."""
    m, _ = unit_outputs(np.asarray(centers)[np.asarray(counts) > 0], x_range, sigmoid_range)
    return float(m.min()), float(m.max())


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


def unit_grid_ranges(centers, counts, options: dict[str, str]) -> dict[str, tuple[float, float]]:
    """``{role: (rmin, rmax)}`` for one unit whose Conv output ``x`` has the histogram ``(centers [B],
    counts [B])``; roles ``"preact"``, ``"sigmoid"``, ``"mul"`` (:class:`SiluUnit`'s fields) as ``options``
    (:func:`check_grid_options`) asks; a role left on MinMax is absent."""
    centers, counts = np.asarray(centers, dtype=np.float64), np.asarray(counts)
    nz = counts > 0
    observed = (float(centers[nz].min()), float(centers[nz].max()))
    s_choice = options["sigmoid_range"]
    s_range = {"unit": (0.0, 1.0), "none": None}.get(s_choice, (float(sigmoid(observed[0])), float(sigmoid(observed[1]))))
    out = {"sigmoid": s_range} if s_choice == "unit" else {}

    def mul_range_of(x_range):  # the Mul output's range after the Conv output range x_range (None: MinMax's)
        if options["mul_range"] == "mse":
            return mul_output_range(centers, counts, x_range, s_range)
        if options["mul_range"] == "reachable":
            return reachable_mul_range(centers, counts, x_range, s_range)
        return None

    x_range = observed
    choice = options["preact_range"]
    move_hi = not choice.endswith("_low")
    if choice.startswith("silu_zero"):
        x_range = zero_preact_range(centers, counts, s_range, mul_range_of, move_hi)
    elif choice != "minmax":
        x_range = silu_preact_range(centers, counts, move_hi)
    if choice != "minmax":
        out["preact"] = x_range
    mul = mul_range_of(x_range)
    if mul is not None:
        out["mul"] = mul
    return out


def zero_preact_range(centers, counts, s_range, mul_range_of: Callable, move_hi: bool = True,
                      rounds: int = FLOOR_ROUNDS) -> tuple[float, float]:
    """``silu_zero``'s Conv output range, its lower end at or below the :func:`zero_floor` of the Mul grid
    the unit *ends up with*: ``mul_range_of(x_range)`` is the Mul output's range that follows a Conv output
    range (None: MinMax's, the observed SiLU range, whatever ``x_range`` is). A chosen Mul range
    (``mse``, ``reachable``) narrows with ``x_range``, and a finer Mul step lowers the floor; so the floor
    starts at MinMax's step and is taken again from each resulting Mul step until the floor used is at or below
    the floor of the Mul grid that follows (valid then: a floor stays valid on every coarser grid). After
    ``rounds`` tries it takes the floor of a step of 0 (where the rounded Sigmoid itself is 0), valid on any
    Mul grid. ``centers [B]``, ``counts [B]``: the histogram of the Conv output; ``s_range``: the Sigmoid's
    (None: not rounded)."""
    s_obs = silu(np.asarray(centers, dtype=np.float64)[np.asarray(counts) > 0])
    lo_max = zero_floor(float(uint8_grid(s_obs.min(), s_obs.max())[0]), s_range)
    for _ in range(rounds):
        x_range = silu_preact_range(centers, counts, move_hi, lo_max=lo_max)
        mul = mul_range_of(x_range)
        floor = lo_max if mul is None else zero_floor(float(uint8_grid(*mul)[0]), s_range)
        if floor >= lo_max:
            return x_range
        lo_max = floor
    return silu_preact_range(centers, counts, move_hi, lo_max=zero_floor(0.0, s_range))
