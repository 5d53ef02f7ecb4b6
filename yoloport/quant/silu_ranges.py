"""The pure mathematics of SiLU-aware uint8 grids (issue 11): ranges for the roundings around a SiLU,
``x -> SiLU(x)``, chosen from a histogram of the pre-activation ``x``.

Why: a uint8 grid on the whole observed range of a pre-activation spends its levels down to large negative
values that SiLU squashes to ~0. :func:`silu_preact_range` narrows it to the range that least perturbs what
SiLU makes of the rounded value, and :func:`zero_preact_range` keeps its lower end where a clipped value
still reaches the next rounding as exactly 0 (the ``silu_zero`` rule; the full account is in
:mod:`yoloport.backends.onnxruntime_silu_grids`, which applies these to ONNX Runtime's QDQ graph, and in
``docs/notes/2026-11-30-ort-silu-grids.md``). :func:`unit_grid_ranges` chooses the three grids of a
Conv -> Sigmoid -> Mul unit; the sigmoid may be rounded on a grid (``sigmoid_range``) or not at all (None).
QAT starts its conv-output grids from the same rule (:func:`yoloport.quant.qat.init_ranges`).

Every grid follows ONNX Runtime's asymmetric uint8 rule (:func:`uint8_grid`). numpy only.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

HIST_BINS = 4096  # histogram bins over each pre-activation's observed [min, max]
LO_STEPS = 48  # candidate lower ends, from the observed min to 0
HI_STEPS = 24  # candidate upper ends, from the observed max down to HI_FLOOR of it
HI_FLOOR = 0.3
ZERO_MARGIN = 0.8  # silu_zero: |SiLU(lo)| at most this share of half the Mul grid's step
FLOOR_ROUNDS = 6  # silu_zero with a chosen Mul grid: tries to settle the floor on the Mul grid that follows
SILU_ARGMIN = -1.2784645  # SiLU falls to its minimum (-0.2785) here and rises towards 0 below it


def uint8_grid(lo, hi) -> tuple[np.ndarray, np.ndarray]:
    """ONNX Runtime's asymmetric uint8 grid for a range (:func:`yoloport.quant.fake_quant.asymmetric_grids`):
    the range is widened to contain 0, ``scale = (hi - lo) / 255`` (1 for an empty range) and
    ``zero_point = round(-lo / scale)`` in [0, 255]. ``lo``, ``hi``: arrays of the same shape (or scalars).
    Imported when called: this module loads with the runtime, which must not need torch."""
    from .fake_quant import asymmetric_grids

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
