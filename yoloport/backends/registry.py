"""The backends yoloport can run on, and one way to build and load an artifact for any of them.

Contract every backend module except ``torch`` implements (``yoloport.backends.<module>``)::

    build(model, onnx_path, head, out_dir, calibration, qconfig) -> Path
        model:       the float DetectionModel (eval) the ONNX came from: for model_fingerprint(model),
                     names, strides; a backend may also read weights from it.
        onnx_path:   fp32 ONNX exported by yoloport.deploy.export.export_onnx (fixed [B,3,H,W] input,
                     head mode ``head.mode``), already written; the backend must not modify it.
        head:        HeadSpec of that ONNX's outputs.
        out_dir:     Path (exists) where the artifact goes; anything else the backend writes goes there too.
        calibration: yoloport.data.calibration.CalibrationSet, or None for a float artifact.
                     Quantizers must take their inputs from it (iterate: float32 [1,3,H,W]).
        qconfig:     dict of settings; common keys below, backend keys passed through untouched.
        returns:     the artifact path. The backend writes its sidecar with
                     ``write_sidecar(artifact, sidecar_info(...) | extras)`` before returning.

    load(artifact, model=None, **options) -> Runner
        artifact: what build returned; the sidecar is checked with read_sidecar(artifact,
                  expect_backend=<this backend>, expect_fingerprint=model_fingerprint(model) if model).
        options:  runtime options (threads=..., streams=..., device=...); unknown ones are ignored.

    check_qconfig(qconfig) -> None      (optional)
        raise YoloportError for a bad setting; build_artifact calls it before exporting.

Common ``qconfig`` keys (``yoloport quantize`` fills them): ``precision`` (``int8`` when a
calibration set is given, else ``fp32``; also ``fp16``/``bf16`` where a backend has them),
``batch`` (int), ``exclude`` (list of node names or op types to keep in float), ``head_fp32``
(``tail`` keeps the decode arithmetic after the last Conv in float, ``convs`` also the Detect
convolutions, ``none``; the default is the backend's: onnxruntime ``convs``, openvino ``tail``). Backend keys: onnxruntime ``act_type, weight_type, per_channel,
calib_method, percentile, reduce_range, pre_process``; openvino ``preset, subset_size,
fast_bias_correction, max_drop, validation, inference_precision``; rknn ``platform,
quantized_dtype, quantized_algorithm, quantized_method, hybrid, ...``; mlu-sim ``use_avg,
data_scale, firstconv, per_channel, ...``.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from ..errors import DependencyMissing, YoloportError

BACKENDS = ("torch", "onnxruntime", "openvino", "rknn", "mlu-sim")

# backend -> (candidate module names, how to install its runtime)
_MODULES = {
    "torch": (("yoloport.backends.torch_backend",), "pip install torch"),
    "onnxruntime": (("yoloport.backends.onnxruntime_backend",), "pip install 'yoloport[deploy]' (onnxruntime, onnx)"),
    "openvino": (("yoloport.backends.openvino_backend",), "pip install 'yoloport[deploy]' (openvino, nncf)"),
    "rknn": (("yoloport.backends.rknn_backend", "yoloport.backends.rknn"),
             "install rknn-toolkit2 from Rockchip's wheels (https://github.com/airockchip/rknn-toolkit2)"),
    "mlu-sim": (("yoloport.backends.mlu_sim", "yoloport.backends.mlu_sim_backend"), "pip install numpy"),
}

ALIASES = {"ort": "onnxruntime", "onnx": "onnxruntime", "ov": "openvino", "mlu": "mlu-sim", "mlu_sim": "mlu-sim", "pytorch": "torch"}


def canonical_name(name: str) -> str:
    """``ort`` -> ``onnxruntime`` etc.; an unknown name is a YoloportError listing the backends."""
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in BACKENDS:
        raise YoloportError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    return key


def get_backend(name: str):
    """The module implementing backend ``name`` (imported on first use).

    Unknown name -> YoloportError; its runtime package missing -> DependencyMissing saying how to
    install it.
    """
    key = canonical_name(name)
    modules, install = _MODULES[key]
    for module in modules:
        try:
            return importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name == module:
                continue  # try the next candidate name
            missing = (e.name or "").split(".")[0]
            if missing and missing != "yoloport":
                raise DependencyMissing(missing, f"the {key} backend", install) from None
            raise
    raise YoloportError(f"the {key} backend is not available in this yoloport build (no module {' or '.join(modules)})")


def sidecar_info(backend, model, head, input_hw, batch, calibration=None, qconfig=None, **extra) -> dict:
    """The fields every artifact sidecar has (backends add their own through ``extra``)."""
    from .base import model_fingerprint

    return {
        "backend": backend,
        "head": head.to_dict() if hasattr(head, "to_dict") else dict(head),
        "input_hw": [int(input_hw[0]), int(input_hw[1])],
        "batch": int(batch),
        "model_fingerprint": model_fingerprint(model) if model is not None else None,
        "model_source": getattr(model, "source", None) if model is not None else None,
        "calibration": calibration.to_dict() if calibration is not None else None,
        "qconfig": dict(qconfig or {}),
        **extra,
    }


def artifact_size(artifact) -> int:
    """Bytes on disk of an artifact (an OpenVINO ``.xml`` counts its ``.bin`` too; a folder its files)."""
    p = Path(artifact)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    size = p.stat().st_size if p.exists() else 0
    if p.suffix == ".xml" and p.with_suffix(".bin").exists():
        size += p.with_suffix(".bin").stat().st_size
    return size


def build_artifact(
    backend: str,
    model,
    out_dir,
    img_size_hw=(640, 640),
    calibration=None,
    qconfig: dict | None = None,
    mode: str = "raw",
    batch: int = 1,
    opset: int | None = None,
    onnx_path=None,
    export_options: dict | None = None,
) -> Path:
    """Export ``model`` to ONNX (``mode`` head, fixed ``batch x 3 x H x W``) into ``out_dir`` and build
    ``backend``'s artifact from it; returns the artifact path (its sidecar is next to it).

    ``opset``: default the backend module's ``EXPORT_OPSET`` if it has one, else the exporter's.
    ``export_options``: more keywords for :func:`yoloport.deploy.export.export_onnx` (``sigmoid``,
    ``fuse``, ``silu``, ...). ``onnx_path``: use this already exported fp32 ONNX instead (it must match
    ``mode``/``img_size_hw``).
    """
    key = canonical_name(backend)
    if key == "torch":
        raise YoloportError("the torch backend runs the model itself and has no artifact to build")
    mod = get_backend(key)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    qconfig = dict(qconfig or {})
    qconfig.setdefault("precision", "int8" if calibration is not None else "fp32")
    qconfig.setdefault("batch", int(batch))
    if qconfig["precision"] == "int8" and calibration is None:
        raise YoloportError(f"int8 on {key} needs calibration images (--calib)")
    if hasattr(mod, "check_qconfig"):  # fail on a bad setting before the (slow) export
        mod.check_qconfig(qconfig)
    if calibration is not None and tuple(calibration.img_size_hw) != tuple(img_size_hw):
        calibration = calibration.with_size(img_size_hw)
    from ..ops.postprocess import HeadSpec

    if onnx_path is None:
        from ..deploy.export import export_onnx

        opts = dict(export_options or {})
        opset = opset or getattr(mod, "EXPORT_OPSET", None)
        if opset:
            opts["opset"] = int(opset)
        onnx_path, head = export_onnx(model, out_dir / "model.fp32.onnx", img_size_hw=tuple(img_size_hw), mode=mode, batch=int(batch), **opts)
    else:
        head = HeadSpec.from_model(model, mode, sigmoid_applied=bool((export_options or {}).get("sigmoid", False)))
    return Path(mod.build(model, Path(onnx_path), head, out_dir, calibration, qconfig))


def load_runner(backend: str | None = None, artifact=None, model=None, **options):
    """A Runner for ``backend``: ``torch`` wraps ``model`` (no artifact); every other backend loads
    ``artifact`` (checked against ``model``'s fingerprint when a model is given).

    ``backend=None`` reads the backend from the artifact's sidecar.
    """
    if backend is None:
        if artifact is None:
            raise YoloportError("give a backend or an artifact")
        from .base import read_sidecar

        backend = read_sidecar(artifact).get("backend")
        if not backend:
            raise YoloportError(f"artifact {artifact}: its sidecar does not name a backend")
    key = canonical_name(backend)
    if key == "torch":
        if model is None:
            raise YoloportError("the torch backend needs the model (--weights or --model-key)")
        from .torch_backend import TorchRunner

        return TorchRunner(model, threads=options.get("threads"))
    if artifact is None:
        raise YoloportError(f"the {key} backend needs an artifact (build one with 'yoloport quantize --backend {key}')")
    return get_backend(key).load(artifact, model=model, **options)


# ----------------------------------------------------------------------------- runner helpers


def check_input(images, input_hw, backend: str):
    """A float32 contiguous ``[B,3,H,W]`` batch of the graph's fixed ``(h, w)``, or a YoloportError."""
    import numpy as np

    x = np.ascontiguousarray(images, dtype=np.float32)
    if x.ndim != 4 or x.shape[1] != 3:
        raise YoloportError(f"{backend}: expected images [B, 3, H, W], got {list(x.shape)}")
    if input_hw is not None and tuple(x.shape[2:]) != tuple(input_hw):
        raise YoloportError(
            f"{backend}: the artifact takes {input_hw[1]}x{input_hw[0]} (W x H) inputs, got {x.shape[3]}x{x.shape[2]}; "
            "letterbox to that fixed shape (val: fixed_shape_hw, preprocess(auto=False))"
        )
    return x


def call_fixed_batch(fn, images, batch: int | None) -> list:
    """Run ``fn`` (fixed-batch graph) on any number of images: split into ``batch``-sized chunks, pad
    the last with zeros, concatenate each output along axis 0 and drop the padding."""
    import numpy as np

    n = images.shape[0]
    if not batch or n == batch:
        return [np.asarray(o) for o in fn(images)]
    chunks = []
    for i in range(0, n, batch):
        x = images[i : i + batch]
        k = x.shape[0]
        if k < batch:
            x = np.concatenate([x, np.zeros((batch - k, *x.shape[1:]), x.dtype)], 0)
        chunks.append((k, [np.asarray(o) for o in fn(x)]))
    n_out = len(chunks[0][1])
    return [np.concatenate([outs[j][:k] for k, outs in chunks], 0) for j in range(n_out)]
