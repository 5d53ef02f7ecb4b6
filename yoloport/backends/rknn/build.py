"""Building an ``.rknn`` (float, int8, or int8 hybrid) and keeping what rebuilds it for the simulator."""
from __future__ import annotations

import atexit
import contextlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ...deploy.onnx_graph import conv_map
from ..._version import package_version
from ...errors import YoloportError
from ...ops.postprocess import HeadSpec
from ...quant.float_scope import FloatScope
from ..base import write_sidecar
from .hybrid import base_tensor_name, cfg_tensor_names, edit_hybrid_cfg, excluded_tensors, float_layer_hybrid, head_tensors, match_layers
from .options import ARTIFACT_NAME, NAME, config_kwargs, resolve_qconfig
from .toolkit import ToolkitLog, _cwd, _import_rknn, call, quiet


def onnx_input_shape(onnx_path) -> list[int]:
    """The fixed ``[B, 3, H, W]`` of the graph's first input."""
    import onnx

    m = onnx.load(str(onnx_path), load_external_data=False)
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in m.graph.input[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or min(dims) <= 0:
        raise YoloportError(f"{onnx_path}: RKNN needs a fixed [B, 3, H, W] input, the graph has {dims}")
    return dims


@dataclass
class BuildRecipe:
    """Everything that makes one RKNN model: paths are inside the artifact's build folder; ``batch``: the
    images per ``inference`` call compiled in (``rknn_batch_size``; the graph itself has batch 1)."""

    onnx: Path
    q: dict
    dataset: Path | None
    work: Path
    batch: int = 1


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
    batch_size = recipe.batch if recipe.batch > 1 else None  # the toolkit's default (None) is batch 1
    info: dict = {"hybrid_layers": {}}
    with quiet(log):
        rk = RKNN(verbose=False)
    try:
        call("config", rk.config, log=log, **config_kwargs(q))
        call("load_onnx", rk.load_onnx, log=log, model=str(recipe.onnx))
        if not needs_hybrid(recipe):
            call("build", rk.build, log=log, do_quantization=q["do_quantization"],
                 dataset=str(recipe.dataset) if recipe.dataset else None, rknn_batch_size=batch_size)
            return rk, info
        hdir = recipe.work / "hybrid"
        if hdir.exists():
            shutil.rmtree(hdir)
        hdir.mkdir(parents=True)
        with _cwd(hdir):
            call("hybrid_quantization_step1", rk.hybrid_quantization_step1, log=log, dataset=str(recipe.dataset),
                 rknn_batch_size=batch_size, proposal=False)
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
    from ...data.calibration import write_list_file, write_preprocessed

    calib = calibration if tuple(calibration.img_size_hw) == tuple(input_hw) else calibration.with_size(tuple(input_hw))
    pngs = write_preprocessed(calib, work / "calib", fmt="png")
    return write_list_file(pngs, work / "dataset.txt")


# Simulator objects reused by load() in the same process, by artifact (path, size, mtime): the one build()
# made, and the one the last closed simulator runner handed back (its runtime already initialised). A rebuild
# costs 20 s (yolov5s, normal) to 40 min (mmse); validation then compare, or two reporting sets, load twice.
@dataclass
class LiveSimulator:
    rk: object
    runtime_ready: bool  # init_runtime(target=None) done


_LIVE: dict = {}
KEEP_READY = 1  # ready simulators kept after their runner closes (each holds a built model in memory)


def take_live(artifact) -> "LiveSimulator | None":
    """The simulator object kept for ``artifact`` (as it is now on disk), removed from the pool; None when there
    is none. Objects kept for an earlier version of the same file (rewritten since) are released."""
    key = _live_key(artifact)
    for old in [k for k in _LIVE if k[0] == key[0] and k != key]:
        release(_LIVE.pop(old).rk)
    return _LIVE.pop(key, None)


def hand_back(key: tuple, rk) -> None:
    """Keep ``rk`` (a simulator whose runtime is initialised) for the next load of the artifact ``key`` names,
    releasing the oldest ready ones beyond :data:`KEEP_READY`. An artifact rewritten or removed since ``key`` was
    taken is no longer the model ``rk`` runs: ``rk`` is released, not kept (no later load could match it)."""
    if not _still_on_disk(key):
        release(rk)
        return
    ready = [k for k, v in _LIVE.items() if v.runtime_ready and k != key]
    for k in ready[: max(0, len(ready) - KEEP_READY + 1)]:
        release(_LIVE.pop(k).rk)
    _LIVE[key] = LiveSimulator(rk, True)


def release(rk) -> None:
    """``rk.release()``, quietly (the toolkit prints; a failed release leaves nothing to do)."""
    with contextlib.suppress(Exception), quiet(ToolkitLog()):
        rk.release()


@atexit.register
def _release_kept() -> None:
    while _LIVE:
        release(_LIVE.popitem()[1].rk)


def build(model, onnx_path, head: HeadSpec, out_dir, calibration, qconfig: dict | None = None) -> Path:
    """Build ``out_dir/model.rknn`` from ``onnx_path`` (not modified); returns the artifact path.

    Float (``precision`` fp16/fp32, computed in float16) or int8 (calibrated on ``calibration``'s
    letterboxed images). ``qconfig['batch']`` N > 1 compiles N images per inference call into the
    ``.rknn`` (``rknn_batch_size``) from the batch-1 graph; the default is 1, what a board runs per frame. ``out_dir/model.rknn.build/`` keeps the source ONNX, calibration PNGs,
    ``dataset.txt``, hybrid files and the toolkit's log, so the simulator can rebuild the model.
    """
    out_dir = Path(out_dir).resolve()  # the toolkit runs hybrid steps inside the build folder
    out_dir.mkdir(parents=True, exist_ok=True)
    q = resolve_qconfig(qconfig, calibration is not None)
    layers = FloatScope.from_any(q["float_scope"]).layers
    if layers:  # the float scope's convolutions -> hybrid tensors (the user's own entries win)
        dtype = FloatScope.from_any(q["float_scope"]).dtype
        q["hybrid"] = {**float_layer_hybrid(layers, *conv_map(onnx_path, layers), dtype=dtype), **q["hybrid"]}
    if head.mode == "end2end":
        raise YoloportError(
            "RKNN cannot run the end2end head (ONNX NonMaxSuppression makes the graph dynamic): export "
            "raw or split and let yoloport decode + NMS on the host"
        )
    if q["do_quantization"] and calibration is None:
        raise YoloportError("int8 RKNN needs calibration images (--calib)")
    shape = onnx_input_shape(onnx_path)
    if shape[0] != 1:
        raise YoloportError(f"export the ONNX with batch 1 for RKNN (got batch {shape[0]}); a batch of N images per "
                            "call is compiled from it (qconfig batch N, rknn_batch_size)")
    input_hw = (shape[2], shape[3])
    artifact = out_dir / ARTIFACT_NAME
    work = out_dir / (ARTIFACT_NAME + ".build")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    src = work / "source.onnx"
    shutil.copyfile(onnx_path, src)
    dataset = write_dataset(calibration, work, input_hw) if q["do_quantization"] else None
    recipe = BuildRecipe(src, q, dataset, work, q["batch"])
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
    _LIVE[_live_key(artifact)] = LiveSimulator(rk, False)
    from ..registry import sidecar_info

    client_files = write_convention_files(out_dir, head, input_hw, int(q["batch"]))

    extra = {
        "platform": q["platform"],
        "precision": "int8" if q["do_quantization"] else "fp16",
        "rknn": {
            "toolkit_version": package_version("rknn-toolkit2"),
            "config": config_kwargs(q),
            "do_quantization": q["do_quantization"],
            "rknn_batch_size": q["batch"],
            "hybrid_layers": info["hybrid_layers"],
            "build_dir": work.name,
            "source_onnx": f"{work.name}/source.onnx",
            "dataset": f"{work.name}/dataset.txt" if dataset else None,
            "runtime_input": runtime_input(int(q["batch"])),
            "simulator": "rebuilt from source_onnx + config + dataset at load (a .rknn file runs only on a board)",
            "build_seconds": round(build_s, 2),
        },
        "convention": head.convention,
        "client_files": client_files,
    }
    write_sidecar(artifact, sidecar_info(NAME, model, head, input_hw, q["batch"], calibration, q, **extra))
    return artifact


RUNTIME_INPUT = "uint8 RGB NHWC 0..255 (normalisation /255 inside the model)"


def runtime_input(batch: int = 1) -> str:
    """What the ``.rknn`` takes per inference call, as its client README says: :data:`RUNTIME_INPUT`, with
    the compiled batch when it is more than one image."""
    return RUNTIME_INPUT if batch == 1 else f"{batch} images per call ([{batch}, H, W, 3]), {RUNTIME_INPUT}"


def write_convention_files(out_dir: Path, head: HeadSpec, input_hw, batch: int = 1) -> dict:
    """What the client of the head's convention reads next to the ``.rknn`` (rknn_model_zoo: anchors
    file, class names, README with the command and, for a batch-N build, the batch it takes);
    ``{}`` for a convention without client files."""
    from ...deploy.conventions import CONVENTIONS, write_client_files
    from ...deploy.onnx_meta import PREPROCESS

    conv = CONVENTIONS.get(head.convention or "")
    if conv is None or not (conv.anchors_file or conv.names_file):
        return {}
    return write_client_files(conv, out_dir, ARTIFACT_NAME, head, input_hw, PREPROCESS, runtime_input(batch))


def _live_key(artifact) -> tuple:
    p = Path(artifact).resolve()
    st = p.stat()
    return (str(p), st.st_size, st.st_mtime_ns)


def _still_on_disk(key: tuple) -> bool:
    """Whether the artifact ``key`` (from :func:`_live_key`) names is still that file, unchanged."""
    try:
        return _live_key(key[0]) == key
    except OSError:
        return False


def build_prequantized(model, onnx_path, head: HeadSpec, out_dir, prequantized, qconfig: dict | None = None) -> Path:
    """``out_dir/model.rknn`` of a quantization-aware fine-tuned model, from its QDQ graph.

    rknn-toolkit2 2.5 takes a QDQ ONNX as a pre-quantized model (checked on the installed toolkit:
    ``load_onnx`` says "The QAT model is loaded" and ``build(do_quantization=False)`` keeps the
    pairs' scales and zero points: the convolutions run in int8 on the learned grids, tensors
    without a pair - the adds, concatenations and pooling between them - in float16). So this is
    :func:`build` of ``prequantized.qdq_onnx`` without the toolkit's own quantization (the simulator
    rebuilds it the same way), at ``optimization_level`` 2 unless given (the toolkit warns that
    level 3 passes change a QAT model's accuracy). ``onnx_path``: the float source, recorded."""
    from ..base import read_sidecar

    if prequantized.qdq_onnx is None:
        raise YoloportError("rknn: a pre-quantized build needs the QDQ graph of the fine-tuned model")
    q = {k: v for k, v in dict(qconfig or {}).items() if k not in ("precision", "hybrid", "exclude", "float_scope")}
    q.setdefault("optimization_level", 2)
    artifact = build(model, prequantized.qdq_onnx, head, out_dir, None, {**q, "precision": "fp16"})
    info = read_sidecar(artifact)
    info.pop("integrity", None)
    info.update(precision="int8", calibration=prequantized.calibration.to_dict() if prequantized.calibration else None,
                quantization={**prequantized.sidecar_record(),
                              "rknn": "QDQ graph loaded as a pre-quantized model, build(do_quantization=False)",
                              "float_source_onnx": str(onnx_path)})
    write_sidecar(artifact, info)
    return artifact
