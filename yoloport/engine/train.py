"""Training (YOLOv5 v7.0 ``train.py`` behaviour): from scratch, from a model YAML, or fine-tuning any
checkpoint :func:`yoloport.models.load_model` reads; single process or DDP under ``torchrun``.

:func:`train` takes the settings (``argparse.Namespace`` or dict, keys of :data:`DEFAULTS`) and
returns a results dict. A run directory ``runs/train/exp{N}`` (never an existing one unless
``exist_ok``) receives::

    args.yaml, hyp.yaml           the settings used (resume reads them back)
    weights/last.safetensors      EMA weights after the last completed epoch (yoloport's safe format)
    weights/best.safetensors      EMA weights of the best fitness (0.1 mAP50 + 0.9 mAP50-95)
    weights/train_state.pt        raw model, EMA, optimiser, AMP scaler, epoch, best fitness, RNG states:
                                  plain tensors/dicts, loaded with ``torch.load(weights_only=True)``
    results.csv, results.png      per-epoch losses, metrics and learning rates
    labels.png                    class histogram and box sizes of the training labels
    results.json                  the summary this function returns

Every file is written atomically (:func:`yoloport.io.checkpoint.atomic_path`): killing the process
at any moment leaves the previous version of each file intact. An epoch ends with its weights, then
the state (which also holds the per-epoch history), and only then ``results.csv``: an epoch is logged
only once it is durable, and a resume always restarts after the last saved epoch (rewriting
``results.csv`` from the state), or from epoch 1 when none was saved. Temp files a kill left behind
are removed when the run is resumed. A resume reproduces the uninterrupted run exactly (same data
order and augmentation, which depend only on ``(seed, epoch, index)``).

Differences from YOLOv5 on purpose: gradients still accumulated at the end of an epoch are applied
then (YOLOv5 carries them into the next epoch), so each epoch ends with a clean optimiser state.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import sys
import time
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from ..errors import YoloportError
from ..io.checkpoint import atomic_path
from ..io.paths import claim_run_dir
from ..io.paths import write_text_atomic as write_text
from ..nn.model import DetectionModel
from .ema import ModelEMA, unwrap
from .loss import ComputeLoss, scale_loss_gains
from .optim import NOMINAL_BATCH, accumulate_steps, build_optimizer, lr_lambda, set_epoch_lr, warmup
from ..data.letterbox import input_multiple

HYP_DEFAULT = Path(__file__).resolve().parent.parent / "configs" / "hyp.scratch-low.yaml"
STATE_FILE = "train_state.pt"
STATE_VERSION = 1

DEFAULTS: dict = {
    "data": None,
    "cfg": None,  # model YAML or bundled config (alias --model)
    "weights": None,  # checkpoint to fine-tune
    "epochs": 100,
    "batch_size": 16,  # total over all processes
    "img_size": [640],  # W H or one number
    "hyp": None,  # path or dict; default hyp.scratch-low
    "rect": False,
    "cos_lr": False,
    "optimizer": "SGD",
    "freeze": [0],
    "device": "",
    "workers": 8,
    "seed": 0,
    "project": "runs/train",
    "name": "exp",
    "exist_ok": False,
    "resume": None,
    "noval": False,
    "nosave": False,
    "noplots": False,
    "noautoanchor": False,
    "label_smoothing": 0.0,
    "sync_bn": False,
    "cache": False,
    "stop_after": None,  # stop after this many epochs of this invocation (interruption drill)
    "deterministic": True,
    "progress": True,
    "conf_thres": 0.001,  # validation
    "iou_thres": 0.6,
    "nbs": NOMINAL_BATCH,  # nominal batch: gradients are accumulated up to it (YOLOv5: 64)
    "warmup_min_iters": 100,  # warm-up lasts max(warmup_epochs * batches, this) iterations (YOLOv5: 100)
    "time_limit_s": None,  # stop after the epoch that would overrun this wall time (saved, resumable)
    "task": None,  # "face": the model must have a landmark head (a face model's data are read as faces anyway)
}

# settings a resumed run takes from the new command line rather than from the saved run
RESUME_OVERRIDABLE = ("device", "workers", "stop_after", "progress", "resume", "noplots", "time_limit_s")


# ---------------------------------------------------------------------------------------- helpers
def load_hyp(hyp) -> dict:
    """YOLOv5's defaults (``configs/hyp.scratch-low.yaml``) updated by ``hyp`` (a YAML path or a dict)."""
    base = yaml.safe_load(HYP_DEFAULT.read_text())
    if hyp is None:
        return base
    if isinstance(hyp, dict):
        extra = hyp
    else:
        from ..config import read_yaml

        extra = read_yaml(hyp, "hyperparameter YAML")
    unknown = sorted(set(extra) - set(base) - {"anchors", "label_smoothing", "landmark"})
    if unknown:
        raise YoloportError(f"unknown hyperparameter(s) {', '.join(unknown)}; known: {', '.join(base)}")
    for k, v in extra.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise YoloportError(f"hyperparameter {k} must be a number, got {v!r}")
    base.update({k: float(v) for k, v in extra.items()})
    return base


