"""Throughput and latency of any Runner, for the model alone and end to end.

- **model**: ``runner(x)`` on a ready ``[B, 3, H, W]`` batch, timed call by call after ``warmup`` calls;
- **end to end**: for each batch, ``B`` images read (files decoded, or in-memory JPEGs), letterboxed
  into one reused buffer (:func:`yoloport.data.letterbox.preprocess_batch`, fixed shape as batched
  validation), the runner, and the host post-processing (:func:`yoloport.ops.postprocess.postprocess`
  + scaling back to the original images), with each stage's median;
- **interleaved**: :func:`time_interleaved` times several configurations round-robin with one thread
  count and records the machine's load, so ratios between them hold on a busy machine.

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

from .._version import package_version
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


def end_to_end_step(runner, batch: int, img_hw, conf_thres: float = 0.25, iou_thres: float = 0.45, max_det: int = 300):
    """A function ``step(items) -> (detections, (read, pre, inference, post) seconds)`` that takes ``batch``
    images (paths, encoded bytes or BGR arrays) the whole way: read, letterbox into one input buffer
    reused by every call, ``runner``, decode + NMS + scaling back to the original pixels."""
    from ..data.letterbox import preprocess_batch
    from ..ops.postprocess import postprocess, to_original

    h, w = int(img_hw[0]), int(img_hw[1])
    stride = int(getattr(runner, "stride", 32))
    buffer = np.empty((int(batch), 3, h, w), dtype=np.float32)  # allocated once, every call writes all of it

    def step(items):
        t0 = time.perf_counter()
        ims = [_read(item) for item in items]
        t1 = time.perf_counter()
        x, metas = preprocess_batch(ims, (h, w), stride=stride, out=buffer)
        t2 = time.perf_counter()
        outputs = runner(x)
        t3 = time.perf_counter()
        dets = postprocess(outputs, runner.head, conf_thres, iou_thres, max_det=max_det)
        dets = [to_original(d, m.input_hw, m.orig_hw, (m.ratio, m.pad)) for d, m in zip(dets, metas)]
        t4 = time.perf_counter()
        return dets, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)

    return step


def bench_end_to_end(runner, batch: int, img_hw, images, warmup: int = 3, repeat: int = 20,
                     conf_thres: float = 0.25, iou_thres: float = 0.45, max_det: int = 300) -> dict:
    """Time what a user waits for, ``batch`` images per call: **read** (decode the image file, or the
    encoded bytes; nothing for images already in memory), **pre** (letterbox + normalise into one
    reused ``[B, 3, H, W]`` buffer, :func:`yoloport.data.letterbox.preprocess_batch`), **inference**
    (``runner``) and **post** (host decode + NMS + scaling back to the original pixels), cycling through
    ``images``: file paths, encoded images (1-D uint8 arrays, e.g. :func:`synthetic_jpegs`) or BGR
    arrays (:func:`end_to_end_step`). Adds ``stages_ms`` (median of each stage per call),
    ``model_share`` (median inference / median total), ``source_kind`` and ``detections_per_image``
    (mean, a sanity figure) to :func:`bench_runner`'s keys."""
    _check_counts(batch, warmup, repeat)
    if images is None or not len(images):
        raise YoloportError("end-to-end bench needs at least one image")
    h, w = int(img_hw[0]), int(img_hw[1])
    step = end_to_end_step(runner, batch, (h, w), conf_thres, iou_thres, max_det)
    k = 0
    stages, totals, n_det = [], [], []
    for it in range(int(warmup) + int(repeat)):
        items = [images[(k + i) % len(images)] for i in range(int(batch))]
        k += int(batch)
        dets, times = step(items)
        if it >= int(warmup):
            stages.append(times)
            totals.append(sum(times))
            n_det.append(np.mean([len(d) for d in dets]))
    s = np.median(np.asarray(stages), 0) * 1e3
    stats = latency_stats(totals, batch)
    return {"mode": "end_to_end", "backend": getattr(runner, "backend", "?"), "batch": int(batch), "img_hw": [h, w],
            "warmup": int(warmup), "repeat": int(repeat), **stats, **_batch_info(runner, batch),
            "stages_ms": {"read": float(s[0]), "pre": float(s[1]), "inference": float(s[2]), "post": float(s[3])},
            "model_share": float(s[2] / stats["latency_ms"]["median"]) if stats["latency_ms"]["median"] > 0 else None,
            "source_kind": _source_kind(images[0]), "detections_per_image": float(np.mean(n_det)),
            "source_images": len(images)}


