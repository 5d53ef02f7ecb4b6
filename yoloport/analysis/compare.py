"""Float vs ported model, image by image: what did quantization (or the backend) change?

Two views, both against the same preprocessed inputs:

- **tensors**: each head output of the reference (the PyTorch model in the same head mode) against
  the backend's, as SQNR (dB, ``10 log10(sum ref^2 / sum (ref - test)^2)``) and cosine similarity;
  plus the decoded ``[B, N, 5+nc]`` predictions when both heads have a decoded form, whole and split
  into boxes (``xywh`` pixels), objectness and class probabilities;
- **detections**: after the shared post-processing, boxes matched greedily by IoU (highest first,
  same class unless ``class_aware=False``): matched IoU, confidence change, boxes only one side has;
  for a keypoint head (face landmarks) the displacement of each matched detection's keypoints, in
  input pixels (the letterboxed image both runners see).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import YoloportError
from ..ops.boxes import box_iou
from ..quant.error import TensorStats, cosine, sqnr  # noqa: F401 - the tensor metrics, re-exported
from ..ops.postprocess import HeadSpec, decode_outputs, postprocess
from ..data.letterbox import input_multiple


# ----------------------------------------------------------------------------- tensor metrics


def compare_outputs(ref: list[np.ndarray], test: list[np.ndarray], names=None) -> list[dict]:
    """Per output: SQNR, cosine, max |diff| of ``test`` against ``ref`` (same order and shapes)."""
    if len(ref) != len(test):
        raise YoloportError(f"the reference has {len(ref)} outputs, the backend {len(test)}")
    rows = []
    for i, (r, t) in enumerate(zip(ref, test)):
        st = TensorStats(names[i] if names else f"out{i}")
        st.add(r, t)
        rows.append(st.to_dict())
    return rows


# ----------------------------------------------------------------------------- detections


def _rows(det) -> np.ndarray:
    """Detections as a 2-D float32 array ``[n, 6 + E]`` (an empty input becomes ``[0, 6]``)."""
    d = np.asarray(det, dtype=np.float32)
    return d.reshape(-1, d.shape[-1] if d.ndim == 2 and d.shape[-1] >= 6 else 6)


def match_detections(a: np.ndarray, b: np.ndarray, iou_thres: float = 0.5, class_aware: bool = True) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching of two ``[n, 6]`` detection sets (x1, y1, x2, y2, conf, cls);
    columns after the sixth (keypoints) are not read.

    Pairs are taken in order of decreasing IoU while both boxes are free and ``iou >= iou_thres``
    (and the classes agree when ``class_aware``). Returns ``[(i_a, j_b, iou), ...]``.
    """
    a = _rows(a)[:, :6]
    b = _rows(b)[:, :6]
    if not len(a) or not len(b):
        return []
    iou = box_iou(a[:, :4], b[:, :4])
    if class_aware:
        iou = np.where(a[:, 5:6] == b[None, :, 5], iou, 0.0)
    ii, jj = np.nonzero(iou >= iou_thres)
    order = np.argsort(-iou[ii, jj], kind="stable")
    used_a, used_b, pairs = set(), set(), []
    for k in order:
        i, j = int(ii[k]), int(jj[k])
        if i in used_a or j in used_b:
            continue
        used_a.add(i)
        used_b.add(j)
        pairs.append((i, j, float(iou[i, j])))
    return pairs


