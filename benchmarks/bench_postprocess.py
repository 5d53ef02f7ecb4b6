"""Host post-processing cost: yoloport's numpy decode + NMS, before and after issue 14, beside torch.

The head outputs are real: the v5.0 fixture (yolov5s) on bus.jpg letterboxed to 640x640
(3 levels, 25,200 candidates, 80 classes), computed once by the PyTorch model. Two settings:

- ``detect``: conf 0.25, IoU 0.45, single label, max_det 300 (``yoloport detect`` defaults);
- ``val``:    conf 0.001, IoU 0.6, multi-label, max_det 300 (validation, like Ultralytics' val.py).

Three implementations, timed round-robin (:func:`yoloport.analysis.bench.time_interleaved`, so load
drift hits all alike), min and median over ``--repeat`` rounds:

- ``numpy``: :func:`yoloport.ops.decode.decode_raw_above` (objectness filtered in logit space before
  any sigmoid, only survivors decoded) + :func:`yoloport.ops.nms.nms_candidates` (blocked greedy NMS);
- ``numpy-before``: the pre-issue-14 path (``tests/postprocess_reference.py``: every candidate decoded
  into ``[1, 25200, 85]``, NMS one kept box per step);
- ``torch``: ``decode_raw_torch`` + :func:`yoloport.ops.nms_torch.torch_non_max_suppression`.

"Same detections" compares boxes, scores and classes row by row: bit-identical to ``numpy-before``,
equal classes and boxes/scores within float tolerance to torch. Targets: detect total <= 0.5 ms and
>= 10x faster than before; val total <= 5 ms.

    python benchmarks/bench_postprocess.py [--repeat 30] [--threads N] [--json out.json] [--graph]

``--graph`` adds onnxruntime timings of the whole image: ``split`` graph + host NMS vs the
``end2end`` graph with ``NonMaxSuppression`` inside (and their detections compared the same way).
Timings depend on the machine and its load (recorded): read them as such.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import postprocess_reference as before  # noqa: E402
from yoloport.analysis.bench import machine_load, time_interleaved  # noqa: E402
from yoloport.nn.heads import decode_raw_torch  # noqa: E402
from yoloport.ops.decode import decode_raw_above  # noqa: E402
from yoloport.ops.nms import nms_candidates  # noqa: E402
from yoloport.ops.nms_torch import torch_non_max_suppression  # noqa: E402

SETTINGS = {
    "detect": {"conf_thres": 0.25, "iou_thres": 0.45, "multi_label": False, "max_det": 300},
    "val": {"conf_thres": 0.001, "iou_thres": 0.6, "multi_label": True, "max_det": 300},
}
TARGETS = {"detect": {"total_ms": 0.5, "speedup": 10.0}, "val": {"total_ms": 5.0}}


def real_outputs(img_size_hw=(640, 640)):
    """Raw head outputs ``[1, 255, H, W]`` x3 of the v5.0 fixture on bus.jpg, and the HeadSpec."""
    import cv2

    from yoloport.backends.torch_backend import TorchRunner
    from yoloport.data.letterbox import preprocess
    from yoloport.fixtures import fixtures_dir
    from yoloport.models import load_model

    fx = fixtures_dir()
    if fx is None:
        raise SystemExit("shared fixtures not found (set YOLOPORT_FIXTURES)")
    runner = TorchRunner(load_model(fx / "weights" / "yolov5s-v5.0.pt"))
    x, _ = preprocess(cv2.imread(str(fx / "images" / "bus.jpg")), img_size_hw, auto=False)
    return runner(x[None]), runner.head


def compare_detections(a: np.ndarray, b: np.ndarray, exact: bool) -> dict:
    """Row-by-row comparison of two ``[n, 6]`` detection arrays (x1, y1, x2, y2, conf, cls)."""
    same_n = len(a) == len(b)
    if not same_n:
        return {"same": False, "rows": [len(a), len(b)], "why": "different counts"}
    if exact:
        same = bool(np.array_equal(a, b))
        return {"same": same, "rows": len(a), "why": "" if same else "values differ"}
    cls_same = bool(np.array_equal(a[:, 5], b[:, 5]))
    box_diff = float(np.abs(a[:, :4] - b[:, :4]).max()) if len(a) else 0.0
    score_diff = float(np.abs(a[:, 4] - b[:, 4]).max()) if len(a) else 0.0
    same = cls_same and box_diff <= 1e-3 and score_diff <= 1e-5
    return {"same": same, "rows": len(a), "classes_equal": cls_same, "box_max_abs_diff": box_diff,
            "score_max_abs_diff": score_diff}


def bench(outputs, head, setting: dict, repeat: int) -> dict:
    anchors = np.asarray(head.anchors_px, np.float32)
    strides = head.strides
    t_outputs = [torch.from_numpy(o) for o in outputs]
    conf = setting["conf_thres"]
    kw = dict(setting)

    def np_decode():
        return decode_raw_above(outputs, anchors, strides, conf)

    def before_decode():
        return before.decode_raw(outputs, anchors, strides)

    def th_decode():
        return decode_raw_torch(t_outputs, anchors, strides)

    cands, pred_before, pred_th = np_decode(), before_decode(), th_decode()
    calls = {
        "numpy decode": np_decode,
        "numpy nms": lambda: nms_candidates(cands, **kw),
        "numpy total": lambda: nms_candidates(np_decode(), **kw),
        "numpy-before decode": before_decode,
        "numpy-before nms": lambda: before.non_max_suppression(pred_before, **kw),
        "numpy-before total": lambda: before.non_max_suppression(before_decode(), **kw),
        "torch decode": th_decode,
        "torch nms": lambda: torch_non_max_suppression(pred_th, **kw),
        "torch total": lambda: torch_non_max_suppression(th_decode(), **kw),
    }
    with torch.inference_mode():
        timing = time_interleaved(calls, warmup=2, repeat=repeat, threads=torch.get_num_threads())
        det_np = nms_candidates(np_decode(), **kw)[0]
        det_before = before.non_max_suppression(before_decode(), **kw)[0]
        det_th = torch_non_max_suppression(th_decode(), **kw)[0].numpy()
    res = {k: {"min": v["min_ms"], "median": v["median_ms"]} for k, v in timing["results"].items()}
    return {"ms": res, "candidates": int(pred_before.shape[1]), "obj_above_conf": int(len(cands[0])),
            "detections": len(det_np), "vs_before": compare_detections(det_np, det_before, exact=True),
            "vs_torch": compare_detections(det_np, det_th, exact=False),
            "load": {"before": timing["load_before"], "after": timing["load_after"]},
            "other_cpu_share": timing["other_cpu_share"]}


def verdicts(results: dict) -> list[str]:
    lines = []
    for name, t in TARGETS.items():
        r = results[name]
        total = r["ms"]["numpy total"]["min"]
        same = r["vs_before"]["same"]
        line = f"target {name}: numpy total {total:.3f} ms (min) <= {t['total_ms']} ms"
        ok = total <= t["total_ms"]
        if "speedup" in t:
            sp = r["ms"]["numpy-before total"]["min"] / total
            line += f", {sp:.1f}x faster than before (>= {t['speedup']}x)"
            ok = ok and sp >= t["speedup"]
        line += f", same detections as before: {same} -> {'met' if ok and same else 'NOT met'}"
        lines.append(line)
    return lines


def bench_graph_nms(repeat: int, threads: int | None) -> dict:
    """onnxruntime: the ``split`` graph + host NMS vs the ``end2end`` graph (NMS inside), same input."""
    import tempfile

    import cv2
    import onnxruntime as ort

    from yoloport.data.letterbox import preprocess
    from yoloport.deploy.export import export_onnx
    from yoloport.fixtures import fixtures_dir
    from yoloport.models import load_model
    from yoloport.ops.postprocess import postprocess

    fx = fixtures_dir()
    model = load_model(fx / "weights" / "yolov5s-v5.0.pt")
    x, _ = preprocess(cv2.imread(str(fx / "images" / "bus.jpg")), (640, 640), auto=False)
    x = x[None]
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    with tempfile.TemporaryDirectory() as d:
        sp, sh = export_onnx(model, f"{d}/split.onnx", (640, 640), "split")
        ep, eh = export_onnx(model, f"{d}/e2e.onnx", (640, 640), "end2end")
        s_sess = ort.InferenceSession(sp, opts, providers=["CPUExecutionProvider"])
        e_sess = ort.InferenceSession(ep, opts, providers=["CPUExecutionProvider"])
        timing = time_interleaved({
            "split+host": lambda: postprocess(s_sess.run(None, {"images": x}), sh),
            "end2end": lambda: postprocess(e_sess.run(None, {"images": x}), eh)}, warmup=1, repeat=repeat, threads=threads)
        ds = postprocess(s_sess.run(None, {"images": x}), sh)[0]
        de = postprocess(e_sess.run(None, {"images": x}), eh)[0]
    r = timing["results"]
    return {"split+host ms": r["split+host"]["median_ms"], "end2end ms": r["end2end"]["median_ms"],
            "detections": compare_detections(ds, de, exact=False)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=30, help="timed rounds per setting (min and median reported)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--json", help="also write the results to this JSON file")
    ap.add_argument("--graph", action="store_true",
                    help="also time onnxruntime: split graph + host NMS vs end2end graph (exports yolov5s twice)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    outputs, head = real_outputs()
    results = {name: bench(outputs, head, s, a.repeat if name == "detect" else max(5, a.repeat // 2))
               for name, s in SETTINGS.items()}
    load = machine_load()
    print(f"host post-processing, yolov5s-v5.0 on bus.jpg 640x640, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), numpy {np.__version__}, {platform.processor() or platform.machine()}; "
          f"load average {load['load1']} on {load['cpus']} CPUs")
    print(f"{'setting':<8} {'obj>conf':>8} {'dets':>5} | {'stage':<7} {'numpy ms':>15} {'before ms':>15} {'torch ms':>15} "
          f"{'before/numpy':>12}")
    print(f"{'':<23} | {'':<7} {'min / median':>15} {'min / median':>15} {'min / median':>15} {'(min)':>12}")
    for name, r in results.items():
        for i, stage in enumerate(("decode", "nms", "total")):
            cells = [r["ms"][f"{impl} {stage}"] for impl in ("numpy", "numpy-before", "torch")]
            head_cols = f"{name:<8} {r['obj_above_conf']:>8} {r['detections']:>5}" if i == 0 else " " * 23
            print(f"{head_cols} | {stage:<7} " + " ".join(f"{c['min']:>6.3f} / {c['median']:>6.3f}" for c in cells)
                  + f" {cells[1]['min'] / cells[0]['min']:>11.1f}x")
        vb, vt = r["vs_before"], r["vs_torch"]
        print(f"{'':<23} | same detections (boxes, scores, classes): vs before {vb['same']} (bit for bit, {vb['rows']} rows), "
              f"vs torch {vt['same']} (classes equal {vt.get('classes_equal')}, box |diff| {vt.get('box_max_abs_diff', 0):.1e}, "
              f"score |diff| {vt.get('score_max_abs_diff', 0):.1e}); other processes used {r['other_cpu_share']} of the CPUs")
    print()
    for line in verdicts(results):
        print(line)
    doc = {"threads": torch.get_num_threads(), "results": results, "verdicts": verdicts(results)}
    if a.graph:
        g = bench_graph_nms(max(5, a.repeat // 3), a.threads)
        doc["graph"] = g
        print(f"onnxruntime, whole image: split graph + host NMS {g['split+host ms']:.1f} ms | end2end graph "
              f"{g['end2end ms']:.1f} ms (same detections: {g['detections']['same']}, {g['detections']})")
    if a.json:
        Path(a.json).write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
