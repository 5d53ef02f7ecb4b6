"""Safe import of Ultralytics YOLOv5 .pt checkpoints (yoloport.io.ultralytics)."""
from __future__ import annotations

import builtins
import os
import pickle
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from yoloport.errors import YoloportError
from yoloport.fixtures import fixtures_dir
from yoloport.io.ultralytics import InertRecord, read_ultralytics_checkpoint, safe_torch_load

EXPECTED = {  # file -> (parameter count, first layer type, stem key, anchor_grid buffer stored)
    "yolov5s-v5.0.pt": (7_276_605, "Focus", "model.0.conv.conv.weight", True),
    "yolov5n-v6.1.pt": (1_872_157, "Conv", "model.0.conv.weight", False),
}
COCO_ANCHORS_PX = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]


def _fixture(name: str) -> Path:
    root = fixtures_dir()
    if root is None:
        pytest.skip("shared fixtures not found (set YOLOPORT_FIXTURES)")
    path = root / "weights" / name
    if not path.is_file():
        pytest.skip(f"fixture {path} is missing")
    return path


# ---------------------------------------------------------------------------------------------
# real checkpoints
# ---------------------------------------------------------------------------------------------
@pytest.mark.fixtures
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_official_checkpoint(name):
    n_params, first_type, stem_key, has_anchor_grid = EXPECTED[name]
    ck = read_ultralytics_checkpoint(_fixture(name))
    assert ck.param_count == n_params
    assert ck.nc == 80 and len(ck.names) == 80 and ck.names[0] == "person"
    assert ck.stride == [8.0, 16.0, 32.0]
    assert ck.activation == "SiLU"
    assert ck.module_types[0] == first_type and ck.module_types[-1] == "Detect" and len(ck.module_types) == 25
    assert ck.layer_from[-1] == [17, 20, 23]
    assert ck.yaml["nc"] == 80 and ck.yaml["anchors"] == COCO_ANCHORS_PX
    assert ck.source["key"] == "model" and ck.source["dtype"] == "float16"
    assert ck.detect_attrs["anchor_grid_buffer"] is has_anchor_grid
    assert ck.detect_attrs["na"] == 3 and ck.detect_attrs["nl"] == 3
    # the stored anchors are in grid units: times the stride they are the yaml's pixel anchors
    anchors_px = torch.tensor(ck.anchors_grid_units) * torch.tensor(ck.stride).view(-1, 1, 1)
    assert anchors_px.view(3, 6).tolist() == COCO_ANCHORS_PX
    sd = ck.state_dict
    assert stem_key in sd and "model.24.anchors" in sd and "model.24.m.0.weight" in sd
    assert sd["model.24.m.0.weight"].shape == (255, sd["model.24.m.0.weight"].shape[1], 1, 1)
    assert sd["model.1.bn.num_batches_tracked"].dtype == torch.int64
    assert all(t.dtype == torch.float32 for t in sd.values() if t.is_floating_point())
    assert not any(isinstance(t, nn.Parameter) for t in sd.values())
    assert ("model.24.anchor_grid" in sd) is has_anchor_grid
    # layer type names agree with the yaml's module column
    yaml_types = [row[2].split(".")[-1] for row in ck.yaml["backbone"] + ck.yaml["head"]]
    assert yaml_types == ck.module_types


@pytest.mark.fixtures
def test_checkpoint_is_loaded_without_ultralytics_code():
    ck_path = _fixture("yolov5n-v6.1.pt")
    before = set(sys.modules)
    obj = safe_torch_load(ck_path)
    assert not {m for m in set(sys.modules) - before if m == "models" or m.startswith(("models.", "utils."))}
    model = obj["model"]
    assert isinstance(model, InertRecord) and type(model).qualname == "models.yolo.Model"
    assert not hasattr(model, "forward") and not isinstance(model, nn.Module)


