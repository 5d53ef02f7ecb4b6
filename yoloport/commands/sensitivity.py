"""``yoloport sensitivity``: rank layers by the error their int8 quantization adds; mixed precision.

    yoloport sensitivity --weights X --backend B --calib SRC [--calib-n 32] [--img-size W H] [--top 10]
                         [--data D.yaml [--max-drop 0.5] [--max-float 16]] [--out DIR]

The ranking (always) quantizes each convolution alone in a PyTorch fake-quantization model and
measures the Detect head's output error against float over ``--eval-n`` calibration images
(backend-neutral; see :mod:`yoloport.quant.ranking`). With ``--data`` (a labelled data YAML),
the backend's artifact is rebuilt with layers kept in float until the mAP@0.5:0.95 drop against the
torch fp32 reference is at most ``--max-drop`` points: ``--strategy greedy`` (default) walks the
ranking and keeps a layer only when the measured mAP rises with it; ``prefix`` keeps the worst
K = 0, 1, 2, 4, ... up to ``--max-float``. Prints the tables and writes ``DIR/sensitivity.json``.

Exit status: 0 done (also when the drop target was not met: the JSON says ``met: false``), 2 user
error (bad path, unknown backend, missing package, ...).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..errors import YoloportError
from ..data.letterbox import input_multiple


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..config import add_common_arguments

    add_common_arguments(p)
    p.add_argument("--backend", help="onnxruntime, openvino, rknn or mlu-sim: names its layers in the ranking and "
                                     "is the target of the mixed-precision search")
    p.add_argument("--calib", metavar="SRC", help="calibration images: folder, glob, data YAML[:split] or list file")
    p.add_argument("--calib-n", type=int, default=None, help="number of calibration images (default 32)")
    p.add_argument("--calib-seed", type=int, default=None, help="seed for sampling them (default 0)")
    p.add_argument("--eval-n", type=int, default=None, help="calibration images the ranking measures the error on (default 8)")
    p.add_argument("--img-size", nargs="+", type=int, metavar="W H", help="fixed input size, W H (default: the model's, else 640)")
    p.add_argument("--act-scheme", choices=("asymmetric", "symmetric"), default=None,
                   help="ranking activations: asymmetric uint8 (onnxruntime, openvino, rknn) or symmetric int8 "
                        "(mlu-sim); default: --backend's own, else asymmetric")
    p.add_argument("--per-tensor", dest="per_tensor", action="store_true", default=None,
                   help="ranking: per-tensor weight scales (default: --backend's own: mlu-sim per tensor, the others per channel)")
    p.add_argument("--ort-debug", dest="ort_debug", action="store_true", default=None,
                   help="also build onnxruntime's fully int8 model and show each conv's accumulated output error in it")
    p.add_argument("--top", type=int, default=None, help="rows of the ranking table printed (default 10; the JSON has all)")
    p.add_argument("--data", help="labelled data YAML[:split]: the mixed-precision search decides on its images (the "
                                  "selection set)")
    p.add_argument("--report-data", dest="report_data", metavar="YAML[:SPLIT]",
                   help="labelled images the chosen build's drop is reported on (default: --data's images split by "
                        "content hash, half to select, half to report)")
    p.add_argument("--overlap", choices=("split", "error"), default=None,
                   help="when calibration, selection and reporting images overlap: split them by content hash "
                        "(default) or refuse")
    p.add_argument("--max-drop", type=float, default=None, help="mAP@0.5:0.95 drop allowed, in points (default 0.5)")
    p.add_argument("--max-float", type=int, default=None, help="most layers kept in float (default 16)")
    p.add_argument("--strategy", choices=("greedy", "prefix"), default=None,
                   help="greedy (default): walk the ranking and keep a layer in float only if the measured mAP rises; "
                        "prefix: the worst K = 0, 1, 2, 4, ... layers")
    p.add_argument("--max-tries", type=int, default=None, help="greedy: ranked layers tried at most (default 2 * --max-float)")
    p.add_argument("--keep-confidence", type=float, default=None,
                   help="greedy: keep a layer in float only when its mAP gain on the selection images holds at this "
                        "paired-bootstrap confidence (default 0.8: the gain is above 0 in 90%% of resamples); 0: any rise")
    p.add_argument("--float-dtype", choices=("float16", "int16"), default=None,
                   help="rknn: what the kept layers become in hybrid quantization (default float16)")
    p.add_argument("--head-fp32", choices=("tail", "convs", "none"), help="the backend's head_fp32 (default: the backend's own)")
    p.add_argument("--platform", help="rknn target platform (default rk3588)")
    p.add_argument("--batch-size", type=int, default=None, help="validation batch size (default 8; fixed-batch artifacts use theirs)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the runtimes")
    p.add_argument("--out", help="output folder (default runs/sensitivity/<backend>)")
    p.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty --out folder")


DEFAULTS = {"calib_n": 32, "calib_seed": 0, "eval_n": 8, "top": 10, "max_drop": None, "max_float": 16,
            "float_dtype": "float16", "batch_size": 8, "per_tensor": False, "ort_debug": False, "strategy": "greedy",
            "max_tries": None, "keep_confidence": 0.8}


def check_args(s: argparse.Namespace) -> None:
    """User mistakes the command can see before loading anything."""
    if not s.calib:
        raise YoloportError("no calibration images: pass --calib SRC (folder, glob, data YAML or list file)")
    for name in ("calib_n", "eval_n", "top", "batch_size"):
        if int(getattr(s, name)) < 1:
            raise YoloportError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(s, name)}")
    if int(s.max_float) < 0:
        raise YoloportError(f"--max-float must be >= 0, got {s.max_float}")
    if s.max_tries is not None and int(s.max_tries) < 0:
        raise YoloportError(f"--max-tries must be >= 0, got {s.max_tries}")
    if not 0 <= float(s.keep_confidence) < 1:
        raise YoloportError(f"--keep-confidence must be in [0, 1) (0: any rise counts), got {s.keep_confidence}")
    if s.max_drop is not None and not s.data:
        raise YoloportError("--max-drop needs --data (a labelled data YAML to measure the mAP drop on)")
    if s.max_drop is not None and not s.max_drop >= 0:
        raise YoloportError(f"--max-drop must be >= 0 points, got {s.max_drop}")
    if s.data and not s.backend:
        raise YoloportError("the mixed-precision search (--data) needs --backend (onnxruntime, openvino, rknn, mlu-sim)")
    if s.data and not Path(str(s.data).rsplit(":", 1)[0] if not str(s.data).lower().endswith((".yaml", ".yml"))
                            else s.data).is_file():
        raise YoloportError(f"--data {s.data}: no such file")
    if s.report_data and not s.data:
        raise YoloportError("--report-data needs --data (the mixed-precision search)")


def run(args: argparse.Namespace) -> int:
    from ..backends.registry import canonical_name, check_qconfig, require_artifact_backend
    from ..config import resolve_settings
    from .quantize import load_model_from_args

    s = resolve_settings(args, DEFAULTS)
    check_args(s)
    backend = canonical_name(s.backend) if s.backend else None
    if backend:
        require_artifact_backend(backend, "rank or search (it is the fp32 reference)")
        # a bad backend setting fails now, before any folder is claimed or model loaded
        check_qconfig(backend, {"precision": "int8", **_qconfig(s)})
    from ..io.paths import claim_out_dir, unlock_run_dir

    model = load_model_from_args(s)
    out, lock = claim_out_dir(s.out or f"runs/sensitivity/{backend or 'ranking'}", overwrite=bool(s.overwrite),
                              explicit=bool(s.out))
    try:
        return _rank_and_report(s, backend, model, out)
    finally:
        unlock_run_dir(lock)


def search_protocol(s, nc: int):
    """Calibration pool (``--calib``), selection (``--data``) and reporting (``--report-data``, else the
    selection's own images) made disjoint (:mod:`yoloport.data.protocol`). Returns ``(calibration paths,
    selection DataConfig, reporting DataConfig, protocol record)``."""
    from dataclasses import replace

    from ..data.calibration import resolve_source
    from ..data.protocol import image_set, labelled_split, make_disjoint, protocol_record

    cfg, split, select_images = labelled_split(s.data)
    if cfg.nc != nc:
        raise YoloportError(f"--data {s.data} has {cfg.nc} classes, the model {nc}")
    report_source = s.report_data or f"{s.data}"
    rcfg, _, report_images = labelled_split(s.report_data) if s.report_data else (cfg, split, select_images)
    if rcfg.nc != nc:
        raise YoloportError(f"--report-data {s.report_data} has {rcfg.nc} classes, the model {nc}")
    pool, _ = resolve_source(s.calib)
    policy = s.overlap or "split"
    select_set, report_set = image_set("selection", str(s.data), select_images), image_set("reporting", report_source, report_images)
    if not s.report_data:  # by design, not an overlap: --data's images are dealt to selection and reporting
        (select_set, report_set), _ = make_disjoint([select_set, report_set], "split")
        print(f"selection and reporting: --data's {len(select_images)} images split by content hash "
              f"({len(select_set)} to select, {len(report_set)} to report); --report-data gives a reporting set of its own")
    sets, found = make_disjoint([image_set("calibration", str(s.calib), pool), select_set, report_set], policy,
                                warn=lambda m: print(f"warning: {m}"))
    return (list(sets[0].paths), replace(cfg, val=list(sets[1].paths)), replace(rcfg, val=list(sets[2].paths)),
            protocol_record(sets, found, policy))


def _qconfig(s) -> dict:
    """The backend settings the command takes (``--head-fp32``, ``--platform``) as a qconfig."""
    return {k: v for k, v in {"head_fp32": s.head_fp32, "platform": s.platform}.items() if v}


def _rank_and_report(s, backend, model, out: Path) -> int:
    """The ranking (and the mixed-precision search with ``--data``) written into the claimed ``out``."""
    from ..analysis import mixed_precision as mp
    from ..backends.registry import export_for, get_spec
    from ..data.calibration import load_calibration
    from ..deploy.onnx_graph import onnx_conv_names
    from ..quant import ranking
    from ..io.paths import write_text_atomic
    from .quantize import resolve_img_size

    hw = resolve_img_size(s, model)
    calib_source, protocol = s.calib, None
    if s.data:  # fail on bad data before the (slow) ranking; three disjoint sets
        calib_source, select_cfg, report_cfg, protocol = search_protocol(s, len(model.names))
    qconfig = _qconfig(s)
    t0 = time.perf_counter()
    calib = load_calibration(calib_source, n=s.calib_n, img_size_hw=hw, stride=input_multiple(model.stride), seed=s.calib_seed,
                             warn=lambda m: print(f"warning: {m}"))
    calib.source = str(s.calib)
    from ..data.protocol import calibration_only_protocol, used_calibration

    if protocol:
        protocol["calibration"] = used_calibration(calib, protocol["calibration"])
    else:  # the ranking alone: its error is measured on --eval-n of the calibration images
        protocol = calibration_only_protocol(calib, "no search (--data)")
    print(f"ranking {sum(1 for _ in ranking.named_convs(model))} convolutions ({len(calib)} calibration images, "
          f"error on {min(s.eval_n, len(calib))}, {hw[1]}x{hw[0]}) ...", flush=True)
    if s.threads:
        import torch

        torch.set_num_threads(int(s.threads))

    def progress(done, total, name):
        if done == total or done % max(total // 4, 1) == 0:
            print(f"  {done}/{total} measurements ({time.perf_counter() - t0:.0f} s)", flush=True)

    scheme, per_channel, quant_outputs = mp.ranking_scheme(backend, qconfig)
    if s.per_tensor:
        per_channel = False
    report = ranking.layer_sensitivity(model, calib, n_images=s.eval_n, per_channel=per_channel,
                                       act_scheme=s.act_scheme or scheme, quant_outputs=quant_outputs, progress=progress)
    export = None  # one fp32 ONNX for the node names, the ORT debug step and every search step
    if backend and get_spec(backend).runs_onnx:
        export = export_for(backend, model, Path(out).resolve() / "model.fp32.onnx", hw)
    if s.ort_debug:
        from ..backends.onnxruntime_debug import attach_ort_debug

        print("onnxruntime QDQ debug: building the fully int8 model ...", flush=True)
        attach_ort_debug(report, model, calib, out / "ort_debug", hw, qconfig, n_images=s.eval_n, export=export,
                         for_backend=backend)
    nodes = onnx_conv_names(export.path, [r.name for r in report.layers]) if export else None
    print(ranking.format_ranking(report, s.top, nodes))
    print(report.method)
    mixed = None
    result = {
        "model": str((getattr(model, "source", None) or {}).get("path", "") or getattr(model, "model_key", "")),
        "backend": backend,
        "img_hw": list(hw),
        "calibration": calib.to_dict(),
        "ranking": report.to_dict(),
    }
    if protocol:
        result["protocol"] = protocol
    if nodes:
        result["ranking"]["nodes"] = nodes
    if s.data:
        max_drop = 0.5 if s.max_drop is None else float(s.max_drop)
        rises = (f"rises beyond noise ({float(s.keep_confidence):.0%} bootstrap interval above 0)"
                 if float(s.keep_confidence) else "rises")
        how = (f"keep ranked layers in float while the measured mAP {rises}" if s.strategy == "greedy"
               else "keep the worst K layers in float")
        print(f"\nmixed precision on {backend} ({s.strategy}): {how}, until the mAP@0.5:0.95 drop <= {max_drop} points",
              flush=True)
        mixed = mp.search_mixed_precision(
            backend, model, report.names(), calib, select_cfg, hw, out / "mixed", max_drop=max_drop, max_float=int(s.max_float),
            report_data=report_cfg,
            qconfig=qconfig, float_dtype=s.float_dtype, batch_size=int(s.batch_size), threads=s.threads,
            log=lambda m: print(f"  {m}", flush=True), strategy=s.strategy, max_tries=s.max_tries, export=export,
            keep_confidence=float(s.keep_confidence) or None)
    if mixed is not None:
        print(mp.format_mixed(mixed))
        result["mixed_precision"] = mixed
    result["seconds"] = round(time.perf_counter() - t0, 2)
    out.mkdir(parents=True, exist_ok=True)
    js = out / "sensitivity.json"
    write_text_atomic(js, json.dumps(result, indent=2, default=str))
    print(f"results: {js}")
    return 0
