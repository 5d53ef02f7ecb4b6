"""Rockchip RKNN backend (rknn-toolkit2 2.x): build an ``.rknn`` from yoloport's ONNX and run it in
the toolkit's simulator (or on a connected board).

The deployed model takes what a camera pipeline has: uint8 RGB ``[1, H, W, 3]`` (NHWC), 0..255. The
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
- ``accuracy_analysis`` writes ``error_analysis.txt``: per tensor the cosine and euclidean error
  against the float golden, accumulated (``entire``) and for the layer alone (``single``).
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DependencyMissing, YoloportError
from ..ops.postprocess import HeadSpec
from .base import Runner, model_fingerprint, read_sidecar, write_sidecar

NAME = "rknn"
ARTIFACT_NAME = "model.rknn"

# Platforms rknn-toolkit2 2.x compiles for (2.5's list, without the rk2118 audio DSP).
PLATFORMS = ("rk3588", "rk3576", "rk3568", "rk3566", "rk3562", "rv1106", "rv1106b", "rv1103", "rv1103b", "rv1126b")
# First-generation NPUs: rknn-toolkit 1.x (a different package, not supported here).
LEGACY_PLATFORMS = ("rk1808", "rv1109", "rv1126", "rk3399pro")
QUANTIZED_DTYPES = ("w8a8", "w8a16", "w16a16i_dfp", "w4a16")
# rknn-toolkit 1.x names people carry over -> the 2.x name (None: no 2.x equivalent).
LEGACY_DTYPES = {
    "asymmetric_quantized-8": "w8a8",
    "asymmetric_quantized-u8": "w8a8",
    "dynamic_fixed_point-8": "w8a8",
    "dynamic_fixed_point-i8": "w8a8",
    "dynamic_fixed_point-16": "w16a16i_dfp",
    "dynamic_fixed_point-i16": "w16a16i_dfp",
}
ALGORITHMS = ("normal", "mmse", "kl_divergence")
METHODS = ("channel", "layer")
HYBRID_DTYPES = ("float16", "int16", "int8")
HEAD_FP32 = ("tail", "convs", "none")

DEFAULT_QCONFIG = {
    "platform": "rk3588",
    "quantized_dtype": "w8a8",
    "quantized_algorithm": "normal",
    "quantized_method": "channel",
    "optimization_level": 3,
    "hybrid": {},  # tensor name / layer prefix -> float16 | int16 | int8
    "head_fp32": "tail",  # int8: keep the head's arithmetic after the Detect convs in float16
    "exclude": [],  # ONNX node names or op types kept in float16 (int8 only)
}


# ----------------------------------------------------------------------------- options


def check_platform(name) -> str:
    """A ``--platform`` value -> the toolkit's platform name, or a YoloportError naming the choices."""
    p = str(name or "").strip().lower()
    if p in PLATFORMS:
        return p
    if p in LEGACY_PLATFORMS:
        raise YoloportError(
            f"RKNN platform {name!r} is a first-generation NPU ({', '.join(LEGACY_PLATFORMS)}): it needs the "
            f"older rknn-toolkit 1.x, which yoloport does not drive; rknn-toolkit2 supports {', '.join(PLATFORMS)}"
        )
    raise YoloportError(
        f"unknown RKNN platform {name!r}; rknn-toolkit2 supports: {', '.join(PLATFORMS)} "
        f"({', '.join(LEGACY_PLATFORMS)} need the older rknn-toolkit 1.x)"
    )


def _choice(value, choices, what: str) -> str:
    v = str(value).strip().lower()
    if v not in choices:
        raise YoloportError(f"unknown RKNN {what} {value!r}; choose one of: {', '.join(choices)}")
    return v


