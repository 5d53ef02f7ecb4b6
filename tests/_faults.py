"""Known-wrong runners for the negative controls: each wraps a real runner (the ``Runner``
interface of ``yoloport.backends.base``) and breaks its outputs in one way a faulty backend could.

All of them return the ``raw`` layout (``[B, na*(5+nc), H, W]`` per level, logits)."""
from __future__ import annotations

import numpy as np

from yoloport.backends.base import Runner


class WrappedRunner(Runner):
    """Takes ``head``, ``input_hw``, ``batch`` and ``stride`` from the runner it wraps."""

    backend = "fault"

    def __init__(self, inner: Runner):
        self.inner = inner
        self.head, self.input_hw, self.batch, self.stride = inner.head, inner.input_hw, inner.batch, inner.stride

    def __call__(self, images: np.ndarray) -> list[np.ndarray]:
        return [self.fault(i, o) for i, o in enumerate(self.inner(images))]

    def fault(self, level: int, out: np.ndarray) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError


class ZerosRunner(WrappedRunner):
    """Returns zeros of the right shapes."""

    def fault(self, level, out):
        return np.zeros_like(out)


class BiasOnlyRunner(WrappedRunner):
    """Returns each head convolution's bias broadcast over the grid: what a model that ignores its
    input gives."""

    def __init__(self, inner, model):
        super().__init__(inner)
        self.biases = [c.bias.detach().float().numpy() for c in model.detect.m]

    def fault(self, level, out):
        return np.broadcast_to(self.biases[level][None, :, None, None], out.shape).astype(np.float32).copy()


class ClassesPermutedRunner(WrappedRunner):
    """Class logits rotated by one class within every anchor (circle -> rectangle -> ...)."""

    def fault(self, level, out):
        no = 5 + self.head.nc
        b, c, h, w = out.shape
        y = out.reshape(b, c // no, no, h, w).copy()
        y[:, :, 5:] = np.roll(y[:, :, 5:], 1, axis=2)
        return y.reshape(out.shape)


class BoxesShiftedRunner(WrappedRunner):
    """Every box centre moved ``shift_px`` pixels right and down (the xy logits re-solved so the
    decoded centre moves by exactly that, where the sigmoid range allows)."""

    def __init__(self, inner, shift_px: float = 3.0):
        super().__init__(inner)
        self.shift_px = float(shift_px)

    def fault(self, level, out):
        no = 5 + self.head.nc
        b, c, h, w = out.shape
        y = out.reshape(b, c // no, no, h, w).astype(np.float64)
        s = 1.0 / (1.0 + np.exp(-y[:, :, :2]))  # decoded xy = (2 s - 0.5 + grid) * stride
        s = np.clip(s + self.shift_px / (2.0 * self.head.strides[level]), 1e-6, 1 - 1e-6)
        y[:, :, :2] = np.log(s / (1 - s))
        return y.reshape(out.shape).astype(np.float32)


class OtherImageRunner(WrappedRunner):
    """Answers every image with the outputs of the next image in the batch (a batch of one gets its
    own image flipped upside down): a runner that mixes up its inputs."""

    def __call__(self, images):
        other = np.roll(images, 1, axis=0) if len(images) > 1 else images[:, :, ::-1].copy()
        return self.inner(other)
