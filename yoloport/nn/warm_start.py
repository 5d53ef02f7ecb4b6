"""Start a new detector architecture from a trained one: copy every tensor that matches by name and shape.

Layers that two YOLOv5 YAMLs share (same position, module and channels) have the same state-dict names, so
they copy as they are. The Detect head's convolutions are per level, and a level's index moves when levels
are added or dropped (P3 is ``m.0`` in yolov5n, ``m.1`` in the P2-P3-P4 head ``yolov5n-p2``), so Detect
levels are matched by **stride** instead, and copied when the shapes agree. Anchors are never copied: they
belong to the new YAML; a level whose stride the old model had should keep that level's anchors, or its
copied convolution predicts boxes for the wrong prior. Everything else keeps its fresh initialisation.
"""
from __future__ import annotations

import torch

from .model import DetectionModel


def detect_level_renames(old_prefix: str, old_strides: list[float], new_prefix: str,
                         new_strides: list[float]) -> dict[str, str]:
    """``{"<old_prefix>.m.<i>.": "<new_prefix>.m.<j>."}`` for each old Detect level ``i`` whose stride
    is the stride of new level ``j`` (levels with a stride the new model lacks are left out)."""
    return {f"{old_prefix}.m.{i}.": f"{new_prefix}.m.{new_strides.index(s)}."
            for i, s in enumerate(old_strides) if s in new_strides}


def transfer_state(old_sd: dict, new_sd: dict, renames: dict[str, str]) -> tuple[dict, list[str], list[str]]:
    """``(state, copied, kept_new)``: ``new_sd`` with every tensor of ``old_sd`` (name prefixes renamed
    by ``renames`` first) whose name and shape match; ``copied`` and ``kept_new`` name the new model's
    tensors. Anchor buffers (``*anchors``, ``*anchor_grid``) are never copied."""
    mapped = {}
    for name, t in old_sd.items():
        for old, new in renames.items():
            if name.startswith(old):
                name = new + name[len(old):]
                break
        mapped[name] = t
    state, copied, kept = dict(new_sd), [], []
    for name, t in new_sd.items():
        src = mapped.get(name)
        if src is not None and src.shape == t.shape and not name.endswith(("anchors", "anchor_grid")):
            state[name] = src.to(t.dtype)
            copied.append(name)
        else:
            kept.append(name)
    return state, copied, kept


def warm_start(old: DetectionModel, cfg, seed: int = 0) -> tuple[DetectionModel, list[str], list[str]]:
    """A new :class:`DetectionModel` of ``cfg`` (same classes and names as ``old``), initialised with
    ``seed`` and then given every tensor of ``old`` that transfers (see the module docstring).
    Returns ``(model, copied, kept_new)`` as :func:`transfer_state`."""
    torch.manual_seed(seed)
    new = DetectionModel(cfg, nc=old.nc, names=list(old.names))
    renames = detect_level_renames(f"model.{len(old.model) - 1}", old.stride.tolist(),
                                   f"model.{len(new.model) - 1}", new.stride.tolist())
    state, copied, kept = transfer_state(old.state_dict(), new.state_dict(), renames)
    new.load_state_dict(state)
    new.img_size = getattr(old, "img_size", None)
    return new, copied, kept
