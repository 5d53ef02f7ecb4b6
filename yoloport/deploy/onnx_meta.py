"""What an exported graph says about itself: ONNX ``metadata_props`` and the JSON sidecar.

Every yoloport export carries, as ONNX metadata (string key -> string value; non-strings JSON
encoded) and in a sidecar ``<model>.onnx.json`` holding the same document::

    names         class names, JSON list            stride     JSON list, e.g. [8.0, 16.0, 32.0]
    anchors       JSON [nl][na][2] in pixels         nc         int
    input_hw      JSON [h, w]                        batch      int, or "dynamic"
    mode          raw | split | decoded | end2end    sigmoid    true/false (raw: sigmoid in graph)
    preprocess    JSON {"color": "RGB", "layout": "NCHW", "scale": 1/255, "mean": [0,0,0],
                        "std": [1,1,1], "letterbox_color": [114,114,114], "letterbox_auto": false}
    opset, yoloport_version, outputs (names in order), head_spec (the HeadSpec dict)
    convention    the output convention the outputs follow (yoloport.deploy.conventions), or null
    conf_thres, iou_thres, max_det                   end2end only: baked-in NMS settings

so any consumer (C++ on the board, another runtime) can rebuild the host post-processing without
yoloport. The Ultralytics keys ``stride`` (max) and ``names`` (dict repr) are *not* reproduced: ours
are JSON. :func:`read_onnx_meta` returns the decoded dict, :func:`head_spec_from_onnx` the HeadSpec.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import YoloportError
from ..ops.postprocess import HeadSpec

META_MARKER = "yoloport_version"
PREPROCESS = {
    "color": "RGB",
    "layout": "NCHW",
    "scale": 1.0 / 255.0,
    "mean": [0.0, 0.0, 0.0],
    "std": [1.0, 1.0, 1.0],
    "letterbox_color": [114, 114, 114],
    "letterbox_auto": False,
}


def sidecar_path(onnx_path) -> Path:
    """``model.onnx`` -> ``model.onnx.json`` (never collides with another tool's ``model.json``)."""
    p = Path(onnx_path)
    return p.with_name(p.name + ".json")


def build_meta(head: HeadSpec, input_hw, batch, opset: int, outputs: list[str], extra: dict | None = None) -> dict:
    """The metadata document of one export (plain JSON-able dict)."""
    from .._version import __version__

    meta = {
        "yoloport_version": __version__,
        "mode": head.mode,
        "names": list(head.names),
        "nc": int(head.nc),
        "stride": [float(s) for s in head.strides],
        "anchors": head.anchors_px,
        "input_hw": [int(v) for v in input_hw],
        "batch": batch if batch == "dynamic" else int(batch),
        "sigmoid": bool(head.sigmoid_applied),
        "preprocess": dict(PREPROCESS),
        "opset": int(opset),
        "outputs": list(outputs),
        "head_spec": head.to_dict(),
    }
    meta.update(extra or {})
    return meta


def _encode(v) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def _decode(v: str):
    try:
        return json.loads(v)
    except ValueError:
        return v


def write_onnx_meta(model, meta: dict) -> None:
    """Set ``meta`` as ``model.metadata_props`` (replacing keys of the same name), in place."""
    keep = [p for p in model.metadata_props if p.key not in meta]
    del model.metadata_props[:]
    for p in keep:
        model.metadata_props.add(key=p.key, value=p.value)
    for k, v in meta.items():
        model.metadata_props.add(key=str(k), value=_encode(v))


def meta_from_proto(model) -> dict:
    """Decoded metadata of a loaded ``onnx.ModelProto`` (values JSON-decoded where they parse)."""
    return {p.key: _decode(p.value) for p in model.metadata_props}


def read_onnx_meta(path) -> dict:
    """Metadata of an ONNX file: its ``metadata_props`` (JSON-decoded), else its sidecar JSON.

    Reads only the graph's protobuf (no weights are needed); raises :class:`YoloportError` when the
    file is missing or carries no yoloport metadata in either place.
    """
    p = Path(path)
    if not p.is_file():
        raise YoloportError(f"{p}: no such ONNX file")
    meta: dict = {}
    try:
        import onnx

        meta = meta_from_proto(onnx.load(str(p), load_external_data=False))
    except ImportError:
        pass
    except Exception as e:  # noqa: BLE001 - onnx raises DecodeError and friends
        raise YoloportError(f"{p} is not a readable ONNX file: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if META_MARKER not in meta:
        side = sidecar_path(p)
        if side.is_file():
            try:
                meta = {**meta, **json.loads(side.read_text())}
            except ValueError as e:
                raise YoloportError(f"sidecar {side} is not valid JSON: {e}") from None
    if META_MARKER not in meta:
        raise YoloportError(f"{p} carries no yoloport metadata (not exported by yoloport, and no {side.name})")
    return meta


def head_spec_from_meta(meta: dict) -> HeadSpec:
    """HeadSpec from a metadata dict (its ``head_spec`` entry, else the flat keys)."""
    if isinstance(meta.get("head_spec"), dict):
        return HeadSpec.from_dict(meta["head_spec"])
    try:
        return HeadSpec(mode=meta["mode"], nc=int(meta["nc"]), anchors_px=meta["anchors"], strides=meta["stride"],
                        sigmoid_applied=bool(meta.get("sigmoid", False)), names=list(meta.get("names", [])),
                        convention=meta.get("convention"))
    except KeyError as e:
        raise YoloportError(f"ONNX metadata lacks {e.args[0]!r}: cannot rebuild the post-processing") from None


def head_spec_from_onnx(path) -> HeadSpec:
    """The :class:`HeadSpec` an exported graph's outputs follow (from its metadata or sidecar)."""
    return head_spec_from_meta(read_onnx_meta(path))


def is_yoloport_export(path) -> bool:
    """True when ``path`` is an ONNX file written by yoloport (has our metadata)."""
    try:
        import onnx

        return META_MARKER in meta_from_proto(onnx.load(str(path), load_external_data=False))
    except Exception:  # noqa: BLE001 - anything unreadable is not ours
        return False
