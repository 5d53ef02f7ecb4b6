"""``yoloport port``: export, lint, quantize for every target, validate, compare, profile, benchmark,
and write one report. Each stage is a small function; ``run_port`` strings them together and keeps
going when one target fails (the failure is recorded and named in the exit status).
"""
from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..engine.val import validate_runner  # module attribute: tests replace it
from . import deploy_folder
from .bootstrap import gate_not_judged, reference_not_judgeable
from ..errors import YoloportError
from ..data.letterbox import input_multiple

DEFAULT_TARGETS = "onnxruntime,openvino,rknn:rk3588,mlu-sim"
PRECISIONS = ("int8", "fp32", "fp16", "bf16")


@dataclass
class Target:
    """One port target: ``backend`` at ``precision`` with backend ``options`` (e.g. RKNN platform)."""

    backend: str
    precision: str = "int8"
    options: dict = field(default_factory=dict)

    @property
    def spec(self):
        from ..backends.registry import get_spec

        return get_spec(self.backend)

    @property
    def name(self) -> str:
        plat = self.options.get("platform")
        return "-".join(x for x in (self.backend, plat, self.precision) if x)

    @property
    def lint_target(self) -> str:
        return self.spec.lint_target

    @property
    def benchmarkable(self) -> bool:
        return self.spec.benchmarkable

    @property
    def profiled(self) -> bool:
        """Whether the port profiles this target's layer types on this machine (a profiler that needs a
        board, RKNN's, is left to ``yoloport profile``)."""
        return self.spec.profiler and self.spec.benchmarkable


def parse_targets(spec: str, full_int8: bool = False) -> list[Target]:
    """``"onnxruntime,openvino:fp32,rknn:rk3588,mlu-sim"`` -> targets (int8 unless a precision is named).

    Each target starts from its backend's ``port_qconfig`` (unless ``full_int8``: the Detect convolutions
    quantized too; backend options such as the RKNN platform are kept)."""
    from ..backends.registry import canonical_name, require_artifact_backend

    targets = []
    for item in [x.strip() for x in str(spec).split(",") if x.strip()]:
        parts = [p.strip().lower() for p in item.split(":")]
        backend = canonical_name(parts[0])
        bspec = require_artifact_backend(backend, "port (it is what every target is compared against)")
        if bspec.built_by:  # a runtime of another backend's artifacts: that backend is the target
            raise YoloportError(f"target {item!r}: {bspec.name} builds nothing, so it cannot be a port target; use "
                                f"--targets {':'.join([bspec.built_by, *parts[1:]])} ({bspec.name} runs the "
                                f"{bspec.built_by} backend's artifact{' on the board' if bspec.board else ''})")
        t = Target(backend, options={**bspec.target_defaults, **({} if full_int8 else bspec.port_qconfig)})
        for p in parts[1:]:
            opt = bspec.target_option(p) if bspec.target_option else None
            if p in PRECISIONS:
                t.precision = p
            elif opt is not None:
                t.options.update(opt)
            else:
                raise YoloportError(f"target {item!r}: {p!r} is neither a precision ({', '.join(PRECISIONS)}) "
                                    f"nor an option of {backend}")
        targets.append(t)
    if not targets:
        raise YoloportError(f"no targets in {spec!r}; for example --targets {DEFAULT_TARGETS}")
    names = [t.name for t in targets]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise YoloportError(f"target(s) named twice: {', '.join(sorted(dup))}")
    return targets


class Progress:
    """Prints which stage is running, with elapsed time; records stage durations for the report."""

    def __init__(self, total: int, quiet: bool = False):
        self.total, self.i, self.quiet = total, 0, quiet
        self.stages: list[dict] = []
        self.t0 = time.perf_counter()

    def stage(self, name: str):
        progress = self

        class _Stage:
            def __enter__(self):
                progress.i += 1
                self.t = time.perf_counter()
                if not progress.quiet:
                    print(f"[{progress.i:>2}/{progress.total}] {name} ...", flush=True)
                return self

            def __exit__(self, et, ev, tb):
                dt = time.perf_counter() - self.t
                progress.stages.append({"name": name, "seconds": round(dt, 2), "ok": et is None})
                if not progress.quiet:
                    status = "done" if et is None else f"FAILED ({ev})"
                    print(f"        {status} in {dt:.1f} s (total {time.perf_counter() - progress.t0:.0f} s)", flush=True)
                return False

        return _Stage()


