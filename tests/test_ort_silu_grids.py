"""SiLU-aware uint8 grids for ONNX Runtime's QDQ Conv-SiLU units (yoloport.backends.onnxruntime_silu_grids):
the range chooser on constructed distributions with a known answer, the chosen grids landing in the
quantized graph's Q nodes, every quantized conv still fused to QLinearConv, and bad options refused."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from yoloport.backends import onnxruntime_backend as ortb  # noqa: E402
from yoloport.backends import onnxruntime_silu_grids as sg  # noqa: E402
from yoloport.quant import silu_ranges as sr  # noqa: E402
from yoloport.backends.onnxruntime_backend import resolve_qconfig  # noqa: E402
from yoloport.backends.registry import build_artifact, load_runner  # noqa: E402
from yoloport.backends.torch_backend import TorchRunner  # noqa: E402
from yoloport.data.calibration import load_calibration  # noqa: E402
from yoloport.errors import YoloportError  # noqa: E402

import _checks as C  # noqa: E402
from conftest import write_synth_images  # noqa: E402

HW = (96, 128)  # (h, w)
GRIDS = {"preact_range": "silu_mse", "sigmoid_range": "unit", "mul_range": "mse"}


def tailed_preactivations(n: int = 200_000, seed: int = 0) -> np.ndarray:
    """Gaussian pre-activations N(0.5, 1.5) with a long negative tail: 0.5% of them from -U(5, 40)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.5, 1.5, n)
    tail = rng.random(n) < 0.005
    x[tail] = -rng.uniform(5.0, 40.0, tail.sum())
    return x


def histogram(x: np.ndarray, bins: int = sr.HIST_BINS):
    counts, edges = np.histogram(x, bins=bins)
    return (edges[:-1] + edges[1:]) / 2, counts


def post_silu_mse(x: np.ndarray, lo: float, hi: float) -> float:
    return float(np.mean((sr.silu(sr.fake_quant(x, lo, hi)) - sr.silu(x)) ** 2))


def test_uint8_grid_is_onnxruntimes():
    from onnxruntime.quantization.quant_utils import compute_scale_zp

    for lo, hi in [(-16.5, 13.7), (-0.28, 7.0), (0.3, 5.0), (-3.0, -1.0), (-6.0, 10.0)]:
        zp, scale = compute_scale_zp(np.array(lo, np.float32), np.array(hi, np.float32), np.array(0, np.uint8), np.array(255, np.uint8))
        s, z = sr.uint8_grid(lo, hi)
        assert float(s) == pytest.approx(float(scale), rel=1e-6) and int(z) == int(zp), (lo, hi)


def test_fake_quant_is_quantize_dequantize():
    x = np.array([-20.0, -3.3, 0.0, 0.049, 7.9, 30.0])
    s, z = sr.uint8_grid(-4.0, 8.0)
    expect = (np.clip(np.round(x / s) + z, 0, 255) - z) * s
    np.testing.assert_allclose(sr.fake_quant(x, -4.0, 8.0), expect)
    assert sr.fake_quant(x, np.array([-4.0, -2.0]), np.array([8.0, 8.0])).shape == (2, 6)


def test_silu_range_drops_the_negative_tail_and_lowers_post_silu_error():
    """A long negative tail that SiLU squashes to ~0: the chosen lower end sits well above the observed
    min (MinMax's), and the post-SiLU error on fresh samples of the same distribution is lower."""
    lo, hi = sr.silu_preact_range(*histogram(tailed_preactivations(seed=0)))
    held_back = tailed_preactivations(seed=1)
    assert lo > 0.5 * held_back.min() and lo < -1.0, lo  # above most of the tail, below the Gaussian's body
    assert hi <= held_back.max() + 1e-6
    mm = post_silu_mse(held_back, held_back.min(), held_back.max())
    assert post_silu_mse(held_back, lo, hi) < 0.5 * mm


def test_silu_range_low_keeps_the_observed_max():
    x = tailed_preactivations()
    centers, counts = histogram(x)
    lo, hi = sr.silu_preact_range(centers, counts, move_hi=False)
    assert hi == pytest.approx(centers[counts > 0].max()) and lo > x.min()


