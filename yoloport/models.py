"""Load a detector from anything a user may hand us: a yoloport checkpoint, an official Ultralytics
``.pt`` (read without its code, nothing executed), a model YAML, a bundled config name or a model key
from the registry."""
from __future__ import annotations

from pathlib import Path

import torch

from .errors import YoloportError
from .nn.model import CFG_DIR, DetectionModel

def model_from_state(yaml_dict: dict, state_dict: dict, names=None, stride=None, activation=None) -> DetectionModel:
    """Rebuild a ``DetectionModel`` from its own YAML and copy ``state_dict`` into it (strict)."""
    cfg = dict(yaml_dict)
    if activation and not cfg.get("activation") and activation != "SiLU":
        cfg["activation"] = activation
    try:
        model = DetectionModel(cfg, names=names)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise YoloportError(f"the checkpoint's model YAML does not describe a YOLOv5 model yoloport can build: {e}") from None
    own = model.state_dict()
    sd = {k: v for k, v in state_dict.items() if k in own}
    # Ultralytics <= v6.0 also stored anchor_grid (pixels) as a buffer; we derive it from anchors.
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in state_dict if k not in own and not k.endswith("anchor_grid")]
    if missing or unexpected:
        raise YoloportError(
            "checkpoint weights do not fit the model built from its YAML "
            f"(missing: {missing[:5]}{'...' if len(missing) > 5 else ''}; unexpected: {unexpected[:5]})"
        )
    shape_err = [k for k, v in sd.items() if tuple(v.shape) != tuple(own[k].shape)]
    if shape_err:
        raise YoloportError(f"checkpoint tensors have the wrong shape for its own YAML: {shape_err[:5]}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items()}, strict=True)
    if stride is not None:
        s = torch.as_tensor(stride, dtype=torch.float32).view(-1)
        if s.numel() == model.stride.numel() and not torch.allclose(s, model.stride):
            raise YoloportError(f"checkpoint stride {s.tolist()} differs from the model's {model.stride.tolist()}")
    return model.float().eval()


def load_ultralytics(path: Path) -> DetectionModel:
    """An Ultralytics YOLOv5 or yolov5-face ``.pt`` (the head's keypoint count becomes the YAML's ``nkpt``)."""
    from .io.yolov5_face import read_face_checkpoint

    ck, yaml_dict = read_face_checkpoint(path)
    model = model_from_state(yaml_dict, ck.state_dict, names=ck.names, stride=ck.stride, activation=ck.activation)
    model.source = {"format": "ultralytics", "path": str(path), **(ck.source or {})}
    if model.detect.nkpt:
        model.source["family"] = "yolov5-face"
    model.source["param_count"] = ck.param_count
    return model


def load_yoloport(path: Path) -> DetectionModel:
    from .io.checkpoint import read_checkpoint

    state_dict, meta = read_checkpoint(path)
    if "yaml" not in meta:
        raise YoloportError(f"{path} is a safetensors file without yoloport metadata (no model yaml)")
    yaml_dict = meta["yaml"]
    if meta.get("nkpt") and yaml_dict.get("nkpt", meta["nkpt"]) != meta["nkpt"]:
        raise YoloportError(f"{path}: metadata says {meta['nkpt']} keypoints but its model yaml says {yaml_dict.get('nkpt')}")
    model = model_from_state(yaml_dict, state_dict, names=meta.get("names"), stride=meta.get("stride"))
    if meta.get("img_size"):
        model.img_size = tuple(meta["img_size"])
    model.source = {"format": "yoloport", "path": str(path), **{k: meta[k] for k in ("created", "origin") if k in meta}}
    model.meta = meta
    return model


def checkpoint_meta(model: DetectionModel, **extra) -> dict:
    """The metadata a yoloport checkpoint carries so it can be rebuilt without anything else."""
    meta = {
        "format": "yoloport",
        "yaml": model.yaml,
        "names": list(model.names),
        "nc": model.nc,
        "stride": model.stride.tolist(),
        "anchors_px": model.detect.anchors_px().tolist(),
        "nkpt": model.detect.nkpt,
        "img_size": list(model.img_size) if model.img_size else None,
    }
    meta.update(extra)
    return meta


def save_model(model: DetectionModel, path, half: bool = False, **extra) -> Path:
    """Save ``model`` in yoloport's safe format (safetensors + JSON metadata), atomically.

    ``half`` stores floating tensors as float16 (half the size; loading casts back to float32)."""
    from .io.checkpoint import save_checkpoint

    dtype = torch.float16 if half else torch.float32
    sd = {k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).contiguous() for k, v in model.state_dict().items()}
    if half:
        extra.setdefault("stored_dtype", "float16")
    return save_checkpoint(Path(path), sd, checkpoint_meta(model, **extra))


def load_model(source, registry=None) -> DetectionModel:
    """``source``: checkpoint path, model YAML, bundled config name or registry model key."""
    if isinstance(source, DetectionModel):
        return source
    p = Path(str(source)).expanduser()
    if not p.exists():
        from .config import lookup_model_key

        entry = lookup_model_key(str(source), registry, required=False)
        if entry is not None:
            model = load_model(entry.weights or entry.cfg)
            if entry.names:
                model.names = list(entry.names)
            if entry.img_size:
                model.img_size = tuple(entry.img_size)
            model.model_key = entry.key
            return model
        if (CFG_DIR / f"{source}.yaml").is_file():
            return DetectionModel(str(source)).eval()
        raise YoloportError(f"{source}: no such file, model key or bundled config")
    if p.is_dir():
        raise YoloportError(f"{p} is a directory, not a checkpoint")
    if p.suffix in (".yaml", ".yml"):
        return DetectionModel(p).eval()
    from .io.checkpoint import detect_checkpoint_format

    fmt = detect_checkpoint_format(p)
    if fmt == "yoloport":
        return load_yoloport(p)
    if fmt == "ultralytics":
        return load_ultralytics(p)
    raise YoloportError(f"{p} is not a checkpoint yoloport can read (expected a yoloport .safetensors or an Ultralytics .pt)")
