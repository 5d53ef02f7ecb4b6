"""Paired bootstrap of the mAP drop (issue 11 item 1): known answers, exactness against the validator's
own AP on explicitly repeated images, reproducibility, the gate, and per-image stats from validate."""
import numpy as np
import pytest

from yoloport.analysis import bootstrap as bs
from yoloport.analysis.bootstrap import (drop_by_sample_size, gate_verdict, map_of, paired_bootstrap_drop,
                                        reference_not_judgeable, subsample_weights)
from yoloport.engine.image_stats import ImageStats, load_image_stats, save_image_stats
from yoloport.errors import YoloportError


def synthetic_stats(n_img=40, nc=6, seed=0, max_det=30, max_labels=6, tp_rate=0.5):
    """Per-image stats as a validator makes them: confidence-sorted detections, true positives only
    for classes the image has labels of, at most one per label, at a contiguous range of thresholds."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_img):
        m, n = int(rng.integers(0, max_labels)), int(rng.integers(0, max_det))
        lab = rng.integers(0, nc, m).astype(np.float32)
        cls = rng.integers(0, nc, n).astype(np.float32)
        conf = np.sort(rng.random(n).astype(np.float32))[::-1].copy()
        tp = np.zeros((n, 10), bool)
        left = {c: int((lab == c).sum()) for c in range(nc)}
        for k in range(n):
            if left[int(cls[k])] and rng.random() < tp_rate:
                left[int(cls[k])] -= 1
                lo = int(rng.integers(0, 5))
                tp[k, lo:int(rng.integers(lo + 1, 11))] = True
        out.append(ImageStats(f"im{i}.jpg", conf, cls, tp, np.zeros((n, 4), np.float32), lab, np.zeros((m, 4), np.float32)))
    return out


def good_stats(n_img, seed=0, nc=3):
    """A good detector's stats: every label found (true positive from IoU 0.5 up to a random threshold)
    at high confidence, one low-confidence false positive per image."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_img):
        lab = rng.integers(0, nc, int(rng.integers(1, 5))).astype(np.float32)
        cls = np.concatenate([lab, rng.integers(0, nc, 1).astype(np.float32)])
        conf = np.concatenate([rng.uniform(0.5, 1, len(lab)), rng.uniform(0, 0.5, 1)]).astype(np.float32)
        tp = np.zeros((len(cls), 10), bool)
        for k in range(len(lab)):
            tp[k, :int(rng.integers(5, 11))] = True
        o = np.argsort(-conf)
        out.append(ImageStats(f"g{i}.jpg", conf[o], cls[o], tp[o], np.zeros((len(cls), 4), np.float32), lab,
                              np.zeros((len(lab), 4), np.float32)))
    return out