def keypoint_displacement(ref: np.ndarray, test: np.ndarray, pairs) -> np.ndarray:
    """``[P, K]`` distances in pixels between the keypoints of matched detections: ``ref [n, 6+2K]`` and
    ``test [m, 6+2K]`` rows (keypoints x, y after the six usual columns), ``pairs`` from
    :func:`match_detections`. ``[P, 0]`` when either side carries no keypoints."""
    ref, test = _rows(ref), _rows(test)
    k = min(ref.shape[1], test.shape[1]) - 6
    if k <= 0 or k % 2 or not pairs:
        return np.zeros((len(pairs), 0), np.float64)
    i = np.array([p[0] for p in pairs])
    j = np.array([p[1] for p in pairs])
    d = (test[j, 6 : 6 + k] - ref[i, 6 : 6 + k]).astype(np.float64).reshape(len(pairs), k // 2, 2)
    return np.sqrt((d * d).sum(-1))


def compare_detections(ref: np.ndarray, test: np.ndarray, iou_thres: float = 0.5, class_aware: bool = True) -> dict:
    """Summary of one image's matching: counts, mean IoU, confidence changes, unmatched boxes, and for
    keypoint detections (``[n, 6+2K]``) the keypoint displacement of matched pairs in pixels
    (``landmark_px_mean``/``landmark_px_max`` over every keypoint of every pair; None without keypoints)."""
    ref, test = _rows(ref), _rows(test)
    pairs = match_detections(ref, test, iou_thres, class_aware)
    ious = np.array([p[2] for p in pairs], dtype=np.float64)
    dconf = np.array([test[j, 4] - ref[i, 4] for i, j, _ in pairs], dtype=np.float64)
    disp = keypoint_displacement(ref, test, pairs)  # [P, K]
    has_kpts = disp.shape[1] > 0
    mi = {i for i, _, _ in pairs}
    mj = {j for _, j, _ in pairs}
    return {
        "n_ref": int(len(ref)),
        "n_test": int(len(test)),
        "matched": len(pairs),
        "mean_iou": float(ious.mean()) if len(ious) else None,
        "min_iou": float(ious.min()) if len(ious) else None,
        "mean_conf_delta": float(dconf.mean()) if len(dconf) else None,
        "max_abs_conf_delta": float(np.abs(dconf).max()) if len(dconf) else None,
        "unmatched_ref": [_box(ref[i]) for i in range(len(ref)) if i not in mi],
        "unmatched_test": [_box(test[j]) for j in range(len(test)) if j not in mj],
        "landmark_px_mean": float(disp.mean()) if has_kpts else None,
        "landmark_px_max": float(disp.max()) if has_kpts else None,
        "pairs": [{"ref": i, "test": j, "iou": iou, "conf_ref": float(ref[i, 4]), "conf_test": float(test[j, 4]),
                   **({"landmark_px": [round(float(v), 3) for v in disp[n]]} if has_kpts else {})}
                  for n, (i, j, iou) in enumerate(pairs)],
    }


def _box(d) -> dict:
    return {"xyxy": [round(float(v), 2) for v in d[:4]], "conf": round(float(d[4]), 4), "cls": int(d[5])}


# ----------------------------------------------------------------------------- reference in any head mode


class TorchModeRunner:
    """The PyTorch model with its Detect head in an export mode (prepared exactly as the exporter
    prepares it, without BN fusion): the graph's outputs before export, so a backend's tensors can be
    compared one to one. ``raw`` without sigmoid is :class:`TorchRunner`'s layout."""

    backend = "torch"  # the reference's own name (yoloport.backends.registry.REFERENCE)

    def __init__(self, model, head: HeadSpec, img_size_hw):
        import torch

        from ..deploy.export import prepare_model

        self.torch = torch
        self.model, _ = prepare_model(model, head.mode, tuple(img_size_hw), sigmoid=bool(head.sigmoid_applied), fuse=False)
        self.head = HeadSpec.from_model(model, head.mode, sigmoid_applied=bool(head.sigmoid_applied))
        self.input_hw, self.batch, self.stride = tuple(img_size_hw), None, input_multiple(model.stride)

    def __call__(self, images: np.ndarray) -> list[np.ndarray]:
        with self.torch.inference_mode():
            out = self.model(self.torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)))
        out = out if isinstance(out, (list, tuple)) else [out]
        return [o.float().numpy() for o in out]


def reference_runner(model, head: HeadSpec, img_size_hw=None):
    """The float reference whose outputs have ``head``'s layout (``img_size_hw``: the input size,
    needed by the modes that decode in the graph)."""
    if head.mode == "raw" and not head.sigmoid_applied:
        from ..backends.torch_backend import TorchRunner

        return TorchRunner(model)
    if img_size_hw is None:
        raise YoloportError(f"a {head.mode} reference needs the input size")
    return TorchModeRunner(model, head, img_size_hw)


# ----------------------------------------------------------------------------- the comparison

# slices of the decoded [B, N, 5+nc] predictions compared on their own: the raw logits' SQNR is
# dominated by large negative class logits that never matter; these say what moved where it counts.
DECODED_PARTS = {"xywh": slice(0, 4), "obj": slice(4, 5), "cls": slice(5, None)}


