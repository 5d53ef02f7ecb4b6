"""The ``rknn-lite`` backend: a ``.rknn`` built by the ``rknn`` backend (``quantize``/``port``), run on a
Rockchip board's NPU with rknn-toolkit-lite2 (``from rknnlite.api import RKNNLite``; aarch64 only).

It builds nothing: the artifact and its sidecar are the ones the ``rknn`` backend wrote. The runner is
the RKNN one (:class:`~yoloport.backends.rknn.runner.RknnRunner`: float32 NCHW 0..1 in -> uint8 NHWC
0..255 ``[1, H, W, 3]`` per image (``[N, H, W, 3]`` per N images for a batch-N build), ``data_format="nhwc"``, outputs as float32, host decode + NMS after),
driven through a small adapter, :class:`NpuSession` (``inference(inputs=[...], data_format=...)``,
``release()``), which two openers provide:

- :func:`open_board_session` (the board): ``RKNNLite()``, ``load_rknn(path)``,
  ``init_runtime(core_mask=...)``; the toolkit returns 0 or an error code, which becomes one clear error.
- :func:`open_simulator_session` (this x86 machine, for tests and for checking a deploy folder):
  rknn-toolkit2's simulator, which runs only an RKNN object that built the model from ONNX in the same
  session, so the model is rebuilt from the recipe the sidecar records
  (:func:`~yoloport.backends.rknn.runner.open_simulator`). Accuracy is the simulator's; its timings say
  nothing about the NPU.

:func:`load` picks the board when ``rknnlite`` imports, else refuses with the install line, unless the
simulator is asked for (``runtime="simulator"``, or ``YOLOPORT_RKNN_LITE_RUNTIME=simulator`` for the
command line). ``core_mask`` (``auto``, ``0``, ``1``, ``2``, ``0_1``, ``0_1_2``) is parsed and checked
against the artifact's platform on both paths (:func:`parse_core_mask`): RK3588 has three NPU cores,
RK3576 two, the others one (``auto`` only).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from ..errors import DependencyMissing, YoloportError
from ..ops.postprocess import HeadSpec
from .base import model_fingerprint, read_sidecar
from .rknn.options import NAME as BUILDER
from .rknn.runner import RknnRunner, artifact_batch, open_simulator
from .rknn.toolkit import ToolkitLog, _import_rknn, call, quiet
from .spec import BackendSpec
from ..data.letterbox import input_multiple

NAME = "rknn-lite"
INSTALL = ("pip install 'yoloport[rknn-lite]', then Rockchip's rknn_toolkit_lite2 wheel for the board's Python "
           "(aarch64; https://github.com/airockchip/rknn-toolkit2, rknn-toolkit-lite2/packages)")
RUNTIME_ENV = "YOLOPORT_RKNN_LITE_RUNTIME"  # "simulator": run the same runner on rknn-toolkit2's simulator
RUNTIMES = ("board", "simulator")

# --core-mask value -> the NPU_CORE_* constant both RKNNLite and rknn-toolkit2's RKNN define
CORE_MASKS = {"auto": "NPU_CORE_AUTO", "0": "NPU_CORE_0", "1": "NPU_CORE_1", "2": "NPU_CORE_2",
              "0_1": "NPU_CORE_0_1", "0_1_2": "NPU_CORE_0_1_2"}
NPU_CORES = {"rk3588": 3, "rk3576": 2}  # NPU cores per platform; every other platform has one
SIMULATED_NOTE = ("rknn-lite ran on rknn-toolkit2's x86 simulator through the same runner (no board here): "
                  "accuracy is the simulator's; the NPU's timings come only from the board")


class NpuSession(Protocol):
    """What the runner needs of an NPU runtime (RKNNLite on a board, RKNN in the simulator)."""

    def inference(self, inputs: list, data_format=None) -> list:  # uint8 [1, H, W, 3] -> head outputs
        ...

    def release(self) -> None:
        ...


def parse_core_mask(value, platform: str | None) -> str:
    """A ``--core-mask`` value (``auto``, ``0``, ``1``, ``2``, ``0_1``, ``0_1_2``; ``NPU_CORE_0_1`` and
    ``0,1`` are accepted spellings) -> its ``NPU_CORE_*`` constant name, checked against ``platform``'s
    NPU cores. None -> ``NPU_CORE_AUTO``."""
    if value is None:
        return CORE_MASKS["auto"]
    key = str(value).strip().lower().replace("npu_core_", "").replace(",", "_").replace(" ", "")
    if key not in CORE_MASKS:
        raise YoloportError(f"unknown --core-mask {value!r}; choose one of: {', '.join(CORE_MASKS)}")
    cores = NPU_CORES.get(str(platform or "").lower(), 1)
    if key != "auto" and (cores == 1 or max(int(c) for c in key.split("_")) >= cores):
        allowed = [k for k in CORE_MASKS if k == "auto" or (cores > 1 and max(map(int, k.split("_"))) < cores)]
        what = f"{cores} NPU cores" if cores > 1 else "one NPU core (only auto)"
        raise YoloportError(f"--core-mask {key}: {platform or 'this platform'} has {what}; choose one of: {', '.join(allowed)}")
    return CORE_MASKS[key]


def core_mask_value(runtime_class, constant: str) -> int:
    """The integer of ``constant`` (``NPU_CORE_0_1``) as ``runtime_class`` (RKNNLite or RKNN) defines it."""
    value = getattr(runtime_class, constant, None)
    if value is None:
        raise YoloportError(f"this rknn runtime does not know {constant} (too old a toolkit?)")
    return int(value)


def choose_runtime(runtime: str | None) -> str:
    """``board`` or ``simulator``: the argument, else ``$YOLOPORT_RKNN_LITE_RUNTIME``, else ``board``."""
    value = (runtime or os.environ.get(RUNTIME_ENV) or "board").strip().lower()
    if value not in RUNTIMES:
        raise YoloportError(f"rknn-lite runtime {value!r} (from {RUNTIME_ENV} or runtime=); choose one of: {', '.join(RUNTIMES)}")
    return value


def _import_rknnlite():
    try:
        from rknnlite.api import RKNNLite
    except ImportError:
        raise DependencyMissing(
            "rknn-toolkit-lite2", "the rknn-lite backend (the NPU runtime on a Rockchip board)",
            f"{INSTALL}. On an x86 machine, run the same runner on rknn-toolkit2's simulator with "
            f"{RUNTIME_ENV}=simulator (accuracy only), or use --backend rknn",
        ) from None
    return RKNNLite


def open_board_session(artifact: Path, core_mask: str, log: ToolkitLog) -> NpuSession:
    """``RKNNLite`` with the ``.rknn`` loaded and its runtime started on ``core_mask`` (a constant name)."""
    RKNNLite = _import_rknnlite()
    with quiet(log):
        rt = RKNNLite(verbose=False)
    call("load_rknn", rt.load_rknn, str(artifact), log=log)
    call("init_runtime", rt.init_runtime, log=log, core_mask=core_mask_value(RKNNLite, core_mask))
    return rt


def open_simulator_session(artifact: Path, info: dict, core_mask: str, log: ToolkitLog) -> NpuSession:
    """rknn-toolkit2's simulator, rebuilt from the artifact's recorded recipe. The simulator has no NPU
    cores: ``core_mask`` is resolved against RKNN's constants (so a bad one fails here as on the board) but
    not passed to it."""
    core_mask_value(_import_rknn(), core_mask)
    return open_simulator(artifact, info, log)


class RknnLiteRunner(RknnRunner):
    """The RKNN runner on an :class:`NpuSession`; ``runtime`` says which (``board`` or ``simulator``)."""

    backend = NAME

    def __init__(self, session: NpuSession, head: HeadSpec, input_hw, core_mask: str, runtime: str,
                 platform: str | None = None, stride: int = 32, log=None, batch: int = 1):
        super().__init__(session, head, input_hw, target=None, platform=platform, stride=stride, log=log, batch=batch)
        self.core_mask = core_mask
        self.runtime = runtime
        self.simulated_note = SIMULATED_NOTE if runtime == "simulator" else None

    def describe(self) -> dict:
        d = super().describe()
        d.update({"runtime": self.runtime, "core_mask": self.core_mask, "target": self.runtime})
        return d


def load(artifact, model=None, core_mask=None, runtime: str | None = None, **options) -> RknnLiteRunner:
    """A runner for a ``.rknn`` the ``rknn`` backend built: on this board's NPU (``rknnlite``), or on
    rknn-toolkit2's simulator (``runtime="simulator"`` / ``$YOLOPORT_RKNN_LITE_RUNTIME``). ``core_mask``:
    see :func:`parse_core_mask`. Other options (``threads``, ``output``) do not apply and are ignored."""
    artifact = Path(artifact).resolve()
    info = read_sidecar(artifact, expect_backend=BUILDER,
                        expect_fingerprint=model_fingerprint(model) if model is not None else None)
    platform = info.get("platform") or (info.get("qconfig") or {}).get("platform")
    mask = parse_core_mask(core_mask, platform)
    which = choose_runtime(runtime)
    log = ToolkitLog()
    session = open_board_session(artifact, mask, log) if which == "board" else open_simulator_session(artifact, info, mask, log)
    head = HeadSpec.from_dict(info["head"])
    stride = input_multiple(head.strides)
    return RknnLiteRunner(session, head, info["input_hw"], mask, which, platform=platform, stride=stride, log=log,
                          batch=artifact_batch(info))


def build(*_args, **_kwargs):
    raise YoloportError(f"{NAME} builds nothing: it runs the .rknn the {BUILDER} backend builds "
                        f"(yoloport quantize --backend {BUILDER} ..., or a port target {BUILDER}:PLATFORM)")


SPEC = BackendSpec(
    name=NAME,
    summary="a .rknn (built by the rknn backend) on a Rockchip board's NPU via rknn-toolkit-lite2; "
    f"on x86, {RUNTIME_ENV}=simulator runs the same runner on rknn-toolkit2's simulator",
    install=INSTALL,
    precisions=("fp16", "fp32", "int8"),
    runs_onnx=False,
    lint_target="rknn",
    act_scheme="asymmetric",
    per_channel_weights=True,
    quantizes_outputs=True,
    benchmarkable=False,  # its timings mean something on the board only; here it is the simulator
    profiler=False,
    board=True,
    built_by=BUILDER,
    runtime_options=("core_mask",),
    output_convention="rknn_model_zoo",
)
