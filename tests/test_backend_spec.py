"""What a backend *is* is declared once (``SPEC``) and read by everyone: unknown qconfig keys are
refused for every backend, the float scope is one type, and the rooms keep their layers."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from yoloport.backends.registry import ARTIFACT_BACKENDS, BACKENDS, check_qconfig, get_spec
from yoloport.errors import YoloportError
from yoloport.quant.float_scope import FloatScope, scope_from_qconfig

PACKAGE = Path(__file__).resolve().parent.parent / "yoloport"


def _spec_or_skip(name):
    try:
        return get_spec(name)
    except ImportError as e:  # DependencyMissing is an ImportError too
        pytest.skip(f"{name}'s runtime is not installed: {e}")


@pytest.mark.parametrize("backend", ARTIFACT_BACKENDS)
def test_unknown_qconfig_key_is_refused_naming_the_accepted_keys(backend):
    spec = _spec_or_skip(backend)
    with pytest.raises(YoloportError) as e:
        check_qconfig(backend, {"precision": "fp32", "no_such_option": 1})
    msg = str(e.value)
    assert "no_such_option" in msg and "unknown qconfig key" in msg
    for key in spec.accepted_keys:
        assert key in msg, (key, msg)
    check_qconfig(backend, {"precision": "fp32", **{k: v for k, v in spec.qconfig_defaults.items() if v is not None}})


@pytest.mark.parametrize("backend", ARTIFACT_BACKENDS)
def test_another_backends_key_is_refused(backend):
    """A key of another backend (``platform`` is RKNN's, ``preset`` OpenVINO's) is no silent no-op."""
    spec = _spec_or_skip(backend)
    foreign = next(k for k in ("platform", "preset", "act_type", "use_avg") if k not in spec.accepted_keys)
    with pytest.raises(YoloportError, match="unknown qconfig key"):
        check_qconfig(backend, {foreign: "x"})


def test_quantize_cli_refuses_a_key_its_backend_does_not_take(tmp_path, capsys):
    from yoloport.cli import main

    rc = main(["quantize", "--backend", "onnxruntime", "--platform", "rk3588", "--precision", "fp32",
               "--out", str(tmp_path / "q")])
    err = capsys.readouterr().err
    assert rc != 0 and "platform" in err and "act_type" in err and "Traceback" not in err
    assert not (tmp_path / "q").exists()  # refused before any work


def test_every_registered_backend_declares_a_consistent_spec():
    from yoloport.deploy.op_support import TARGETS

    for name in BACKENDS:
        spec = _spec_or_skip(name)
        assert spec.name == name
        assert spec.lint_target is None or spec.lint_target in TARGETS
        assert set(spec.port_qconfig) <= set(spec.accepted_keys), name
        assert set(spec.target_defaults) <= set(spec.accepted_keys), name
        assert spec.has_artifact == (name in ARTIFACT_BACKENDS)


def test_float_scope_folds_the_user_keys():
    s = scope_from_qconfig({"exclude": "a,b", "head_fp32": "none", "float_scope": {"layers": ["model.1.conv"]}}, "convs")
    assert s == FloatScope(layers=("model.1.conv",), nodes=("a", "b"), head="none")
    assert scope_from_qconfig({}, "convs").head == "convs"
    assert FloatScope.from_any(s.to_dict()) == s
    with pytest.raises(YoloportError, match="unknown field"):
        FloatScope.from_any({"layer": ["x"]})
    with pytest.raises(YoloportError, match="head_fp32"):
        FloatScope(head="all")


# ----------------------------------------------------------------------------- the rooms

BACKEND_NAMES = ("rknn", "openvino", "onnxruntime", "mlu-sim", "mlu_sim", "torch")
COMPARISON = re.compile(r"""(==|!=|\bin\s*[\(\[\{])\s*[^#\n]*?["'](%s)["']""" % "|".join(map(re.escape, BACKEND_NAMES)))


def _sources(exclude_dir: str | None = None):
    for f in sorted(PACKAGE.rglob("*.py")):
        rel = f.relative_to(PACKAGE).as_posix()
        if exclude_dir and rel.startswith(exclude_dir + "/"):
            continue
        yield rel, f.read_text()


def test_no_backend_name_comparisons_outside_backends():
    """Facts about backends are read from their spec, not from ``backend == "rknn"`` tests."""
    hits = [f"{rel}:{i}: {line.strip()}" for rel, text in _sources("backends")
            for i, line in enumerate(text.splitlines(), 1) if COMPARISON.search(line)]
    assert not hits, "\n".join(hits)


def test_the_comparison_check_can_fail():
    assert COMPARISON.search('if backend == "rknn":') and COMPARISON.search("if b in ('onnxruntime', 'x'):")
    assert not COMPARISON.search('REFERENCE = "torch"')


# lower layers first; a module may import its own layer and those below it, never one above
LAYERS = [
    {"errors", "_version", "fixtures", "ops", "quant/error", "quant/float_scope"},
    {"nn", "quant/fake_quant", "quant/silu_ranges", "io", "config", "data"},
    {"deploy", "quant/ranking", "models", "quant/layers", "quant/bias_correction", "quant/adaround",
     "quant/equalization", "quant/recipe", "quant/calib_stats"},
    {"engine"},
    {"backends"},
    {"analysis"},
    {"commands", "api", "cli", "__init__", "__main__"},
]


def _layer_of(rel: str) -> int | None:
    parts = rel[:-3].split("/")
    for key in ("/".join(parts[:2]), parts[0]):
        for i, layer in enumerate(LAYERS):
            if key in layer:
                return i
    return None


def _imported_modules(rel: str, text: str):
    pkg = rel.split("/")[:-1]
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = pkg[: len(pkg) - (node.level - 1)] if node.level > 1 else pkg
            target = base + (node.module.split(".") if node.module else [])
            names = [target + [a.name] for a in node.names] if not node.module else [target]
            for t in names:
                yield "/".join(t)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("yoloport."):
            yield "/".join(node.module.split(".")[1:])


def test_no_import_runs_up_the_layers():
    bad = []
    for rel, text in _sources():
        mine = _layer_of(rel)
        if mine is None:
            continue
        for target in _imported_modules(rel, text):
            theirs = _layer_of(target + ".py") if target else None
            if theirs is not None and theirs > mine:
                bad.append(f"{rel} (layer {mine}) imports {target} (layer {theirs})")
    assert not bad, "\n".join(bad)
