"""Check ONNX Runtime int8 artifacts against silu_zero's zero floor, unit by unit (issue 11).

For every Conv-SiLU unit (``yoloport.backends.onnxruntime_silu_grids.silu_units`` of the float graph) this reads
the three activation grids out of each int8 QDQ artifact (scale and zero point of the QuantizeLinear on the
Conv output ``x``, the Sigmoid output and the Mul output) and reports the units whose Conv-output grid starts
above ``zero_floor`` of the artifact's own Mul step: there a pre-activation clipped to the grid's lower end may
leave the unit further from 0 than ``ZERO_MARGIN`` half-steps of the Mul grid. The column ``leaves as`` is what the
quantized unit outputs at that lower end (0 or a Mul step). The artifact cannot tell whether calibration saw any
value below that end: a unit whose observed minimum is above the floor keeps its minimum and clips nothing, and
is listed too. With two artifacts it also lists the units whose Conv-output or Mul-output grids differ.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/check_ort_zero_floor.py --fp32 <model.onnxruntime.fp32.onnx> \\
        old=<int8.onnx> new=<int8.onnx>
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def activation_grids(path) -> dict[str, tuple[float, int]]:
    """tensor -> (scale, zero point) of its per-tensor activation QuantizeLinear in the QDQ graph at ``path``."""
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    return {n.input[0]: (float(inits[n.input[1]].reshape(-1)[0]), int(inits[n.input[2]].reshape(-1)[0]))
            for n in g.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits and inits[n.input[1]].size == 1}


def grid_range(scale: float, zero_point: int) -> tuple[float, float]:
    """The ``[lo, hi]`` a uint8 grid spans (``uint8_grid`` of it gives back the same scale and zero point)."""
    return -zero_point * scale, (255 - zero_point) * scale


def floor_check(unit, grids: dict) -> dict | None:
    """For one unit of an artifact: its Conv-output grid's lower end, the zero floor of its Mul step, and what
    the quantized unit outputs at that lower end (None when the unit is not quantized in the artifact)."""
    import numpy as np

    from yoloport.backends import onnxruntime_silu_grids as sg

    if not all(t in grids for t in (unit.preact, unit.sigmoid, unit.mul)):
        return None
    x_range, s_range, m_range = (grid_range(*grids[t]) for t in (unit.preact, unit.sigmoid, unit.mul))
    m, _ = sg.unit_outputs(np.array([x_range[0]]), x_range, s_range)
    return {"grid_lo": x_range[0], "floor": sg.zero_floor(grids[unit.mul][0], s_range), "mul_step": grids[unit.mul][0],
            "leaves_as": float(sg.fake_quant(m, *m_range)[0])}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fp32", required=True, help="the float ONNX graph the artifacts were quantized from")
    p.add_argument("artifacts", nargs="+", help="label=int8 QDQ ONNX (one or two)")
    a = p.parse_args(argv)
    if not all("=" in spec for spec in a.artifacts) or not 1 <= len(a.artifacts) <= 2:
        raise SystemExit("artifacts: one or two label=path arguments")
    arts = dict(spec.split("=", 1) for spec in a.artifacts)
    missing = [f for f in [a.fp32, *arts.values()] if not Path(f).is_file()]
    if missing:
        raise SystemExit(f"no such file: {', '.join(missing)}")
    import onnx

    from yoloport.backends.onnxruntime_silu_grids import silu_units

    units = silu_units(onnx.load(a.fp32))
    grids = {label: activation_grids(path) for label, path in arts.items()}
    for label, g in grids.items():
        flagged = 0
        for u in units:
            c = floor_check(u, g)
            if c is not None and c["grid_lo"] > c["floor"] + 1e-6:
                flagged += 1
                print(f"{label}: {u.preact}: grid lower end {c['grid_lo']:.3f} above floor {c['floor']:.3f} "
                      f"(Mul step {c['mul_step']:.4f}); leaves as {c['leaves_as']:+.4f}")
        print(f"{label}: {flagged} of {len(units)} units above their Mul grid's floor")
    if len(grids) == 2:
        (la, ga), (lb, gb) = grids.items()
        differ = [u for u in units if ga.get(u.preact) != gb.get(u.preact) or ga.get(u.mul) != gb.get(u.mul)]
        for u in differ:
            print(f"differs: {u.preact}: x {ga.get(u.preact)} -> {gb.get(u.preact)}, mul {ga.get(u.mul)} -> {gb.get(u.mul)}")
        print(f"{len(differ)} of {len(units)} units have other Conv-output or Mul-output grids in {lb} than in {la}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
