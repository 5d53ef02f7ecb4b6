"""The backends yoloport can run on, and one way to build and load an artifact for any of them.

Each backend is one module (or package) that declares ``SPEC`` (:class:`~yoloport.backends.spec.BackendSpec`:
what it is) and implements the contract below; it is registered here by name, with the spellings
users type for it and how to install its runtime (known without importing it). Nothing outside
``yoloport/backends/`` compares backend names: it reads :func:`get_spec`.

Contract every backend module except ``torch`` implements::

    build(model, onnx_path, head, out_dir, calibration, qconfig) -> Path
        model:       the float DetectionModel (eval) the ONNX came from: for model_fingerprint(model),
                     names, strides; a backend may also read weights from it.
        onnx_path:   fp32 ONNX exported by yoloport.deploy.export.export_onnx (fixed [B,3,H,W] input,
                     head mode ``head.mode``), already written; the backend must not modify it.
        head:        HeadSpec of that ONNX's outputs.
        out_dir:     Path (exists) where the artifact goes; anything else the backend writes goes there too.
        calibration: yoloport.data.calibration.CalibrationSet, or None for a float artifact.
                     Quantizers must take their inputs from it (iterate: float32 [1,3,H,W]).
        qconfig:     dict of settings, checked by :func:`check_qconfig` (keys: the common ones of
                     ``spec.COMMON_QCONFIG_KEYS`` and the backend's ``SPEC.qconfig_defaults``).
        returns:     the artifact path. The backend writes its sidecar with
                     ``write_sidecar(artifact, sidecar_info(...) | extras)`` before returning.

    load(artifact, model=None, **options) -> Runner
        artifact: what build returned; the sidecar is checked with read_sidecar(artifact,
                  expect_backend=<this backend>, expect_fingerprint=model_fingerprint(model) if model).
        options:  runtime options (threads=..., streams=..., device=...); unknown ones are ignored.

    check_qconfig(qconfig) -> None      (optional)
        raise YoloportError for a bad value; :func:`check_qconfig` calls it after the key check.

The float scope (layers kept out of int8) is one type every backend translates inside ``build``:
``qconfig["float_scope"]`` (:class:`yoloport.quant.float_scope.FloatScope`), with the user-facing
``head_fp32`` and ``exclude`` folded into it.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import NamedTuple

from ..errors import DependencyMissing, YoloportError


class Registration(NamedTuple):
    module: str
    aliases: tuple[str, ...]
    install: str


REFERENCE = "torch"  # the float reference every port compares against; it has no artifact
_REGISTERED = {
    "torch": Registration("yoloport.backends.torch_backend", ("pytorch",), "pip install 'yoloport[train]' (torch)"),
    "onnxruntime": Registration("yoloport.backends.onnxruntime_backend", ("ort", "onnx"),
                                "pip install onnxruntime (runs an artifact); pip install 'yoloport[port]' builds one"),
    "openvino": Registration("yoloport.backends.openvino_backend", ("ov",),
                             "pip install openvino (runs an artifact); pip install 'yoloport[port]' builds one (nncf)"),
    "rknn": Registration("yoloport.backends.rknn", (),
                         "install rknn-toolkit2 from Rockchip's wheels (https://github.com/airockchip/rknn-toolkit2)"),
    "rknn-lite": Registration("yoloport.backends.rknn_lite", ("rknnlite", "rknn_lite"),
                              "pip install 'yoloport[rknn-lite]' plus Rockchip's rknn_toolkit_lite2 wheel (a board, aarch64)"),
    "mlu-sim": Registration("yoloport.backends.mlu_sim", ("mlu", "mlu_sim"), "pip install 'yoloport[train]' (torch)"),
}
BACKENDS = tuple(_REGISTERED)
ARTIFACT_BACKENDS = tuple(b for b in BACKENDS if b != REFERENCE)
ALIASES = {a: name for name, r in _REGISTERED.items() for a in r.aliases}


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
    module, _, install = _REGISTERED[key]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        missing = (e.name or "").split(".")[0]
        if missing and missing != "yoloport":
            raise DependencyMissing(missing, f"the {key} backend", install) from None
        raise


def get_spec(name: str):
    """The :class:`~yoloport.backends.spec.BackendSpec` of backend ``name``."""
    return get_backend(name).SPEC


def require_artifact_backend(name: str, what: str = "build"):
    """The spec of ``name``, or a YoloportError when it is the torch reference (nothing to ``what``)."""
    spec = get_spec(name)
    if not spec.has_artifact:
        choices = ", ".join(ARTIFACT_BACKENDS)
        raise YoloportError(f"{spec.name} is the fp32 reference and runs the model itself (no artifact): nothing to {what} "
                            f"(choose {choices})")
    return spec


def check_qconfig(backend: str, qconfig: dict) -> dict:
    """``qconfig`` checked for ``backend`` before any export: unknown keys are refused naming the keys it
    accepts, the precision must be one it builds, and the backend's own ``check_qconfig`` sees the
    values. Returns ``qconfig``."""
    spec = require_artifact_backend(backend)
    spec.check_qconfig_keys(qconfig)
    from ..quant.recipe import check_steps

    check_steps(qconfig.get("ptq"))
    if qconfig.get("precision"):
        spec.check_precision(qconfig["precision"])
    mod = get_backend(backend)
    if hasattr(mod, "check_qconfig"):
        mod.check_qconfig(qconfig)
    return qconfig


def runtime_backends(builder: str) -> list[str]:
    """The backends that run ``builder``'s artifacts: ``builder`` itself and every backend whose spec says
    it runs them (``built_by``), e.g. ``rknn`` -> ``["rknn", "rknn-lite"]``. A backend whose runtime
    package is missing is still listed (its spec is read without its runtime)."""
    key = canonical_name(builder)
    out = [key]
    for name in BACKENDS:
        try:
            spec = get_spec(name)
        except ImportError:
            continue
        if spec.built_by == key:
            out.append(name)
    return out


def sidecar_info(backend, model, head, input_hw, batch, calibration=None, qconfig=None, **extra) -> dict:
    """The fields every artifact sidecar has (backends add their own through ``extra``)."""
    from .base import model_fingerprint

    return {
        "backend": backend,
        "head": head.to_dict() if hasattr(head, "to_dict") else dict(head),
        "input_hw": [int(input_hw[0]), int(input_hw[1])],
        "batch": int(batch) if batch else None,  # None: the artifact takes any batch
        "model_fingerprint": model_fingerprint(model) if model is not None else None,
        "model_source": getattr(model, "source", None) if model is not None else None,
        "calibration": calibration.to_dict() if calibration is not None else None,
        "qconfig": dict(qconfig or {}),
        **extra,
    }


def describe_batch(batch) -> str:
    """A sidecar's ``batch`` as people read it: the number, or ``"dynamic"`` when it is None (the artifact
    takes any batch)."""
    return "dynamic" if batch is None else str(int(batch))


def artifact_size(artifact) -> int:
    """Bytes on disk of an artifact: its files as :func:`yoloport.backends.base.artifact_files` lists them
    (an OpenVINO ``.xml`` with its ``.bin``, a folder's files); 0 when it does not exist."""
    from .base import artifact_files

    return sum(f.stat().st_size for f in artifact_files(artifact)) if Path(artifact).exists() else 0


def export_for(backend: str, model, path, img_size_hw=(640, 640), mode: str | None = "raw", batch: int = 1,
               opset: int | None = None, export_options: dict | None = None, convention: str | None = None):
    """Export ``model`` once for ``backend``: fixed ``batch x 3 x H x W``, the backend's opset unless
    ``opset`` is given, a v5.0 Focus stem as the backend's ``SPEC.focus_to_conv`` says unless
    ``export_options['focus_to_conv']`` says otherwise. Returns the :class:`~yoloport.deploy.export.ExportResult` that :func:`build`
    takes (graph path, head spec, input shape, opset).

    The head layout: ``convention`` (a name of :data:`yoloport.deploy.conventions.CONVENTIONS`) when
    given (``mode`` is then not read); else ``mode`` with ``export_options['sigmoid']``; ``mode=None`` means the backend's own
    convention (``SPEC.output_convention``, what ``quantize`` and ``port`` export by default)."""
    from ..deploy.conventions import resolve_export_choice
    from ..deploy.export import DEFAULT_OPSET, export_model

    spec = get_spec(backend)
    opts = dict(export_options or {})
    if opts.get("focus_to_conv") is None:
        opts["focus_to_conv"] = spec.focus_to_conv
    opts.pop("opset", None)
    convention = convention or opts.pop("convention", None)
    opts.pop("convention", None)
    default = spec.output_convention if mode is None and not convention else None
    mode, sigmoid, convention = resolve_export_choice(convention, None if convention else mode, opts.pop("sigmoid", None),
                                                      default=default, nkpt=int(getattr(model.detect, "nkpt", 0)))
    return export_model(model, path, tuple(img_size_hw), mode=mode, batch=int(batch),
                        opset=int(opset or spec.export_opset or DEFAULT_OPSET), overwrite=True, sigmoid=sigmoid,
                        convention=convention, **opts)


def focus_to_conv_for_target(target: str | None) -> bool:
    """Whether an export for lint ``target`` (``export --target``) takes a Focus stem as its Conv: what
    the backend whose ``SPEC.lint_target`` it is declares; no target (or none that a backend lints for):
    False, the checkpoint's stem."""
    builders = (get_spec(b) for b in ARTIFACT_BACKENDS if not get_spec(b).built_by)
    return bool(target) and next((s.focus_to_conv for s in builders if s.lint_target == target), False)


def prepare_qconfig(backend: str, qconfig: dict | None, calibration=None, batch: int = 1) -> dict:
    """The qconfig a build uses: ``precision`` (``int8`` with calibration images, else ``fp32``) and
    ``batch`` filled in, then checked (:func:`check_qconfig`); int8 without calibration is an error."""
    spec = get_spec(backend)
    if spec.built_by:
        raise YoloportError(f"{spec.name} builds nothing: it runs the artifacts the {spec.built_by} backend builds "
                            f"(build with --backend {spec.built_by}, then run it with --backend {spec.name})")
    q = dict(qconfig or {})
    q.setdefault("precision", "int8" if calibration is not None else "fp32")
    q.setdefault("batch", int(batch))
    if q["precision"] == "int8" and calibration is None:
        raise YoloportError(f"int8 on {canonical_name(backend)} needs calibration images (--calib)")
    return check_qconfig(backend, q)


def build(backend: str, model, export, out_dir, calibration=None, qconfig: dict | None = None) -> Path:
    """``backend``'s artifact from ``export`` (an ExportResult of :func:`export_for`, used as it is) into
    ``out_dir``; returns the artifact path (its sidecar is next to it)."""
    key = canonical_name(backend)
    q = prepare_qconfig(key, qconfig, calibration, export.batch)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if calibration is not None and tuple(calibration.img_size_hw) != tuple(export.img_size_hw):
        calibration = calibration.with_size(export.img_size_hw)
    model, export, ptq_record = _apply_ptq(key, model, export, out_dir, calibration, q)
    artifact = Path(get_backend(key).build(model, Path(export.path), export.head, out_dir, calibration, q))
    if ptq_record is not None:
        _record_in_sidecar(artifact, "ptq", ptq_record)
    return artifact


# ----------------------------------------------------------------------------- the PTQ recipe hook


def ptq_weight_grid(backend: str, qconfig: dict):
    """The int8 weight grid ``backend``'s quantizer puts weights on with ``qconfig`` (symmetric, per
    channel or per tensor, over ``max|w|`` or, with ``weight_range='mse'`` - the qconfig's or the backend's
    default - the MSE range), or a YoloportError when its weights are not int8 (PTQ steps target int8)."""
    from ..quant.layers import WeightGrid

    spec = get_spec(backend)
    wide = str(qconfig.get("dtype") or "int8").lower() != "int8" or "16" in str(qconfig.get("quantized_dtype") or "")
    if wide:
        raise YoloportError(f"{spec.name}: ptq steps target int8 weights; this qconfig quantizes to 16 bits")
    weight_range = qconfig.get("weight_range") or spec.qconfig_defaults.get("weight_range") or "max"
    return WeightGrid(127, spec.weights_per_channel(qconfig), str(weight_range).lower())


def ptq_steps(backend: str, qconfig: dict):
    """The PTQ steps a build runs: the qconfig's ``ptq`` when given (an empty list: none), else the backend's
    default (``qconfig_defaults['ptq']``, e.g. mlu-sim's bias correction)."""
    steps = qconfig.get("ptq")
    return get_spec(backend).qconfig_defaults.get("ptq", ()) if steps is None else steps


def ptq_float_layers(backend: str, model, qconfig: dict) -> tuple[str, ...]:
    """Convolutions (torch module paths or prefixes) ``backend`` keeps in float with ``qconfig``: the float
    scope's layers and, with ``head_fp32='convs'``, the Detect convolutions. PTQ leaves them alone."""
    from ..quant.float_scope import scope_from_qconfig

    spec = get_spec(backend)
    scope = scope_from_qconfig(qconfig, spec.default_head_fp32)
    layers = list(scope.layers)
    if spec.head_fp32(qconfig) == "convs" or scope.head == "convs":
        layers.append(f"model.{len(model.model) - 1}.m")
    return tuple(layers)


def _apply_ptq(backend: str, model, export, out_dir: Path, calibration, qconfig: dict):
    """``(model, export, record)`` to build from: unchanged (record None) without ``ptq`` steps or
    calibration; else the PTQ'd float model (:func:`yoloport.quant.recipe.apply_recipe`, calibration
    images only) exported again like ``export`` into ``out_dir/model.ptq.fp32.onnx``."""
    from ..quant.recipe import apply_recipe, check_steps

    steps = check_steps(ptq_steps(backend, qconfig))
    if not steps or calibration is None or str(qconfig.get("precision")) != "int8":
        return model, export, None
    grid = ptq_weight_grid(backend, qconfig)
    ptq_model, record = apply_recipe(model, steps, calibration, grid, ptq_float_layers(backend, model, qconfig),
                                     qconfig.get("ptq_options"))
    from .base import model_fingerprint

    ptq_model.source_fingerprint = model_fingerprint(model)  # the artifact is checked against the user's checkpoint
    return ptq_model, _export_like(export, ptq_model, out_dir / "model.ptq.fp32.onnx"), record


def _export_like(export, model, path: Path):
    """``model`` exported with the settings ``export`` (an ExportResult) was made with."""
    from ..deploy.export import export_model

    meta = export.meta
    surgery = list(meta.get("surgery") or export.surgery or [])
    kwargs = {k: meta[k] for k in ("conf_thres", "iou_thres", "max_det") if k in meta}
    return export_model(model, path, tuple(export.img_size_hw), mode=meta["mode"], batch=export.batch, opset=export.opset,
                        sigmoid=bool(meta.get("sigmoid")), dynamic=bool(meta.get("dynamic")), simplify="onnxslim" in surgery,
                        fuse="fuse-conv-bn" in surgery, focus_to_conv="focus-to-conv" in surgery,
                        silu="mul-sigmoid" if "silu-mul-sigmoid" in surgery else "keep", overwrite=True,
                        convention=meta.get("convention"), **kwargs)


def _record_in_sidecar(artifact: Path, key: str, value) -> None:
    """Add ``key: value`` to ``artifact``'s sidecar (rewritten whole, its integrity record recomputed)."""
    import json

    from .base import sidecar_path, write_sidecar

    info = json.loads(sidecar_path(artifact).read_text())
    for k in ("yoloport_version", "created", "integrity"):
        info.pop(k, None)
    info[key] = value
    write_sidecar(artifact, info)


def build_artifact(backend: str, model, out_dir, img_size_hw=(640, 640), calibration=None, qconfig: dict | None = None,
                   mode: str | None = "raw", batch: int = 1, opset: int | None = None, export_options: dict | None = None,
                   export=None, convention: str | None = None) -> Path:
    """Export ``model`` for ``backend`` into ``out_dir/model.fp32.onnx`` (:func:`export_for`: ``mode``,
    ``convention`` and ``export_options`` as there; ``mode=None`` is the backend's convention) and build
    the artifact from it (:func:`build`); the qconfig is checked before the (slow) export. ``export``: an
    ExportResult to build from instead of exporting again. A backend that compiles its batch
    (``SPEC.batch_compiled``) gets ``batch`` as ``qconfig['batch']`` and a batch-1 graph."""
    if get_spec(backend).batch_compiled and int(batch) != 1:
        qconfig, batch = {**(qconfig or {}), "batch": batch}, 1
    prepare_qconfig(backend, qconfig, calibration, batch)
    if export is None:
        export = export_for(backend, model, Path(out_dir) / "model.fp32.onnx", img_size_hw, mode, batch, opset,
                            export_options, convention)
    return build(backend, model, export, out_dir, calibration, qconfig)


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
    if not get_spec(key).has_artifact:
        if model is None:
            raise YoloportError(f"the {key} backend needs the model (--weights or --model-key)")
        return get_backend(key).load(None, model=model, threads=options.get("threads"))
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


def build_prequantized(backend: str, model, export, out_dir, prequantized, qconfig: dict | None = None) -> Path:
    """``backend``'s int8 artifact of a quantization-aware fine-tuned model (``prequantized``:
    :class:`yoloport.quant.qat.PrequantizedModel`; ``export``: the float graph of ``model`` from
    :func:`export_for`) into ``out_dir``. A backend that cannot take learned grids (no
    ``build_prequantized`` in its module) is a YoloportError."""
    key = canonical_name(backend)
    spec = require_artifact_backend(key, "build")
    mod = get_backend(key)
    if not hasattr(mod, "build_prequantized"):
        raise YoloportError(f"{spec.name} cannot take a pre-quantized (QAT) model")
    q = dict(qconfig or {})
    spec.check_qconfig_keys(q)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return Path(mod.build_prequantized(model, Path(export.path), export.head, out_dir, prequantized, q))
