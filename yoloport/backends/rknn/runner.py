"""The RKNN runner: rknn-toolkit2's simulator (rebuilt from the recorded recipe) or a connected board."""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from ...errors import YoloportError
from ...ops.postprocess import HeadSpec
from ..base import Runner, model_fingerprint, read_sidecar
from .build import _LIVE, BuildRecipe, _live_key, make_rknn
from .options import ARTIFACT_NAME, NAME, check_platform, resolve_qconfig
from .toolkit import ToolkitLog, _import_rknn, call, quiet
from ...data.letterbox import input_multiple


class RknnRunner(Runner):
    """The RKNN simulator (``target=None``) or a board (``target='rk3588'``, ``device_id``) behind the
    Runner interface: float32 NCHW 0..1 in, the head outputs of the export mode as float32 out."""

    backend = NAME

    def __init__(self, rk, head: HeadSpec, input_hw, target=None, platform: str | None = None, stride: int = 32, log=None):
        self.rk = rk
        self.head = head
        self.input_hw = tuple(input_hw)
        self.batch = None  # the graph takes one image; a batch is run image by image
        self.stride = stride
        self.target = target
        self.platform = platform
        self.log = log or ToolkitLog()

    @staticmethod
    def to_runtime_input(images: np.ndarray) -> np.ndarray:
        """float32 ``[B,3,H,W]`` RGB 0..1 -> uint8 ``[B,H,W,3]`` RGB 0..255 (what the board receives)."""
        x = np.clip(np.rint(np.asarray(images, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1))

    def __call__(self, images: np.ndarray) -> list[np.ndarray]:
        from ..registry import check_input

        x = self.to_runtime_input(check_input(images, self.input_hw, self.backend))
        per_image = []
        for i in range(x.shape[0]):
            outs = call("inference", self.rk.inference, log=self.log, inputs=[x[i : i + 1]], data_format="nhwc")
            per_image.append([np.asarray(o, dtype=np.float32) for o in outs])
        return [np.concatenate([o[j] for o in per_image], 0) for j in range(len(per_image[0]))]

    def close(self) -> None:
        if self.rk is not None:
            with contextlib.suppress(Exception), quiet(self.log):
                self.rk.release()
            self.rk = None

    def describe(self) -> dict:
        d = super().describe()
        d.update({"platform": self.platform, "target": self.target or "simulator"})
        return d


def load(artifact, model=None, target: str | None = None, device_id: str | None = None, **options) -> RknnRunner:
    """A runner for ``artifact``: the simulator (default; the model is rebuilt from the recorded ONNX,
    config and calibration images, or reused from :func:`build` in this process) or a connected board
    (``target``, optional ``device_id``; the ``.rknn`` itself is loaded). A relative ``artifact`` is
    resolved first: the toolkit runs hybrid steps inside the build folder, where relative paths break."""
    artifact = Path(artifact).resolve()
    info = read_sidecar(artifact, expect_backend=NAME, expect_fingerprint=model_fingerprint(model) if model is not None else None)
    head = HeadSpec.from_dict(info["head"])
    stride = input_multiple(head.strides)
    log = ToolkitLog()
    if target:
        platform = check_platform(target)
        if platform != info.get("platform"):
            raise YoloportError(f"{artifact} was built for {info.get('platform')}, not {platform}")
        RKNN = _import_rknn()
        with quiet(log):
            rk = RKNN(verbose=False)
        call("load_rknn", rk.load_rknn, str(artifact), log=log)
        call("init_runtime", rk.init_runtime, log=log, target=platform, device_id=device_id)
        return RknnRunner(rk, head, info["input_hw"], target=platform, platform=platform, stride=stride, log=log)
    rk = open_simulator(artifact, info, log)
    return RknnRunner(rk, head, info["input_hw"], target=None, platform=info.get("platform"), stride=stride, log=log)


def open_simulator(artifact: Path, info: dict, log: ToolkitLog):
    """An RKNN object running ``artifact`` in rknn-toolkit2's simulator (``init_runtime(target=None)`` done):
    the one :func:`build` left live in this process, else rebuilt from the recipe its sidecar ``info``
    records (source ONNX, config, calibration list), since the simulator runs only a model built from ONNX
    in the same session. The session adapter of :mod:`yoloport.backends.rknn_lite` uses it too."""
    rinfo = info.get("rknn") or {}
    rk = _LIVE.pop(_live_key(artifact), None)
    if rk is None:
        work = artifact.parent / rinfo.get("build_dir", ARTIFACT_NAME + ".build")
        src = artifact.parent / rinfo.get("source_onnx", f"{work.name}/source.onnx")
        if not src.is_file():
            raise YoloportError(f"{artifact}: the simulator needs the source ONNX {src} (kept next to the .rknn); run on a board with target=...")
        ds = rinfo.get("dataset")
        q = resolve_qconfig(info.get("qconfig"), calibrated=bool(ds))
        if q["do_quantization"] and not (ds and (artifact.parent / ds).is_file()):
            raise YoloportError(f"{artifact}: the simulator rebuild needs the calibration list {ds} (missing)")
        rk, _ = make_rknn(BuildRecipe(src, q, artifact.parent / ds if ds else None, work), log)
    call("init_runtime", rk.init_runtime, log=log, target=None)
    return rk