def bench_model_and_end_to_end(runner, batch: int, img_hw, images, warmup: int = 3, repeat: int = 20,
                               conf_thres: float = 0.25, iou_thres: float = 0.45, max_det: int = 300,
                               threads: int | None = None) -> tuple[dict, dict]:
    """The model alone and end to end, timed round-robin (:func:`time_interleaved`: each round one
    model-only call on a ready batch and one end-to-end call of ``batch`` images), so their ratio holds
    while the machine's load changes. Returns ``(model result, end-to-end result)`` in the layouts of
    :func:`bench_runner` and :func:`bench_end_to_end`, both with the round-robin's ``load``."""
    _check_counts(batch, warmup, repeat)
    if images is None or not len(images):
        raise YoloportError("end-to-end bench needs at least one image")
    h, w = int(img_hw[0]), int(img_hw[1])
    x = np.random.default_rng(0).random((int(batch), 3, h, w), dtype=np.float32)
    step = end_to_end_step(runner, batch, (h, w), conf_thres, iou_thres, max_det)
    log, cursor = [], {"k": 0}

    def one_batch():
        k = cursor["k"]
        cursor["k"] = k + int(batch)
        dets, times = step([images[(k + i) % len(images)] for i in range(int(batch))])
        log.append((times, float(np.mean([len(d) for d in dets]))))

    timing = time_interleaved({"model": lambda: runner(x), "end_to_end": one_batch}, warmup, repeat, threads)
    load = {"before": timing["load_before"], "after": timing["load_after"], "other_cpu_share": timing["other_cpu_share"]}
    common = {"backend": getattr(runner, "backend", "?"), "batch": int(batch), "img_hw": [h, w], "warmup": int(warmup),
              "repeat": int(repeat), **_batch_info(runner, batch), "order": "round-robin", "load": load}
    model = {"mode": "model", **common,
             **latency_stats(np.asarray(timing["results"]["model"]["times_ms"]) / 1e3, batch)}
    timed = log[int(warmup):]
    s = np.median(np.asarray([t for t, _ in timed]), 0) * 1e3
    stats = latency_stats(np.asarray(timing["results"]["end_to_end"]["times_ms"]) / 1e3, batch)
    e2e = {"mode": "end_to_end", **common, **stats,
           "stages_ms": {"read": float(s[0]), "pre": float(s[1]), "inference": float(s[2]), "post": float(s[3])},
           "model_share": float(s[2] / stats["latency_ms"]["median"]) if stats["latency_ms"]["median"] > 0 else None,
           "source_kind": _source_kind(images[0]), "detections_per_image": float(np.mean([n for _, n in timed])),
           "source_images": len(images)}
    return model, e2e


def _read(item) -> np.ndarray:
    """One bench input as a BGR image: a path is read from disk, encoded bytes are decoded, an image is itself."""
    import cv2

    if isinstance(item, (str, Path)):
        from ..data.sources import require_image

        return require_image(item)
    arr = np.asarray(item)
    if arr.ndim == 1:
        im = cv2.imdecode(arr, cv2.IMREAD_COLOR)
        if im is None:
            raise YoloportError("end-to-end bench: an encoded image could not be decoded")
        return im
    return arr


def _source_kind(item) -> str:
    if isinstance(item, (str, Path)):
        return "files"
    return "encoded" if np.asarray(item).ndim == 1 else "decoded"


# ----------------------------------------------------------------------------- interleaved timing


def machine_load() -> dict:
    """The machine's load right now: 1-minute load average, usable CPUs and their ratio (``busy`` when
    the load average exceeds half the usable CPUs: timings from then are not quiet-machine figures)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        load1 = os.getloadavg()[0]
    except (AttributeError, OSError):
        return {"load1": None, "cpus": cpus, "load_per_cpu": None, "busy": None}
    return {"load1": round(load1, 2), "cpus": cpus, "load_per_cpu": round(load1 / cpus, 2), "busy": load1 / cpus > 0.5}


def _cpu_seconds_others() -> float | None:
    """CPU seconds spent by every process on the machine minus this one's (``/proc/stat``), or None."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:]
        ticks = os.sysconf("SC_CLK_TCK")
        busy_all = (int(fields[0]) + int(fields[1]) + int(fields[2]) + int(fields[5]) + int(fields[6])) / ticks
        t = os.times()
        return busy_all - (t.user + t.system)
    except (OSError, ValueError, IndexError):
        return None