def check_quantized_dtype(value) -> str:
    """``w8a8`` etc.; rknn-toolkit 1.x names (``asymmetric_quantized-8``) get a message with the 2.x name."""
    v = str(value).strip().lower()
    if v in LEGACY_DTYPES:
        raise YoloportError(
            f"quantized_dtype {value!r} is an rknn-toolkit 1.x name; rknn-toolkit2 calls it "
            f"{LEGACY_DTYPES[v]!r} (choices: {', '.join(QUANTIZED_DTYPES)})"
        )
    return _choice(v, QUANTIZED_DTYPES, "quantized_dtype")


def _hybrid_dict(hybrid) -> dict:
    """``{'name': 'float16'}``, ``['name', ...]`` (float16) or ``'a,b:int16'`` -> ``{name: dtype}``."""
    if not hybrid:
        return {}
    if isinstance(hybrid, str):
        hybrid = [h for h in hybrid.split(",") if h.strip()]
    if isinstance(hybrid, (list, tuple)):
        out = {}
        for item in hybrid:
            name, sep, dt = str(item).strip().rpartition(":")
            if not sep or dt not in HYBRID_DTYPES:
                name, dt = str(item).strip(), "float16"
            out[name] = dt
        hybrid = out
    if not isinstance(hybrid, dict):
        raise YoloportError(f"RKNN hybrid layers must be a dict name -> dtype or a list of names, got {type(hybrid).__name__}")
    return {str(k): _choice(v, HYBRID_DTYPES, f"hybrid dtype for {k!r}") for k, v in hybrid.items()}


def resolve_qconfig(qconfig: dict | None, calibrated: bool) -> dict:
    """Validate the RKNN keys of ``qconfig`` (``platform``/``target_platform``, ``quantized_dtype``,
    ``quantized_algorithm``, ``quantized_method``, ``optimization_level``, ``hybrid``, ``head_fp32``,
    ``exclude``, ``precision``) and fill defaults. Returns a new dict; ``do_quantization`` is True when
    ``precision`` is ``int8`` (default: when calibration is given)."""
    q = dict(qconfig or {})
    out = dict(DEFAULT_QCONFIG)
    out.update({k: v for k, v in q.items() if v is not None})
    out["platform"] = check_platform(q.get("platform") or q.get("target_platform") or DEFAULT_QCONFIG["platform"])
    out.pop("target_platform", None)
    precision = str(q.get("precision") or ("int8" if calibrated else "fp16")).lower()
    if precision not in ("int8", "fp16", "fp32"):
        raise YoloportError(f"RKNN precision {precision!r}: choose int8 (quantized) or fp16 (float; fp32 means fp16 on RKNN)")
    out["precision"] = precision
    out["do_quantization"] = precision == "int8"
    out["quantized_dtype"] = check_quantized_dtype(out["quantized_dtype"])
    out["quantized_algorithm"] = _choice(out["quantized_algorithm"], ALGORITHMS, "quantized_algorithm")
    out["quantized_method"] = _choice(out["quantized_method"], METHODS, "quantized_method")
    try:
        level = int(out["optimization_level"])
    except (TypeError, ValueError):
        level = -1
    if level not in (0, 1, 2, 3):
        raise YoloportError(f"RKNN optimization_level must be 0..3, got {out['optimization_level']!r}")
    out["optimization_level"] = level
    out["hybrid"] = _hybrid_dict(out.get("hybrid"))
    out["head_fp32"] = _choice(out.get("head_fp32") or "none", HEAD_FP32, "head_fp32")
    out["exclude"] = [str(x) for x in (out.get("exclude") or [])]
    return out


def config_kwargs(q: dict) -> dict:
    """Keyword arguments of ``RKNN.config`` for a resolved qconfig (normalisation in the model)."""
    return {
        "mean_values": [[0, 0, 0]],
        "std_values": [[255, 255, 255]],
        "target_platform": q["platform"],
        "quantized_dtype": q["quantized_dtype"],
        "quantized_algorithm": q["quantized_algorithm"],
        "quantized_method": q["quantized_method"],
        "optimization_level": q["optimization_level"],
    }


# ----------------------------------------------------------------------------- toolkit calls


