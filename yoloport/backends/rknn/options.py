"""RKNN build options: platforms, quantized dtypes and the qconfig, checked before anything runs."""
from __future__ import annotations

from ...errors import YoloportError
from ...quant.float_scope import scope_from_qconfig

NAME = "rknn"
ARTIFACT_NAME = "model.rknn"

# Platforms rknn-toolkit2 2.x compiles for (2.5's list, without the rk2118 audio DSP).
PLATFORMS = ("rk3588", "rk3576", "rk3568", "rk3566", "rk3562", "rv1106", "rv1106b", "rv1103", "rv1103b", "rv1126b")
# First-generation NPUs: rknn-toolkit 1.x (a different package, not supported here).
LEGACY_PLATFORMS = ("rk1808", "rv1109", "rv1126", "rk3399pro")
QUANTIZED_DTYPES = ("w8a8", "w8a16", "w16a16i_dfp", "w4a16")
# rknn-toolkit 1.x names people carry over -> the 2.x name (None: no 2.x equivalent).
LEGACY_DTYPES = {
    "asymmetric_quantized-8": "w8a8",
    "asymmetric_quantized-u8": "w8a8",
    "dynamic_fixed_point-8": "w8a8",
    "dynamic_fixed_point-i8": "w8a8",
    "dynamic_fixed_point-16": "w16a16i_dfp",
    "dynamic_fixed_point-i16": "w16a16i_dfp",
}
ALGORITHMS = ("normal", "mmse", "kl_divergence")
METHODS = ("channel", "layer")
HYBRID_DTYPES = ("float16", "int16", "int8")

DEFAULT_QCONFIG = {
    "platform": "rk3588",
    "quantized_dtype": "w8a8",
    "quantized_algorithm": "normal",
    "quantized_method": "channel",
    "optimization_level": 3,
    "hybrid": {},  # tensor name / layer prefix -> float16 | int16 | int8
    "target_platform": None,  # rknn-toolkit2's own name for ``platform``
    "ptq": (),  # PTQ steps applied to the float model before export (yoloport.quant.recipe.STEPS)
    "ptq_options": None,  # per-step keyword arguments, e.g. {"adaround": {"iters": 100}}
}
DEFAULT_HEAD_FP32 = "tail"  # int8: keep the head's arithmetic after the Detect convs in float16


def check_batch(value) -> int:
    """A build's ``batch``: the images one ``inference`` call of the ``.rknn`` takes (rknn-toolkit2's
    ``rknn_batch_size``), a whole number >= 1 (None: 1); anything else is a YoloportError."""
    import numbers

    if value is None:
        return 1
    whole = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if isinstance(value, str) and value.strip().isdigit():
        value, whole = int(value.strip()), True
    if not whole or int(value) < 1:
        raise YoloportError(f"RKNN batch must be a whole number of images, 1 or more, got {value!r}")
    return int(value)


def check_platform(name) -> str:
    """A ``--platform`` value -> the toolkit's platform name, or a YoloportError naming the choices."""
    p = str(name or "").strip().lower()
    if p in PLATFORMS:
        return p
    if p in LEGACY_PLATFORMS:
        raise YoloportError(
            f"RKNN platform {name!r} is a first-generation NPU ({', '.join(LEGACY_PLATFORMS)}): it needs the "
            f"older rknn-toolkit 1.x, which yoloport does not drive; rknn-toolkit2 supports {', '.join(PLATFORMS)}"
        )
    raise YoloportError(
        f"unknown RKNN platform {name!r}; rknn-toolkit2 supports: {', '.join(PLATFORMS)} "
        f"({', '.join(LEGACY_PLATFORMS)} need the older rknn-toolkit 1.x)"
    )


def _choice(value, choices, what: str) -> str:
    v = str(value).strip().lower()
    if v not in choices:
        raise YoloportError(f"unknown RKNN {what} {value!r}; choose one of: {', '.join(choices)}")
    return v


