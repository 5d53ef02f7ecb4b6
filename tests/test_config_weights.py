"""config.weights_path: a checkpoint named by path or by model key, one clear error otherwise."""
from pathlib import Path

import pytest

from yoloport.config import weights_path
from yoloport.errors import YoloportError
from yoloport.fixtures import fixtures_dir


def test_a_file_is_itself(tmp_path):
    f = tmp_path / "w.pt"
    f.write_bytes(b"x")
    assert weights_path(f) == f and weights_path(str(f)) == f


def test_unknown_name_or_missing_file_is_one_error(tmp_path):
    with pytest.raises(YoloportError, match="'nope' not found"):
        weights_path("nope")
    with pytest.raises(YoloportError, match="not found"):
        weights_path(tmp_path / "missing.pt")
    with pytest.raises(YoloportError, match="not found"):
        weights_path(tmp_path)  # a folder is not a checkpoint


@pytest.mark.fixtures
def test_a_fixture_key_is_its_weights_file():
    fx = fixtures_dir()
    if fx is None or not (fx / "weights" / "yolov5s-v5.0.pt").is_file():
        pytest.skip("shared fixtures absent (set YOLOPORT_FIXTURES)")
    assert weights_path("yolov5s-v5.0") == Path(fx / "weights" / "yolov5s-v5.0.pt")
