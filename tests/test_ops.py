"""Letterbox, boxes, NMS and decode against independent computations."""
import numpy as np
import pytest
import torch

from yoloport.data.letterbox import letterbox, parse_img_size, preprocess
from yoloport.errors import YoloportError
from yoloport.ops.boxes import box_iou, scale_boxes, xywh2xyxy, xyxy2xywh
from yoloport.ops.decode import decode_raw
from yoloport.ops.nms import nms, non_max_suppression


def test_letterbox_minimal_and_full_padding():
    im = np.zeros((1080, 810, 3), np.uint8)
    out, ratio, pad = letterbox(im, (640, 640), auto=True)
    assert out.shape == (640, 480, 3) and ratio[0] == pytest.approx(640 / 1080) and pad == (0.0, 0.0)
    out, _, pad = letterbox(im, (416, 736), auto=False)
    assert out.shape == (416, 736, 3)
    assert pad[0] == pytest.approx((736 - round(810 * 416 / 1080)) / 2)
    x, meta = preprocess(im, (640, 640))
    assert x.dtype == np.float32 and x.shape == (3, 640, 480) and meta.orig_hw == (1080, 810)


def test_parse_img_size_w_h_and_rounding():
    msgs = []
    assert parse_img_size([736, 416]) == (416, 736)
    assert parse_img_size([700, 400], warn=msgs.append) == (416, 704)
    assert "not a multiple" in msgs[0]
    with pytest.raises(YoloportError):
        parse_img_size([1, 2, 3])


def test_box_roundtrip_and_iou():
    rng = np.random.default_rng(0)
    b = np.sort(rng.uniform(0, 100, (20, 2, 2)), axis=1).transpose(0, 2, 1).reshape(20, 4)[:, [0, 2, 1, 3]]
    assert np.allclose(xywh2xyxy(xyxy2xywh(b)), b)
    iou = box_iou(b, b)
    assert np.allclose(np.diag(iou), 1, atol=1e-6) and (iou <= 1 + 1e-6).all()


def test_scale_boxes_inverts_letterbox():
    orig = (720, 1280)
    _, (r, _), pad = letterbox(np.zeros((*orig, 3), np.uint8), (640, 640), auto=False)
    box = np.array([[100.0, 200.0, 300.0, 400.0]])
    inp = box * r + np.array([pad[0], pad[1], pad[0], pad[1]])
    assert np.allclose(scale_boxes((640, 640), inp, orig, ((r, r), pad)), box, atol=1e-4)


def _brute_nms(boxes, scores, thr):
    order = list(np.argsort(-scores, kind="stable"))
    keep = []
    while order:
        i = order.pop(0)
        keep.append(i)
        order = [j for j in order if box_iou(boxes[i : i + 1], boxes[j : j + 1])[0, 0] <= thr]
    return np.array(keep)


def test_nms_equals_brute_force():
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 200, (300, 2))
    wh = rng.uniform(5, 60, (300, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    scores = rng.uniform(0, 1, 300).astype(np.float32)
    assert np.array_equal(nms(boxes, scores, 0.45), _brute_nms(boxes, scores, 0.45))


def test_nms_is_class_aware_and_capped():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    assert nms(boxes, scores, 0.5, classes=np.array([0, 1, 0])).tolist() == [0, 1]
    assert nms(boxes, scores, 0.5, classes=np.array([0, 1, 2]), max_keep=2).tolist() == [0, 1]


def test_non_max_suppression_semantics():
    # two boxes, second one overlapping; 2 classes; obj * cls is the confidence
    pred = np.zeros((1, 3, 7), np.float32)
    pred[0, 0] = [50, 50, 20, 20, 0.9, 0.9, 0.1]
    pred[0, 1] = [51, 50, 20, 20, 0.8, 0.8, 0.2]
    pred[0, 2] = [150, 50, 20, 20, 0.1, 0.9, 0.1]  # below conf after obj*cls
    out = non_max_suppression(pred, 0.25, 0.45)[0]
    assert out.shape == (1, 6) and out[0, 4] == pytest.approx(0.81) and out[0, 5] == 0
    multi = non_max_suppression(pred, 0.1, 0.45, multi_label=True)[0]
    assert sorted(multi[:, 5].tolist()) == [0.0, 1.0]  # the class-1 score of box 1 survives separately
    assert len(non_max_suppression(pred, 0.25, 0.45, classes=[1])[0]) == 0


def test_decode_raw_matches_torch_detect(tiny_model):
    x = torch.rand(1, 3, 160, 224)
    with torch.no_grad():
        dec, raw = tiny_model(x)
    outs = [r.permute(0, 1, 4, 2, 3).reshape(1, -1, r.shape[2], r.shape[3]).numpy() for r in raw]
    np_dec = decode_raw(outs[::-1], tiny_model.detect.anchors_px().numpy(), tiny_model.stride.tolist())
    assert np.abs(np_dec - dec.numpy()).max() < 1e-3


@pytest.mark.parametrize("orig_hw", [(1080, 810), (640, 640), (100, 300), (481, 999), (33, 1000)])
def test_preprocess_equals_letterbox_then_to_input(orig_hw):
    """The buffer-writing preprocessing gives the pixels of ``to_input(letterbox(...))`` bit for bit."""
    from yoloport.data.letterbox import to_input

    im = np.random.default_rng(sum(orig_hw)).integers(0, 256, (*orig_hw, 3), dtype=np.uint8)
    for size in [(640, 640), (416, 736), (320, 320)]:
        for auto in (True, False):
            for scaleup in (True, False):
                lb, (r, _), pad = letterbox(im, size, auto=auto, scaleup=scaleup)
                x, meta = preprocess(im, size, auto=auto, scaleup=scaleup)
                want = to_input(lb)
                assert x.shape == want.shape and np.array_equal(x, want)
                assert meta.ratio == r and meta.pad == pad and meta.input_hw == lb.shape[:2]


def test_preprocess_writes_into_a_reused_buffer():
    from yoloport.data.letterbox import preprocess_batch

    rng = np.random.default_rng(0)
    ims = [rng.integers(0, 256, hw + (3,), dtype=np.uint8) for hw in ((300, 200), (120, 400))]
    buf = np.full((2, 3, 128, 160), np.nan, np.float32)  # stale content must be overwritten everywhere
    out, metas = preprocess_batch(ims, (128, 160), out=buf)
    assert out is buf and not np.isnan(buf).any()
    for i, im in enumerate(ims):
        alone, meta = preprocess(im, (128, 160), auto=False)
        assert np.array_equal(buf[i], alone) and meta == metas[i]
    with pytest.raises(YoloportError, match="buffer"):
        preprocess(ims[0], (128, 160), auto=False, out=np.empty((3, 64, 64), np.float32))
    with pytest.raises(YoloportError, match="BGR"):
        preprocess(np.zeros((10, 10), np.uint8), (64, 64))
