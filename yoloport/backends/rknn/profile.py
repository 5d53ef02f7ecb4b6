"""Per-layer NPU times from ``RKNN.eval_perf`` (a connected board only: the simulator has no timers)."""
from __future__ import annotations

from pathlib import Path

from ...errors import YoloportError
from ..base import RuntimeProfile, read_sidecar
from .options import NAME, check_platform
from .toolkit import ToolkitLog, _import_rknn, call, quiet


def parse_rknn_perf(text: str) -> list[tuple]:
    """rknn-toolkit2's ``eval_perf`` per-layer table (``perf_debug=True``) -> ``(name, op_type, target,
    us)``. Columns are found from the header line (``OpType``, ``Time(us)``/``TimeCost(us)``,
    ``FullName`` or ``Name``); lines that do not parse are skipped."""
    rows, cols = [], None
    for line in str(text).splitlines():
        parts = line.split()
        if not parts:
            continue
        if "OpType" in parts:
            cols = {c: i for i, c in enumerate(parts)}
            continue
        if cols is None or not parts[0].isdigit():
            continue
        t_col = next((cols[c] for c in cols if c.lower().startswith(("time", "timecost"))), None)
        name_col = cols.get("FullName", cols.get("Name"))
        try:
            op = parts[cols["OpType"]]
            us = float(parts[t_col]) if t_col is not None else float("nan")
        except (IndexError, ValueError):
            continue
        name = parts[name_col] if name_col is not None and name_col < len(parts) else f"{op}_{parts[0]}"
        target = parts[cols["Target"]] if "Target" in cols and cols["Target"] < len(parts) else ""
        rows.append((name, op, target, us))
    return rows


def profile_run(artifact, images=None, runs: int = 1, threads: int | None = None, warmup: int = 0, target: str | None = None,
                device_id: str | None = None, **_other_backends_options) -> RuntimeProfile:
    """Per-layer times from ``RKNN.eval_perf`` on a connected board (``target='rk3588'``, ...).

    The simulator has no NPU timers: without ``target`` this is a YoloportError saying so."""
    if not target:
        raise YoloportError(
            "rknn profiling reads the NPU's own timers (RKNN.eval_perf) and needs a connected board: "
            "no board is connected here (the toolkit's simulator has no timings); connect one over adb and pass --target rk3588"
        )
    artifact = Path(artifact)
    read_sidecar(artifact, expect_backend=NAME)
    RKNN = _import_rknn()
    log = ToolkitLog()
    with quiet(log):
        rk = RKNN(verbose=False)
    try:
        call("load_rknn", rk.load_rknn, str(artifact), log=log)
        call("init_runtime", rk.init_runtime, log=log, target=check_platform(target), device_id=device_id, perf_debug=True)
        with quiet(log):
            res = rk.eval_perf(is_print=False)
    finally:
        with quiet(log):
            rk.release()
    text = res if isinstance(res, str) else str(res)
    nodes = [(n, op, op, us, tgt) for n, op, tgt, us in parse_rknn_perf(text)]
    if not nodes:
        raise YoloportError("RKNN.eval_perf returned no per-layer table (is the runtime recent enough for perf_debug?)")
    return RuntimeProfile(nodes, 1, 0, None, str(artifact), [f"board {target}, RKNN.eval_perf"])
