"""Per-target ONNX operator support and opset ranges, as data.

Where each table comes from:

* **rknn** -- the ONNX table of ``doc/RKNNToolKit2_OP_Support-v2.1.0.md`` in the public
  ``airockchip/rknn-toolkit2`` repository (the newest Markdown version of that table; 2.3.x ships it
  only as ``05_RKNN_Compiler_Support_Operator_List_V2.3.2.pdf``). Rows marked "Not Supported" went to
  :data:`RKNN_UNSUPPORTED_OPS`, the rest to :data:`RKNN_SUPPORTED_OPS`, restrictions from the
  Remarks column to :data:`RKNN_OP_RESTRICTIONS`. An op that is in neither set is treated as
  unsupported (the toolkit does not list it). Note: that table lists ``ScatterND`` as supported, and
  rknn-toolkit2 2.5.0 does build (float, rk3588) a YOLOv5 v5.0 head with 5-D ScatterND: it squeezes
  it to 4-D and rewrites it into Split+Concat (warning "Logic is Dangerous, Will Force layout to
  native"). The rewritten Concat mixes pixel boxes with 0..1 scores in one int8 tensor, so we still
  reject ScatterND for RKNN -- through the dedicated ``scatternd`` lint rule (the NPU teams' rule),
  not through this op table.
  Opset range: rknn-toolkit2's CHANGELOG (v1.6.0) documents "OPSET 12~19"; the OP support doc names
  opset 19. Checked here against rknn-toolkit2 2.5.0: ``load_onnx`` rejects opset 20 ("need <= 19")
  and loads and builds (rk3588, float) a Conv+Relu graph at opsets 1..19, upgrading old ones. We take
  7 (the lowest opset ONNX Runtime, which the toolkit uses for constant folding, guarantees) as the
  hard minimum and warn below 12.
* **mlu** -- our own conservative list of what Cambricon MagicMind / CNRT handles for a YOLOv5
  graph (convolution, activations, pooling, resize, concat, reshape/transpose, elementwise, slice,
  ...). No Cambricon toolkit is available here, so nothing in this list is verified against one;
  ops outside it are reported as unsupported so that a port fails early rather than on the board.
* **onnxruntime**, **openvino** -- every operator the installed ``onnx`` package has a schema for
  (checked with ``onnx.defs``), plus each runtime's own contrib domain. Opsets below 7 are refused
  (ONNX Runtime only guarantees 7+); opsets newer than the installed ``onnx`` knows get a warning
  because their op schemas cannot be checked.
"""
from __future__ import annotations

from dataclasses import dataclass

import onnx.defs

TARGETS: tuple[str, ...] = ("rknn", "mlu", "onnxruntime", "openvino")
INT8_TARGETS: frozenset[str] = frozenset({"rknn", "mlu"})
"""Targets whose deployment path quantizes every tensor to int8 (one scale per tensor)."""

DEFAULT_DOMAINS: frozenset[str] = frozenset({"", "ai.onnx"})

# --- RKNN (rknn-toolkit2 OP support table, v2.1.0) -------------------------------------------
RKNN_SUPPORTED_OPS: frozenset[str] = frozenset(
    """
    Add And ArgMax ArgMin AveragePool BatchNormalization Cast Clip Concat Constant ConstantOfShape
    Conv ConvTranspose Cos DepthToSpace DequantizeLinear Div Dropout Elu Equal Erf Exp Expand EyeLike
    Flatten Floor Gather GatherElements Gemm GlobalAveragePool GlobalMaxPool Greater GreaterOrEqual
    GRU HardSigmoid HardSwish Identity If InstanceNormalization LayerNormalization LeakyRelu Less
    LessOrEqual Log LogSoftmax LpNormalization LRN LSTM MatMul Max MaxPool MaxRoiPool MaxUnpool
    MeanVarianceNormalization Min Mish Mod Mul Pad Pow PRelu QuantizeLinear ReduceMax ReduceMean
    ReduceMin ReduceSum Relu Reshape Resize ReverseSequence RoiAlign ScatterND Shape Sigmoid Sin Size
    Slice Softmax Softplus SpaceToDepth Split Sqrt Squeeze Sub Tanh Tile Transpose Unsqueeze Where
    """.split()
)