def _import_rknn():
    try:
        from rknn.api import RKNN
    except ImportError:
        raise DependencyMissing(
            "rknn-toolkit2", "the rknn backend",
            "install rknn-toolkit2 from Rockchip's wheels (https://github.com/airockchip/rknn-toolkit2)",
        ) from None
    return RKNN


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class ToolkitLog:
    """Everything the toolkit printed while quieted (ANSI colours removed)."""

    def __init__(self):
        self.text = ""

    def errors(self) -> list[str]:
        """The toolkit's error lines (``E ...``), without the prefix."""
        out = []
        for line in self.text.splitlines():
            s = line.strip()
            if s.startswith("E "):
                out.append(s[2:].strip())
        return out


@contextlib.contextmanager
def quiet(log: ToolkitLog | None = None):
    """Silence the toolkit: Python-level and file-descriptor-level stdout/stderr go to ``log``."""
    log = log if log is not None else ToolkitLog()
    buf = io.StringIO()
    for s in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            s.flush()
    tmp = tempfile.TemporaryFile(mode="w+b")
    saved = []
    try:
        for fd in (1, 2):
            try:
                saved.append((fd, os.dup(fd)))
                os.dup2(tmp.fileno(), fd)
            except OSError:
                pass
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            yield log
    finally:
        for s in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                s.flush()
        for fd, old in saved:
            os.dup2(old, fd)
            os.close(old)
        tmp.seek(0)
        text = buf.getvalue() + tmp.read().decode("utf-8", "replace")
        tmp.close()
        log.text += _ANSI.sub("", text.replace("\r", "\n"))


def call(step: str, fn, *args, log: ToolkitLog | None = None, **kwargs):
    """Run one toolkit call quietly; a non-zero return code or an exception becomes a YoloportError
    naming ``step`` and the toolkit's own error lines. Returns the call's result."""
    log = log if log is not None else ToolkitLog()
    start = len(log.text)
    try:
        with quiet(log):
            ret = fn(*args, **kwargs)
    except Exception as e:  # the toolkit raises ValueError etc. with its own traceback text
        msg = _last_error(log, start) or str(e).strip().splitlines()[-1]
        raise YoloportError(f"rknn {step} failed: {msg}") from None
    if isinstance(ret, (int, np.integer)) and ret != 0:
        raise YoloportError(f"rknn {step} failed (return code {int(ret)}): {_last_error(log, start) or 'no message from the toolkit'}")
    if ret is None and step == "inference":
        raise YoloportError(f"rknn {step} failed: {_last_error(log, start) or 'no outputs'}")
    return ret


def _last_error(log: ToolkitLog, start: int) -> str:
    """The toolkit's root-cause error line since ``start`` (tracebacks and banners skipped)."""
    sub = ToolkitLog()
    sub.text = log.text[start:]
    errs = [e for e in sub.errors() if not e.endswith("Traceback (most recent call last):") and "rknn-toolkit2 version" not in e]
    return errs[0] if errs else ""


# ----------------------------------------------------------------------------- hybrid quantization