def select_device(device: str | int | None, local_rank: int = -1) -> torch.device:
    """``'cpu'``, ``'0'``, ``'0,1'`` or ``''`` (CUDA if available) -> the device of this process."""
    d = str(device if device is not None else "").strip().lower().replace("cuda:", "")
    if d == "cpu" or (d == "" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise YoloportError(f"--device {device}: CUDA is not available here; use --device cpu")
    ids = [int(x) for x in d.split(",") if x.strip() != ""] or [0]
    for i in ids:
        if i >= torch.cuda.device_count():
            raise YoloportError(f"--device {device}: there are only {torch.cuda.device_count()} CUDA device(s)")
    if local_rank >= 0:
        if len(ids) > 1 and local_rank >= len(ids):
            raise YoloportError(f"--device {device} names {len(ids)} GPUs but this is process {local_rank}")
        return torch.device("cuda", ids[local_rank] if len(ids) > 1 else ids[0] + local_rank if d == "" else ids[0])
    if len(ids) > 1:
        raise YoloportError(f"--device {device}: for several GPUs run 'torchrun --nproc_per_node {len(ids)} -m yoloport train ...'")
    return torch.device("cuda", ids[0])


def dist_info() -> tuple[int, int, int]:
    """``(rank, local_rank, world_size)`` from torchrun's environment (``(-1, -1, 1)`` when not set)."""
    return int(os.environ.get("RANK", -1)), int(os.environ.get("LOCAL_RANK", -1)), int(os.environ.get("WORLD_SIZE", 1))


def fitness(results: dict) -> float:
    """0.1 * mAP50 + 0.9 * mAP50-95 (YOLOv5's model selection score)."""
    return 0.1 * float(results.get("mAP50", 0.0)) + 0.9 * float(results.get("mAP50_95", 0.0))


def seed_everything(seed: int, deterministic: bool = True) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def rng_state() -> dict:
    """Python, numpy and torch RNG states as plain types (safe for ``weights_only`` loading)."""
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_namespace(settings) -> argparse.Namespace:
    d = dict(DEFAULTS)
    src = vars(settings) if isinstance(settings, argparse.Namespace) else dict(settings or {})
    for k, v in src.items():
        if v is not None or k not in d:
            d[k] = v
    if d.get("model") and not d.get("cfg"):
        d["cfg"] = d["model"]
    return argparse.Namespace(**d)


def _jsonable(v):
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


# ------------------------------------------------------------------------------------------ model
def build_model(s: argparse.Namespace, nc: int, names: list[str], log=print) -> DetectionModel:
    """The model to train: ``cfg`` from scratch, ``weights`` fine-tuned (``nc`` changed: new Detect convs),
    or ``weights`` transferred into ``cfg`` (anchors from ``cfg``)."""
    from ..models import load_model

    torch.manual_seed(int(s.seed))
    if s.weights:
        src = load_model(s.weights)
        cfg = s.cfg or src.yaml
        model = DetectionModel(cfg, nc=nc)
        own = model.state_dict()
        sd = src.state_dict()
        exclude = ("anchors",) if s.cfg else ()
        moved = {k: v for k, v in sd.items() if k in own and v.shape == own[k].shape and not any(x in k for x in exclude)}
        model.load_state_dict(moved, strict=False)
        log(f"transferred {len(moved)}/{len(own)} tensors from {s.weights}"
            + (f" (nc {src.nc} -> {nc}: Detect convs re-initialised)" if src.nc != nc else ""))
    elif s.cfg:
        model = DetectionModel(s.cfg, nc=nc)
    else:
        raise YoloportError("nothing to train: pass --cfg MODEL_YAML (e.g. yolov5n) and/or --weights CHECKPOINT")
    model.names = list(names)
    return model.float()


def freeze_layers(model: nn.Module, freeze) -> list[str]:
    """Freeze the first ``N`` layers (``freeze=[N]``) or the listed layer indices; returns the frozen names."""
    freeze = [int(x) for x in (freeze if isinstance(freeze, (list, tuple)) else [freeze])]
    prefixes = [f"model.{x}." for x in (freeze if len(freeze) > 1 else range(freeze[0] if freeze else 0))]
    frozen = []
    for k, v in model.named_parameters():
        v.requires_grad = True
        if any(k.startswith(p) for p in prefixes):
            v.requires_grad = False
            frozen.append(k)
    return frozen


# ------------------------------------------------------------------------------------------- plots
def plot_results(csv_path: Path, out: Path) -> None:
    """Losses, precision, recall and mAPs per epoch from ``results.csv`` -> PNG (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    keys = ["train/box_loss", "train/obj_loss", "train/cls_loss", "metrics/precision", "metrics/recall",
            "metrics/mAP_0.5", "metrics/mAP_0.5:0.95", "x/lr0"]
    fig, ax = plt.subplots(2, 4, figsize=(14, 6), tight_layout=True)
    x = [int(r["epoch"]) for r in rows]
    for a, k in zip(ax.ravel(), keys):
        y = [float(r[k]) if r.get(k) not in (None, "") else float("nan") for r in rows]
        a.plot(x, y, marker=".", linewidth=1.5)
        a.set_title(k, fontsize=10)
        a.set_xlabel("epoch")
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def plot_labels(labels: list[np.ndarray], names: list[str], out: Path, max_boxes: int = 20000) -> None:
    """Class histogram and normalised box centres / sizes of the training labels -> PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lb = np.concatenate([x for x in labels if len(x)], 0) if any(len(x) for x in labels) else np.zeros((0, 5))
    fig, ax = plt.subplots(1, 3, figsize=(14, 4), tight_layout=True)
    counts = np.bincount(lb[:, 0].astype(int), minlength=len(names)) if len(lb) else np.zeros(len(names))
    ax[0].bar(range(len(names)), counts, color="tab:blue")
    ax[0].set_xticks(range(len(names)))
    ax[0].set_xticklabels(names, rotation=90 if len(names) > 10 else 0, fontsize=8)
    ax[0].set_ylabel("instances")
    ax[0].set_title(f"{len(lb)} labels, {sum(not len(x) for x in labels)} background images")
    sub = lb[:: max(1, len(lb) // max_boxes)]
    ax[1].scatter(sub[:, 1], sub[:, 2], s=2, alpha=0.3)
    ax[1].set(xlim=(0, 1), ylim=(1, 0), xlabel="x", ylabel="y", title="box centres")
    ax[2].scatter(sub[:, 3], sub[:, 4], s=2, alpha=0.3)
    ax[2].set(xlim=(0, 1), ylim=(0, 1), xlabel="width", ylabel="height", title="box sizes")
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


CSV_KEYS = ["epoch", "train/box_loss", "train/obj_loss", "train/cls_loss", "train/landmark_loss", "metrics/precision", "metrics/recall",
            "metrics/mAP_0.5", "metrics/mAP_0.5:0.95", "fitness", "x/lr0", "x/lr1", "x/lr2", "time_s", "images_per_s"]


def write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_KEYS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    write_text(path, buf.getvalue())


def read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: (int(v) if k == "epoch" else float(v) if v not in ("", None) else None) for k, v in r.items()}
                for r in csv.DictReader(f)]


# ------------------------------------------------------------------------------------------ state
def save_state(path: Path, **state) -> None:
    """Training state for resume, atomically; only tensors and plain containers (``weights_only``-safe)."""
    state["version"] = STATE_VERSION
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path: Path) -> dict:
    if not path.is_file():
        raise YoloportError(f"cannot resume: {path} does not exist (no epoch of this run completed)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - corrupt file or foreign pickle
        raise YoloportError(f"cannot resume: {path} is not a readable yoloport training state ({e})") from None


def find_run_dir(resume) -> Path:
    """``--resume`` accepts a run directory, its ``weights/`` folder or any file inside it."""
    p = Path(str(resume)).expanduser()
    if not p.exists():
        raise YoloportError(f"cannot resume: {p} does not exist")
    for cand in (p, p.parent, p.parent.parent):
        if cand.is_dir() and (cand / "args.yaml").is_file():
            return cand
    raise YoloportError(f"cannot resume: {p} is not a yoloport training run (no args.yaml)")


# ------------------------------------------------------------------------------------------ train
def train(settings, hook=None) -> dict:
    """Train a detector; see the module docstring. Returns ``{save_dir, last, best, epochs, best_fitness,
    metrics, history, anchors, dataset}``.

    ``hook`` (optional) changes the model the loop trains, e.g. :class:`yoloport.quant.qat.QatHook`:
    ``hook.wrap(model) -> model`` once the float model is built (before it moves to its device), and
    when weights are saved ``hook.for_saving(ema_model) -> DetectionModel`` with
    ``hook.checkpoint_meta(ema_model) -> dict`` added to the checkpoint's metadata. A run with a hook
    whose ``resumable`` is False cannot be resumed.

    The steps: settings (a resumed run's own, or the given ones) -> processes and devices -> data ->
    model -> run folder -> optimiser, schedule and EMA (restored on resume) -> epochs (train, then
    validate and save) -> summary."""
    rank, local_rank, world = dist_info()
    main = rank in (-1, 0)
    log = print if main else (lambda *a, **k: None)
    s, resume = _settings_for_run(settings, main, log)
    _check_settings(s)

    from ..data.dataset import load_data_yaml

    data = load_data_yaml(s.data)
    if not s.noval and not data.val:
        raise YoloportError(f"{data.yaml_file}: no 'val' split (add one, or train with --noval)")
    device, ddp = _init_processes(s, local_rank, world)
    batch_size = int(s.batch_size) // world
    seed_everything(int(s.seed), bool(s.deterministic))
    cuda = device.type == "cuda"
    hyp = load_hyp(s.hyp)
    hyp["label_smoothing"] = float(s.label_smoothing or 0.0)
    if hook is not None and resume.state is not None and not getattr(hook, "resumable", True):
        raise YoloportError(f"{resume.run_dir} cannot be resumed with this hook (start a new run)")
    model = _model_for_run(s, resume.state, data.nc, list(data.names), log)
    _check_task(s, model)
    if hook is not None:
        model = hook.wrap(model)
    gs = input_multiple(model.stride)
    img_hw = _img_hw(s, gs, log)
    frozen = freeze_layers(model, s.freeze)
    if frozen:
        log(f"frozen: {len(frozen)} parameter tensors ({frozen[0]} ... {frozen[-1]})")
    model.to(device)
    nkpt = int(model.detect.nkpt)  # a face model's head: its data are read as faces with landmarks
    dataset, sampler, loader = _data_for_run(s, data, hyp, img_hw, batch_size, gs, rank, world, cuda, main, log, nkpt)

    save_dir = resume.run_dir
    if resume.state is None and resume.run_dir is None and main:
        save_dir = claim_train_dir(s, hyp)
    wdir = save_dir / "weights" if save_dir else None
    if main:
        log(f"run directory: {save_dir}")
    anchor_report = None
    if resume.state is None and not s.noautoanchor:
        from .autoanchor import check_anchors

        anchor_report = check_anchors(model, dataset.shapes_wh, dataset.labels, max(img_hw), float(hyp["anchor_t"]),
                                      seed=int(s.seed))
        log(anchor_report.message())
    if main and resume.state is None and not s.noplots:
        plot_labels(dataset.labels, list(data.names), save_dir / "labels.png")

    loop = _make_loop(s, model, hyp, batch_size, world, main, cuda, len(loader))
    loop.hook = hook
    if resume.state is not None:
        _restore(loop, resume.state, cuda, save_dir if main else None)
        log(f"resuming {save_dir} from epoch {loop.start_epoch} of {s.epochs}")
        if loop.start_epoch >= int(s.epochs):
            if save_dir is None or (save_dir / "results.json").exists():
                raise YoloportError(f"{save_dir} already finished its {s.epochs} epochs; nothing to resume")
            # killed after its last epoch was durable but before it wrote its results: finish that
            log(f"all {s.epochs} epochs were saved before the run stopped; writing the results it did not")
    model = _wrap_ddp(s, model, device, ddp, cuda, log)
    loss_hyp = scale_loss_gains(hyp, unwrap(model).detect.nl, data.nc, max(img_hw))
    compute_loss = ComputeLoss(model, loss_hyp)
    epochs = int(s.epochs)
    stop_epoch = epochs if s.stop_after is None else min(epochs, loop.start_epoch + int(s.stop_after))
    metrics: dict = {}
    t_start = time.time()
    if main:
        log(f"training {epochs} epochs at {img_hw[1]}x{img_hw[0]}, batch {batch_size * world} "
            f"({world} process{'es' if ddp else ''}, accumulate {loop.accumulate}), {s.optimizer}, device {device}")

    for epoch in range(loop.start_epoch, stop_epoch):
        t0 = time.time()
        mloss, n_img, lrs = _train_epoch(s, loop, model, compute_loss, dataset, sampler, loader, epoch, device,
                                          hyp, batch_size, world, ddp, cuda, main)
        epoch_time = time.time() - t0
        if main:
            metrics = _end_epoch(s, loop, model, data, save_dir, wdir, epoch, epochs, mloss, n_img, lrs, epoch_time,
                                 metrics, img_hw, batch_size, world, gs, device, log)
        if ddp:
            torch.distributed.barrier()
        if s.time_limit_s is not None and epoch + 1 < stop_epoch and _over_time_limit(s, t_start, t0, device, ddp):
            log(f"time limit {float(s.time_limit_s):.0f} s: stopping after epoch {epoch + 1} (resume with --resume)")
            break

    if not metrics and loop.history:  # no epoch ran here (a resumed run that had saved them all)
        last = loop.history[-1]
        metrics = {k: last.get(f"metrics/{c}") for k, c in
                   (("precision", "precision"), ("recall", "recall"), ("mAP50", "mAP_0.5"), ("mAP50_95", "mAP_0.5:0.95"))}
    rep = dataset.report
    result = {
        "save_dir": str(save_dir) if save_dir else None,
        "last": str(wdir / "last.safetensors") if wdir and (wdir / "last.safetensors").exists() else None,
        "best": str(wdir / "best.safetensors") if wdir and (wdir / "best.safetensors").exists() else None,
        "epochs_completed": (loop.history[-1]["epoch"] + 1) if loop.history else loop.start_epoch,
        "epochs": epochs,
        "best_fitness": loop.best_fitness,
        "metrics": {k: metrics.get(k) for k in ("precision", "recall", "mAP50", "mAP50_95")} if metrics else {},
        "history": loop.history,
        "anchors": vars(anchor_report) if anchor_report else None,
        "dataset": {"images": rep.n_images, "labels": rep.n_labels, "background": rep.n_background,
                    "bad_label_lines": rep.n_bad_lines, "skipped": rep.n_skipped},
        "img_size_hw": list(img_hw),
        "world_size": world,
        "time_s": time.time() - t_start,
    }
    if main and save_dir:
        write_text(save_dir / "results.json", json.dumps(_jsonable(result), indent=2) + "\n")
    if ddp:
        torch.distributed.destroy_process_group()
    return result


# ------------------------------------------------------------------------------------ train: steps
@dataclass
class _Resume:
    """What ``--resume`` found: the run folder and its last durable state (None: start it afresh)."""

    run_dir: Path | None = None
    state: dict | None = None


@dataclass
class _Loop:
    """The optimisation state the epochs share."""

    optimizer: torch.optim.Optimizer
    lf: object
    ema: ModelEMA | None
    scaler: torch.amp.GradScaler
    accumulate: int
    nb: int
    nw: int
    nbs: int
    start_epoch: int = 0
    best_fitness: float = 0.0
    last_opt_step: int = -1
    history: list = dc_field(default_factory=list)
    hook: object = None  # see train()


def _settings_for_run(settings, main: bool, log) -> tuple[argparse.Namespace, _Resume]:
    """The settings of this run: the given ones, or with ``resume`` the interrupted run's own
    ``args.yaml`` (only :data:`RESUME_OVERRIDABLE` keys taken from ``settings``) and its state."""
    given = vars(settings) if isinstance(settings, argparse.Namespace) else dict(settings or {})
    s = _as_namespace(settings)
    if not s.resume:
        return s, _Resume()
    from ..config import read_yaml
    from ..options import check_options

    run_dir = find_run_dir(s.resume)
    args_file = run_dir / "args.yaml"
    saved = read_yaml(args_file, "cannot resume: the run's settings")
    bad_keys = [k for k, v in saved.items() if not isinstance(k, str)]
    if bad_keys:
        raise YoloportError(f"cannot resume: {args_file} is malformed (key {bad_keys[0]!r} is not a setting name)")
    try:
        check_options(saved)
        for k in ("epochs", "batch_size", "seed"):
            int(saved.get(k, DEFAULTS[k]))
    except (YoloportError, TypeError, ValueError) as e:
        raise YoloportError(f"cannot resume: {args_file} is malformed ({e})") from None
    saved.update({k: given[k] for k in RESUME_OVERRIDABLE if given.get(k) is not None})
    s = _as_namespace(saved)
    if (run_dir / "hyp.yaml").is_file():
        s.hyp = str(run_dir / "hyp.yaml")  # the hyperparameters the run started with
    if main:  # temp files of writes a kill interrupted (targets are never partial)
        remove_stale_temp_files(run_dir)
    state_file = run_dir / "weights" / STATE_FILE
    if not state_file.is_file():
        log(f"{run_dir}: no epoch was saved before the run stopped; starting it again from epoch 1")
        return s, _Resume(run_dir=run_dir, state=None)
    return s, _Resume(run_dir=run_dir, state=load_state(state_file))


def remove_stale_temp_files(run_dir: Path) -> list[Path]:
    """Remove the hidden temp files (``.<name>.tmp-*``) that a kill during an atomic write left in a
    run folder and its ``weights/``; the files they were meant to replace are intact. Returns them."""
    stale = [*run_dir.glob(".*.tmp-*"), *(run_dir / "weights").glob(".*.tmp-*")]
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


def _check_settings(s: argparse.Namespace) -> None:
    if not s.data:
        raise YoloportError("no dataset: pass --data DATA_YAML (or --config RUN_YAML with a 'data' key)")
    if not s.weights and not s.cfg and getattr(s, "model_key", None):
        from ..config import lookup_model_key

        entry = lookup_model_key(str(s.model_key), getattr(s, "registry", None))
        s.weights = entry.weights or entry.cfg
    if int(s.epochs) < 1:
        raise YoloportError(f"--epochs must be >= 1, got {s.epochs}")
    if int(s.batch_size) < 1:
        raise YoloportError(f"--batch-size must be >= 1, got {s.batch_size}")


def _check_task(s: argparse.Namespace, model: DetectionModel) -> None:
    """``task='face'`` needs a head with landmarks (a yolov5-face config or checkpoint)."""
    task = getattr(s, "task", None) or "detect"
    if task not in ("detect", "face"):
        raise YoloportError(f"unknown task {task!r}: choose detect or face")
    if task == "face" and not model.detect.nkpt:
        raise YoloportError("--task face trains a face model (a head with landmarks): start from a yolov5-face "
                            "config (--cfg yolov5n-0.5-face) or checkpoint; this model's head has none")


def _init_processes(s: argparse.Namespace, local_rank: int, world: int) -> tuple[torch.device, bool]:
    """This process's device; the process group under torchrun (``ddp``)."""
    device = select_device(s.device, local_rank)
    ddp = world > 1
    if ddp:
        import torch.distributed as dist

        if int(s.batch_size) % world:
            raise YoloportError(f"--batch-size {s.batch_size} must be a multiple of the {world} processes")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device, ddp


def _model_for_run(s, state: dict | None, nc: int, names: list[str], log) -> DetectionModel:
    """The resumed model (from the state), or the one :func:`build_model` makes."""
    if state is None:
        return build_model(s, nc, names, log)
    model = DetectionModel(state["yaml"], nc=nc)
    model.names = names
    model.load_state_dict(state["model"])
    return model


def _img_hw(s, gs: int, log) -> tuple[int, int]:
    from ..data.letterbox import parse_img_size

    size = s.img_size if isinstance(s.img_size, (list, tuple)) else [s.img_size]
    return parse_img_size(size, gs, warn=lambda m: log(f"warning: {m}"))


def _data_for_run(s, data, hyp, img_hw, batch_size, gs, rank, world, cuda, main, log, nkpt: int = 0):
    """``(dataset, sampler, loader)`` of the training split (face labels with ``nkpt`` landmarks when the
    model's head has them); its report is logged."""
    from ..data.train_dataset import EpochSampler, TrainDataset

    dataset = TrainDataset(data.split("train"), data.nc, img_hw, hyp, augment=True, rect=bool(s.rect),
                           batch_size=batch_size, stride=gs, seed=int(s.seed), cache=bool(s.cache), nkpt=nkpt)
    rep = dataset.report
    if main:
        log(f"train: {rep.n_images} images, {rep.n_labels} labels, {rep.n_background} background "
            f"({rep.n_missing_labels} without a label file), {rep.n_bad_lines} bad label lines dropped, "
            f"{rep.n_skipped} images skipped")
        for w in rep.warnings[:10]:
            log(f"  {w}")
        if len(rep.warnings) > 10:
            log(f"  ... {len(rep.warnings) - 10} more")
    if rep.n_labels == 0:
        log("warning: the training split has no labels at all; the model will only learn background")
    sampler = EpochSampler(len(dataset), shuffle=not s.rect, seed=int(s.seed), rank=max(rank, 0), world=world,
                           rect_batch_size=batch_size if s.rect else None)
    workers = min(int(s.workers), os.cpu_count() or 1, batch_size)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                                         pin_memory=cuda, collate_fn=TrainDataset.collate,
                                         worker_init_fn=_worker_init, persistent_workers=False)
    return dataset, sampler, loader


