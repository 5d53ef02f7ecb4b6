"""Quantization-aware fine-tuning by distillation from the float model (issue 11 item 4).

The label objective (:class:`yoloport.quant.qat.QatHook` in the training loop) fine-tunes the
fake-quantized network on labelled, augmented images; with a few dozen images it pulls the network away
from what the float model knew. Here the float model itself is the target:

- the **teacher** is the float ``DetectionModel`` (a frozen copy, eval mode, no gradients);
- the **student** is the same model wrapped for QAT (:func:`~yoloport.quant.qat.wrap_for_qat`, grids
  started from the PTQ ranges of the calibration images) run in eval mode, so every BatchNorm keeps its
  running statistics (QAT layers fold them frozen; layers kept in float never update them either);
- both see the same letterboxed calibration images (:class:`~yoloport.data.calibration.CalibrationSet`,
  the one preprocessing path), optionally flipped left-right (the one augmentation: no labels, no
  mosaic), so no label and no reporting image is needed;
- the loss (:func:`distill_loss`) compares the raw Detect outputs ``[B, na, H, W, 5 + nc]`` level by
  level after the sigmoid every decode applies: objectness as a Bernoulli KL divergence on every cell,
  box (``xywh`` sigmoids) as a squared error and classes as a Bernoulli KL divergence, both weighted by
  the teacher's objectness (cells where the teacher sees nothing do not steer boxes or classes). Every
  term is 0 exactly when the student's outputs equal the teacher's;
- Adam for the float parameters (convolution weights and biases, BatchNorm affine) at a small learning
  rate, and :class:`GridAdam` for the learned grids (LSQ scales and zero points, the ``qat_``
  parameters) in relative units: scales from 1e-4 (weights) to 1e-1 (activations) cannot share one
  absolute Adam step (Adam's step is about its learning rate whatever the gradient: 1e-4 a step wipes
  out a weight scale of 1e-3 in ten steps, measured), so a scale moves in log space, by about
  ``grid_lr`` of itself per step. Both rates decay linearly to ``lr_final`` of their start.

:func:`distill` runs it in place on the wrapped model and returns a record of what it did; the caller
(:func:`yoloport.analysis.qat.qat_port` with ``objective="distill"``) saves and exports the result like a
label-trained QAT model.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import YoloportError
from .qat import QAT_PREFIX, ActQuant, WeightQuant

EPS = 1e-7  # probabilities are clipped to [EPS, 1 - EPS] inside the KL terms


START_RULES = {"ptq": {}, "minmax": {"preact": "minmax", "symmetric": "max"}}  # DistillSettings.start -> init_ranges


@dataclass(frozen=True)
class DistillSettings:
    """How the student is trained.

    - ``steps``: optimiser steps (one batch each; the calibration images cycle in a seeded order);
    - ``batch_size``: images per step;
    - ``lr``: Adam learning rate of the float parameters (weights, biases, BatchNorm affine);
    - ``grid_lr``: relative learning rate of the learned grids (:class:`GridAdam`: a scale moves by about
      ``grid_lr`` of itself per step, a zero point by about ``grid_lr`` of its code range);
    - ``lr_final``: the learning rates end at this fraction of their start (linear decay);
    - ``flip``: flip each image left-right with probability 1/2 (the same input for teacher and student);
    - ``box_gain`` / ``cls_gain`` / ``obj_gain``: weights of the three terms of :func:`distill_loss`;
    - ``seed``: the image order and flips;
    - ``start``: where the grids start: ``ptq`` (the backend's PTQ default rules, :func:`~yoloport.quant.qat.init_ranges`'s
      defaults) or ``minmax`` (every grid at its tensor's MinMax or ``max |x|``, the start before sessions 8 and 9).
    """

    steps: int = 64  # measured: yolov5n 640, 128 images, 2 passes (docs/notes/2026-11-30-qat-distill.md)
    batch_size: int = 4
    lr: float = 1e-5
    grid_lr: float = 1e-3
    lr_final: float = 0.1
    flip: bool = True
    box_gain: float = 1.0
    cls_gain: float = 1.0
    obj_gain: float = 1.0
    seed: int = 0
    start: str = "ptq"

    def __post_init__(self):
        if self.start not in START_RULES:
            raise YoloportError(f"distillation start must be one of {', '.join(START_RULES)}, got {self.start!r}")
        for k in ("steps", "batch_size"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise YoloportError(f"distillation {k} must be an integer >= 1, got {v!r}")
        for k in ("lr", "grid_lr"):
            v = getattr(self, k)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or not v > 0:
                raise YoloportError(f"distillation {k} must be a number > 0, got {v!r}")
        if not isinstance(self.lr_final, (int, float)) or not 0 < self.lr_final <= 1:
            raise YoloportError(f"distillation lr_final must be in (0, 1], got {self.lr_final!r}")
        gains = [self.box_gain, self.cls_gain, self.obj_gain]
        if any(not isinstance(g, (int, float)) or not math.isfinite(g) or g < 0 for g in gains) or not any(gains):
            raise YoloportError(f"distillation gains must be numbers >= 0, not all 0; got box {self.box_gain!r}, "
                                f"cls {self.cls_gain!r}, obj {self.obj_gain!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_options(cls, options: "DistillSettings | dict | None") -> "DistillSettings":
        """``options``: settings, ``None`` (the defaults) or a dict of some fields; unknown keys are refused."""
        if isinstance(options, cls):
            return options
        options = dict(options or {})
        unknown = sorted(set(options) - set(cls.__dataclass_fields__))
        if unknown:
            raise YoloportError(f"unknown distillation setting(s) {', '.join(unknown)} "
                                f"(known: {', '.join(cls.__dataclass_fields__)})")
        return cls(**{k: v for k, v in options.items() if v is not None})


# ----------------------------------------------------------------------------- the objective


def _bernoulli_kl(p_student: torch.Tensor, p_teacher: torch.Tensor) -> torch.Tensor:
    """Elementwise KL(teacher || student) of Bernoulli probabilities (>= 0, 0 where they are equal)."""
    ps = p_student.clamp(EPS, 1 - EPS)
    pt = p_teacher.clamp(EPS, 1 - EPS)
    return pt * torch.log(pt / ps) + (1 - pt) * torch.log((1 - pt) / (1 - ps))


def distill_terms(student_raw: list[torch.Tensor], teacher_raw: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """The three terms of :func:`distill_loss`, each averaged over the levels (levels weigh the same).

    ``student_raw`` / ``teacher_raw``: per level ``[B, na, H, W, 5 + nc]`` raw head outputs (logits; the
    training-layout outputs of ``Detect``), the teacher's without gradient. Returns ``{box, cls, obj}``
    (scalar tensors): ``obj`` the mean Bernoulli KL of objectness over every cell; ``box`` the mean squared
    error of the four box sigmoids and ``cls`` the mean Bernoulli KL of the class sigmoids, both averaged
    with the teacher's objectness as weights."""
    if len(student_raw) != len(teacher_raw) or not student_raw:
        raise YoloportError(f"distillation: {len(student_raw)} student levels for {len(teacher_raw)} teacher levels")
    box, cls, obj = [], [], []
    for s, t in zip(student_raw, teacher_raw):
        if s.shape != t.shape:
            raise YoloportError(f"distillation: student output {tuple(s.shape)} vs teacher {tuple(t.shape)}")
        ps, pt = s.sigmoid(), t.detach().sigmoid()
        w = pt[..., 4:5]  # [B, na, H, W, 1] teacher objectness
        wsum = w.sum().clamp_min(EPS)
        obj.append(_bernoulli_kl(ps[..., 4], pt[..., 4]).mean())
        box.append(((ps[..., :4] - pt[..., :4]) ** 2 * w).sum() / (wsum * 4))
        if s.shape[-1] > 5:
            cls.append((_bernoulli_kl(ps[..., 5:], pt[..., 5:]) * w).sum() / (wsum * (s.shape[-1] - 5)))
    zero = student_raw[0].new_zeros(())
    return {"box": torch.stack(box).mean(), "cls": torch.stack(cls).mean() if cls else zero,
            "obj": torch.stack(obj).mean()}


def distill_loss(student_raw, teacher_raw, settings: DistillSettings | None = None) -> tuple[torch.Tensor, dict]:
    """``(loss, {box, cls, obj} as floats)``: the gain-weighted sum of :func:`distill_terms`."""
    s = settings or DistillSettings()
    terms = distill_terms(student_raw, teacher_raw)
    loss = s.box_gain * terms["box"] + s.cls_gain * terms["cls"] + s.obj_gain * terms["obj"]
    return loss, {k: float(v.detach()) for k, v in terms.items()}


# ----------------------------------------------------------------------------- the loop


def raw_outputs(model, x: torch.Tensor) -> list[torch.Tensor]:
    """The raw Detect levels ``[B, na, H, W, 5 + nc]`` of ``model`` (in eval mode: the second item of its
    forward)."""
    out = model(x)
    return list(out[1] if isinstance(out, tuple) else out)


def parameter_groups(model) -> tuple[list, list, list]:
    """``(float parameters, scales, (zero point, code range) pairs)`` of a wrapped model that require
    gradients; scales and zero points are the quantizers' (``qat_`` submodules)."""
    grid_ids = set()
    scales, zero_points = [], []
    for mod in model.modules():
        if isinstance(mod, (ActQuant, WeightQuant)):
            for name, p in mod.named_parameters(recurse=False):
                if not p.requires_grad:
                    continue
                grid_ids.add(id(p))
                if name == "scale":
                    scales.append(p)
                else:
                    zero_points.append((p, float(mod.qmax - mod.qmin)))
    floats = [p for name, p in model.named_parameters() if p.requires_grad and id(p) not in grid_ids
              and f".{QAT_PREFIX}" not in f".{name}"]
    if not scales:
        raise YoloportError("distillation: the model has no learned grids (wrap it for QAT first)")
    return floats, scales, zero_points


class GridAdam:
    """Adam for the learned grids in relative units.

    A scale ``s`` (any shape, positive) is updated in log space: the Adam moments are those of
    ``d loss / d log s = s * d loss / d s`` and ``s <- s * exp(-lr * m_hat / (sqrt(v_hat) + eps))``, so each
    step changes every element by about ``lr`` of itself, and a scale never turns negative. A zero point
    (code units) takes a plain Adam step of ``lr * code_range``."""

    def __init__(self, scales: list, zero_points: list, betas=(0.9, 0.999), eps: float = 1e-8):
        self.scales = scales
        self.zero_points = zero_points
        self.betas, self.eps, self.t = betas, eps, 0
        self.state = {id(p): (torch.zeros_like(p), torch.zeros_like(p)) for p in scales + [z for z, _ in zero_points]}

    def zero_grad(self) -> None:
        for p in self.scales + [z for z, _ in self.zero_points]:
            p.grad = None

    def _direction(self, p, g: torch.Tensor) -> torch.Tensor:
        m, v = self.state[id(p)]
        b1, b2 = self.betas
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        return (m / (1 - b1 ** self.t)) / ((v / (1 - b2 ** self.t)).sqrt() + self.eps)

    @torch.no_grad()
    def step(self, lr: float) -> None:
        self.t += 1
        for s in self.scales:
            if s.grad is not None:
                s.mul_(torch.exp(-lr * self._direction(s, s.grad * s)))
        for z, code_range in self.zero_points:
            if z.grad is not None:
                z.sub_(lr * code_range * self._direction(z, z.grad))


def batch_schedule(n_images: int, steps: int, batch_size: int, seed: int) -> list[np.ndarray]:
    """Image indices ``[batch_size]`` for each of ``steps`` steps: seeded permutations of ``range(n_images)``
    taken in turn (every image once before any repeats)."""
    rng = np.random.default_rng(seed)
    order: list[int] = []
    while len(order) < steps * batch_size:
        order.extend(rng.permutation(n_images).tolist())
    idx = np.asarray(order[: steps * batch_size])
    return list(idx.reshape(steps, batch_size))


def distill(student, teacher, calibration, settings: DistillSettings | dict | None = None, log=print) -> dict:
    """Fine-tune ``student`` (a model wrapped by :func:`~yoloport.quant.qat.wrap_for_qat` whose grids were
    set by :func:`~yoloport.quant.qat.init_ranges`; changed in place) to match the float ``teacher``'s raw
    outputs on ``calibration``'s images (a :class:`~yoloport.data.calibration.CalibrationSet`). Both run in
    eval mode (BatchNorm statistics frozen); ``teacher`` is copied, never changed. Returns
    ``{settings, images, steps, seconds, seconds_per_step, loss_first, loss_last, terms_last, losses}``
    (``losses``: every step's loss; ``loss_first`` / ``loss_last``: the mean of the first and last
    tenth of the steps)."""
    s = DistillSettings.from_options(settings)
    if len(calibration) == 0:
        raise YoloportError("distillation: the calibration set has no image")
    teacher = copy.deepcopy(teacher).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    floats, scales, zero_points = parameter_groups(student)
    opt = torch.optim.Adam(floats, lr=s.lr)
    grid_opt = GridAdam(scales, zero_points)
    inputs = [torch.from_numpy(np.ascontiguousarray(calibration.load(p), dtype=np.float32)) for p in calibration.paths]
    schedule = batch_schedule(len(inputs), s.steps, s.batch_size, s.seed)
    flips = np.random.default_rng(s.seed + 1).random((s.steps, s.batch_size)) < 0.5
    was_training = student.training
    student.eval()
    losses, terms = [], {}
    t0 = time.perf_counter()
    try:
        for step, idx in enumerate(schedule):
            decay = 1 - (1 - s.lr_final) * step / max(s.steps - 1, 1)
            for g in opt.param_groups:
                g["lr"] = s.lr * decay
            x = torch.cat([inputs[i].flip(-1) if (s.flip and f) else inputs[i] for i, f in zip(idx, flips[step])])
            with torch.no_grad():
                target = raw_outputs(teacher, x)
            loss, terms = distill_loss(raw_outputs(student, x), target, s)
            if not torch.isfinite(loss):
                raise YoloportError(f"distillation diverged at step {step + 1} (loss {float(loss)}): lower lr/grid_lr")
            opt.zero_grad(set_to_none=True)
            grid_opt.zero_grad()
            loss.backward()
            opt.step()
            grid_opt.step(s.grid_lr * decay)
            losses.append(float(loss.detach()))
            if log and (step == 0 or (step + 1) % max(s.steps // 10, 1) == 0):
                log(f"distill step {step + 1}/{s.steps}: loss {losses[-1]:.5f} "
                    f"(box {terms['box']:.5f} cls {terms['cls']:.5f} obj {terms['obj']:.5f})")
    finally:
        student.train(was_training)
    seconds = time.perf_counter() - t0
    tenth = max(len(losses) // 10, 1)
    return {"settings": s.to_dict(), "images": len(inputs), "steps": len(losses), "seconds": round(seconds, 1),
            "seconds_per_step": round(seconds / max(len(losses), 1), 3),
            "loss_first": float(np.mean(losses[:tenth])), "loss_last": float(np.mean(losses[-tenth:])),
            "terms_last": terms, "losses": losses}


def distill_to_checkpoint(model, scheme, calibration, settings: DistillSettings | dict | None, run_dir,
                          log=print) -> dict:
    """The distillation run of :func:`yoloport.analysis.qat.qat_port`: wrap a copy of the float ``model``
    for ``scheme`` (:class:`~yoloport.quant.qat.QatScheme`), start its grids from the PTQ ranges of
    ``calibration``, :func:`distill` it from ``model`` on the same images, and save the float weights with
    the learned grids (checkpoint metadata ``qat``, as :class:`~yoloport.quant.qat.QatHook` writes them) to
    ``run_dir/weights/last.safetensors`` (``run_dir`` must not exist). Returns ``{last, save_dir,
    distill}`` (``distill``: :func:`distill`'s record without the per-step losses, which go to
    ``run_dir/losses.json``)."""
    import json
    from pathlib import Path

    from ..io.atomic import atomic_write
    from ..models import save_model
    from .qat import QatHook, float_model, qat_layers, wrap_for_qat, init_ranges

    s = DistillSettings.from_options(settings)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=False)
    (run_dir / "weights").mkdir()
    teacher = model.eval()
    student = wrap_for_qat(teacher, scheme)
    init_ranges(student, lambda: calibration.batches(1), **START_RULES[s.start])
    log(f"QAT (distillation): {len(qat_layers(student))} convolutions fake-quantized, ranges from "
        f"{len(calibration)} calibration image(s); {s.steps} steps of {s.batch_size} on the same images")
    record = distill(student, teacher, calibration, s, log=log)
    losses = record.pop("losses")
    text = json.dumps(losses)
    atomic_write(run_dir / "losses.json", lambda f: f.write(text.encode()))
    meta = QatHook(scheme, calibration).checkpoint_meta(student)
    tuned = float_model(student)
    tuned.img_size = tuple(calibration.img_size_hw)
    last = save_model(tuned, run_dir / "weights" / "last.safetensors", origin="yoloport qat (distillation)",
                      distill=record, **meta)
    return {"last": str(last), "save_dir": str(run_dir), "distill": record}
