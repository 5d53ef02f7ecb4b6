"""The YOLOv5 family builds from its YAML configs exactly like Ultralytics' (layers, parameters, strides)."""
import pytest
import torch

from yoloport.errors import YoloportError
from yoloport.nn.model import DetectionModel
from yoloport.nn.modules import Focus, make_activation, space_to_depth

# (config, modules, parameters) as Ultralytics reports them for nc=80.
OFFICIAL = [
    ("yolov5n", 270, 1_872_157),
    ("yolov5s", 270, 7_235_389),
    ("yolov5m", 369, 21_190_557),
    ("yolov5s-v5.0", 283, 7_276_605),
    ("yolov5s-conv", 282, 7_276_605),
]


@pytest.mark.parametrize("cfg,layers,params", OFFICIAL)
def test_family_counts(cfg, layers, params):
    info = DetectionModel(cfg).info(256)
    assert info["layers"] == layers
    assert info["parameters"] == params


def test_strides_anchors_and_outputs_rectangular():
    m = DetectionModel("yolov5n", nc=3).eval()
    assert m.stride.tolist() == [8.0, 16.0, 32.0]
    # anchors are stored in grid units and come back in pixels
    assert torch.allclose(m.detect.anchors_px()[0, 0], torch.tensor([10.0, 13.0]))
    dec, raw = m(torch.zeros(2, 3, 416, 736))
    assert dec.shape == (2, 3 * (52 * 92 + 26 * 46 + 13 * 23), 8)
    assert [tuple(r.shape) for r in raw] == [(2, 3, 52, 92, 8), (2, 3, 26, 46, 8), (2, 3, 13, 23, 8)]


def test_custom_nc_anchors_and_activation():
    anchors = [[12, 16, 19, 36, 40, 28], [36, 75, 76, 55, 72, 146], [142, 110, 192, 243, 459, 401]]
    cfg = dict(DetectionModel("yolov5n").yaml)
    cfg["activation"] = "nn.LeakyReLU(0.1)"
    m = DetectionModel(cfg, nc=9, anchors=anchors)
    assert m.nc == 9 and m.detect.no == 14
    assert torch.allclose(m.detect.anchors_px()[2, 2], torch.tensor([459.0, 401.0]))
    assert isinstance(m.model[0].act, torch.nn.LeakyReLU) and m.model[0].act.negative_slope == pytest.approx(0.1)


def test_focus_space_to_depth_order():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    y = space_to_depth(x)
    assert y[0, :, 0, 0].tolist() == [0.0, 4.0, 1.0, 5.0]  # (even,even) (odd,even) (even,odd) (odd,odd)
    assert isinstance(DetectionModel("yolov5s-v5.0").model[0], Focus)


def test_bad_configs_are_user_errors(tmp_path):
    with pytest.raises(YoloportError, match="not found"):
        DetectionModel("yolov5q")
    bad = tmp_path / "bad.yaml"
    bad.write_text("nc: 3\nbackbone: [[-1, 1, os.system, ['echo hi']]]\nhead: []\nanchors: 3\n")
    with pytest.raises(YoloportError, match="not a YOLOv5 module"):
        DetectionModel(bad)
    with pytest.raises(ValueError):
        make_activation("__import__('os').system('x')")
