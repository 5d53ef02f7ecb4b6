"""AutoAnchor (YOLOv5 v7.0 ``utils/autoanchor.py``): check that the anchors fit the dataset's boxes
and, when they do not, evolve new ones.

The fit of a box ``(w, h)`` to an anchor ``(aw, ah)`` is ``min(w/aw, aw/w, h/ah, ah/h)``; a box can
be learned when its best anchor's fit exceeds ``1 / anchor_t``. **Best possible recall** (BPR) is
the fraction of boxes that can be learned. When BPR < 0.98, k-means on the box sizes (whitened by
their standard deviation) seeds ``na`` anchors, a genetic search mutates them for ``gen``
generations maximising the mean fit above threshold, and the result is kept when its BPR is higher.
Box sizes are label sizes scaled to the training size (long side ``img_size``); the check uses a
random 0.9..1.1 zoom as YOLOv5 does. All randomness comes from one seeded generator.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

BPR_THRESHOLD = 0.98


def label_wh(shapes_wh: np.ndarray, labels: list[np.ndarray], img_size: int,
             rng: np.random.Generator | None = None) -> np.ndarray:
    """Box sizes ``[n, 2]`` in pixels at the training size; ``rng`` adds YOLOv5's 0.9..1.1 zoom."""
    shapes = img_size * shapes_wh / shapes_wh.max(1, keepdims=True)
    if rng is not None:
        shapes = shapes * rng.uniform(0.9, 1.1, size=(shapes.shape[0], 1))
    parts = [lb[:, 3:5] * s for s, lb in zip(shapes, labels) if len(lb)]
    return np.concatenate(parts, 0).astype(np.float32) if parts else np.zeros((0, 2), np.float32)


def anchor_fit(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """``[n, k]`` fit of every box to every anchor: ``min(w/aw, aw/w, h/ah, ah/h)``."""
    r = wh[:, None] / anchors[None]
    return np.minimum(r, 1 / r).min(2)


def anchor_metrics(wh: np.ndarray, anchors: np.ndarray, thr: float = 4.0) -> tuple[float, float]:
    """``(best possible recall, anchors above threshold per box)`` for ``anchors [k, 2]`` pixels."""
    if not len(wh):
        return 1.0, 0.0
    x = anchor_fit(wh, anchors)
    return float((x.max(1) > 1 / thr).mean()), float((x > 1 / thr).sum(1).mean())


def _fitness(wh: np.ndarray, k: np.ndarray, thr: float) -> float:
    best = anchor_fit(wh, k).max(1)
    return float((best * (best > 1 / thr)).mean())


def kmeans(x: np.ndarray, k: int, rng: np.random.Generator, iters: int = 30) -> np.ndarray:
    """Lloyd's k-means of ``x [n, d]`` into ``k`` centres (k-means++ seeding)."""
    centres = [x[rng.integers(len(x))]]
    for _ in range(1, k):
        d2 = ((x[:, None] - np.array(centres)[None]) ** 2).sum(2).min(1)
        p = d2 / d2.sum() if d2.sum() > 0 else None
        centres.append(x[rng.choice(len(x), p=p)])
    c = np.array(centres, dtype=np.float64)
    for _ in range(iters):
        assign = ((x[:, None] - c[None]) ** 2).sum(2).argmin(1)
        new = np.array([x[assign == j].mean(0) if (assign == j).any() else c[j] for j in range(k)])
        if np.allclose(new, c):
            break
        c = new
    return c


def evolve_anchors(wh0: np.ndarray, n: int = 9, img_size: int = 640, thr: float = 4.0, gen: int = 1000,
                   rng: np.random.Generator | None = None) -> np.ndarray:
    """New anchors ``[n, 2]`` (pixels, sorted by area) for box sizes ``wh0 [m, 2]``: k-means + evolution."""
    rng = rng or np.random.default_rng(0)
    wh = wh0[(wh0 >= 2.0).any(1)].astype(np.float64)  # ignore boxes under 2 px
    if len(wh) >= n:
        s = wh.std(0)
        s[s == 0] = 1.0
        k = kmeans(wh / s, n, rng) * s
    else:
        k = np.sort(rng.random(n * 2)).reshape(n, 2) * img_size
    k = k[np.argsort(k.prod(1))]
    f, mp, sigma = _fitness(wh, k, thr), 0.9, 0.1
    for _ in range(gen):
        v = np.ones(k.shape)
        while (v == 1).all():  # mutate until something changes
            v = ((rng.random(k.shape) < mp) * rng.random() * rng.standard_normal(k.shape) * sigma + 1).clip(0.3, 3.0)
        kg = (k * v).clip(min=2.0)
        fg = _fitness(wh, kg, thr)
        if fg > f:
            f, k = fg, kg
    return k[np.argsort(k.prod(1))].astype(np.float32)


@dataclass
class AnchorReport:
    bpr: float
    aat: float
    new_bpr: float | None = None
    replaced: bool = False
    anchors_px: list | None = None

    def message(self) -> str:
        s = f"AutoAnchor: {self.aat:.2f} anchors/target, best possible recall {self.bpr:.4f}"
        if self.new_bpr is None:
            return s + " (anchors fit the dataset)"
        if self.replaced:
            return s + f" -> new anchors with BPR {self.new_bpr:.4f} stored in the model: {self.anchors_px}"
        return s + f"; evolved anchors (BPR {self.new_bpr:.4f}) are no better, original anchors kept"


def check_anchors(model, shapes_wh: np.ndarray, labels: list[np.ndarray], img_size: int, thr: float = 4.0,
                  seed: int = 0, gen: int = 1000) -> AnchorReport:
    """Compute BPR for ``model``'s anchors and replace them (in grid units, in place) if evolution helps."""
    from ..nn.model import check_anchor_order

    rng = np.random.default_rng(seed)
    m = model.detect
    stride = m.stride.view(-1, 1, 1)
    anchors_px = (m.anchors * stride).view(-1, 2).cpu().numpy()
    wh = label_wh(shapes_wh, labels, img_size, rng)
    bpr, aat = anchor_metrics(wh, anchors_px, thr)
    rep = AnchorReport(bpr, aat)
    if bpr > BPR_THRESHOLD or not len(wh):
        return rep
    na = m.anchors.numel() // 2
    new = evolve_anchors(label_wh(shapes_wh, labels, img_size), na, img_size, thr, gen, rng)
    rep.new_bpr = anchor_metrics(wh, new, thr)[0]
    if rep.new_bpr > bpr:
        with torch.no_grad():
            m.anchors[:] = torch.tensor(new, dtype=m.anchors.dtype).view_as(m.anchors)
            check_anchor_order(m)
            m.anchors /= stride.to(m.anchors)
        rep.replaced = True
        rep.anchors_px = [[round(float(v), 1) for v in a] for a in (m.anchors * stride).view(-1, 2).tolist()]
    return rep
