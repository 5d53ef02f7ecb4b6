"""The port report read at a glance (issue 15 item 4): drop chart with intervals and the gate line, the
classes that lost most, the disagreement gallery, the image sets and the stage times."""
import numpy as np
import pytest

from yoloport.analysis.gallery import disagreement_scores, write_gallery
from yoloport.analysis.report import class_loss_rows, gate_lines, protocol_lines, to_html, to_markdown
from yoloport.engine.image_stats import ImageStats


def stats(path, boxes, cls, conf):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    n = len(boxes)
    return ImageStats(str(path), np.asarray(conf, np.float32), np.asarray(cls, np.float32), np.zeros((n, 10), bool), boxes,
                      np.zeros(0, np.float32), np.zeros((0, 4), np.float32))


def test_disagreement_scores_count_unmatched_confident_boxes():
    a = stats("a.jpg", [[0, 0, 10, 10], [20, 20, 40, 40]], [0, 1], [0.9, 0.8])
    same = stats("a.jpg", [[0, 0, 10, 10], [20, 20, 40, 40]], [0, 1], [0.7, 0.6])
    missing = stats("a.jpg", [[0, 0, 10, 10]], [0, 1][:1], [0.9])
    renamed = stats("a.jpg", [[0, 0, 10, 10], [20, 20, 40, 40]], [0, 2], [0.9, 0.8])
    shifted = stats("a.jpg", [[0, 0, 10, 10], [30, 30, 50, 50]], [0, 1], [0.9, 0.8])
    faint = stats("a.jpg", [[0, 0, 10, 10], [20, 20, 40, 40], [60, 60, 70, 70]], [0, 1, 1], [0.9, 0.8, 0.1])
    assert list(disagreement_scores([a] * 5, [same, missing, renamed, shifted, faint])) == [0, 1, 2, 2, 0]


def test_gallery_writes_the_worst_images_side_by_side(tmp_path):
    import cv2

    paths = []
    for i in range(3):
        p = tmp_path / f"im{i}.jpg"
        cv2.imwrite(str(p), np.full((60, 80, 3), 40 * i, np.uint8))
        paths.append(p)
    ref = [stats(p, [[5, 5, 30, 30], [40, 10, 70, 50]], [0, 1], [0.9, 0.9]) for p in paths]
    q = [ref[0], stats(paths[1], [[5, 5, 30, 30]], [0], [0.9]), stats(paths[2], np.zeros((0, 4)), [], [])]
    rows = write_gallery(ref, q, tmp_path / "g", ["a", "b"], ("fp32", "int8"), top=4)
    assert [r["score"] for r in rows] == [2, 1] and rows[0]["image"] == str(paths[2])
    im = cv2.imread(rows[0]["file"])
    assert im is not None and im.shape[1] == 720 and im.shape[0] < im.shape[1]  # two halves side by side


@pytest.fixture
def report():
    per_class = lambda aps: [{"class": c, "name": n, "instances": 3, "mAP50_95": ap, "mAP50": ap, "images": 2,  # noqa: E731
                              "precision": 1.0, "recall": 1.0} for c, (n, ap) in enumerate(aps)]
    return {
        "model": {"name": "m", "parameters": 10}, "data": {"yaml": "d.yaml", "n_images": 40}, "img_hw": [64, 64],
        "max_drop": 1.0,
        "protocol": {"calibration": {"source": "c.yaml:train", "n_images": 32, "fingerprint": "abc", "pool_images": 64},
                     "selection": {"source": None, "n_images": 0, "fingerprint": None, "note": "no search"},
                     "reporting": {"source": "d.yaml:val", "n_images": 40, "fingerprint": "def"},
                     "overlap": {"policy": "split", "found": [{"sets": ["calibration", "reporting"], "shared": 8,
                                                               "same_file": 8, "same_content": 0}]}},
        "reference": {"name": "torch-fp32", "precision": "fp32", "drop": 0.0,
                      "val": {"mAP50_95": 0.5, "mAP50": 0.7, "per_class": per_class([("cat", 0.6), ("dog", 0.5), ("cow", 0.4)])}},
        "targets": [{"name": "onnxruntime-int8", "backend": "onnxruntime", "precision": "int8", "drop": 0.8,
                     "val": {"mAP50_95": 0.492, "mAP50": 0.69, "per_class": per_class([("cat", 0.59), ("dog", 0.44), ("cow", 0.41)])},
                     "drop_ci": {"drop": 0.8, "low": 0.2, "high": 1.4, "within_noise": False, "n_boot": 1000,
                                 "confidence": 0.95, "n_images": 40},
                     "gate": {"passed": True, "status": "passed, within noise of the gate", "max_drop": 1.0},
                     "gallery": [{"image": "/x/im7.jpg", "score": 3, "file": "gallery/onnxruntime-int8_01_im7.jpg"}]}],
        "stages": [{"name": "calibration set", "seconds": 0.4, "ok": True}],
    }


def test_report_has_the_sections_read_at_a_glance(report):
    assert [r["class"] for r in class_loss_rows(report, report["targets"][0])] == ["dog", "cat", "cow"]
    assert protocol_lines(report)[0].startswith("calibration set: c.yaml:train, 32 images (fingerprint abc; drawn from 64")
    assert "selection set: none (no search)" in protocol_lines(report)
    assert gate_lines(report) == ["gate onnxruntime-int8: mAP@0.5:0.95 drop 0.80 points, 95% interval [0.20, 1.40] "
                                  "(paired bootstrap over 40 reporting images, 1000 resamples); --max-drop 1.0: "
                                  "passed, within noise of the gate"]
    md = to_markdown(report)
    for section in ("## Image sets", "## Drop per target", "## Classes that lost most: onnxruntime-int8",
                    "## Where fp32 and onnxruntime-int8 disagree most", "## Stages", "[0.20, 1.40]"):
        assert section in md, section
    html = to_html(report)
    assert "<img src='gallery/onnxruntime-int8_01_im7.jpg'" in html and "alt='drop'" in html
    assert "<h2>Classes that lost most: onnxruntime-int8</h2>" in html and "<td>dog</td>" in html
    assert "within noise of the gate" in html and "reporting set: d.yaml:val, 40 images" in html
