"""yoloport's own checkpoint format, atomic writes and format sniffing (yoloport.io.checkpoint)."""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from yoloport.errors import YoloportError
from yoloport.fixtures import fixtures_dir
from yoloport.io.checkpoint import (
    atomic_path,
    atomic_write,
    detect_checkpoint_format,
    is_safetensors,
    read_checkpoint,
    save_checkpoint,
    sniff_file,
)

META = {
    "yaml": {"nc": 2, "anchors": [[10, 13, 16, 30, 33, 23]], "backbone": [[-1, 1, "Conv", [16, 3, 2]]], "head": []},
    "names": ["cat", "dog"],
    "stride": [8.0],  # one level, as the yaml's anchors (model metadata is validated on read)
    "anchors": [[[1.25, 1.625], [2.0, 3.75], [4.125, 2.875]]],
    "img_size": [416, 736],
    "train": {"epoch": 7, "best_fitness": 0.25, "note": "ünïcode ok"},
}


def _state_dict() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4, 3, 3, 3, generator=g)
    return {
        "model.0.conv.weight": w,
        "model.0.bn.running_mean": torch.zeros(4),
        "model.0.bn.num_batches_tracked": torch.tensor(5),
        "model.1.half": torch.randn(3, generator=g).half(),
        "model.2.view": w[1],  # shares storage with model.0.conv.weight
        "model.3.t": torch.randn(3, 5, generator=g).t(),  # not contiguous
        "model.4.param": torch.nn.Parameter(torch.ones(2)),
        "model.5.empty": torch.zeros(0),
    }


def test_round_trip(tmp_path):
    sd = _state_dict()
    out = save_checkpoint(tmp_path / "sub" / "best.safetensors", sd, META)
    assert out == tmp_path / "sub" / "best.safetensors" and out.is_file()
    sd2, meta2 = read_checkpoint(out)
    assert meta2 == META
    assert list(sd2) == sorted(sd2) and set(sd2) == set(sd)
    for k, v in sd.items():
        assert sd2[k].dtype == v.dtype and torch.equal(sd2[k], v.detach()), k
    assert detect_checkpoint_format(out) == "yoloport"
    assert is_safetensors(out) and sniff_file(out) == "safetensors"
    assert [p.name for p in out.parent.iterdir()] == ["best.safetensors"]  # no temp file left


def test_meta_conversions_and_reserved_key(tmp_path):
    meta = {"t": (1, 2), "np": np.float32(0.5), "arr": np.arange(3), "p": Path("x/y")}
    p = save_checkpoint(tmp_path / "a.safetensors", {}, meta)
    _, meta = read_checkpoint(p)
    assert meta == {"t": [1, 2], "np": 0.5, "arr": [0, 1, 2], "p": "x/y"}
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path / "b.safetensors", {}, {"format_version": 9})
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        save_checkpoint(tmp_path / "c.safetensors", {}, {"bad": object()})
    assert not (tmp_path / "c.safetensors").exists()


def test_killed_write_keeps_original(tmp_path):
    target = save_checkpoint(tmp_path / "best.safetensors", _state_dict(), META)
    before = target.read_bytes()

    def dies_halfway(f):
        f.write(b"partial garbage")
        raise KeyboardInterrupt  # a Ctrl-C mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, dies_halfway)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["best.safetensors"]

    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half an onnx file")
            raise RuntimeError("boom")
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["best.safetensors"]


def test_atomic_path_keeps_suffix_and_replaces(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".onnx" and tmp != target
        tmp.write_bytes(b"new")
        assert target.read_bytes() == b"old"
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    assert atomic_write(tmp_path / "x.json", lambda f: f.write(b"{}")).read_bytes() == b"{}"
    with pytest.raises(RuntimeError, match="did not create"):
        with atomic_path(tmp_path / "never.bin"):
            pass
    with pytest.raises(YoloportError, match="is a directory"):
        with atomic_path(tmp_path):
            pass


def test_garbage_and_bad_paths(tmp_path):
    with pytest.raises(YoloportError, match="does not exist"):
        detect_checkpoint_format(tmp_path / "nope.safetensors")
    with pytest.raises(YoloportError, match="is a directory"):
        detect_checkpoint_format(tmp_path)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(YoloportError, match="is empty"):
        detect_checkpoint_format(empty)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(os.urandom(4096).replace(b"PK", b"pk").lstrip(b"\x80") or b"x")
    with pytest.raises(YoloportError, match="is not a checkpoint yoloport can read"):
        detect_checkpoint_format(junk)
    with pytest.raises(YoloportError, match="is not a checkpoint yoloport can read"):
        read_checkpoint(junk)
    assert not is_safetensors(junk) and not is_safetensors(tmp_path / "nope") and not is_safetensors(tmp_path)


def test_truncated_yoloport_checkpoint(tmp_path):
    good = save_checkpoint(tmp_path / "good.safetensors", _state_dict(), META)
    data = good.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) - 16])
    with pytest.raises(YoloportError):
        read_checkpoint(cut)
    cut.write_bytes(data[:20])  # header cut: no longer recognisable as safetensors
    with pytest.raises(YoloportError, match="is not a checkpoint yoloport can read"):
        read_checkpoint(cut)


def test_foreign_safetensors_and_newer_format(tmp_path):
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.ones(2)}, str(plain))
    assert detect_checkpoint_format(plain) == "unknown"
    with pytest.raises(YoloportError, match="not a yoloport checkpoint"):
        read_checkpoint(plain)
    newer = tmp_path / "newer.safetensors"
    save_file({"w": torch.ones(2)}, str(newer), metadata={"yoloport": json.dumps({"format_version": 99})})
    with pytest.raises(YoloportError, match="newer yoloport"):
        read_checkpoint(newer)


@pytest.mark.fixtures
def test_detect_ultralytics_and_torch_files(tmp_path):
    pt = tmp_path / "x.pt"
    torch.save({"w": torch.ones(1)}, pt)
    assert detect_checkpoint_format(pt) == "ultralytics"
    with pytest.raises(YoloportError, match="read_ultralytics_checkpoint"):
        read_checkpoint(pt)
    legacy = tmp_path / "legacy.pt"
    torch.save({"w": torch.ones(1)}, legacy, _use_new_zipfile_serialization=False)
    assert detect_checkpoint_format(legacy) == "ultralytics"
    half = tmp_path / "half.pt"
    half.write_bytes(pt.read_bytes()[:50])
    with pytest.raises(YoloportError, match="truncated or corrupt"):
        detect_checkpoint_format(half)
    root = fixtures_dir()
    if root is not None and (root / "weights" / "yolov5n-v6.1.pt").is_file():
        assert detect_checkpoint_format(root / "weights" / "yolov5n-v6.1.pt") == "ultralytics"


def test_safetensors_header_sniffing_is_strict(tmp_path):
    fake = tmp_path / "fake.bin"
    fake.write_bytes(struct.pack("<Q", 10**12) + b"{}")  # header length larger than the file
    assert not is_safetensors(fake)
    fake.write_bytes(struct.pack("<Q", 2) + b"[]")  # not a JSON object
    assert not is_safetensors(fake)
    fake.write_bytes(struct.pack("<Q", 2) + b"{}")
    assert is_safetensors(fake)
