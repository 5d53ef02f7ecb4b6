"""Quantization-aware fine-tuning from a checkpoint to a backend artifact, in one call: :func:`qat_port`.

The steps (each one the project's own room):

1. the calibration images (:func:`yoloport.data.calibration.load_calibration`; default the data's
   ``train`` split), refused when they share an image (by content) with the ``val`` split the run
   reports on;
2. :func:`yoloport.engine.train.train` - the training loop itself - with a
   :class:`yoloport.quant.qat.QatHook`: the model is wrapped with fake quantization on the backend's
   grid (:func:`yoloport.quant.qat.scheme_for` its ``BackendSpec``), the grids start from the PTQ
   ranges of the calibration images, and the loop fine-tunes weights and grids for a few epochs at a
   low learning rate (no warm-up, one optimiser step per batch, no anchor change). Each epoch's
   ``last.safetensors`` holds the float weights with the learned grids in its metadata (``qat``);
   With ``objective="distill"`` step 2 is :func:`yoloport.quant.qat_distill.distill_to_checkpoint`
   instead: no labels, no training loop; the fake-quantized model learns to reproduce the float
   model's raw outputs on the calibration images themselves (the data's ``train`` split is not read);
3. the artifact from the **last** epoch (never the "best" one: that would select on the images
   reported on): the float graph exported in the backend's convention, the learned grids put into
   it as QuantizeLinear/DequantizeLinear pairs (:func:`yoloport.deploy.qdq_export.insert_qdq`) for
   backends that run ONNX, then the backend's ``build_prequantized``
   (:func:`yoloport.backends.registry.build_prequantized`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import YoloportError
from ..data.letterbox import input_multiple

# QAT's changes to YOLOv5's hyp.scratch-low: a low learning rate from the first step (no warm-up: its
# 0.1 bias learning rate would undo a trained model), decaying linearly to a tenth. 5e-5: of 5e-5 and 5e-4
# measured (benchmarks/bench_qat.py), 5e-4 left yolov5n 1.6 points worse than 5e-5.
QAT_HYP = {"lr0": 5e-5, "lrf": 0.1, "warmup_epochs": 0.0, "warmup_bias_lr": 5e-5, "warmup_momentum": 0.937}
OBJECTIVES = ("labels", "distill")  # what the fine-tuning learns from: the data's labels, or the float model


@dataclass
class QatResult:
    """What :func:`qat_port` made: the artifact, the training run and the grids it learned."""

    artifact: Path
    backend: str
    checkpoint: Path
    train_dir: Path
    scheme: dict
    epochs_completed: int
    metrics: dict  # the fake-quantized model on the data's val split after the last epoch
    calibration: dict
    ptq_metrics: dict | None = None
    qdq_onnx: Path | None = None
    qdq: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    objective: str = "labels"
    distill: dict | None = None  # objective distill: what quant.qat_distill.distill recorded

    def to_dict(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}


def shared_images(a, b) -> list[str]:
    """Paths of ``b`` whose content (sha256, :func:`yoloport.data.protocol.file_sha256`) is also an image of ``a``."""
    from ..data.protocol import file_sha256

    seen = {file_sha256(p) for p in a}
    return [str(p) for p in b if file_sha256(p) in seen]


def _hyp(lr0: float | None, hyp) -> dict:
    """:data:`QAT_HYP` updated by ``hyp`` (a YAML path or a dict of hyperparameters) and ``lr0``; the
    training loop fills in the rest from YOLOv5's defaults and refuses unknown keys."""
    extra = {}
    if isinstance(hyp, dict):
        extra = dict(hyp)
    elif hyp is not None:
        from ..config import read_yaml

        extra = read_yaml(hyp, "hyperparameter YAML")
        if not isinstance(extra, dict):
            raise YoloportError(f"hyperparameter YAML {hyp} is not a mapping")
    base = {**QAT_HYP, **extra}
    if lr0 is not None:
        if not lr0 > 0:
            raise YoloportError(f"--lr0 must be > 0, got {lr0}")
        base.update(lr0=float(lr0), warmup_bias_lr=float(lr0))
    return base


