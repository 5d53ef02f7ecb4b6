"""Shared pieces of the model commands (detect, val, ...): loading the model and the runner.

An artifact runs from its sidecar alone: ``--backend onnxruntime --artifact A`` without ``--weights``
or ``--model-key`` loads no checkpoint (:class:`ArtifactModel` stands for the model), so the light
runtime install (no torch, no onnx) can detect, validate and benchmark.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field

from ..config import PACKAGE_DIR, model_source
from ..data.letterbox import input_multiple, parse_img_size
from ..errors import DependencyMissing, YoloportError

TORCH_PACKAGE = "torch"  # the Python package a checkpoint needs (the [train] extra), not a backend name
TRAIN_EXTRA = "pip install 'yoloport[train]' (torch)"


@dataclass(frozen=True)
class ArtifactModel:
    """What the commands read of a model when they run an artifact without its checkpoint, taken from the
    artifact's sidecar: class ``names``, the built input size ``img_size`` ``(h, w)``, the largest
    ``stride``, the checkpoint's ``source`` record and ``model_key`` (``"default"`` when the sidecar's
    source is the embedded default model, else None)."""

    names: tuple[str, ...]
    img_size: tuple[int, int]
    stride: int
    source: dict | None = None
    model_key: str | None = None
    fingerprint: str | None = field(default=None, compare=False)


def artifact_model(artifact) -> ArtifactModel:
    """The :class:`ArtifactModel` of ``artifact`` (its sidecar read and checked by ``read_sidecar``)."""
    from ..backends.base import read_sidecar
    from ..ops.postprocess import HeadSpec

    info = read_sidecar(artifact)
    head = HeadSpec.from_dict(info["head"])
    source = info.get("model_source") if isinstance(info.get("model_source"), dict) else None
    return ArtifactModel(
        names=tuple(head.names or ()),
        img_size=(int(info["input_hw"][0]), int(info["input_hw"][1])),
        stride=input_multiple(head.strides),
        source=source,
        model_key="default" if _is_default_model(source) else None,
        fingerprint=info.get("model_fingerprint"),
    )


def _is_default_model(source: dict | None) -> bool:
    """Whether a sidecar's ``model_source`` is the embedded default model (same origin and creation time
    as ``assets/default.json`` records)."""
    record = PACKAGE_DIR / "assets" / "default.json"
    if not source or not record.is_file():
        return False
    meta = json.loads(record.read_text())
    return bool(source.get("origin")) and (source.get("origin"), source.get("created")) == (meta.get("origin"), meta.get("created"))


def runs_artifact_alone(s: argparse.Namespace) -> bool:
    """True when the command runs ``--artifact`` on an exported backend and names no checkpoint
    (``--weights`` / ``--model-key``, on the command line or in the run config)."""
    from ..backends.registry import REFERENCE, get_spec

    if not getattr(s, "artifact", None) or getattr(s, "weights", None) or getattr(s, "model_key", None):
        return False
    return get_spec(getattr(s, "backend", None) or REFERENCE).has_artifact

def add_backend_arguments(p: argparse.ArgumentParser) -> None:
    from ..backends.registry import BACKENDS, REFERENCE

    p.add_argument("--backend", choices=BACKENDS, default=None, help=f"where the model runs (default: {REFERENCE})")
    p.add_argument("--artifact", help="built artifact for --backend (from 'yoloport quantize'); torch needs none")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the runtime")
    p.add_argument("--device-id", dest="device_id", default=None,
                   help="rknn: run on the connected board with this id (default: rknn-toolkit2's simulator)")
    add_runtime_option_arguments(p)


CORE_MASK_HELP = ("rknn-lite: NPU cores of an RK3588 (auto, 0, 1, 2, 0_1, 0_1_2) or RK3576 (auto, 0, 1, 0_1); default "
                  "auto. rknn-lite runs on the board (rknn-toolkit-lite2); YOLOPORT_RKNN_LITE_RUNTIME=simulator runs it "
                  "on rknn-toolkit2's x86 simulator instead (accuracy only: board timings come from the board)")


def add_runtime_option_arguments(p: argparse.ArgumentParser) -> None:
    """The runtime options a backend's ``SPEC.runtime_options`` may take (``--core-mask``)."""
    p.add_argument("--core-mask", dest="core_mask", default=None, help=CORE_MASK_HELP)


def runtime_options(s: argparse.Namespace, spec) -> dict:
    """The runtime options given (``core_mask``), refused when ``spec``'s backend does not take them."""
    given = {k: getattr(s, k) for k in ("core_mask",) if getattr(s, k, None) is not None}
    for key in given:
        if key not in spec.runtime_options:
            raise YoloportError(f"--{key.replace('_', '-')} is a runtime option of "
                                f"{_backends_taking(key) or 'no backend'}, not of {spec.name}")
    return given


