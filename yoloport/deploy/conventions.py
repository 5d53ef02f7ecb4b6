"""Output conventions: what each deployment target's standard clients expect from a YOLOv5 graph.

A convention is a fact about a target's ecosystem, written down once here as data and read by
``export``, ``quantize``, ``port`` and ``lint``:

``yoloport``
    three raw head convolutions ``[B, na*(5+nc), H, W]`` (stride 8, 16, 32), logits; yoloport's host
    decode (``HeadSpec.sigmoid_applied=False``) applies the sigmoid.
``rknn_model_zoo``
    Rockchip's rknn_model_zoo YOLOv5 demos (``examples/yolov5/python/yolov5.py`` and its C++ twin):
    the same three outputs *with the sigmoid applied* (the demo computes ``xy*2-0.5``,
    ``(wh*2)^2*anchor`` and ``obj*max(cls)`` on them and never applies a sigmoid), stride order, plus an
    anchors file (one value per line, ``[3][na][2]`` pixels) and a class names file (one per line).
``ultralytics``
    Ultralytics' ONNX export as ONNX Runtime / OpenVINO / OpenCV DNN users read it: one decoded
    ``[B, N, 5+nc]`` output (x, y, w, h pixels, objectness, class probabilities).
``mlu``
    Cambricon's ``yolov5_detection_output`` plugin: it takes the three raw head convolutions (logits;
    the plugin applies the sigmoid, decodes and runs NMS) and returns ``count`` + rows of
    (batch, class, score, x1, y1, x2, y2). The graph yoloport exports is therefore the raw logits head.
``split``
    yoloport's int8-friendly decoded head: ``xy``, ``wh`` and ``conf`` as three outputs.
``rknn_face``
    the RKNN ports of yolov5-face: the three raw head convolutions (logits, landmarks included), the
    sigmoid, decode and NMS on the CPU. rknn_model_zoo has no face demo, and its sigmoid-in-graph
    layout would join 0..1 probabilities and unbounded landmarks in one int8 tensor.

Keypoint heads (landmarks, ``HeadSpec.nkpt > 0``): each convention says whether it carries them as it
is (``keypoints``) or which convention a keypoint head follows instead (``keypoint_variant``): a
target's *default* convention is replaced by its keypoint variant (:func:`default_for_head`); a
convention the user names is kept (and ``yoloport lint`` says what it costs).

Every backend's :class:`~yoloport.backends.spec.BackendSpec` names its default convention
(``output_convention``); a user may choose another with ``--convention``, or set the graph-shaping
options (``--mode``, ``--sigmoid``) directly, which then record the convention they match.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import YoloportError


@dataclass(frozen=True)
class OutputConvention:
    """One convention: the head ``mode`` and ``sigmoid`` that produce it, and who reads it.

    - ``mode``/``sigmoid``: the export options (``sigmoid`` only means something for ``raw``).
    - ``client``: the standard client that reads these outputs; ``definition``: the layout in one line.
    - ``anchors_file`` / ``names_file``: files the client reads next to the model (None: none).
    - ``command``: how to run the client on the model (``{artifact}``, ``{anchors}``, ``{w}``, ``{h}`` and
      ``{names}`` are filled in), for the README written next to it.
    """

    name: str
    mode: str
    sigmoid: bool
    client: str
    definition: str
    anchors_file: str | None = None
    names_file: str | None = None
    command: str | None = None
    keypoints: str = ""  # how a keypoint head's landmarks appear in this layout ("" : see keypoint_variant)
    keypoint_variant: str | None = None  # the convention a keypoint head follows instead of this one

    @property
    def export_options(self) -> dict:
        """The graph-shaping export options of this convention."""
        return {"mode": self.mode, "sigmoid": self.sigmoid}


CONVENTIONS: dict[str, OutputConvention] = {
    c.name: c
    for c in (
        OutputConvention("yoloport", "raw", False, "yoloport's host decode (any backend)",
                         "three [B, na*(5+nc), H, W] head convolutions, stride 8/16/32, logits",
                         keypoints="2K raw keypoint channels per anchor after the objectness"),
        OutputConvention("rknn_model_zoo", "raw", True, "rknn_model_zoo examples/yolov5 (python/yolov5.py, cpp/postprocess.cc)",
                         "three [B, na*(5+nc), H, W] head outputs, stride 8/16/32, sigmoid applied",
                         anchors_file="anchors_yolov5.txt", names_file="labels.txt",
                         command="from rknn_model_zoo/examples/yolov5/python, with IMG_SIZE = ({w}, {h}) and CLASSES read "
                                 "from {names} set in yolov5.py:\n\n    python yolov5.py --model_path {artifact} "
                                 "--anchors {anchors} --target <platform> --img_show",
                         keypoint_variant="rknn_face"),
        OutputConvention("ultralytics", "decoded", False, "Ultralytics-style ONNX consumers (ONNX Runtime, OpenVINO, OpenCV DNN)",
                         "one [B, N, 5+nc] output: x, y, w, h in pixels, objectness, class probabilities",
                         keypoints="[B, N, 5+2K+nc]: the 2K keypoint pixels after the objectness, as yolov5-face's ONNX export"),
        OutputConvention("mlu", "raw", False, "Cambricon yolov5_detection_output plugin (decode + NMS on the MLU)",
                         "three [B, na*(5+nc), H, W] head convolutions (logits) fed to yolov5_detection_output",
                         keypoints="2K raw keypoint channels per anchor (the detection-output rows carry them after the box)"),
        OutputConvention("split", "split", False, "yoloport's host decode (int8-friendly decoded head)",
                         "xy [B, N, 2], wh [B, N, 2], conf [B, N, 1+nc] in pixels and probabilities",
                         keypoints="a fourth output kpts [B, N, 2K] in pixels, with its own int8 scale"),
        OutputConvention("rknn_face", "raw", False, "RKNN ports of yolov5-face (sigmoid, decode and NMS on the CPU)",
                         "three [B, na*(5+2K+nc), H, W] head convolutions, stride 8/16/32, logits (landmarks raw)",
                         anchors_file="anchors_yolov5.txt", names_file="labels.txt",
                         keypoints="2K raw keypoint channels per anchor after the objectness"),
    )
}
DEFAULT_CONVENTION = "yoloport"

# lint target -> the convention its standard clients expect (export --target's default)
TARGET_CONVENTIONS: dict[str, str] = {
    "rknn": "rknn_model_zoo",
    "onnxruntime": "ultralytics",
    "openvino": "ultralytics",
    "mlu": "mlu",
}


def get_convention(name: str) -> OutputConvention:
    """The convention called ``name`` (``-`` and ``_`` alike), or a YoloportError listing them."""
    key = str(name).strip().lower().replace("-", "_")
    if key not in CONVENTIONS:
        raise YoloportError(f"unknown output convention {name!r}; choose one of: {', '.join(CONVENTIONS)}")
    return CONVENTIONS[key]


def target_convention(target: str | None) -> OutputConvention | None:
    """The convention a lint target's clients expect (None for no target)."""
    return CONVENTIONS[TARGET_CONVENTIONS[target]] if target in TARGET_CONVENTIONS else None