def claim_train_dir(s: argparse.Namespace, hyp: dict) -> Path:
    """A new run folder (``project/name``, ``name2``, ... claimed atomically; the named one with
    ``exist_ok``, unless it holds another run), with the settings written into it."""
    target = Path(s.project) / s.name
    if s.exist_ok and (target / "args.yaml").exists():
        raise YoloportError(f"{target} holds another training run; continue it with --resume {target}, "
                            "or choose a new --name")
    save_dir = claim_run_dir(target, exist_ok=bool(s.exist_ok), increment=True, what="run folder")
    write_text(save_dir / "args.yaml", yaml.safe_dump(_jsonable({**vars(s), "save_dir": str(save_dir)}), sort_keys=False))
    write_text(save_dir / "hyp.yaml", yaml.safe_dump(hyp, sort_keys=False))
    return save_dir


def _make_loop(s, model, hyp, batch_size, world, main, cuda, nb) -> _Loop:
    """Optimiser, lr schedule, EMA and AMP scaler (YOLOv5's weight decay scaling by the accumulation)."""
    nbs = int(s.nbs)
    accumulate = accumulate_steps(batch_size * world, nbs)
    hyp["weight_decay"] *= batch_size * world * accumulate / nbs
    optimizer = build_optimizer(model, s.optimizer, hyp["lr0"], hyp["momentum"], hyp["weight_decay"])
    return _Loop(optimizer=optimizer, lf=lr_lambda(int(s.epochs), hyp["lrf"], bool(s.cos_lr)),
                 ema=ModelEMA(model) if main else None, scaler=torch.amp.GradScaler("cuda", enabled=cuda),
                 accumulate=accumulate, nb=nb, nw=max(round(hyp["warmup_epochs"] * nb), int(s.warmup_min_iters)),
                 nbs=nbs)


