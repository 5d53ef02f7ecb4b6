"""Range estimators for **symmetric** int8 grids (``q = clip(round(x / s), -qmax, qmax)``, ``s = range / qmax``,
no zero point): the range a tensor is quantized over, chosen from calibration images.

- ``max``: the largest ``|x|`` seen (nothing is clipped; one outlier coarsens the whole grid);
- ``mse``: the range that minimises the mean squared quantization error (rounding inside the range plus
  clipping beyond it) of the values seen, computed over a running histogram of ``|x|``
  (:class:`AbsHistogram`: a fixed number of bins, never every activation). A symmetric grid treats ``x``
  and ``-x`` alike, so the histogram of ``|x|`` holds everything the error depends on;
- ``percentile``: the ``p``-th percentile of ``|x|`` over all values seen.

Every estimator returns a range in ``(0, max |x|]``: clipping can only shorten a max-based range, never
widen it. A hardware toolchain that takes user-set tensor ranges (Cambricon's accepts a quantization
parameter per tensor, as TensorRT, ONNX Runtime and RKNN accept calibration tables) runs these ranges
as it runs max-based ones; choosing them is a calibration decision, not a change of the integer scheme.

Weights are small enough for an exact search: :func:`weight_range_mse` minimises the squared error of
the weight tensor itself (per tensor or per output channel).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import YoloportError

ACT_ESTIMATORS = ("max", "mse", "percentile")
WEIGHT_ESTIMATORS = ("max", "mse")
HIST_BINS = 4096  # bins over [0, hi]; hi <= 2 * max |x|, so at least 2048 bins cover [0, max]
SUBSAMPLES = 4  # points per bin where the error is evaluated (values assumed uniform inside a bin)
COARSE_CANDIDATES = 128  # ranges max * k / 128, k = 1..128, then a finer grid around the best one
FINE_CANDIDATES = 32


def check_range_keys(q: dict, who: str) -> dict:
    """Validate ``act_range`` (one of :data:`ACT_ESTIMATORS`), ``act_percentile`` (in ``(0, 100]``) and
    ``weight_range`` (one of :data:`WEIGHT_ESTIMATORS`) in ``q`` in place and return it; a bad value is one
    :class:`~yoloport.errors.YoloportError` naming ``who`` (the backend)."""
    for key, allowed in (("act_range", ACT_ESTIMATORS), ("weight_range", WEIGHT_ESTIMATORS)):
        v = str(q[key]).lower() if isinstance(q[key], str) else q[key]
        if v not in allowed:
            raise YoloportError(f"{who} {key} {q[key]!r}: choose one of {', '.join(allowed)}")
        q[key] = v
    try:
        p = float(q["act_percentile"])
    except (TypeError, ValueError):
        raise YoloportError(f"{who} act_percentile must be a number in (0, 100], got {q['act_percentile']!r}") from None
    if not 0 < p <= 100:
        raise YoloportError(f"{who} act_percentile must be in (0, 100], got {p}")
    q["act_percentile"] = p
    return q


class AbsHistogram:
    """A running histogram of ``|x|`` over ``[0, hi]`` in ``bins`` equal bins, filled batch by batch.

    ``hi`` starts at the first non-zero batch's ``max |x|`` and doubles (as often as needed) when a later
    batch reaches past it: pairs of bins merge exactly, so no value is ever re-binned approximately and
    memory stays ``bins`` counts. ``max`` is the exact largest ``|x|`` seen; ``total`` the number of values.
    One pass, filled from torch forward hooks: unlike the signed two-pass histogram of ONNX Runtime tensors
    (:mod:`yoloport.backends.onnxruntime_tensors`), it needs no second run over the calibration images.
    """

    def __init__(self, bins: int = HIST_BINS):
        if bins < 2 or bins & (bins - 1):
            raise ValueError("bins must be a power of two >= 2")
        self.bins = bins
        self.counts = np.zeros(bins, np.float64)  # [bins]
        self.hi = 0.0
        self.max = 0.0
        self.total = 0
        self._zeros_before_hi = 0  # values seen while every value so far was 0 (they go to bin 0)

    def add(self, x: torch.Tensor) -> None:
        """Count the values of ``x`` (any shape, float)."""
        a = x.detach().abs().float().reshape(-1)
        if a.numel() == 0:
            return
        m = float(a.max())
        if not math.isfinite(m):
            raise YoloportError("range calibration: an activation is not finite (inf or NaN)")
        self.total += a.numel()
        self.max = max(self.max, m)
        if m == 0.0 and self.hi == 0.0:
            self._zeros_before_hi += a.numel()
            return
        if self.hi == 0.0:
            self.hi = m
            self.counts[0] += self._zeros_before_hi
        elif m > self.hi:
            self._grow(m)
        self.counts += torch.histc(a, bins=self.bins, min=0.0, max=self.hi).double().numpy()

    def _grow(self, m: float) -> None:
        """Double ``hi`` until it holds ``m``, merging bins: after growing by ``2^k`` every new bin is the sum
        of ``2^k`` old ones (once ``2^k >= bins`` every old value lies in the new first bin)."""
        k = max(1, math.ceil(math.log2(m / self.hi)))
        while self.hi * 2.0**k < m:  # floating-point guard
            k += 1
        f = 2**k
        if f >= self.bins:
            merged = np.zeros(self.bins, np.float64)
            merged[0] = self.counts.sum()
        else:
            merged = np.zeros(self.bins, np.float64)
            merged[: self.bins // f] = self.counts.reshape(self.bins // f, f).sum(1)
        self.counts = merged
        self.hi *= f

    def points(self, subsamples: int = SUBSAMPLES) -> tuple[np.ndarray, np.ndarray]:
        """``(x [bins*subsamples], weight [bins*subsamples])``: each bin's count spread evenly over
        ``subsamples`` points at the centres of equal sub-intervals, non-empty bins only."""
        width = self.hi / self.bins
        offs = (np.arange(subsamples) + 0.5) / subsamples  # [S] in (0, 1)
        nz = np.nonzero(self.counts)[0]
        x = ((nz[:, None] + offs[None, :]) * width).reshape(-1)
        w = np.repeat(self.counts[nz] / subsamples, subsamples)
        return np.minimum(x, self.max), w


def symmetric_sq_error(x: np.ndarray, w: np.ndarray, ranges: np.ndarray, qmax: int) -> np.ndarray:
    """Weighted sum of squared errors ``sum_i w_i (x_i - Q_r(x_i))^2`` of values ``x [P] >= 0`` on the
    symmetric grid of each range in ``ranges [R]`` (``s = r / qmax``; values past ``r`` clip to ``r``).
    Returns ``[R]``. Computed in chunks of ranges so that no temporary exceeds about 4M values."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    ranges = np.asarray(ranges, np.float64)
    out = np.empty(len(ranges), np.float64)
    step = max(1, 4_000_000 // max(1, x.size))
    for i in range(0, len(ranges), step):
        s = (ranges[i : i + step] / qmax)[:, None]  # [r, 1]
        q = np.minimum(np.round(x[None, :] / s), qmax) * s  # x >= 0: only the upper clip applies
        out[i : i + step] = ((x[None, :] - q) ** 2 * w[None, :]).sum(1)
    return out


def best_range(x: np.ndarray, w: np.ndarray, m: float, qmax: int) -> float:
    """The range in ``(0, m]`` minimising :func:`symmetric_sq_error` of values ``x [P]`` (weights ``w [P]``):
    ``m * k / 128`` for ``k = 1..128``, then 32 ranges between the best one's neighbours; 0 when ``m <= 0``."""
    if m <= 0.0:
        return 0.0
    coarse = m * np.arange(1, COARSE_CANDIDATES + 1) / COARSE_CANDIDATES
    err = symmetric_sq_error(x, w, coarse, qmax)
    k = int(np.argmin(err))
    lo = coarse[k - 1] if k > 0 else coarse[0] / 2
    fine = np.linspace(lo, coarse[min(k + 1, len(coarse) - 1)], FINE_CANDIDATES)
    fine_err = symmetric_sq_error(x, w, fine, qmax)
    j = int(np.argmin(fine_err))
    return float(min(fine[j] if fine_err[j] < err[k] else coarse[k], m))


def mse_range(hist: AbsHistogram, qmax: int) -> float:
    """The range in ``(0, hist.max]`` minimising the squared quantization error of the histogram's values
    (:func:`best_range` over :meth:`AbsHistogram.points`); 0 when every value was 0."""
    if hist.max <= 0.0:
        return 0.0
    x, w = hist.points()
    return best_range(x, w, hist.max, qmax)


def percentile_range(hist: AbsHistogram, percentile: float) -> float:
    """The ``percentile``-th percentile of ``|x|`` (linear inside the bin that crosses it), at most
    ``hist.max``; 0 when every value was 0."""
    if hist.max <= 0.0 or hist.total == 0:
        return 0.0
    if percentile >= 100.0:
        return hist.max
    target = hist.total * percentile / 100.0
    cum = np.cumsum(hist.counts)  # [bins]
    b = min(int(np.searchsorted(cum, target, side="left")), hist.bins - 1)
    before = cum[b - 1] if b > 0 else 0.0
    frac = (target - before) / hist.counts[b] if hist.counts[b] > 0 else 1.0
    width = hist.hi / hist.bins
    return float(min((b + frac) * width, hist.max))


def activation_range_from(estimator: str, hist: AbsHistogram | None, batch_max: list[float], qmax: int,
                          percentile: float = 99.99, use_avg: bool = False) -> float:
    """The range of one tensor by ``estimator``: ``max`` (the largest of ``batch_max``, or with ``use_avg``
    their mean), ``mse`` or ``percentile`` (over ``hist``, which those two need). Never above ``max |x|``."""
    if estimator == "max":
        if not batch_max:
            return 0.0
        return float(np.mean(batch_max)) if use_avg else float(np.max(batch_max))
    if hist is None:
        raise ValueError(f"act_range {estimator!r} needs the histogram of the calibration activations")
    if estimator == "mse":
        return mse_range(hist, qmax)
    if estimator == "percentile":
        return percentile_range(hist, percentile)
    raise ValueError(f"unknown act_range {estimator!r}")


def weight_range_mse(w: torch.Tensor, qmax: int, per_channel: bool) -> torch.Tensor:
    """The symmetric weight range(s) minimising ``sum (w - Q(w))^2`` exactly over the weight's values: one
    range (a 0-dim tensor) per tensor, or ``[C]`` (one per output channel, ``w [C, ...]``) with
    ``per_channel``. Searched as :func:`mse_range` does, each at most that tensor's (channel's) ``max |w|``."""
    a = w.detach().abs().double().reshape(w.shape[0] if per_channel else 1, -1).numpy()  # [R, K]
    ones = np.ones(a.shape[1], np.float64)
    out = np.array([best_range(row, ones, float(row.max()), qmax) for row in a], np.float64)  # [R]
    t = torch.from_numpy(out).float()
    return t if per_channel else t.reshape(())