def qat_port(weights, data, backend: str, out, *, calib=None, calib_n: int = 64, calib_seed: int = 0,
             epochs: int = 3, batch_size: int = 8, img_size_hw=(640, 640), lr0: float | None = None, hyp=None,
             qconfig: dict | None = None, device: str = "cpu", workers: int = 2, seed: int = 0,
             time_limit_s: float | None = None, progress: bool = False, objective: str = "labels",
             distill: dict | None = None, log=print) -> QatResult:
    """Fine-tune ``weights`` on ``data`` (a data YAML: ``train`` to learn from, ``val`` to report on)
    with fake quantization on ``backend``'s int8 grid, then build its artifact into ``out`` (an
    existing, empty folder: the caller claims it). ``qconfig``: the backend options that shape the
    scheme and the build (``head_fp32``, ``per_channel``, its own keys). ``img_size_hw``: the fixed
    ``(h, w)`` of calibration, training and the artifact. ``objective``: ``labels`` (the training loop on
    the train split; ``epochs``, ``batch_size``, ``lr0``, ``hyp``, ``time_limit_s`` apply) or ``distill``
    (match the float model on the calibration images; ``distill``: a dict of
    :class:`~yoloport.quant.qat_distill.DistillSettings` fields; ``lr0`` and ``seed`` fill the ones it leaves
    out, ``batch_size`` is the label loop's). Returns a :class:`QatResult`."""
    from ..backends.registry import (build_prequantized, canonical_name, export_for,
                                     require_artifact_backend)
    from ..data.calibration import load_calibration
    from ..data.dataset import list_images, load_data_yaml
    from ..io.checkpoint import read_checkpoint
    from ..models import load_model, model_from_state
    from ..quant.qat import PrequantizedModel, ranges_from_checkpoint, scheme_for

    key = canonical_name(backend)
    spec = require_artifact_backend(key, "quantize")
    qconfig = {k: v for k, v in dict(qconfig or {}).items() if v is not None}
    spec.check_qconfig_keys(qconfig)
    scheme = scheme_for(spec, qconfig)
    if int(epochs) < 1:
        raise YoloportError(f"--epochs must be >= 1, got {epochs}")
    if objective not in OBJECTIVES:
        raise YoloportError(f"QAT objective {objective!r}: choose one of {', '.join(OBJECTIVES)}")
    if distill and objective != "distill":
        raise YoloportError("distillation settings were given, but the QAT objective is 'labels'")
    distill_settings = None
    if objective == "distill":
        if hyp is not None or time_limit_s is not None:
            raise YoloportError("--hyp and --time-limit shape the label training loop; the distillation objective "
                                "takes its own settings (steps, batch size, learning rates)")
        from ..quant.qat_distill import DistillSettings

        given = {k: v for k, v in dict(distill or {}).items() if v is not None}
        distill_settings = DistillSettings.from_options({"lr": lr0, "seed": int(seed), **given})
    cfg = load_data_yaml(data)
    val_images = list_images(cfg.split("val"))
    train_images = list_images(cfg.split("train"))
    model = load_model(weights)
    stride = input_multiple(model.stride)
    warnings: list[str] = []
    calibration = load_calibration(calib or f"{data}:train", n=calib_n, img_size_hw=tuple(img_size_hw), stride=stride,
                                   seed=calib_seed, warn=lambda m: warnings.append(m))
    overlap = shared_images(val_images, calibration.paths)
    if overlap:
        raise YoloportError(f"{len(overlap)} calibration image(s) are also in the val split the run reports on "
                            f"(first: {overlap[0]}): calibrate on other images (--calib)")
    if shared_images(val_images, train_images):
        warnings.append("the data's train and val splits share images: the val metrics of the fine-tuned model "
                        "are measured on images it trained on")
    for w in warnings:
        log(f"warning: {w}")
    out = Path(out)
    if objective == "distill":
        from ..quant.qat_distill import distill_to_checkpoint

        res = distill_to_checkpoint(model, scheme, calibration, distill_settings, out / "distill", log=log)
        res.update(epochs_completed=0, metrics={})
    else:
        res = _train_with_labels(data, weights, scheme, calibration, out, epochs, batch_size, img_size_hw, lr0, hyp,
                                 device, workers, seed, time_limit_s, progress, log)
    if not res.get("last"):
        raise YoloportError("the fine-tuning saved no weights")
    tensors, meta = read_checkpoint(res["last"])
    saved_scheme, ranges = ranges_from_checkpoint(meta)
    tuned = model_from_state(meta["yaml"], tensors, names=meta.get("names"), stride=meta.get("stride"))
    tuned.img_size = tuple(img_size_hw)
    tuned.source = str(res["last"])
    from ..deploy.qdq_export import MIN_OPSET, insert_qdq

    opset = max(int(spec.export_opset or 0), MIN_OPSET) if spec.runs_onnx else None
    export = export_for(key, tuned, out / "model.fp32.onnx", tuple(img_size_hw), mode=None, opset=opset)
    qdq_path, qdq = None, {}
    if spec.runs_onnx:

        qdq_path = out / "model.qdq.onnx"
        qdq = insert_qdq(export.path, qdq_path, ranges)
    info = {"train_dir": res["save_dir"], "checkpoint": res["last"], "epochs": res["epochs_completed"],
            "base_weights": str(weights), "objective": objective}
    if res.get("distill"):
        info["distill"] = {k: res["distill"][k] for k in ("settings", "images", "steps", "seconds", "loss_first",
                                                         "loss_last")}
    pre = PrequantizedModel(ranges, saved_scheme, qdq_path, calibration, info)
    artifact = build_prequantized(key, tuned, export, out, pre, qconfig)
    return QatResult(artifact=artifact, backend=key, checkpoint=Path(res["last"]), train_dir=Path(res["save_dir"]),
                     scheme=saved_scheme.to_dict(), epochs_completed=int(res["epochs_completed"]),
                     metrics=dict(res.get("metrics") or {}), calibration=calibration.to_dict(),
                     qdq_onnx=qdq_path, qdq=qdq, warnings=warnings, objective=objective, distill=res.get("distill"))


def _train_with_labels(data, weights, scheme, calibration, out: Path, epochs, batch_size, img_size_hw, lr0, hyp,
                       device, workers, seed, time_limit_s, progress, log) -> dict:
    """The label objective: :func:`yoloport.engine.train.train` with a :class:`~yoloport.quant.qat.QatHook`
    (run folder ``out/train``); returns the loop's result (``last``, ``save_dir``, ``epochs_completed``,
    ``metrics``)."""
    from ..engine.train import train
    from ..quant.qat import QatHook

    hook = QatHook(scheme, calibration, log=log)
    settings = dict(data=str(data), weights=str(weights), epochs=int(epochs), batch_size=int(batch_size),
                    img_size=[int(img_size_hw[1]), int(img_size_hw[0])], hyp=_hyp(lr0, hyp), device=device,
                    workers=int(workers), seed=int(seed), project=str(out), name="train", noautoanchor=True,
                    noplots=True, nbs=int(batch_size), warmup_min_iters=0, progress=bool(progress),
                    time_limit_s=time_limit_s)
    return train(settings, hook=hook)
