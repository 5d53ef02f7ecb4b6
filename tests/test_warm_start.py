"""The P2-P3-P4 head (yolov5n-p2, the embedded default model's architecture) and the warm start that
carries a yolov5n's trained layers over to it (yoloport.nn.warm_start)."""
import torch

from yoloport.nn.model import DetectionModel
from yoloport.nn.warm_start import detect_level_renames, transfer_state, warm_start


def test_detect_levels_are_matched_by_stride_not_index():
    renames = detect_level_renames("model.24", [8.0, 16.0, 32.0], "model.25", [4.0, 8.0, 16.0])
    assert renames == {"model.24.m.0.": "model.25.m.1.", "model.24.m.1.": "model.25.m.2."}  # P5 has no home


def test_transfer_copies_matching_names_and_shapes_only():
    old = {"a.w": torch.ones(2, 3), "b.w": torch.ones(4), "h.m.0.w": torch.full((5,), 7.0), "h.anchors": torch.ones(3)}
    new = {"a.w": torch.zeros(2, 3), "b.w": torch.zeros(5), "h.m.1.w": torch.zeros(5), "h.anchors": torch.zeros(3)}
    state, copied, kept = transfer_state(old, new, {"h.m.0.": "h.m.1."})
    assert sorted(copied) == ["a.w", "h.m.1.w"] and sorted(kept) == ["b.w", "h.anchors"]
    assert state["h.m.1.w"].eq(7).all() and state["b.w"].eq(0).all() and state["h.anchors"].eq(0).all()


def test_p2_head_has_three_outputs_at_strides_4_8_16():
    m = DetectionModel("yolov5n-p2", nc=6).eval()
    assert m.stride.tolist() == [4.0, 8.0, 16.0]
    with torch.no_grad():
        _, raw = m(torch.rand(1, 3, 320, 320))
    assert [tuple(r.shape[2:4]) for r in raw] == [(80, 80), (40, 40), (20, 20)]


def test_warm_started_p2_model_keeps_the_old_p3_p4_predictions():
    """Every layer feeding the old P3 and P4 outputs is copied, so those two levels' raw outputs are
    identical; only the new stride-4 level is fresh, with the YAML's own anchors."""
    torch.manual_seed(1)
    old = DetectionModel("yolov5n", nc=6).eval()
    new, copied, kept = warm_start(old, "yolov5n-p2", seed=0)
    new.eval()
    x = torch.rand(2, 3, 320, 320)
    with torch.no_grad():
        _, raw_old = old(x)
        _, raw_new = new(x)
    torch.testing.assert_close(raw_new[1], raw_old[0], rtol=0, atol=0)
    torch.testing.assert_close(raw_new[2], raw_old[1], rtol=0, atol=0)
    assert {k.split(".")[1] for k in kept} == {"21", "24", "25"}  # the new P2 branch and the Detect anchors
    p2_anchors_px = (new.detect.anchors[0] * new.detect.stride[0]).tolist()
    assert p2_anchors_px == [[11.0, 10.0], [9.0, 13.0], [16.0, 16.0]]