def head_default_convention(target: str | None, nkpt: int = 0) -> str | None:
    """The convention name a lint target's clients expect from a head with ``nkpt`` keypoints."""
    return default_for_head(TARGET_CONVENTIONS.get(target), nkpt) if target in TARGET_CONVENTIONS else None


def matching_convention(mode: str, sigmoid: bool, preferred: str | None = None) -> str | None:
    """The name of the convention produced by ``mode``/``sigmoid``: ``preferred`` when it matches,
    else the first that does (None: no convention has that layout)."""
    if preferred and preferred in CONVENTIONS:
        c = CONVENTIONS[preferred]
        if (c.mode, c.sigmoid) == (mode, bool(sigmoid) and mode == "raw"):
            return c.name
    for c in CONVENTIONS.values():
        if (c.mode, c.sigmoid) == (mode, bool(sigmoid) and mode == "raw"):
            return c.name
    return None


def default_for_head(name: str | None, nkpt: int = 0) -> str | None:
    """A target's default convention ``name`` for a head with ``nkpt`` keypoints: its
    ``keypoint_variant`` when the head has keypoints and the convention names one, else ``name``."""
    if not name or not nkpt:
        return name
    return get_convention(name).keypoint_variant or get_convention(name).name


def resolve_export_choice(convention: str | None = None, mode: str | None = None, sigmoid: bool | None = None,
                          default: str | None = None, nkpt: int = 0) -> tuple[str, bool, str | None]:
    """``(mode, sigmoid, convention name)`` of an export.

    ``convention`` (the user's choice) or else ``default`` (the target's; for a head with ``nkpt``
    keypoints its keypoint variant, :func:`default_for_head`) gives the layout; an explicit
    ``mode``/``sigmoid`` overrides it. A ``convention`` contradicted by ``mode``/``sigmoid`` is an error;
    a ``default`` overridden by them is not (the user chose another layout). The returned name is the
    convention the final layout matches (None: none of them).
    """
    default = default_for_head(default, nkpt)
    base = get_convention(convention) if convention else (get_convention(default) if default else None)
    if convention and mode is not None and mode != base.mode:
        raise YoloportError(f"--convention {base.name} is --mode {base.mode}, not --mode {mode}")
    if convention and sigmoid is not None and base.mode == "raw" and bool(sigmoid) != base.sigmoid:
        raise YoloportError(f"--convention {base.name} has the sigmoid {'in' if base.sigmoid else 'out of'} the graph; "
                            f"drop --sigmoid or choose another convention")
    if mode is None:
        mode = base.mode if base else "raw"
    if sigmoid and mode != "raw":
        raise YoloportError(f"--sigmoid applies to --mode raw only ({mode} always applies the sigmoid in the graph)"
                            + (f"; the {base.name} convention is --mode {base.mode}" if base else ""))
    if sigmoid is None:
        sigmoid = base.sigmoid if base is not None and base.mode == mode else False
    sigmoid = bool(sigmoid) and mode == "raw"
    return mode, sigmoid, matching_convention(mode, sigmoid, base.name if base else None)