def emptied(stats, fraction):
    """The same images with the detections of the first ``fraction`` of them removed."""
    k = int(round(len(stats) * fraction))
    return [ImageStats(s.path, s.conf[:0], s.cls[:0], s.tp[:0], s.boxes[:0], s.label_cls, s.label_boxes) if i < k else s
            for i, s in enumerate(stats)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_resampled_map_equals_ap_per_class_on_repeated_images(seed):
    """The vectorised resample statistic is the validator's mAP of the explicitly repeated images."""
    stats = synthetic_stats(seed=seed)
    w = np.vstack([np.ones(len(stats)), bs.resample_weights(len(stats), 12, seed)])
    m50, m = bs.resampled_map(stats, w)
    for b in range(len(w)):
        repeated = [s for s, k in zip(stats, w[b]) for _ in range(int(k))]
        e50, e = map_of(repeated)
        assert m[b] == pytest.approx(e, abs=1e-9) and m50[b] == pytest.approx(e50, abs=1e-9)


def test_identical_predictions_drop_zero_interval_zero():
    stats = synthetic_stats(n_img=30)
    r = paired_bootstrap_drop(stats, stats, n_boot=200, seed=3)
    assert r["drop"] == 0 and r["low"] == 0 and r["high"] == 0 and r["within_noise"]
    assert r["mAP50"]["drop"] == 0 and r["n_boot"] == 200 and r["n_images"] == 30 and r["confidence"] == 0.95


def test_emptied_images_drop_equals_direct_computation_and_interval_shrinks_with_images():
    widths = []
    for n in (40, 320):
        ref = good_stats(n, seed=7)
        q = emptied(ref, 0.25)
        r = paired_bootstrap_drop(ref, q, n_boot=300, seed=0)
        (r50, r5095), (q50, q5095) = map_of(ref), map_of(q)
        assert r["drop"] == pytest.approx((r5095 - q5095) * 100, abs=1e-12) and r["drop"] > 5
        assert r["mAP50"]["drop"] == pytest.approx((r50 - q50) * 100, abs=1e-12)
        assert r["low"] < r["drop"] < r["high"] and not r["within_noise"]
        widths.append(r["high"] - r["low"])
    assert widths[1] < 0.7 * widths[0]  # 8x the images: about sqrt(8) narrower


def test_seed_gives_reproducible_intervals():
    ref = synthetic_stats(n_img=50, seed=11)
    q = synthetic_stats(n_img=50, seed=12)
    q = [ImageStats(a.path, b.conf, b.cls, b.tp, b.boxes, a.label_cls, a.label_boxes) for a, b in zip(ref, q)]
    a, b = paired_bootstrap_drop(ref, q, n_boot=100, seed=5), paired_bootstrap_drop(ref, q, n_boot=100, seed=5)
    c = paired_bootstrap_drop(ref, q, n_boot=100, seed=6)
    assert a == b and (a["low"], a["high"]) != (c["low"], c["high"]) and a["drop"] == c["drop"]


def test_seed_spread_is_within_noise_for_rounding_flips_and_beyond_it_for_a_real_loss():
    """Builds that differ by a few flipped detections: a spread inside noise; a build that lost half its
    images' detections: beyond it. The spread is the best build's mAP minus the worst's, whatever the order."""
    base = good_stats(120, seed=5)
    flipped = emptied(base, 2 / 120)  # two images lose their detections
    lost = emptied(base, 0.5)
    small = bs.seed_spread({0: base, 1: flipped, 2: base})
    assert small["best_seed"] in (0, 2) and small["worst_seed"] == 1 and small["n_seeds"] == 3
    assert small["spread"] == pytest.approx(100 * (map_of(base)[1] - map_of(flipped)[1]))
    assert small["spread"] > 0 and small["within_noise"]
    big = bs.seed_spread({7: lost, 3: base})
    assert (big["best_seed"], big["worst_seed"]) == (3, 7) and big["low"] > 0 and not big["within_noise"]
    with pytest.raises(YoloportError, match="two calibration seeds"):
        bs.seed_spread({0: base})


def test_recipe_difference_is_the_seed_mean_and_resolves_a_real_loss_only():
    """Two recipes, three seeds each on the same images: the point is the mean over the shared seeds of base
    minus other (points); a recipe that lost a quarter of its images' detections on every seed is beyond noise,
    one that differs by two flipped images on one seed is not; seeds only one recipe has are ignored."""
    base = good_stats(160, seed=9)
    few = emptied(base, 2 / 160)
    lost = emptied(base, 0.25)
    same = bs.recipe_difference({0: base, 1: base, 2: base}, {0: base, 1: few, 2: base, 9: lost})
    assert same["n_seeds"] == 3 and same["n_images"] == 160
    assert same["difference"] == pytest.approx(100 * (map_of(base)[1] - map_of(few)[1]) / 3)
    assert same["within_noise"] and same["low"] <= 0 <= same["high"]
    real = bs.recipe_difference({0: base, 1: base}, {0: lost, 1: lost})
    assert real["difference"] == pytest.approx(100 * (map_of(base)[1] - map_of(lost)[1])) and real["low"] > 0
    better = bs.recipe_difference({0: lost}, {0: base})
    assert better["difference"] < 0 and better["high"] < 0
    with pytest.raises(YoloportError, match="share no calibration seed"):
        bs.recipe_difference({0: base}, {1: base})
    with pytest.raises(YoloportError, match="not paired"):
        bs.recipe_difference({0: base}, {0: base[:10]})


def test_mean_drop_is_the_seed_mean_against_fp32_and_narrower_than_one_seed():
    """Builds that each lost the detections of different images: the point is the mean of their drops; one build
    alone gives paired_bootstrap_drop's point; the mean's interval (images resampled once for every build) is
    narrower than a single build's, because the builds' losses fall on different images."""
    ref = good_stats(160, seed=4)
    builds = {s: [emptied([x], 1.0)[0] if (i + s) % 8 == 0 else x for i, x in enumerate(ref)] for s in range(4)}
    m = bs.mean_drop(ref, builds, n_boot=400)
    drops = [paired_bootstrap_drop(ref, b, n_boot=400) for b in builds.values()]
    assert m["drop"] == pytest.approx(np.mean([d["drop"] for d in drops]))
    assert m["n_seeds"] == 4 and m["n_images"] == 160 and m["low"] > 0 and not m["within_noise"]
    assert m["high"] - m["low"] < min(d["high"] - d["low"] for d in drops)
    one = bs.mean_drop(ref, {7: builds[0]}, n_boot=400)
    assert one["drop"] == pytest.approx(drops[0]["drop"]) and (one["low"], one["high"]) == pytest.approx(
        (drops[0]["low"], drops[0]["high"]))
    same = bs.mean_drop(ref, {0: ref, 1: ref})
    assert same["drop"] == 0 and same["within_noise"]
    with pytest.raises(YoloportError, match="at least one build"):
        bs.mean_drop(ref, {})
    with pytest.raises(YoloportError, match="not paired"):
        bs.mean_drop(ref, {0: ref[:20]})


def test_over_several_sets_the_difference_is_the_mean_of_each_sets_own():
    """Two reporting sets, each scored on its own (its own classes, its own resamples): the point is the mean of
    the two sets' seed-mean differences; one set gives recipe_difference exactly; only the seeds every set has
    count; a set whose builds are not paired is refused. mean_drop_over_sets is the same against fp32."""
    a, b = good_stats(120, seed=2), good_stats(90, seed=3, nc=5)
    a_lost, b_few = emptied(a, 0.3), emptied(b, 2 / 90)
    two = bs.recipe_difference_over_sets([({0: a, 1: a}, {0: a_lost, 1: a}), ({0: b, 1: b, 5: b}, {0: b_few, 1: b, 5: b})])
    each = [bs.recipe_difference({0: a, 1: a}, {0: a_lost, 1: a}), bs.recipe_difference({0: b, 1: b}, {0: b_few, 1: b})]
    assert two["difference"] == pytest.approx(np.mean([e["difference"] for e in each]))
    assert (two["n_seeds"], two["n_images"], two["n_sets"]) == (2, 210, 2) and two["low"] > 0
    one = bs.recipe_difference_over_sets([({0: a, 1: a}, {0: a_lost, 1: a})])
    assert {k: one[k] for k in each[0]} == each[0]
    drops = bs.mean_drop_over_sets([(a, {0: a_lost, 1: a}), (b, {0: b_few, 1: b})])
    assert drops["drop"] == pytest.approx(two["difference"]) and drops["n_sets"] == 2
    with pytest.raises(YoloportError, match="not paired"):
        bs.recipe_difference_over_sets([({0: a}, {0: a_lost}), ({0: b}, {0: b[:30]})])
    with pytest.raises(YoloportError, match="share no calibration seed"):
        bs.recipe_difference_over_sets([({0: a}, {0: a_lost}), ({1: b}, {1: b_few})])
    with pytest.raises(YoloportError, match="at least one build"):
        bs.mean_drop_over_sets([(a, {0: a_lost}), (b, {})])


def test_unpaired_or_empty_stats_are_refused():
    ref = synthetic_stats(n_img=5)
    with pytest.raises(YoloportError, match="not paired"):
        paired_bootstrap_drop(ref, ref[:4])
    with pytest.raises(YoloportError, match="not paired"):
        paired_bootstrap_drop(ref, ref[::-1])
    with pytest.raises(YoloportError, match="empty"):
        paired_bootstrap_drop([], [])


@pytest.mark.parametrize("drop, low, high, status, passed", [
    (0.4, 0.1, 0.8, "passed", True),
    (0.8, 0.5, 1.3, "passed, within noise of the gate", True),
    (1.2, 0.7, 1.6, "failed, within noise of the gate", False),
    (1.8, 1.3, 2.4, "failed", False),
])
def test_gate_verdict(drop, low, high, status, passed):
    g = gate_verdict(drop, {"low": low, "high": high}, 1.0)
    assert g == {"passed": passed, "status": status, "max_drop": 1.0}
    assert gate_verdict(drop, None, 1.0)["status"] == ("passed" if passed else "failed")


def test_a_gate_is_not_judged_against_a_reference_that_scores_no_more_than_it():
    """An int8 build that finds nothing "drops" only what fp32 had: against a reference of 0.8 points a
    1-point gate passes anything, so it fails unjudged; 100 points or more is no gate."""
    assert reference_not_judgeable(0.35, 500, 1.0) is None
    assert "no labels" in reference_not_judgeable(0.35, 0, 1.0)
    for score in (0.0, None, 0.008):
        why = reference_not_judgeable(score, 12, 1.0)
        assert why and "scores mAP@0.5:0.95" in why and "no more than --max-drop 1.0" in why
    assert reference_not_judgeable(0.012, 12, 1.0) is None  # 1.2 points: an int8 that finds nothing fails
    assert reference_not_judgeable(0.0, 12, 100.0) is None  # the gate is off
    assert "no labels" in reference_not_judgeable(0.5, 0, 100.0)
    g = gate_verdict(0.0, {"low": 0.0, "high": 0.0}, 1.0, not_judged="the reporting set has no labels")
    assert g == {"passed": False, "status": "not judged: the reporting set has no labels", "max_drop": 1.0}


def test_image_stats_round_trip_and_damage(tmp_path):
    stats = synthetic_stats(n_img=6)
    save_image_stats(tmp_path / "s.npz", stats)
    back = load_image_stats(tmp_path / "s.npz")
    assert [s.path for s in back] == [s.path for s in stats]
    assert all(np.array_equal(a.tp, b.tp) and np.array_equal(a.conf, b.conf) for a, b in zip(stats, back))
    (tmp_path / "s.npz").write_bytes(b"not an npz")
    with pytest.raises(YoloportError, match="not a readable"):
        load_image_stats(tmp_path / "s.npz")


def test_subsample_weights_pick_distinct_images():
    w = subsample_weights(12, 5, 200, seed=3)
    assert w.shape == (200, 12) and set(np.unique(w)) == {0.0, 1.0}
    assert (w.sum(1) == 5).all()
    assert np.array_equal(w, subsample_weights(12, 5, 200, seed=3)) and not np.array_equal(w, subsample_weights(12, 5, 200, seed=4))
    assert 0.3 < w.mean(0).min() and w.mean(0).max() < 0.55  # every image about 5/12 of the time
    with pytest.raises(YoloportError, match="not possible"):
        subsample_weights(12, 13, 2, 0)


def _one_image(i, found_rare: bool, rare: bool):
    """Class 0 labelled and found at every IoU in every image; class 1 labelled only in the ``rare`` image,
    found there when ``found_rare``."""
    lab = np.array([0, 1] if rare else [0], np.float32)
    cls = np.array([0, 1] if rare and found_rare else [0], np.float32)
    conf = np.array([0.9, 0.8][:len(cls)], np.float32)
    return ImageStats(f"im{i}.jpg", conf, cls, np.ones((len(cls), 10), bool), np.zeros((len(cls), 4), np.float32), lab,
                      np.zeros((len(lab), 4), np.float32))


def test_drop_by_sample_size_on_a_class_seen_in_one_image():
    """Known answer: the quantized model misses the one label of a class only image 0 has. A subset
    holding image 0 shows the whole set's drop, one without it shows none (the class is absent), and a
    subset of m of n images holds it with probability m / n: the mean drop at size m is the drop times m / n."""
    n = 20
    ref = [_one_image(i, True, i == 0) for i in range(n)]
    q = [_one_image(i, False, i == 0) for i in range(n)]
    res = drop_by_sample_size(ref, q, [5, 10, 20], n_draws=2000, seed=0)
    full = res["drop"]
    assert full == pytest.approx((map_of(ref)[1] - map_of(q)[1]) * 100) and full > 40  # half the classes lost
    assert res["sizes"][20] == {"mean": full, "low": full, "high": full, "n_draws": 1}
    for m in (5, 10):
        assert res["sizes"][m]["mean"] == pytest.approx(full * m / n, abs=2.5)  # 4 standard errors of 2000 draws
        assert res["sizes"][m]["low"] == 0.0 and res["sizes"][m]["high"] == pytest.approx(full)
    with pytest.raises(YoloportError, match="not paired"):
        drop_by_sample_size(ref, q[::-1], [5])
