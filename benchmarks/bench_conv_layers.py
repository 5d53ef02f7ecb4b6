"""Where int8 yolov5s loses to the int8 GEMM ceiling, convolution by convolution (issue 14 item 3).

``bench_int8_ceiling.py`` gives one figure per model: GMAC/s over the whole inference against an int8 GEMM
(ONNX Runtime ``MatMulInteger``, 2048^3) measured in the same run. This script splits that figure with each
runtime's own profiler (the backends' ``profile_run``: ONNX Runtime's Chrome trace, OpenVINO's
``PERF_COUNT``), so the gap is attributed:

- **each convolution's efficiency**: its multiply-accumulates (counted from the fp32 ONNX graph's inferred
  shapes) over its kernel time, as % of the int8 GEMM ceiling. A profiled node is matched to the ONNX
  ``Conv`` whose name it starts with (``/model.2/cv1/conv/Conv`` -> ORT ``.../Conv_quant``, OpenVINO
  ``.../Conv/WithoutBiases``);
- **conv-only efficiency**: all convolution MACs over the summed convolution kernel time, i.e. the whole
  model's efficiency if everything that is not a convolution (activations, adds, concats, resizes,
  quantize / reorder nodes) and the runtime's overhead between kernels took no time at all. A model cannot
  reach a fraction of the ceiling above this figure with the same convolution kernels;
- the share of the inference spent outside convolutions, and the wall time against the summed kernel times.

Profiling adds a little overhead per node; the wall time with profiling is printed beside the sum. It is for
attributing time *within* one graph: to compare two recipes, time them unprofiled and round-robin
(``bench_ort_silu_op.py``, ``bench_int8_ceiling.py``). Session 8 saw ORT's profile put the QuickGelu graph's
convolutions at 17 ms against 11 ms, where unprofiled the two graphs ran within 2% of each other. The GEMM
ceiling is measured before and after the profiles (same threads); each % uses their mean and both are
printed, so a ceiling that moved shows.

    python benchmarks/bench_conv_layers.py --threads 2 [--runs 20] [--top 12] [--json out.json]

Timings depend on the machine and its load (printed): run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench_int8_ceiling import VARIANTS, add_model_args, gmac_per_s, int8_gemm_call, quantize_variant, timed


def conv_macs(onnx_path) -> dict:
    """``{Conv node name: MACs}`` (batch 1) of every Conv of the graph, from inferred shapes."""
    import onnx
    from onnx import numpy_helper, shape_inference

    m = shape_inference.infer_shapes(onnx.load(str(onnx_path)))
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(m.graph.value_info) + list(m.graph.output) + list(m.graph.input)}
    weights = {t.name: numpy_helper.to_array(t).shape for t in m.graph.initializer}
    out = {}
    for n in m.graph.node:
        if n.op_type == "Conv":
            _, cin_per_group, kh, kw = weights[n.input[1]]
            out[n.name] = int(np.prod(shapes[n.output[0]][1:])) * cin_per_group * kh * kw
    return out


def match_conv(node_name: str, conv_names: list[str]) -> str | None:
    """The ONNX Conv a profiled node runs: the longest conv name that ``node_name`` equals or starts with
    followed by ``/`` or ``_`` (so ``/model.2/m/0/cv1/conv/Conv`` never matches ``/model.2/cv1/...``)."""
    best = None
    for c in conv_names:
        if node_name == c or node_name.startswith((c + "/", c + "_")):
            if best is None or len(c) > len(best):
                best = c
    return best


def conv_table(profile, macs: dict, ceiling: float) -> dict:
    """Per-conv rows and the summary of one RuntimeProfile (``nodes``: name, layer, runtime type, us, kernel)."""
    names = list(macs)
    per_conv: dict[str, float] = {}
    other_us = 0.0
    other_by_type: dict[str, float] = {}
    for name, layer, _rtype, us, _kernel in profile.nodes:
        c = match_conv(str(name), names)
        if c is None:
            other_us += float(us)
            other_by_type[str(layer)] = other_by_type.get(str(layer), 0.0) + float(us)
        else:
            per_conv[c] = per_conv.get(c, 0.0) + float(us)
    rows = []
    for c, us in per_conv.items():
        g = macs[c] / (us / 1e6) / 1e9 if us > 0 else float("inf")
        rows.append({"conv": c, "mmac": macs[c] / 1e6, "us": us, "gmac_s": g, "pct_ceiling": 100 * g / ceiling})
    rows.sort(key=lambda r: -r["us"])
    conv_us = sum(per_conv.values())
    matched_macs = sum(macs[c] for c in per_conv)
    conv_g = matched_macs / (conv_us / 1e6) / 1e9 if conv_us else 0.0
    total_us = conv_us + other_us
    wall = profile.wall_us or total_us
    model_g = sum(macs.values()) / (wall / 1e6) / 1e9
    return {
        "rows": rows,
        "convs_profiled": len(per_conv), "convs_in_graph": len(macs),
        "conv_us": conv_us, "other_us": other_us, "wall_us": wall,
        "conv_only_gmac_s": conv_g, "conv_only_pct_ceiling": 100 * conv_g / ceiling,
        "model_gmac_s_profiled": model_g, "model_pct_ceiling_profiled": 100 * model_g / ceiling,
        "non_conv_share": other_us / total_us if total_us else 0.0,
        "other_us_by_type": dict(sorted(other_by_type.items(), key=lambda kv: -kv[1])),
    }


def print_table(label: str, t: dict, top: int) -> None:
    print(f"\n{label}: {t['convs_profiled']} of {t['convs_in_graph']} convolutions matched; "
          f"conv kernels {t['conv_us'] / 1e3:.2f} ms, other kernels {t['other_us'] / 1e3:.2f} ms "
          f"({100 * t['non_conv_share']:.0f}% of kernel time), wall with profiling {t['wall_us'] / 1e3:.2f} ms")
    print(f"  conv-only efficiency {t['conv_only_gmac_s']:.0f} GMAC/s = {t['conv_only_pct_ceiling']:.1f}% of the int8 ceiling "
          f"(the bound for the whole model with these conv kernels); whole model (profiled) "
          f"{t['model_pct_ceiling_profiled']:.1f}%")
    top_other = ", ".join(f"{k} {v / 1e3:.2f}" for k, v in list(t["other_us_by_type"].items())[:6])
    print(f"  outside the convolutions (ms per inference): {top_other}")
    print(f"  {'convolution':44s} {'MMAC':>7} {'us':>8} {'GMAC/s':>7} {'% ceil':>7}")
    for r in t["rows"][:top]:
        print(f"  {r['conv']:44s} {r['mmac']:7.1f} {r['us']:8.1f} {r['gmac_s']:7.0f} {r['pct_ceiling']:6.1f}%")
    eff = np.array([r["pct_ceiling"] for r in t["rows"]])
    us = np.array([r["us"] for r in t["rows"]])
    if len(eff):
        q = np.percentile(eff, [10, 50, 90])
        print(f"  per-conv efficiency: p10 {q[0]:.0f}%, median {q[1]:.0f}%, p90 {q[2]:.0f}%, best {eff.max():.0f}%; "
              f"convs under 50% take {100 * us[eff < 50].sum() / us.sum():.0f}% of conv time")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(ap)
    ap.add_argument("--runs", type=int, default=20, help="profiled inferences per runtime (after 3 warm-up ones)")
    ap.add_argument("--top", type=int, default=12, help="convolutions printed per runtime (slowest first)")
    ap.add_argument("--ort-variants", nargs="+", default=["qdq-pc", "qdq-pc-quickgelu"], choices=list(VARIANTS),
                    help="ONNX Runtime variants profiled (bench_int8_ceiling.VARIANTS)")
    ap.add_argument("--no-openvino", action="store_true")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    if not a.weights or not Path(a.weights).exists():
        print(f"weights {a.weights} not found (pass --weights)", file=sys.stderr)
        return 2
    if a.runs < 1 or a.threads < 1:
        print("--runs and --threads must be at least 1", file=sys.stderr)
        return 2

    from yoloport.analysis.bench import machine_info
    from yoloport.backends import onnxruntime_backend as ob
    from yoloport.backends.registry import build, export_for, get_spec
    from yoloport.data.calibration import load_calibration
    from yoloport.data.letterbox import input_multiple
    from yoloport.deploy.export import export_onnx
    from yoloport.models import load_model

    t, hw = a.threads, (a.size, a.size)
    gemm = {"ceiling int8 GEMM": int8_gemm_call(t)}

    def ceiling() -> float:
        return gmac_per_s(timed(gemm, 1, a.gemm_repeat, t, False)["results"]["ceiling int8 GEMM"]["min_ms"])

    before = ceiling()
    model = load_model(a.weights)
    calibration = load_calibration(a.calib, a.calib_n, hw, input_multiple(model.stride), warn=lambda m: print(f"warning: {m}"))
    x = next(iter(calibration))
    doc = {"machine": machine_info(), "threads": t, "weights": Path(a.weights).name, "size": a.size}
    profiles, graph_macs = {}, {}  # per runtime: its profile and the MACs of the graph it was built from
    with tempfile.TemporaryDirectory(prefix="yoloport-convs-") as tmp:
        work = Path(tmp)
        ort_stem = get_spec("onnxruntime").focus_to_conv if a.focus_to_conv is None else a.focus_to_conv
        fp32, _ = export_onnx(model, work / "fp32.onnx", hw, "raw", opset=13, overwrite=True, focus_to_conv=ort_stem)
        macs = conv_macs(fp32)
        from onnxruntime import quantization as q

        prep = work / "prep.onnx"
        q.quant_pre_process(str(fp32), str(prep), skip_symbolic_shape=True)
        for variant in a.ort_variants:
            qdq = work / f"{variant}.onnx"
            quantize_variant(prep, qdq, calibration, *VARIANTS[variant])
            label = f"onnxruntime int8 ({variant}, all int8)"
            profiles[label] = ob.profile_run(qdq, x, runs=a.runs, threads=t)
            graph_macs[label] = macs
        if not a.no_openvino:
            from yoloport.backends import openvino_backend as vb

            export = export_for("openvino", model, work / "ov" / "model.onnx", hw, mode="raw",
                                export_options={"focus_to_conv": a.focus_to_conv})
            art = build("openvino", model, export, work / "ov-int8", calibration, {"precision": "int8", "head_fp32": "none"})
            profiles["openvino int8 (NNCF, all int8)"] = vb.profile_run(art, x, runs=a.runs, threads=t)
            graph_macs["openvino int8 (NNCF, all int8)"] = conv_macs(export.path)  # its own stem (Focus or Conv)
    after = ceiling()
    ceil = (before + after) / 2
    print(f"{doc['weights']} {a.size}x{a.size}, {t} threads: {sum(macs.values()) / 1e9:.2f} GMAC in {len(macs)} convolutions; "
          f"int8 GEMM ceiling {before:.0f} GMAC/s before the profiles, {after:.0f} after (mean {ceil:.0f} used); "
          f"load average {os.getloadavg()[0]:.2f} (1 min) at the end")
    doc.update(ceiling_gmac_s={"before": before, "after": after}, tables={})
    for label, prof in profiles.items():
        tab = conv_table(prof, graph_macs[label], ceil)
        doc["tables"][label] = tab
        print_table(label, tab, a.top)
    if a.json:
        Path(a.json).write_text(json.dumps(doc, indent=1, default=str))
        print(f"\nsaved to {a.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
