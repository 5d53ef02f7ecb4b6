"""int8 accuracy on every backend, then sensitivity-guided mixed precision: one table.

    python benchmarks/bench_mixed_precision.py --weights yolov5s-v5.0.pt yolov5n-v6.1.pt   # COCO128, 640
    python benchmarks/bench_mixed_precision.py --weights yolov5n-v6.1.pt --img-size 736 416
    python benchmarks/bench_mixed_precision.py --backends onnxruntime:tail,mlu-sim:per_channel=true

For each model and target: the all-int8 build (K = 0) is validated on COCO128 at a fixed letterbox
and its mAP@0.5:0.95 drop against torch fp32 is compared with the issue's int8 target (onnxruntime
and OpenVINO 1.0 point, RKNN and mlu-sim 2.0); if the drop is above ``--max-drop`` (0.5), the layer
ranking (:func:`yoloport.quant.ranking.layer_sensitivity`, each convolution alone
fake-quantized in PyTorch, error on ``--eval-n`` calibration images, in the target's scheme) is
computed and the mixed-precision search (:func:`~yoloport.analysis.mixed_precision.search_mixed_precision`,
``--strategy greedy`` by default: keep a ranked layer in float only if the measured mAP rises)
rebuilds and validates the target until the drop is at most ``--max-drop``. A target is
``backend[:qconfig]``: after the colon ``+``-separated ``key=value`` qconfig items, a bare word
being ``head_fp32`` (``onnxruntime:tail`` quantizes the Detect convolutions too, which
onnxruntime's default ``convs`` keeps in float). Calibration: ``--calib-n`` images of the data
YAML's train split (COCO128: the same 128 images as val, so this measures quantization error, not
generalisation; the search also picks its layers on the set it reports). Prints one table (all
models) and writes JSON (``--json``). Numbers, not asserts.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# every backend with every convolution in int8, plus the defaults that differ: onnxruntime keeps the
# Detect convolutions in float by default; mlu-sim's per-channel weights are one of the seed's options
DEFAULT_BACKENDS = "onnxruntime:tail,onnxruntime,openvino,rknn,mlu-sim,mlu-sim:per_channel=true"
# the int8 targets (points of mAP50-95 below fp32), before mixed precision
INT8_TARGET = {"onnxruntime": 1.0, "openvino": 1.0, "rknn": 2.0, "mlu-sim": 2.0}


def fixtures() -> Path:
    from yoloport.fixtures import fixtures_dir

    fx = fixtures_dir()
    if fx is None:
        raise SystemExit("shared fixtures not found (set YOLOPORT_FIXTURES)")
    return fx


def data_yaml(path: Path, tmp: Path) -> str:
    """The data YAML as given when its ``path:`` resolves to a folder with images, else a copy in
    ``tmp`` pointing at the YAML's own folder."""
    from yoloport.data.dataset import list_images, load_data_yaml

    try:
        cfg = load_data_yaml(path)
        if list_images(cfg.split("val")):
            return str(path)
    except Exception:  # noqa: BLE001 - fall back to a rewritten YAML
        pass
    import yaml

    d = yaml.safe_load(Path(path).read_text())
    d["path"] = str(Path(path).parent.resolve())
    out = tmp / Path(path).name
    out.write_text(yaml.safe_dump(d))
    return str(out)


def parse_backends(spec: str) -> list[tuple[str, dict]]:
    """``"onnxruntime,onnxruntime:tail,mlu-sim:per_channel=true+convs"`` -> ``[(backend, qconfig), ...]``:
    after the colon, ``+``-separated qconfig ``key=value`` items; a bare word is ``head_fp32``."""
    import yaml

    from yoloport.backends.registry import canonical_name

    out = []
    for item in [s.strip() for s in spec.split(",") if s.strip()]:
        name, _, rest = item.partition(":")
        q: dict = {}
        for part in [p for p in rest.split("+") if p]:
            key, eq, val = part.partition("=")
            q.update({key: yaml.safe_load(val)} if eq else {"head_fp32": key})
        out.append((canonical_name(name), q))
    return out


