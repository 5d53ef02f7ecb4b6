"""Throughput and latency of any Runner, for the model alone and end to end.

- **model**: ``runner(x)`` on a ready ``[B, 3, H, W]`` batch, timed call by call after ``warmup`` calls;
- **end to end**: for each batch, ``B`` BGR images through :func:`yoloport.data.letterbox.preprocess`
  (fixed shape, ``auto=False``, as batched validation), the runner, and the host post-processing
  (:func:`yoloport.ops.postprocess.postprocess` + scaling back to the original images).

Latency is per call of ``B`` images (median, p90, mean, min in ms); throughput is images per second
over all timed calls (``B * repeat / total time``).

Batch sizes and fixed-batch graphs: a runner whose graph takes a fixed batch ``b`` (``runner.batch``)
runs a request of ``B`` images as ``ceil(B / b)`` calls (``registry.call_fixed_batch``); the result
records ``graph_batch`` and ``calls_per_batch`` so a "batch 16" figure measured as 16 single calls is
never mistaken for a batch-16 graph. :func:`runner_for_batch` builds a graph of the batch asked for
instead (fp32 export, or int8 with the calibration set at that batch).
"""
from __future__ import annotations

import math
import os
import platform
import time
from pathlib import Path

import numpy as np

from ..errors import YoloportError
from .tables import fmt_float, format_table


def latency_stats(times_s, batch: int) -> dict:
    """Per-call wall times (s) of ``batch`` images -> latency (ms) and throughput (images/s)."""
    t = np.asarray(times_s, dtype=np.float64)
    if t.size == 0:
        raise ValueError("no timings")
    total = float(t.sum())
    return {
        "latency_ms": {
            "median": float(np.median(t) * 1e3),
            "p90": float(np.percentile(t, 90) * 1e3),
            "mean": float(t.mean() * 1e3),
            "min": float(t.min() * 1e3),
        },
        "throughput_ips": float(batch * t.size / total) if total > 0 else float("inf"),
        "timed_calls": int(t.size),
    }


def _check_counts(batch: int, warmup: int, repeat: int) -> None:
    if int(batch) < 1 or int(repeat) < 1 or int(warmup) < 0:
        raise YoloportError(f"batch and --repeat must be >= 1 and --warmup >= 0 (got {batch}, {repeat}, {warmup})")


def _batch_info(runner, batch: int) -> dict:
    gb = getattr(runner, "batch", None)
    return {"graph_batch": gb, "calls_per_batch": int(math.ceil(batch / gb)) if gb else 1}


def bench_runner(runner, batch: int, img_hw, warmup: int = 3, repeat: int = 20, images: np.ndarray | None = None) -> dict:
    """Time ``runner`` on a ``[batch, 3, H, W]`` input (``images``, or uniform noise) ``repeat`` times
    after ``warmup`` calls. Returns ``{mode: 'model', batch, img_hw, warmup, repeat, latency_ms:
    {median, p90, mean, min}, throughput_ips, timed_calls, graph_batch, calls_per_batch, backend}``."""
    _check_counts(batch, warmup, repeat)
    h, w = int(img_hw[0]), int(img_hw[1])
    if images is None:
        images = np.random.default_rng(0).random((int(batch), 3, h, w), dtype=np.float32)
    x = np.ascontiguousarray(images, dtype=np.float32)
    if x.shape != (int(batch), 3, h, w):
        raise YoloportError(f"bench input must be [{batch}, 3, {h}, {w}], got {list(x.shape)}")
    for _ in range(int(warmup)):
        runner(x)
    times = []
    for _ in range(int(repeat)):
        t0 = time.perf_counter()
        runner(x)
        times.append(time.perf_counter() - t0)
    return {"mode": "model", "backend": getattr(runner, "backend", "?"), "batch": int(batch), "img_hw": [h, w],
            "warmup": int(warmup), "repeat": int(repeat), **latency_stats(times, batch), **_batch_info(runner, batch)}


