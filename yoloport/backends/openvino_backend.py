"""OpenVINO backend: fp32 / fp16 / bf16 IR, and int8 through NNCF post-training quantization.

Precision on the CPU plugin is a *runtime* choice as much as a file format: unless told otherwise
OpenVINO runs fp32 IRs in bf16 on CPUs that have it, so every runner here sets
``INFERENCE_PRECISION_HINT`` explicitly (``f32`` for fp32 and int8 artifacts; ``f16``/``bf16`` only
when that precision was asked for). int8 is ``nncf.quantize`` (preset ``mixed``: asymmetric
activations for SiLU outputs, symmetric weights) on a :class:`CalibrationSet`; with a validation set,
``nncf.quantize_with_accuracy_control`` reverts layers to float until mAP50-95 drops by at most
``max_drop``. The head is kept out of int8 by default with its Detect convolutions
(``head_fp32='convs'``; ``'tail'`` keeps only the decode arithmetic after them float). NNCF never
rounds the Detect convolutions' outputs, but it does quantize their inputs and weights, and that is
what costs yolov5n its accuracy on images it never saw. Measured (issue 11, yolov5n-v6.1 at 640,
calibrated on 128 coco-extra calib2017 images, seeds 0/1/2, mAP50-95 drop in points; see
``docs/notes/2026-11-30-accuracy.md``): ``tail`` +0.51/+0.59/+0.44 on coco-extra val2017 and
+0.27/+0.40/+0.32 on COCO128; ``convs`` +0.05/+0.09/+0.13 and -0.28/+0.42/+0.39. (On COCO128 with its
own images as calibration, 32 images: yolov5n-v6.1 fp32 / tail / convs 0.3549 / 0.3506 / 0.3549,
yolov5s-v5.0 0.4385 / 0.4426 / 0.4415.)
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import openvino as ov

from ..deploy.onnx_graph import conv_map
from ..errors import DependencyMissing, YoloportError
from ..ops.postprocess import HeadSpec
from ..quant.float_scope import scope_from_qconfig
from .base import Runner, RuntimeProfile, _check_images, _check_runs, mean_node_times, read_sidecar, write_sidecar
from .registry import artifact_size, call_fixed_batch, check_input, sidecar_info
from .spec import BackendSpec
from ..data.letterbox import input_multiple

NAME = "openvino"
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
RUNTIME_PRECISION = {"fp32": "f32", "int8": "f32", "fp16": "f16", "bf16": "bf16"}
PRESETS = ("mixed", "performance")
CONV_TYPES = ("Convolution", "GroupConvolution")
_SKIP_TYPES = ("Parameter", "Result", "Constant")

DEFAULT_QCONFIG = {
    "preset": "mixed",
    "subset_size": None,  # all calibration images
    "fast_bias_correction": True,
    "max_drop": 0.01,
    "validation": None,  # data YAML (or "yaml:split") for accuracy-controlled quantization
    "validation_n": 32,
    "inference_precision": None,  # runtime INFERENCE_PRECISION_HINT stored in the artifact
    "ptq": (),  # PTQ steps applied to the float model before export (yoloport.quant.recipe.STEPS)
    "ptq_options": None,  # per-step keyword arguments, e.g. {"adaround": {"iters": 100}}
}

SPEC = BackendSpec(
    name=NAME,
    summary="OpenVINO CPU plugin: fp32/fp16/bf16 IR, int8 through NNCF (f32 precision hint for accuracy)",
    install="pip install openvino (runs an artifact); pip install 'yoloport[port]' builds one (nncf)",
    precisions=PRECISIONS,
    qconfig_defaults=DEFAULT_QCONFIG,
    export_opset=13,  # per-channel QDQ needs DequantizeLinear with an axis (opset 13)
    lint_target="openvino",
    act_scheme="asymmetric",
    per_channel_weights=True,
    quantizes_outputs=False,  # NNCF quantizes only what enters a convolution
    default_head_fp32="convs",  # measured: see the module docstring
    port_qconfig={"head_fp32": "convs"},
    benchmarkable=True,
    profiler=True,
    output_convention="ultralytics",  # one decoded [1, N, 5+nc] output, as Ultralytics exports for OpenVINO
    batch_dynamic=True,  # a dynamic-batch IR is compiled for each batch it is called with (OpenVINORunner)
)

_CORE = None


def core() -> "ov.Core":
    """One shared ``ov.Core``."""
    global _CORE
    if _CORE is None:
        _CORE = ov.Core()
    return _CORE


def compile_config(inference_precision: str = "f32", threads: int | None = None, streams: int | None = None,
                   hint: str | None = "LATENCY") -> dict:
    """CPU plugin properties: precision always explicit (OpenVINO defaults to bf16 where it can)."""
    cfg = {"INFERENCE_PRECISION_HINT": inference_precision}
    if hint:
        cfg["PERFORMANCE_HINT"] = hint
    if threads:
        cfg["INFERENCE_NUM_THREADS"] = int(threads)
    if streams:
        cfg["NUM_STREAMS"] = int(streams)
    return cfg


# ----------------------------------------------------------------------------- runner


class OpenVINORunner(Runner):
    """A compiled OpenVINO model on the CPU device returning the head outputs in graph order.

    An IR with a dynamic batch is compiled once per batch size it is called with (static shapes: the
    CPU plugin's fastest kernels; batch 1 runs as fast as from a batch-1 IR), so one artifact serves
    batched validation, batch-1 latency and batch-16 throughput."""

    backend = NAME

    def __init__(self, model, head: HeadSpec, input_hw=None, batch=None, inference_precision: str = "f32",
                 threads: int | None = None, streams: int | None = None, device: str = "CPU", stride: int = 32,
                 hint: str | None = "LATENCY", path=None):
        self.config = compile_config(inference_precision, threads, streams, hint)
        self.device, self.path = device, path
        self.head = head
        dims = [d.get_length() if d.is_static else None for d in model.inputs[0].get_partial_shape()]
        self.input_hw = input_hw or (tuple(dims[2:]) if None not in dims[2:] else None)
        self.batch = batch if batch is not None else dims[0]
        self.stride = stride
        self.inference_precision = inference_precision
        self._model = model if self.batch is None and self.input_hw else None  # kept to compile each batch size
        self._requests: dict[int, object] = {}  # batch -> infer request of the model compiled for it
        if self._model is None:
            self.compiled = self._compile(model)
            self.request = self.compiled.create_infer_request()
        else:
            self.compiled = self.request = None
        self.n_outputs = len(model.outputs)

    def _compile(self, model):
        try:
            return core().compile_model(model, self.device, self.config)
        except RuntimeError as e:
            raise YoloportError(f"openvino cannot compile {self.path or 'the model'} on {self.device}: {str(e).splitlines()[0]}") from None

    def _request_for(self, batch: int):
        """The infer request of the dynamic-batch IR compiled for ``[batch, 3, H, W]`` (compiled on first use)."""
        if batch not in self._requests:
            m = self._model.clone()
            m.reshape({m.inputs[0]: ov.PartialShape([batch, 3, *self.input_hw])})
            self._requests[batch] = self._compile(m).create_infer_request()
        return self._requests[batch]

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        request = self.request if self._model is None else self._request_for(x.shape[0])
        request.infer({0: x})
        return [request.get_output_tensor(i).data.copy() for i in range(self.n_outputs)]

    def __call__(self, images: np.ndarray) -> list[np.ndarray]:
        return call_fixed_batch(self._run, check_input(images, self.input_hw, NAME), self.batch)

    def describe(self) -> dict:
        return {**super().describe(), "artifact": str(self.path), "config": self.config}

    def close(self) -> None:
        self.request = self.compiled = self._model = None
        self._requests = {}


def load(artifact, model=None, threads: int | None = None, streams: int | None = None, inference_precision: str | None = None,
         device: str = "CPU", **options) -> OpenVINORunner:
    """Load an IR built by :func:`build` (``model.xml`` with its ``.bin``), checked against ``model``."""
    from .base import model_fingerprint

    info = read_sidecar(artifact, expect_backend=NAME, expect_fingerprint=model_fingerprint(model) if model is not None else None)
    head = HeadSpec.from_dict(info["head"])
    prec = inference_precision or info.get("inference_precision") or "f32"
    try:
        ir = core().read_model(str(artifact))
    except RuntimeError as e:
        raise YoloportError(f"openvino cannot read {artifact}: {str(e).splitlines()[0]}") from None
    return OpenVINORunner(
        ir, head, tuple(info["input_hw"]), info.get("batch"), prec, threads, streams, device,
        stride=input_multiple(head.strides), hint=options.get("hint", "LATENCY"), path=artifact,
    )


# ----------------------------------------------------------------------------- graph helpers


def _conv_downstream(model: "ov.Model") -> dict[str, bool]:
    down: dict[str, bool] = {}
    for op in reversed(model.get_ordered_ops()):
        hit = False
        for out in op.outputs():
            for ti in out.get_target_inputs():
                c = ti.get_node()
                if c.get_type_name() in CONV_TYPES or down.get(c.get_friendly_name(), False):
                    hit = True
        down[op.get_friendly_name()] = hit
    return down


def head_tail_ops(model: "ov.Model") -> list[str]:
    """Operations after the last convolution on every path (bias adds, sigmoid, decode, concat)."""
    down = _conv_downstream(model)
    return [
        op.get_friendly_name() for op in model.get_ordered_ops()
        if op.get_type_name() not in CONV_TYPES + _SKIP_TYPES and not down[op.get_friendly_name()]
    ]


def head_conv_ops(model: "ov.Model") -> list[str]:
    """The Detect head's output convolutions (no convolution after them)."""
    down = _conv_downstream(model)
    return [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() in CONV_TYPES and not down[op.get_friendly_name()]]


def resolve_exclude(model: "ov.Model", patterns) -> tuple[list[str], list[str], list[str]]:
    """``--exclude`` entries -> ``(names, patterns, types)`` for ``nncf.IgnoredScope``: an ONNX op type
    (``Sigmoid``) or an OpenVINO type, a glob on names (``*model.24*``) or an exact name."""
    import fnmatch

    ops = model.get_ordered_ops()
    types = {op.get_type_name() for op in ops}
    onnx_to_ov = {"Conv": "Convolution", "Mul": "Multiply", "Add": "Add", "Sigmoid": "Sigmoid", "Concat": "Concat"}
    names, pats, tps = [], [], []
    for p in patterns or []:
        t = onnx_to_ov.get(p, p)
        if t in types:
            tps.append(t)
            continue
        hits = [op.get_friendly_name() for op in ops if op.get_friendly_name() == p or fnmatch.fnmatchcase(op.get_friendly_name(), p)]
        if not hits:
            raise YoloportError(f"--exclude {p!r} matches no operation or type in the OpenVINO model (types: {', '.join(sorted(types))})")
        names += [h for h in hits if h not in names]
    return names, pats, tps


# ----------------------------------------------------------------------------- quantization


def _nncf():
    try:
        import nncf
    except ImportError as e:
        raise DependencyMissing("nncf", "int8 quantization for OpenVINO", "pip install 'yoloport[port]' (nncf)") from e
    return nncf


def resolve_qconfig(qconfig: dict | None) -> dict:
    """Defaults filled in and values checked; the float scope folded into ``float_scope``."""
    cfg = {**DEFAULT_QCONFIG, **{k: v for k, v in (qconfig or {}).items() if v is not None}}
    cfg["preset"] = str(cfg["preset"]).lower()
    if cfg["preset"] not in PRESETS:
        raise YoloportError(f"openvino: preset must be one of {', '.join(PRESETS)}, got {cfg['preset']!r}")
    scope = scope_from_qconfig(cfg, SPEC.head_fp32(cfg))
    cfg.update(float_scope=scope.to_dict(), head_fp32=scope.head, exclude=list(scope.nodes))
    if not cfg["validation"]:  # accuracy-control settings mean nothing without a validation set
        for k in ("validation", "max_drop", "validation_n"):
            cfg.pop(k, None)
    if cfg.get("inference_precision") is None:
        cfg.pop("inference_precision", None)
    return cfg


def float_layer_patterns(layers, conv_nodes: dict[str, str]) -> list[str]:
    """NNCF ignored-scope globs for the convolutions ``layers``: the IR keeps the ONNX names, so
    ``<node>*`` matches the convolution (``<node>/WithoutBiases``) and its bias ``Add`` (no weight
    or input quantizer)."""
    return [conv_nodes[n] + "*" for n in layers]


def check_qconfig(qconfig: dict) -> None:
    """Raise a YoloportError for a setting this backend cannot build (before any export)."""
    SPEC.check_precision(qconfig.get("precision") or "fp32")
    resolve_qconfig(qconfig)


def validation_images(source: str, n: int, head: HeadSpec) -> tuple[list[Path], list[str]]:
    """Labelled images for accuracy control: ``data.yaml`` (its ``val`` split) or ``data.yaml:split``;
    the first ``n`` images (sorted). The data YAML's classes must be the model's."""
    from ..data.dataset import list_images, load_data_yaml

    src, split = str(source), "val"
    if ":" in src and not src.lower().endswith((".yaml", ".yml")):
        src, split = src.rsplit(":", 1)
    if not src.lower().endswith((".yaml", ".yml")):
        raise YoloportError(f"the validation set for accuracy control must be a data YAML (with labels), got {source}")
    cfg = load_data_yaml(src)
    if cfg.nc != head.nc:
        raise YoloportError(f"validation data {src} has {cfg.nc} classes, the model {head.nc}")
    return list_images(cfg.split(split))[: max(int(n), 1)], list(cfg.names)


def map50_95_fn(head: HeadSpec, names, input_hw, batch: int):
    """An NNCF ``validation_fn(compiled_model, items) -> mAP50-95`` over labelled image paths, measured
    by :func:`yoloport.engine.val.validate` with the artifact's fixed input shape."""
    from ..data.dataset import DataConfig
    from ..engine.val import validate
    from ..ops.postprocess import decode_outputs

    def fn(compiled, items) -> float:
        paths = [Path(p) for p in items]
        req = compiled.create_infer_request()
        n_out = len(compiled.outputs)

        def run(x):
            req.infer({0: x})
            return [req.get_output_tensor(i).data.copy() for i in range(n_out)]

        def infer(x):
            return decode_outputs(call_fixed_batch(run, x, batch), head)

        cfg = DataConfig(root=paths[0].parent, names=list(names), val=paths)
        res = validate(infer, cfg, img_size=max(input_hw), batch_size=batch, fixed_shape_hw=tuple(input_hw), progress=False)
        return float(res["mAP50_95"])

    return fn


def quantize_ir(ov_model, calibration, head: HeadSpec, input_hw, batch: int, qconfig: dict | None = None,
                layer_patterns=()):
    """int8 ``ov.Model`` via NNCF; returns ``(model, settings)``. ``layer_patterns``: ignored-scope globs of
    the float scope's layers (:func:`float_layer_patterns`)."""
    nncf = _nncf()
    cfg = resolve_qconfig(qconfig)
    names, pats, types = resolve_exclude(ov_model, list(cfg["exclude"]) + list(layer_patterns))
    if cfg["head_fp32"] in ("tail", "convs"):
        names += [n for n in head_tail_ops(ov_model) if n not in names]
    if cfg["head_fp32"] == "convs":
        names += [n for n in head_conv_ops(ov_model) if n not in names]
    scope = nncf.IgnoredScope(names=names, patterns=pats, types=types, validate=False)
    if tuple(calibration.img_size_hw) != tuple(input_hw):
        calibration = calibration.with_size(input_hw)  # same images, the graph's input size
    preset = nncf.QuantizationPreset.MIXED if cfg["preset"] == "mixed" else nncf.QuantizationPreset.PERFORMANCE

    def transform(x):
        return x

    data = list(calibration.batches(batch)) if batch > 1 else calibration
    if batch > 1:
        data = [b for b in data if b.shape[0] == batch] or [np.concatenate([data[0]] * batch, 0)[:batch]]
    calib_ds = nncf.Dataset(data, transform)
    # NNCF counts dataset items; ours are batches of ``batch`` images, subset_size is in images
    subset = max(1, min(len(data), -(-int(cfg["subset_size"] or len(calibration)) // max(batch, 1))))
    kwargs = dict(preset=preset, subset_size=subset, fast_bias_correction=bool(cfg["fast_bias_correction"]), ignored_scope=scope)
    t0 = time.perf_counter()
    try:
        if cfg.get("validation"):
            val_paths, val_names = validation_images(cfg["validation"], int(cfg["validation_n"]), head)
            val_ds = nncf.Dataset([str(p) for p in val_paths])
            fn = map50_95_fn(head, val_names, input_hw, batch)
            q = nncf.quantize_with_accuracy_control(
                ov_model, calib_ds, val_ds, fn, max_drop=float(cfg["max_drop"]),
                preset=preset, subset_size=subset, fast_bias_correction=bool(cfg["fast_bias_correction"]), ignored_scope=scope,
            )
            cfg["accuracy_control"] = {"validation_images": len(val_paths), "max_drop": float(cfg["max_drop"])}
        else:
            q = nncf.quantize(ov_model, calib_ds, **kwargs)
    except YoloportError:
        raise
    except Exception as e:
        raise YoloportError(f"NNCF int8 quantization failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    cfg.update(subset_batches=subset, ignored_ops=names, ignored_types=types, quantize_seconds=round(time.perf_counter() - t0, 3), nncf_version=nncf.__version__)
    return q, cfg


def save_ir(ov_model, artifact: Path, compress_to_fp16: bool) -> None:
    """Write ``ov_model`` as the IR ``artifact`` (``.xml``) and its ``.bin``: saved under a staged name in the
    same folder, then each file moved into place (the weights first), so a cut build leaves no half
    artifact under the real name."""
    staged = artifact.parent / f".staged.{artifact.name}"
    ov.save_model(ov_model, str(staged), compress_to_fp16=compress_to_fp16)
    os.replace(staged.with_suffix(".bin"), artifact.with_suffix(".bin"))
    os.replace(staged, artifact)


def build(model, onnx_path, head: HeadSpec, out_dir, calibration, qconfig: dict) -> Path:
    """IR ``model.openvino.<precision>.xml`` (+ ``.bin``) in ``out_dir`` with its sidecar."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    precision = str(qconfig.get("precision") or ("int8" if calibration is not None else "fp32")).lower()
    SPEC.check_precision(precision)
    try:
        ov_model = ov.convert_model(str(onnx_path))
    except Exception as e:
        raise YoloportError(f"openvino cannot convert {onnx_path}: {str(e).splitlines()[0]}") from None
    shape = ov_model.inputs[0].get_partial_shape()
    dims = [d.get_length() if d.is_static else None for d in shape]
    input_hw, batch = (dims[2], dims[3]), dims[0]  # batch None: a dynamic batch (compiled per batch when run)
    settings = {k: v for k, v in qconfig.items()}
    settings["precision"] = precision
    if precision == "int8":
        if calibration is None:
            raise YoloportError("openvino int8 needs calibration images")
        layers = resolve_qconfig(qconfig)["float_scope"]["layers"]
        patterns = float_layer_patterns(layers, conv_map(onnx_path, layers)[0]) if layers else []
        ov_model, qs = quantize_ir(ov_model, calibration, head, input_hw, batch or 1, qconfig, patterns)
        settings.update(qs)
    settings["inference_precision"] = qconfig.get("inference_precision") or RUNTIME_PRECISION[precision]
    artifact = out_dir / f"model.openvino.{precision}.xml"
    save_ir(ov_model, artifact, compress_to_fp16=(precision == "fp16"))
    write_sidecar(
        artifact,
        sidecar_info(
            NAME, model, head, input_hw, batch, calibration if precision == "int8" else None, settings,
            precision=precision, inference_precision=settings["inference_precision"], source_onnx=str(onnx_path),
            build_seconds=round(time.perf_counter() - t0, 3), size_bytes=artifact_size(artifact),
            openvino_version=ov.__version__,
        ),
    )
    return artifact


def build_prequantized(model, onnx_path, head: HeadSpec, out_dir, prequantized, qconfig: dict | None = None) -> Path:
    """The int8 IR of a quantization-aware fine-tuned model: its QDQ graph (``prequantized.qdq_onnx``)
    converted as it is (each QuantizeLinear/DequantizeLinear pair becomes a FakeQuantize with the
    learned grid; the CPU plugin runs those convolutions in int8), ``model.openvino.int8.xml`` + sidecar."""
    t0 = time.perf_counter()
    if prequantized.qdq_onnx is None:
        raise YoloportError("openvino: a pre-quantized build needs the QDQ graph of the fine-tuned model")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        ov_model = ov.convert_model(str(prequantized.qdq_onnx))
    except Exception as e:
        raise YoloportError(f"openvino cannot convert {prequantized.qdq_onnx}: {str(e).splitlines()[0]}") from None
    dims = [d.get_length() if d.is_static else 1 for d in ov_model.inputs[0].get_partial_shape()]
    settings = {**(qconfig or {}), "precision": "int8"}
    settings["inference_precision"] = settings.get("inference_precision") or RUNTIME_PRECISION["int8"]
    artifact = out_dir / "model.openvino.int8.xml"
    save_ir(ov_model, artifact, compress_to_fp16=False)
    write_sidecar(
        artifact,
        sidecar_info(
            NAME, model, head, (dims[2], dims[3]), dims[0], prequantized.calibration, settings, precision="int8",
            inference_precision=settings["inference_precision"], source_onnx=str(onnx_path),
            quantization=prequantized.sidecar_record(), build_seconds=round(time.perf_counter() - t0, 3),
            size_bytes=artifact_size(artifact), openvino_version=ov.__version__,
        ),
    )
    return artifact


# ----------------------------------------------------------------------------- profiling

# OpenVINO CPU plugin node types -> layer type (others are kept).
PROFILE_LAYER_TYPES = {
    "Convolution": "Conv",
    "GroupConvolution": "Conv",
    "Deconvolution": "ConvTranspose",
    "FullyConnected": "Gemm",
    "Interpolate": "Resize",
    "Pooling": "MaxPool",
    "StridedSlice": "Slice",
    "Multiply": "Mul",
    "Subtract": "Sub",
    "Divide": "Div",
    "SwishCPU": "SiLU",
    "Swish": "SiLU",
    "Convert": "Cast",
    "FakeQuantize": "FakeQuantize (int8)",
    "Subgraph": "Subgraph (fused elementwise)",
    "Reorder": "Reorder (layout)",
}
_PROFILE_SKIP_TYPES = {"Parameter", "Result", "Constant", "Input", "Output"}


def ov_nodes(infos: list[tuple]) -> list[tuple]:
    """``(name, node_type, exec_type, us)`` of executed nodes -> ``(name, layer type, node_type, us,
    exec_type)`` with the OpenVINO layer-type mapping (:data:`PROFILE_LAYER_TYPES`; ``Reorder`` layout
    nodes never count as a Focus stem)."""
    return [(name, PROFILE_LAYER_TYPES.get(t, t), t, us, kernel) for name, t, kernel, us in infos]


def _ov_executed(profiling_info) -> list[tuple]:
    """OpenVINO ``ProfilingInfo`` list -> ``(name, node_type, exec_type, us)`` of the nodes that ran."""
    out = []
    for p in profiling_info:
        if str(p.status).split(".")[-1] != "EXECUTED" or p.node_type in _PROFILE_SKIP_TYPES:
            continue
        out.append((p.node_name, p.node_type, p.exec_type, p.real_time.total_seconds() * 1e6))
    return out


def profile_run(model_path, images: np.ndarray, runs: int = 10, threads: int | None = None, warmup: int = 3,
                inference_precision: str = "f32", **_other_backends_options) -> RuntimeProfile:
    """Per-node times of an ONNX or IR (``.xml``) model on OpenVINO's CPU plugin with ``PERF_COUNT``.

    Compiled with :func:`compile_config` (the runner's settings:
    explicit ``INFERENCE_PRECISION_HINT``, ``PERFORMANCE_HINT=LATENCY``) plus ``PERF_COUNT``."""
    _check_runs(runs, warmup)
    try:
        model = core().read_model(str(model_path))
        config = {**compile_config(inference_precision, threads), "PERF_COUNT": True}
        compiled = core().compile_model(model, "CPU", config)
    except RuntimeError as e:
        raise YoloportError(f"openvino cannot load {model_path}: {str(e).splitlines()[0]}") from None
    request = compiled.create_infer_request()
    x = _check_images(images, [d.get_length() if d.is_static else None for d in compiled.inputs[0].get_partial_shape()])
    per_run, walls = [], []
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        request.infer({0: x})
        dt = (time.perf_counter() - t0) * 1e6
        if i >= warmup:
            walls.append(dt)
            per_run.append(_ov_executed(request.profiling_info))
    nodes = ov_nodes(mean_node_times(per_run))
    notes = [f"INFERENCE_PRECISION_HINT {inference_precision}; OpenVINO types mapped to ONNX names where equal "
             "(Convolution->Conv, Interpolate->Resize, SwishCPU->SiLU); Subgraph = elementwise ops fused by the CPU plugin, "
             "Reorder = layout conversions it inserted; nodes fused into others (NOT_RUN) are left out"]
    return RuntimeProfile(nodes, runs, warmup, float(np.mean(walls)), str(model_path), notes)
