"""``yoloport bench``: throughput (images/s) and latency (median, p90 ms) at given batch sizes.

    yoloport bench --backend onnxruntime --weights yolov5s.pt --batch 1 16 --img-size 640 640
    yoloport bench --backend openvino --artifact out/model.openvino.int8.xml --batch 1 16 --end-to-end --source imgs/
    yoloport bench --backend onnxruntime --weights yolov5s.pt --calib coco128/images --batch 1 16   # int8 per batch

Batch sizes and graphs (the rule):

- ``torch`` runs any batch.
- ``--weights`` (or ``--model-key``) with an exported backend: a graph is built *for each batch size*
  (fp32 export, or int8 from ``--calib`` calibrated at that batch), so ``--batch 16`` measures a
  batch-16 graph.
- ``--artifact``: the artifact is run as built. A graph with a fixed batch ``b`` runs a batch of ``B``
  as ``ceil(B/b)`` calls; the table's ``graph batch`` column says so (``1 (x16 calls)``). Rebuilding an
  int8 artifact would need its calibration set and would measure something other than the artifact.

``--end-to-end`` adds, per batch, what a user waits for: reading the images (``--source`` files, read
from disk at every call; without it, 640x480 synthetic frames JPEG-encoded in memory and decoded at
every call) + letterbox into a reused buffer + the model + host post-processing (decode + NMS +
scaling back), with each stage's median (read / pre / infer / post ms); model-only and end-to-end
calls alternate (round-robin), so "end to end = 1.1x the model alone" holds on a busy machine. The table and a JSON
(``--json``, default ``runs/bench/expN/bench.json``) are written; timings depend on the machine and
its load, which the JSON records.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from ..config import add_common_arguments, resolve_settings
from ..errors import YoloportError
from ..data.letterbox import input_multiple

DEFAULTS = {"backend": "torch", "batch": [1], "warmup": 3, "repeat": 20, "end_to_end": False, "calib_n": 32,
            "conf_thres": 0.25, "iou_thres": 0.45, "project": "runs/bench", "name": "exp"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p)
    p.add_argument("--backend", help="torch, onnxruntime, openvino, rknn, rknn-lite (a .rknn on the board; board timings come from the board) or mlu-sim (default torch)")
    p.add_argument("--artifact", help="built artifact for --backend (run as built)")
    p.add_argument("--batch", nargs="+", type=int, help="batch sizes (1)")
    p.add_argument("--img-size", "--img_size", dest="img_size", nargs="+", type=int, help="W H (or one number)")
    p.add_argument("--warmup", type=int, help="untimed calls first (3)")
    p.add_argument("--repeat", type=int, help="timed calls per batch size (20)")
    p.add_argument("--threads", type=int, help="CPU threads for the runtime")
    from ._model_args import add_runtime_option_arguments

    add_runtime_option_arguments(p)
    p.add_argument("--end-to-end", dest="end_to_end", action="store_true", default=None,
                   help="also time preprocess + model + post-processing")
    p.add_argument("--source", help="images for --end-to-end (file, folder, glob); default synthetic frames")
    p.add_argument("--calib", help="with --weights: build int8 graphs calibrated on these images (folder, glob, data YAML)")
    p.add_argument("--calib-n", dest="calib_n", type=int, help="calibration images (32)")
    p.add_argument("--conf-thres", dest="conf_thres", type=float, help="post-processing confidence threshold (0.25)")
    p.add_argument("--iou-thres", dest="iou_thres", type=float, help="NMS IoU threshold (0.45)")
    p.add_argument("--json", help="write the results here (default runs/bench/expN/bench.json)")
    p.add_argument("--markdown", action="store_true", default=None, help="print a markdown table")
    p.add_argument("--overwrite", action="store_true", default=None, help="replace an existing --json file")
    p.add_argument("--project", help="parent of the run folder (runs/bench)")
    p.add_argument("--name", help="run folder name (exp)")


def run(args: argparse.Namespace) -> int:
    from ..analysis import bench as B
    from ..backends.registry import canonical_name, get_spec

    s = resolve_settings(args, DEFAULTS)
    backend = canonical_name(s.backend)
    has_artifact = get_spec(backend).has_artifact
    batches = [int(b) for b in (s.batch if isinstance(s.batch, (list, tuple)) else [s.batch])]
    if s.artifact and s.calib:
        raise YoloportError("--calib builds int8 graphs from --weights; an --artifact is run as built")
    if not has_artifact and s.calib:
        raise YoloportError(f"--calib needs an exported backend (onnxruntime, openvino, ...), not {backend}")
    if not has_artifact and s.artifact:
        raise YoloportError(f"--artifact is for the exported backends; {backend} runs the checkpoint itself (--weights)")
    if s.artifact and not Path(s.artifact).exists():
        raise YoloportError(f"artifact {s.artifact} does not exist")
    out = _json_path(s) if s.json else None
    frames = None
    if s.end_to_end:
        frames = B.image_files(s.source, 32) if s.source else B.synthetic_jpegs(8)
    results, notes = [], []
    load_before = B.machine_load()
    with tempfile.TemporaryDirectory(prefix="yoloport-bench-") as tmp:
        for batch, runner, hw in _runners(s, backend, batches, Path(tmp), notes):
            if frames is None:
                results.append(B.bench_runner(runner, batch, hw, int(s.warmup), int(s.repeat)))
            else:  # model alone and end to end interleaved: their ratio holds while the load changes
                results.extend(B.bench_model_and_end_to_end(runner, batch, hw, frames, int(s.warmup), int(s.repeat),
                                                            float(s.conf_thres), float(s.iou_thres), threads=s.threads))
            print(f"batch {batch}: {results[-1]['throughput_ips']:.1f} images/s ({results[-1]['mode'].replace('_', ' ')})")
    load_after = B.machine_load()
    if load_before.get("busy") or load_after.get("busy"):
        notes.append(f"the machine was busy (load average {load_before['load1']} -> {load_after['load1']} on "
                     f"{load_after['cpus']} CPUs): timings are slower than on a quiet machine")
    for r in results:
        if r.get("calls_per_batch", 1) > 1:
            notes.append(f"batch {r['batch']} ran as {r['calls_per_batch']} calls of the artifact's fixed batch {r['graph_batch']}")
            break
    print(B.format_results(results, style="markdown" if s.markdown else "text"))
    for line in B.end_to_end_lines(results):
        print(line)
    for n in dict.fromkeys(notes):
        print(f"note: {n}")
    doc = {
        "backend": backend,
        "artifact": s.artifact,
        "weights": getattr(s, "weights", None) or getattr(s, "model_key", None),
        "int8_calibration": s.calib,
        "threads": s.threads,
        "warmup": int(s.warmup),
        "repeat": int(s.repeat),
        "end_to_end_source": (s.source or "synthetic") if s.end_to_end else None,
        "machine": B.machine_info(),
        "load": {"before": load_before, "after": load_after},
        "notes": list(dict.fromkeys(notes)),
        "results": results,
    }
    from ..io.paths import write_text_atomic

    out = out or _json_path(s)
    write_text_atomic(out, json.dumps(doc, indent=1))
    print(f"saved to {out}")
    return 0


def _runners(s, backend: str, batches: list[int], tmp: Path, notes: list):
    """Yield ``(batch, runner, (h, w))``: one runner for every batch (torch, --artifact) or one built graph per
    batch size (--weights with an exported backend)."""
    from ..analysis.bench import runner_for_batch
    from ._model_args import load_model_from_settings, make_runner

    if s.artifact:
        model = load_model_from_settings(s) if (getattr(s, "weights", None) or getattr(s, "model_key", None)) else None
        from ..backends.registry import get_spec, load_runner
        from ._model_args import runtime_options

        runner = load_runner(backend, artifact=s.artifact, model=model, threads=s.threads,
                             **runtime_options(s, get_spec(backend)))
        if getattr(runner, "simulated_note", None):
            notes.append(runner.simulated_note)
        _check_size(s, runner)
        hw = tuple(runner.input_hw) if runner.input_hw else _img_hw(s, model, int(runner.stride))
        try:
            for b in batches:
                yield b, runner, hw
        finally:
            runner.close()
        return
    model = load_model_from_settings(s)
    from ..backends.registry import get_spec

    if not get_spec(backend).has_artifact:
        runner = make_runner(argparse.Namespace(backend=backend, artifact=None, threads=s.threads), model)
        hw = _img_hw(s, model)
        for b in batches:
            yield b, runner, hw
        return
    hw = _img_hw(s, model)
    calibration = None
    if s.calib:
        from ..data.calibration import load_calibration

        calibration = load_calibration(s.calib, int(s.calib_n), hw, input_multiple(model.stride),
                                       warn=lambda m: notes.append(m))
    for b in batches:
        runner = runner_for_batch(backend, model, hw, b, tmp, s.threads, calibration)
        try:
            yield b, runner, hw
        finally:
            runner.close()
    notes.append(f"one {('int8' if calibration else 'fp32')} {backend} graph was built for each batch size")


def _img_hw(s, model=None, stride: int | None = None) -> tuple[int, int]:
    """``--img-size`` as (h, w), else the model's training size, else 640x640."""
    from ..data.letterbox import parse_img_size

    stride = stride or (input_multiple(model.stride) if model is not None else 32)
    if s.img_size:
        return parse_img_size(s.img_size, stride, warn=lambda m: print(f"warning: {m}"))
    if model is not None and getattr(model, "img_size", None):
        return tuple(model.img_size)
    return (640, 640)


def _check_size(s, runner) -> None:
    from ..data.letterbox import parse_img_size

    if s.img_size and runner.input_hw and parse_img_size(s.img_size, warn=None) != tuple(runner.input_hw):
        hw = runner.input_hw
        raise YoloportError(f"{s.artifact} takes {hw[1]}x{hw[0]} (W x H) inputs; drop --img-size or rebuild it")


def _json_path(s) -> Path:
    from ..io.paths import json_output_path

    return json_output_path(s.json, s.project, s.name, "bench.json", overwrite=bool(getattr(s, "overwrite", False)))
