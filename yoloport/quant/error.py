"""Error measures between a float reference and a quantized result: the one SQNR, cosine, and their
accumulation over batches (numpy only: it runs where torch is not installed)."""
from __future__ import annotations

import math

import numpy as np

from ..errors import YoloportError


def sqnr_db(ref, test) -> float:
    """Signal-to-quantization-noise ratio ``10 log10(sum ref^2 / sum (ref - test)^2)`` in dB; ``ref``
    and ``test`` are arrays or lists of arrays (concatenated); ``inf`` when identical."""
    r = _flat(ref)
    t = _flat(test)
    noise = float(np.sum((r - t) ** 2))
    if noise == 0.0:
        return float("inf")
    signal = float(np.sum(r**2))
    return float(10 * np.log10(signal / noise)) if signal > 0 else float("-inf")


def _flat(a) -> np.ndarray:
    if isinstance(a, (list, tuple)):
        return np.concatenate([np.ravel(np.asarray(x, dtype=np.float64)) for x in a])
    return np.ravel(np.asarray(a, dtype=np.float64))


def sqnr(ref: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB (:func:`yoloport.quant.error.sqnr_db`) of two tensors
    of the same shape; ``inf`` when identical."""
    ref = np.asarray(ref, dtype=np.float64)
    test = np.asarray(test, dtype=np.float64)
    _check_same_shape(ref, test)
    return sqnr_db(ref, test)


def cosine(ref: np.ndarray, test: np.ndarray) -> float:
    """Cosine similarity of the flattened tensors (1.0 for two all-zero tensors)."""
    a = np.asarray(ref, dtype=np.float64).ravel()
    b = np.asarray(test, dtype=np.float64).ravel()
    _check_same_shape(a, b)
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def _check_same_shape(a, b):
    if a.shape != b.shape:
        raise YoloportError(f"cannot compare tensors of shapes {list(a.shape)} and {list(b.shape)}")


class TensorStats:
    """Accumulates SQNR / cosine over many batches of one output (energy sums, not dB averages)."""

    def __init__(self, name: str):
        self.name, self.shape = name, None
        self.signal = self.noise = self.dot = self.ref2 = self.test2 = 0.0
        self.max_abs = 0.0
        self.n = 0
        self.min_cosine = 1.0

    def add(self, ref: np.ndarray, test: np.ndarray) -> None:
        r = np.asarray(ref, dtype=np.float64)
        t = np.asarray(test, dtype=np.float64)
        _check_same_shape(r, t)
        self.shape = list(r.shape[1:])
        d = r - t
        self.signal += float(np.sum(r * r))
        self.noise += float(np.sum(d * d))
        self.dot += float(np.sum(r * t))
        self.ref2 += float(np.sum(r * r))
        self.test2 += float(np.sum(t * t))
        self.max_abs = max(self.max_abs, float(np.abs(d).max()) if d.size else 0.0)
        self.n += d.size
        for i in range(r.shape[0]):
            self.min_cosine = min(self.min_cosine, cosine(r[i], t[i]))

    def to_dict(self) -> dict:
        db = math.inf if self.noise == 0 else (-math.inf if self.signal == 0 else 10 * math.log10(self.signal / self.noise))
        den = math.sqrt(self.ref2 * self.test2)
        return {
            "output": self.name,
            "shape": self.shape,
            "sqnr_db": db,
            "cosine": 1.0 if den == 0 and self.ref2 == self.test2 else (self.dot / den if den else 0.0),
            "min_cosine": self.min_cosine,
            "max_abs_diff": self.max_abs,
            "rmse": math.sqrt(self.noise / self.n) if self.n else 0.0,
        }