def test_silu_range_keeps_a_range_with_nothing_to_drop():
    """Uniform on [-1, 1] (every level used, SiLU's slope ~0.5 everywhere): the observed range is kept."""
    x = np.random.default_rng(0).uniform(-1.0, 1.0, 100_000)
    centers, counts = histogram(x)
    lo, hi = sr.silu_preact_range(centers, counts)
    assert lo == pytest.approx(centers[0], abs=0.03) and hi == pytest.approx(centers[-1], abs=0.03)


def test_mul_range_error_not_above_minmax():
    x = tailed_preactivations()
    centers, counts = histogram(x)
    x_range = sr.silu_preact_range(centers, counts)
    s_range = (0.0, 1.0)
    m, target = sr.unit_outputs(centers, x_range, s_range)
    lo, hi = sr.mul_output_range(centers, counts, x_range, s_range)

    def err(a, b):
        return float(np.sum(counts * (sr.fake_quant(m, a, b) - target) ** 2))

    nz = counts > 0
    assert err(lo, hi) <= err(m[nz].min(), m[nz].max()) + 1e-12


@pytest.mark.parametrize("bad", [{"preact_range": "entropy"}, {"preact_range": 3}, {"sigmoid_range": "mse"},
                                 {"mul_range": True}, {"preact_range": "silu_mse", "silu_floor": -6}])
def test_bad_grid_options_are_user_errors(bad):
    with pytest.raises(YoloportError, match="preact_range|sigmoid_range|mul_range"):
        resolve_qconfig(bad)


def test_grid_options_default_to_the_measured_recipe():
    """ORT's default grids are the recipe measured best on unseen images (silu_zero, unit, mse); a grid the user
    names replaces only itself; int8 activations take MinMax's grids."""
    def grids(q):
        cfg = resolve_qconfig(q)
        return cfg["preact_range"], cfg["sigmoid_range"], cfg["mul_range"]

    assert grids({}) == ("silu_zero", "unit", "mse")
    assert grids({"preact_range": "SILU_MSE"}) == ("silu_mse", "unit", "mse")
    assert grids({"mul_range": "minmax"}) == ("silu_zero", "unit", "minmax")
    assert grids({"act_type": "int8"}) == ("minmax", "minmax", "minmax")


# ----------------------------------------------------------------------------- in the quantized graph


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    return load_calibration(write_synth_images(tmp_path_factory.mktemp("calib"), 4, HW, seed=0), n=4, img_size_hw=HW)


@pytest.fixture(scope="module")
def fp32(tiny_model, tmp_path_factory):
    return build_artifact("onnxruntime", tiny_model, tmp_path_factory.mktemp("fp32"), HW, None, {})


@pytest.fixture(scope="module")
def built(tiny_model, calib, tmp_path_factory):
    """MinMax (the default before silu_zero) and SiLU-grid artifacts, with the ranges the grid build chose
    (caught on their way to ORT)."""
    chosen = {}
    real = ortb.silu_grid_ranges

    def spy(*args, **kwargs):
        chosen.update(real(*args, **kwargs))
        return chosen

    out = tmp_path_factory.mktemp("silugrids")
    mm = build_artifact("onnxruntime", tiny_model, out / "minmax", HW, calib,
                        {"preact_range": "minmax", "sigmoid_range": "minmax", "mul_range": "minmax"})
    mp = pytest.MonkeyPatch()
    mp.setattr(ortb, "silu_grid_ranges", spy)
    try:
        grid = build_artifact("onnxruntime", tiny_model, out / "grids", HW, calib, dict(GRIDS))
    finally:
        mp.undo()
    return {"minmax": mm, "grids": grid, "chosen": chosen}


def q_grids(path) -> dict[str, tuple[float, int]]:
    """tensor -> (scale, zero point) of its per-tensor activation QuantizeLinear."""
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    return {n.input[0]: (float(inits[n.input[1]].reshape(-1)[0]), int(inits[n.input[2]].reshape(-1)[0]))
            for n in g.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits and inits[n.input[1]].size == 1}


