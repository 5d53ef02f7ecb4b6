"""Export a DetectionModel to ONNX with one of the NPU-friendly head modes."""
from __future__ import annotations

import copy
import io
from pathlib import Path

import torch

from ..io.checkpoint import atomic_path  # noqa: F401  (provided by yoloport.io.checkpoint)
from ..ops.postprocess import HeadSpec


def export_onnx(model, path, img_size_hw=(640, 640), mode: str = "raw", batch: int = 1, opset: int = 12, sigmoid: bool = False):
    """Write ``model`` as ONNX with a ``mode`` head; returns ``(path, HeadSpec)``."""
    m = copy.deepcopy(model).float().eval()
    m.detect.export_mode = mode
    m.detect.export_options = {"sigmoid": sigmoid}
    x = torch.zeros(batch, 3, *img_size_hw)
    names = [f"out{i}" for i in range(m.detect.nl)]
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(m, x, buf, opset_version=opset, input_names=["images"], output_names=names, dynamo=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return path, HeadSpec.from_model(model, mode, sigmoid_applied=sigmoid)