def val_metrics(results: dict) -> dict:
    keep = ("precision", "recall", "mAP50", "mAP50_95", "n_images", "n_labels")
    out = {k: results.get(k) for k in keep}
    out["per_class"] = results.get("per_class")
    out["speed_ms"] = results.get("speed_ms") or results.get("times_ms")
    return out


@dataclass
class PortContext:
    """What every target of one port shares: where it writes, the input size, the data and the
    calibration set, the gate, the speed settings, and the fp32 reference (filled by
    :func:`run_reference`)."""

    run_dir: Path
    img_hw: tuple[int, int]
    data: str
    calibration: object  # CalibrationSet
    max_drop: float
    bench_batches: list[int]
    warmup: int
    repeat: int
    threads: int | None
    sample_images: list[str]
    profile: bool = True
    profile_runs: int = 5
    reference: dict = field(default_factory=dict)
    ref_runner: object | None = None
    speed_runners: dict = field(default_factory=dict)  # name -> batch-1 runner kept open for the interleaved timing
    cache_dir: Path | None = None  # where the fp32 reference's metrics are kept between runs (None: no cache)
    graph: dict = field(default_factory=dict)  # graph-shaping export options given by the user (convention, mode, sigmoid, ...)
    reference_stats: list | None = None  # the reference's per-image statistics on the reporting set (bootstrap, gallery)
    n_boot: int = 1000  # paired-bootstrap resamples of each target's drop
    not_judged: str | None = None  # why no drop can be judged against the reference (bootstrap.reference_not_judgeable)


def target_graph(t: Target, graph: dict, nkpt: int = 0) -> tuple[str, bool, str | None, dict]:
    """``(mode, sigmoid, convention, other export options)`` of ``t``'s export: the user's ``graph``
    options over the target backend's output convention (``SPEC.output_convention``; its keypoint
    variant for a head with ``nkpt`` keypoints)."""
    from ..deploy.conventions import resolve_export_choice

    g = dict(graph or {})
    mode, sigmoid, conv = resolve_export_choice(g.pop("convention", None), g.pop("mode", None), g.pop("sigmoid", None),
                                                default=t.spec.output_convention, nkpt=nkpt)
    return mode, sigmoid, conv, g