def time_interleaved(calls: dict, warmup: int = 3, repeat: int = 20, threads: int | None = None) -> dict:
    """Time several configurations **round-robin**: each round calls every one once (in a rotating
    order), so a change in machine load hits every configuration alike and ratios between them hold.

    ``calls``: ``{label: zero-argument callable}`` (e.g. ``lambda: runner(x)``), every one set up with the
    same thread count (``threads``, recorded). After ``warmup`` untimed rounds, ``repeat`` timed rounds.
    Returns ``{"order": "round-robin", "threads", "warmup", "repeat", "load_before", "load_after",
    "other_cpu_share" (CPU time other processes used during the timed rounds, per usable CPU and second
    of wall time: 0 quiet, ~1 every core busy with other work; None where /proc is absent),
    "results": {label: {"min_ms", "median_ms", "p90_ms", "times_ms", "min_cpu_ms", "median_cpu_ms"}}}``.
    Compare configurations by ``min_ms`` (the least disturbed call) and report ``median_ms`` beside it.
    ``*_cpu_ms`` is the CPU time this process spent in the call (every thread of it): with one thread per
    configuration it is the work itself, which other processes on the machine do not lengthen (wall time
    of a call longer than a scheduler slice does), so it compares configurations on a busy machine.
    """
    if not calls:
        raise YoloportError("time_interleaved needs at least one configuration")
    _check_counts(1, warmup, repeat)
    labels = list(calls)
    for r in range(int(warmup)):
        for label in labels:
            calls[label]()
    load_before = machine_load()
    others0, wall0 = _cpu_seconds_others(), time.perf_counter()
    times = {label: [] for label in labels}
    cpu = {label: [] for label in labels}
    for r in range(int(repeat)):
        for j in range(len(labels)):
            label = labels[(r + j) % len(labels)]  # rotate who goes first
            c0, t0 = time.process_time(), time.perf_counter()
            calls[label]()
            t1, c1 = time.perf_counter(), time.process_time()
            times[label].append(t1 - t0)
            cpu[label].append(c1 - c0)
    wall = time.perf_counter() - wall0
    others1 = _cpu_seconds_others()
    share = None
    if others0 is not None and others1 is not None and wall > 0:
        share = round(max(0.0, others1 - others0) / (wall * load_before["cpus"]), 3)
    results = {}
    for label, t in times.items():
        ms = np.asarray(t) * 1e3
        cpu_ms = np.asarray(cpu[label]) * 1e3
        results[label] = {"min_ms": float(ms.min()), "median_ms": float(np.median(ms)),
                          "p90_ms": float(np.percentile(ms, 90)), "times_ms": [round(float(v), 4) for v in ms],
                          "min_cpu_ms": float(cpu_ms.min()), "median_cpu_ms": float(np.median(cpu_ms))}
    return {"order": "round-robin", "threads": threads, "warmup": int(warmup), "repeat": int(repeat),
            "load_before": load_before, "load_after": machine_load(), "other_cpu_share": share, "results": results}


def interleaved_speedups(timing: dict, reference: str) -> dict:
    """``{label: reference time / label time}`` from :func:`time_interleaved`, on the minimum (the figure
    least moved by other work) and on the median; plus ``busy`` (True when other processes used more
    than a quarter of the CPUs during the timing, or the load average said so)."""
    res = timing["results"]
    if reference not in res:
        raise YoloportError(f"no timing for the reference configuration {reference!r}")
    ref = res[reference]
    out = {label: {"by_min": ref["min_ms"] / r["min_ms"], "by_median": ref["median_ms"] / r["median_ms"]}
           for label, r in res.items()}
    share = timing.get("other_cpu_share")
    busy = bool(timing["load_before"].get("busy")) if share is None else share > 0.25
    return {"reference": reference, "speedups": out, "busy": busy, "other_cpu_share": share}


def cpu_time_speedups(timing: dict, labels: dict, reference: str) -> dict:
    """``{name: reference's minimum CPU ms / name's minimum CPU ms}`` from :func:`time_interleaved` results,
    ``labels`` mapping each name to its timing label (``reference`` a name). Meant for runners with one
    thread each: then CPU time is the work of the call, which other processes do not lengthen, where the
    wall time of a multi-threaded call waits for its slowest thread - and how much depends on the
    runtime's thread pool (measured on the embedded model at load 20: wall-time speed-ups 15.8x / 9.8x at
    one thread and 47x / 38x at two, CPU-time speed-ups at one thread 3.4x / 4.2x)."""
    res = timing["results"]
    ref = res[labels[reference]]["min_cpu_ms"]
    return {name: ref / res[label]["min_cpu_ms"] if res[label]["min_cpu_ms"] > 0 else None for name, label in labels.items()}


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


def synthetic_jpegs(n: int, hw=(480, 640), seed: int = 0, quality: int = 90) -> list[np.ndarray]:
    """:func:`synthetic_bgr` frames JPEG-encoded in memory (1-D uint8 arrays): decoding them is the read
    stage of an end-to-end bench without touching the disk."""
    import cv2

    out = []
    for im in synthetic_bgr(n, hw, seed):
        ok, buf = cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        if not ok:
            raise YoloportError("could not encode a synthetic frame")
        out.append(buf.reshape(-1))
    return out