def anchors_file_text(anchors_px) -> str:
    """rknn_model_zoo's ``anchors_yolov5.txt``: every anchor value in pixels, one per line, in
    ``[level][anchor][w, h]`` order (the demo reshapes them to ``[3, -1, 2]``)."""
    values = [float(v) for level in anchors_px for pair in level for v in pair]
    return "".join(f"{v:g}\n" for v in values)


def names_file_text(names) -> str:
    """Class names, one per line, in class-index order."""
    return "".join(f"{n}\n" for n in names)


def client_readme(conv: OutputConvention, artifact_name: str, input_hw, preprocess: dict, runtime_input: str) -> str:
    """A short README for the client of ``conv``: the outputs, the input and the command to run."""
    h, w = int(input_hw[0]), int(input_hw[1])
    lines = [
        f"# {artifact_name}: outputs for {conv.client}",
        "",
        f"- outputs ({conv.name} convention): {conv.definition}",
        f"- input: {w}x{h} (W x H), letterboxed; {runtime_input}",
        f"- normalisation: {preprocess.get('color', 'RGB')}, scale {preprocess.get('scale', 1 / 255):.8g}, "
        f"mean {preprocess.get('mean')}, std {preprocess.get('std')}",
    ]
    if conv.anchors_file:
        lines.append(f"- anchors: `{conv.anchors_file}` (pixels, one value per line, [level][anchor][w, h])")
    if conv.names_file:
        lines.append(f"- classes: `{conv.names_file}` (one name per line, class-index order)")
    if conv.command:
        lines += ["", "Run the client " + conv.command.format(artifact=artifact_name, anchors=conv.anchors_file,
                                                              names=conv.names_file, w=w, h=h)]
    return "\n".join(lines) + "\n"


def write_client_files(conv: OutputConvention, out_dir, artifact_name: str, head, input_hw, preprocess: dict,
                       runtime_input: str) -> dict:
    """Write what ``conv``'s client needs next to the artifact (anchors file, names file, README);
    returns ``{role: file name}``. Files are replaced atomically; nothing else in ``out_dir`` is touched."""
    from pathlib import Path

    from ..io.checkpoint import atomic_path

    out = Path(out_dir)
    files = {}
    if conv.anchors_file:
        files["anchors"] = (conv.anchors_file, anchors_file_text(head.anchors_px))
    if conv.names_file:
        files["names"] = (conv.names_file, names_file_text(head.names))
    readme = f"{artifact_name}.README.md"
    files["readme"] = (readme, client_readme(conv, artifact_name, input_hw, preprocess, runtime_input))
    for name, text in files.values():
        with atomic_path(out / name) as tmp:
            tmp.write_text(text)
    return {role: name for role, (name, _) in files.items()}
