"""A post-training quantization recipe: the ordered PTQ steps of a qconfig's ``ptq`` key, applied to the
float model before it is exported, so every backend's own quantizer starts from better float weights.

Steps (each one room of :mod:`yoloport.quant`), in the only order that composes:

- ``equalize``: cross-layer equalization of the Bottleneck pairs (:mod:`.equalization`; changes the
  float function slightly through SiLU, measured and recorded);
- ``adaround``: learned rounding onto the backend's weight grid (:mod:`.adaround`);
- ``bias_correction``: the mean output shift of the weight rounding absorbed into the biases
  (:mod:`.bias_correction`), measured against the float weights before ``adaround``.

:func:`apply_recipe` is pure: the float model and calibration images in (only calibration images:
accuracy is judged elsewhere, on others), ``(folded model, record)`` out; the record goes to the
artifact's sidecar.
"""
from __future__ import annotations

import time
from typing import Iterable

import numpy as np

from ..errors import YoloportError

STEPS = ("equalize", "adaround", "bias_correction")


def check_steps(steps) -> tuple[str, ...]:
    """``steps`` (a list, or a comma-separated string; None/empty: none) as a tuple of step names, or one
    YoloportError naming the unknown ones, a repeated one, or an order other than :data:`STEPS`'."""
    if steps is None or steps is False:
        return ()
    if isinstance(steps, str):
        steps = [s for s in (p.strip() for p in steps.split(",")) if s]
    if not isinstance(steps, (list, tuple)):
        raise YoloportError(f"ptq must be a list of steps ({', '.join(STEPS)}), got {type(steps).__name__}")
    names = tuple(str(s).strip().lower().replace("-", "_") for s in steps)
    unknown = [s for s in names if s not in STEPS]
    if unknown:
        raise YoloportError(f"unknown ptq step(s) {', '.join(repr(s) for s in unknown)}; choose from {', '.join(STEPS)}")
    if len(set(names)) != len(names):
        raise YoloportError(f"ptq lists a step twice: {', '.join(names)}")
    if list(names) != sorted(names, key=STEPS.index):
        raise YoloportError(f"ptq steps must run in the order {' -> '.join(STEPS)} (got {', '.join(names)})")
    return names


def calibration_batches(calibration, batch: int = 4) -> list[np.ndarray]:
    """The calibration images as float32 ``[<=batch, 3, H, W]`` arrays, read once (every step reuses them)."""
    if hasattr(calibration, "batches"):
        return list(calibration.batches(batch))
    return [np.asarray(x, dtype=np.float32) for x in calibration]


def apply_recipe(model, steps, calibration, grid, skip: Iterable[str] = (), options: dict | None = None):
    """Run ``steps`` (:func:`check_steps`) on a folded copy of ``model`` (:func:`~.layers.folded_copy`) with
    ``calibration`` images (a CalibrationSet or arrays ``[B, 3, H, W]``) on the backend's weight ``grid``
    (a :class:`~.layers.WeightGrid`);
    the convolutions named in ``skip`` (kept in float by the backend) are left alone. ``options``: per
    step keyword arguments (``{"adaround": {"iters": 100}}``). Returns ``(model, record)``."""
    from .adaround import adaround
    from .bias_correction import bias_correction
    from .equalization import equalize, float_change_db
    from .layers import folded_copy

    names = check_steps(steps)
    options = dict(options or {})
    skip = tuple(skip)
    images = calibration_batches(calibration)
    if not images:
        raise YoloportError("ptq: the calibration set yielded no image")
    current = folded_copy(model)
    float_reference = current
    record: dict = {"steps": list(names), "grid": grid.to_dict(), "float_layers": list(skip),
                    "images": int(sum(x.shape[0] for x in images)), "results": {}}
    for name in names:
        t0 = time.perf_counter()
        if name == "equalize":
            out, info = equalize(current, images[:2], grid, **options.get(name, {}))
            info["float_change_db"] = float_change_db(current, out, images[:2])
            float_reference = out
        elif name == "adaround":
            out, info = adaround(current, images, grid, skip=skip, **options.get(name, {}))
        else:
            out, info = bias_correction(current, images, grid, reference=float_reference, skip=skip, **options.get(name, {}))
        info["seconds"] = round(time.perf_counter() - t0, 2)
        record["results"][name] = info
        current = out
    return current, record
