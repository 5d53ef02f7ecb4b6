"""Shared pieces of the model commands (detect, val, ...): loading the model and the runner."""
from __future__ import annotations

import argparse

from ..config import model_source
from ..data.letterbox import parse_img_size
from ..errors import YoloportError

def add_backend_arguments(p: argparse.ArgumentParser) -> None:
    from ..backends.registry import BACKENDS, REFERENCE

    p.add_argument("--backend", choices=BACKENDS, default=None, help=f"where the model runs (default: {REFERENCE})")
    p.add_argument("--artifact", help="built artifact for --backend (from 'yoloport quantize'); torch needs none")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the runtime")
    p.add_argument("--device-id", dest="device_id", default=None,
                   help="rknn: run on the connected board with this id (default: rknn-toolkit2's simulator)")


def load_model_from_settings(s: argparse.Namespace, default: str | None = "default"):
    from ..models import load_model

    return load_model(model_source(s, default), registry=getattr(s, "registry", None))


def img_size_from_settings(s: argparse.Namespace, model, stride: int) -> tuple[int, int]:
    """``--img-size W H`` (or the run config's / registry's / checkpoint's), as (h, w)."""
    size = getattr(s, "img_size", None)
    if size is None:
        if getattr(model, "img_size", None):
            return tuple(model.img_size)
        size = 640
    return parse_img_size(size, stride, warn=lambda m: print(f"warning: {m}"))


def make_runner(s: argparse.Namespace, model, for_val: bool = False):
    """The Runner for ``--backend``. ``for_val``: heads with fused NMS (mlu-sim's end2end) return their
    raw outputs instead, so validation applies its own thresholds (conf 0.001, multi-label)."""
    from ..backends.registry import REFERENCE, get_spec, load_runner

    backend = getattr(s, "backend", None) or REFERENCE
    spec = get_spec(backend)
    if not spec.has_artifact:
        if getattr(s, "artifact", None):
            raise YoloportError(f"--artifact is for the exported backends; {spec.name} runs the checkpoint itself")
        return load_runner(spec.name, model=model, threads=getattr(s, "threads", None))
    options = {"threads": getattr(s, "threads", None)}
    if for_val:
        options["output"] = "raw"
    if getattr(s, "device_id", None):
        if spec.target_option is None:
            raise YoloportError(f"--device-id is for a backend with a board to connect (rknn), not {spec.name}")
        from ..backends.base import read_sidecar

        options["device_id"] = s.device_id
        options["target"] = (read_sidecar(s.artifact).get("qconfig") or {}).get("platform")
    return load_runner(backend, artifact=getattr(s, "artifact", None), model=model, **options)


SYNTH_VAL_SEED = 20261122  # not the seed the embedded default model was trained with (0)


def synthetic_val_set(model, out, img_hw, n: int):
    """A new synthetic validation set in the model's classes (only for models trained on synthetic
    shapes, such as the embedded default model); returns ``(data_yaml, note)``."""
    from ..data.synth import SHAPE_CLASSES, make_synthetic_dataset

    names = list(model.names)
    if not set(names) <= set(SHAPE_CLASSES):
        raise YoloportError("no --data given: pass the data YAML to validate on (only the embedded synthetic-shapes "
                            "model can generate its own validation set)")
    yaml_path = make_synthetic_dataset(out, {"train": max(n, 32), "val": n}, (img_hw[1], img_hw[0]), seed=SYNTH_VAL_SEED,
                                       classes=names)
    return yaml_path, f"synthetic validation set generated with seed {SYNTH_VAL_SEED} ({n} images)"