def decoded_parts(head: HeadSpec) -> dict:
    """:data:`DECODED_PARTS` of ``head``'s decoded rows; a keypoint head's classes end where its
    keypoints (last, ``2K`` columns) begin, and the keypoints are a part of their own (``kpts``)."""
    if not head.nkpt:
        return dict(DECODED_PARTS)
    return {"xywh": slice(0, 4), "obj": slice(4, 5), "cls": slice(5, 5 + head.nc), "kpts": slice(5 + head.nc, None)}


def _load_image(path):
    from ..data.sources import require_image

    return require_image(path)


def compare_runners(
    ref_runner,
    test_runner,
    images,
    img_size_hw=(640, 640),
    conf_thres: float = 0.25,
    iou_thres: float = 0.45,
    match_iou: float = 0.5,
    class_aware: bool = True,
    max_det: int = 300,
) -> dict:
    """Run both runners on every image (letterboxed to the test runner's fixed shape, else
    ``img_size_hw``) and compare outputs and detections.

    ``images``: image paths. Returns ``{"images": [per-image rows], "outputs": [per-output tensor
    stats], "decoded": stats of the decoded predictions or None, "summary": {...}, "settings": {...}}``.
    """
    from ..data.letterbox import preprocess

    paths = [Path(p) for p in images]
    if not paths:
        raise YoloportError("no images to compare on")
    hw = tuple(test_runner.input_hw or ref_runner.input_hw or img_size_hw)
    rh, th = ref_runner.head, test_runner.head
    # end2end outputs are final detections (order and count vary): compared as detections only
    same_layout = rh.mode == th.mode != "end2end" and bool(rh.sigmoid_applied) == bool(th.sigmoid_applied)
    out_stats: list[TensorStats] = []
    decodable = "end2end" not in (rh.mode, th.mode)
    decoded = TensorStats("decoded") if decodable else None
    part_slices = decoded_parts(th)
    parts = {k: TensorStats(f"decoded.{k}") for k in part_slices} if decodable else {}
    rows = []
    for p in paths:
        x, _ = preprocess(_load_image(p), hw, stride=max(test_runner.stride, 1), auto=False)
        x = x[None]
        ro, to = ref_runner(x), test_runner(x)
        if same_layout:
            if len(ro) != len(to):
                raise YoloportError(f"the reference gives {len(ro)} outputs, {test_runner.backend} {len(to)}")
            if not out_stats:
                out_stats = [TensorStats(f"out{i}") for i in range(len(ro))]
            for st, r, t in zip(out_stats, ro, to):
                st.add(r, t)
        if decoded is not None:
            dr, dt = decode_outputs(ro, rh), decode_outputs(to, th)
            decoded.add(dr, dt)
            for k, sl in part_slices.items():
                parts[k].add(dr[..., sl], dt[..., sl])
        rd = postprocess(ro, rh, conf_thres, iou_thres, max_det=max_det)[0]
        td = postprocess(to, th, conf_thres, iou_thres, max_det=max_det)[0]
        rows.append({"image": str(p), **compare_detections(rd, td, match_iou, class_aware)})
    outputs = [s.to_dict() for s in out_stats]
    dec = decoded.to_dict() if decoded is not None else None
    dec_parts = [p.to_dict() for p in parts.values()]
    n_ref = sum(r["n_ref"] for r in rows)
    n_test = sum(r["n_test"] for r in rows)
    matched = sum(r["matched"] for r in rows)
    ious = [pr["iou"] for r in rows for pr in r["pairs"]]
    dconf = [pr["conf_test"] - pr["conf_ref"] for r in rows for pr in r["pairs"]]
    summary = {
        "images": len(rows),
        "ref_detections": n_ref,
        "test_detections": n_test,
        "matched": matched,
        "match_rate": matched / max(n_ref, n_test) if max(n_ref, n_test) else 1.0,
        "unmatched_ref": n_ref - matched,
        "unmatched_test": n_test - matched,
        "mean_iou": float(np.mean(ious)) if ious else None,
        "mean_abs_conf_delta": float(np.mean(np.abs(dconf))) if dconf else None,
        "max_abs_conf_delta": float(np.max(np.abs(dconf))) if dconf else None,
        **landmark_summary(rows),
        "min_output_sqnr_db": min((o["sqnr_db"] for o in outputs), default=None),
        "min_output_cosine": min((o["cosine"] for o in outputs), default=None),
    }
    settings = {
        "input_hw": list(hw), "conf_thres": conf_thres, "iou_thres": iou_thres, "match_iou": match_iou,
        "class_aware": class_aware, "ref": ref_runner.backend, "test": test_runner.backend,
        "ref_mode": rh.mode, "test_mode": th.mode, "tensors_compared": same_layout,
    }
    return {"images": rows, "outputs": outputs, "decoded": dec, "decoded_parts": dec_parts, "summary": summary, "settings": settings}


