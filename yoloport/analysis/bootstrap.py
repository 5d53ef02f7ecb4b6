"""A paired bootstrap over images of an mAP drop: how much of "int8 loses 0.3 points" is noise.

Both models are validated on the same images (:func:`yoloport.engine.val.validate` with
``image_stats=True``). A resample draws ``n`` images with replacement; the fp32 and the int8 mAP are
computed on *the same* resampled images (an image drawn k times counts k times: its detections and
labels are repeated), and the drop is their difference. The percentile interval of the resampled
drops is the interval reported; a drop whose interval contains 0 is ``within_noise``.

The point estimate is the validator's own number: :func:`yoloport.engine.metrics.ap_per_class` on the
concatenated statistics, exactly the arrays :func:`~yoloport.engine.val.validate` uses. The resamples
use a vectorised form of the same AP (COCO's 101-point interpolated envelope, Ultralytics v7.0
semantics) that is exact for repeated images: for each class and threshold it keeps only the points of
the precision/recall curve that can change the AP (every true positive and its copies, the last false
positive before each, the last detection), which the tests check against ``ap_per_class`` run on the
explicitly repeated images.

Public entry point: :func:`paired_bootstrap_drop`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..engine.image_stats import ImageStats, concatenate
from ..engine.metrics import ap_per_class
from ..errors import YoloportError

_EPS = 1e-16  # as ap_per_class
_RECALL_GRID = np.linspace(0, 1, 101)  # as compute_ap
_TRAPEZOID_WEIGHTS = np.diff(_RECALL_GRID, prepend=0.0) / 2 + np.diff(_RECALL_GRID, append=1.0) / 2  # trapezoid rule


def map_of(stats: list[ImageStats]) -> tuple[float, float]:
    """``(mAP@0.5, mAP@0.5:0.95)`` of ``stats`` exactly as the validator computes them (0 when nothing matched)."""
    tp, conf, pred_cls, target_cls = concatenate(stats)
    if not len(tp) or not tp.any():
        return 0.0, 0.0
    ap = ap_per_class(tp, conf, pred_cls, target_cls)["ap"]
    if not len(ap):
        return 0.0, 0.0
    return float(ap[:, 0].mean()), float(ap.mean(1).mean())


@dataclass
class _Curves:
    """One model's statistics arranged for resampling. ``classes [C]``: the label classes of the full set.
    Anchors (detections that are a true positive at one threshold at least) are grouped by class, in
    confidence order: ``anchor_img [K]``, ``anchor_tp [K, T]`` float, ``anchor_class [K]`` (position in
    ``classes``), ``before [K, n_img]`` (detections of the anchor's class that rank before it, per image);
    ``dets [C, n_img]`` detections per class and image; ``labels [n_img, C]`` labels per image and class."""

    anchor_img: np.ndarray
    anchor_tp: np.ndarray
    anchor_class: np.ndarray
    before: np.ndarray
    dets: np.ndarray
    labels: np.ndarray


def _label_counts(stats: list[ImageStats], classes: np.ndarray) -> np.ndarray:
    """``[n_img, C]`` labels per image and class."""
    out = np.zeros((len(stats), len(classes)), np.float64)
    for i, s in enumerate(stats):
        pos = np.searchsorted(classes, np.asarray(s.label_cls, np.int64))
        np.add.at(out[i], pos, 1.0)
    return out


def _prepare(stats: list[ImageStats], classes: np.ndarray) -> _Curves:
    n_img, n_cls = len(stats), len(classes)
    tp, conf, pred_cls, _ = concatenate(stats)
    img = np.concatenate([np.full(len(s.conf), i, np.int64) for i, s in enumerate(stats)]) if stats else np.zeros(0, np.int64)
    order = np.argsort(-np.asarray(conf, np.float64))  # the validator's order (ties included)
    tp, pred_cls, img = tp[order], np.asarray(pred_cls, np.int64)[order], img[order]
    pos = np.searchsorted(classes, pred_cls)
    known = (pos < n_cls) & (classes[np.minimum(pos, n_cls - 1)] == pred_cls) if n_cls else np.zeros(len(pred_cls), bool)
    tp, pos, img = tp[known], pos[known], img[known]
    by_class = np.argsort(pos, kind="stable")  # class-major, confidence order within a class
    tp, pos, img = tp[by_class], pos[by_class], img[by_class]
    dets = np.zeros((n_cls, n_img), np.float64)
    np.add.at(dets, (pos, img), 1.0)
    is_anchor = tp.any(1)
    before_rows = []
    starts = np.searchsorted(pos, np.arange(n_cls))
    ends = np.searchsorted(pos, np.arange(n_cls), side="right")
    for c in range(n_cls):
        seg = slice(starts[c], ends[c])
        a = np.nonzero(is_anchor[seg])[0]
        if not len(a):
            continue
        onehot = np.zeros((ends[c] - starts[c], n_img), np.float64)
        onehot[np.arange(len(onehot)), img[seg]] = 1.0
        before_rows.append((np.cumsum(onehot, 0) - onehot)[a])
    before = np.concatenate(before_rows, 0) if before_rows else np.zeros((0, n_img))
    return _Curves(img[is_anchor], tp[is_anchor].astype(np.float64), pos[is_anchor], before, dets,
                   _label_counts(stats, classes))


def _resampled_map(cv: _Curves, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(mAP@0.5 [B], mAP@0.5:0.95 [B])`` for image multiplicities ``weights [B, n_img]`` (counts).

    The AP of a class at one threshold is determined by these points of its precision/recall curve
    (count ``J`` = detections so far, ``T`` = true positives so far, both with multiplicity): the
    start sentinel (recall 0, precision 1); for every anchor the point just before it (the last false
    positive of the run before, or a repeat of the previous point) and one point per copy of it (slots
    ``1..S_k``, ``S_k`` its image's largest multiplicity in the chunk; slots beyond the multiplicity of
    a resample repeat its last copy); the last detection; the end sentinel
    (recall 1, precision 0). Repeated points and dropped mid-run false positives do not change the
    envelope or the interpolation, so this equals the AP of the explicitly repeated images."""
    B = len(weights)
    K, T = cv.anchor_tp.shape if cv.anchor_tp.ndim == 2 else (0, 10)
    C = cv.labels.shape[1]
    n_lab = weights @ cv.labels  # [B, C]
    n_det = weights @ cv.dets.T  # [B, C]
    present = n_lab > 0
    if not C:
        return np.zeros(B), np.zeros(B)
    counts = np.bincount(cv.anchor_class, minlength=C)  # anchors per class
    # slots per anchor: its image's largest multiplicity in this chunk (at least 1)
    slots = np.maximum(weights[:, cv.anchor_img].max(0), 1).astype(np.int64) if K else np.zeros(0, np.int64)
    width = 1 + slots  # the pre-point and the slots
    n_pts = np.bincount(cv.anchor_class, weights=width, minlength=C).astype(np.int64) + 3  # points per class segment
    seg_start = np.concatenate([[0], np.cumsum(n_pts)[:-1]])
    P = int(n_pts.sum())
    seg_of_point = np.repeat(np.arange(C), n_pts)
    J = np.zeros((B, P))
    Tp = np.zeros((B, T, P))
    if K:
        w_anchor = weights[:, cv.anchor_img]  # [B, K]
        j_before = weights @ cv.before.T  # [B, K]
        contrib = w_anchor[:, None, :] * cv.anchor_tp.T[None]  # [B, T, K]
        cum = np.cumsum(contrib, -1)
        a_start = np.concatenate([[0], np.cumsum(counts)[:-1]])
        first = a_start[cv.anchor_class]  # index of the first anchor of each anchor's class
        base = np.where(first > 0, cum[..., np.maximum(first - 1, 0)], 0.0)
        t_before = cum - contrib - base  # [B, T, K] exclusive, within the class
        offset = np.cumsum(width) - width  # points before each anchor's block, over all anchors
        pre = seg_start[cv.anchor_class] + 1 + offset - (offset[first] if K else 0)  # the pre-point's index
        J[:, pre] = j_before
        Tp[:, :, pre] = t_before
        for s in range(1, int(slots.max()) + 1):
            has = slots >= s
            k = np.minimum(s, w_anchor[:, has])  # copies so far
            J[:, pre[has] + s] = j_before[:, has] + k
            Tp[:, :, pre[has] + s] = t_before[:, :, has] + k[:, None, :] * cv.anchor_tp[has].T[None]
        t_total = np.zeros((B, T, C))
        np.add.at(t_total, (slice(None), slice(None), cv.anchor_class), contrib)
    else:
        t_total = np.zeros((B, T, C))
    last = seg_start + n_pts - 2
    J[:, last] = n_det
    Tp[:, :, last] = t_total
    start, end = seg_start, seg_start + n_pts - 1
    with np.errstate(invalid="ignore", divide="ignore"):
        prec = np.where(J[:, None, :] > 0, Tp / J[:, None, :], 1.0)  # no detection yet: the start point
    recall = Tp / (n_lab[:, None, seg_of_point] + _EPS)
    prec[..., start], recall[..., start] = 1.0, 0.0
    prec[..., end], recall[..., end] = 0.0, 1.0
    # precision envelope: running max from the right within each class segment (offsets keep segments apart)
    off = 2.0 * (C - seg_of_point)
    env = np.flip(np.maximum.accumulate(np.flip(prec + off, -1), -1), -1) - off
    # np.interp(grid, recall, env) per segment: the last point whose recall <= x
    G = len(_RECALL_GRID)
    # first grid index >= recall, [B, T, P]; recall > 1 only in classes without labels (left out below)
    q = np.minimum(np.searchsorted(_RECALL_GRID, recall, side="left"), G - 1)
    flat = ((np.arange(B * T)[:, None] * C + seg_of_point[None]) * G + q.reshape(B * T, P)).ravel()
    n_le = np.cumsum(np.bincount(flat, minlength=B * T * C * G).reshape(B, T, C, G), -1)
    j = seg_start[None, None, :, None] + n_le - 1  # [B, T, C, G]
    # np.interp's formula on the chosen point j: slope to the next point (always finite there, since
    # recall[j] <= x < recall[j + 1]); 0 at the end sentinel, where np.interp returns its value
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = (np.roll(env, -1, -1) - env) / (np.roll(recall, -1, -1) - recall)
    slope[..., end] = 0.0
    jj = (np.arange(B * T).reshape(B, T)[..., None, None] * P + j).reshape(-1)
    x = np.broadcast_to(_RECALL_GRID, j.shape).reshape(-1)
    rj = recall.reshape(-1).take(jj)
    y = slope.reshape(-1).take(jj)
    y *= x - rj
    y += env.reshape(-1).take(jj)
    ap = y.reshape(B, T, C, G) @ _TRAPEZOID_WEIGHTS  # [B, T, C]
    ap = np.where((n_det > 0)[:, None, :], ap, 0.0)
    n_present = present.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_t = np.where(n_present[:, None] > 0, (ap * present[:, None, :]).sum(-1) / n_present[:, None], 0.0)
    return per_t[:, 0], per_t.mean(1)


def resample_weights(n_images: int, n_boot: int, seed: int) -> np.ndarray:
    """``[n_boot, n_images]`` multiplicities of ``n_boot`` draws of ``n_images`` images with replacement."""
    idx = np.random.default_rng(seed).integers(0, n_images, (n_boot, n_images))
    flat = (idx + np.arange(n_boot)[:, None] * n_images).ravel()
    return np.bincount(flat, minlength=n_boot * n_images).reshape(n_boot, n_images).astype(np.float64)


def resampled_map(stats: list[ImageStats], weights: np.ndarray, chunk: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """``(mAP@0.5 [B], mAP@0.5:0.95 [B])`` of ``stats`` under image multiplicities ``weights [B, n_img]``."""
    classes = np.unique(np.concatenate([np.asarray(s.label_cls, np.int64) for s in stats])) if stats else np.zeros(0, np.int64)
    cv = _prepare(stats, classes)
    parts = [_resampled_map(cv, weights[i:i + chunk]) for i in range(0, len(weights), chunk)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _check_paired(ref: list[ImageStats], q: list[ImageStats]) -> None:
    if not ref:
        raise YoloportError("no images to bootstrap over: the reporting set is empty")
    if len(ref) != len(q) or any(a.path != b.path for a, b in zip(ref, q)):
        raise YoloportError(f"the two validations are not paired: {len(ref)} and {len(q)} images, "
                            "not the same files in the same order")


def _interval(point: float, drops: np.ndarray, confidence: float) -> dict:
    lo, hi = np.percentile(drops, [50 * (1 - confidence), 50 * (1 + confidence)])
    return {"drop": point, "low": float(lo), "high": float(hi), "within_noise": bool(lo <= 0.0 <= hi)}


def paired_bootstrap_drop(ref_stats: list[ImageStats], q_stats: list[ImageStats], n_boot: int = 1000, seed: int = 0,
                          confidence: float = 0.95) -> dict:
    """The mAP drop of ``q`` against ``ref`` (points, ``(ref - q) * 100``) with a paired-bootstrap interval.

    ``ref_stats``, ``q_stats``: ``validate(..., image_stats=True)["image_stats"]`` of the two models on
    the same images. Returns ``{drop, low, high, n_boot, confidence, within_noise, n_images, metric,
    mAP50: {drop, low, high, within_noise}}``: ``drop`` is the mAP@0.5:0.95 drop the validator reports
    (point estimate), ``low``/``high`` the percentile interval at ``confidence`` over ``n_boot``
    resamples drawn with ``seed`` (the same seed gives the same interval), ``within_noise`` when the
    interval contains 0; ``resampled_mean``: the mean of the resampled drops (where it sits away from ``drop``,
    the interval is not centred on the point, see :func:`drop_by_sample_size`).
    """
    _check_paired(ref_stats, q_stats)
    if n_boot < 1 or not 0 < confidence < 1:
        raise YoloportError(f"bootstrap: n_boot must be >= 1 and confidence in (0, 1), got {n_boot}, {confidence}")
    (r50, r5095), (q50, q5095) = map_of(ref_stats), map_of(q_stats)
    w = resample_weights(len(ref_stats), int(n_boot), seed)
    rb50, rb = resampled_map(ref_stats, w)
    qb50, qb = resampled_map(q_stats, w)
    main = _interval((r5095 - q5095) * 100, (rb - qb) * 100, confidence)
    return {**main, "resampled_mean": float(np.mean((rb - qb) * 100)), "n_boot": int(n_boot), "confidence": float(confidence),
            "n_images": len(ref_stats),
            "metric": "mAP50_95", "seed": seed, "mAP50": _interval((r50 - q50) * 100, (rb50 - qb50) * 100, confidence)}


def subsample_weights(n_images: int, size: int, n_draws: int, seed: int) -> np.ndarray:
    """``[n_draws, n_images]`` 0/1 weights: each row picks ``size`` distinct images (without replacement)."""
    if not 0 < size <= n_images:
        raise YoloportError(f"a subsample of {size} images out of {n_images} is not possible")
    keys = np.random.default_rng(seed).random((n_draws, n_images))
    picked = np.argsort(keys, axis=1)[:, :size]
    w = np.zeros((n_draws, n_images))
    np.put_along_axis(w, picked, 1.0, axis=1)
    return w


def drop_by_sample_size(ref_stats: list[ImageStats], q_stats: list[ImageStats], sizes, n_draws: int = 500,
                        seed: int = 0, confidence: float = 0.95) -> dict:
    """How the mAP@0.5:0.95 drop (points) depends on how many images it is measured on: for each ``size``,
    the mean drop over ``n_draws`` subsets of that many distinct images of the reporting set, and the range
    (``confidence``) the subsets' drops fall in. mAP is not an average over images: a class with one or two
    labels in a small set swings its AP on one changed detection, so the drop need not be the same on fewer
    images. Where the mean drop shrinks as ``size`` grows, the drop measured on the whole
    set still overstates what a larger set of the same kind of images would show; the paired bootstrap, whose
    resamples hold about 63% distinct images, then centres its interval above the measured drop.

    Returns ``{"n_images", "drop" (on all images), "sizes": {size: {mean, low, high, n_draws}}}``; a size
    equal to the set's is the measured drop itself."""
    _check_paired(ref_stats, q_stats)
    n = len(ref_stats)
    point = (map_of(ref_stats)[1] - map_of(q_stats)[1]) * 100
    out = {}
    for k, size in enumerate(sorted({int(x) for x in sizes})):
        if size == n:
            out[size] = {"mean": point, "low": point, "high": point, "n_draws": 1}
            continue
        w = subsample_weights(n, size, n_draws, seed + k)
        d = (resampled_map(ref_stats, w)[1] - resampled_map(q_stats, w)[1]) * 100
        lo, hi = np.percentile(d, [50 * (1 - confidence), 50 * (1 + confidence)])
        out[size] = {"mean": float(d.mean()), "low": float(lo), "high": float(hi), "n_draws": int(n_draws)}
    return {"n_images": n, "drop": point, "sizes": out}


def seed_spread(stats_by_seed: dict, n_boot: int = 1000, seed: int = 0, confidence: float = 0.95) -> dict:
    """Whether int8 builds calibrated on different samples differ by more than evaluation noise.

    ``stats_by_seed``: ``{calibration seed: image stats}`` of two or more builds validated on the same images.
    The spread (points) is the best build's mAP@0.5:0.95 minus the worst's; its interval comes from
    :func:`paired_bootstrap_drop` of the worst against the best on the same resampled images. Picking the
    extremes first makes the interval lean towards "beyond noise", so ``within_noise`` (the interval holds 0)
    is a conservative verdict: the builds' differences are no larger than what the reporting images resolve.
    Returns ``{spread, low, high, within_noise, best_seed, worst_seed, n_seeds, n_images}``."""
    if len(stats_by_seed) < 2:
        raise YoloportError(f"a spread needs at least two calibration seeds, got {len(stats_by_seed)}")
    maps = {k: map_of(v)[1] for k, v in stats_by_seed.items()}
    best, worst = max(maps, key=maps.get), min(maps, key=maps.get)
    r = paired_bootstrap_drop(stats_by_seed[best], stats_by_seed[worst], n_boot, seed, confidence)
    return {"spread": r["drop"], "low": r["low"], "high": r["high"], "within_noise": r["within_noise"],
            "best_seed": best, "worst_seed": worst, "n_seeds": len(stats_by_seed), "n_images": r["n_images"]}


def recipe_difference(base_by_seed: dict, other_by_seed: dict, n_boot: int = 1000, seed: int = 0,
                      confidence: float = 0.95) -> dict:
    """How much ``other`` loses against ``base`` (points, the mean over calibration seeds of
    ``(base - other) * 100`` in mAP@0.5:0.95), with a paired-bootstrap interval over the reporting images.

    ``base_by_seed`` / ``other_by_seed``: ``{calibration seed: image stats}`` of two recipes built from the
    same calibration samples and validated on the same images; only the seeds both have count. Every resample
    draws the images once and scores every build of both recipes on them, so the interval is the image noise
    of the mean difference (the seeds' own spread is in the point). Returns ``{difference, low, high,
    within_noise, n_seeds, n_images}``; ``difference`` > 0: ``other`` is worse."""
    return recipe_difference_over_sets([(base_by_seed, other_by_seed)], n_boot, seed, confidence)


def recipe_difference_over_sets(sets: list, n_boot: int = 1000, seed: int = 0, confidence: float = 0.95) -> dict:
    """:func:`recipe_difference` averaged over several reporting sets: ``sets`` is a list of ``(base_by_seed,
    other_by_seed)``, one per set, and the result is the mean over the sets of each set's seed-mean difference
    (the seeds every set has in both recipes count). Each set's mAP stays its own (a class without labels in a
    set is not scored there, as when the set is validated alone); each set's images are resampled on their
    own, with the same draw for every build in it, so the interval is the image noise of the average.
    Returns ``{difference, low, high, within_noise, n_seeds, n_images, n_sets}`` (``n_images``: all sets')."""
    if not sets:
        raise YoloportError("no reporting set to compare on")
    seeds = sorted(set.intersection(*(set(b) & set(o) for b, o in sets)), key=str)
    if not seeds:
        raise YoloportError("the two recipes share no calibration seed: nothing to compare")
    if n_boot < 1 or not 0 < confidence < 1:
        raise YoloportError(f"bootstrap: n_boot must be >= 1 and confidence in (0, 1), got {n_boot}, {confidence}")
    points, boots, n_images = [], [], 0
    for i, (base, other) in enumerate(sets):
        for k in seeds:
            _check_paired(base[k], other[k])
        _check_paired(base[seeds[0]], base[seeds[-1]])
        w = resample_weights(len(base[seeds[0]]), int(n_boot), seed + i)
        done: dict[int, tuple] = {}  # id(stats) -> (mAP, resampled mAPs): one fp32 base serves every seed once

        def scored(stats):
            if id(stats) not in done:
                done[id(stats)] = (map_of(stats)[1], resampled_map(stats, w)[1])
            return done[id(stats)]

        points.append(np.mean([scored(base[k])[0] - scored(other[k])[0] for k in seeds]) * 100)
        boots.append(np.mean([scored(base[k])[1] - scored(other[k])[1] for k in seeds], axis=0) * 100)
        n_images += len(base[seeds[0]])
    r = _interval(float(np.mean(points)), np.mean(boots, axis=0), confidence)
    return {"difference": r["drop"], "low": r["low"], "high": r["high"], "within_noise": r["within_noise"],
            "n_seeds": len(seeds), "n_images": n_images, "n_sets": len(sets)}


def mean_drop(ref_stats: list[ImageStats], int8_by_seed: dict, n_boot: int = 1000, seed: int = 0,
              confidence: float = 0.95) -> dict:
    """The mean over calibration seeds of one recipe's mAP@0.5:0.95 drop (points) against the float model, with
    a paired-bootstrap interval over the reporting images: every resample draws the images once and scores the
    float model and every seed's build on them, so the interval is the image noise of the mean (narrower than
    any one seed's when the builds' errors differ), and the seeds' own spread is in the point.

    ``ref_stats``: the float model's image stats; ``int8_by_seed``: ``{calibration seed: image stats}`` of the
    builds, on the same images. Returns ``{drop, low, high, within_noise, n_seeds, n_images}``."""
    return mean_drop_over_sets([(ref_stats, int8_by_seed)], n_boot, seed, confidence)


def mean_drop_over_sets(sets: list, n_boot: int = 1000, seed: int = 0, confidence: float = 0.95) -> dict:
    """:func:`mean_drop` averaged over several reporting sets: ``sets`` is a list of ``(ref_stats,
    int8_by_seed)``, one per set; the drop is the mean over the sets of each set's seed-mean drop, each set's
    images resampled on their own (:func:`recipe_difference_over_sets`). Returns ``{drop, low, high,
    within_noise, n_seeds, n_images, n_sets}``."""
    if not sets or any(not by_seed for _, by_seed in sets):
        raise YoloportError("a mean drop needs at least one build")
    r = recipe_difference_over_sets([({k: ref for k in by_seed}, by_seed) for ref, by_seed in sets], n_boot, seed,
                                    confidence)
    return {"drop": r["difference"], "low": r["low"], "high": r["high"], "within_noise": r["within_noise"],
            "n_seeds": r["n_seeds"], "n_images": r["n_images"], "n_sets": r["n_sets"]}


def format_drop(ci: dict, nd: int = 2) -> str:
    """``"0.42 [0.11, 0.80]"`` (points, the interval in brackets), ``" within noise"`` appended when it holds 0."""
    return f"{ci['drop']:.{nd}f} [{ci['low']:.{nd}f}, {ci['high']:.{nd}f}]" + (" within noise" if ci.get("within_noise") else "")


def gate_verdict(drop: float, ci: dict | None, max_drop: float, not_judged: str | None = None) -> dict:
    """The ``--max-drop`` gate judged with the interval. The point estimate decides pass or fail (what
    the user asked for); the interval says how sure that is:

    - ``passed``: the whole interval is at or below ``max_drop``;
    - ``passed, within noise of the gate``: the point is at or below, the interval reaches above;
    - ``failed, within noise of the gate``: the point is above, the interval reaches below;
    - ``failed``: the whole interval is above ``max_drop``.

    Without an interval (``ci`` None) the point alone decides. ``not_judged``: why no drop can be judged
    against this reference (:func:`reference_not_judgeable`); the gate then fails with
    ``not judged: <why>``, since a drop of 0 from a reference that finds nothing proves nothing.
    Returns ``{passed, status, max_drop}``; :func:`gate_not_judged` tells the unjudged failure apart.
    """
    if not_judged:
        return {"passed": False, "status": f"not judged: {not_judged}", "max_drop": max_drop}
    passed = drop <= max_drop
    if ci is None:
        status = "passed" if passed else "failed"
    elif passed:
        status = "passed" if ci["high"] <= max_drop else "passed, within noise of the gate"
    else:
        status = "failed" if ci["low"] > max_drop else "failed, within noise of the gate"
    return {"passed": passed, "status": status, "max_drop": max_drop}


def gate_not_judged(gate: dict | None) -> bool:
    """Whether a :func:`gate_verdict` failed unjudged (its reference could not anchor a drop)."""
    return str((gate or {}).get("status", "")).startswith("not judged")


def reference_not_judgeable(score: float | None, n_labels: int | None, max_drop: float,
                            metric: str = "mAP@0.5:0.95", images: str = "reporting") -> str | None:
    """Why the fp32 reference's ``score`` (a fraction) on the ``images`` set (reporting, or selection for a
    search) cannot anchor a ``--max-drop`` gate (in points), or None. No labels, or a score of at most
    ``max_drop`` points: then even a quantized model that finds nothing at all would pass the gate. Both
    usually mean data for another model (other classes, another task) or an untrained checkpoint. A
    ``max_drop`` of 100 points or more asks for no gate: only a set without labels is refused then."""
    if n_labels is not None and n_labels == 0:
        return f"the {images} set has no labels"
    points = 0.0 if score is None else float(score) * 100
    if max_drop < 100 and not points > max_drop:
        return (f"the fp32 reference scores {metric} {points:.2f} points on the {images} set, no more than --max-drop "
                f"{max_drop}: a quantized model that finds nothing would pass (labels of other classes, or an untrained model?)")
    return None


__all__ = ["drop_by_sample_size", "format_drop", "gate_not_judged", "gate_verdict", "map_of", "paired_bootstrap_drop", "recipe_difference",
           "reference_not_judgeable", "resample_weights", "resampled_map", "seed_spread", "subsample_weights"]
