"""The one Runner interface every backend implements.

A backend module (``yoloport.backends.<name>``) provides::

    build(source, calibration, qconfig, out) -> Path      # source: ONNX path or DetectionModel
    load(artifact) -> Runner

and a ``Runner`` is called with a float32 ``[B, 3, H, W]`` RGB 0..1 batch (from
``yoloport.data.letterbox.preprocess``) and returns the head outputs as a list of numpy arrays in its
``head.mode`` layout; ``yoloport.ops.postprocess.postprocess(outputs, runner.head, ...)`` turns them
into detections the same way for every backend.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from ..ops.postprocess import HeadSpec


class Runner(ABC):
    """Runs one model on one backend. Attributes:

    - ``backend``: the backend name (``torch``, ``onnxruntime``, ``openvino``, ``rknn``, ``mlu-sim``)
    - ``head``: :class:`HeadSpec` describing the outputs
    - ``input_hw``: fixed ``(h, w)`` the graph needs, or None when any stride multiple works
    - ``batch``: fixed batch size the graph needs, or None when dynamic
    - ``stride``: the model's largest stride (inputs must be multiples of it)
    """

    backend: str = "?"
    head: HeadSpec
    input_hw: tuple[int, int] | None = None
    batch: int | None = None
    stride: int = 32

    @abstractmethod
    def __call__(self, images: np.ndarray) -> list[np.ndarray]:
        """``images: [B, 3, H, W]`` float32 RGB in [0, 1] -> head outputs."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release runtime resources (sessions, simulators)."""

    def describe(self) -> dict:
        return {"backend": self.backend, "mode": self.head.mode, "input_hw": self.input_hw, "batch": self.batch}


# ----------------------------------------------------------------------------- artifacts
# Every artifact (``model.int8.onnx``, ``model_openvino/``, ``model.rknn``, ``model.mlusim.safetensors``)
# has a JSON sidecar next to it: ``<artifact>.json``. It records what is needed to run and to trust it.

import hashlib  # noqa: E402
from typing import NamedTuple  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from ..errors import YoloportError  # noqa: E402


def sidecar_path(artifact) -> Path:
    p = Path(artifact)
    return p.with_name(p.name + ".json")


def write_sidecar(artifact, info: dict) -> Path:
    """Write ``<artifact>.json`` atomically. ``info`` should hold at least ``backend``, ``head``
    (HeadSpec dict), ``input_hw``, ``batch``, ``model_fingerprint``, ``calibration`` and ``qconfig``."""
    from .._version import __version__

    doc = {"yoloport_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), **info}
    from ..io.paths import write_text_atomic

    return write_text_atomic(sidecar_path(artifact), json.dumps(doc, indent=2, default=_json_default))


def read_sidecar(artifact, expect_backend: str | None = None, expect_fingerprint: str | None = None) -> dict:
    """Read and check an artifact's sidecar: refuses artifacts of another backend or another model."""
    p = Path(artifact)
    if not p.exists():
        raise YoloportError(f"artifact {p} does not exist")
    sc = sidecar_path(p)
    if not sc.is_file():
        raise YoloportError(f"artifact {p} has no sidecar {sc.name}: was it built by 'yoloport quantize'?")
    try:
        info = json.loads(sc.read_text())
    except json.JSONDecodeError as e:
        raise YoloportError(f"artifact sidecar {sc} is not valid JSON: {e}") from None
    if expect_backend and info.get("backend") != expect_backend:
        raise YoloportError(f"artifact {p} was built for backend {info.get('backend')!r}, not {expect_backend!r}")
    if expect_fingerprint and info.get("model_fingerprint") and info["model_fingerprint"] != expect_fingerprint:
        raise YoloportError(
            f"artifact {p} was built from another model (fingerprint {info['model_fingerprint']}, "
            f"this model is {expect_fingerprint})"
        )
    return info


def model_fingerprint(model) -> str:
    """A short hash of a DetectionModel's weights and names: tells which model an artifact came from."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().contiguous().numpy().tobytes())
    h.update(json.dumps(list(model.names)).encode())
    return h.hexdigest()[:16]


def _json_default(o):
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "to_dict"):
        return o.to_dict()
    raise TypeError(f"not JSON serialisable: {type(o)}")


# ----------------------------------------------------------------------------- profiling


class RuntimeProfile(NamedTuple):
    """What a backend's ``profile_run`` reads from its runtime's profiler (``yoloport.analysis.profile``
    builds the per-layer-type table from it).

    ``nodes``: ``(name, layer type, runtime type, mean us per inference, kernel)`` in execution order;
    ``wall_us``: mean wall time of an inference (None when unknown)."""

    nodes: list
    runs: int
    warmup: int
    wall_us: float | None
    source: str
    notes: list


def mean_node_times(runs: list[list[tuple]]) -> list[tuple]:
    """Per-run lists of ``(name, runtime_type, kernel, us)`` in execution order -> one list with the
    mean time of each node over the runs (a node missing from a run counts 0 there)."""
    if not runs:
        return []
    order: dict[tuple, int] = {}
    sums: dict[tuple, float] = {}
    for run in runs:
        for name, rtype, kernel, us in run:
            key = (name, rtype, kernel)
            order.setdefault(key, len(order))
            sums[key] = sums.get(key, 0.0) + float(us)
    return [(k[0], k[1], k[2], sums[k] / len(runs)) for k in sorted(order, key=order.get)]


def _check_runs(runs: int, warmup: int) -> None:
    if int(runs) < 1 or int(warmup) < 0:
        raise YoloportError(f"--runs must be >= 1 and --warmup >= 0 (got {runs}, {warmup})")


def _check_images(images: np.ndarray, shape) -> np.ndarray:
    """float32 contiguous batch whose shape fits the graph input's static dims."""
    x = np.ascontiguousarray(images, dtype=np.float32)
    dims = list(shape)
    if x.ndim != len(dims) or any(isinstance(d, int) and d != s for d, s in zip(dims, x.shape)):
        raise YoloportError(f"the model takes inputs of shape {dims}, got {list(x.shape)}")
    return x