def _restore(loop: _Loop, state: dict, cuda: bool, save_dir: Path | None) -> None:
    """Put the loop back where the state left it; the history comes from the state (written with the
    weights), so ``results.csv`` is rewritten to match whatever a kill left in it."""
    loop.optimizer.load_state_dict(state["optimizer"])
    if loop.ema is not None:
        loop.ema.load_state_dict(state["ema"])
    if state.get("scaler") and cuda:
        loop.scaler.load_state_dict(state["scaler"])
    loop.start_epoch = int(state["epoch"]) + 1
    loop.best_fitness = float(state["best_fitness"])
    loop.last_opt_step = loop.start_epoch * loop.nb - 1
    set_rng_state(state["rng"])
    if save_dir is not None:
        if "history" in state:
            loop.history = [dict(r) for r in state["history"]]
        else:  # states written before the history moved into them
            loop.history = [r for r in read_csv(save_dir / "results.csv") if r["epoch"] < loop.start_epoch]
        write_csv(save_dir / "results.csv", loop.history)


def _wrap_ddp(s, model, device, ddp: bool, cuda: bool, log):
    if ddp:
        from torch.nn.parallel import DistributedDataParallel as DDP

        if s.sync_bn:
            if not cuda:
                raise YoloportError("--sync-bn needs CUDA devices (SyncBatchNorm has no CPU implementation)")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model).to(device)
            log("using SyncBatchNorm")
        return DDP(model, device_ids=[device.index] if cuda else None, output_device=device.index if cuda else None)
    if s.sync_bn:
        log("warning: --sync-bn has no effect with a single process")
    return model