def test_silu_units_cover_every_conv_silu(fp32):
    import onnx

    m = onnx.load(str(fp32))
    units = sg.silu_units(m)
    n_sigmoid_after_conv = sum(1 for n in m.graph.node if n.op_type == "Sigmoid" and n.input[0].endswith("Conv_output_0"))
    assert len(units) == n_sigmoid_after_conv > 10
    assert len({u.preact for u in units}) == len(units)


def test_chosen_grids_land_in_the_q_nodes(built, fp32):
    import onnx

    chosen, mm, grid = built["chosen"], q_grids(built["minmax"]), q_grids(built["grids"])
    units = sg.silu_units(onnx.load(str(fp32)))
    assert {t for u in units for t in (u.preact, u.sigmoid, u.mul)} == set(chosen)
    for t, (lo, hi) in chosen.items():
        s, z = sr.uint8_grid(lo, hi)
        assert grid[t][0] == pytest.approx(float(s), rel=1e-5) and grid[t][1] == int(z), t
    moved = [u.preact for u in units if abs(grid[u.preact][0] - mm[u.preact][0]) > 1e-3 * mm[u.preact][0]]
    assert len(moved) > len(units) // 2, "the SiLU-aware ranges left most pre-activation grids at MinMax's"
    assert all(grid[u.preact][0] <= mm[u.preact][0] * (1 + 1e-5) for u in units), "a chosen grid is coarser than MinMax's"
    m = onnx.load(str(fp32))
    shared = {n.output[0] for n in m.graph.node if n.op_type in ("MaxPool", "Resize")}  # ORT gives them their input's grid
    others = [t for t in mm if t not in chosen and t not in shared]
    assert others and all(grid[t] == pytest.approx(mm[t]) for t in others), "a tensor outside the SiLU units moved"


def test_grid_build_agrees_with_torch(tiny_model, built, tmp_path):
    ev = load_calibration(write_synth_images(tmp_path / "eval", 3, HW, seed=1, prefix="eval"), n=3, img_size_hw=HW, seed=None)
    batch = np.concatenate(ev.arrays(), 0)
    C.check_int8_agrees(TorchRunner(tiny_model)(batch), load_runner("onnxruntime", built["grids"])(batch))


def fused_op_counts(path, tmp_path) -> dict[str, int]:
    """op type -> count in ONNX Runtime's optimised graph of ``path`` (what the CPU provider runs)."""
    import onnx
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = str(tmp_path / f"{path.parent.name}.opt.onnx")
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    counts: dict[str, int] = {}
    for n in onnx.load(so.optimized_model_filepath).graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts


def test_every_quantized_conv_still_fuses_to_qlinearconv(built, fp32, tmp_path):
    import onnx

    n_head_convs = len(ortb.head_conv_nodes(ortb.name_nodes(onnx.load(str(fp32)))))
    n_convs = sum(1 for n in onnx.load(str(fp32)).graph.node if n.op_type == "Conv")
    mm, grid = fused_op_counts(built["minmax"], tmp_path), fused_op_counts(built["grids"], tmp_path)
    assert grid.get("QLinearConv", 0) == mm.get("QLinearConv", 0) == n_convs - n_head_convs
    assert grid == mm  # the same kernels, only scales and zero points differ


def test_zero_floor_is_where_silu_rounds_to_zero():
    for step in (0.05, 0.03, 0.01):
        floor = sr.zero_floor(step)
        assert floor < sr.SILU_ARGMIN
        below = np.linspace(floor, -60.0, 5000)
        m = below * sr.fake_quant(sr.sigmoid(below), 0.0, 1.0)
        assert np.all(np.abs(m) <= sr.ZERO_MARGIN * step / 2)
        just_above = floor + 0.01  # the highest such x, to the search's resolution
        assert abs(just_above * sr.fake_quant(sr.sigmoid(just_above), 0.0, 1.0)) > sr.ZERO_MARGIN * step / 2
    assert sr.zero_floor(0.05) < -6.2  # sigmoid(x) only rounds to 0 below ~-6.2: SiLU alone would allow -5.6


