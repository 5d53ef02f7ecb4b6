"""YOLOv5 loss: IoU variants, target assignment, and the loss' behaviour on tiny models."""
from __future__ import annotations

import math

import pytest
import torch

from yoloport.engine.loss import ComputeLoss, bbox_iou, build_targets, scale_loss_gains, smooth_bce
from yoloport.nn.model import DetectionModel

HYP = {"box": 0.05, "obj": 1.0, "cls": 0.5, "cls_pw": 1.0, "obj_pw": 1.0, "anchor_t": 4.0, "fl_gamma": 0.0}


def tiny_model(nc=3):
    cfg = DetectionModel("yolov5n").yaml
    cfg = dict(cfg, width_multiple=0.125, depth_multiple=0.33)
    torch.manual_seed(0)
    return DetectionModel(cfg, nc=nc)


def test_bbox_iou_known_values():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0]])
    assert bbox_iou(a, b, xywh=False).item() == pytest.approx(1 / 7, abs=1e-6)
    assert bbox_iou(a, b, xywh=False, GIoU=True).item() == pytest.approx(1 / 7 - 2 / 9, abs=1e-6)
    # same aspect ratio: v = 0, CIoU = DIoU = IoU - rho^2 / c^2 = 1/7 - 2/18
    assert bbox_iou(a, b, xywh=False, CIoU=True).item() == pytest.approx(1 / 7 - 2 / 18, abs=1e-6)
    assert bbox_iou(a, b, xywh=False, DIoU=True).item() == pytest.approx(1 / 7 - 2 / 18, abs=1e-6)
    # concentric 2x1 and 1x2 boxes: IoU 1/3, aspect term only
    p, t = torch.tensor([[0.0, 0.0, 2.0, 1.0]]), torch.tensor([[0.0, 0.0, 1.0, 2.0]])
    v = 4 / math.pi**2 * (math.atan(0.5) - math.atan(2.0)) ** 2
    alpha = v / (v - 1 / 3 + 1)
    assert bbox_iou(p, t, CIoU=True).item() == pytest.approx(1 / 3 - v * alpha, abs=1e-5)
    assert bbox_iou(t, t, CIoU=True).item() == pytest.approx(1.0, abs=1e-5)


def test_ciou_gradient_flows_only_through_prediction():
    p = torch.tensor([[0.4, 0.6, 2.0, 1.0]], requires_grad=True)
    t = torch.tensor([[0.5, 0.5, 1.5, 1.5]])
    (1 - bbox_iou(p, t, CIoU=True)).sum().backward()
    assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_smooth_bce_and_gain_scaling():
    assert smooth_bce(0.0) == (1.0, 0.0)
    assert smooth_bce(0.1) == pytest.approx((0.95, 0.05))
    h = scale_loss_gains(HYP, nl=3, nc=80, img_size=640)
    assert (h["box"], h["obj"], h["cls"]) == pytest.approx((0.05, 1.0, 0.5))
    h = scale_loss_gains(HYP, nl=3, nc=8, img_size=320)
    assert (h["box"], h["obj"], h["cls"]) == pytest.approx((0.05, 0.25, 0.05))


def test_build_targets_neighbour_cells_and_anchor_ratio():
    anchors = torch.tensor([[[1.0, 1.0], [4.0, 4.0], [20.0, 20.0]]])  # one level, grid units
    # a 2x2-cell box centred at (4.3, 5.8) in a 10x10 grid: matches anchors 0 and 1 (ratio < 4), not 2
    t = torch.tensor([[0, 1, 0.43, 0.58, 0.2, 0.2]])
    (asg,) = build_targets([(10, 10)], t, anchors)
    assert sorted(set(asg.a.tolist())) == [0, 1]
    cells = {(int(j), int(i)) for j, i in zip(asg.gj, asg.gi)}
    # own cell (5, 4); x frac .3 < .5 -> left neighbour (5, 3); y frac .8 > .5 -> lower neighbour (6, 4)
    assert cells == {(5, 4), (5, 3), (6, 4)}
    assert len(asg.b) == 6
    assert (asg.tcls == 1).all()
    assert torch.allclose(asg.tbox[:, 2:], torch.tensor([2.0, 2.0]))
    assert ((asg.tbox[:, :2] > -0.5) & (asg.tbox[:, :2] < 1.5)).all()
    (none,) = build_targets([(10, 10)], torch.zeros((0, 6)), anchors)
    assert len(none.b) == 0