RKNN_UNSUPPORTED_OPS: frozenset[str] = frozenset(
    """
    Abs Acos Acosh Asin Asinh Atan Atanh Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr
    BitwiseXor BlackmanWindow CastLike Ceil Celu CenterCropPad Col2Im Compress ConcatFromSequence
    ConvInteger Cosh CumSum DeformConv Det DFT DynamicQuantizeLinear Einsum GatherND GlobalLpPool
    GridSample GroupNormalization HammingWindow HannWindow Hardmax IsInf IsNaN Loop LpPool
    MatMulInteger Mean MelWeightMatrix Multinomial Neg NegativeLogLikelihoodLoss NonMaxSuppression
    NonZero Not OneHot Optional OptionalGetElement OptionalHasElement Or QLinearConv QLinearMatMul
    RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2
    ReduceLogSum ReduceLogSumExp ReduceProd ReduceSumSquare RNN Round Scan ScatterElements Selu
    SequenceAt SequenceConstruct SequenceEmpty SequenceErase SequenceInsert SequenceLength
    SequenceMap Shrink Sign Sinh SoftmaxCrossEntropyLoss Softsign SplitToSequence STFT
    StringNormalizer Sum Tan TfIdfVectorizer ThresholdedRelu TopK Trilu Unique Xor
    """.split()
)

RKNN_OP_RESTRICTIONS: dict[str, str] = {
    # op -> restriction from the Remarks column (our wording)
    "EyeLike": "constant input only",
    "GRU": "batch size 1 only",
    "If": "constant condition only",
    "LogSoftmax": "batch size 1 only",
    "Resize": "nearest or (bi)linear mode only",
    "RoiAlign": "average pooling and batch size 1 only",
    "Slice": "batch size 1 only",
    "Softmax": "batch size 1 only",
    "Tile": "batch size 1 only, no broadcast",
}
BATCH1_OPS: frozenset[str] = frozenset(k for k, v in RKNN_OP_RESTRICTIONS.items() if "batch size 1" in v)

# --- MLU (our own conservative list; not verified against a Cambricon toolkit) ---------------
MLU_SUPPORTED_OPS: frozenset[str] = frozenset(
    """
    Conv ConvTranspose BatchNormalization Relu LeakyRelu PRelu Elu Sigmoid HardSigmoid HardSwish
    Tanh Softplus Mish Clip MaxPool AveragePool GlobalAveragePool GlobalMaxPool Resize Upsample
    Concat Split Slice Reshape Transpose Flatten Squeeze Unsqueeze Identity Constant Shape Gather
    Cast Pad Expand Add Sub Mul Div Pow Exp Log Sqrt Max Min MatMul Gemm Softmax ReduceMean
    ReduceMax ReduceSum
    """.split()
)

# --- one-line hints for ops a YOLOv5 graph typically picks up -------------------------------
OP_HINTS: dict[str, str] = {
    "NonMaxSuppression": "run NMS on the host: export with --mode raw or split (end2end is for onnxruntime/openvino)",
    "TopK": "keep top-k selection on the host: export with --mode raw or split",
    "NonZero": "data-dependent shapes do not compile for NPUs; move this step to host post-processing",
    "Range": "precompute grids/anchors as constants instead of building them with arange in the graph",
    "ScatterND": "head assigns slices in place (y[..., 0:2] = ...); export with --mode split or raw",
    "GatherND": "replace advanced indexing with Slice/Gather, or move it to the host",
    "Loop": "unroll the loop at export time (static shapes) or move it to the host",
    "Neg": "write -x as 0 - x or fold the sign into the following Mul/Sub",
    "Abs": "avoid abs() in the graph (not on the RKNN op list)",
}
DEFAULT_OP_HINT = "replace the op with supported ones or move that step to host post-processing"


@dataclass(frozen=True)
class OpsetRange:
    """Default-domain opsets a target accepts (``hard``) and the ones its vendor documents (``documented``)."""

    hard_min: int
    hard_max: int | None
    documented_min: int
    documented_max: int
    source: str


OPSET_RANGES: dict[str, OpsetRange] = {
    "rknn": OpsetRange(7, 19, 12, 19, "rknn-toolkit2 CHANGELOG v1.6.0 (opset 12~19); 2.5.0 rejects > 19"),
    "mlu": OpsetRange(7, 17, 11, 13, "our own conservative choice (no Cambricon toolkit here)"),
    "onnxruntime": OpsetRange(7, None, 7, onnx.defs.onnx_opset_version(), "ONNX Runtime guarantees opset >= 7"),
    "openvino": OpsetRange(7, None, 7, onnx.defs.onnx_opset_version(), "OpenVINO ONNX frontend"),
}

