"""Histogram range estimators (entropy, percentile) for ONNX Runtime int8, collected chunk by chunk.

Why this room exists: ``quantize_static`` forwards only five calibrator settings from its
``extra_options`` (``CalibTensorRangeSymmetric``, ``CalibMovingAverage``, ``CalibMovingAverageConstant``,
``CalibMaxIntermediateOutputs``, ``CalibPercentile``). Its Entropy calibrator therefore always runs with
ORT's own defaults, 128 histogram bins and 128 quantized bins: the threshold search then has exactly one
candidate, the whole histogram (``[-max|x|, +max|x|]``), which it clips to the observed ``[min, max]``,
so "entropy" gives MinMax's ranges and a byte-identical artifact (checked on ORT 1.32). Both histogram
calibrators also keep every intermediate tensor of every calibration image in memory before building
the histograms (hundreds of MB per 640x640 image).

Here the calibrator is driven directly: its settings are ours (``num_bins``, ``num_quantized_bins``),
and it sees ``chunk`` images at a time (its histograms merge across calls). The ranges it finds are
handed to ``quantize_static`` as ``TensorQuantOverrides`` (``rmin``/``rmax`` per tensor).
"""
from __future__ import annotations

import itertools
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

HISTOGRAM_METHODS = ("entropy", "percentile")
ESTIMATOR_METHODS = HISTOGRAM_METHODS + ("minmax",)


def _list_reader(feeds: list[dict]):
    """An ORT ``CalibrationDataReader`` over a list of input feeds (made here: onnxruntime.quantization
    is imported only when quantizing)."""
    from onnxruntime import quantization as ortq

    class _ListReader(ortq.CalibrationDataReader):
        def __init__(self):
            self._it = iter(feeds)

        def get_next(self):
            return next(self._it, None)

    return _ListReader()


def chunks(feeds: Iterable[dict], size: int) -> Iterator[list[dict]]:
    """``feeds`` in consecutive lists of at most ``size`` (>= 1)."""
    it = iter(feeds)
    while True:
        part = list(itertools.islice(it, max(int(size), 1)))
        if not part:
            return
        yield part


def reader_feeds(reader) -> Iterator[dict]:
    """The feeds of an ORT ``CalibrationDataReader`` until it returns None."""
    while True:
        feed = reader.get_next()
        if not feed:
            return
        yield feed


def histogram_ranges(onnx_path, feeds: Iterable[dict], method: str, *, num_bins: int, num_quantized_bins: int,
                     percentile: float = 99.999, symmetric: bool | None = None, chunk: int = 8,
                     op_types=None) -> dict[str, tuple[float, float]]:
    """tensor name -> ``(rmin, rmax)`` chosen by ORT's ``method`` calibrator (``entropy``: the KL-optimal
    threshold over ``num_bins`` histogram bins quantized to ``num_quantized_bins``; ``percentile``: the
    ``percentile`` of the histogram) on ``feeds`` (input dicts), ``chunk`` feeds per collection pass.
    ``minmax``: the observed range. ``symmetric`` None keeps ORT's default for the method (percentile on |x|,
    entropy on x). ORT's own collector counts here, not :func:`.onnxruntime_tensors.tensor_histograms`'s fixed
    bins: these ranges are to be ORT's algorithms with our settings (that module says why the histograms differ)."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    if method not in ESTIMATOR_METHODS:
        raise ValueError(f"histogram_ranges: method must be one of {ESTIMATOR_METHODS}, got {method!r}")
    options = {"num_bins": int(num_bins), "num_quantized_bins": int(num_quantized_bins), "percentile": float(percentile)}
    if symmetric is not None:
        options["symmetric"] = bool(symmetric)
    with tempfile.TemporaryDirectory(prefix="yoloport-ortcalib-") as tmp:
        calibrator = create_calibrator(
            Path(onnx_path), list(op_types) if op_types else None,
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method={"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile,
                              "minmax": CalibrationMethod.MinMax}[method],
            extra_options=options,
        )
        collected = 0
        for part in chunks(feeds, chunk):
            calibrator.collect_data(_list_reader(part))
            collected += len(part)
        if not collected:
            raise ValueError("histogram_ranges: no calibration feeds")
        data = calibrator.compute_data()
        del calibrator  # its session holds the augmented model open in tmp
    return {name: (float(np.asarray(data.data[name].range_value[0]).reshape(-1)[0]),
                   float(np.asarray(data.data[name].range_value[1]).reshape(-1)[0]))  # ORT keeps [1]-shaped arrays
            for name in data}


def range_overrides(ranges: dict[str, tuple[float, float]]) -> dict[str, list[dict]]:
    """``TensorQuantOverrides`` pinning each tensor's calibration range (float32 scalars, as ORT keeps them)."""
    return {name: [{"rmin": np.array(lo, dtype=np.float32), "rmax": np.array(hi, dtype=np.float32)}]
            for name, (lo, hi) in ranges.items()}


def silu_inputs(model) -> list[str]:
    """Conv outputs that feed a SiLU (a Sigmoid whose input is also multiplied by its output): the
    pre-activation tensors of :func:`yoloport.deploy.onnx_graph.silu_units`, in graph order."""
    from ..deploy.onnx_graph import silu_units

    return [u.preact for u in silu_units(model)]


def floor_ranges(ranges: dict[str, tuple[float, float]], tensors, floor: float) -> dict[str, tuple[float, float]]:
    """``ranges`` with the lower end of ``tensors`` raised to ``floor`` (< 0) where it was below it.
    SiLU(x) is within 0.015 of 0 for every x <= -6, so a pre-activation range need not reach further down:
    the uint8 grid it frees goes to the positive side."""
    floored = set(tensors)
    return {t: ((max(lo, floor), hi) if t in floored else (lo, hi)) for t, (lo, hi) in ranges.items()}
