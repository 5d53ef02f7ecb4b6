"""What a backend *is*, declared once: :class:`BackendSpec`.

Every backend module declares one ``SPEC`` and the registry (:mod:`yoloport.backends.registry`) lists
them; the port, the sensitivity search, profile, bench and the commands read these facts instead of
comparing backend names. A new backend is one module with a ``SPEC`` plus ``build``/``load``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Mapping

from ..errors import YoloportError

HEAD_FP32_CHOICES = ("tail", "convs", "none")
# keys every backend's qconfig may hold besides its own (build_artifact and the commands fill them)
COMMON_QCONFIG_KEYS = ("precision", "batch", "float_scope", "head_fp32", "exclude")


def _frozen(d: Mapping | None) -> Mapping:
    return MappingProxyType(dict(d or {}))


@dataclass(frozen=True)
class BackendSpec:
    """The facts about one backend that the rest of yoloport needs.

    - ``name``: canonical name (``onnxruntime``); ``aliases``: other spellings users type.
    - ``summary``: one line for help texts; ``install``: how to get its runtime.
    - ``precisions``: what ``build`` makes; ``has_artifact``: False for ``torch`` (runs the model itself);
      ``runs_onnx``: whether the artifact is built from the exported graph (its node names mean something).
    - ``qconfig_defaults``: every backend-specific qconfig key with its default; a key that is neither
      here nor in :data:`COMMON_QCONFIG_KEYS` is refused (:meth:`check_qconfig_keys`).
    - ``export_opset``: the ONNX opset its graphs are exported with (None: the exporter's default).
    - ``lint_target``: the NPU-rule set ``yoloport lint --target`` checks its graphs against.
    - ``act_scheme`` (``asymmetric`` uint8 on [min, max] or ``symmetric`` int8 on max|x|) and
      ``per_channel_weights``: its default int8 scheme, which the sensitivity ranking emulates.
    - ``quantizes_outputs``: whether its int8 graph also rounds the Detect convolutions' outputs.
    - ``qdq_rounds_conv_outputs``: whether a QDQ graph for it rounds every quantized convolution's
      output before the activation (ONNX Runtime fuses ``DQ -> Conv -> Q`` into QLinearConv; RKNN fuses
      Conv + SiLU and follows the grids only where they sit on the convolutions' inputs). QAT trains that grid.
    - ``default_head_fp32``: what it keeps in float of the head when a qconfig names nothing
      (``tail``: the decode after the last convolutions; ``convs``: the Detect convolutions too).
    - ``port_qconfig``: the accuracy recipe ``yoloport port`` builds it with (dropped by ``--full-int8``);
      ``target_defaults``: the options that name a port target (RKNN's platform), always applied.
    - ``benchmarkable``/``profiler``: whether timings/per-layer profiles on this machine mean anything;
      ``board``: whether it can run on a connected device (``--device-id``) instead of this machine.
    - ``simulated_note``: set when results come from a simulation, said in every report.
    - ``batch_dynamic``: whether its artifact takes any batch (a graph exported with a dynamic batch), so
      one build serves batched validation and every benchmarked batch (``yoloport port`` builds it once).
    - ``batch_compiled``: whether a build compiles its fixed batch (``qconfig['batch']``) from a batch-1 graph
      (RKNN's ``rknn_batch_size``): :func:`~yoloport.backends.registry.build_artifact` then exports batch 1.
    - ``output_convention``: the output convention its standard clients expect
      (:data:`yoloport.deploy.conventions.CONVENTIONS`); ``quantize`` and ``port`` export it by default.
    - ``focus_to_conv``: whether its exports take a v5.0 ``Focus`` stem as the exact equivalent strided
      Conv (:func:`yoloport.deploy.surgery.focus_to_conv`, YOLOv5 v6.0's stem) rather than the strided
      slices the checkpoint has; the user's ``--focus-to-conv`` / ``--no-focus-to-conv`` outranks it. True
      unless the backend's measurements say the slices run faster.
    - ``built_by``: set when the backend builds nothing and runs the artifacts another backend builds
      (``rknn-lite`` runs the ``rknn`` backend's ``.rknn``); ``runtime_options``: the runtime options
      (beyond ``threads``) its ``load`` takes from the command line (``core_mask``).
    - ``target_option``: parses one extra word of a port target (``rknn:rk3588``) into qconfig
      entries, or returns None when the word is not one of its options.
    """

    name: str
    summary: str
    install: str
    precisions: tuple[str, ...] = ("fp32", "int8")
    aliases: tuple[str, ...] = ()
    has_artifact: bool = True
    runs_onnx: bool = True
    qconfig_defaults: Mapping = field(default_factory=dict)
    export_opset: int | None = None
    lint_target: str | None = None
    act_scheme: str = "asymmetric"
    per_channel_weights: bool = True
    quantizes_outputs: bool = False
    qdq_rounds_conv_outputs: bool = False
    default_head_fp32: str = "tail"
    port_qconfig: Mapping = field(default_factory=dict)
    target_defaults: Mapping = field(default_factory=dict)
    benchmarkable: bool = False
    profiler: bool = False
    board: bool = False
    simulated_note: str | None = None
    target_option: Callable[[str], dict | None] | None = None
    output_convention: str = "yoloport"
    built_by: str | None = None
    runtime_options: tuple[str, ...] = ()
    batch_dynamic: bool = False
    focus_to_conv: bool = True
    batch_compiled: bool = False

    def __post_init__(self):
        object.__setattr__(self, "qconfig_defaults", _frozen(self.qconfig_defaults))
        object.__setattr__(self, "port_qconfig", _frozen(self.port_qconfig))
        object.__setattr__(self, "target_defaults", _frozen(self.target_defaults))
        if self.default_head_fp32 not in HEAD_FP32_CHOICES:
            raise ValueError(f"{self.name}: default_head_fp32 {self.default_head_fp32!r}")
        if self.act_scheme not in ("asymmetric", "symmetric"):
            raise ValueError(f"{self.name}: act_scheme {self.act_scheme!r}")

    @property
    def accepted_keys(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*COMMON_QCONFIG_KEYS, *self.qconfig_defaults)))

    def check_qconfig_keys(self, qconfig: Mapping | None) -> None:
        """A YoloportError naming the unknown keys of ``qconfig`` and the keys this backend accepts."""
        unknown = [k for k in (qconfig or {}) if k not in self.accepted_keys]
        if unknown:
            raise YoloportError(
                f"{self.name}: unknown qconfig key(s) {', '.join(repr(k) for k in unknown)}; "
                f"{self.name} accepts: {', '.join(self.accepted_keys)}"
            )

    def check_precision(self, precision: str) -> str:
        p = str(precision).lower()
        if p not in self.precisions:
            raise YoloportError(f"{self.name} builds {', '.join(self.precisions)} artifacts, not {precision!r}")
        return p

    def head_fp32(self, qconfig: Mapping | None) -> str:
        """The ``head_fp32`` a build with ``qconfig`` uses (the qconfig's, else this backend's default)."""
        value = (qconfig or {}).get("head_fp32") or self.default_head_fp32
        if value not in HEAD_FP32_CHOICES:
            raise YoloportError(f"{self.name}: head_fp32 must be one of {', '.join(HEAD_FP32_CHOICES)}, got {value!r}")
        return value

    def weights_per_channel(self, qconfig: Mapping | None) -> bool:
        """Whether int8 weights are per output channel with ``qconfig`` (its ``per_channel``, or RKNN's
        ``quantized_method``, else the default)."""
        q = qconfig or {}
        if q.get("per_channel") is not None:
            return bool(q["per_channel"])
        if q.get("quantized_method"):
            return q["quantized_method"] == "channel"
        return self.per_channel_weights
