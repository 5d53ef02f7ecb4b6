"""Sensitivity-guided mixed precision: build and validate real backend artifacts with layers kept in float.

The backend's artifact is built again with
layers kept in float and each build validated on a labelled data set (mAP@0.5:0.95 against the
torch fp32 reference on the same data). Two strategies: ``greedy`` (the default,
:func:`greedy_precision_loop`) walks the ranking worst first and keeps a layer in float only if the
measured mAP rises with it beyond the selection images' noise (:func:`gain_beats_noise`, a paired
bootstrap at ``keep_confidence``), until the drop is at most ``max_drop`` points; ``prefix``
(:func:`mixed_precision_loop`) keeps the worst ``K`` for ``K`` = 0, 1, 2, 4, 8, ... and stops at the
first ``K`` that meets the target. Greedy exists because single-layer errors do not add up: on
onnxruntime, keeping only ``model.1.conv``'s weights in float *lowered* the output SQNR of the
otherwise int8 yolov5n (21.3 -> 19.8 dB; 20.6 dB with graph optimisations off, so not a kernel
effect; every activation's QDQ scale was identical in both graphs), and on COCO128 one more float
layer moved the prefix search from 0.62 to 1.57 points. The cause is not understood; the search
measures instead of trusting the ranking. How each backend keeps a
layer in float (:func:`float_layers_qconfig`): onnxruntime ``nodes_to_exclude`` (the ONNX Conv
node and its activation nodes), OpenVINO NNCF ``IgnoredScope`` (the IR keeps the ONNX names: ``<node>/WithoutBiases`` and the
bias ``Add`` ``<node>``), RKNN hybrid quantization (the conv's input and output tensors in ``float16``
or ``int16``), mlu-sim ``exclude`` (torch module names). Layers a backend keeps in float anyway (the
Detect convolutions with ``head_fp32='convs'``, onnxruntime's default) are skipped. Note that on
onnxruntime the layer's input still passes through the QuantizeLinear/DequantizeLinear pair its
producer gives it (a quantized op consumes it too), as does its activation's output when the next
op is quantized.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..engine.val import validate_runner  # module attribute: tests replace it to make the search deterministic
from ..errors import YoloportError
from .bootstrap import reference_not_judgeable
from ..quant.float_scope import FloatScope
from ..quant.ranking import detect_index, named_convs


def ranking_scheme(backend: str | None, qconfig: dict | None = None) -> tuple[str, bool, bool]:
    """``(activation scheme, per-channel weights, Detect outputs quantized)`` a ranking for ``backend``
    should emulate, from its spec (``qconfig`` may change the weights' granularity); no backend:
    asymmetric activations, per-channel weights, outputs not quantized."""
    if not backend:
        return "asymmetric", bool((qconfig or {}).get("per_channel", True)), False
    from ..backends.registry import get_spec

    spec = get_spec(backend)
    return spec.act_scheme, spec.weights_per_channel(qconfig), spec.quantizes_outputs


def backend_float_anyway(backend: str, model, qconfig: dict | None) -> set[str]:
    """Layers ``backend`` keeps in float with ``qconfig`` whatever the search asks: the Detect
    convolutions when its ``head_fp32`` is ``convs`` (onnxruntime's default)."""
    from ..backends.registry import get_spec

    if get_spec(backend).head_fp32(qconfig) != "convs":
        return set()
    prefix = f"model.{detect_index(model)}.m."
    return {n for n, _ in named_convs(model) if n.startswith(prefix)}


def k_schedule(max_float: int, n_candidates: int) -> list[int]:
    """``0, 1, 2, 4, 8, ...`` up to ``min(max_float, n_candidates)``, which is always the last step."""
    if max_float < 0:
        raise YoloportError(f"--max-float must be >= 0, got {max_float}")
    cap = min(int(max_float), int(n_candidates))
    ks, k = [0], 1
    while k < cap:
        ks.append(k)
        k *= 2
    if cap > 0 and ks[-1] != cap:
        ks.append(cap)
    return ks


@dataclass
class MixedStep:
    k: int
    layers: list[str]
    mAP50_95: float
    drop: float  # points (x100) below the reference
    artifact: str | None = None
    seconds: float = 0.0
    backend_config: dict = field(default_factory=dict)
    kept: bool | None = None  # greedy: whether the step's last layer stayed in float (None: prefix, or K=0)
    gain_ci: dict | None = None  # greedy with image stats: the gain over the best so far, points, with its interval


@dataclass
class _Measured:
    """A step and the per-image statistics its evaluation returned (None when ``evaluate`` gives none)."""
    step: MixedStep
    image_stats: list | None = None


def drop_points(ref_map: float, value: float) -> float:
    """mAP drop in points: ``(ref - value) * 100`` (mAP given as fractions)."""
    return round((float(ref_map) - float(value)) * 100.0, 4)


STRATEGIES = ("greedy", "prefix")


def _measure(layers: list[str], evaluate, ref_map: float, log) -> _Measured:
    """Run ``evaluate(layers)``: ``(mAP50_95, artifact, backend_config)`` or, with per-image statistics
    for the noise-aware keep rule, ``(mAP50_95, artifact, backend_config, image_stats)``."""
    t0 = time.perf_counter()
    out = tuple(evaluate(list(layers)))
    value, artifact, cfg = out[:3]
    stats = out[3] if len(out) > 3 else None
    step = MixedStep(len(layers), list(layers), float(value), drop_points(ref_map, value), str(artifact) if artifact else None,
                     round(time.perf_counter() - t0, 2), dict(cfg or {}))
    if log:
        log(f"K={step.k:<3d} mAP50-95 {step.mAP50_95:.4f}  drop {step.drop:+.2f} points  ({step.seconds:.0f} s)")
    return _Measured(step, stats)


def gain_beats_noise(best_stats: list, trial_stats: list, confidence: float, n_boot: int = 500) -> tuple[bool, dict]:
    """Whether the trial's mAP@0.5:0.95 gain over the best so far holds beyond image-sampling noise.

    The gain is the paired-bootstrap drop of ``trial`` against ``best`` with its sign turned (points,
    positive = the trial is better), resampling the selection images (:func:`paired_bootstrap_drop`
    at ``confidence``). It holds when the whole interval lies above 0 (``low > 0``): with
    ``confidence`` 0.8 the gain is positive in at least 90% of resamples. Returns ``(holds, {gain,
    low, high, confidence})``. Why: on 81 selection images single steps of 0.05-0.3 points were noise,
    and a search that kept every rise chose layers that hurt on unseen images (issue 11, session 5).
    """
    from .bootstrap import paired_bootstrap_drop

    ci = paired_bootstrap_drop(best_stats, trial_stats, n_boot=n_boot, confidence=confidence)
    gain = {"gain": -ci["drop"], "low": -ci["high"], "high": -ci["low"], "confidence": float(confidence)}
    return gain["low"] > 0.0, gain


def _loop_result(ref_map, max_drop, max_float, met, done: list[MixedStep], final: MixedStep, strategy: str) -> dict:
    return {
        "reference_mAP50_95": float(ref_map),
        "max_drop": float(max_drop),
        "max_float": int(max_float),
        "strategy": strategy,
        "met": met,
        "steps": [asdict(s) for s in done],
        "final": asdict(final),
    }


def _resolve(candidates) -> list[str]:
    """The candidate layers, calling ``candidates`` first when it is a callable (a lazy ranking)."""
    return list(candidates() if callable(candidates) else candidates)


def _check_max_drop(max_drop) -> None:
    if max_drop is None or not max_drop >= 0:
        raise YoloportError(f"--max-drop must be >= 0 points, got {max_drop}")


def mixed_precision_loop(candidates: Sequence[str], evaluate: Callable[[list[str]], tuple[float, str | None, dict]],
                         ref_map: float, max_drop: float = 0.5, max_float: int = 16,
                         log: Callable[[str], None] | None = None, steps: Sequence[int] | None = None) -> dict:
    """The ``prefix`` strategy: keep the first ``K`` of ``candidates`` (worst first) in float for
    ``K`` in :func:`k_schedule` until the mAP drop is at most ``max_drop`` points (``steps``:
    explicit K values instead, each capped at ``max_float`` and the number of candidates).

    ``evaluate(layers) -> (mAP50_95, artifact, backend_config)``. Returns ``{steps, met, final,
    max_drop, max_float, reference_mAP50_95, strategy}``: ``final`` is the first step meeting the
    target, else the step with the smallest drop (fewest layers on ties).
    """
    _check_max_drop(max_drop)
    candidates = _resolve(candidates)
    cap = min(int(max_float), len(candidates))
    ks = k_schedule(max_float, len(candidates)) if steps is None else sorted({min(max(int(k), 0), cap) for k in steps})
    done: list[MixedStep] = []
    met = False
    for k in ks:
        done.append(_measure(list(candidates[:k]), evaluate, ref_map, log).step)
        if done[-1].drop <= max_drop:
            met = True
            break
    if not done:
        raise YoloportError("the mixed-precision search has no step to run")
    final = done[-1] if met else min(done, key=lambda s: (s.drop, s.k))
    return _loop_result(ref_map, max_drop, max_float, met, done, final, "prefix")


def greedy_precision_loop(candidates: Sequence[str], evaluate: Callable[[list[str]], tuple[float, str | None, dict]],
                          ref_map: float, max_drop: float = 0.5, max_float: int = 16, max_tries: int | None = None,
                          log: Callable[[str], None] | None = None, keep_confidence: float | None = None) -> dict:
    """The ``greedy`` strategy: walk ``candidates`` worst first and keep a layer in float only if
    the backend's measured mAP rises with it (over the best so far); stop once the drop is at most
    ``max_drop`` points, ``max_float`` layers are kept or ``max_tries`` candidates were tried
    (default ``2 * max_float``).

    ``keep_confidence`` (e.g. 0.8): a rise counts only when it holds beyond the selection images'
    sampling noise (:func:`gain_beats_noise`); ``evaluate`` must then return per-image statistics as
    a fourth element. None: any rise counts (the step's ``gain_ci`` stays None).

    Why not just the worst K: one layer's error alone does not add up across layers (rounding errors
    partly cancel), and on COCO128-sized sets one 1x1 convolution can move mAP50-95 by half a point
    either way, so a layer that measures no gain is dropped instead of carried. Same arguments and
    result as :func:`mixed_precision_loop`; each step also says whether its last layer was ``kept``.
    ``candidates`` may be a callable returning them, called only when the all-int8 build misses the
    target (a ranking is not computed for a backend that needs none).
    """
    _check_max_drop(max_drop)
    tries = 2 * int(max_float) if max_tries is None else int(max_tries)
    if tries < 0:
        raise YoloportError(f"--max-tries must be >= 0, got {max_tries}")
    if keep_confidence is not None and not 0 < float(keep_confidence) < 1:
        raise YoloportError(f"--keep-confidence must be in (0, 1), got {keep_confidence}")
    best = _measure([], evaluate, ref_map, log)
    done = [best.step]
    for cand in (_resolve(candidates)[:tries] if best.step.drop > max_drop else []):
        if best.step.drop <= max_drop or best.step.k >= int(max_float):
            break
        trial = _measure(best.step.layers + [cand], evaluate, ref_map, log)
        kept, why = _keep(best, trial, keep_confidence)
        trial.step.kept = kept
        done.append(trial.step)
        if log:
            log(f"      {cand}: {'kept in float' if kept else 'back to int8'} ({why})")
        if kept:
            best = trial
    return _loop_result(ref_map, max_drop, max_float, best.step.drop <= max_drop, done, best.step, "greedy")


def _keep(best: _Measured, trial: _Measured, keep_confidence: float | None) -> tuple[bool, str]:
    """Whether greedy keeps the trial's last layer in float, and the reason in words."""
    if not trial.step.mAP50_95 > best.step.mAP50_95:
        return False, "no gain"
    if keep_confidence is None:
        return True, "mAP rose"
    if best.image_stats is None or trial.image_stats is None:
        raise YoloportError("the noise-aware keep rule needs per-image statistics from every evaluation")
    holds, gain = gain_beats_noise(best.image_stats, trial.image_stats, float(keep_confidence))
    trial.step.gain_ci = gain
    span = f"gain {gain['gain']:+.2f} [{gain['low']:+.2f}, {gain['high']:+.2f}] at {gain['confidence']:.0%}"
    return holds, span if holds else f"{span}: within noise"


def search_mixed_precision(backend: str, model, ranking: Sequence[str], calibration, data, img_hw, out_dir,
                           max_drop: float = 0.5, max_float: int = 16, qconfig: dict | None = None,
                           float_dtype: str = "float16", ref_map: float | None = None, batch_size: int = 8,
                           threads: int | None = None, log: Callable[[str], None] | None = None,
                           steps: Sequence[int] | None = None, strategy: str = "greedy",
                           max_tries: int | None = None, export=None, report_data=None, n_boot: int = 1000,
                           keep_confidence: float | None = 0.8) -> dict:
    """Sensitivity-guided mixed precision on ``backend`` (see the module docstring).

    ``ranking``: layer names worst first (:meth:`SensitivityReport.names`), or a callable returning
    them (called only if the all-int8 build misses the target); ``data``: a data YAML
    validated with :func:`yoloport.engine.val.validate_runner` at the fixed ``img_hw``;
    ``ref_map``: the torch fp32 mAP50-95 on ``data`` (measured when None). ``strategy``:
    ``greedy`` (:func:`greedy_precision_loop`, ``max_tries``) or ``prefix``
    (:func:`mixed_precision_loop`, ``steps``). Each step's artifact is built in
    ``out_dir/step<NN>-k<K>`` from one fp32 ONNX: ``export`` (an ExportResult of
    :func:`yoloport.backends.registry.export_for` at ``img_hw``), else exported once into ``out_dir``.
    ``report_data``: the reporting set (disjoint from ``data``, the selection set the search decides on):
    the final artifact's drop is measured there with a paired-bootstrap interval (``result["reporting"]``).
    ``keep_confidence``: greedy keeps a layer only when its gain holds at this bootstrap confidence on the
    selection images (:func:`gain_beats_noise`; None: any rise, the behaviour before issue 11).
    """
    if strategy not in STRATEGIES:
        raise YoloportError(f"mixed-precision strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")
    from ..backends.registry import REFERENCE, build, canonical_name, export_for, load_runner, require_artifact_backend

    backend = canonical_name(backend)
    require_artifact_backend(backend, "search (it is the fp32 reference)")
    out_dir = Path(out_dir).resolve()  # absolute: the RKNN toolkit's hybrid steps run in another folder
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(model.names)
    if ref_map is None:
        ref_runner = load_runner(REFERENCE, model=model, threads=threads)
        ref_map = float(validate_runner(ref_runner, data, img_hw, batch_size, names=names)["mAP50_95"])
        if log:
            log(f"torch fp32 reference mAP50-95 {ref_map:.4f}")
    not_judged = reference_not_judgeable(ref_map, None, max_drop, images="selection")
    if not_judged:
        raise YoloportError(f"mixed precision: {not_judged}; no search can be judged against it")
    skip = backend_float_anyway(backend, model, qconfig)

    def candidates():
        return [n for n in (ranking() if callable(ranking) else ranking) if n not in skip]

    if export is None:  # once for every step
        export = export_for(backend, model, out_dir / "model.fp32.onnx", img_hw, mode="raw")
    base_q = dict(qconfig or {})
    base_scope = FloatScope.from_any(base_q.get("float_scope"))
    counter = itertools.count()

    def evaluate(layers):
        scope = FloatScope(layers=tuple(layers), dtype=float_dtype) if layers else FloatScope()
        q = {**base_q, "precision": "int8", "float_scope": base_scope.merged(scope)}
        step_dir = out_dir / f"step{next(counter):02d}-k{len(layers)}"
        art = build(backend, model, export, step_dir, calibration, q)
        runner = load_runner(backend, artifact=art, model=model, threads=threads, output="raw")
        try:
            res = validate_runner(runner, data, img_hw, batch_size, names=names, image_stats=True)
        finally:
            runner.close()
        return float(res["mAP50_95"]), art, ({"float_scope": scope.to_dict()} if layers else {}), res["image_stats"]

    if strategy == "greedy":
        result = greedy_precision_loop(candidates, evaluate, ref_map, max_drop, max_float, max_tries, log, keep_confidence)
    else:
        result = mixed_precision_loop(candidates, evaluate, ref_map, max_drop, max_float, log, steps)
    result.update(keep_confidence=keep_confidence if strategy == "greedy" else None)
    result.update(backend=backend, float_dtype=float_dtype, skipped_float_anyway=sorted(skip), onnx=str(export.path))
    if report_data is not None and result["final"]["artifact"]:
        result["reporting"] = report_final(backend, model, result["final"]["artifact"], report_data, img_hw, batch_size,
                                           threads, n_boot)
        if log:
            r = result["reporting"]
            log(f"reporting set ({r['n_images']} images): drop {r['drop_ci']['drop']:.2f} points, 95% interval "
                f"[{r['drop_ci']['low']:.2f}, {r['drop_ci']['high']:.2f}]")
    return result


def report_final(backend: str, model, artifact, data, img_hw, batch_size: int = 8, threads=None, n_boot: int = 1000) -> dict:
    """The chosen artifact and the torch fp32 reference validated on the reporting set ``data``:
    ``{n_images, reference_mAP50_95, mAP50_95, drop_ci}`` (:func:`~yoloport.analysis.bootstrap.paired_bootstrap_drop`)."""
    from ..backends.registry import REFERENCE, load_runner
    from .bootstrap import paired_bootstrap_drop

    names = list(model.names)
    results = []
    for b, kw in ((REFERENCE, {"model": model}), (backend, {"artifact": artifact, "model": model, "output": "raw"})):
        runner = load_runner(b, threads=threads, **kw)
        try:
            results.append(validate_runner(runner, data, img_hw, batch_size, names=names, image_stats=True))
        finally:
            runner.close()
    ref, q = results
    return {"n_images": ref["n_images"], "reference_mAP50_95": ref["mAP50_95"], "mAP50_95": q["mAP50_95"],
            "drop_ci": paired_bootstrap_drop(ref["image_stats"], q["image_stats"], n_boot=n_boot)}

# ----------------------------------------------------------------------------- table


def format_mixed(result: dict) -> str:
    """The mixed-precision steps as a text table plus the outcome line."""
    greedy = result.get("strategy") == "greedy"
    tried = [s["layers"][-1] if s["layers"] else "- (all int8)" for s in result["steps"]]  # greedy: the layer tried
    w = max(len(t) for t in tried + ["tried"])
    lines = [f"{'K':>3}  {'mAP50-95':>8}  {'drop':>6}  " + (f"{'tried':<{w}}  kept" if greedy else "float layers")]
    for s, t in zip(result["steps"], tried):
        if greedy:
            kept = {True: "yes", False: "no"}.get(s.get("kept"), "")
            lines.append(f"{s['k']:>3}  {s['mAP50_95']:>8.4f}  {s['drop']:>+6.2f}  {t:<{w}}  {kept}".rstrip())
            continue
        shown = ", ".join(s["layers"][:4]) + (f", ... (+{len(s['layers']) - 4})" if len(s["layers"]) > 4 else "")
        lines.append(f"{s['k']:>3}  {s['mAP50_95']:>8.4f}  {s['drop']:>+6.2f}  {shown or '-'}")
    f = result["final"]
    verdict = "met" if result["met"] else "NOT met"
    lines.append(f"target drop <= {result['max_drop']} points {verdict}: K={f['k']}, mAP50-95 {f['mAP50_95']:.4f} "
                 f"(fp32 {result['reference_mAP50_95']:.4f}, drop {f['drop']:.2f}), artifact {f['artifact']}")
    if f["layers"]:
        lines.append(f"kept in float: {', '.join(f['layers'])}")
    return "\n".join(lines)