RUNTIME_EXTRA_DOMAINS: dict[str, frozenset[str]] = {
    "onnxruntime": frozenset({"com.microsoft", "com.microsoft.nchwc", "com.ms.internal.nhwc"}),
    "openvino": frozenset({"org.openvinotoolkit"}),
}


@dataclass(frozen=True)
class LintProfile:
    """What one lint target (a deployment path) accepts, as data read by the lint rules.

    - ``supported`` / ``unsupported`` / ``list_name``: the toolchain's op lists (default domain only), or
      ``supported=None`` for a runtime that runs any op with an ONNX schema at the opset;
      ``extra_domains``: custom domains the runtime implements.
    - ``int8``: the path quantizes every tensor to int8 with one scale per tensor.
    - ``rank5``: severity of >= 5-D tensors and their broadcasts (None: not a concern).
    - ``split_outputs``: quantizes each graph output with one scale, so a detection graph wants three
      per-level head outputs; ``batch1_ops``: some ops run at batch 1 only and Resize modes are restricted.
    - ``shared_scale``: severity of a tensor joining unbounded values (landmarks) with 0..1 probabilities,
      which one int8 scale per tensor cannot hold (None: not a concern).
    """

    supported: frozenset | None
    unsupported: frozenset = frozenset()
    list_name: str = ""
    int8: bool = False
    rank5: str | None = None
    split_outputs: bool = False
    batch1_ops: bool = False
    extra_domains: frozenset = frozenset()
    shared_scale: str | None = None


PROFILES: dict[str, LintProfile] = {
    "rknn": LintProfile(RKNN_SUPPORTED_OPS, RKNN_UNSUPPORTED_OPS, "rknn-toolkit2", int8=True, rank5="error",
                        split_outputs=True, batch1_ops=True, shared_scale="error"),
    "mlu": LintProfile(MLU_SUPPORTED_OPS, frozenset(), "yoloport MLU (conservative)", int8=True, rank5="warning",
                       shared_scale="error"),
    # the CPU runtimes' int8 keeps the head's tail in float by default: a shared tensor is worth knowing only
    "onnxruntime": LintProfile(None, extra_domains=RUNTIME_EXTRA_DOMAINS["onnxruntime"], shared_scale="info"),
    "openvino": LintProfile(None, extra_domains=RUNTIME_EXTRA_DOMAINS["openvino"], shared_scale="info"),
}
assert tuple(PROFILES) == TARGETS and INT8_TARGETS == {t for t, p in PROFILES.items() if p.int8}


def _listed_support(supported: frozenset, unsupported: frozenset, who: str, op_type: str, domain: str) -> tuple[bool, str]:
    if domain not in DEFAULT_DOMAINS:
        return False, f"custom domain '{domain}' is not handled by {who}"
    if op_type in unsupported:
        return False, f"marked 'Not Supported' in the {who} OP support list"
    if op_type not in supported:
        return False, f"not in the {who} OP support list"
    return True, ""


def _schema_support(op_type: str, domain: str, opset: int | None) -> tuple[bool, str]:
    in_default = domain in DEFAULT_DOMAINS
    schema_domain = "" if in_default else domain
    if not onnx.defs.has(op_type, schema_domain):
        return False, f"no ONNX schema for '{domain or 'ai.onnx'}::{op_type}'"
    if opset is not None and in_default:
        try:
            onnx.defs.get_schema(op_type, max_inclusive_version=opset, domain=schema_domain)
        except onnx.defs.SchemaError:
            return False, f"{op_type} is not defined at opset {opset}"
    return True, ""


def op_support(target: str, op_type: str, domain: str = "", opset: int | None = None) -> tuple[bool, str]:
    """Whether ``target`` runs ``domain::op_type`` at default-domain ``opset``, and why not.

    Returns ``(supported, reason)``; ``reason`` is empty when supported.
    """
    profile = PROFILES.get(target)
    if profile is None:
        raise ValueError(f"unknown target {target!r}; choose from {', '.join(TARGETS)}")
    if profile.supported is not None:
        return _listed_support(profile.supported, profile.unsupported, profile.list_name, op_type, domain)
    if domain in profile.extra_domains:
        return True, ""
    return _schema_support(op_type, domain, opset)


def op_hint(op_type: str) -> str:
    """One-line fix hint for an unsupported op."""
    return OP_HINTS.get(op_type, DEFAULT_OP_HINT)