def unit_output(x, x_range, mul_range):
    """What the quantized Conv-SiLU hands the next layer for pre-activations ``x``."""
    m, _ = sr.unit_outputs(x, x_range, (0.0, 1.0))
    return sr.fake_quant(m, *mul_range)


def test_silu_zero_clips_only_what_reaches_the_next_layer_as_zero():
    """silu_mse clips the tail to SiLU(lo) ~ -0.07, which the Mul grid keeps non-zero: a same-sign error on
    every tail element (a bias). silu_zero's lower end keeps every clipped element at exactly 0, as MinMax
    does, and still narrows the grid."""
    x = tailed_preactivations()
    centers, counts = histogram(x)
    s = sr.silu(x)
    mul_range = (s.min(), s.max())
    floor = sr.zero_floor(float(sr.uint8_grid(*mul_range)[0]), (0.0, 1.0))
    mse = sr.silu_preact_range(centers, counts)
    zero = sr.silu_preact_range(centers, counts, lo_max=floor)
    assert x.min() < zero[0] <= floor < mse[0]
    tail = x < floor - 0.5  # half a unit below: MinMax's coarse grid rounds nothing here up past the floor
    assert np.all(unit_output(x[tail], (x.min(), x.max()), mul_range) == 0)  # MinMax: the tail leaves as 0
    assert np.all(unit_output(x[x < zero[0]], zero, mul_range) == 0)
    assert np.mean(unit_output(x[tail], mse, mul_range) != 0) > 0.5
    assert post_silu_mse(x, *zero) < post_silu_mse(x, x.min(), x.max())


def test_reachable_mul_range_is_what_the_unit_can_output():
    """After the Conv output's upper end is clipped, the unit's Mul cannot exceed ~SiLU(hi): the reachable
    range ends there (MinMax would span the float SiLU's max) and clips nothing the unit outputs."""
    x = tailed_preactivations()
    centers, counts = histogram(x)
    x_range = sr.silu_preact_range(centers, counts, lo_max=sr.zero_floor(0.03))
    assert x_range[1] < x.max() - 0.3  # the test needs a clipped upper end
    lo, hi = sr.reachable_mul_range(centers, counts, x_range, (0.0, 1.0))
    m, _ = sr.unit_outputs(x, x_range, (0.0, 1.0))
    assert lo <= m.min() + 1e-9 and hi >= m.max() - 1e-9
    assert hi == pytest.approx(x_range[1], rel=0.01) and hi < sr.silu(x).max() - 0.3


def test_grids_fall_back_where_they_cannot_act():
    """Default grids give way to symmetric int8 activations and to a user's silu_floor; asked for, they are an error."""
    from yoloport.backends.onnxruntime_backend import DEFAULT_QCONFIG

    for user in ({"act_type": "int8"}, {"silu_floor": -6.0}):
        cfg = resolve_qconfig({**user, **{k: None for k in sg.GRID_CHOICES}})
        assert all(cfg[k] == "minmax" for k in sg.GRID_CHOICES), user
    with pytest.raises(YoloportError, match="act_type"):
        resolve_qconfig({"act_type": "int8", "preact_range": "silu_zero"})
    assert all(resolve_qconfig({})[k] == DEFAULT_QCONFIG[k] for k in sg.GRID_CHOICES)


