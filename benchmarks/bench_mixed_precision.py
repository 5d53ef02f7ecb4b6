"""int8 accuracy on every backend, then sensitivity-guided mixed precision: one table.

    python benchmarks/bench_mixed_precision.py --weights yolov5s-v5.0.pt yolov5n-v6.1.pt   # coco-extra, 640
    python benchmarks/bench_mixed_precision.py --weights yolov5n-v6.1.pt --img-size 736 416
    python benchmarks/bench_mixed_precision.py --backends onnxruntime:tail,mlu-sim:per_channel=true

Data: calibration on the data YAML's train split (default the fixtures' coco-extra: 209 COCO
train2017 images, none in any validation set); its val split is cut in two halves (sorted): the
*search* half, which the mixed-precision search chooses layers on, and the *held-out* half, which
nothing chose anything on. Every verdict ("yes"/"NO" against a target) is judged on the held-out
half only, and the table names it; when the held-out images overlap the calibration or search images
(COCO128: train and val are the same images) no verdict is given.

For each model and target: the all-int8 build (K = 0) is validated at a fixed letterbox and its
mAP@0.5:0.95 drop against torch fp32 is compared with the issue's int8 target (onnxruntime
and OpenVINO 1.0 point, RKNN and mlu-sim 2.0); if the drop is above ``--max-drop`` (0.5), the layer
ranking (:func:`yoloport.quant.ranking.layer_sensitivity`, each convolution alone
fake-quantized in PyTorch, error on ``--eval-n`` calibration images, in the target's scheme) is
computed and the mixed-precision search (:func:`~yoloport.analysis.mixed_precision.search_mixed_precision`,
``--strategy greedy`` by default: keep a ranked layer in float only if the measured mAP rises)
rebuilds and validates the target until the drop is at most ``--max-drop``. A target is
``backend[:qconfig]``: after the colon ``+``-separated ``key=value`` qconfig items, a bare word
being ``head_fp32`` (``onnxruntime:tail`` quantizes the Detect convolutions too, which
onnxruntime's default ``convs`` keeps in float). Calibration: ``--calib-n`` images of the data
YAML's train split. Prints one table (all models) and writes JSON (``--json``). Numbers, not asserts.
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


def split_search_holdout(data: str, out: Path) -> tuple[str, str, list[Path], list[Path]]:
    """Cut the val split of ``data`` (sorted) into a search half and a held-out half; write a data
    YAML for each into ``out``. Returns ``(search_yaml, holdout_yaml, search_images, holdout_images)``."""
    import yaml

    from yoloport.data.dataset import list_images, load_data_yaml

    images = [Path(p).resolve() for p in list_images(load_data_yaml(data).split("val"))]
    if len(images) < 2:
        raise SystemExit(f"{data}: the val split needs at least 2 images to hold some out")
    half = len(images) // 2
    parts = {"search": images[:half], "holdout": images[half:]}
    base = yaml.safe_load(Path(data).read_text())
    base["path"] = str(Path(data).parent.resolve() / str(base.get("path", ".")))
    yamls = {}
    for name, imgs in parts.items():
        lst = out / f"{name}.txt"
        lst.write_text("".join(f"{p}\n" for p in imgs))
        y = out / f"{name}.yaml"
        y.write_text(yaml.safe_dump({**base, "val": str(lst)}))
        yamls[name] = str(y)
    return yamls["search"], yamls["holdout"], parts["search"], parts["holdout"]


def shared_images(a: list, b: list) -> int:
    """How many images of ``a`` are also in ``b`` (same bytes, whatever the path)."""
    import hashlib

    digest = lambda p: hashlib.sha256(Path(p).read_bytes()).hexdigest()  # noqa: E731
    in_b = {digest(p) for p in b}
    return sum(digest(p) in in_b for p in a)


def holdout_verdicts(backend: str, model, res: dict, holdout: str, hw, ref_holdout: float, threads=None,
                     ref_stats=None) -> dict:
    """Validate the search's all-int8 step and its final build on the held-out images: mAP and drop
    (points below torch fp32 on the same images), with a 95% paired-bootstrap interval (``drop_ci``)
    when the fp32 per-image statistics ``ref_stats`` are given."""
    from yoloport.analysis.bootstrap import paired_bootstrap_drop
    from yoloport.analysis.mixed_precision import drop_points
    from yoloport.backends.registry import load_runner
    from yoloport.engine.val import validate_runner

    def held_out(artifact):
        runner = load_runner(backend, artifact=artifact, model=model, threads=threads, output="raw")
        try:
            r = validate_runner(runner, holdout, hw, names=list(model.names), image_stats=True)
        finally:
            runner.close()
        m = float(r["mAP50_95"])
        ci = paired_bootstrap_drop(ref_stats, r["image_stats"]) if ref_stats is not None else None
        return {"mAP50_95": m, "drop": drop_points(ref_holdout, m), "drop_ci": ci}

    s0, f = res["steps"][0], res["final"]
    out = {"fp32_mAP50_95": ref_holdout}
    if s0["k"] == 0 and s0.get("artifact"):
        out["int8"] = held_out(s0["artifact"])
    if f.get("artifact"):
        out["final"] = out["int8"] if f["k"] == 0 and "int8" in out else held_out(f["artifact"])
    return out


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


def verdict(drop: float | None, limit: float, judged: bool) -> str:
    """``yes`` / ``NO`` against ``limit``, or ``n/a`` when there is no held-out figure to judge on."""
    if not judged or drop is None:
        return "n/a"
    return "yes" if drop <= limit else "NO"


def print_table(models: list[dict], max_drop: float, hw, judged_on: str, judged: bool) -> None:
    """One table: per model its fp32 line, then per target the full-int8 (K=0) and mixed-precision
    drops on the search half (what the search saw) and on the held-out half, where the verdicts are
    judged (against the issue's int8 target and ``max_drop``)."""
    print(f"\nmAP50-95 at {hw[1]}x{hw[0]} (drops in points below torch fp32); int8 targets: onnxruntime/openvino "
          f"<= 1.0, rknn/mlu-sim <= 2.0; mixed precision <= {max_drop}")
    print(f"verdicts ('met') judged on: {judged_on}")
    head = ["model / target", "search", "held-out", "int8 drop", "<=", "met", "K", "search", "held-out", "drop", "met", "time s"]
    sub = ["", "int8 mAP", "int8 mAP", "held-out", "", "", "", "mixed mAP", "mixed mAP", "held-out", "", ""]
    widths = [34, 8, 8, 9, 3, 3, 2, 9, 9, 8, 3, 6]
    print(fmt_row(head, widths))
    print(fmt_row(sub, widths))
    for rec in models:
        fh = rec.get("fp32_holdout_mAP50_95")
        print(fmt_row([f"{rec['model']} torch fp32", f"{rec['fp32_mAP50_95']:.4f}", f"{fh:.4f}" if fh is not None else "-"]
                      + [""] * 9, widths))
        for r in rec["backends"]:
            tag = f"  {r['target']}"
            if r.get("error"):
                print(f"{tag:<34}  error: {r['error']}")
                continue
            s0, f, h = r["steps"][0], r["final"], r.get("holdout", {})
            k0 = s0["k"] == 0  # --steps may skip the full int8 step
            lim = INT8_TARGET.get(r["target"].split(":")[0], 1.0)
            hi, hf = h.get("int8"), h.get("final")
            print(fmt_row([tag, f"{s0['mAP50_95']:.4f}" if k0 else "-", f"{hi['mAP50_95']:.4f}" if hi else "-",
                           f"{hi['drop']:+.2f}" if hi else "-", f"{lim:.1f}", verdict(hi and hi["drop"], lim, judged),
                           f["k"], f"{f['mAP50_95']:.4f}", f"{hf['mAP50_95']:.4f}" if hf else "-",
                           f"{hf['drop']:+.2f}" if hf else "-", verdict(hf and hf["drop"], max_drop, judged),
                           f"{r['seconds']:.0f}"], widths))
            cis = [(what, x["drop_ci"]) for what, x in (("int8", hi), ("mixed", hf)) if x and x.get("drop_ci")]
            if cis:
                print("    held-out 95% paired-bootstrap intervals: " + "; ".join(
                    f"{what} [{c['low']:+.2f}, {c['high']:+.2f}]" + (" within noise" if c["within_noise"] else "")
                    for what, c in cis))
            if f["layers"]:
                print(f"{'':<36}float: {', '.join(f['layers'])}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", nargs="+", default=["yolov5n-v6.1.pt"], help="fixture weights (names in fixtures/weights or paths)")
    ap.add_argument("--backends", default=DEFAULT_BACKENDS, help=f"comma list, backend[:head_fp32] (default {DEFAULT_BACKENDS})")
    ap.add_argument("--data", default=None, help="data YAML: train split calibrates, val split is cut into a search "
                    "half and a held-out half (default fixtures/coco-extra/coco-extra.yaml)")
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
                    help="torch fp32 mAP50-95 measured before on the search half at the same size (skips that validation; one model)")
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
    from yoloport.data.letterbox import input_multiple
    from yoloport.models import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    fx = fixtures()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = data_yaml(Path(args.data) if args.data else fx / "coco-extra" / "coco-extra.yaml", out)
    search_data, holdout_data, search_imgs, holdout_imgs = split_search_holdout(data, out)
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
        calib = load_calibration(data, n=args.calib_n, img_size_hw=hw, stride=input_multiple(model.stride))
        overlap = shared_images(holdout_imgs, list(calib.paths) + search_imgs)
        judged = overlap == 0
        judged_on = (f"{len(holdout_imgs)} held-out val images of {data} (second half, sorted), disjoint from the "
                     f"{len(calib)} calibration images (train split) and from the {len(search_imgs)} images the "
                     "search chose its layers on" if judged else
                     f"nothing: {overlap} of the {len(holdout_imgs)} held-out images are calibration or search images "
                     "(train and val overlap in this data YAML), so no target is judged")
        t0 = time.perf_counter()
        fp32 = TorchRunner(model, threads=args.threads)
        ref = args.ref_map if args.ref_map is not None else float(
            validate_runner(fp32, search_data, hw, names=list(model.names))["mAP50_95"])
        ref_res = validate_runner(fp32, holdout_data, hw, names=list(model.names), image_stats=True)
        ref_holdout, ref_stats = float(ref_res["mAP50_95"]), ref_res["image_stats"]
        print(f"{name}: torch fp32 mAP50-95 {ref:.4f} on the search half, {ref_holdout:.4f} held out "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
        rankings: dict = {}  # activation scheme -> SensitivityReport (computed when a backend needs it)
        rec = {"model": name, "fp32_mAP50_95": ref, "fp32_holdout_mAP50_95": ref_holdout, "judged_on": judged_on,
               "judged": judged, "rankings": {}, "backends": []}

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
                res = search_mixed_precision(backend, model, lambda: ranking(*rank_args).names(), calib, search_data, hw,
                                             out / name / tag.replace(":", "-"), max_drop=args.max_drop,
                                             max_float=args.max_float, qconfig=q, ref_map=ref, threads=args.threads, steps=args.steps,
                                             strategy=args.strategy, max_tries=args.max_tries,
                                             log=lambda m: print(f"  {m}", flush=True))
                res["holdout"] = holdout_verdicts(backend, model, res, holdout_data, hw, ref_holdout, args.threads, ref_stats)
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
        print_table([rec], args.max_drop, hw, judged_on, judged)
    if len(results["models"]) > 1:
        print_table(results["models"], args.max_drop, hw, results["models"][-1]["judged_on"],
                    all(m["judged"] for m in results["models"]))
    path = _write(results, args, out)
    print(f"\nresults: {path}")
    return 0


def _write(results: dict, args, out: Path) -> Path:
    path = Path(args.json) if args.json else out / "results.json"
    path.write_text(json.dumps(results, indent=1, default=str))
    return path


if __name__ == "__main__":
    raise SystemExit(main())