def landmark_summary(rows: list[dict]) -> dict:
    """Keypoint displacement over every matched pair of every image (``rows`` of
    :func:`compare_detections`): ``landmark_px_mean``, ``landmark_px_p90``, ``landmark_px_max`` (pixels,
    over all keypoints) and ``landmark_pairs``; None values when the detections carry no keypoints."""
    d = np.array([v for r in rows for pr in r["pairs"] for v in pr.get("landmark_px", [])], dtype=np.float64)
    if not d.size:
        return {"landmark_px_mean": None, "landmark_px_p90": None, "landmark_px_max": None, "landmark_pairs": 0}
    return {"landmark_px_mean": float(d.mean()), "landmark_px_p90": float(np.percentile(d, 90)),
            "landmark_px_max": float(d.max()),
            "landmark_pairs": sum(1 for r in rows for pr in r["pairs"] if pr.get("landmark_px"))}


def format_compare_table(report: dict) -> str:
    """The human-readable tables: per output tensor, then per image."""
    lines = []
    outs = list(report["outputs"]) + ([report["decoded"]] if report.get("decoded") else []) + list(report.get("decoded_parts") or [])
    if outs:
        lines.append(f"{'output':<14} {'shape':<14} {'SQNR dB':>9} {'cosine':>9} {'min cos':>9} {'max|diff|':>10}")
        for o in outs:
            lines.append(
                f"{o['output']:<14} {'x'.join(map(str, o['shape'] or [])):<14} {_f(o['sqnr_db'], 2):>9} "
                f"{_f(o['cosine'], 5):>9} {_f(o['min_cosine'], 5):>9} {_f(o['max_abs_diff'], 4):>10}"
            )
        lines.append("")
    lines.append(f"{'image':<28} {'ref':>4} {'test':>5} {'match':>6} {'mean IoU':>9} {'dconf':>8} {'only ref':>9} {'only test':>10}")
    for r in report["images"]:
        lines.append(
            f"{Path(r['image']).name[:28]:<28} {r['n_ref']:>4} {r['n_test']:>5} {r['matched']:>6} {_f(r['mean_iou'], 3):>9} "
            f"{_f(r['mean_conf_delta'], 4):>8} {len(r['unmatched_ref']):>9} {len(r['unmatched_test']):>10}"
        )
    s = report["summary"]
    lines.append(
        f"{'all':<28} {s['ref_detections']:>4} {s['test_detections']:>5} {s['matched']:>6} {_f(s['mean_iou'], 3):>9} "
        f"{'':>8} {s['unmatched_ref']:>9} {s['unmatched_test']:>10}"
    )
    lines.append(
        f"matched {s['matched']} of {max(s['ref_detections'], s['test_detections'])} boxes ({_f(100 * s['match_rate'], 1)}%), "
        f"mean |dconf| {_f(s['mean_abs_conf_delta'], 4)}, max |dconf| {_f(s['max_abs_conf_delta'], 4)} "
        "(dconf = test - ref confidence of matched boxes)"
    )
    if s.get("landmark_px_mean") is not None:
        lines.append(
            f"landmarks of {s['landmark_pairs']} matched detections moved {_f(s['landmark_px_mean'], 2)} px on average "
            f"(p90 {_f(s['landmark_px_p90'], 2)}, max {_f(s['landmark_px_max'], 2)}; input pixels)"
        )
    return "\n".join(lines)


def _f(v, nd) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.{nd}f}"


def jsonable(obj):
    """A copy of ``obj`` that strict JSON can hold: infinite floats become ``"inf"`` / ``"-inf"``."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj
