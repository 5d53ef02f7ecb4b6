"""benchmarks/bench_build_noise.py: the one-ulp nudge of activation scales it measures the drop under."""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from bench_build_noise import nudge, ulp_steps  # noqa: E402


def test_nudge_moves_each_scale_to_its_float32_neighbour_and_no_further():
    v = np.array([0.0371, 1.0 / 255.0, 2.5e-3, 0.125], dtype=np.float32)
    steps = np.array([1, -1, 0, 1])
    out = nudge(v, steps)
    assert out.dtype == np.float32
    assert out[0] > v[0] and out[1] < v[1] and out[2] == v[2] and out[3] > v[3]
    bits = out.view(np.int32) - v.view(np.int32)  # positive float32s: one ulp is one step of the bit pattern
    np.testing.assert_array_equal(bits, steps)


def test_ulp_steps_draw_every_direction():
    s = ulp_steps(3000, np.random.default_rng(0))
    assert set(np.unique(s)) == {-1, 0, 1}
    assert all(800 < np.count_nonzero(s == d) < 1200 for d in (-1, 0, 1))
