"""Rockchip RKNN backend (rknn-toolkit2 2.x): build an ``.rknn`` from yoloport's ONNX and run it in
the toolkit's simulator (or on a connected board).

The deployed model takes what a camera pipeline has: uint8 RGB ``[1, H, W, 3]`` (NHWC), 0..255 (``[N, H, W, 3]``
for a build that asked for a batch of N: ``qconfig['batch']``, rknn-toolkit2's ``rknn_batch_size``). The
normalisation ``/255`` is compiled into the model (``mean_values=0, std_values=255``), so the runner
converts yoloport's float32 NCHW 0..1 batch back to exactly those bytes (``rint(x * 255)``, lossless
for inputs made by :func:`yoloport.data.letterbox.preprocess`).

Facts about rknn-toolkit2 2.5 this module is built on (checked on the installed toolkit):

- the simulator runs only from the RKNN object that built the model from ONNX; a ``.rknn`` loaded
  with ``load_rknn`` runs only on a board (``init_runtime`` refuses the simulator). An artifact
  therefore keeps the ``.rknn`` *and* what rebuilds it - the source ONNX, the calibration images and
  the exact config - in ``<name>.rknn.build/``; :func:`load` rebuilds for the simulator and loads the
  ``.rknn`` itself for a board (``target=...``). The sidecar says which.
- "float" RKNN models compute in float16 (``float_dtype`` knows no other value): a float build agrees
  with PyTorch to fp16 precision, not bit for bit.
- calibration images listed in ``dataset.txt`` are read by the toolkit as RGB (OpenCV + BGR->RGB) and
  resized, not letterboxed; yoloport therefore writes the letterboxed inputs as PNGs of exactly the
  network size (the one preprocessing path), so the toolkit's resize is the identity.
- hybrid quantization: ``hybrid_quantization_step1`` writes ``<stem>.model/.data/.quantization.cfg``
  into the working directory; its ``custom_quantize_layers`` maps tensor names to ``float16``,
  ``int16`` or ``int8``; ``hybrid_quantization_step2`` (on a fresh RKNN object, without
  ``load_onnx``) builds the mixed model.

The package: :mod:`.options` (platforms, dtypes, qconfig), :mod:`.toolkit` (quiet toolkit calls),
:mod:`.hybrid` (tensors kept in float), :mod:`.build` (the ``.rknn`` and its rebuild recipe),
:mod:`.runner` (simulator or board).
"""
from __future__ import annotations

from ..spec import BackendSpec
from .build import _LIVE, build, build_prequantized  # noqa: F401
from .options import (  # noqa: F401
    ARTIFACT_NAME, DEFAULT_HEAD_FP32, DEFAULT_QCONFIG, NAME, PLATFORMS, _hybrid_dict, check_batch, check_platform,
    resolve_qconfig,
)
from .profile import parse_rknn_perf, profile_run  # noqa: F401
from .runner import RknnRunner, artifact_batch, load  # noqa: F401
from .toolkit import _import_rknn, call, quiet  # noqa: F401


def _platform_option(word: str) -> dict | None:
    """A port target's extra word: an RKNN platform name (``rknn:rk3588``) -> ``{"platform": ...}``."""
    import re

    return {"platform": check_platform(word)} if re.fullmatch(r"r[kv]\d+\w*", word) else None


def check_qconfig(qconfig: dict) -> None:
    """Every RKNN value of ``qconfig`` checked before the export (the platform, dtypes, ``batch``, ...)."""
    resolve_qconfig(qconfig, calibrated=str((qconfig or {}).get("precision") or "").lower() == "int8")


SPEC = BackendSpec(
    name=NAME,
    summary="Rockchip RKNN NPU via rknn-toolkit2 (its x86 simulator here, a board with --device-id)",
    install="install rknn-toolkit2 from Rockchip's wheels (https://github.com/airockchip/rknn-toolkit2)",
    precisions=("fp16", "fp32", "int8"),
    qconfig_defaults=DEFAULT_QCONFIG,
    export_opset=None,
    lint_target="rknn",
    act_scheme="asymmetric",
    per_channel_weights=True,
    quantizes_outputs=True,  # the NPU returns int8 head outputs
    default_head_fp32=DEFAULT_HEAD_FP32,
    # measured on the embedded model: RKNN int8 lost 11.7 mAP@0.5:0.95 points with the Detect convs in
    # int8 and 0.3 with them in float16 (hybrid)
    port_qconfig={"head_fp32": "convs"},
    target_defaults={"platform": DEFAULT_QCONFIG["platform"]},
    benchmarkable=False,
    profiler=True,  # RKNN.eval_perf, on a connected board only
    board=True,  # --device-id: the .rknn itself on a board over adb
    simulated_note="RKNN results come from rknn-toolkit2's x86 simulator (no board connected): accuracy is the "
    "simulator's, and its timings say nothing about the NPU, so RKNN is not benchmarked here.",
    target_option=_platform_option,
    output_convention="rknn_model_zoo",  # three stride-ordered outputs with the sigmoid applied
    # a batch of N per call is compiled from the batch-1 graph (rknn_batch_size), only when asked for: the
    # simulator runs such a model image by image inside and took 1.2x (N=4) to 1.4x (N=8) the CPU time
    # per image of the batch-1 model, outputs bit-identical (docs/notes/2026-11-30-rknn-batch.md), so the
    # port validates the batch-1 .rknn a board runs per frame, one image per call
    batch_compiled=True,
)
