"""Inner tensors of an ONNX graph, read with ONNX Runtime feed by feed: the session that returns them
(:func:`tensor_session`, used by the SiLU grids and by ONNX Runtime's per-conv debug errors) and the signed
histogram the SiLU grids choose their ranges from (:func:`tensor_histograms`).

Three activation histograms live in yoloport, and they stay apart on purpose (what they share is the
tensors' reading, here, not the counting):

- :func:`tensor_histograms` (here): signed ``x``, two passes over replayable ORT feeds: the observed
  ``[min, max]``, then fixed equal bins over it. The SiLU grids search lower and upper ends over the signed
  distribution, on bin centres that never move between images.
- :func:`.onnxruntime_ranges.histogram_ranges`: ONNX Runtime's own entropy / percentile calibrator, driven
  directly (its collector widens the bins as chunks of images arrive; percentile counts ``|x|``). Its ranges
  must be ORT's algorithms with our settings, so its collector is not replaced by this one.
- :class:`yoloport.quant.range_estimators.AbsHistogram`: ``|x|`` for symmetric grids (mlu-sim), one pass
  inside the torch forward hooks, bins merged when the range doubles: no ORT session, and no second pass
  over the calibration images.

``onnx`` and ``onnxruntime`` are imported when a session is made.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

EMPTY_RANGE_WIDTH = 1e-6  # a tensor that took one value: its bins span [v, v + this]


def tensor_session(onnx_model, tensors: Iterable[str]):
    """An ONNX Runtime CPU session of ``onnx_model`` (a path, loaded with its external data, or a ModelProto,
    left as it is) that also returns the inner ``tensors`` (:func:`yoloport.deploy.onnx_graph.with_outputs`).
    Graph optimisation is off, so every named tensor is computed as the float graph says (no fusion moves or
    removes one)."""
    import onnx
    import onnxruntime as ort

    from ..deploy.onnx_graph import with_outputs

    model = onnx.load(str(onnx_model)) if isinstance(onnx_model, (str, Path)) else onnx_model
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(with_outputs(model, tensors).SerializeToString(), so,
                                providers=["CPUExecutionProvider"])


def observed_ranges(session, feeds: Iterable[dict], tensors: Sequence[str]) -> dict[str, tuple[float, float]]:
    """``{tensor: (min, max)}`` of ``tensors`` over every feed (input dicts) run through ``session``; a
    ValueError when there is no feed or a tensor is not finite."""
    lo = {t: np.inf for t in tensors}
    hi = {t: -np.inf for t in tensors}
    for feed in feeds:
        for t, v in zip(tensors, session.run(list(tensors), feed)):
            lo[t], hi[t] = min(lo[t], float(v.min())), max(hi[t], float(v.max()))
    if not all(np.isfinite(lo[t]) and np.isfinite(hi[t]) for t in tensors):
        raise ValueError("tensor_histograms: no calibration feeds, or a tensor that is not finite")
    return {t: (lo[t], hi[t]) for t in tensors}


def bin_span(lo: float, hi: float) -> tuple[float, float]:
    """The interval equal bins are laid over for an observed ``[lo, hi]``: itself, or ``[lo, lo +
    EMPTY_RANGE_WIDTH]`` when the tensor took one value (``hi <= lo``)."""
    return lo, (hi if hi > lo else lo + EMPTY_RANGE_WIDTH)


def bin_centers(span: tuple[float, float], bins: int) -> np.ndarray:
    """``[bins]`` float64 centres of ``bins`` equal bins over ``span``."""
    edges = np.linspace(span[0], span[1], bins + 1)
    return (edges[:-1] + edges[1:]) / 2


def tensor_histograms(onnx_model, feeds: Callable[[], Iterable[dict]], tensors: Sequence[str],
                      bins: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{tensor: (centers [bins] float64, counts [bins] int64)}`` of the signed values of ``tensors`` over
    every feed, in two passes of ``feeds()`` (a fresh iterator of input dicts each call): the observed
    min/max, then ``bins`` equal bins over :func:`bin_span` of it (every value falls in a bin). The graph
    ``onnx_model`` (path or ModelProto) runs with ``tensors`` as extra outputs (:func:`tensor_session`)."""
    tensors = list(tensors)
    session = tensor_session(onnx_model, tensors)
    spans = {t: bin_span(*r) for t, r in observed_ranges(session, feeds(), tensors).items()}
    counts = {t: np.zeros(bins, dtype=np.int64) for t in tensors}
    for feed in feeds():
        for t, v in zip(tensors, session.run(tensors, feed)):
            counts[t] += np.histogram(v, bins=bins, range=spans[t])[0]
    return {t: (bin_centers(spans[t], bins), counts[t]) for t in tensors}
