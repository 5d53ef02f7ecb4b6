"""A dynamic-batch artifact (sidecar ``batch: None``) is said to be one wherever its batch is printed:
``yoloport quantize``'s summary and a deploy folder's README (never ``None``)."""
from __future__ import annotations

from pathlib import Path

import pytest

from yoloport.backends.base import read_sidecar

HW = (64, 96)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """``{"dynamic": path, "fixed": path}``: fp32 ONNX Runtime artifacts, one exported with a dynamic
    batch axis, one with batch 1."""
    from conftest import signal_model

    from yoloport.backends.registry import build_artifact

    model = signal_model()
    return {
        "dynamic": build_artifact("onnxruntime", model, tmp_path_factory.mktemp("dyn"), HW,
                                  export_options={"dynamic": True}),
        "fixed": build_artifact("onnxruntime", model, tmp_path_factory.mktemp("fixed"), HW),
    }


def test_describe_batch():
    from yoloport.backends.registry import describe_batch

    assert describe_batch(None) == "dynamic"
    assert describe_batch(4) == "4"


def _quantize_rows(artifact: Path) -> dict:
    from yoloport.commands.quantize import summary_rows

    info = read_sidecar(artifact)
    summary = {**info, "artifact": str(artifact), "seconds": 1.0, "size_bytes": 1, "onnx_size_bytes": 1}
    return dict(summary_rows(summary))


def test_quantize_summary_says_dynamic_not_none(artifacts):
    assert read_sidecar(artifacts["dynamic"])["batch"] is None  # the case at hand: any batch
    rows = _quantize_rows(artifacts["dynamic"])
    assert rows["input"].startswith(f"Bx3x{HW[0]}x{HW[1]} (B,C,H,W), batch dynamic")
    assert not any("None" in v for v in rows.values()), rows
    assert "batch=" not in rows["settings"]  # the qconfig's export batch would contradict the artifact's
    fixed = _quantize_rows(artifacts["fixed"])
    assert fixed["input"].startswith(f"1x3x{HW[0]}x{HW[1]} (B,C,H,W), head ")


def test_deploy_readme_says_dynamic_not_none(artifacts, tmp_path):
    from yoloport.analysis import deploy_folder as dfm

    folder = dfm.write_deploy_folder(tmp_path / "deploy", artifacts["dynamic"], "onnxruntime-fp32")
    readme = (folder / dfm.README).read_text()
    assert f"input {HW[1]}x{HW[0]} W x H, batch dynamic)" in readme
    assert "None" not in readme
    fixed = dfm.write_deploy_folder(tmp_path / "deploy1", artifacts["fixed"], "onnxruntime-fp32")
    assert "W x H, batch 1)" in (fixed / dfm.README).read_text()