def _train_epoch(s, loop: _Loop, model, compute_loss, dataset, sampler, loader, epoch, device, hyp, batch_size,
                 world, ddp, cuda, main):
    """One pass over the training data; returns ``(mean losses [3], images seen, lrs per group)``."""
    model.train()
    dataset.set_epoch(epoch)
    sampler.set_epoch(epoch)
    set_epoch_lr(loop.optimizer, loop.lf, epoch)
    mloss = torch.zeros(compute_loss.n_items, device=device)
    loop.optimizer.zero_grad()
    n_img, nb, epochs = 0, loop.nb, int(s.epochs)
    pbar = enumerate(loader)
    if main and s.progress:
        from tqdm import tqdm

        pbar = tqdm(pbar, total=nb, file=sys.stderr, bar_format="{l_bar}{bar:10}{r_bar}", leave=True)
    ni = epoch * nb - 1
    for i, (imgs, targets, _paths) in pbar:
        ni = i + nb * epoch
        imgs = imgs.to(device, non_blocking=True).float() / 255
        n_img += imgs.shape[0]
        if ni <= loop.nw:
            loop.accumulate = warmup(loop.optimizer, ni, loop.nw, loop.lf, epoch, hyp, batch_size * world, loop.nbs)
        with torch.autocast(device_type="cuda", enabled=cuda):
            pred = model(imgs)
            loss, loss_items = compute_loss(pred, targets.to(device))
            if ddp:
                loss = loss * world
        loop.scaler.scale(loss).backward()
        if ni - loop.last_opt_step >= loop.accumulate:
            _optimizer_step(model, loop.optimizer, loop.scaler, loop.ema)
            loop.last_opt_step = ni
        mloss = (mloss * i + loss_items) / (i + 1)
        if main and s.progress:
            mem = f"{torch.cuda.memory_reserved(device) / 1e9:.3g}G" if cuda else "cpu"
            lmk = f" lmk {mloss[3]:.4f}" if len(mloss) > 3 else ""
            pbar.set_description(f"{epoch + 1}/{epochs} {mem} box {mloss[0]:.4f} obj {mloss[1]:.4f} "
                                 f"cls {mloss[2]:.4f}{lmk} inst {targets.shape[0]} {imgs.shape[-1]}")
    if loop.last_opt_step != ni:  # apply what is still accumulated (see module docstring)
        _optimizer_step(model, loop.optimizer, loop.scaler, loop.ema)
        loop.last_opt_step = ni
    if main and s.progress:
        pbar.close()
    return mloss, n_img, [g["lr"] for g in loop.optimizer.param_groups]


