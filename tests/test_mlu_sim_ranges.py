"""Range estimators for symmetric int8 (``yoloport.quant.range_estimators``) and mlu-sim's ``act_range`` /
``weight_range`` keys (issue 11: max |x| coarsens the grid with every outlier the calibration images bring).

The estimator tests use constructed distributions with a known answer; the mlu-sim tests use the embedded
default model at 160x128 on synthetic-shape images (calibration and evaluation images disjoint)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import _checks as C
from conftest import signal_model, write_synth_images
from yoloport.backends import mlu_sim as ms
from yoloport.data.calibration import load_calibration
from yoloport.errors import YoloportError
from yoloport.ops.postprocess import HeadSpec
from yoloport.quant import range_estimators as re

HW = (128, 160)
QMAX = 127


def _sq_error(x: torch.Tensor, r: float) -> float:
    """Mean squared error of ``x`` on the symmetric int8 grid of range ``r``, computed directly."""
    s = r / QMAX
    return float(((x - torch.clamp(torch.round(x / s), -QMAX, QMAX) * s) ** 2).mean())


def _histogram(x: torch.Tensor, batches: int = 4) -> re.AbsHistogram:
    h = re.AbsHistogram()
    for part in x.chunk(batches):
        h.add(part)
    return h


def _gauss_with_outlier(n=1_000_000, outlier=40.0, seed=0) -> torch.Tensor:
    """``n`` standard-normal values with one value at ``outlier`` (placed in the last batch, so the
    histogram must grow to hold it)."""
    x = torch.randn(n, generator=torch.Generator().manual_seed(seed))
    x[-1] = outlier
    return x


def _heavy_tailed_weight() -> torch.Tensor:
    """A conv weight ``[64, 32, 3, 3]``: N(0, 0.02) with 0.2% of its values 10x larger."""
    g = torch.Generator().manual_seed(4)
    w = torch.randn(64, 32, 3, 3, generator=g) * 0.02
    return torch.where(torch.rand(w.shape, generator=g) < 0.002, w * 10, w)


# ----------------------------------------------------------------------------- estimators


def test_mse_range_clips_far_outlier_and_lowers_error():
    """N(0, 1) with one value at 40 in a million: max |x| = 40 spends the grid on one value (step 0.31,
    error ~ step^2/12 = 8e-3); clipping it at r costs only (40 - r)^2 / 1e6. The MSE range must sit
    far below the max and have a lower error than the max, and be near the best range of a direct scan."""
    x = _gauss_with_outlier()
    h = _histogram(x)
    assert h.max == pytest.approx(40.0) and h.total == x.numel()
    r = re.mse_range(h, QMAX)
    assert r < 0.25 * h.max
    e_mse, e_max = _sq_error(x, r), _sq_error(x, h.max)
    assert e_mse < 0.5 * e_max, (e_mse, e_max)
    scan = np.linspace(2.0, 12.0, 101)
    best = float(scan[int(np.argmin([_sq_error(x, v) for v in scan]))])
    assert e_mse <= 1.02 * _sq_error(x, best), (r, best)


def test_mse_range_keeps_max_without_outliers():
    """Uniform values on [0, 1] (no tail): clipping anything costs more than it saves, so the MSE range
    is (within the search's resolution) the max."""
    x = torch.rand(200_000, generator=torch.Generator().manual_seed(1))
    h = _histogram(x)
    assert re.mse_range(h, QMAX) >= 0.98 * h.max


def test_percentile_range_matches_numpy():
    x = _gauss_with_outlier(n=400_000, seed=2)
    h = _histogram(x)
    for p in (99.0, 99.9, 99.99):
        want = float(np.percentile(x.abs().numpy(), p))
        assert re.percentile_range(h, p) == pytest.approx(want, abs=2 * h.hi / h.bins + 1e-6)
    assert re.percentile_range(h, 100.0) == h.max


@pytest.mark.parametrize("kind", ["gauss_outlier", "uniform", "exponential", "constant", "single", "zeros"])
def test_ranges_never_exceed_max(kind):
    """Whatever the distribution, a chosen range is in [0, max |x|] (it may clip, never widen)."""
    g = torch.Generator().manual_seed(3)
    x = {
        "gauss_outlier": _gauss_with_outlier(n=100_000, seed=3),
        "uniform": torch.rand(50_000, generator=g) * 7 - 3.5,
        "exponential": torch.empty(50_000).exponential_(generator=g),
        "constant": torch.full((1000,), 3.0),
        "single": torch.cat([torch.zeros(999), torch.tensor([2.5])]),
        "zeros": torch.zeros(1000),
    }[kind]
    h = _histogram(x)
    assert h.max == float(x.abs().max())
    for est in re.ACT_ESTIMATORS:
        r = re.activation_range_from(est, h, [float(p.abs().max()) for p in x.chunk(4)], QMAX, 99.9)
        assert 0.0 <= r <= h.max, (est, r, h.max)
    for per_channel in (False, True):
        w = x[: (x.numel() // 10) * 10].reshape(10, -1)
        wr = re.weight_range_mse(w, QMAX, per_channel)
        assert (wr <= (w.abs().amax(1) if per_channel else w.abs().max()) + 0).all()
        assert (wr >= 0).all()


def test_histogram_grows_exactly():
    """Batches whose max grows (4x, then past ``bins`` times) merge bins: every value is counted once and
    stays in a bin whose span holds it, and the exact max is kept."""
    h = re.AbsHistogram(bins=64)
    h.add(torch.full((100,), 0.5))  # hi = 0.5: all in the last bin (its closed upper edge)
    h.add(torch.full((50,), 1.4))  # hi -> 2.0 (x4): bins of width 1/32
    assert h.hi == 2.0 and h.total == 150
    assert h.counts[15] == 100 and h.counts[int(1.4 * 32)] == 50 and h.counts.sum() == 150  # 0.5 = upper edge of bin 15
    h.add(torch.tensor([7000.0, 0.25]))  # hi -> 8192 (x4096 >= 64 bins): every older value lies in bin 0
    assert h.hi == 8192.0 and h.max == 7000.0 and h.total == 152 and h.counts.sum() == 152
    assert h.counts[0] == 151 and h.counts[int(7000 / 128)] == 1


def test_weight_range_mse_matches_a_direct_scan():
    """A heavy-tailed per-tensor weight (N(0, 0.02), 0.2% of its values 10x larger): the MSE range clips the
    tail (below max |w|), its error is lower than max |w|'s and within 1% of the best range of a direct scan
    of 400 ranges; per channel it gives one range per output channel, none above that channel's max."""
    w = _heavy_tailed_weight()
    m = float(w.abs().max())
    r = float(re.weight_range_mse(w, QMAX, per_channel=False))
    assert r < 0.95 * m
    assert _sq_error(w, r) < 0.95 * _sq_error(w, m)
    scan = np.linspace(m / 400, m, 400)
    assert _sq_error(w, r) <= 1.01 * min(_sq_error(w, v) for v in scan)
    pc = re.weight_range_mse(w, QMAX, per_channel=True)
    assert pc.shape == (64,)
    assert (pc <= w.abs().amax(dim=(1, 2, 3)) * (1 + 1e-6)).all() and (pc > 0).all()


@pytest.mark.parametrize("key, value, match", [
    ("act_range", "minmax", "act_range 'minmax'"),
    ("act_range", 3, "act_range 3"),
    ("weight_range", "kl", "weight_range 'kl'"),
    ("act_percentile", 0, "act_percentile"),
    ("act_percentile", 100.5, "act_percentile"),
    ("act_percentile", "most", "act_percentile"),
])
def test_bad_range_keys_are_one_clear_error(key, value, match):
    with pytest.raises(YoloportError, match=match):
        ms.resolve_qconfig({key: value})


def test_use_avg_needs_max_estimator():
    with pytest.raises(YoloportError, match="use_avg"):
        ms.resolve_qconfig({"use_avg": True, "act_range": "mse"})
    assert ms.resolve_qconfig({"use_avg": True})["act_range"] == "max"  # whatever the default estimator
    assert ms.resolve_qconfig({"act_range": "MSE", "weight_range": "Mse"})["act_range"] == "mse"


# ----------------------------------------------------------------------------- mlu-sim


@pytest.fixture(scope="module")
def tiny():
    return signal_model()


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    d = write_synth_images(tmp_path_factory.mktemp("calib"), 6, (150, 200), seed=0)
    return load_calibration(d, n=6, img_size_hw=HW)


def _build(model, out, calibration, **q):
    return ms.build(model, None, HeadSpec.from_model(model, "raw"), out, calibration, {"precision": "int8", "head_fp32": "tail", **q})


def _scales(art) -> dict:
    return json.loads(open(str(art) + ".json").read())["mlu_sim"]["scales"]


@pytest.mark.parametrize("act_range", ["mse", "percentile"])
def test_mlu_sim_records_chosen_ranges(tiny, calib, tmp_path, act_range):
    """Every conv input's chosen range is recorded with its estimator, is at most the calibration max,
    sets the scale (range / 127), and clips at least some tensors (the max build clips none)."""
    s = _scales(_build(tiny, tmp_path, calib, act_range=act_range))
    first = next(iter(s))  # the image conv: uint8 exactly (firstconv), its range is the max
    clipped = 0
    for name, v in s.items():
        assert v["estimator"] == ("max" if name == first else act_range)
        assert 0 < v["range"] <= v["max"] * (1 + 1e-9)
        assert v["input_scale"] == pytest.approx(v["range"] / 127)
        clipped += v["range"] < 0.99 * v["max"]
    assert clipped >= len(s) // 2, clipped


def test_mlu_sim_weight_range_mse_survives_load(tiny, calib, tmp_path):
    """weight_range='mse': the loaded artifact quantizes weights on the stored MSE grids (not max|w| / 127),
    so it computes what the build calibrated."""
    art = _build(tiny, tmp_path, calib, weight_range="mse")
    s = _scales(art)
    runner = ms.load(art, output="raw")
    moved = 0
    for c in runner.qconvs:
        want = float(re.weight_range_mse(c.conv.weight, 127, False)) / 127
        assert float(c.w_scale) == pytest.approx(want, rel=1e-6)
        assert s[c.name]["weight_range"] <= s[c.name]["weight_max"] * (1 + 1e-6)
        moved += float(c.w_scale) < 0.99 * float(ms.weight_scale(c.conv.weight, 127, False))
    assert moved >= 1


def test_mlu_sim_mse_ranges_run_close_to_float(tiny, calib, tmp_path):
    """An act_range='mse' + weight_range='mse' build still agrees with float on images it was not
    calibrated on (the suite's int8 cosine / SQNR floor): clipping did not break the network."""
    from yoloport.backends.torch_backend import TorchRunner

    ev = load_calibration(write_synth_images(tmp_path / "eval", 2, (150, 200), seed=1), n=2, img_size_hw=HW, seed=None)
    C.check_disjoint(calib.paths, ev.paths)
    batch = np.concatenate(ev.arrays(), 0)
    art = _build(tiny, tmp_path / "mse", calib, act_range="mse", weight_range="mse")
    C.check_int8_agrees(TorchRunner(tiny)(batch), ms.load(art, output="raw")(batch))


def test_ptq_grid_follows_weight_range():
    """The PTQ steps (bias correction, AdaRound) target the grid the backend will use: with
    weight_range='mse' mlu-sim's PTQ grid has the MSE scale, not max|w| / 127."""
    from yoloport.backends.registry import ptq_weight_grid
    from yoloport.quant.layers import WeightGrid

    w = _heavy_tailed_weight()
    grid = ptq_weight_grid("mlu-sim", {"weight_range": "mse"})
    assert float(grid.scale(w)) == pytest.approx(float(re.weight_range_mse(w, 127, False)) / 127, rel=1e-6)
    assert float(grid.scale(w)) < 0.95 * float(ptq_weight_grid("mlu-sim", {"weight_range": "max"}).scale(w))
    assert ptq_weight_grid("mlu-sim", {}).weight_range == ms.DEFAULT_QCONFIG["weight_range"]  # the backend's default
    with pytest.raises(YoloportError, match="weight_range"):
        WeightGrid(127, False, "kl")


def test_default_recipe_runs_through_the_registry(tiny, calib, tmp_path):
    """mlu-sim's default (measured, docs/notes/2026-11-30-mlusim-ranges.md): MSE activation ranges, max|w|
    weights and bias correction on that weight grid, applied by a plain build; ``ptq: []`` turns the PTQ step
    off; other backends' defaults run no PTQ; ``port`` (per channel) keeps the max ranges it was measured with."""
    from yoloport.backends.registry import build_artifact, get_spec, ptq_steps

    art = build_artifact("mlu-sim", tiny, tmp_path / "default", HW, calib, {"output": "raw"})
    side = json.loads(open(str(art) + ".json").read())
    assert side["ptq"]["steps"] == ["bias_correction"]
    assert side["ptq"]["grid"]["weight_range"] == "max" and side["ptq"]["grid"]["per_channel"] is False
    quantized = [v for k, v in list(side["mlu_sim"]["scales"].items())[1:] if k not in side["mlu_sim"]["float_convs"]]
    assert quantized and {v["estimator"] for v in quantized} == {"mse"}
    off = build_artifact("mlu-sim", tiny, tmp_path / "off", HW, calib, {"output": "raw", "ptq": []})
    assert "ptq" not in json.loads(open(str(off) + ".json").read())
    assert ptq_steps("onnxruntime", {}) == () and ptq_steps("mlu-sim", {"ptq": "adaround"}) == "adaround"
    port = ms.resolve_qconfig(dict(get_spec("mlu-sim").port_qconfig))
    assert (port["per_channel"], port["act_range"], port["weight_range"], tuple(port["ptq"])) == (True, "max", "max", ())
