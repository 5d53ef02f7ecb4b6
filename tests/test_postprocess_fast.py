"""The fast host post-processing (issue 14 item 1) against the pre-issue-14 path kept in
``tests/postprocess_reference.py``: objectness filtered before decoding, blocked greedy NMS, same
detections bit for bit, on synthetic heads built to stress the edges and on yolov5s's real outputs."""
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

import postprocess_reference as ref
from yoloport.ops.decode import decode_raw, decode_raw_above, prefilter_logit, sigmoid
from yoloport.ops.nms import NMS_BLOCK, nms, nms_candidates, non_max_suppression
from yoloport.ops.postprocess import HeadSpec, postprocess

ANCHORS = np.array([[[10, 13], [16, 30], [33, 23]], [[30, 61], [62, 45], [59, 119]], [[116, 90], [156, 198], [373, 326]]],
                   np.float32)
STRIDES = [8, 16, 32]
SETTINGS = [  # conf, iou, multi_label, max_det, classes, agnostic
    (0.25, 0.45, False, 300, None, False),  # detect
    (0.001, 0.6, True, 300, None, False),  # val
    (0.001, 0.6, False, 300, None, False),
    (0.1, 0.5, True, 7, None, False),  # max_det cuts inside a block
    (0.05, 0.45, False, 300, [0, 2], False),
    (0.05, 0.45, False, 300, None, True),
    (0.0, 0.45, False, 50, None, False),
]


def synthetic_head(batch=2, hw=(96, 128), nc=3, seed=0):
    """Raw logits ``[B, 3*(5+nc), H/s, W/s]`` for the three strides, returned smallest grid first (a runtime
    may give any order). Objectness logits cluster around the thresholds' logits so the pre-filter's
    edge is crowded; boxes cluster so NMS has work."""
    rng = np.random.default_rng(seed)
    no = 5 + nc
    outs = []
    for s in STRIDES:
        h, w = hw[0] // s, hw[1] // s
        x = rng.normal(0, 1.5, (batch, 3, no, h, w)).astype(np.float32)
        edges = np.float32([prefilter_logit(t) for t in (0.0011, 0.05, 0.1, 0.25)] + [np.log(0.25 / 0.75)])
        near = rng.random((batch, 3, h, w)) < 0.3
        x[:, :, 4][near] = rng.choice(edges, near.sum()) + rng.normal(0, 1e-3, near.sum()).astype(np.float32)
        x[:, :, 4][rng.random((batch, 3, h, w)) < 0.02] = np.float32(np.log(0.25 / 0.75))  # exactly logit(0.25)
        outs.append(x.reshape(batch, 3 * no, h, w))
    return outs[::-1]