def _end_epoch(s, loop: _Loop, model, data, save_dir, wdir, epoch, epochs, mloss, n_img, lrs, epoch_time, metrics,
               img_hw, batch_size, world, gs, device, log) -> dict:
    """Validate (EMA), then make the epoch durable: weights and state (which holds the history)
    first, ``results.csv`` and the plot after, so a logged epoch always has its weights. Returns the metrics."""
    final = epoch + 1 == epochs
    if not s.noval or final:
        from .face_val import boxes_only
        from .val import torch_infer, validate

        infer, nkpt = torch_infer(loop.ema.ema, str(device)), int(loop.ema.ema.detect.nkpt)
        metrics = validate(boxes_only(infer, data.nc) if nkpt else infer, data, img_size=max(img_hw),
                           batch_size=max(batch_size * 2, 1), conf_thres=float(s.conf_thres),
                           iou_thres=float(s.iou_thres), stride=gs, progress=bool(s.progress), nkpt=nkpt)
    fi = fitness(metrics) if metrics else 0.0
    loop.best_fitness = max(loop.best_fitness, fi)
    is_best = fi == loop.best_fitness
    row = {"epoch": epoch, "train/box_loss": float(mloss[0]), "train/obj_loss": float(mloss[1]),
           "train/cls_loss": float(mloss[2]), "train/landmark_loss": float(mloss[3]) if len(mloss) > 3 else None,
           "metrics/precision": float(metrics.get("precision", 0.0)),
           "metrics/recall": float(metrics.get("recall", 0.0)), "metrics/mAP_0.5": float(metrics.get("mAP50", 0.0)),
           "metrics/mAP_0.5:0.95": float(metrics.get("mAP50_95", 0.0)), "fitness": fi,
           "x/lr0": lrs[0], "x/lr1": lrs[1], "x/lr2": lrs[2], "time_s": epoch_time,
           "images_per_s": n_img * world / max(epoch_time, 1e-9)}
    loop.history.append(row)
    lmk = f" landmark {row['train/landmark_loss']:.4f}" if row["train/landmark_loss"] is not None else ""
    log(f"epoch {epoch + 1}/{epochs}: box {row['train/box_loss']:.4f} obj {row['train/obj_loss']:.4f} "
        f"cls {row['train/cls_loss']:.4f}{lmk} | P {row['metrics/precision']:.3f} R {row['metrics/recall']:.3f} "
        f"mAP50 {row['metrics/mAP_0.5']:.3f} mAP50-95 {row['metrics/mAP_0.5:0.95']:.3f} | "
        f"{epoch_time:.1f} s, {row['images_per_s']:.1f} img/s")
    _save_epoch(save_dir, wdir, s, model, loop.ema, loop.optimizer, loop.scaler, epoch, loop.best_fitness, fi, is_best,
                metrics, img_hw, final, loop.history, loop.hook)
    write_csv(save_dir / "results.csv", loop.history)
    if not s.noplots:
        plot_results(save_dir / "results.csv", save_dir / "results.png")
    return metrics