def target_tag(backend: str, q: dict) -> str:
    extra = "+".join(v if k == "head_fp32" else f"{k}={str(v).lower()}" for k, v in q.items())
    return backend + (f":{extra}" if extra else "")


def fmt_row(cols, widths) -> str:
    return "  ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(cols, widths)))


def print_table(models: list[dict], max_drop: float, hw) -> None:
    """One table: per model its fp32 line, then per target the full-int8 (K=0) drop against the
    issue's int8 target and the mixed-precision result against ``max_drop``."""
    print(f"\nmAP50-95 at {hw[1]}x{hw[0]} (drops in points below torch fp32); int8 targets: onnxruntime/openvino "
          f"<= 1.0, rknn/mlu-sim <= 2.0; mixed precision <= {max_drop}")
    head = ["model / target", "mAP50-95", "int8 drop", "<=", "ok", "K", "mixed mAP", "drop", "ok", "time s"]
    widths = [34, 8, 9, 3, 3, 2, 9, 5, 3, 6]
    print(fmt_row(head, widths))
    for rec in models:
        print(fmt_row([f"{rec['model']} torch fp32", f"{rec['fp32_mAP50_95']:.4f}"] + [""] * 8, widths))
        for r in rec["backends"]:
            tag = f"  {r['target']}"
            if r.get("error"):
                print(f"{tag:<34}  error: {r['error']}")
                continue
            s0, f = r["steps"][0], r["final"]
            k0 = s0["k"] == 0  # --steps may skip the full int8 step
            lim = INT8_TARGET.get(r["target"].split(":")[0], 1.0)
            print(fmt_row([tag, f"{s0['mAP50_95']:.4f}" if k0 else "-", f"{s0['drop']:+.2f}" if k0 else "-", f"{lim:.1f}",
                           ("yes" if s0["drop"] <= lim else "NO") if k0 else "-", f["k"], f"{f['mAP50_95']:.4f}",
                           f"{f['drop']:+.2f}", "yes" if r["met"] else "NO", f"{r['seconds']:.0f}"], widths))
            if f["layers"]:
                print(f"{'':<36}float: {', '.join(f['layers'])}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", nargs="+", default=["yolov5n-v6.1.pt"], help="fixture weights (names in fixtures/weights or paths)")
    ap.add_argument("--backends", default=DEFAULT_BACKENDS, help=f"comma list, backend[:head_fp32] (default {DEFAULT_BACKENDS})")
    ap.add_argument("--data", default=None, help="data YAML (default fixtures/coco128/coco128.yaml)")
    ap.add_argument("--img-size", nargs="+", type=int, default=[640], metavar="W H",
                    help="input size: one number (square) or W H, e.g. 736 416 (default 640)")
    ap.add_argument("--calib-n", type=int, default=32)
    ap.add_argument("--eval-n", type=int, default=8, help="calibration images the ranking measures the error on")
    ap.add_argument("--act-scheme", choices=("asymmetric", "symmetric"), default=None,
                    help="ranking activations (default: each backend's own: mlu-sim symmetric, the others asymmetric)")
    ap.add_argument("--max-drop", type=float, default=0.5, help="points of mAP50-95")
    ap.add_argument("--max-float", type=int, default=8)
    ap.add_argument("--strategy", choices=("greedy", "prefix"), default="greedy")
    ap.add_argument("--max-tries", type=int, default=None, help="greedy: candidates tried (default 2 * --max-float)")
    ap.add_argument("--steps", type=lambda v: [int(k) for k in v.split(",")], default=None,
                    help="explicit K values, e.g. 1,2,4 (default 0,1,2,4,8,... up to --max-float)")
    ap.add_argument("--ref-map", type=float, default=None,
                    help="torch fp32 mAP50-95 measured before on the same data and size (skips that validation; one model)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="runs/bench_mixed_precision")
    ap.add_argument("--json", default=None, help="results JSON (default OUT/results.json)")
    args = ap.parse_args(argv)

    import torch

    from yoloport.engine.val import validate_runner
    from yoloport.analysis.mixed_precision import ranking_scheme, search_mixed_precision
    from yoloport.quant.ranking import format_ranking, layer_sensitivity
    from yoloport.backends.torch_backend import TorchRunner
    from yoloport.data.calibration import load_calibration
    from yoloport.models import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    fx = fixtures()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = data_yaml(Path(args.data) if args.data else fx / "coco128" / "coco128.yaml", out)
    if len(args.img_size) not in (1, 2):
        raise SystemExit("--img-size: one number or W H")
    w_, h_ = (args.img_size * 2)[:2]
    hw = (h_, w_)
    targets = parse_backends(args.backends)
    results = {"data": data, "img_hw": list(hw), "calib_n": args.calib_n, "max_drop": args.max_drop,
               "max_float": args.max_float, "models": []}
    for w in args.weights:
        wp = Path(w) if Path(w).exists() else fx / "weights" / w
        model = load_model(wp)
        name = wp.stem
        calib = load_calibration(data, n=args.calib_n, img_size_hw=hw, stride=int(model.stride.max()))
        t0 = time.perf_counter()
        ref = args.ref_map if args.ref_map is not None else float(
            validate_runner(TorchRunner(model, threads=args.threads), data, hw, names=list(model.names))["mAP50_95"])
        print(f"{name}: torch fp32 mAP50-95 {ref:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        rankings: dict = {}  # activation scheme -> SensitivityReport (computed when a backend needs it)
        rec = {"model": name, "fp32_mAP50_95": ref, "rankings": {}, "backends": []}

        def ranking(scheme, per_channel, outputs):
            key = f"{scheme}-{'channel' if per_channel else 'tensor'}{'-outputs' if outputs else ''}"
            if key not in rankings:
                t0 = time.perf_counter()
                rankings[key] = layer_sensitivity(model, calib, n_images=args.eval_n, act_scheme=scheme, per_channel=per_channel,
                                                  quant_outputs=outputs)
                print(f"{name}: {key} ranking of {len(rankings[key].layers)} convs in {time.perf_counter() - t0:.0f} s",
                      flush=True)
                print(format_ranking(rankings[key], top=10), flush=True)
                rec["rankings"][key] = rankings[key].to_dict()
            return rankings[key]

        for backend, q in targets:
            tag = target_tag(backend, q)
            print(f"{name} {tag}: mixed-precision search", flush=True)
            t0 = time.perf_counter()
            try:
                act, per_channel, quant_outputs = ranking_scheme(backend, q)
                rank_args = (args.act_scheme or act, per_channel, quant_outputs)
                res = search_mixed_precision(backend, model, lambda: ranking(*rank_args).names(), calib, data, hw,
                                             out / name / tag.replace(":", "-"), max_drop=args.max_drop,
                                             max_float=args.max_float, qconfig=q, ref_map=ref, threads=args.threads, steps=args.steps,
                                             strategy=args.strategy, max_tries=args.max_tries,
                                             log=lambda m: print(f"  {m}", flush=True))
                res.update(target=tag, seconds=round(time.perf_counter() - t0, 1),
                           ranking=f"{rank_args[0]}, per-{'channel' if rank_args[1] else 'tensor'} weights"
                                   f"{', Detect outputs rounded' if rank_args[2] else ''}")
            except Exception as e:  # noqa: BLE001 - one backend failing must not lose the others' numbers
                import traceback

                res = {"target": tag, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=6)}
                print(res["traceback"], flush=True)
                print(f"  error: {res['error']}", flush=True)
            rec["backends"].append(res)
            _write(results | {"models": results["models"] + [rec]}, args, out)
        results["models"].append(rec)
        print_table([rec], args.max_drop, hw)
    if len(results["models"]) > 1:
        print_table(results["models"], args.max_drop, hw)
    path = _write(results, args, out)
    print(f"\nresults: {path}")
    return 0


def _write(results: dict, args, out: Path) -> Path:
    path = Path(args.json) if args.json else out / "results.json"
    path.write_text(json.dumps(results, indent=1, default=str))
    return path


if __name__ == "__main__":
    raise SystemExit(main())
