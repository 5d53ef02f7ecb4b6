"""The RKNN runner: rknn-toolkit2's simulator (rebuilt from the recorded recipe) or a connected board."""
from __future__ import annotations

import contextlib
from pathlib import Path

import cv2
import numpy as np

from ...errors import YoloportError
from ...ops.postprocess import HeadSpec
from ..base import Runner, model_fingerprint, read_sidecar
from .build import BuildRecipe, _live_key, hand_back, make_rknn, take_live
from .options import ARTIFACT_NAME, NAME, check_batch, check_platform, resolve_qconfig
from .toolkit import ToolkitLog, _import_rknn, call, quiet
from ...data.letterbox import input_multiple


class RknnRunner(Runner):
    """The RKNN simulator (``target=None``) or a board (``target='rk3588'``, ``device_id``) behind the
    Runner interface: float32 NCHW 0..1 in, the head outputs of the export mode as float32 out.

    ``batch``: the images one ``inference`` call takes (the ``.rknn``'s ``rknn_batch_size``, 1 unless the
    build asked for more). A batch-1 model runs a batch image by image (``self.batch`` None: validation
    groups images as it likes); a batch-N model in calls of N images, the last one padded with zeros and
    the padding's outputs dropped (``self.batch`` N)."""

    backend = NAME

    def __init__(self, rk, head: HeadSpec, input_hw, target=None, platform: str | None = None, stride: int = 32, log=None,
                 batch: int = 1, live_key: tuple | None = None):
        self.rk = rk
        self.live_key = live_key  # a simulator's artifact: close() hands the object back for the next load
        self.head = head
        self.input_hw = tuple(input_hw)
        self.images_per_call = check_batch(batch)
        self.batch = self.images_per_call if self.images_per_call > 1 else None
        self.stride = stride
        self.target = target
        self.platform = platform
        self.log = log or ToolkitLog()

    @staticmethod
    def to_runtime_input(images: np.ndarray) -> np.ndarray:
        """float32 ``[B,3,H,W]`` RGB 0..1 -> uint8 ``[B,H,W,3]`` RGB 0..255 (what the board receives): each
        value times 255, rounded to the nearest integer and saturated to 0..255, written plane by plane into
        the NHWC result (OpenCV's saturating multiply; one reused float buffer, where values above 1 are
        first cut to 1, since OpenCV's rounding wraps products beyond the int range to 0). The same bytes as
        ``clip(rint(x * 255), 0, 255)`` for every value :func:`~yoloport.data.letterbox.preprocess` makes
        (the 1/255 grid) and off it except at exact float32 half-way products (OpenCV multiplies in double)."""
        x = np.ascontiguousarray(images, dtype=np.float32)
        b, c, h, w = x.shape
        out = np.empty((b, h, w, c), np.uint8)
        capped = np.empty((c, h, w), np.float32)
        for i in range(b):
            np.minimum(x[i], 1.0, out=capped)
            cv2.merge([cv2.multiply(capped[k], 255.0, dtype=cv2.CV_8U) for k in range(c)], dst=out[i])
        return out

    def infer_uint8(self, x: np.ndarray) -> list[np.ndarray]:
        """One ``inference`` call on ``images_per_call`` uint8 NHWC images -> float32 head outputs."""
        outs = call("inference", self.rk.inference, log=self.log, inputs=[x], data_format="nhwc")
        return [np.asarray(o, dtype=np.float32) for o in outs]

    def __call__(self, images: np.ndarray) -> list[np.ndarray]:
        from ..registry import call_fixed_batch, check_input

        x = self.to_runtime_input(check_input(images, self.input_hw, self.backend))
        return call_fixed_batch(self.infer_uint8, x, self.images_per_call)

    def close(self) -> None:
        if self.rk is not None:
            if self.live_key is not None:
                hand_back(self.live_key, self.rk)  # the next load of this artifact in this process reuses it
            else:
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
        return RknnRunner(rk, head, info["input_hw"], target=platform, platform=platform, stride=stride, log=log,
                          batch=artifact_batch(info))
    rk = open_simulator(artifact, info, log)
    return RknnRunner(rk, head, info["input_hw"], target=None, platform=info.get("platform"), stride=stride, log=log,
                      batch=artifact_batch(info), live_key=_live_key(artifact))


def artifact_batch(info: dict) -> int:
    """The images per ``inference`` call of the ``.rknn`` a sidecar describes (its ``batch``; 1 when unset)."""
    return check_batch(info.get("batch") or 1)


def open_simulator(artifact: Path, info: dict, log: ToolkitLog):
    """An RKNN object running ``artifact`` in rknn-toolkit2's simulator (``init_runtime(target=None)`` done):
    the one :func:`build` left live in this process or the last closed simulator runner handed back
    (:func:`~.build.take_live`), else rebuilt from the recipe its sidecar ``info`` records (source ONNX, config,
    calibration list), since the simulator runs only a model built from ONNX in the same session. The session
    adapter of :mod:`yoloport.backends.rknn_lite` uses it too."""
    rinfo = info.get("rknn") or {}
    live = take_live(artifact)
    if live is not None and live.runtime_ready:
        return live.rk
    rk = live.rk if live is not None else None
    if rk is None:
        work = artifact.parent / rinfo.get("build_dir", ARTIFACT_NAME + ".build")
        src = artifact.parent / rinfo.get("source_onnx", f"{work.name}/source.onnx")
        if not src.is_file():
            raise YoloportError(f"{artifact}: the simulator needs the source ONNX {src} (kept next to the .rknn); run on a board with target=...")
        ds = rinfo.get("dataset")
        q = resolve_qconfig(info.get("qconfig"), calibrated=bool(ds))
        if q["do_quantization"] and not (ds and (artifact.parent / ds).is_file()):
            raise YoloportError(f"{artifact}: the simulator rebuild needs the calibration list {ds} (missing)")
        rk, _ = make_rknn(BuildRecipe(src, q, artifact.parent / ds if ds else None, work, artifact_batch(info)), log)
    call("init_runtime", rk.init_runtime, log=log, target=None)
    return rk