def _readable_images(source, n: int) -> list[tuple[Path, np.ndarray]]:
    """Up to ``n`` ``(path, BGR image)`` pairs (sorted) from a file, folder or glob, unreadable files
    skipped; a YoloportError when none can be read."""
    from ..data.sources import IMAGE_SUFFIXES, read_image, resolve_source

    out = []
    for p in resolve_source(source):
        im = read_image(p) if p.suffix.lower() in IMAGE_SUFFIXES else None
        if im is not None:
            out.append((p, im))
        if len(out) >= int(n):
            break
    if not out:
        raise YoloportError(f"no readable image in {source}")
    return out


def image_files(source, n: int = 32) -> list[Path]:
    """Up to ``n`` readable image files (sorted) from a file, folder or glob: read again at every call of an
    end-to-end bench, as a user's images are."""
    return [p for p, _ in _readable_images(source, n)]


def load_bgr_images(source, n: int = 32) -> list[np.ndarray]:
    """Up to ``n`` readable images (sorted) from a file, folder or glob, as BGR arrays."""
    return [im for _, im in _readable_images(source, n)]


# ----------------------------------------------------------------------------- runners


def runner_for_batch(backend: str, model, img_hw, batch: int, work_dir, threads: int | None = None,
                     calibration=None, qconfig: dict | None = None, mode: str | None = "raw",
                     export_options: dict | None = None, convention: str | None = None):
    """A runner whose graph takes ``batch`` images: ``torch`` wraps ``model``; other backends export
    ``model`` at that batch (``mode``, ``export_options``, ``convention`` as for
    :func:`yoloport.backends.registry.build_artifact`) and build the backend's artifact in
    ``work_dir/b<batch>`` (int8 when ``calibration`` is given)."""
    from ..backends.registry import build_artifact, canonical_name, get_spec, load_runner

    key = canonical_name(backend)
    if not get_spec(key).has_artifact:
        return load_runner(key, model=model, threads=threads)
    out = Path(work_dir) / f"{key}-{img_hw[1]}x{img_hw[0]}-b{int(batch)}"
    art = build_artifact(key, model, out, tuple(img_hw), calibration=calibration, qconfig=qconfig, mode=mode, batch=int(batch),
                         export_options=export_options, convention=convention)
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
        version = package_version(mod)
        if version:
            info[f"{mod}_version"] = version
    return info


def end_to_end_lines(results: list[dict]) -> list[str]:
    """For each batch timed both ways: ``end to end = X.XXx the model alone`` (medians; minima too when the
    two were timed round-robin) with the stage breakdown."""
    lines = []
    for e in (r for r in results if r["mode"] == "end_to_end"):
        m = next((r for r in results if r["mode"] == "model" and r["batch"] == e["batch"]
                  and r.get("backend") == e.get("backend") and r["img_hw"] == e["img_hw"]), None)
        st = e["stages_ms"]
        ratio = f" = {e['latency_ms']['median'] / m['latency_ms']['median']:.2f}x the model alone" if m else ""
        if m and e.get("order") == "round-robin":
            ratio += f" (minima {e['latency_ms']['min'] / m['latency_ms']['min']:.2f}x, timed round-robin)"
        lines.append(f"{e.get('label') or e.get('backend', '?')} batch {e['batch']}: end to end {e['latency_ms']['median']:.2f} ms"
                     f"{ratio} (read {st['read']:.2f}, pre {st['pre']:.2f}, infer {st['inference']:.2f}, "
                     f"post {st['post']:.2f} ms; images from {e.get('source_kind', '?')})")
    return lines


def format_results(results: list[dict], style: str = "text") -> str:
    """Bench results -> ``backend | mode | batch | graph batch | size | median ms | p90 ms | images/s |
    read | pre | infer | post`` table (the four stage medians in ms for end-to-end rows)."""
    rows = []
    for r in results:
        gb = r.get("graph_batch")
        calls = r.get("calls_per_batch", 1)
        rows.append([
            r.get("label") or r.get("backend", "?"), r["mode"].replace("_", " "), r["batch"],
            f"{gb or 'any'}" + (f" (x{calls} calls)" if calls and calls > 1 else ""),
            f"{r['img_hw'][1]}x{r['img_hw'][0]}",
            fmt_float(r["latency_ms"]["median"], 2), fmt_float(r["latency_ms"]["p90"], 2), fmt_float(r["throughput_ips"], 1),
            *[fmt_float(r.get("stages_ms", {}).get(k), 2) for k in ("read", "pre", "inference", "post")],
        ])
    return format_table(["backend", "mode", "batch", "graph batch", "size", "median ms", "p90 ms", "images/s",
                         "read ms", "pre ms", "infer ms", "post ms"], rows, align="llrlrrrrrrrr", style=style)
