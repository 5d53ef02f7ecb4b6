"""Detection on images with any Runner: preprocess -> runner -> host post-processing."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
import numpy as np

from ..data.letterbox import preprocess
from ..ops.postprocess import postprocess, to_original


@dataclass
class Detections:
    """Detections on one image, in original-image pixels.

    ``xyxy: [N, 4]`` float32, ``conf: [N]`` float32, ``cls: [N]`` int64; ``names`` maps class ids to
    names; ``orig_hw`` and ``input_hw`` are (h, w). A keypoint head (yolov5-face) adds
    ``landmarks: [N, K, 2]`` float32 (x, y), else None.
    """

    path: str
    xyxy: np.ndarray
    conf: np.ndarray
    cls: np.ndarray
    names: list
    orig_hw: tuple[int, int]
    input_hw: tuple[int, int]
    frame: int | None = None
    times_ms: dict = field(default_factory=dict)
    landmarks: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.conf)

    @classmethod
    def from_array(cls, det: np.ndarray, nkpt: int = 0, **kw) -> "Detections":
        """From ``[N, 6]`` rows (x1, y1, x2, y2, conf, cls), or ``[N, 6 + 2*nkpt]`` with keypoints."""
        landmarks = det[:, 6 : 6 + 2 * nkpt].astype(np.float32).reshape(len(det), nkpt, 2) if nkpt else None
        return cls(xyxy=det[:, :4].astype(np.float32), conf=det[:, 4].astype(np.float32), cls=det[:, 5].astype(np.int64),
                   landmarks=landmarks, **kw)

    def to_dicts(self) -> list[dict]:
        rows = [
            {"xyxy": [float(v) for v in b], "conf": float(c), "cls": int(k), "name": self.name_of(int(k))}
            for b, c, k in zip(self.xyxy, self.conf, self.cls)
        ]
        if self.landmarks is not None:
            for row, pts in zip(rows, self.landmarks):
                row["landmarks"] = [[float(x), float(y)] for x, y in pts]
        return rows

    def name_of(self, k: int) -> str:
        return str(self.names[k]) if 0 <= k < len(self.names) else str(k)

    def to_dict(self) -> dict:
        return {
            "image": self.path,
            "frame": self.frame,
            "orig_hw": list(self.orig_hw),
            "input_hw": list(self.input_hw),
            "detections": self.to_dicts(),
            "times_ms": self.times_ms,
        }


def detect_image(
    runner,
    image_bgr: np.ndarray,
    img_size_hw: tuple[int, int],
    conf: float = 0.25,
    iou: float = 0.45,
    classes=None,
    agnostic: bool = False,
    max_det: int = 1000,
    path: str = "",
    frame: int | None = None,
    prepare=None,
) -> Detections:
    """Run one BGR image through ``runner``. The letterbox pads minimally (as Ultralytics' PyTorch
    inference) when the runner takes any shape, and fully to ``runner.input_hw`` otherwise.

    ``prepare(image_bgr) -> (x [3, H, W], LetterboxMeta)`` replaces that preprocessing (e.g.
    :func:`yoloport.engine.face.face_input`, yolov5-face's protocol). A keypoint head's landmarks
    come back in ``Detections.landmarks`` in original-image pixels."""
    t0 = time.perf_counter()
    fixed = getattr(runner, "input_hw", None)
    size = tuple(fixed) if fixed else img_size_hw
    if prepare is not None:
        x, meta = prepare(image_bgr)
    else:
        x, meta = preprocess(image_bgr, size, stride=getattr(runner, "stride", 32), auto=fixed is None)
    t1 = time.perf_counter()
    outputs = runner(x[None])
    t2 = time.perf_counter()
    det = postprocess(outputs, runner.head, conf, iou, classes, agnostic, False, max_det)[0]
    det = to_original(det, meta.input_hw, meta.orig_hw, (meta.ratio, meta.pad))
    t3 = time.perf_counter()
    return Detections.from_array(
        det,
        nkpt=getattr(runner.head, "nkpt", 0),
        path=path,
        names=list(runner.head.names),
        orig_hw=meta.orig_hw,
        input_hw=meta.input_hw,
        frame=frame,
        times_ms={"pre": (t1 - t0) * 1e3, "inference": (t2 - t1) * 1e3, "post": (t3 - t2) * 1e3},
    )
