"""Host post-processing cost: numpy decode + NMS next to the same work in PyTorch, one run.

The head outputs are real: the v5.0 fixture (yolov5s) on bus.jpg letterboxed to 640x640
(3 levels, 25,200 candidates, 80 classes), computed once by the PyTorch model. Two settings:

- ``detect``: conf 0.25, IoU 0.45, single label (``yoloport detect`` defaults);
- ``val``:    conf 0.001, IoU 0.6, multi-label, max_det 300 (validation, like Ultralytics' val.py).

For each: ``decode`` (raw conv outputs -> ``[1, 25200, 85]``), ``nms`` (decoded -> detections) and
``total``, medians over ``--repeat`` runs after a warm-up (numpy and torch called alternately), numpy (``yoloport.ops``) vs torch
(``yoloport.deploy.heads.decode_raw_torch`` + ``yoloport.deploy.nms_op.torch_non_max_suppression``,
the same algorithm written in torch). The two must give the same detections (checked).

    python benchmarks/bench_postprocess.py [--repeat 30] [--threads N] [--json out.json] [--graph]

``--graph`` adds onnxruntime timings of the whole image: ``split`` graph + host NMS vs the
``end2end`` graph with ``NonMaxSuppression`` inside.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from yoloport.deploy.heads import decode_raw_torch  # noqa: E402
from yoloport.deploy.nms_op import torch_non_max_suppression  # noqa: E402
from yoloport.ops.decode import decode_raw  # noqa: E402
from yoloport.ops.nms import non_max_suppression  # noqa: E402

SETTINGS = {
    "detect": {"conf_thres": 0.25, "iou_thres": 0.45, "multi_label": False, "max_det": 300},
    "val": {"conf_thres": 0.001, "iou_thres": 0.6, "multi_label": True, "max_det": 300},
}


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


def paired_median_ms(fa, fb, repeat: int) -> tuple[float, float, object, object]:
    """Median ms of ``fa`` and ``fb`` called alternately (so load drift hits both alike), after a warm-up."""
    a, b = fa(), fb()
    ta, tb = [], []
    for _ in range(repeat):
        t = time.perf_counter()
        a = fa()
        ta.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        b = fb()
        tb.append((time.perf_counter() - t) * 1e3)
    return statistics.median(ta), statistics.median(tb), a, b


def bench(outputs, head, setting: dict, repeat: int) -> dict:
    anchors = np.asarray(head.anchors_px, np.float32)
    t_outputs = [torch.from_numpy(o) for o in outputs]
    kw = dict(setting)
    np_decode = lambda: decode_raw(outputs, anchors, head.strides)  # noqa: E731
    th_decode = lambda: decode_raw_torch(t_outputs, anchors, head.strides)  # noqa: E731
    r = {}
    with torch.inference_mode():
        r["numpy decode"], r["torch decode"], pred_np, pred_th = paired_median_ms(np_decode, th_decode, repeat)
        r["numpy nms"], r["torch nms"], det_np, det_th = paired_median_ms(
            lambda: non_max_suppression(pred_np, **kw), lambda: torch_non_max_suppression(pred_th, **kw), repeat)
        r["numpy total"], r["torch total"], _, _ = paired_median_ms(
            lambda: non_max_suppression(np_decode(), **kw), lambda: torch_non_max_suppression(th_decode(), **kw), repeat)
    a, b = det_np[0], det_th[0].numpy()
    same = len(a) == len(b) and (not len(a) or (np.abs(a - b).max() < 1e-3))
    above = int((pred_np[0, :, 4] > setting["conf_thres"]).sum())
    return {"ms": r, "candidates": int(pred_np.shape[1]), "obj_above_conf": above, "detections": len(a),
            "same_detections": bool(same), "decode_max_abs_diff": float(np.abs(pred_np - pred_th.numpy()).max())}


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
        split_run = lambda: postprocess(s_sess.run(None, {"images": x}), sh)  # noqa: E731
        e2e_run = lambda: postprocess(e_sess.run(None, {"images": x}), eh)  # noqa: E731
        ts, te, ds, de = paired_median_ms(split_run, e2e_run, repeat)
    return {"split+host ms": ts, "end2end ms": te, "same_count": len(ds[0]) == len(de[0])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=30, help="timed runs per measurement (median reported)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--json", help="also write the results to this JSON file")
    ap.add_argument("--graph", action="store_true",
                    help="also time onnxruntime: split graph + host NMS vs end2end graph (exports yolov5s twice)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    outputs, head = real_outputs()
    results = {name: bench(outputs, head, s, a.repeat if name == "detect" else max(3, a.repeat // 3))
               for name, s in SETTINGS.items()}
    print(f"host post-processing, yolov5s-v5.0 on bus.jpg 640x640, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), numpy {np.__version__}, {platform.processor() or platform.machine()}")
    print(f"{'setting':<8} {'cands>conf':>10} {'dets':>5} | {'stage':<7} {'numpy ms':>9} {'torch ms':>9} {'np/torch':>8}")
    for name, r in results.items():
        for i, stage in enumerate(("decode", "nms", "total")):
            n, t = r["ms"][f"numpy {stage}"], r["ms"][f"torch {stage}"]
            head_cols = f"{name:<8} {r['obj_above_conf']:>10} {r['detections']:>5}" if i == 0 else " " * 25
            print(f"{head_cols} | {stage:<7} {n:>9.2f} {t:>9.2f} {n / t:>8.2f}")
        print(f"{'':<25} | same detections: {r['same_detections']}, decode max |diff| {r['decode_max_abs_diff']:.1e}")
    doc = {"threads": torch.get_num_threads(), "results": results}
    if a.graph:
        g = bench_graph_nms(max(5, a.repeat // 3), a.threads)
        doc["graph"] = g
        print(f"onnxruntime, whole image: split graph + host NMS {g['split+host ms']:.1f} ms | end2end graph "
              f"{g['end2end ms']:.1f} ms (same detections count: {g['same_count']})")
    if a.json:
        Path(a.json).write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