def _over_time_limit(s, t_start: float, t_epoch: float, device, ddp: bool) -> bool:
    """Would one more epoch overrun ``time_limit_s``? Rank 0 decides for every process."""
    over = (time.time() - t_start) + (time.time() - t_epoch) > float(s.time_limit_s)
    flag = torch.tensor([1.0 if over else 0.0], device=device)
    if ddp:
        torch.distributed.broadcast(flag, 0)
    return bool(flag.item())


def _worker_init(_worker_id: int) -> None:
    import cv2

    cv2.setNumThreads(0)


def _optimizer_step(model, optimizer, scaler, ema) -> None:
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=10.0)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad()
    if ema is not None:
        ema.update(model)


def _save_epoch(save_dir, wdir, s, model, ema, optimizer, scaler, epoch, best_fitness, fi, is_best, metrics, img_hw,
                final, history, hook=None) -> None:
    """last/best weights (EMA, safe format), then the resume state with the history of the epochs
    (written last: see module docstring)."""
    from ..models import save_model

    emodel = ema.ema
    emodel.img_size = tuple(img_hw)
    extra = {"origin": "yoloport train", "epoch": epoch, "fitness": fi,
             "metrics": {k: metrics.get(k) for k in ("precision", "recall", "mAP50", "mAP50_95")} if metrics else {},
             "run": str(save_dir), "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if hook is not None:
        extra.update(hook.checkpoint_meta(emodel))
        emodel = hook.for_saving(emodel)
    if not s.nosave or final:
        save_model(emodel, wdir / "last.safetensors", **extra)
        if is_best:
            save_model(emodel, wdir / "best.safetensors", **extra)
    raw = unwrap(model)
    save_state(
        wdir / STATE_FILE,
        epoch=epoch,
        best_fitness=best_fitness,
        yaml=_jsonable(raw.yaml),
        model={k: v.detach().cpu().clone() for k, v in raw.state_dict().items()},
        ema={"updates": ema.updates, "decay": ema.decay, "tau": ema.tau,
             "model": {k: v.detach().cpu().clone() for k, v in ema.ema.state_dict().items()}},
        optimizer=optimizer.state_dict(),
        scaler=scaler.state_dict() if scaler.is_enabled() else None,
        rng=rng_state(),
        history=_jsonable(history),
    )
