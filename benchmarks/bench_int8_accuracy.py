"""int8 accuracy on images the port never saw: the mAP@0.5:0.95 drop against fp32 per backend and recipe,
calibrated on coco-extra calib2017 and judged on coco-extra val2017 and on COCO128 (both disjoint from
the calibration images), with the spread over calibration seeds.

    python benchmarks/bench_int8_accuracy.py                                  # yolov5n v6.1, 640, every backend, main rows
    python benchmarks/bench_int8_accuracy.py --weights yolov5n-v6.1 --backends onnxruntime \\
        --rows old_default bias_correction --seeds 0 1 2 --calib-n 32 128 --val-images 50
    python benchmarks/bench_int8_accuracy.py --weights yolov5s-v5.0 --img-size 736 416 --rows old_default new_default

Rows (``--rows``): ``old_default`` (each backend's qconfig before issue 11, pinned here), ``new_default``
(each backend's current defaults), ``port`` (what ``yoloport port`` builds: the defaults and the backend's
``port_qconfig``), one row per PTQ step (``equalize``, ``adaround``, ``bias_correction``,
``ptq_all``), range estimators (``est:<name>``, only on the backends that have it: ONNX Runtime
minmax/percentile/entropy, OpenVINO mixed/performance, RKNN normal/mmse/kl_divergence, mlu-sim max/avg/mse/percentile),
``qat`` (``yoloport qat``'s fine-tune on the calibration pool with labels, :func:`qat_artifact`) and
``qat_distill`` (the same with the distillation objective: the float model is the target, on the
calibration images themselves; ``--distill-steps``, ``--distill-batch``; ``qat_distill:{"steps": 256}`` is the
same row with these settings overridden, as JSON, so two settings are built from the same seeds in one run and
can be paired with ``--baseline-row``). fp32 is ONNX
Runtime fp32 at the same fixed letterbox (the same mAP as torch, measured). Each (row, calibration size)
is built once per seed; the table gives the mean drop, each seed's drop and the spread (max - min).
Every drop carries its 95% paired-bootstrap interval over the validation images
(:func:`yoloport.analysis.bootstrap.paired_bootstrap_drop`), and every spread over calibration seeds the
paired interval of the best seed's build against the worst's on the same images
(:func:`yoloport.analysis.bootstrap.seed_spread`): ``noise`` when the reporting images cannot tell them apart.
``--select S`` scores every row on a selection set too (printed as its own set, never averaged into a reporting
figure): the images a choice between rows is made on, cut from the calibration pool by
``benchmarks/split_selection.py``. Each row's mean over seeds carries its own paired interval (every seed's build and fp32 scored on the same
resampled images: :func:`yoloport.analysis.bootstrap.mean_drop`), and with two or more validation sets every
row is also averaged over them (set ``mean(a,b)``: each set's mAP as it is alone, the interval of the average,
narrower than either set's: :func:`yoloport.analysis.bootstrap.mean_drop_over_sets`).
``--baseline-row R`` also prints how much every other row loses against ``R`` on the same images: the
mean over the seeds both have, with its paired-bootstrap interval
(:func:`yoloport.analysis.bootstrap.recipe_difference`), so two recipes are compared on their own rather
than through two drops against fp32.
Numbers, not asserts: never a test.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BACKENDS = ("onnxruntime", "openvino", "rknn", "mlu-sim")
# the qconfigs each backend was built with before issue 11 (pinned, so "old_default" keeps its meaning)
OLD_DEFAULTS = {
    "onnxruntime": {"calib_method": "minmax", "head_fp32": "convs", "preact_range": "minmax", "sigmoid_range": "minmax",
                    "mul_range": "minmax"},
    "openvino": {"preset": "mixed", "fast_bias_correction": True},
    "rknn": {"quantized_algorithm": "normal", "quantized_method": "channel"},
    "mlu-sim": {"use_avg": False, "per_channel": False, "act_range": "max", "weight_range": "max", "ptq": []},
}
ESTIMATORS = {
    "onnxruntime": {"minmax": {"calib_method": "minmax"}, "percentile": {"calib_method": "percentile"},
                    "entropy": {"calib_method": "entropy"}},
    "openvino": {"mixed": {"preset": "mixed"}, "performance": {"preset": "performance"}},
    "rknn": {"normal": {"quantized_algorithm": "normal"}, "mmse": {"quantized_algorithm": "mmse"},
             "kl_divergence": {"quantized_algorithm": "kl_divergence"}},
    "mlu-sim": {"max": {"use_avg": False, "act_range": "max"}, "avg": {"use_avg": True, "act_range": "max"},
                "mse": {"act_range": "mse"}, "percentile": {"act_range": "percentile"}},
}
PTQ_ROWS = {"equalize": ["equalize"], "adaround": ["adaround"], "bias_correction": ["bias_correction"],
            "ptq_all": ["equalize", "adaround", "bias_correction"]}
DEFAULT_ROWS = ("old_default", "bias_correction", "adaround", "new_default")


def fixtures():
    from yoloport.fixtures import fixtures_dir

    fx = fixtures_dir()
    if fx is None:
        raise SystemExit("shared fixtures not found (set YOLOPORT_FIXTURES)")
    return fx


def row_qconfig(row: str, backend: str, ptq_options: dict | None) -> dict | None:
    """The qconfig of ``row`` on ``backend`` (None: the row does not apply to that backend)."""
    if row == "old_default":
        return dict(OLD_DEFAULTS[backend])
    if row == "new_default":
        return {}
    if row == "port":
        from yoloport.backends.registry import get_spec

        return dict(get_spec(backend).port_qconfig)
    if row in PTQ_ROWS:
        return {"ptq": PTQ_ROWS[row], "ptq_options": ptq_options}
    if row.startswith("est:"):
        est = ESTIMATORS[backend].get(row[4:])
        return dict(est) if est is not None else None
    if row.startswith("qc:"):  # any qconfig, as JSON: qc:{"calib_method": "percentile", "percentile": 99.99}
        try:
            return dict(json.loads(row[3:]))
        except (ValueError, TypeError) as e:
            raise SystemExit(f"row {row!r}: qc: takes a JSON object ({e})") from None
    raise SystemExit(f"unknown row {row!r}")


DISTILL_KEYS = ("steps", "batch_size", "lr", "grid_lr", "start")  # what a qat_distill:{...} row may override


def qat_row(row: str) -> tuple[str, dict] | None:
    """``(objective, distill overrides)`` of a QAT row (``qat``, ``qat_distill``, ``qat_distill:{JSON}``); None
    for any other row."""
    if row == "qat":
        return "labels", {}
    if row == "qat_distill":
        return "distill", {}
    if not row.startswith("qat_distill:"):
        return None
    try:
        over = json.loads(row[len("qat_distill:"):])
    except ValueError as e:
        raise SystemExit(f"row {row!r}: qat_distill: takes a JSON object ({e})") from None
    bad = sorted(set(over) - set(DISTILL_KEYS)) if isinstance(over, dict) else ["(not an object)"]
    if bad:
        raise SystemExit(f"row {row!r}: qat_distill: overrides only {', '.join(DISTILL_KEYS)}; got {', '.join(bad)}")
    from yoloport.errors import YoloportError
    from yoloport.quant.qat_distill import DistillSettings

    try:
        DistillSettings.from_options(over)  # a bad value is refused before any build, in one line
    except (YoloportError, TypeError) as e:
        raise SystemExit(f"row {row!r}: {e}") from None
    return "distill", over


def row_dir_name(row: str) -> str:
    """A folder name for ``row`` (a ``qc:`` or ``qat_distill:`` row's JSON is named by its hash)."""
    for prefix in ("qc:", "qat_distill:"):
        if row.startswith(prefix):
            return prefix[:-1] + "-" + hashlib.sha256(row[len(prefix):].encode()).hexdigest()[:10]
    return row.replace(":", "-")


def qat_artifact(backend, weights, out_dir, hw, calib_source, calib_n, seed, epochs, data, objective="labels",
                 distill=None):
    """The QAT row (issue 11 item 4): :func:`yoloport.analysis.qat.qat_port` fine-tunes ``weights`` with
    ``backend``'s fake quantization on ``data``'s train split (the calibration pool, disjoint from every
    validation set here) for ``epochs`` (``objective="distill"``: from the float model on the calibration
    images, ``distill``: its settings) and builds its artifact; returns the artifact path."""
    from yoloport.analysis.qat import qat_port

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    res = qat_port(weights, data, backend, out_dir, calib=calib_source, calib_n=calib_n, calib_seed=seed,
                   epochs=epochs, img_size_hw=hw, seed=seed, objective=objective, distill=distill,
                   log=print if objective == "distill" else (lambda m: None))
    return res.artifact


def existing_artifact(row_dir, backend: str):
    """The int8 artifact a previous run built for ``backend`` in ``row_dir`` (read back through its sidecar,
    so a damaged one is refused when it loads), or None."""
    row_dir = Path(row_dir)
    for sc in sorted(row_dir.glob("*.json")) if row_dir.is_dir() else []:
        art = sc.with_name(sc.name[: -len(".json")])
        try:
            info = json.loads(sc.read_text())
        except ValueError:
            continue
        if art.exists() and isinstance(info, dict) and info.get("backend") == backend and info.get("precision") == "int8":
            return art
    return None


def bootstrap_interval(ref_stats, int8_stats):
    """The 95% paired-bootstrap interval of the drop, in points (fp32 and int8 on the same resampled
    images: :func:`yoloport.analysis.bootstrap.paired_bootstrap_drop`)."""
    from yoloport.analysis.bootstrap import paired_bootstrap_drop

    if ref_stats is None or int8_stats is None:
        return None
    r = paired_bootstrap_drop(ref_stats, int8_stats)
    return (r["low"], r["high"])


def evaluate(backend, artifact, model, data, hw, threads, val_images):
    """mAP50-95 (and the per-image stats the bootstrap needs, when validate returns them) of an artifact."""
    from yoloport.backends.registry import load_runner
    from yoloport.engine.val import validate_runner

    runner = load_runner(backend, artifact=artifact, model=model, threads=threads, output="raw")
    if val_images:
        from yoloport.data.dataset import list_images, load_data_yaml

        cfg = load_data_yaml(data)
        cfg.val = list_images(cfg.split("val"))[:val_images]
        data = cfg
    res = validate_runner(runner, data, img_hw=hw, batch_size=1, image_stats=True)
    return {"mAP50_95": res["mAP50_95"], "mAP50": res["mAP50"], "images": res["n_images"], "stats": res["image_stats"]}


def reporting_sets(val=None) -> list[str]:
    """The reporting data YAMLs: ``val`` when given, else the fixtures' coco-extra val2017 and COCO128."""
    fx = fixtures()
    return list(val) if val else [str(fx / "coco-extra" / "coco-extra.yaml"), str(fx / "coco128" / "coco128.yaml")]


def load_model_or_exit(weights: str):
    """The model of a checkpoint or model key; a bad one ends the script with its one-line message."""
    from yoloport.config import weights_path
    from yoloport.errors import YoloportError
    from yoloport.models import load_model

    try:
        return load_model(str(weights_path(weights)))
    except YoloportError as e:
        raise SystemExit(str(e)) from None


def fp32_reference(model, hw, sets, threads) -> dict:
    """``{set: evaluate(...)}`` of ``model`` in ONNX Runtime fp32 at ``hw`` (built in a temporary folder)."""
    import tempfile

    from yoloport.backends.registry import build_artifact

    with tempfile.TemporaryDirectory(prefix="fp32-reference-") as tmp:
        fp32 = build_artifact("onnxruntime", model, Path(tmp), hw, None, {"precision": "fp32"})
        return {v: evaluate("onnxruntime", fp32, model, v, hw, threads, 0) for v in sets}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", nargs="+", default=["yolov5n-v6.1"], help="checkpoints or model keys (the fixtures': yolov5n-v6.1, yolov5s-v5.0)")
    p.add_argument("--img-size", type=int, nargs="+", default=[640], help="W [H]")
    p.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    p.add_argument("--rows", nargs="+", default=list(DEFAULT_ROWS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--calib-n", type=int, nargs="+", default=[32])
    p.add_argument("--calib", help="calibration source (default: fixture coco-extra.yaml:train, calib2017)")
    p.add_argument("--val", nargs="+", help="validation data YAMLs (default: coco-extra val2017, COCO128)")
    p.add_argument("--select", help="a selection data YAML (its val split; benchmarks/split_selection.py makes one from "
                   "the calibration pool): scored like --val, but left out of the mean(...) rows, which are reporting "
                   "figures; choose between rows on it")
    p.add_argument("--val-images", type=int, default=0, help="validate on the first N images of each set (0: all)")
    p.add_argument("--adaround-iters", type=int, default=100)
    p.add_argument("--qat-epochs", type=int, default=1, help="epochs of the qat row's fine-tune")
    p.add_argument("--qat-data", help="data YAML the qat row fine-tunes on (default: the calibration source's, "
                                      "coco-extra: train = calib2017)")
    p.add_argument("--distill-steps", type=int, default=None, help="steps of the qat_distill row (default: QAT's)")
    p.add_argument("--distill-batch", type=int, default=None, help="images per step of the qat_distill row")
    p.add_argument("--distill-lr", type=float, default=None, help="weight learning rate of the qat_distill row")
    p.add_argument("--distill-grid-lr", type=float, default=None, help="grid learning rate of the qat_distill row")
    p.add_argument("--reuse", action="store_true", help="evaluate the int8 artifact a previous run left in a row's "
                                                         "folder instead of building it again")
    p.add_argument("--focus-to-conv", dest="focus_to_conv", action=argparse.BooleanOptionalAction, default=None,
                   help="export a v5.0 Focus stem as its Conv (or keep the slices) for every backend; default: each "
                        "backend's SPEC.focus_to_conv, as quantize and port do")
    p.add_argument("--baseline-row", help="also print every other row's loss against this one (mean over the seeds "
                   "both have, paired bootstrap over the reporting images: analysis.bootstrap.recipe_difference)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="runs/bench_int8_accuracy")
    p.add_argument("--json", help="write the results as JSON here")
    a = p.parse_args(argv)

    import torch

    from yoloport.backends.registry import build_artifact
    from yoloport.data.calibration import load_calibration
    from yoloport.data.letterbox import input_multiple
    from yoloport.errors import YoloportError
    from yoloport.config import weights_path
    from yoloport.models import load_model

    torch.set_num_threads(a.threads)
    fx = fixtures()
    w, h = (a.img_size[0], a.img_size[-1])
    hw = (h, w)
    calib_src = a.calib or f"{fx / 'coco-extra' / 'coco-extra.yaml'}:train"
    reporting = reporting_sets(a.val)
    vals = ([a.select] if a.select else []) + reporting
    if a.select and Path(a.select).stem in {Path(v).stem for v in reporting}:
        raise SystemExit(f"--select {a.select} is also a --val set (by name): selection and reporting must differ")
    ptq_options = {"adaround": {"iters": a.adaround_iters}}
    results, stats_by = [], {}  # stats_by: {group key: {seed: per-image stats}} for the seed-spread intervals
    ref_stats = {}  # {(weights, size, set): fp32 per-image stats}
    for wk in a.weights:
        try:
            wpath = str(weights_path(wk))
        except YoloportError as e:
            raise SystemExit(str(e)) from None
        model = load_model(wpath)
        stride = input_multiple(model.stride)
        out_root = Path(a.out) / Path(wpath).stem / f"{w}x{h}"
        ref = {}
        fp32 = build_artifact("onnxruntime", model, out_root / "fp32", hw, None, {"precision": "fp32"})
        for v in vals:
            ref[v] = evaluate("onnxruntime", fp32, model, v, hw, a.threads, a.val_images)
            print(f"{Path(wpath).name} fp32 {Path(v).stem}: mAP50-95 {ref[v]['mAP50_95']:.4f}", flush=True)
            if ref[v].get("stats") is not None:
                ref_stats[(Path(wpath).name, (w, h), Path(v).stem)] = ref[v]["stats"]
        for backend in a.backends:
            for row in a.rows:
                for n in a.calib_n:
                    for seed in a.seeds:
                        calib = load_calibration(calib_src, n=n, img_size_hw=hw, stride=stride, seed=seed)
                        t0 = time.perf_counter()
                        d = out_root / backend / row_dir_name(row) / f"n{n}-s{seed}"
                        reused = existing_artifact(d, backend) if a.reuse else None
                        if reused is not None:
                            art = reused
                        elif qat_row(row) is not None:
                            objective, over = qat_row(row)
                            distill = {"steps": a.distill_steps, "batch_size": a.distill_batch, "lr": a.distill_lr,
                                       "grid_lr": a.distill_grid_lr, **over}
                            art = qat_artifact(backend, wpath, d, hw, calib_src, n, seed, a.qat_epochs,
                                               a.qat_data or calib_src.rsplit(":", 1)[0], objective=objective,
                                               distill=distill if objective == "distill" else None)
                        else:
                            q = row_qconfig(row, backend, ptq_options)
                            if q is None:
                                break
                            art = build_artifact(backend, model, d, hw, calib, {"precision": "int8", **q},
                                                 export_options={"focus_to_conv": a.focus_to_conv})
                        build_s = time.perf_counter() - t0
                        for v in vals:
                            t1 = time.perf_counter()
                            # a QAT artifact is built from the fine-tuned checkpoint, not from ``model``
                            r = evaluate(backend, art, None if qat_row(row) is not None else model, v, hw, a.threads,
                                         a.val_images)
                            eval_s = time.perf_counter() - t1
                            drop = 100 * (ref[v]["mAP50_95"] - r["mAP50_95"])
                            rec = {"weights": Path(wpath).name, "img_size": [w, h], "backend": backend, "row": row,
                                   "calib_n": n, "seed": seed, "val": Path(v).stem, "mAP50_95": r["mAP50_95"],
                                   "fp32_mAP50_95": ref[v]["mAP50_95"], "drop_points": drop, "images": r["images"],
                                   "build_s": round(build_s, 1), "eval_s": round(eval_s, 1), "reused": reused is not None,
                                   "bootstrap_ci": bootstrap_interval(ref[v].get("stats"), r.get("stats"))}
                            results.append(rec)
                            if r.get("stats") is not None:
                                stats_by.setdefault(group_key(rec), {})[seed] = r["stats"]
                            write_json(a.json, a, results)  # after every record: a killed run keeps what it measured
                            print(f"{rec['weights']} {backend:<11} {row:<16} n={n:<4} seed={seed} {rec['val']:<11} "
                                  f"mAP50-95 {r['mAP50_95']:.4f}  drop {drop:+.2f} pt  build {build_s:.0f}s eval {eval_s:.0f}s", flush=True)
    spreads = seed_spreads(stats_by)
    means = mean_drops(stats_by, ref_stats)
    differences = row_differences(stats_by, a.baseline_row) if a.baseline_row else {}
    if len(reporting) > 1:
        set_mean = set_mean_rows(stats_by, ref_stats, [Path(v).stem for v in reporting], a.baseline_row)
        results += set_mean["records"]
        spreads.update(set_mean["spreads"])
        means.update(set_mean["means"])
        differences.update(set_mean["differences"])
    print_table(results, spreads, means)
    print_differences(differences, a.baseline_row)
    write_json(a.json, a, results, spreads, differences, means)
    return 0


def set_mean_rows(stats_by: dict, ref_stats: dict, sets: list[str], baseline: str | None) -> dict:
    """Every row validated on all of ``sets``, averaged over them (set ``mean(a,b)``): each set keeps its own mAP
    and its own resamples (:func:`yoloport.analysis.bootstrap.mean_drop_over_sets`), so a build's figure is the
    mean of its per-set drops, with the narrower interval of an average over more images. Returns ``{records,
    spreads, means, differences}`` keyed like the per-set ones (the spread: best vs worst seed on this mean;
    the differences: against ``baseline``'s builds of the same seeds)."""
    from yoloport.analysis.bootstrap import mean_drop_over_sets, recipe_difference_over_sets
    from yoloport.errors import YoloportError

    name = f"mean({','.join(sets)})"
    out = {"records": [], "spreads": {}, "means": {}, "differences": {}}
    rows = {}
    for key in stats_by:
        wk, size, backend, row, n, val = key
        keys = [(wk, size, backend, row, n, v) for v in sets]
        refs = [ref_stats.get((wk, size, v)) for v in sets]
        if val != sets[0] or any(k not in stats_by for k in keys) or any(r is None for r in refs):
            continue
        seeds = sorted(set.intersection(*(set(stats_by[k]) for k in keys)), key=str)
        if not seeds:
            continue
        rows[(wk, size, backend, row, n, name)] = keys
        per_seed = {}
        for seed in seeds:
            ci = mean_drop_over_sets([(r, {seed: stats_by[k][seed]}) for r, k in zip(refs, keys)])
            per_seed[seed] = ci["drop"]
            out["records"].append({"weights": wk, "img_size": list(size), "backend": backend, "row": row, "calib_n": n,
                                   "seed": seed, "val": name, "drop_points": ci["drop"], "images": ci["n_images"],
                                   "bootstrap_ci": (ci["low"], ci["high"]), "averaged_over": sets})
        group = (wk, size, backend, row, n, name)
        out["means"][group] = mean_drop_over_sets([(r, {s: stats_by[k][s] for s in seeds}) for r, k in zip(refs, keys)])
        if len(seeds) >= 2:
            best, worst = min(per_seed, key=per_seed.get), max(per_seed, key=per_seed.get)
            d = recipe_difference_over_sets([({0: stats_by[k][best]}, {0: stats_by[k][worst]}) for k in keys])
            out["spreads"][group] = {"spread": d["difference"], "low": d["low"], "high": d["high"],
                                     "within_noise": d["within_noise"], "best_seed": best, "worst_seed": worst,
                                     "n_seeds": len(seeds), "n_images": d["n_images"]}
    for group, keys in rows.items():
        base = rows.get((*group[:3], baseline, *group[4:])) if baseline else None
        if group[3] != baseline and base is not None:
            try:
                out["differences"][group] = recipe_difference_over_sets([(stats_by[b], stats_by[k]) for b, k in zip(base, keys)])
            except YoloportError:  # no seed the two rows share in every set
                pass
    return out


def mean_drops(stats_by: dict, ref_stats: dict) -> dict:
    """``{group key: mean_drop(...)}``: each row's drop averaged over its calibration seeds, with the paired
    interval of that mean over the reporting images (:func:`yoloport.analysis.bootstrap.mean_drop`)."""
    from yoloport.analysis.bootstrap import mean_drop

    return {k: mean_drop(ref_stats[(k[0], k[1], k[5])], v) for k, v in stats_by.items() if (k[0], k[1], k[5]) in ref_stats}


def row_differences(stats_by: dict, baseline: str) -> dict:
    """``{group key of a row: recipe_difference(baseline's builds, the row's)}`` for every row validated on the
    same weights, size, backend, calibration size and set as ``baseline`` with at least one seed in common."""
    from yoloport.analysis.bootstrap import recipe_difference

    out = {}
    for key, by_seed in stats_by.items():
        base_key = (*key[:3], baseline, *key[4:])
        if key[3] != baseline and base_key in stats_by and set(by_seed) & set(stats_by[base_key]):
            out[key] = recipe_difference(stats_by[base_key], by_seed)
    return out


def print_differences(differences: dict, baseline: str | None) -> None:
    if not differences:
        return
    print(f"\nloss against {baseline} (points; > 0: the row is worse), mean over shared seeds, 95% paired interval:")
    for (wk, size, backend, row, n, val), d in differences.items():
        print(f"{wk:<18} {size[0]}x{size[1]:<4} {backend:<11} {row:<16} n={n:<4} {val:<24} {d['difference']:+.2f} "
              f"[{d['low']:+.2f}, {d['high']:+.2f}]{' noise' if d['within_noise'] else ''}  ({d['n_seeds']} seeds, "
              f"{d['n_images']} images)")


def group_key(rec: dict) -> tuple:
    """The rows one spread is taken over: same weights, size, backend, row, calibration size and reporting set."""
    return (rec["weights"], tuple(rec["img_size"]), rec["backend"], rec["row"], rec["calib_n"], rec["val"])


def seed_spreads(stats_by: dict) -> dict:
    """``{group key: seed_spread(...)}`` for every group validated with two or more calibration seeds: whether
    the builds differ by more than the reporting images resolve (:func:`yoloport.analysis.bootstrap.seed_spread`)."""
    from yoloport.analysis.bootstrap import seed_spread

    return {k: seed_spread(v) for k, v in stats_by.items() if len(v) >= 2}


def write_json(path, args, results: list[dict], spreads: dict | None = None, differences: dict | None = None,
               means: dict | None = None) -> None:
    """The arguments and results so far (and the seed-spread intervals, the differences against the baseline
    row and the seed means with their intervals, at the end) as JSON at ``path`` (nothing when ``path`` is
    empty)."""
    if path:
        from yoloport.io.atomic import atomic_write

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        doc = {"args": vars(args), "results": results}
        if spreads:
            doc["seed_spreads"] = [{"group": list(k), **v} for k, v in spreads.items()]
        if means:
            doc["mean_drops"] = [{"group": list(k), **v} for k, v in means.items()]
        if differences:
            doc["baseline_row"] = args.baseline_row
            doc["differences"] = [{"group": list(k), **v} for k, v in differences.items()]
        text = json.dumps(doc, indent=2, default=str)
        atomic_write(path, lambda f: f.write(text.encode()))  # a kill mid-write leaves the previous records whole


def print_table(results: list[dict], spreads: dict | None = None, means: dict | None = None) -> None:
    """One line per (weights, size, backend, row, calib n, val set): mean drop (with its paired interval over
    the images when every seed has per-image stats), per-seed drops, spread (with the paired interval of best
    vs worst seed, ``noise`` when it holds 0), then the interval per seed."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault(group_key(r), []).append(r)
    print()
    print(f"{'weights':<18} {'size':<8} {'backend':<11} {'row':<16} {'n':>4} {'val':<24} {'drop pt':>8} "
          f"{'mean 95%':<16} {'seeds':<22} {'spread':>6} {'spread 95% (best vs worst)':<28} 95% interval per seed (paired bootstrap)")
    for key, rs in groups.items():
        wk, size, backend, row, n, val = key
        sp = (spreads or {}).get(key)
        sp_txt = "-" if sp is None else f"[{sp['low']:+.2f}, {sp['high']:+.2f}]" + (" noise" if sp["within_noise"] else "")
        drops = [r["drop_points"] for r in rs]
        spread = max(drops) - min(drops) if len(drops) > 1 else float("nan")
        cis = " ".join("-" if r["bootstrap_ci"] is None else f"[{r['bootstrap_ci'][0]:+.2f}, {r['bootstrap_ci'][1]:+.2f}]"
                       for r in rs)
        m = (means or {}).get(key)
        m_txt = "-" if m is None else f"[{m['low']:+.2f}, {m['high']:+.2f}]"
        print(f"{wk:<18} {size[0]}x{size[1]:<4} {backend:<11} {row:<16} {n:>4} {val:<24} {statistics.mean(drops):>+8.2f} "
              f"{m_txt:<16} {' '.join(f'{d:+.2f}' for d in drops):<22} {spread:>6.2f} {sp_txt:<28} {cis}")


if __name__ == "__main__":
    raise SystemExit(main())