def run_target(t: Target, model, ctx: PortContext, progress: Progress) -> dict:
    """Export -> lint -> build -> validate -> compare -> profile -> bench (batch > 1) for one target; a
    benchmarkable target's batch-1 runner stays open in ``ctx.speed_runners`` for :func:`time_batch1`."""
    from ..analysis.compare import compare_runners
    from ..backends.registry import artifact_size, build, export_for, load_runner
    from ..deploy.lint import lint_model

    out = ctx.run_dir / t.name
    out.mkdir(parents=True, exist_ok=True)
    img_hw = ctx.img_hw
    rec: dict = {"name": t.name, "backend": t.backend, "precision": t.precision, "options": t.options,
                 "lint_target": t.lint_target}
    if t.spec.simulated_note:
        rec["note"] = t.spec.simulated_note
    with progress.stage(f"{t.name}: export + lint ({t.lint_target})"):
        mode, sigmoid, conv, opts = target_graph(t, ctx.graph, model.detect.nkpt)
        # a batch-dynamic backend gets one graph for batched validation and every benchmarked batch
        dyn = {"dynamic": True} if t.spec.batch_dynamic else {}
        exp = export_for(t.backend, model, out / "model.fp32.onnx", img_hw, mode=mode, batch=1,
                         export_options={**opts, "sigmoid": sigmoid, **dyn}, convention=conv)
        rep = lint_model(str(exp.path), t.lint_target)
        rec["onnx"] = str(exp.path)
        rec["convention"] = {"name": conv, "mode": mode, "sigmoid": sigmoid}
        rec["lint"] = {"errors": len(rep.errors), "warnings": len(rep.warnings), "findings": rep.to_dict().get("findings", [])}
    with progress.stage(f"{t.name}: build artifact"):
        t0 = time.perf_counter()
        qconfig = {"precision": t.precision, **t.options}
        calib = ctx.calibration if t.precision == "int8" else None
        art = build(t.backend, model, exp, out, calibration=calib, qconfig=qconfig)
        rec["build_s"] = round(time.perf_counter() - t0, 2)
        rec["artifact"] = str(art)
        rec["qconfig"] = qconfig
        rec["size_mb"] = round(artifact_size(art) / 1e6, 3)
    # raw outputs for every target (mlu-sim's fused NMS would apply detection thresholds to validation)
    runner = load_runner(t.backend, artifact=art, model=model, threads=ctx.threads, output="raw")
    keep_open = False
    try:
        with progress.stage(f"{t.name}: validate"):
            res = validate_runner(runner, ctx.data, img_hw, names=list(model.names), image_stats=True)
            rec["val"] = val_metrics(res)
            ref = ctx.reference["val"]["mAP50_95"]
            rec["drop"] = round((ref - rec["val"]["mAP50_95"]) * 100, 3)
            judge_drop(rec, res.get("image_stats"), model, ctx)
        with progress.stage(f"{t.name}: compare with fp32"):
            cmp_ = compare_runners(ctx.ref_runner, runner, ctx.sample_images, img_hw, conf_thres=0.25, iou_thres=0.45)
            # the head tensors when both layouts agree, else (another convention) the decoded predictions
            compared = cmp_["outputs"] or [o for o in [cmp_.get("decoded"), *(cmp_.get("decoded_parts") or [])] if o]
            rec["compare"] = {"outputs": [{"name": o.get("output"), "cosine": o.get("cosine"), "sqnr_db": o.get("sqnr_db")}
                                          for o in compared], "summary": cmp_["summary"]}
        if t.profiled and ctx.profile:
            with progress.stage(f"{t.name}: profile layer types"):
                rec["profile"] = profile_target(t, art, ctx)
        if t.benchmarkable and ctx.bench_batches:
            big = [b for b in ctx.bench_batches if b > 1]
            if big:
                with progress.stage(f"{t.name}: benchmark batch {' '.join(map(str, big))}"):
                    rec["bench"] = bench_target(t, model, ctx, big, runner if t.spec.batch_dynamic else None)
            if 1 in ctx.bench_batches:
                ctx.speed_runners[t.name] = runner
                keep_open = True
    finally:
        if not keep_open:
            runner.close()
    rec["deploy"] = deploy_folder.for_port_target(out / "deploy", rec, ctx.calibration, ctx.sample_images)
    return rec


def judge_drop(rec: dict, stats, model, ctx: PortContext) -> None:
    """The target's drop with its paired-bootstrap interval (``drop_ci``), the ``--max-drop`` gate judged
    with it (``gate``, ``passed``) and the images where it disagrees most with fp32 (``gallery``), all on
    the reporting set."""
    from .bootstrap import gate_verdict, paired_bootstrap_drop
    from .gallery import write_gallery

    ci = None
    if stats is not None and ctx.reference_stats is not None:
        ci = paired_bootstrap_drop(ctx.reference_stats, stats, n_boot=ctx.n_boot)
        rows = write_gallery(ctx.reference_stats, stats, ctx.run_dir / "gallery", list(model.names),
                             ("fp32", rec["name"]), prefix=f"{rec['name']}_")
        rec["gallery"] = [dict(r, file=str(Path(r["file"]).relative_to(ctx.run_dir))) for r in rows]  # report-relative
    rec["drop_ci"] = ci
    rec["gate"] = gate_verdict(rec["drop"], ci, ctx.max_drop, ctx.not_judged)
    rec["passed"] = rec["gate"]["passed"]


def profile_target(t: Target, artifact, ctx: PortContext) -> dict:
    from ..analysis.profile import profile_artifact, synthetic_images

    images = synthetic_images(1, ctx.img_hw)
    return profile_artifact(t.backend, artifact, images, runs=ctx.profile_runs, threads=ctx.threads).to_dict()