def check_quantized_dtype(value) -> str:
    """``w8a8`` etc.; rknn-toolkit 1.x names (``asymmetric_quantized-8``) get a message with the 2.x name."""
    v = str(value).strip().lower()
    if v in LEGACY_DTYPES:
        raise YoloportError(
            f"quantized_dtype {value!r} is an rknn-toolkit 1.x name; rknn-toolkit2 calls it "
            f"{LEGACY_DTYPES[v]!r} (choices: {', '.join(QUANTIZED_DTYPES)})"
        )
    return _choice(v, QUANTIZED_DTYPES, "quantized_dtype")


def _hybrid_dict(hybrid) -> dict:
    """``{'name': 'float16'}``, ``['name', ...]`` (float16) or ``'a,b:int16'`` -> ``{name: dtype}``."""
    if not hybrid:
        return {}
    if isinstance(hybrid, str):
        hybrid = [h for h in hybrid.split(",") if h.strip()]
    if isinstance(hybrid, (list, tuple)):
        out = {}
        for item in hybrid:
            name, sep, dt = str(item).strip().rpartition(":")
            if not sep or dt not in HYBRID_DTYPES:
                name, dt = str(item).strip(), "float16"
            out[name] = dt
        hybrid = out
    if not isinstance(hybrid, dict):
        raise YoloportError(f"RKNN hybrid layers must be a dict name -> dtype or a list of names, got {type(hybrid).__name__}")
    return {str(k): _choice(v, HYBRID_DTYPES, f"hybrid dtype for {k!r}") for k, v in hybrid.items()}


def resolve_qconfig(qconfig: dict | None, calibrated: bool) -> dict:
    """Validate the RKNN keys of ``qconfig`` (``platform``/``target_platform``, ``quantized_dtype``,
    ``quantized_algorithm``, ``quantized_method``, ``optimization_level``, ``hybrid``, ``head_fp32``,
    ``exclude``, ``precision``, ``batch``) and fill defaults. Returns a new dict; ``do_quantization`` is True when
    ``precision`` is ``int8`` (default: when calibration is given)."""
    q = dict(qconfig or {})
    out = dict(DEFAULT_QCONFIG)
    out.update({k: v for k, v in q.items() if v is not None})
    out["platform"] = check_platform(q.get("platform") or q.get("target_platform") or DEFAULT_QCONFIG["platform"])
    out.pop("target_platform", None)
    precision = str(q.get("precision") or ("int8" if calibrated else "fp16")).lower()
    if precision not in ("int8", "fp16", "fp32"):
        raise YoloportError(f"RKNN precision {precision!r}: choose int8 (quantized) or fp16 (float; fp32 means fp16 on RKNN)")
    out["precision"] = precision
    out["do_quantization"] = precision == "int8"
    out["quantized_dtype"] = check_quantized_dtype(out["quantized_dtype"])
    out["quantized_algorithm"] = _choice(out["quantized_algorithm"], ALGORITHMS, "quantized_algorithm")
    out["quantized_method"] = _choice(out["quantized_method"], METHODS, "quantized_method")
    try:
        level = int(out["optimization_level"])
    except (TypeError, ValueError):
        level = -1
    if level not in (0, 1, 2, 3):
        raise YoloportError(f"RKNN optimization_level must be 0..3, got {out['optimization_level']!r}")
    out["optimization_level"] = level
    out["hybrid"] = _hybrid_dict(out.get("hybrid"))
    out["batch"] = check_batch(q.get("batch"))
    scope = scope_from_qconfig(out, DEFAULT_HEAD_FP32)
    out.update(float_scope=scope.to_dict(), head_fp32=scope.head, exclude=list(scope.nodes))
    return out


def config_kwargs(q: dict) -> dict:
    """Keyword arguments of ``RKNN.config`` for a resolved qconfig (normalisation in the model)."""
    return {
        "mean_values": [[0, 0, 0]],
        "std_values": [[255, 255, 255]],
        "target_platform": q["platform"],
        "quantized_dtype": q["quantized_dtype"],
        "quantized_algorithm": q["quantized_algorithm"],
        "quantized_method": q["quantized_method"],
        "optimization_level": q["optimization_level"],
    }