def _backends_taking(option: str) -> str:
    from ..backends.registry import BACKENDS, get_spec

    names = []
    for name in BACKENDS:
        try:
            if option in get_spec(name).runtime_options:
                names.append(name)
        except ImportError:
            continue
    return ", ".join(names)


def load_model_from_settings(s: argparse.Namespace, default: str | None = "default"):
    """The checkpoint the settings name (``--weights``, ``--model-key``, else ``default``); for an artifact
    run without one, its sidecar's :class:`ArtifactModel` (no torch)."""
    if runs_artifact_alone(s):
        return artifact_model(s.artifact)
    try:
        from ..models import load_model
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] != TORCH_PACKAGE:
            raise
        raise DependencyMissing(TORCH_PACKAGE, "loading a checkpoint (--weights, --model-key or the default model)",
                                f"{TRAIN_EXTRA}; an artifact runs without it: --backend B --artifact A") from None
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
    extra = runtime_options(s, spec)
    if not spec.has_artifact:
        if getattr(s, "artifact", None):
            raise YoloportError(f"--artifact is for the exported backends; {spec.name} runs the checkpoint itself")
        return load_runner(spec.name, model=model, threads=getattr(s, "threads", None))
    options = {"threads": getattr(s, "threads", None), **extra}
    if for_val:
        options["output"] = "raw"
    if getattr(s, "device_id", None):
        if not spec.board:
            raise YoloportError(f"--device-id is for a backend with a board to connect (rknn), not {spec.name}")
        from ..backends.base import read_sidecar

        options["device_id"] = s.device_id
        options["target"] = (read_sidecar(s.artifact).get("qconfig") or {}).get("platform")
    checked = None if isinstance(model, ArtifactModel) else model  # the sidecar cannot be checked against itself
    return load_runner(backend, artifact=getattr(s, "artifact", None), model=checked, **options)


SYNTH_VAL_SEED = 20261122  # not the seed the embedded default model was trained with (0)
FACE_MODEL_KEY = "face"  # the embedded face model's registry key (scripts/train_face_model.py, trained with seed 0)


def default_model_key(task: str | None) -> str:
    """The embedded model a command loads when none is named: the face model for ``--task face``."""
    return FACE_MODEL_KEY if task == "face" else "default"


def synthetic_face_val_set(out, img_hw, n: int):
    """A new synthetic face set (:mod:`yoloport.data.synth_face`, seed :data:`SYNTH_VAL_SEED`) for a face
    model when no data is given; returns ``(folder with images/ and labels/, note)``."""
    from ..data.synth_face import make_face_dataset

    yaml_path = make_face_dataset(out, {"val": n}, (img_hw[1], img_hw[0]), seed=SYNTH_VAL_SEED)
    return yaml_path.parent / "val", f"synthetic face set generated with seed {SYNTH_VAL_SEED} ({n} images)"


SYNTH_CALIB_SEED = SYNTH_VAL_SEED + 1  # calibration images for a port with no --calib: neither trained on nor reported


def synthetic_face_calibration(out, img_hw, n: int):
    """Synthetic face calibration images (seed :data:`SYNTH_CALIB_SEED`: other images than the training
    set's and the validation set's); returns ``(images folder, note)``."""
    from ..data.synth_face import make_face_dataset

    yaml_path = make_face_dataset(out, {"calib": n}, (img_hw[1], img_hw[0]), seed=SYNTH_CALIB_SEED)
    return yaml_path.parent / "calib" / "images", f"synthetic faces generated with seed {SYNTH_CALIB_SEED} ({n} images)"


def synthetic_val_set(model, out, img_hw, n: int, n_train: int = 32):
    """A new synthetic validation set in the model's classes (only for models trained on synthetic
    shapes, such as the embedded default model), with a ``train`` split of ``n_train`` other images (a
    port's calibration pool; at least 32); returns ``(data_yaml, note)``."""
    from ..data.synth import SHAPE_CLASSES, make_synthetic_dataset

    names = list(model.names)
    if not set(names) <= set(SHAPE_CLASSES):
        raise YoloportError("no --data given: pass the data YAML to validate on (only the embedded synthetic-shapes "
                            "model can generate its own validation set)")
    yaml_path = make_synthetic_dataset(out, {"train": max(n, n_train, 32), "val": n}, (img_hw[1], img_hw[0]), seed=SYNTH_VAL_SEED,
                                       classes=names)
    return yaml_path, f"synthetic validation set generated with seed {SYNTH_VAL_SEED} ({n} images)"
