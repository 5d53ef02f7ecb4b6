"""The validator end to end: synthetic rectangles found by a colour-threshold 'model', COCO JSON,
and COCO128 with the real weights against Ultralytics v7.0's numbers (reference.json)."""
import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import fixture_path
from yoloport.data.dataset import ValDataset, load_data_yaml
from yoloport.engine.val import COCO80_TO_91, format_val_table, torch_infer, validate
from yoloport.errors import YoloportError

COLORS_BGR = [(0, 0, 255), (0, 255, 0)]  # class 0 red, class 1 green
SIZES_WH = [(640, 480), (320, 480), (500, 313), (256, 256), (400, 200), (300, 500), (640, 360)]


def make_rect_dataset(root: Path, shift: float = 0.0):
    """Black images with one red and/or green rectangle each, their YOLO labels, a data YAML and
    a COCO JSON. Returns (yaml path, coco json path)."""
    rng = np.random.default_rng(0)
    img_dir, lb_dir = root / "images" / "val", root / "labels" / "val"
    img_dir.mkdir(parents=True)
    lb_dir.mkdir(parents=True)
    images, anns = [], []
    for i, (w, h) in enumerate(SIZES_WH):
        im = np.zeros((h, w, 3), np.uint8)
        lines = []
        for c in ([0, 1] if i % 3 else [i % 2]) if i != 3 else []:  # image 3: background
            bw, bh = int(rng.integers(w // 6, w // 3)), int(rng.integers(h // 6, h // 3))
            x1 = int(rng.integers(0, w // 2 - bw)) + (w // 2 if c else 0)
            y1 = int(rng.integers(0, h - bh))
            im[y1:y1 + bh, x1:x1 + bw] = COLORS_BGR[c]
            lines.append(f"{c} {(x1 + bw / 2) / w:.6f} {(y1 + bh / 2) / h:.6f} {bw / w:.6f} {bh / h:.6f}")
            anns.append({"id": len(anns) + 1, "image_id": 100 + i, "category_id": c + 1, "bbox": [x1, y1, bw, bh],
                         "area": bw * bh, "iscrowd": 0})
        cv2.imwrite(str(img_dir / f"img{i}.png"), im)
        if i != 3:
            (lb_dir / f"img{i}.txt").write_text("\n".join(lines) + "\n")
        images.append({"id": 100 + i, "file_name": f"img{i}.png", "width": w, "height": h})
    yaml_path = root / "rects.yaml"
    yaml_path.write_text("path: .\nval: images/val\nnames: [red, green]\n")
    coco = root / "instances.json"
    coco.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": 1, "name": "red"}, {"id": 2, "name": "green"}]}))
    return yaml_path, coco


def colour_infer(shift_px: float = 0.0):
    """A stand-in model: one box per colour present, found by thresholding the RGB input."""

    def infer(images: np.ndarray) -> np.ndarray:
        out = np.zeros((len(images), 2, 7), np.float32)
        for b, im in enumerate(images):
            r, g, bl = im
            for c, mask in enumerate([(r > 0.5) & (g < 0.3), (g > 0.5) & (r < 0.3)]):
                ys, xs = np.nonzero(mask)
                if not len(xs):
                    continue
                x1, x2, y1, y2 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
                out[b, c, :4] = ((x1 + x2) / 2 + shift_px, (y1 + y2) / 2, x2 - x1, y2 - y1)
                out[b, c, 4] = 0.9
                out[b, c, 5 + c] = 1.0
        return out

    return infer


def test_validate_perfect(tmp_path):
    yaml_path, coco = make_rect_dataset(tmp_path)
    res = validate(colour_infer(), yaml_path, img_size=320, batch_size=3, coco_json=coco, class_map=[1, 2],
                   save_json=tmp_path / "out" / "pred.json", progress=False)
    assert res["n_images"] == len(SIZES_WH) and res["n_background"] == 1
    assert res["n_labels"] == 10
    assert res["mAP50"] == pytest.approx(0.995) and res["mAP50_95"] > 0.9
    assert res["precision"] == pytest.approx(1) and res["recall"] == pytest.approx(1)
    assert [r["name"] for r in res["per_class"]] == ["red", "green"]
    assert sum(r["instances"] for r in res["per_class"]) == 10
    assert [r["images"] for r in res["per_class"]] == [6, 4]  # images containing each colour
    assert set(res["speed_ms"]) == {"preprocess", "inference", "nms"}
    assert res["coco"]["mAP50"] == pytest.approx(1.0) and res["coco"]["mAP50_95"] > 0.9
    assert res["coco"]["n_images"] == len(SIZES_WH)
    preds = json.loads((tmp_path / "out" / "pred.json").read_text())
    assert len(preds) == 10 and {p["category_id"] for p in preds} == {1, 2}
    assert {p["image_id"] for p in preds} <= {f"img{i}" for i in range(len(SIZES_WH))}
    json.dumps(res)  # machine-readable as is
    table = format_val_table(res)
    assert "Class" in table and "mAP50-95" in table and "all" in table and "green" in table
    assert "1 background images" in table


@pytest.mark.parametrize("mode", [dict(rect=False), dict(fixed_shape_hw=(256, 416))])
def test_validate_square_and_fixed(tmp_path, mode):
    yaml_path, _ = make_rect_dataset(tmp_path)
    res = validate(colour_infer(), yaml_path, img_size=320, batch_size=4, progress=False, **mode)
    assert res["mAP50"] == pytest.approx(0.995) and res["mAP50_95"] > 0.85


def test_validate_shifted_boxes_lose_map(tmp_path):
    yaml_path, _ = make_rect_dataset(tmp_path)
    res = validate(colour_infer(shift_px=12), yaml_path, img_size=320, progress=False)
    assert res["mAP50_95"] < 0.9


def test_validate_class_count_mismatch(tmp_path):
    yaml_path, _ = make_rect_dataset(tmp_path)
    with pytest.raises(YoloportError, match="predicts 3 classes but the dataset has 2"):
        validate(lambda x: np.zeros((len(x), 5, 8), np.float32), yaml_path, img_size=320, progress=False)


def test_validate_no_predictions(tmp_path):
    yaml_path, _ = make_rect_dataset(tmp_path)
    res = validate(lambda x: np.zeros((len(x), 5, 7), np.float32), yaml_path, img_size=320, progress=False)
    assert res["mAP50"] == 0 and res["n_labels"] == 10
    assert "all" in format_val_table(res)


def test_coco80_to_91_table():
    assert len(COCO80_TO_91) == 80 and len(set(COCO80_TO_91)) == 80
    assert COCO80_TO_91[0] == 1 and COCO80_TO_91[11] == 13 and COCO80_TO_91[-1] == 90


# ------------------------------------------------------------------------------------- COCO128
@pytest.mark.fixtures
def test_coco128_counts():
    cfg = load_data_yaml(fixture_path("coco128/coco128.yaml"))
    ds = ValDataset(cfg.split("val"), cfg.nc)
    assert ds.report.n_images == 128 and ds.report.n_labels == 929
    assert ds.report.n_missing_labels == 2 and ds.report.n_bad_lines == 0


@pytest.mark.slow
@pytest.mark.fixtures
@pytest.mark.parametrize("weights", ["yolov5s-v5.0", "yolov5n-v6.1"])
def test_coco128_matches_ultralytics(weights, reference, request):
    """~40 s each on 2 CPU threads: rect batches of 8 at 640, conf 0.001, iou 0.6 (v7.0 val.py)."""
    model = request.getfixturevalue("v5s_model" if weights.startswith("yolov5s") else "v5n_model")
    ref = reference["val_coco128"][weights]
    t = time.perf_counter()
    res = validate(torch_infer(model), fixture_path("coco128/coco128.yaml"), img_size=640, batch_size=8,
                   progress=False)
    print(f"{weights}: {time.perf_counter() - t:.1f} s\n{format_val_table(res)}")
    assert res["n_images"] == ref["n_images"] == 128
    assert res["n_labels"] == ref["n_labels"] == 929
    for k in ("precision", "recall", "mAP50", "mAP50_95"):
        assert res[k] == pytest.approx(ref[k], abs=0.003), k


def test_coco_eval_pycocotools_fallback(tmp_path, monkeypatch):
    pytest.importorskip("pycocotools")
    import yoloport.engine.val as val_mod

    def pycoco():
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, COCOeval, "pycocotools"

    monkeypatch.setattr(val_mod, "_coco_api", pycoco)
    yaml_path, coco = make_rect_dataset(tmp_path)
    res = validate(colour_infer(), yaml_path, img_size=320, coco_json=coco, class_map=[1, 2], progress=False)
    assert res["coco"]["backend"] == "pycocotools" and res["coco"]["mAP50"] == pytest.approx(1.0)


def test_coco_json_errors(tmp_path):
    yaml_path, coco = make_rect_dataset(tmp_path)
    with pytest.raises(YoloportError, match="not found"):
        validate(colour_infer(), yaml_path, img_size=320, coco_json=tmp_path / "none.json", progress=False)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"images": [{"id": 1, "file_name": "x.jpg", "width": 9, "height": 9}],
                                 "annotations": [], "categories": [{"id": 1, "name": "a"}]}))
    with pytest.raises(YoloportError, match="none of the"):
        validate(colour_infer(), yaml_path, img_size=320, coco_json=other, progress=False)


def test_val_command_and_api_agree_on_torch_and_onnxruntime(tmp_path, capsys):
    """``yoloport val`` and ``yoloport.val`` go through one runner-to-validate path: the embedded
    model on a synthetic set gives the same mAP from both, on torch and on an ONNX Runtime fp32
    artifact at a fixed rectangular 160x128 (the artifact's input shape)."""
    import yoloport
    from yoloport.cli import main
    from yoloport.data.synth import make_synthetic_dataset

    data = make_synthetic_dataset(tmp_path / "synth", {"val": 6}, (200, 150), seed=5, split="val", workers=1)
    model = yoloport.load("default")
    api_torch = yoloport.val(model, str(data), img_size=(160, 128), batch_size=2, progress=False)
    assert api_torch["n_images"] == 6 and api_torch["mAP50_95"] > 0.2  # the shapes model sees its own shapes
    rc = main(["val", "--data", str(data), "--img-size", "160", "128", "--batch-size", "2",
               "--project", str(tmp_path / "runs"), "--name", "torch"])
    assert rc == 0
    cli_torch = json.loads((tmp_path / "runs" / "torch" / "val.json").read_text())
    assert cli_torch["mAP50_95"] == pytest.approx(api_torch["mAP50_95"], abs=1e-9)
    pytest.importorskip("onnxruntime")
    rc = main(["quantize", "--model-key", "default", "--backend", "onnxruntime", "--precision", "fp32", "--img-size", "160", "128",
               "--out", str(tmp_path / "ort")])
    assert rc == 0
    art = tmp_path / "ort" / "model.onnxruntime.fp32.onnx"
    rc = main(["val", "--data", str(data), "--backend", "onnxruntime", "--artifact", str(art),
               "--project", str(tmp_path / "runs"), "--name", "ort"])
    assert rc == 0
    cli_ort = json.loads((tmp_path / "runs" / "ort" / "val.json").read_text())
    api_ort = yoloport.val(model, str(data), backend="onnxruntime", artifact=art, progress=False)
    assert cli_ort["mAP50_95"] == pytest.approx(api_ort["mAP50_95"], abs=1e-9)
    assert cli_ort["backend"] == "onnxruntime" and cli_ort["n_images"] == 6
    # fp32 ONNX Runtime at the same fixed shape: the torch numbers within float noise
    assert api_ort["mAP50_95"] == pytest.approx(api_torch["mAP50_95"], abs=0.01)


@pytest.mark.parametrize("shift", [0.0, 7.0])
def test_image_stats_change_no_number_and_give_the_validators_map(tmp_path, shift):
    """validate(image_stats=True) returns one record per image and leaves every number as it was; the
    bootstrap's point estimate (ap_per_class on the concatenated stats) is the reported mAP."""
    from yoloport.analysis.bootstrap import map_of

    yaml_path, _ = make_rect_dataset(tmp_path)
    plain = validate(colour_infer(shift), yaml_path, img_size=320, batch_size=3, progress=False)
    res = validate(colour_infer(shift), yaml_path, img_size=320, batch_size=3, progress=False, image_stats=True)
    stats = res.pop("image_stats")
    assert "image_stats" not in plain
    for d in (plain, res):
        d.pop("speed_ms")
    assert res == plain
    assert len(stats) == len(SIZES_WH) and sum(len(s.label_cls) for s in stats) == plain["n_labels"]
    assert map_of(stats) == (plain["mAP50"], plain["mAP50_95"])