def bench_end_to_end(runner, batch: int, img_hw, images_bgr: list, warmup: int = 3, repeat: int = 20,
                     conf_thres: float = 0.25, iou_thres: float = 0.45, max_det: int = 300) -> dict:
    """Time preprocess + ``runner`` + host post-processing for ``batch`` images per call, cycling
    through ``images_bgr`` (uint8 HWC BGR). Adds ``stages_ms`` (median pre / inference / post) and
    ``detections_per_image`` (mean, a sanity figure) to :func:`bench_runner`'s keys."""
    from ..data.letterbox import preprocess
    from ..ops.postprocess import postprocess, to_original

    _check_counts(batch, warmup, repeat)
    if not images_bgr:
        raise YoloportError("end-to-end bench needs at least one image")
    h, w = int(img_hw[0]), int(img_hw[1])
    stride = int(getattr(runner, "stride", 32))
    k = 0
    stages, totals, n_det = [], [], []
    for it in range(int(warmup) + int(repeat)):
        ims = [images_bgr[(k + i) % len(images_bgr)] for i in range(int(batch))]
        k += int(batch)
        t0 = time.perf_counter()
        pre = [preprocess(im, (h, w), stride=stride, auto=False) for im in ims]
        x = np.stack([p[0] for p in pre], 0)
        t1 = time.perf_counter()
        outputs = runner(x)
        t2 = time.perf_counter()
        dets = postprocess(outputs, runner.head, conf_thres, iou_thres, max_det=max_det)
        dets = [to_original(d, m.input_hw, m.orig_hw, (m.ratio, m.pad)) for d, (_, m) in zip(dets, pre)]
        t3 = time.perf_counter()
        if it >= int(warmup):
            stages.append((t1 - t0, t2 - t1, t3 - t2))
            totals.append(t3 - t0)
            n_det.append(np.mean([len(d) for d in dets]))
    s = np.median(np.asarray(stages), 0) * 1e3
    return {"mode": "end_to_end", "backend": getattr(runner, "backend", "?"), "batch": int(batch), "img_hw": [h, w],
            "warmup": int(warmup), "repeat": int(repeat), **latency_stats(totals, batch), **_batch_info(runner, batch),
            "stages_ms": {"pre": float(s[0]), "inference": float(s[1]), "post": float(s[2])},
            "detections_per_image": float(np.mean(n_det)), "source_images": len(images_bgr)}


# ----------------------------------------------------------------------------- inputs


def synthetic_bgr(n: int, hw=(480, 640), seed: int = 0) -> list[np.ndarray]:
    """``n`` uint8 BGR frames of size ``hw`` (smooth noise, a camera-frame stand-in)."""
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(int(n)):
        small = rng.integers(0, 256, (hw[0] // 16, hw[1] // 16, 3), dtype=np.uint8)
        out.append(cv2.resize(small, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR))
    return out


def load_bgr_images(source, n: int = 32) -> list[np.ndarray]:
    """Up to ``n`` readable images (sorted) from a file, folder or glob, as BGR arrays."""
    from ..data.sources import read_image, resolve_source

    ims = []
    for p in resolve_source(source):
        im = read_image(p)
        if im is not None:
            ims.append(im)
        if len(ims) >= int(n):
            break
    if not ims:
        raise YoloportError(f"no readable image in {source}")
    return ims


# ----------------------------------------------------------------------------- runners


def runner_for_batch(backend: str, model, img_hw, batch: int, work_dir, threads: int | None = None,
                     calibration=None, qconfig: dict | None = None, mode: str = "raw"):
    """A runner whose graph takes ``batch`` images: ``torch`` wraps ``model``; other backends export
    ``model`` at that batch and build the backend's artifact in ``work_dir/b<batch>`` (int8 when
    ``calibration`` is given) through :func:`yoloport.backends.registry.build_artifact`."""
    from ..backends.registry import build_artifact, canonical_name, get_spec, load_runner

    key = canonical_name(backend)
    if not get_spec(key).has_artifact:
        return load_runner(key, model=model, threads=threads)
    out = Path(work_dir) / f"{key}-{img_hw[1]}x{img_hw[0]}-b{int(batch)}"
    art = build_artifact(key, model, out, tuple(img_hw), calibration=calibration, qconfig=qconfig, mode=mode, batch=int(batch))
    return load_runner(key, artifact=art, model=model, threads=threads)


# ----------------------------------------------------------------------------- report


RUNTIME_PACKAGES = ("torch", "onnxruntime", "openvino")  # Python packages whose versions a result records


def machine_info() -> dict:
    """What the numbers were measured on (CPU, cores, library versions)."""
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count()}
    try:
        info["affinity_cpus"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    for mod in RUNTIME_PACKAGES:
        try:
            info[f"{mod}_version"] = __import__(mod).__version__
        except ImportError:
            pass
    return info


def format_results(results: list[dict], style: str = "text") -> str:
    """Bench results -> ``backend | mode | batch | graph batch | median ms | p90 ms | images/s`` table."""
    rows = []
    for r in results:
        gb = r.get("graph_batch")
        calls = r.get("calls_per_batch", 1)
        rows.append([
            r.get("label") or r.get("backend", "?"), r["mode"].replace("_", " "), r["batch"],
            f"{gb or 'any'}" + (f" (x{calls} calls)" if calls and calls > 1 else ""),
            f"{r['img_hw'][1]}x{r['img_hw'][0]}",
            fmt_float(r["latency_ms"]["median"], 2), fmt_float(r["latency_ms"]["p90"], 2), fmt_float(r["throughput_ips"], 1),
        ])
    return format_table(["backend", "mode", "batch", "graph batch", "size", "median ms", "p90 ms", "images/s"], rows,
                        align="llrlrrrr", style=style)
