"""The YOLOv5 training loss (Ultralytics v7.0 ``utils/loss.py`` ``ComputeLoss``), as small functions.

Per level ``i`` the model gives raw predictions ``p[i]: [B, na, H, W, 5 + nc]``. Targets are rows
``(image index, cls, xc, yc, w, h)`` with the box normalised to the input image. The loss is

- **box**: ``1 - CIoU`` between the decoded prediction (``xy = 2*sigmoid - 0.5`` relative to the
  cell, ``wh = (2*sigmoid)^2 * anchor``) and the target, averaged over the assigned positives;
- **objectness**: BCE against the (detached, clamped) IoU of each positive (``gr = 1``), zero
  elsewhere, weighted per level by ``balance = [4.0, 1.0, 0.4]``;
- **class**: BCE against one-hot targets smoothed to ``(1 - eps/2, eps/2)`` (only when ``nc > 1``);

each multiplied by its gain ``hyp['box'|'obj'|'cls']`` (see :func:`scale_loss_gains`), summed and
multiplied by the batch size. A target is assigned to every anchor whose width and height ratios
are both within ``anchor_t`` and to its own cell plus the two nearest neighbouring cells
(offset ``g = 0.5``).

**Landmarks** (a keypoint head, ``Detect.nkpt = K > 0``, as yolov5-face ``utils/loss.py``): targets
carry ``2K`` more columns, the normalised landmarks (``-1`` when missing). The head's landmark
channels are not squashed; for a positive in cell ``(gi, gj)`` with anchor ``a`` (grid units) the
prediction ``raw * a`` is compared with the target landmark in grid units minus ``(gi, gj)`` (the
same relation the head decodes with: ``raw * anchor_px + grid * stride``) by the wing loss
(:func:`wing_loss`, ``w = 10, e = 2``), summed over the coordinates present and divided by their
number; missing landmarks are masked out. Per level these add up, times ``hyp['landmark']``
(yolov5-face: 0.005, not scaled by the number of levels). A fourth loss item is then returned.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

#: Objectness weight per level (P3, P4, P5) and for 5-level heads, as YOLOv5.
BALANCE = {3: [4.0, 1.0, 0.4]}
BALANCE_DEFAULT = [4.0, 1.0, 0.25, 0.06, 0.02]

#: yolov5-face's landmark loss gain (``hyp.scratch.yaml``: ``landmark: 0.005``) when ``hyp`` has none.
LANDMARK_GAIN = 0.005

#: Neighbour cell offsets (own cell, +x, +y, -x, -y) in units of ``g``.
_OFFSETS = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], dtype=torch.float32)


def bbox_iou(box1: torch.Tensor, box2: torch.Tensor, xywh: bool = True, GIoU: bool = False, DIoU: bool = False,
             CIoU: bool = False, eps: float = 1e-7) -> torch.Tensor:
    """IoU (or GIoU / DIoU / CIoU) of matching boxes ``box1: [N, 4]`` and ``box2: [N, 4]`` -> ``[N, 1]``.

    Boxes are ``(xc, yc, w, h)`` when ``xywh`` else ``(x1, y1, x2, y2)``; both broadcast. CIoU's
    ``alpha`` is computed without gradient, as in YOLOv5.
    """
    if xywh:
        (x1, y1, w1, h1), (x2, y2, w2, h2) = box1.chunk(4, -1), box2.chunk(4, -1)
        b1_x1, b1_x2, b1_y1, b1_y2 = x1 - w1 / 2, x1 + w1 / 2, y1 - h1 / 2, y1 + h1 / 2
        b2_x1, b2_x2, b2_y1, b2_y2 = x2 - w2 / 2, x2 + w2 / 2, y2 - h2 / 2, y2 + h2 / 2
    else:
        b1_x1, b1_y1, b1_x2, b1_y2 = box1.chunk(4, -1)
        b2_x1, b2_y1, b2_x2, b2_y2 = box2.chunk(4, -1)
        w1, h1 = b1_x2 - b1_x1, (b1_y2 - b1_y1).clamp(eps)
        w2, h2 = b2_x2 - b2_x1, (b2_y2 - b2_y1).clamp(eps)
    inter = (b1_x2.minimum(b2_x2) - b1_x1.maximum(b2_x1)).clamp(0) * (b1_y2.minimum(b2_y2) - b1_y1.maximum(b2_y1)).clamp(0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    if not (CIoU or DIoU or GIoU):
        return iou
    cw = b1_x2.maximum(b2_x2) - b1_x1.minimum(b2_x1)  # enclosing box width
    ch = b1_y2.maximum(b2_y2) - b1_y1.minimum(b2_y1)
    if CIoU or DIoU:
        c2 = cw**2 + ch**2 + eps  # squared enclosing diagonal
        rho2 = ((b2_x1 + b2_x2 - b1_x1 - b1_x2) ** 2 + (b2_y1 + b2_y2 - b1_y1 - b1_y2) ** 2) / 4  # squared centre distance
        if CIoU:
            v = (4 / math.pi**2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)).pow(2)
            with torch.no_grad():
                alpha = v / (v - iou + (1 + eps))
            return iou - (rho2 / c2 + v * alpha)
        return iou - rho2 / c2
    c_area = cw * ch + eps
    return iou - (c_area - union) / c_area


def smooth_bce(eps: float = 0.0) -> tuple[float, float]:
    """Label smoothing targets ``(positive, negative) = (1 - eps/2, eps/2)`` (https://arxiv.org/abs/1902.04103)."""
    return 1.0 - 0.5 * eps, 0.5 * eps


class FocalLoss(nn.Module):
    """Focal loss around a ``BCEWithLogitsLoss`` (``gamma``, ``alpha=0.25``), mean-reduced as YOLOv5."""

    def __init__(self, loss_fcn: nn.BCEWithLogitsLoss, gamma: float = 1.5, alpha: float = 0.25):
        super().__init__()
        self.loss_fcn, self.gamma, self.alpha = loss_fcn, gamma, alpha
        self.reduction = loss_fcn.reduction
        self.loss_fcn.reduction = "none"

    def forward(self, pred, true):
        loss = self.loss_fcn(pred, true)
        p = torch.sigmoid(pred)
        p_t = true * p + (1 - true) * (1 - p)
        loss = loss * (true * self.alpha + (1 - true) * (1 - self.alpha)) * (1.0 - p_t) ** self.gamma
        return loss.mean() if self.reduction == "mean" else loss.sum() if self.reduction == "sum" else loss


def scale_loss_gains(hyp: dict, nl: int, nc: int, img_size: int) -> dict:
    """Copy of ``hyp`` with the loss gains scaled as YOLOv5's train.py does.

    ``box *= 3/nl``, ``cls *= nc/80 * 3/nl``, ``obj *= (img_size/640)^2 * 3/nl`` (``img_size``: the
    training size's long side).
    """
    h = dict(hyp)
    h["box"] = float(h["box"]) * 3 / nl
    h["cls"] = float(h["cls"]) * nc / 80 * 3 / nl
    h["obj"] = float(h["obj"]) * (img_size / 640) ** 2 * 3 / nl
    return h


def wing_loss(pred: torch.Tensor, target: torch.Tensor, w: float = 10.0, e: float = 2.0) -> torch.Tensor:
    """Wing loss (Feng et al. 2018, https://arxiv.org/abs/1711.06753) per element, same shape as the inputs.

    ``w * ln(1 + |d| / e)`` for ``|d| < w`` (log-shaped, sensitive to small errors), else
    ``|d| - C`` with ``C = w - w * ln(1 + w / e)`` (linear, continuous at ``|d| = w``)."""
    d = (pred - target).abs()
    c = w - w * math.log(1 + w / e)
    return torch.where(d < w, w * torch.log1p(d / e), d - c)


def landmark_loss(pred: torch.Tensor, target: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Masked wing loss of one level's positives: ``pred, target [n, K, 2]`` (grid units relative to
    the cell), ``present [n, K]`` bool -> scalar: the sum over present coordinates / their count (0 if none)."""
    mask = present.unsqueeze(-1).expand_as(pred).to(pred.dtype)
    loss = wing_loss(pred * mask, target * mask)
    return (loss * mask).sum() / (mask.sum() + 1e-13)


@dataclass
class Assigned:
    """Positives of one level: ``n`` rows each.

    ``b, a, gj, gi``: image, anchor, cell row, cell column (long ``[n]``); ``tbox``: ``[n, 4]`` target
    ``(x, y)`` relative to the cell and ``(w, h)`` in grid units; ``anchors``: ``[n, 2]`` grid units;
    ``tcls``: long ``[n]``. With landmarks: ``tkpt [n, K, 2]`` target landmarks in grid units relative
    to the cell ``(gi, gj)``, ``kpt_present [n, K]`` bool (None for a detector).
    """

    b: torch.Tensor
    a: torch.Tensor
    gj: torch.Tensor
    gi: torch.Tensor
    tbox: torch.Tensor
    anchors: torch.Tensor
    tcls: torch.Tensor
    tkpt: torch.Tensor | None = None
    kpt_present: torch.Tensor | None = None


def build_targets(shapes: list[tuple[int, int]], targets: torch.Tensor, anchors: torch.Tensor,
                  anchor_t: float = 4.0, g: float = 0.5) -> list[Assigned]:
    """Assign ``targets [nt, 6]`` (img, cls, xc, yc, w, h normalised) to anchors and cells per level.

    ``shapes``: ``(H, W)`` of each level's grid; ``anchors``: ``[nl, na, 2]`` in grid units. A target
    matches anchor ``a`` when ``max(w/aw, aw/w, h/ah, ah/h) < anchor_t``; it is then assigned to its
    own cell and to the horizontally and vertically nearest neighbour cells (the centre lies within
    ``g`` of that border; cells on the image edge have no outer neighbour).

    Targets ``[nt, 6 + 2K]`` carry ``K`` normalised landmarks (``-1`` missing) after the box; each
    assignment then also gets them in grid units relative to its cell (:class:`Assigned` ``tkpt``).
    """
    device = targets.device
    na, nt = anchors.shape[1], targets.shape[0]
    nkpt = (targets.shape[1] - 6) // 2
    ai = torch.arange(na, device=device, dtype=targets.dtype).view(na, 1).repeat(1, nt)
    t_all = torch.cat((targets.repeat(na, 1, 1), ai[..., None]), 2)  # [na, nt, 7 + 2K]: img, cls, x, y, w, h, kpts, anchor
    off = _OFFSETS.to(device, targets.dtype) * g
    out = []
    for i, (h, w) in enumerate(shapes):
        anc = anchors[i].to(targets.dtype)
        gain = torch.tensor([1, 1, w, h, w, h] + [w, h] * nkpt + [1], device=device, dtype=targets.dtype)
        t = t_all * gain  # boxes in grid units
        if nt:
            r = t[..., 4:6] / anc[:, None]  # [na, nt, 2] wh ratio
            keep = torch.max(r, 1 / r).max(2)[0] < anchor_t
            t = t[keep]
            gxy = t[:, 2:4]
            gxi = gain[[2, 3]] - gxy  # distance to the far border
            j, k = ((gxy % 1 < g) & (gxy > 1)).T
            l, m = ((gxi % 1 < g) & (gxi > 1)).T
            sel = torch.stack((torch.ones_like(j), j, k, l, m))
            t = t.repeat((5, 1, 1))[sel]
            offsets = (torch.zeros_like(gxy)[None] + off[:, None])[sel]
        else:
            t = t_all[0]
            offsets = torch.zeros_like(t[:, 2:4])
        bc, gxy, gwh, a = t[:, 0:2], t[:, 2:4], t[:, 4:6], t[:, -1]
        a = a.long()
        b, c = bc.long().T
        gij = (gxy - offsets).long()
        gi, gj = gij.T
        gj, gi = gj.clamp(0, h - 1), gi.clamp(0, w - 1)
        asg = Assigned(b, a, gj, gi, torch.cat((gxy - gij, gwh), 1), anc[a], c)
        if nkpt:
            kpt = t[:, 6:6 + 2 * nkpt].reshape(-1, nkpt, 2)
            asg.kpt_present = (kpt >= 0).all(-1)  # missing landmarks are -1 (times the gain: still negative)
            asg.tkpt = kpt - gij[:, None, :].to(kpt.dtype)
        out.append(asg)
    return out


class ComputeLoss:
    """YOLOv5's loss for a :class:`~yoloport.nn.model.DetectionModel` (or its DDP wrapper).

    ``hyp`` needs ``box, obj, cls`` (already scaled, :func:`scale_loss_gains`), ``cls_pw, obj_pw,
    anchor_t``, optional ``fl_gamma``, ``label_smoothing`` and ``landmark`` (the landmark gain of a
    keypoint head, default :data:`LANDMARK_GAIN`). Call with the training forward's list of
    ``[B, na, H, W, no]`` and ``targets [nt, 6]`` (``[nt, 6 + 2K]`` for a head with ``K`` landmarks);
    returns ``(loss * B [1], items)`` where ``items = (box, obj, cls)`` detached (``n_items = 3``), and
    ``(box, obj, cls, landmark)`` for a keypoint head (``n_items = 4``).
    """

    def __init__(self, model, hyp: dict):
        m = getattr(model, "module", model).model[-1]
        device = next(m.parameters()).device
        self.hyp = hyp
        bce_cls = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([float(hyp.get("cls_pw", 1.0))], device=device))
        bce_obj = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([float(hyp.get("obj_pw", 1.0))], device=device))
        gamma = float(hyp.get("fl_gamma", 0.0))
        if gamma > 0:
            bce_cls, bce_obj = FocalLoss(bce_cls, gamma), FocalLoss(bce_obj, gamma)
        self.bce_cls, self.bce_obj = bce_cls, bce_obj
        self.cp, self.cn = smooth_bce(float(hyp.get("label_smoothing", 0.0)))
        self.balance = BALANCE.get(m.nl, BALANCE_DEFAULT)
        self.gr = 1.0
        self.nc, self.nl, self.na = m.nc, m.nl, m.na
        self.nkpt = int(getattr(m, "nkpt", 0))
        self.n_items = 4 if self.nkpt else 3
        self.anchors = m.anchors  # buffer: follows AutoAnchor's in-place updates

    def __call__(self, p: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dev = p[0].device
        lcls = torch.zeros(1, device=dev)
        lbox = torch.zeros(1, device=dev)
        lobj = torch.zeros(1, device=dev)
        lkpt = torch.zeros(1, device=dev)
        nk = 2 * self.nkpt
        if targets.shape[1] != 6 + nk:
            raise ValueError(f"targets have {targets.shape[1]} columns; this head needs {6 + nk} "
                             f"(img, cls, xc, yc, w, h{f', {self.nkpt} landmark x/y pairs' if nk else ''})")
        shapes = [(pi.shape[2], pi.shape[3]) for pi in p]
        assigned = build_targets(shapes, targets.to(dev), self.anchors.to(dev), float(self.hyp["anchor_t"]))
        for i, (pi, asg) in enumerate(zip(p, assigned)):
            tobj = torch.zeros(pi.shape[:4], dtype=pi.dtype, device=dev)
            n = asg.b.shape[0]
            if n:
                pxy, pwh, _, pkpt, pcls = pi[asg.b, asg.a, asg.gj, asg.gi].split((2, 2, 1, nk, self.nc), 1)
                if nk:  # landmarks: raw * anchor against the target relative to the cell (grid units)
                    pk = pkpt.reshape(n, self.nkpt, 2) * asg.anchors[:, None, :]
                    lkpt = lkpt + landmark_loss(pk, asg.tkpt, asg.kpt_present)
                pxy = pxy.sigmoid() * 2 - 0.5
                pwh = (pwh.sigmoid() * 2) ** 2 * asg.anchors
                iou = bbox_iou(torch.cat((pxy, pwh), 1), asg.tbox, CIoU=True).squeeze(-1)
                lbox = lbox + (1.0 - iou).mean()
                iou = iou.detach().clamp(0).type(tobj.dtype)
                if self.gr < 1:
                    iou = (1.0 - self.gr) + self.gr * iou
                tobj[asg.b, asg.a, asg.gj, asg.gi] = iou
                if self.nc > 1:
                    t = torch.full_like(pcls, self.cn)
                    t[torch.arange(n, device=dev), asg.tcls] = self.cp
                    lcls = lcls + self.bce_cls(pcls, t)
            lobj = lobj + self.bce_obj(pi[..., 4], tobj) * self.balance[i]
        lbox = lbox * float(self.hyp["box"])
        lobj = lobj * float(self.hyp["obj"])
        lcls = lcls * float(self.hyp["cls"])
        bs = p[0].shape[0]
        if not nk:
            return (lbox + lobj + lcls) * bs, torch.cat((lbox, lobj, lcls)).detach()
        lkpt = lkpt * float(self.hyp.get("landmark", LANDMARK_GAIN))
        return (lbox + lobj + lcls + lkpt) * bs, torch.cat((lbox, lobj, lcls, lkpt)).detach()
