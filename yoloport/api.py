"""The public Python API: what the CLI does, for scripts and notebooks.

    model = yoloport.load("yolov5s.pt")            # or a model key, or a model YAML
    for r in model.predict("imgs/", img_size=(736, 416), conf=0.25, iou=0.45):
        print(r.path, r.xyxy, r.conf, r.cls, r.names)
    metrics = yoloport.val(model, "coco128.yaml", img_size=640)
    metrics["mAP50_95"]

Other backends plug in behind the same calls: ``model.predict(..., backend="onnxruntime", artifact=...)``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .data.letterbox import input_multiple, parse_img_size
from .engine.predict import Detections


class Model:
    """A loaded detector: the PyTorch ``DetectionModel`` plus the calls users want."""

    def __init__(self, net):
        self.net = net

    @property
    def names(self) -> list:
        return list(self.net.names)

    @property
    def stride(self) -> int:
        return input_multiple(self.net.stride)

    def info(self, img_size=640) -> dict:
        return self.net.info(img_size)

    def runner(self, backend: str = "torch", artifact=None, threads: int | None = None, **options):
        """The :class:`~yoloport.backends.base.Runner` for ``backend`` (``artifact`` for non-torch ones)."""
        from .backends.registry import load_runner

        return load_runner(backend, artifact=artifact, model=self.net, threads=threads, **options)

    def predict(
        self,
        source,
        img_size=640,
        conf: float = 0.25,
        iou: float = 0.45,
        classes=None,
        agnostic: bool = False,
        max_det: int = 1000,
        backend: str = "torch",
        artifact=None,
    ) -> list[Detections]:
        """Detect on ``source`` (path, folder, glob, video, a BGR numpy image or a list of them).

        ``img_size`` is one int or ``(w, h)``. Returns one :class:`Detections` per image with
        ``xyxy [N, 4]`` (original pixels), ``conf [N]``, ``cls [N]`` and ``names``; a face model
        (landmark head) adds ``landmarks [N, 5, 2]`` and uses yolov5-face's input protocol.
        """
        from .data.sources import iter_frames, resolve_source
        from .engine.face import face_prepare_for
        from .engine.predict import detect_image

        runner = self.runner(backend, artifact)
        hw = parse_img_size(img_size, runner.stride, warn=None)
        kw = dict(conf=conf, iou=iou, classes=classes, agnostic=agnostic, max_det=max_det,
                  prepare=face_prepare_for(runner, hw))
        if isinstance(source, np.ndarray):
            return [detect_image(runner, source, hw, **kw)]
        if isinstance(source, (list, tuple)) and source and isinstance(source[0], np.ndarray):
            return [detect_image(runner, im, hw, **kw) for im in source]
        files = resolve_source(source) if not isinstance(source, (list, tuple)) else [Path(p) for p in source]
        return [detect_image(runner, fr.image, hw, path=str(fr.path), frame=fr.frame, **kw) for fr in iter_frames(files)]

    __call__ = predict

    def save(self, path, **extra) -> Path:
        """Save in yoloport's safe checkpoint format (safetensors + metadata)."""
        from .models import save_model

        return save_model(self.net, path, **extra)


def load(path_or_key="default", registry=None) -> Model:
    """Load a yoloport checkpoint, an Ultralytics .pt, a model YAML or a registry model key; with no
    argument, the embedded default model (``"default"``: the yolov5n trained on synthetic shapes)."""
    from .models import load_model

    return Model(load_model(path_or_key, registry=registry))


def val(model, data, img_size=640, batch_size: int = 8, conf: float = 0.001, iou: float = 0.6, backend: str = "torch",
        artifact=None, **kwargs) -> dict:
    """Validate on a data YAML; returns a dict with ``precision``, ``recall``, ``mAP50``, ``mAP50_95``
    (and per-class rows, timings, counts). ``img_size``: one number gives Ultralytics' rect batches
    at that longest side; ``(W, H)`` letterboxes every image to that fixed shape, as ``yoloport val
    --img-size W H`` does; an artifact with a fixed input shape always uses its own."""
    from .engine.val import validate_runner

    m = model if isinstance(model, Model) else load(model)
    runner = m.runner(backend, artifact, output="raw")  # fused-NMS heads give raw outputs for validation
    pair = not isinstance(img_size, int) and len(list(img_size)) == 2
    hw = parse_img_size(img_size, runner.stride, warn=None)
    fixed = tuple(runner.input_hw) if runner.input_hw else (hw if pair else None)
    kwargs.setdefault("progress", True)
    return validate_runner(runner, data, fixed, batch_size, names=m.names, img_size=max(hw), conf_thres=conf,
                           iou_thres=iou, **kwargs)