# ---------------------------------------------------------------------------------------------
# fake Ultralytics classes: torch.save a tiny YOLOv5-shaped model under the `models.*` names
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def fake_ultralytics(monkeypatch):
    """Install throwaway `models.common` / `models.yolo` modules so torch.save pickles our tiny
    stand-ins under the names Ultralytics uses; yield a builder of such models."""
    models = types.ModuleType("models")
    common = types.ModuleType("models.common")
    yolo = types.ModuleType("models.yolo")

    class Conv(nn.Module):
        def __init__(self, c1, c2, act=None):
            super().__init__()
            self.conv = nn.Conv2d(c1, c2, 3, 2, 1, bias=False)
            self.bn = nn.BatchNorm2d(c2)
            self.act = act if act is not None else nn.SiLU()

    class Detect(nn.Module):
        def __init__(self, nc, ch):
            super().__init__()
            self.nc, self.no, self.nl, self.na = nc, nc + 5, 1, 3
            self.grid = [torch.zeros(1, 1, 40, 40, 2)]  # cached grid, must not end up in detect_attrs
            self.register_buffer("anchors", torch.tensor([[[1.25, 1.625], [2.0, 3.75], [4.125, 2.875]]]))
            self.register_buffer("scratch", torch.ones(2), persistent=False)
            self.m = nn.ModuleList([nn.Conv2d(ch, self.na * self.no, 1)])
            self.inplace = True

    class Model(nn.Module):
        def __init__(self, nc=2, names=None, act=None):
            super().__init__()
            self.yaml = {"nc": nc, "anchors": [[10, 13, 16, 30, 33, 23]], "backbone": [], "head": []}
            self.model = nn.Sequential(Conv(3, 8, act), Detect(nc, 8))
            for i, m in enumerate(self.model):
                m.i, m.f, m.type = i, -1, f"models.common.{type(m).__name__}"
            self.names = names if names is not None else [f"c{i}" for i in range(nc)]
            self.stride = torch.tensor([8.0])

    for cls, mod in ((Conv, common), (Detect, yolo), (Model, yolo)):
        cls.__module__, cls.__qualname__ = mod.__name__, cls.__name__
        setattr(mod, cls.__name__, cls)
    models.common, models.yolo = common, yolo
    for mod in (models, common, yolo):
        monkeypatch.setitem(sys.modules, mod.__name__, mod)
    return Model


@pytest.mark.filterwarnings("ignore:Couldn't retrieve source code")  # torch.save of our stand-ins
@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_fake_model_state_dict_matches_nn_module(tmp_path, fake_ultralytics, zip_format):
    model = fake_ultralytics(nc=2, names={0: "cat", 1: "dog"}).half()
    path = tmp_path / "best.pt"
    ckpt = {"epoch": 3, "model": model, "ema": None, "date": "2024-01-01"}
    torch.save(ckpt, path, _use_new_zipfile_serialization=zip_format)
    ck = read_ultralytics_checkpoint(path)
    ref = model.state_dict()
    assert list(ck.state_dict) == list(ref)  # same names, same order, non-persistent buffer skipped
    for k, v in ref.items():
        assert torch.equal(ck.state_dict[k], v.float() if v.is_floating_point() else v)
    assert ck.param_count == sum(p.numel() for p in model.parameters())
    assert ck.names == ["cat", "dog"] and ck.nc == 2
    assert ck.source["epoch"] == 3 and ck.source["key"] == "model" and ck.source["date"] == "2024-01-01"
    assert ck.detect_attrs["inplace"] is True and "grid" not in ck.detect_attrs
    assert ck.module_types == ["Conv", "Detect"]


def test_ema_preferred_over_model(tmp_path, fake_ultralytics):
    model, ema = fake_ultralytics(nc=2), fake_ultralytics(nc=3, act=nn.Hardswish())
    path = tmp_path / "last.pt"
    torch.save({"model": model, "ema": ema, "updates": 10}, path)
    ck = read_ultralytics_checkpoint(path)
    assert ck.source["key"] == "ema" and ck.nc == 3 and ck.activation == "Hardswish"


@pytest.mark.parametrize(
    "payload, message",
    [
        (lambda M: M().state_dict(), "plain state_dict"),
        (lambda M: {"model": None, "ema": None, "epoch": 1}, "no model under 'model' or 'ema'"),
        (lambda M: {"model": M().state_dict()}, "holds a state_dict"),
        (lambda M: [1, 2, 3], "holds a list"),
    ],
)
def test_unknown_formats(tmp_path, fake_ultralytics, payload, message):
    path = tmp_path / "x.pt"
    torch.save(payload(fake_ultralytics), path)
    with pytest.raises(YoloportError, match=message):
        read_ultralytics_checkpoint(path)


def test_bare_pickled_model_is_accepted(tmp_path, fake_ultralytics):
    path = tmp_path / "bare.pt"
    torch.save(fake_ultralytics(nc=2), path)
    assert read_ultralytics_checkpoint(path).source["key"] is None


def test_numpy_values_are_allowed(tmp_path, fake_ultralytics):
    path = tmp_path / "np.pt"
    torch.save({"model": fake_ultralytics(), "best_fitness": np.array([0.5]), "x": np.float64(2.0)}, path)
    assert read_ultralytics_checkpoint(path).source["best_fitness"] == 0.5


