"""A backend that builds nothing (``BackendSpec.built_by``: it runs another backend's artifacts, as
rknn-lite runs the rknn backend's .rknn on a board) is refused as a port target when the targets are
parsed, naming the target that builds its artifact; nothing is written."""
from __future__ import annotations

import pytest

from yoloport.analysis.port import parse_targets
from yoloport.backends.registry import BACKENDS, get_spec
from yoloport.errors import YoloportError


def _runtime_only_backends() -> list[str]:
    names = []
    for name in BACKENDS:
        try:
            spec = get_spec(name)
        except ImportError:
            continue
        if spec.built_by:
            names.append(name)
    return names


RUNTIME_ONLY = _runtime_only_backends()


def test_there_is_a_runtime_only_backend_to_refuse():
    assert RUNTIME_ONLY, "no backend declares built_by: this file tests nothing"


@pytest.mark.parametrize("name", RUNTIME_ONLY)
def test_a_runtime_only_backend_is_refused_naming_its_builder(name):
    builder = get_spec(name).built_by
    with pytest.raises(YoloportError, match=f"cannot be a port target; use --targets {builder} "):
        parse_targets(f"onnxruntime,{name}")


def test_the_suggested_target_keeps_the_options_given():
    with pytest.raises(YoloportError, match=r"use --targets rknn:rk3568:fp16 \(rknn-lite runs the rknn backend's "
                                            r"artifact on the board\)"):
        parse_targets("rknn-lite:rk3568:fp16")
    assert parse_targets("rknn:rk3568:fp16")[0].name == "rknn-rk3568-fp16"  # and that suggestion parses


def test_port_refuses_it_in_one_line_before_any_work(tmp_path, monkeypatch, capsys):
    from yoloport.cli import main

    monkeypatch.chdir(tmp_path)
    rc = main(["port", "--weights", "yolov5n", "--targets", "onnxruntime,rknn-lite", "--project", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert rc != 0
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "use --targets rknn" in err
    assert list(tmp_path.iterdir()) == []  # no run folder, no report, no artifact
