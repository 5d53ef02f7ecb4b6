"""yolov5-face family: configs, the keypoint head, host decode and NMS carrying landmarks (no fixtures)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from yoloport.errors import YoloportError
from yoloport.nn.face_modules import ShuffleV2Block, StemBlock, channel_shuffle
from yoloport.nn.model import DetectionModel
from yoloport.ops.decode import decode_raw, decode_raw_above
from yoloport.ops.keypoints import decode_keypoints, scale_keypoints
from yoloport.ops.nms import nms_candidates
from yoloport.ops.postprocess import HeadSpec, postprocess, to_original

# Parameter counts of the published yolov5-face models (upstream README: 0.447M, 1.726M, 7.075M).
FACE_PARAMS = {"yolov5n-0.5-face": 447_456, "yolov5n-face": 1_725_744, "yolov5s-face": 7_074_640}


@pytest.mark.parametrize("cfg, params", sorted(FACE_PARAMS.items()))
def test_face_configs_build_with_published_sizes(cfg, params):
    m = DetectionModel(cfg)
    assert sum(p.numel() for p in m.parameters()) == params
    assert m.detect.nkpt == 5 and m.detect.no == 1 + 5 + 10
    assert m.stride.tolist() == [8.0, 16.0, 32.0]


def test_p6_face_config_has_four_levels():
    m = DetectionModel("yolov5n6-face")
    assert m.stride.tolist() == [8.0, 16.0, 32.0, 64.0]
    assert m.detect.nkpt == 5


def test_stem_block_is_stride_four_and_shuffle_keeps_shape():
    x = torch.randn(1, 3, 64, 96)
    assert StemBlock(3, 16, 3, 2)(x).shape == (1, 16, 16, 24)
    y = torch.randn(2, 32, 8, 8)
    assert ShuffleV2Block(32, 32, 1)(y).shape == y.shape
    assert ShuffleV2Block(32, 64, 2)(y).shape == (2, 64, 4, 4)
    c = torch.arange(4.0).view(1, 4, 1, 1)
    assert channel_shuffle(c, 2).flatten().tolist() == [0.0, 2.0, 1.0, 3.0]


def test_bad_nkpt_in_yaml_is_one_clear_error():
    from yoloport.nn.model import resolve_cfg

    cfg = resolve_cfg("yolov5n-0.5-face")
    cfg["nkpt"] = "five"
    with pytest.raises(YoloportError, match="nkpt"):
        DetectionModel(cfg)


def _face_model(nc=1):
    torch.manual_seed(0)
    m = DetectionModel("yolov5n-0.5-face", nc=nc).eval()
    with torch.no_grad():  # livelier scores than the prior-initialised head
        for conv in m.detect.m:
            conv.bias.normal_(0, 1.5)
    return m


def _raw_outputs(m, x):
    with torch.no_grad():
        decoded, raw = m(x)
    outs = [r.permute(0, 1, 4, 2, 3).reshape(r.shape[0], -1, r.shape[2], r.shape[3]).numpy() for r in raw]
    return decoded.numpy(), outs


@pytest.mark.parametrize("nc", [1, 3])
def test_torch_eval_decode_equals_host_decode_with_landmarks_last(nc):
    m = _face_model(nc)
    decoded, outs = _raw_outputs(m, torch.rand(2, 3, 128, 192))
    head = HeadSpec.from_model(m)
    assert head.nkpt == 5
    host = decode_raw(outs, np.asarray(head.anchors_px), head.strides, nkpt=head.nkpt)
    assert host.shape == decoded.shape == (2, 3 * (16 * 24 + 8 * 12 + 4 * 6), 5 + nc + 10)
    np.testing.assert_allclose(host, decoded, rtol=1e-5, atol=1e-3)


def test_landmarks_decode_as_raw_times_anchor_plus_cell_times_stride():
    m = _face_model()
    _, outs = _raw_outputs(m, torch.rand(1, 3, 64, 64))
    head = HeadSpec.from_model(m)
    host = decode_raw(outs, np.asarray(head.anchors_px), head.strides, nkpt=5)
    # candidate of level 0, anchor 1, row 2, column 3 (stride 8, 8x8 grid)
    raw = outs[0].reshape(1, 3, 16, 8, 8)[0, 1, :, 2, 3]
    row = host[0, 1 * 64 + 2 * 8 + 3]
    aw, ah = head.anchors_px[0][1]
    expect = [raw[5 + 2 * k] * aw + 3 * 8 for k in range(5)], [raw[6 + 2 * k] * ah + 2 * 8 for k in range(5)]
    np.testing.assert_allclose(row[6::2], expect[0], rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(row[7::2], expect[1], rtol=1e-6, atol=1e-4)
    # the sigmoid never touches the landmarks: one far outside 0..1 stays so
    assert np.abs(decode_keypoints(np.array([[5.0, -3.0]]), np.zeros((1, 2)), np.array([[10.0, 10.0]]), 8)).max() == 50.0


def test_fast_decode_equals_full_decode_bit_for_bit_with_landmarks():
    m = _face_model(2)
    _, outs = _raw_outputs(m, torch.rand(2, 3, 96, 128))
    head = HeadSpec.from_model(m)
    full = decode_raw(outs, np.asarray(head.anchors_px), head.strides, nkpt=5)
    fast = decode_raw_above(outs, np.asarray(head.anchors_px), head.strides, 0.3, nkpt=5)
    for b in range(2):
        ref = full[b][full[b][:, 4] > 0.3]
        assert len(ref) > 0
        np.testing.assert_array_equal(fast[b], ref)


def test_nms_carries_landmark_columns_with_their_box():
    m = _face_model(2)
    _, outs = _raw_outputs(m, torch.rand(1, 3, 96, 128))
    head = HeadSpec.from_model(m)
    dets = postprocess(outs, head, conf_thres=0.3, iou_thres=0.5)[0]
    assert dets.shape[1] == 6 + 10 and len(dets) > 0
    plain = nms_candidates([c[:, : 5 + 2] for c in decode_raw_above(outs, np.asarray(head.anchors_px), head.strides, 0.3, nkpt=5)],
                           0.3, 0.5)[0]
    np.testing.assert_array_equal(dets[:, :6], plain)  # the same boxes as without landmarks
    full = decode_raw(outs, np.asarray(head.anchors_px), head.strides, nkpt=5)[0]
    for d in dets[:5]:  # each kept row's landmarks are those of the candidate its box came from
        xy = (d[0:2] + d[2:4]) / 2
        i = np.argmin(np.abs(full[:, 0:2] - xy).sum(1) + np.abs(full[:, 2:4] - (d[2:4] - d[0:2])).sum(1))
        np.testing.assert_allclose(d[6:], full[i, 7:], rtol=1e-6, atol=1e-3)
    empty = postprocess(outs, head, conf_thres=0.9999, iou_thres=0.5)[0]
    assert empty.shape == (0, 16)


def test_keypoints_scale_back_like_boxes_and_clip():
    det = np.array([[10, 20, 50, 60, 0.9, 0, 30, 40, 700, -5]], np.float32)  # 2 keypoints
    out = to_original(det, (448, 640), (687, 1024))
    gain = 640 / 1024
    pad_y = (448 - 687 * gain) / 2
    np.testing.assert_allclose(out[0, 6:8], [30 / gain, (40 - pad_y) / gain], rtol=1e-5)
    assert out[0, 8] == 1024 and out[0, 9] == 0  # clipped to the image
    k = np.array([[[100.0, 100.0]]])
    scale_keypoints((100, 100), k, (200, 200))
    assert k.tolist() == [[[200.0, 200.0]]]


def test_detector_head_spec_and_rows_unchanged():
    torch.manual_seed(0)
    m = DetectionModel("yolov5n", nc=3).eval()
    head = HeadSpec.from_model(m)
    assert head.nkpt == 0 and m.detect.no == 8
    _, outs = _raw_outputs(m, torch.rand(1, 3, 64, 64))
    assert decode_raw(outs, np.asarray(head.anchors_px), head.strides).shape[-1] == 8
