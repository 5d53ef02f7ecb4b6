"""The float reference: the PyTorch model itself, read as a ``raw`` head."""
from __future__ import annotations

import numpy as np
import torch

from ..ops.postprocess import HeadSpec
from .base import Runner
from .spec import BackendSpec
from ..data.letterbox import input_multiple

SPEC = BackendSpec(
    runs_onnx=False,
    name="torch",
    summary="PyTorch eager, fp32: the float reference every port compares against (no artifact)",
    install="pip install 'yoloport[train]' (torch)",
    precisions=("fp32",),
    has_artifact=False,
    lint_target=None,
    benchmarkable=True,
    profiler=False,
)


class TorchRunner(Runner):
    """Runs a ``DetectionModel`` in eval mode and returns its three head convolution outputs
    ``[B, na*no, H, W]`` (the ``raw`` layout), so the host post-processing is shared with every
    other backend. ``threads``: torch's intra-op threads while this runner runs (torch's setting is
    process-wide, so it is set for each call and put back after, not left changed for others)."""

    backend = "torch"

    def __init__(self, model, threads: int | None = None):
        self.model = model.eval()
        self.head = HeadSpec.from_model(model, "raw")
        self.stride = input_multiple(model.stride)
        self.input_hw = None
        self.batch = None
        self.threads = int(threads) if threads else None

    @torch.inference_mode()
    def __call__(self, images: np.ndarray) -> list[np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        before = torch.get_num_threads()
        if self.threads and self.threads != before:
            torch.set_num_threads(self.threads)
        try:
            _, raw = self.model(x)
        finally:
            if torch.get_num_threads() != before:
                torch.set_num_threads(before)
        outs = []
        for r in raw:  # [B, na, H, W, no] -> [B, na*no, H, W]
            b, na, h, w, no = r.shape
            outs.append(r.permute(0, 1, 4, 2, 3).reshape(b, na * no, h, w).numpy())
        return outs


def load(artifact=None, model=None, threads: int | None = None, **options) -> TorchRunner:
    """The reference runner: ``model`` itself (there is no artifact)."""
    return TorchRunner(model, threads=threads)
