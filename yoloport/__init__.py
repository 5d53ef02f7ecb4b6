"""yoloport: YOLOv5 from training to validated int8 deployment on edge NPUs.

Public API (the CLI does the same things)::

    import yoloport
    model = yoloport.load("yolov5s.pt")              # a path or a model key from the registry
    demo = yoloport.load()                           # the embedded default model (synthetic shapes, 320x320)
    results = model.predict("bus.jpg", img_size=(640, 640), conf=0.25, iou=0.45)
    metrics = yoloport.val(model, "coco128.yaml", img_size=640)
"""
from ._version import __version__

__all__ = ["load", "val", "__version__"]


def load(path_or_key="default", **kwargs):
    """Load a checkpoint (Ultralytics .pt or yoloport's own) or a registry model key; with no argument,
    the embedded default model (as the CLI's commands use without --weights)."""
    from .api import load as _load

    return _load(path_or_key, **kwargs)


def val(model, data, **kwargs):
    """Validate ``model`` on a data YAML; returns a dict with precision, recall, mAP50, mAP50_95."""
    from .api import val as _val

    return _val(model, data, **kwargs)