# ---------------------------------------------------------------------------------------------
# files that are not checkpoints
# ---------------------------------------------------------------------------------------------
def test_not_a_checkpoint(tmp_path):
    with pytest.raises(YoloportError, match="does not exist"):
        read_ultralytics_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(YoloportError, match="is a directory"):
        read_ultralytics_checkpoint(tmp_path)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"hello, I am not a checkpoint\n" * 10)
    with pytest.raises(YoloportError, match="is not a PyTorch checkpoint"):
        read_ultralytics_checkpoint(junk)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(YoloportError, match="is not a PyTorch checkpoint"):
        read_ultralytics_checkpoint(empty)
    plain_zip = tmp_path / "plain.pt"
    with zipfile.ZipFile(plain_zip, "w") as z:
        z.writestr("readme.txt", "hi")
    with pytest.raises(YoloportError, match="not a PyTorch checkpoint"):
        read_ultralytics_checkpoint(plain_zip)


@pytest.mark.fixtures
def test_truncated_checkpoint(tmp_path):
    src = _fixture("yolov5n-v6.1.pt")
    data = src.read_bytes()
    for cut in (len(data) // 2, len(data) - 100):
        bad = tmp_path / f"cut{cut}.pt"
        bad.write_bytes(data[:cut])
        with pytest.raises(YoloportError, match="truncated or corrupt"):
            read_ultralytics_checkpoint(bad)


def test_truncated_small_checkpoint(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"w": torch.arange(1000.0)}, good)
    data = good.read_bytes()
    for cut in (10, len(data) // 2, len(data) - 30):
        bad = tmp_path / f"cut{cut}.pt"
        bad.write_bytes(data[:cut])
        with pytest.raises(YoloportError):
            read_ultralytics_checkpoint(bad)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_archive_refused(tmp_path):
    path = tmp_path / "m.torchscript"
    torch.jit.save(torch.jit.script(nn.Linear(2, 2)), path)
    with pytest.raises(YoloportError, match="TorchScript"):
        read_ultralytics_checkpoint(path)


# ---------------------------------------------------------------------------------------------
# malicious checkpoints: nothing may run
# ---------------------------------------------------------------------------------------------
class _Reduce:
    """Pickles as ``func(*args)``: what a tampered checkpoint does."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _torch_zip_from_pickle(path: Path, data_pkl: bytes) -> Path:
    """A torch.save-style zip archive around a hand-made data.pkl."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", data_pkl)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
    return path


def _marker_payloads(marker: Path):
    cmd = f"touch {marker}"
    code = f"open({str(marker)!r}, 'w').close()"
    return {
        "os.system": (os.system, (cmd,)),
        "subprocess.Popen": (subprocess.Popen, (["touch", str(marker)],)),
        "subprocess.check_call": (subprocess.check_call, (["touch", str(marker)],)),
        "builtins.eval": (builtins.eval, (code,)),
        "builtins.exec": (builtins.exec, (code,)),
        "builtins.__import__": (builtins.__import__, ("os",)),
        "builtins.getattr": (builtins.getattr, ("x", "upper")),
        "builtins.open": (builtins.open, (str(marker), "w")),
    }


@pytest.mark.parametrize("container", ["torch-zip", "legacy-pickle"])
@pytest.mark.parametrize("name", sorted(_marker_payloads(Path("x"))))
def test_malicious_reduce_is_refused(tmp_path, name, container):
    marker = tmp_path / "pwned"
    func, args = _marker_payloads(marker)[name]
    ckpt = {"epoch": 0, "model": _Reduce(func, args)}
    path = tmp_path / "evil.pt"
    if container == "torch-zip":
        torch.save(ckpt, path)
    else:
        path.write_bytes(pickle.dumps(ckpt, protocol=2))  # torch's legacy path reads the first pickle
    with pytest.raises(YoloportError, match="not on yoloport's allow-list") as err:
        read_ultralytics_checkpoint(path)
    assert "refusing to load" in str(err.value)
    assert not marker.exists()


def test_error_names_the_refused_global(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": _Reduce(os.system, (f"touch {marker}",))}, path)
    with pytest.raises(YoloportError, match=r"'(posix|nt)\.system'"):
        read_ultralytics_checkpoint(path)
    assert not marker.exists()


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _str(s: str) -> bytes:
    b = s.encode()
    return b"X" + len(b).to_bytes(4, "little") + b


def test_model_record_with_reduce_payload_in_its_state(tmp_path):
    """A legitimate-looking models.yolo.Model whose pickled __dict__ carries a REDUCE payload."""
    marker = tmp_path / "pwned"
    body = (
        b"\x80\x02}" + _str("model")
        + _global("models.yolo", "Model") + b")\x81"  # EMPTY_TUPLE NEWOBJ
        + b"(" + _str("yaml") + b"}" + _str("_modules") + _global("posix", "system")
        + _str(f"touch {marker}") + b"\x85R" + b"d"  # MARK ... DICT
        + b"b" + b"s."  # BUILD, SETITEM, STOP
    )
    path = _torch_zip_from_pickle(tmp_path / "evil.pt", body)
    with pytest.raises(YoloportError, match="posix.system"):
        read_ultralytics_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "module, name",
    [
        ("copyreg", "_reconstructor"),
        ("copy_reg", "_reconstructor"),
        ("torch.serialization", "load"),
        ("torch._utils", "_rebuild_from_type_v2"),
        ("numpy", "load"),
        ("torch", "load"),
        ("nt", "system"),
        ("__builtin__", "eval"),
        ("models.yolo", "Model.__init__.__globals__"),
    ],
)
def test_other_globals_refused(tmp_path, module, name):
    body = b"\x80\x02" + _global(module, name) + b")R."  # call it with no arguments
    path = _torch_zip_from_pickle(tmp_path / "evil.pt", body)
    with pytest.raises(YoloportError, match="not on yoloport's allow-list"):
        read_ultralytics_checkpoint(path)