def test_loss_lower_for_a_good_prediction_and_gradients_flow():
    model = tiny_model(nc=3).train()
    hyp = scale_loss_gains(HYP, 3, 3, 128)
    loss_fn = ComputeLoss(model, hyp)
    x = torch.rand(2, 3, 128, 128)
    targets = torch.tensor([[0, 0, 0.5, 0.5, 0.3, 0.2], [1, 2, 0.3, 0.6, 0.1, 0.15]])
    preds = model(x)
    loss, items = loss_fn(preds, targets)
    assert loss.shape == (1,) and items.shape == (3,) and torch.isfinite(loss).all()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert len(grads) == len(list(model.parameters()))
    assert any(g.abs().sum() > 0 for g in grads)

    # Build the "perfect" raw prediction for the targets: objectness and class logits high where
    # assigned, xy/wh logits that decode to the target box; everything else very negative.
    with torch.no_grad():
        perfect = [torch.full_like(p, -12.0) for p in preds]
        shapes = [(p.shape[2], p.shape[3]) for p in preds]
        for pi, asg in zip(perfect, build_targets(shapes, targets, model.detect.anchors)):
            sig_xy = ((asg.tbox[:, :2] + 0.5) / 2).clamp(1e-4, 1 - 1e-4)
            sig_wh = ((asg.tbox[:, 2:] / asg.anchors).sqrt() / 2).clamp(1e-4, 1 - 1e-4)
            pi[asg.b, asg.a, asg.gj, asg.gi, 0:2] = torch.logit(sig_xy)
            pi[asg.b, asg.a, asg.gj, asg.gi, 2:4] = torch.logit(sig_wh)
            pi[asg.b, asg.a, asg.gj, asg.gi, 4] = 12.0
            pi[asg.b, asg.a, asg.gj, asg.gi, 5 + asg.tcls] = 12.0
        good, good_items = loss_fn(perfect, targets)
        bad, _ = loss_fn([p.detach() for p in preds], targets)
    assert good.item() < 0.01 * bad.item()
    assert good_items[0].item() < 1e-4  # box loss ~ 0 for exact boxes


def test_label_smoothing_raises_the_floor_of_class_loss():
    """Without smoothing a perfectly confident, correct class prediction costs ~0; with smoothing 0.2
    (targets 0.9 / 0.1) it costs more, and the cheapest prediction is the smoothed target itself,
    whose class loss (the floor) is above zero."""
    model = tiny_model(nc=3).train()
    x = torch.rand(1, 3, 64, 64)
    t = torch.tensor([[0, 1, 0.5, 0.5, 0.4, 0.4]])
    with torch.no_grad():
        p = model(x)

    def cls_loss(logit_scale, smoothing):
        q = [o.clone() for o in p]
        for o in q:  # every cell predicts class 1 with logits +s, the others -s
            o[..., 5:] = -logit_scale
            o[..., 6] = logit_scale
        with torch.no_grad():
            _, items = ComputeLoss(model, dict(HYP, label_smoothing=smoothing))(q, t)
        return float(items[2])

    assert cls_loss(20.0, 0.0) < 1e-6
    floor = math.log(0.9 / 0.1)  # logit of the smoothed target 0.9 (and -logit of 0.1)
    at_floor = cls_loss(floor, 0.2)
    assert at_floor > 1e-3  # the floor is above zero
    assert cls_loss(20.0, 0.2) > at_floor + 1e-3  # over-confidence now costs
    assert at_floor < min(cls_loss(0.8 * floor, 0.2), cls_loss(1.25 * floor, 0.2))  # the minimum is at the target