def bench_target(t: Target, model, ctx: PortContext, batches, any_batch_runner=None) -> list[dict]:
    """Throughput at each batch > 1: on ``any_batch_runner`` (the validated artifact, when it takes any
    batch), else on an artifact built for that batch."""
    from ..analysis.bench import bench_runner, runner_for_batch

    if any_batch_runner is not None:
        return [bench_row(bench_runner(any_batch_runner, b, ctx.img_hw, warmup=ctx.warmup, repeat=max(3, ctx.repeat // b)))
                for b in batches]
    rows = []
    mode, sigmoid, conv, opts = target_graph(t, ctx.graph, model.detect.nkpt)
    for b in batches:
        r = runner_for_batch(t.backend, model, ctx.img_hw, b, ctx.run_dir / t.name / "bench",
                             threads=ctx.threads, calibration=ctx.calibration if t.precision == "int8" else None,
                             qconfig={"precision": t.precision, **t.options}, mode=mode,
                             export_options={**opts, "sigmoid": sigmoid}, convention=conv)
        try:
            rows.append(bench_row(bench_runner(r, b, ctx.img_hw, warmup=ctx.warmup, repeat=max(3, ctx.repeat // b))))
        finally:
            r.close()
    return rows


def time_batch1(ctx: PortContext, records: dict, model=None) -> dict:
    """Batch-1 latency of the reference and every benchmarkable target, timed **round-robin** in one
    run with one thread count (:func:`yoloport.analysis.bench.time_interleaved`), so machine load hits
    them alike. The speed-ups are ratios of minimum **CPU time** of the same configurations with one
    thread each, timed round-robin right after (:func:`~yoloport.analysis.bench.cpu_time_speedups`: they
    hold on a busy machine, where wall-time ratios follow each runtime's thread pool); the wall-time
    ratios are kept beside them. Adds a batch-1 row to each record's ``bench`` and returns the report's
    ``speed`` section (with ``busy`` when other work shared the CPUs)."""
    import numpy as np

    from ..analysis.bench import cpu_time_speedups, interleaved_speedups, time_interleaved

    x = np.random.default_rng(0).random((1, 3, *ctx.img_hw), dtype=np.float32)
    runners = {ctx.reference["name"]: ctx.ref_runner, **ctx.speed_runners}
    timing = time_interleaved({name: (lambda r=r: r(x)) for name, r in runners.items()}, ctx.warmup, ctx.repeat, ctx.threads)
    single_timing = timing
    if ctx.threads != 1:  # rounds of their own: no multi-threaded pool spinning on the CPU while they are timed
        single = {name: single_thread_runner(name, r, ctx, records, model) for name, r in runners.items()}
        try:
            single_timing = time_interleaved({name: (lambda r=r: r(x)) for name, r in single.items()}, ctx.warmup, ctx.repeat, 1)
        finally:
            for r in single.values():
                r.close()
    wall = interleaved_speedups(timing, ctx.reference["name"])
    cpu = cpu_time_speedups(single_timing, {name: name for name in runners}, ctx.reference["name"])
    for name in runners:
        res = timing["results"][name]
        row = {"batch": 1, "latency_ms_median": res["median_ms"], "latency_ms_p90": res["p90_ms"],
               "latency_ms_min": res["min_ms"], "throughput_ips": 1000.0 / res["median_ms"] if res["median_ms"] else None,
               "speedup_1thread_cpu": cpu[name], "speedup_by_min": wall["speedups"][name]["by_min"],
               "speedup_by_median": wall["speedups"][name]["by_median"],
               "cpu_ms_min_1thread": single_timing["results"][name]["min_cpu_ms"]}
        records[name]["bench"] = [row] + [b for b in records[name].get("bench") or [] if b.get("batch") != 1]
    summary = {k: timing.get(k) for k in ("order", "threads", "warmup", "repeat", "load_before", "load_after", "other_cpu_share")}
    return {**summary, "reference": wall["reference"], "busy": wall["busy"], "speedups": cpu,
            "speedup_basis": "ratio of minimum CPU times with one thread each (timed round-robin; holds under load)",
            "speedups_wall": {k: v["by_min"] for k, v in wall["speedups"].items()},
            "single_thread_load": {k: single_timing.get(k) for k in ("load_before", "load_after", "other_cpu_share")}}


def single_thread_runner(name: str, runner, ctx: PortContext, records: dict, model=None):
    """``runner`` itself when the port runs one thread, else the same artifact (or the reference model)
    loaded again with one intra-op thread."""
    from ..backends.registry import get_spec, load_runner

    if ctx.threads == 1:
        return runner
    rec = records[name]
    if not get_spec(rec["backend"]).has_artifact:
        return load_runner(rec["backend"], model=model if model is not None else runner.model, threads=1)
    return load_runner(rec["backend"], artifact=rec["artifact"], threads=1, output="raw")


def bench_row(res: dict) -> dict:
    lat = res.get("latency_ms", {})
    return {"batch": res["batch"], "latency_ms_median": lat.get("median"), "latency_ms_p90": lat.get("p90"),
            "throughput_ips": res.get("throughput_ips")}


def reference_cache_key(model, data, img_hw) -> str:
    """What the fp32 reference's metrics depend on, hashed: the model's fingerprint (weights and names),
    the input size, the content of every validation image and its label file (sha256: a regenerated
    identical set hits, any changed byte misses) and the yoloport version. A cached result is never stale."""
    import hashlib
    import json

    from .._version import __version__
    from ..backends.base import model_fingerprint
    from ..data.dataset import DataConfig, img2label_path, list_images, load_data_yaml

    cfg = data if isinstance(data, DataConfig) else load_data_yaml(data)
    h = hashlib.sha256()
    h.update(json.dumps({"model": model_fingerprint(model), "img_hw": list(img_hw), "names": list(cfg.names),
                         "version": __version__}, sort_keys=True).encode())
    for img in list_images(cfg.val or cfg.train):
        for f in (Path(img), img2label_path(img)):
            h.update(hashlib.sha256(f.read_bytes()).digest() if f.is_file() else b"-")
    return h.hexdigest()[:24]


def _cached_reference(ctx: PortContext, key: str) -> tuple[dict, list] | None:
    """``(val metrics, per-image statistics)`` cached under ``key``, or None (absent or damaged: measure again)."""
    import json

    from ..engine.image_stats import load_image_stats

    f = ctx.cache_dir / f"reference-{key}.json" if ctx.cache_dir else None
    if f is None or not f.is_file():
        return None
    try:
        doc = json.loads(f.read_text())
        stats = load_image_stats(f.with_suffix(".stats.npz"))
    except (OSError, ValueError, YoloportError):
        return None  # a damaged cache entry is not trusted: measure again
    ok = isinstance(doc, dict) and doc.get("key") == key and doc.get("val", {}).get("n_images") == len(stats)
    stats = _stats_for_current_files(stats, ctx.data) if ok else None
    return (doc["val"], stats) if stats is not None else None


def _stats_for_current_files(stats: list, data) -> list | None:
    """Cached per-image statistics with their paths set to this run's files (the cache key hashed the
    same content: a regenerated identical set lives elsewhere), matched by file name; None when the
    names do not match one to one."""
    from ..data.dataset import list_images

    by_name = {p.name: p for p in list_images(data.val or data.train)}
    if len(by_name) != len(stats) or any(Path(s.path).name not in by_name for s in stats):
        return None
    return [replace(s, path=str(by_name[Path(s.path).name])) for s in stats]


def _store_reference(ctx: PortContext, key: str, val: dict, stats) -> None:
    import json

    from ..engine.image_stats import save_image_stats
    from ..io.paths import write_text_atomic

    if ctx.cache_dir is None or stats is None:
        return
    try:
        ctx.cache_dir.mkdir(parents=True, exist_ok=True)
        save_image_stats(ctx.cache_dir / f"reference-{key}.stats.npz", stats)
        write_text_atomic(ctx.cache_dir / f"reference-{key}.json", json.dumps({"key": key, "val": val}, default=float))
    except OSError:
        pass  # a cache that cannot be written costs time, not correctness


def run_reference(model, ctx: PortContext, progress: Progress) -> dict:
    """Validate (and benchmark) the torch fp32 reference; sets ``ctx.ref_runner``. The metrics come from
    ``ctx.cache_dir`` when model and data are unchanged (:func:`reference_cache_key`)."""
    from ..analysis.bench import bench_runner
    from ..backends.registry import REFERENCE, load_runner

    runner = load_runner(REFERENCE, model=model, threads=ctx.threads)
    ctx.ref_runner = runner
    rec = {"name": f"{REFERENCE}-fp32", "backend": REFERENCE, "precision": "fp32"}
    with progress.stage(f"{REFERENCE} fp32 reference: validate"):
        key = reference_cache_key(model, ctx.data, ctx.img_hw) if ctx.cache_dir else None
        cached = _cached_reference(ctx, key) if key else None
        if cached is not None:
            (rec["val"], ctx.reference_stats), rec["val_from_cache"] = cached, key
        else:
            res = validate_runner(runner, ctx.data, ctx.img_hw, names=list(model.names), image_stats=True)
            rec["val"], ctx.reference_stats = val_metrics(res), res.get("image_stats")
            if key:
                _store_reference(ctx, key, rec["val"], ctx.reference_stats)
        rec["drop"] = 0.0
    big = [b for b in ctx.bench_batches if b > 1]
    if big:
        with progress.stage(f"{REFERENCE} fp32 reference: benchmark batch {' '.join(map(str, big))}"):
            rec["bench"] = [bench_row(bench_runner(runner, b, ctx.img_hw, warmup=ctx.warmup,
                                                   repeat=max(3, ctx.repeat // b))) for b in big]
    return rec


def run_guarded(t: Target, run_one) -> dict:
    """``run_one(t)``, the record of one target; a failure becomes that target's record (its message, and
    the traceback when a backend crashed) so that the port goes on with the other targets."""
    try:
        return run_one(t)
    except YoloportError as e:
        return {"name": t.name, "backend": t.backend, "precision": t.precision, "error": str(e)}
    except Exception as e:  # a backend crashed: record it, keep porting the other targets
        return {"name": t.name, "backend": t.backend, "precision": t.precision,
                "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=8)}


def run_port(model, data, targets: list[Target], run_dir: Path, img_hw, calib_source, calib_n: int = 32,
             max_drop: float = 1.0, bench_batches=(1, 16), warmup: int = 2, repeat: int = 10, threads=None,
             n_compare: int = 4, profile: bool = True, data_note: str | None = None, quiet: bool = False,
             graph: dict | None = None, cache_dir=None, overlap: str = "split", n_boot: int = 1000) -> dict:
    """The whole port; returns the report dict (also written into ``run_dir``). ``graph``: export options
    given by the user (``convention``, ``mode``, ``sigmoid``, ...); each target's convention fills the rest.
    ``overlap``: what to do when calibration and validation images overlap (:mod:`yoloport.data.protocol`:
    ``split`` them by content hash, or ``error``); every drop is measured on the reporting set with a
    paired-bootstrap interval of ``n_boot`` resamples.
    A keypoint head (a face model) is scored by the face suite instead (:mod:`yoloport.analysis.port_face`)."""
    if getattr(model.detect, "nkpt", 0):
        from .port_face import run_face_port

        return run_face_port(model, data, targets, run_dir, img_hw, calib_source, calib_n=calib_n, max_drop=max_drop,
                             threads=threads, n_compare=n_compare, quiet=quiet, graph=graph)
    from ..analysis.report import write_report
    from ..data.calibration import load_calibration
    from ..data.dataset import load_data_yaml
    from ..data.protocol import used_calibration

    big = [b for b in (bench_batches or []) if b > 1]
    n_stages = 2 + (1 if big else 0) + (1 if 1 in (bench_batches or []) else 0) + sum(
        3 + 1 + (1 if t.profiled and profile else 0) + (1 if t.benchmarkable and big else 0) for t in targets)
    progress = Progress(n_stages, quiet)
    cfg = load_data_yaml(data)
    with progress.stage("calibration set"):
        sets = port_image_sets(calib_source, cfg, data, overlap)
        calib = load_calibration(list(sets["calibration"].paths), n=calib_n, img_size_hw=img_hw,
                                 stride=input_multiple(model.stride), warn=lambda m: print(f"warning: {m}"))
        calib.source = str(calib_source)
        sets["record"]["calibration"] = used_calibration(calib, sets["record"]["calibration"])
    val_images = list(sets["reporting"].paths)
    ctx = PortContext(run_dir=run_dir, img_hw=tuple(img_hw), data=replace(cfg, val=val_images), calibration=calib,
                      max_drop=max_drop, n_boot=n_boot,
                      bench_batches=list(bench_batches or []), warmup=warmup, repeat=repeat, threads=threads,
                      sample_images=[str(p) for p in val_images[:n_compare]], profile=profile, graph=dict(graph or {}),
                      cache_dir=Path(cache_dir) if cache_dir else None)
    info = model.info(tuple(img_hw))
    report = {
        "model": {"name": _model_name(model), "parameters": info["parameters"], "gflops": info["gflops"],
                  "source": (getattr(model, "source", None) or {}).get("path", getattr(model, "model_key", "")),
                  "names": list(model.names)},
        "data": {"yaml": str(data), "n_images": len(val_images), "note": data_note},  # the reporting set
        "calibration": calib.to_dict(),
        "protocol": sets["record"],
        "img_hw": list(img_hw),
        "max_drop": max_drop,
        "targets": [],
        "notes": list(dict.fromkeys(t.spec.simulated_note for t in targets if t.spec.simulated_note)),
    }
    ctx.reference = report["reference"] = run_reference(model, ctx, progress)
    ref_val = ctx.reference["val"]
    ctx.not_judged = reference_not_judgeable(ref_val.get("mAP50_95"), ref_val.get("n_labels"), max_drop)
    if ctx.not_judged:
        print(f"warning: {ctx.not_judged}: no target's drop can be judged against it, so every --max-drop gate fails")
    failed = []
    for t in targets:
        rec = run_guarded(t, lambda t: run_target(t, model, ctx, progress))
        if rec.get("error"):
            failed.append(f"{t.name}: {rec['error']}")
        elif rec.get("passed") is False and gate_not_judged(rec.get("gate")):
            failed.append(f"{t.name}: --max-drop gate {rec['gate']['status']}")
        elif rec.get("passed") is False:
            ci = f" (interval {rec['drop_ci']['low']:.2f} to {rec['drop_ci']['high']:.2f}; {rec['gate']['status']})" \
                if rec.get("drop_ci") else ""
            failed.append(f"{t.name}: mAP@0.5:0.95 drop {rec['drop']:.2f} points > --max-drop {max_drop}{ci}")
        report["targets"].append(rec)
    try:
        if 1 in ctx.bench_batches:
            with progress.stage("batch-1 latency, every benchmarkable target and the reference round-robin"):
                by_name = {r["name"]: r for r in [report["reference"], *report["targets"]]}
                report["speed"] = time_batch1(ctx, by_name, model)
            if report["speed"]["busy"]:
                report["notes"].append(
                    f"the machine was busy while timing (other processes used {report['speed']['other_cpu_share'] or 0:.0%} "
                    "of the CPUs): latencies are inflated; the speed-ups are ratios of CPU time with one thread each, "
                    "timed round-robin, which other work does not lengthen")
    finally:
        for r in ctx.speed_runners.values():
            r.close()
    report["failed"] = failed
    report["stages"] = progress.stages
    report["total_s"] = round(time.perf_counter() - progress.t0, 1)
    report["paths"] = {k: str(v) for k, v in write_report(run_dir, report).items()}
    return report


def port_image_sets(calib_source, cfg, data, overlap: str) -> dict:
    """The port's protocol: the calibration pool (``calib_source``) and the reporting set (the data's val
    split) made disjoint (:func:`yoloport.data.protocol.make_disjoint`, one warning line when they
    overlap); the port makes no decision on images, so it has no selection set. Returns
    ``{"calibration": ImageSet, "reporting": ImageSet, "record": protocol record}``."""
    from ..data.calibration import resolve_source
    from ..data.dataset import list_images
    from ..data.protocol import image_set, make_disjoint, protocol_record

    split = "val" if cfg.val else "train"
    pool, _ = resolve_source(calib_source)
    if not pool:
        raise YoloportError(f"calibration source {calib_source} holds no image")
    calib_set = image_set("calibration", str(calib_source), pool)
    report_set = image_set("reporting", f"{data}:{split}", list_images(cfg.val or cfg.train))
    (calib_set, report_set), overlaps = make_disjoint([calib_set, report_set], overlap,
                                                      warn=lambda m: print(f"warning: {m}"))
    record = protocol_record([calib_set, report_set], overlaps, overlap,
                             not_used={"selection": "port makes no decision on images: no search, no accuracy control"})
    return {"calibration": calib_set, "reporting": report_set, "record": record}


def _model_name(model) -> str:
    key = getattr(model, "model_key", None)
    if key:
        return key
    src = (getattr(model, "source", None) or {}).get("path")
    return Path(src).stem if src else str(model.yaml.get("yaml_file", "model")).replace(".yaml", "")