def test_record_class_cannot_be_modified_by_build(tmp_path):
    """BUILD on the record class object itself (slot state) would setattr on the class."""
    body = (
        b"\x80\x02" + _global("models.yolo", "Model")
        + b"N}" + _str("__setstate__") + _global("collections", "OrderedDict") + b"s\x86"  # (None, {..}) TUPLE2
        + b"b."
    )
    path = _torch_zip_from_pickle(tmp_path / "evil.pt", body)
    with pytest.raises(YoloportError, match="refusing to load"):
        read_ultralytics_checkpoint(path)
    from yoloport.io.ultralytics import _record_class

    assert "__setstate__" not in _record_class("models.yolo.Model").__dict__


def test_codecs_encode_only_latin1(tmp_path):
    body = b"\x80\x02" + _global("_codecs", "encode") + _str("x") + _str("zlib") + b"\x86R."
    path = _torch_zip_from_pickle(tmp_path / "evil.pt", body)
    with pytest.raises(YoloportError, match="only latin-1"):
        safe_torch_load(path)
    ok = b"\x80\x02" + _global("_codecs", "encode") + _str("\u00e9") + _str("latin1") + b"\x86R."
    assert safe_torch_load(_torch_zip_from_pickle(tmp_path / "ok.pt", ok)) == b"\xe9"


def test_records_keep_state_inert(tmp_path, fake_ultralytics):
    path = tmp_path / "m.pt"
    torch.save({"model": fake_ultralytics()}, path)
    obj = safe_torch_load(path)
    rec = obj["model"]
    assert isinstance(rec.state["_modules"], dict) and isinstance(rec.state["_modules"]["model"], InertRecord)
    with pytest.raises(AttributeError):
        rec.anything = 1  # slots only


def test_calling_a_non_allowlisted_object_is_refused(tmp_path):
    """REDUCE on something a previous call returned (here an OrderedDict), not an allow-listed global."""
    body = b"\x80\x02" + _global("collections", "OrderedDict") + b")R" + b")R."
    path = _torch_zip_from_pickle(tmp_path / "evil.pt", body)
    with pytest.raises(YoloportError, match="refusing to load .*tries to call a OrderedDict"):
        read_ultralytics_checkpoint(path)


def test_build_cannot_patch_allowlisted_functions(tmp_path):
    """BUILD with slot state on an allowed function would setattr e.g. its __defaults__."""
    before = torch._utils._rebuild_tensor_v2.__defaults__
    body = (
        b"\x80\x02" + _global("torch._utils", "_rebuild_tensor_v2")
        + b"N}" + _str("__defaults__") + b"K\x07\x85s\x86"  # (None, {"__defaults__": (7,)})
        + b"b."
    )
    path = _torch_zip_from_pickle(tmp_path / "evil.pt", body)
    with pytest.raises(YoloportError, match="refusing to load .*BUILD"):
        read_ultralytics_checkpoint(path)
    assert torch._utils._rebuild_tensor_v2.__defaults__ == before


@pytest.mark.parametrize(
    "module, name, message",
    [
        ("ultralytics.nn.tasks", "DetectionModel", "anchor-free"),
        ("models.yolo", "ClassificationModel", "not a YOLOv5 detection model"),
        ("models.yolo", "Model", "no yaml config"),
    ],
)
def test_other_model_families_are_named(tmp_path, module, name, message):
    body = (
        b"\x80\x02}" + _str("model") + _global(module, name) + b")\x81"  # {"model": Cls.__new__(Cls)}
        + b"}" + _str("yaml") + b"Ns" + b"b" + b"s."  # BUILD with {"yaml": None}
    )
    path = _torch_zip_from_pickle(tmp_path / "other.pt", body)
    with pytest.raises(YoloportError, match=message):
        read_ultralytics_checkpoint(path)