def _assert_same_lists(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert np.array_equal(x, y), "detections differ from the pre-issue-14 path"


@pytest.mark.parametrize("sigmoid_applied", [False, True])
@pytest.mark.parametrize("thres", [0.0, 0.001, 0.25, 0.5, 0.9999, 1.0])
def test_decode_above_equals_filtered_full_decode(thres, sigmoid_applied):
    outs = synthetic_head()
    if sigmoid_applied:
        outs = [sigmoid(o) for o in outs]
    full = ref.decode_raw(outs, ANCHORS, STRIDES, sigmoid_applied)
    got = decode_raw_above(outs, ANCHORS, STRIDES, thres, sigmoid_applied)
    want = [p[p[:, 4] > thres] for p in full]
    _assert_same_lists(got, want)
    assert np.array_equal(decode_raw(outs, ANCHORS, STRIDES, sigmoid_applied), full)


def test_prefilter_never_drops_a_candidate_the_exact_test_keeps():
    for thres in (1e-6, 0.001, 0.25, 0.5, 0.9, 0.9999):
        cut = np.float32(prefilter_logit(thres))
        around = np.nextafter(cut, np.float32(np.inf)) + np.float32(np.linspace(-0.01, 0.01, 20001, dtype=np.float32))
        dropped = around[around <= cut]
        assert not (sigmoid(dropped) > thres).any()
        assert (sigmoid(around[around > cut]) <= thres).any() or thres >= 0.9  # the cut sits below the edge


@pytest.mark.parametrize("conf, iou, multi, max_det, classes, agnostic", SETTINGS)
def test_postprocess_raw_equals_reference(conf, iou, multi, max_det, classes, agnostic):
    outs = synthetic_head(nc=3, seed=1)
    head = HeadSpec(mode="raw", nc=3, anchors_px=ANCHORS.tolist(), strides=STRIDES)
    want = ref.non_max_suppression(ref.decode_raw(outs, ANCHORS, STRIDES), conf, iou, classes, agnostic, multi, max_det)
    got = postprocess(outs, head, conf, iou, classes, agnostic, multi, max_det)
    _assert_same_lists(got, want)
    pred = ref.decode_raw(outs, ANCHORS, STRIDES)
    _assert_same_lists(non_max_suppression(pred, conf, iou, classes, agnostic, multi, max_det), want)
    assert sum(len(d) for d in want) > 0


def _clustered_boxes(n, n_clusters, seed):
    rng = np.random.default_rng(seed)
    centres = rng.uniform(50, 550, (n_clusters, 2))
    c = centres[rng.integers(0, n_clusters, n)] + rng.normal(0, 6, (n, 2))
    wh = rng.uniform(20, 90, (n, 2))
    return np.concatenate([c - wh / 2, c + wh / 2], 1).astype(np.float32)


@pytest.mark.parametrize("n, n_cls, max_keep", [(1, 1, None), (2, 1, None), (NMS_BLOCK, 1, None), (NMS_BLOCK + 1, 1, None),
                                                (3 * NMS_BLOCK + 17, 1, None), (1500, 1, 40), (1500, 7, None),
                                                (1500, 80, 300), (900, 3, 1)])
def test_blocked_nms_equals_one_box_per_step(n, n_cls, max_keep):
    rng = np.random.default_rng(n + n_cls)
    boxes = _clustered_boxes(n, max(1, n // 40), seed=n)
    scores = np.round(rng.random(n), 2).astype(np.float32)  # many ties: input order decides
    classes = rng.integers(0, n_cls, n).astype(np.float32)
    for thr in (0.3, 0.45, 0.7):
        for cls in (None, classes):
            want = ref.nms(boxes, scores, thr, cls, max_keep)
            got = nms(boxes, scores, thr, cls, max_keep)
            assert np.array_equal(got, want)
    assert len(ref.nms(boxes, scores, 0.45)) < n or n < 3  # suppression happened


def test_empty_and_degenerate_inputs():
    assert nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5).shape == (0,)
    zero_area = np.zeros((3, 4), np.float32)  # IoU 0/0 is NaN: nothing suppressed, as before
    assert nms(zero_area, np.array([0.3, 0.2, 0.1], np.float32), 0.5).tolist() == ref.nms(zero_area, np.array([0.3, 0.2, 0.1], np.float32), 0.5).tolist()
    empty = nms_candidates([np.zeros((0, 8), np.float32)], 0.25, 0.45)
    assert empty[0].shape == (0, 6) and empty[0].dtype == np.float32
    with pytest.raises(ValueError):
        nms_candidates([np.zeros((0, 8), np.float32)], 1.5, 0.45)


def test_raw_postprocess_never_builds_the_full_decoded_array():
    """At detect settings the raw path allocates far less than ``[B, N, 5+nc]`` float32 (the old decode's
    output alone): objectness is read in place and only survivors are gathered."""
    outs = synthetic_head(batch=1, hw=(640, 640), nc=80, seed=2)
    for o in outs:
        o[:, 4::85] -= 6  # mostly background, as on a real image
    head = HeadSpec(mode="raw", nc=80, anchors_px=ANCHORS.tolist(), strides=STRIDES)
    full_bytes = 25200 * 85 * 4
    tracemalloc.start()
    try:
        postprocess(outs, head, 0.25, 0.45)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < full_bytes / 4, f"peak {peak} bytes, the full decode is {full_bytes}"


def test_ops_import_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import yoloport.ops, yoloport.ops.postprocess, yoloport.ops.nms, yoloport.ops.decode, yoloport.ops.boxes\n"
            "import yoloport.data.letterbox\n"
            "print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


# ----------------------------------------------------------------------------- real outputs


@pytest.fixture(scope="module")
def real_heads(v5s_model):
    """yolov5s v5.0 raw outputs on bus.jpg and zidane.jpg (640x640, one batch of two)."""
    import cv2
    import torch

    from conftest import fixture_path
    from yoloport.backends.torch_backend import TorchRunner
    from yoloport.data.letterbox import preprocess

    ims = [cv2.imread(str(fixture_path(f"images/{n}"))) for n in ("bus.jpg", "zidane.jpg")]
    x = np.stack([preprocess(im, (640, 640), auto=False)[0] for im in ims])
    prev = torch.get_num_threads()
    try:
        runner = TorchRunner(v5s_model)
        return runner(x), runner.head
    finally:
        torch.set_num_threads(prev)


@pytest.mark.fixtures
@pytest.mark.parametrize("conf, iou, multi, max_det, classes, agnostic", SETTINGS)
def test_real_yolov5s_detections_identical(real_heads, conf, iou, multi, max_det, classes, agnostic):
    outs, head = real_heads
    anchors = np.asarray(head.anchors_px, np.float32)
    want = ref.non_max_suppression(ref.decode_raw(outs, anchors, head.strides), conf, iou, classes, agnostic, multi, max_det)
    got = postprocess(outs, head, conf, iou, classes, agnostic, multi, max_det)
    _assert_same_lists(got, want)
    if (conf, iou, multi) == (0.001, 0.6, True):
        assert [len(d) for d in want] == [300, 300]
    if (conf, iou, multi) == (0.25, 0.45, False):
        assert all(len(d) >= 3 for d in want)


@pytest.mark.fixtures
def test_real_yolov5s_torch_twin_identical(real_heads):
    import torch

    from yoloport.nn.heads import decode_raw_torch
    from yoloport.ops.nms_torch import torch_non_max_suppression

    outs, head = real_heads
    pred = decode_raw_torch([torch.from_numpy(o) for o in outs], head.anchors_px, head.strides)
    for conf, iou, multi in ((0.25, 0.45, False), (0.001, 0.6, True)):
        a = postprocess(outs, head, conf, iou, multi_label=multi)
        b = torch_non_max_suppression(pred, conf, iou, max_det=300, multi_label=multi)
        for x, y in zip(a, b):
            assert len(x) == len(y) > 0
            assert np.array_equal(x[:, 5], y[:, 5].numpy())
            np.testing.assert_allclose(x[:, :5], y[:, :5].numpy(), rtol=1e-5, atol=1e-3)