def coarse_unit_preactivations(n: int = 1_000_000, seed: int = 0) -> np.ndarray:
    """A first-layer-like Conv output: N(0, 1) body, 0.2% spread over U(-30, 30) and two outliers at 80, so
    MinMax's Mul grid is coarse (step ~0.31: a high zero floor) and the chosen upper end narrows it."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, n)
    tail = rng.random(n) < 0.002
    x[tail] = rng.uniform(-30.0, 30.0, tail.sum())
    x[:2] = 80.0
    return x


@pytest.mark.parametrize("mul_range", ["reachable", "mse"])
def test_silu_zero_floor_follows_the_chosen_mul_grid(mul_range, monkeypatch):
    """With a chosen Mul grid, silu_zero's lower end must sit at or below the zero floor of *that* grid
    (finer than MinMax's here, so its floor is lower): the floor of MinMax's Mul step would let clipped
    pre-activations leave the unit further from 0 than the margin allows."""
    x = coarse_unit_preactivations()
    centers, counts = histogram(x)
    unit = sg.SiluUnit("x", "s", "m")
    monkeypatch.setattr(sg, "silu_units", lambda model: [unit])
    monkeypatch.setattr(sg, "tensor_histograms", lambda path, feeds, tensors, bins=sr.HIST_BINS: {"x": (centers, counts)})
    options = {"preact_range": "silu_zero", "sigmoid_range": "minmax", "mul_range": mul_range}
    chosen = sg.silu_grid_ranges("unused.onnx", None, lambda: [], options)
    s_range = (float(sr.sigmoid(centers[counts > 0].min())), float(sr.sigmoid(centers[counts > 0].max())))
    minmax_step = float(sr.uint8_grid(sr.silu(x).min(), sr.silu(x).max())[0])
    mul_step = float(sr.uint8_grid(*chosen["m"])[0])
    floor = sr.zero_floor(mul_step, s_range)
    assert floor < sr.zero_floor(minmax_step, s_range), "the case needs a chosen Mul grid with a lower floor"
    scale, zp = sr.uint8_grid(*chosen["x"])
    grid_lo = -float(zp) * float(scale)  # where the Conv output's grid clips
    assert chosen["x"][0] <= floor and grid_lo <= floor + 1e-9
    m, _ = sr.unit_outputs(np.array([grid_lo]), chosen["x"], s_range)  # a clipped element, as the unit computes it
    assert abs(float(m[0])) <= sr.ZERO_MARGIN * mul_step / 2
    assert sr.fake_quant(m, *chosen["m"])[0] == 0.0


def test_silu_zero_floor_without_a_chosen_mul_grid_is_minmaxs():
    """The default (Mul grid on MinMax): one search, with the floor of MinMax's Mul step, as before the fix."""
    x = coarse_unit_preactivations()
    centers, counts = histogram(x)
    s_range = (float(sr.sigmoid(centers[counts > 0].min())), float(sr.sigmoid(centers[counts > 0].max())))
    s_obs = sr.silu(centers[counts > 0])
    floor = sr.zero_floor(float(sr.uint8_grid(s_obs.min(), s_obs.max())[0]), s_range)
    chosen = sr.unit_grid_ranges(centers, counts, {"preact_range": "silu_zero", "sigmoid_range": "minmax", "mul_range": "minmax"})
    assert set(chosen) == {"preact"}
    assert chosen["preact"] == sr.silu_preact_range(centers, counts, lo_max=floor)


def test_silu_zero_floor_settles_or_falls_back_to_the_sigmoids_zero():
    """A Mul range that narrows on every try: the floor falls with each finer step until it reaches the floor of
    a step of 0 (the rounded Sigmoid is 0 below it, so the unit outputs exactly 0 on any Mul grid), where it
    settles; given fewer tries than that, it takes that floor directly."""
    x = coarse_unit_preactivations()
    centers, counts = histogram(x)
    floor0 = sr.zero_floor(0.0, (0.0, 1.0))
    assert floor0 < -6.2
    for rounds in (sr.FLOOR_ROUNDS, 2):
        tries = []

        def narrowing(x_range):
            tries.append(x_range)
            return (-0.28, 80.0 / 2 ** len(tries))

        lo, hi = sr.zero_preact_range(centers, counts, (0.0, 1.0), narrowing, rounds=rounds)
        assert 2 <= len(tries) <= rounds
        assert lo <= floor0
        m, _ = sr.unit_outputs(np.array([lo, lo - 5.0]), (lo, hi), (0.0, 1.0))
        assert np.all(m == 0)