def onnx_input_shape(onnx_path) -> list[int]:
    """The fixed ``[B, 3, H, W]`` of the graph's first input."""
    import onnx

    m = onnx.load(str(onnx_path), load_external_data=False)
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in m.graph.input[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or min(dims) <= 0:
        raise YoloportError(f"{onnx_path}: RKNN needs a fixed [B, 3, H, W] input, the graph has {dims}")
    return dims


def head_tensors(onnx_path, head_fp32: str) -> list[str]:
    """Tensor names of the head kept in float16 for ``head_fp32``: ``tail`` = outputs of every node
    downstream of the Detect convolutions (``/model.<last>/m.<i>/Conv``), ``convs`` = those too plus
    the convolutions' own outputs, ``none`` = nothing."""
    if head_fp32 == "none":
        return []
    import onnx

    g = onnx.load(str(onnx_path), load_external_data=False).graph
    det_idx = max((int(m.group(1)) for n in g.node for m in [re.match(r"/model\.(\d+)/", n.name)] if m), default=-1)
    det_prefix = f"/model.{det_idx}/m."
    convs = [n for n in g.node if n.op_type == "Conv" and n.name.startswith(det_prefix)]
    seeds = {o for n in convs for o in n.output}
    conv_names = {n.name for n in convs}
    downstream: list[str] = []
    reach = set(seeds)
    for n in g.node:  # nodes are topologically sorted in an exported graph
        if n.name in conv_names:
            continue
        if any(i in reach for i in n.input):
            reach.update(n.output)
            downstream.extend(n.output)
    names = downstream + (sorted(seeds) if head_fp32 == "convs" else [])
    return names


def excluded_tensors(onnx_path, exclude) -> list[str]:
    """Output tensor names of ONNX nodes named in ``exclude`` or whose op type is in it."""
    if not exclude:
        return []
    import onnx

    g = onnx.load(str(onnx_path), load_external_data=False).graph
    want = set(exclude)
    return [o for n in g.node if n.name in want or n.op_type in want for o in n.output]


def cfg_tensor_names(cfg_text: str) -> list[str]:
    """Tensor names listed under ``quantize_parameters`` of a ``.quantization.cfg``."""
    names, inside = [], False
    for line in cfg_text.splitlines():
        if line.startswith("quantize_parameters:"):
            inside = True
            continue
        if inside:
            m = re.match(r"^    (\S.*?):\s*$", line)
            if m:
                names.append(m.group(1).strip("'\""))
            elif line and not line.startswith(" "):
                inside = False
    return names


def match_layers(requested: dict, available: list[str]) -> dict:
    """``{name or layer prefix: dtype}`` -> ``{tensor name: dtype}`` over the cfg's tensors.

    A key matches a tensor exactly, or as a module path: ``model.24`` / ``/model.24/m.0`` match every
    tensor under ``/model.24/...``. A key matching nothing is a YoloportError listing examples."""
    out = {}
    for key, dt in requested.items():
        k = key.strip()
        prefix = "/" + k.strip("/") + "/"
        hits = [t for t in available if t == k or base_tensor_name(t) == k or t.startswith(prefix)]
        if not hits:
            sample = ", ".join(available[1:6])
            raise YoloportError(f"RKNN hybrid layer {key!r} matches no tensor of the model (tensors look like: {sample}, ...)")
        for t in hits:
            out[t] = dt
    return out


def edit_hybrid_cfg(cfg_path, layers: dict) -> dict:
    """Write ``layers`` ({tensor: dtype}, names present in the cfg) into ``custom_quantize_layers``
    of a step-1 ``.quantization.cfg`` (text edit: the rest of the file stays byte for byte)."""
    p = Path(cfg_path)
    text = p.read_text()
    marker = "custom_quantize_layers: {}"
    if marker not in text:
        raise YoloportError(f"{p}: unexpected hybrid quantization config (no empty custom_quantize_layers)")
    if layers:
        body = "custom_quantize_layers:\n" + "".join(f"    {_yaml_key(k)}: {v}\n" for k, v in layers.items())
        text = text.replace(marker + "\n", body, 1) if marker + "\n" in text else text.replace(marker, body.rstrip("\n"), 1)
        p.write_text(text)
    return layers


def _yaml_key(k: str) -> str:
    """A tensor name as a YAML key: plain when safe (``/model.0/conv/Conv_output_0``), else quoted."""
    return k if re.fullmatch(r"[A-Za-z0-9_./-]+", k) and k[0] != "-" else "'" + k.replace("'", "''") + "'"


@contextlib.contextmanager
def _cwd(path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


# ----------------------------------------------------------------------------- building


@dataclass
class BuildRecipe:
    """Everything that makes one RKNN model: paths are inside the artifact's build folder."""

    onnx: Path
    q: dict
    dataset: Path | None
    work: Path


def base_tensor_name(name: str) -> str:
    """A cfg tensor name without the toolkit's reshape suffix (``out2-rs``, ``..._output_0_rs``)."""
    return re.sub(r"(-rs|_rs)$", "", name)


def hybrid_layers_for(recipe: BuildRecipe, cfg_text: str) -> dict:
    """The ``{tensor: dtype}`` written into ``custom_quantize_layers``: ``head_fp32`` and ``exclude``
    tensors in float16 (every cfg tensor whose name, less the toolkit's ``-rs`` suffix, is one of
    them), then the user's ``hybrid`` entries (which win)."""
    available = cfg_tensor_names(cfg_text)
    wanted = set(head_tensors(recipe.onnx, recipe.q["head_fp32"]) + excluded_tensors(recipe.onnx, recipe.q["exclude"]))
    layers = {t: "float16" for t in available if base_tensor_name(t) in wanted}
    layers.update(match_layers(recipe.q["hybrid"], available))
    return layers


def needs_hybrid(recipe: BuildRecipe) -> bool:
    q = recipe.q
    if not q["do_quantization"]:
        return False
    return bool(q["hybrid"] or q["exclude"] or head_tensors(recipe.onnx, q["head_fp32"]))


def make_rknn(recipe: BuildRecipe, log: ToolkitLog):
    """Build an RKNN object from the recipe (float, int8, or int8 hybrid via step1/step2); returns
    ``(rknn, info)`` with the hybrid layers actually used."""
    RKNN = _import_rknn()
    q = recipe.q
    info: dict = {"hybrid_layers": {}}
    with quiet(log):
        rk = RKNN(verbose=False)
    try:
        call("config", rk.config, log=log, **config_kwargs(q))
        call("load_onnx", rk.load_onnx, log=log, model=str(recipe.onnx))
        if not needs_hybrid(recipe):
            call("build", rk.build, log=log, do_quantization=q["do_quantization"], dataset=str(recipe.dataset) if recipe.dataset else None)
            return rk, info
        hdir = recipe.work / "hybrid"
        if hdir.exists():
            shutil.rmtree(hdir)
        hdir.mkdir(parents=True)
        with _cwd(hdir):
            call("hybrid_quantization_step1", rk.hybrid_quantization_step1, log=log, dataset=str(recipe.dataset), proposal=False)
        stem = recipe.onnx.stem
        cfg = hdir / f"{stem}.quantization.cfg"
        if not cfg.is_file():
            raise YoloportError(f"rknn hybrid_quantization_step1 wrote no {cfg.name} in {hdir}")
        info["hybrid_layers"] = edit_hybrid_cfg(cfg, hybrid_layers_for(recipe, cfg.read_text()))
        with quiet(log):
            rk.release()
            rk = RKNN(verbose=False)
        call("config", rk.config, log=log, **config_kwargs(q))
        call(
            "hybrid_quantization_step2", rk.hybrid_quantization_step2, log=log,
            model_input=str(hdir / f"{stem}.model"), data_input=str(hdir / f"{stem}.data"), model_quantization_cfg=str(cfg),
        )
        return rk, info
    except BaseException:
        with contextlib.suppress(Exception), quiet(log):
            rk.release()
        raise


def write_dataset(calibration, work: Path, input_hw) -> Path:
    """Letterboxed calibration inputs as PNGs of the network size + RKNN's ``dataset.txt``."""
    from ..data.calibration import write_list_file, write_preprocessed

    calib = calibration if tuple(calibration.img_size_hw) == tuple(input_hw) else calibration.with_size(tuple(input_hw))
    pngs = write_preprocessed(calib, work / "calib", fmt="png")
    return write_list_file(pngs, work / "dataset.txt")


# The simulator object made by build(), reused by load() in the same process (a rebuild costs time).
_LIVE: dict = {}


def build(model, onnx_path, head: HeadSpec, out_dir, calibration, qconfig: dict | None = None) -> Path:
    """Build ``out_dir/model.rknn`` from ``onnx_path`` (not modified); returns the artifact path.

    Float (``precision`` fp16/fp32, computed in float16) or int8 (calibrated on ``calibration``'s
    letterboxed images). ``out_dir/model.rknn.build/`` keeps the source ONNX, calibration PNGs,
    ``dataset.txt``, hybrid files and the toolkit's log, so the simulator can rebuild the model.
    """
    out_dir = Path(out_dir).resolve()  # the toolkit runs hybrid steps inside the build folder
    out_dir.mkdir(parents=True, exist_ok=True)
    q = resolve_qconfig(qconfig, calibration is not None)
    if head.mode == "end2end":
        raise YoloportError(
            "RKNN cannot run the end2end head (ONNX NonMaxSuppression makes the graph dynamic): export "
            "raw or split and let yoloport decode + NMS on the host"
        )
    if q["do_quantization"] and calibration is None:
        raise YoloportError("int8 RKNN needs calibration images (--calib)")
    shape = onnx_input_shape(onnx_path)
    if shape[0] != 1:
        raise YoloportError(f"export the ONNX with batch 1 for RKNN (got batch {shape[0]}); the runner loops over a batch")
    input_hw = (shape[2], shape[3])
    artifact = out_dir / ARTIFACT_NAME
    work = out_dir / (ARTIFACT_NAME + ".build")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    src = work / "source.onnx"
    shutil.copyfile(onnx_path, src)
    dataset = write_dataset(calibration, work, input_hw) if q["do_quantization"] else None
    recipe = BuildRecipe(src, q, dataset, work)
    log = ToolkitLog()
    t0 = time.perf_counter()
    try:
        rk, info = make_rknn(recipe, log)
        tmp = out_dir / (ARTIFACT_NAME + ".tmp")
        call("export_rknn", rk.export_rknn, str(tmp), log=log)
        tmp.replace(artifact)
    finally:
        (work / "toolkit.log").write_text(log.text)
    build_s = time.perf_counter() - t0
    _LIVE[_live_key(artifact)] = rk
    from .registry import sidecar_info

    extra = {
        "platform": q["platform"],
        "precision": "int8" if q["do_quantization"] else "fp16",
        "rknn": {
            "toolkit_version": _toolkit_version(),
            "config": config_kwargs(q),
            "do_quantization": q["do_quantization"],
            "hybrid_layers": info["hybrid_layers"],
            "build_dir": work.name,
            "source_onnx": f"{work.name}/source.onnx",
            "dataset": f"{work.name}/dataset.txt" if dataset else None,
            "runtime_input": "uint8 RGB NHWC 0..255 (normalisation /255 inside the model)",
            "simulator": "rebuilt from source_onnx + config + dataset at load (a .rknn file runs only on a board)",
            "build_seconds": round(build_s, 2),
        },
    }
    write_sidecar(artifact, sidecar_info(NAME, model, head, input_hw, 1, calibration, q, **extra))
    return artifact


def _toolkit_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("rknn-toolkit2")
    except Exception:
        return None


def _live_key(artifact) -> tuple:
    p = Path(artifact).resolve()
    st = p.stat()
    return (str(p), st.st_size, st.st_mtime_ns)


# ----------------------------------------------------------------------------- runner


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
        from .registry import check_input

        x = self.to_runtime_input(check_input(images, self.input_hw, NAME))
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
    (``target``, optional ``device_id``; the ``.rknn`` itself is loaded)."""
    artifact = Path(artifact)
    info = read_sidecar(artifact, expect_backend=NAME, expect_fingerprint=model_fingerprint(model) if model is not None else None)
    head = HeadSpec.from_dict(info["head"])
    rinfo = info.get("rknn") or {}
    stride = int(max(head.strides)) if head.strides else 32
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
    key = _live_key(artifact)
    rk = _LIVE.pop(key, None)
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
    return RknnRunner(rk, head, info["input_hw"], target=None, platform=info.get("platform"), stride=stride, log=log)


# ----------------------------------------------------------------------------- accuracy analysis


@dataclass
class LayerError:
    """One row of the toolkit's ``error_analysis.txt``: a tensor's error against the float golden."""

    op: str
    name: str
    entire_cos: float
    entire_euc: float
    single_cos: float
    single_euc: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


_ROW = re.compile(r"^\[(?P<op>[^\]]+)\]\s+(?P<name>\S+)\s+(?P<ec>[-\d.eE+]+)\s*\|\s*(?P<ee>[-\d.eE+a-z]+)\s+(?P<sc>[-\d.eE+]+)\s*\|\s*(?P<se>[-\d.eE+a-z]+)")


def parse_error_analysis(text: str) -> list[LayerError]:
    """``error_analysis.txt`` -> rows (op type, tensor name, entire/single cosine and euclidean)."""
    rows = []
    for line in text.splitlines():
        m = _ROW.match(line.strip())
        if m:
            rows.append(LayerError(m["op"], m["name"], float(m["ec"]), _float(m["ee"]), float(m["sc"]), _float(m["se"])))
    return rows


def _float(s: str) -> float:
    try:
        return float(s)
    except ValueError:
        return float("nan")


def worst_layers(rows: list[LayerError], k: int = 10, key: str = "single_cos") -> list[LayerError]:
    """The ``k`` tensors with the lowest ``key`` cosine (``single_cos``: the layer's own error)."""
    return sorted(rows, key=lambda r: getattr(r, key))[:k]


def accuracy_analysis(artifact, images: list, output_dir, model=None) -> list[LayerError]:
    """Run the toolkit's ``accuracy_analysis`` (simulator) on ``images`` (paths of original images;
    they are letterboxed to the artifact's input size first) and return its per-tensor rows.

    The model is rebuilt from the artifact's recipe (the analysis needs the build-time RKNN object).
    """
    import cv2

    from ..data.letterbox import preprocess

    from ..data.sources import require_image

    artifact = Path(artifact)
    info = read_sidecar(artifact, expect_backend=NAME, expect_fingerprint=model_fingerprint(model) if model is not None else None)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    inputs = []
    for i, p in enumerate(images):
        im = require_image(p)
        chw, _ = preprocess(im, tuple(info["input_hw"]), auto=False)
        dst = out / f"input_{i}.png"
        cv2.imwrite(str(dst), np.clip(np.rint(chw.transpose(1, 2, 0)[:, :, ::-1] * 255), 0, 255).astype(np.uint8))
        inputs.append(str(dst))
    rinfo = info.get("rknn") or {}
    work = artifact.parent / rinfo.get("build_dir", ARTIFACT_NAME + ".build")
    ds = rinfo.get("dataset")
    q = resolve_qconfig(info.get("qconfig"), calibrated=bool(ds))
    log = ToolkitLog()
    rk, _ = make_rknn(BuildRecipe(artifact.parent / rinfo["source_onnx"], q, artifact.parent / ds if ds else None, work), log)
    try:
        call("accuracy_analysis", rk.accuracy_analysis, log=log, inputs=inputs, output_dir=str(out / "snapshot"))
    finally:
        with contextlib.suppress(Exception), quiet(log):
            rk.release()
        (out / "toolkit.log").write_text(log.text)
    f = out / "snapshot" / "error_analysis.txt"
    if not f.is_file():
        raise YoloportError(f"rknn accuracy_analysis wrote no {f}")
    return parse_error_analysis(f.read_text())


def format_layer_table(rows: list[LayerError], k: int = 10) -> str:
    """The ``k`` worst layers as a text table (single-layer cosine first)."""
    lines = [f"{'tensor':<48} {'op':<14} {'cos(single)':>11} {'cos(entire)':>11} {'euc(single)':>12}"]
    for r in worst_layers(rows, k):
        lines.append(f"{r.name[:48]:<48} {r.op[:14]:<14} {r.single_cos:>11.5f} {r.entire_cos:>11.5f} {r.single_euc:>12.5f}")
    return "\n".join(lines)
