"""ONNX Runtime's own view of where a fully int8 QDQ model drifts (the ``qdq_loss_debug`` idea): each
convolution's output in the int8 graph against the same tensor of the fp32 graph, accumulated."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..deploy.onnx_graph import onnx_conv_names
from ..quant.error import TensorStats
from ..quant.ranking import SensitivityReport, _stack_images
from .onnxruntime_tensors import tensor_session

BACKEND = "onnxruntime"  # this step builds and reads ONNX Runtime's QDQ graphs


def _conv_outputs(model, nodes: Sequence[str]) -> dict[str, str]:
    """``{node: its output tensor}`` for each Conv of ``model`` (an onnx ModelProto) named in ``nodes``."""
    want = set(nodes)
    return {n.name: n.output[0] for n in model.graph.node if n.op_type == "Conv" and n.name in want}


def ort_activation_errors(fp32_onnx, int8_onnx, images, nodes: Sequence[str]) -> dict[str, dict]:
    """onnxruntime's own view (the ``qdq_loss_debug`` idea): each Conv's output in the fully quantized
    QDQ model ``int8_onnx`` against the same tensor of ``fp32_onnx``, over ``images`` (float32
    ``[N, 3, H, W]``, fed one at a time). The error is *accumulated* (everything upstream is int8
    too), so it shows where the quantized network drifts, not what one layer adds.
    Returns ``{node: {"sqnr_db", "cosine"}}`` for the nodes present in both graphs."""
    import onnx

    runs = []
    for path in (fp32_onnx, int8_onnx):  # each Conv's output exposed as qdq_loss_debug does, in memory
        model = onnx.load(str(path))
        tensors = _conv_outputs(model, nodes)
        runs.append((tensor_session(model, tensors.values()), tensors))
    common = [n for n in nodes if n in runs[0][1] and n in runs[1][1]]
    stats = {n: TensorStats(n) for n in common}
    x = _stack_images(images)
    for i in range(x.shape[0]):
        outs = []
        for sess, tensors in runs:
            names = [tensors[n] for n in common]
            outs.append(dict(zip(common, sess.run(names, {sess.get_inputs()[0].name: x[i : i + 1]}))))
        for n in common:
            stats[n].add(outs[0][n], outs[1][n])
    return {n: {k: st.to_dict()[k] for k in ("sqnr_db", "cosine")} for n, st in stats.items()}


def attach_ort_debug(report: SensitivityReport, model, calibration, out_dir, img_hw, qconfig: dict | None = None,
                     n_images: int = 8, export=None, for_backend: str | None = None) -> Path:
    """Build onnxruntime's fully int8 QDQ model (``qconfig`` and ``export`` when the ranking is for
    onnxruntime itself, ``for_backend``; its defaults otherwise) in ``out_dir`` and
    fill each row's ``node`` and ``ort_sqnr_db`` (:func:`ort_activation_errors` on the first
    ``n_images`` calibration inputs). Returns the int8 ONNX path."""
    from .registry import build, canonical_name, export_for

    if for_backend is None or canonical_name(for_backend) != BACKEND:  # a ranking for another backend:
        qconfig, export = {}, None  # ONNX Runtime's defaults and its own opset

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    exp = export or export_for(BACKEND, model, out_dir / "model.fp32.onnx", img_hw, mode="raw")
    fp32 = exp.path
    art = build(BACKEND, model, exp, out_dir, calibration, {**(qconfig or {}), "precision": "int8"})
    names = onnx_conv_names(fp32, [r.name for r in report.layers])
    images = []
    for a in calibration:
        images.append(a)
        if len(images) >= n_images:
            break
    errs = ort_activation_errors(fp32, art, images, list(names.values()))
    for r in report.layers:
        r.node = names.get(r.name)
        e = errs.get(r.node or "")
        r.ort_sqnr_db = float(e["sqnr_db"]) if e else None
    return Path(art)
