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


#: keys of a backend's own sidecar section that name files the artifact needs to run (the RKNN
#: simulator rebuilds the model from ``source_onnx`` and ``dataset``): vouched for like the artifact
COMPANION_KEYS = ("source_onnx", "dataset")


def artifact_files(artifact) -> list[Path]:
    """The files that make up an artifact: the file itself, an OpenVINO ``.xml`` with its ``.bin``,
    or every file under a folder (sorted)."""
    p = Path(artifact)
    if p.is_dir():
        return sorted(f for f in p.rglob("*") if f.is_file())
    files = [p]
    if p.suffix == ".xml" and p.with_suffix(".bin").is_file():
        files.append(p.with_suffix(".bin"))
    return files


def _companions(artifact: Path, info: dict) -> list[Path]:
    section = info.get(info.get("backend")) if isinstance(info.get("backend"), str) else None
    if not isinstance(section, dict):
        return []
    return [artifact.parent / section[k] for k in COMPANION_KEYS if isinstance(section.get(k), str)]


def file_digest(path: Path) -> dict:
    """``{"size": bytes, "sha256": hex}`` of one file (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {"size": path.stat().st_size, "sha256": h.hexdigest()}


def integrity_record(artifact, info: dict) -> dict:
    """``{relative path: {size, sha256}}`` of the artifact's files and the companions its backend
    section names, relative to the artifact's folder (a folder artifact: to its parent)."""
    p = Path(artifact)
    base = p.parent
    return {f.relative_to(base).as_posix(): file_digest(f) for f in artifact_files(p) + _companions(p, info)
            if f.is_file()}


def integrity_problem(artifact, info: dict) -> str | None:
    """What differs between an artifact on disk and the record in its sidecar, or None."""
    p = Path(artifact)
    record = info.get("integrity")
    if not isinstance(record, dict) or not record:
        return "its sidecar records no size and sha256 (built by an older yoloport, or not by yoloport): rebuild it"
    base = p.parent
    on_disk = {f.relative_to(base).as_posix() for f in artifact_files(p)}
    extra = sorted(on_disk - set(record))
    if extra:
        return f"{extra[0]} is part of the artifact but not recorded in its sidecar"
    for rel, want in record.items():
        f = base / rel
        if not f.is_file():
            return f"{rel} is missing (the sidecar records {want.get('size')} bytes)"
        size = f.stat().st_size
        if size != want.get("size"):
            return f"{rel} is {size} bytes, the sidecar records {want.get('size')} (cut, or another file)"
        if file_digest(f)["sha256"] != want.get("sha256"):
            return f"{rel} has sha256 {file_digest(f)['sha256'][:12]}..., the sidecar records {str(want.get('sha256'))[:12]}... (damaged, or another model)"
    return None


def write_sidecar(artifact, info: dict) -> Path:
    """Write ``<artifact>.json`` atomically, once the artifact is complete. ``info`` should hold at
    least ``backend``, ``head`` (HeadSpec dict), ``input_hw``, ``batch``, ``model_fingerprint``,
    ``calibration`` and ``qconfig``; the size and sha256 of every file of the artifact (and of the
    companions in :data:`COMPANION_KEYS`) are added as ``integrity`` and checked by :func:`read_sidecar`."""
    from .._version import __version__

    doc = {"yoloport_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), **info,
           "integrity": integrity_record(artifact, info)}
    from ..io.paths import write_text_atomic

    return write_text_atomic(sidecar_path(artifact), json.dumps(doc, indent=2, default=_json_default))


def read_sidecar(artifact, expect_backend: str | None = None, expect_fingerprint: str | None = None) -> dict:
    """Read and check an artifact's sidecar: refuses an artifact whose files differ from what the
    sidecar records (size, sha256: cut, damaged, or another model's file under this name), and
    artifacts of another backend or another model."""
    p = Path(artifact)
    if not p.exists():
        raise YoloportError(f"artifact {p} does not exist")
    sc = sidecar_path(p)
    if not sc.is_file():
        raise YoloportError(f"artifact {p} has no sidecar {sc.name}: was it built by 'yoloport quantize'?")
    try:
        info = json.loads(sc.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise YoloportError(f"artifact sidecar {sc} is not valid JSON: {e}") from None
    if not isinstance(info, dict):
        raise YoloportError(f"artifact sidecar {sc} is not a JSON object")
    problem = integrity_problem(p, info)
    if problem:
        raise YoloportError(f"refusing artifact {p}: {problem}")
    if expect_backend and info.get("backend") != expect_backend:
        raise YoloportError(f"artifact {p} was built for backend {info.get('backend')!r}, not {expect_backend!r}")
    if expect_fingerprint and info.get("model_fingerprint") and info["model_fingerprint"] != expect_fingerprint:
        raise YoloportError(
            f"artifact {p} was built from another model (fingerprint {info['model_fingerprint']}, "
            f"this model is {expect_fingerprint})"
        )
    return info


def model_fingerprint(model) -> str:
    """A short hash of a DetectionModel's weights and names: tells which model an artifact came from.
    A model derived for a build (the PTQ recipe's folded copy) carries its source's as ``source_fingerprint``."""
    if getattr(model, "source_fingerprint", None):
        return model.source_fingerprint
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
