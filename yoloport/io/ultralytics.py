"""Import official Ultralytics YOLOv5 ``.pt`` checkpoints without running their code.

An Ultralytics checkpoint is a ``torch.save`` pickle of the whole ``models.yolo.Model``. Plain
``torch.load`` would import the Ultralytics repository (which yoloport does not need) and would
run any callable a tampered file names. yoloport instead unpickles with an explicit allow-list:

- Ultralytics classes (``models.*``, ``utils.*``, ``ultralytics.*``) and ``torch.nn.modules.*``
  become :class:`InertRecord` instances: objects that only keep the pickled state (the
  module's ``__dict__`` with ``_modules``, ``_parameters``, ``_buffers`` and plain attributes).
  Nothing is imported for them and none of their methods exist.
- torch's own tensor rebuild functions and storages, ``collections.OrderedDict``, ``set``,
  ``frozenset``, ``torch.Size``/``torch.device``/dtypes and numpy's array/scalar reconstruction
  are the only callables the pickle may invoke (``_codecs.encode`` is replaced by a latin-1
  only version: that is all numpy's pickles use it for).
- Every other global (``posix.system``, ``builtins.eval``, ``subprocess.Popen``, ...) stops the
  load with a :class:`~yoloport.errors.YoloportError` naming it.

:func:`read_ultralytics_checkpoint` then walks the records like ``nn.Module.state_dict()`` and
returns an :class:`UltralyticsCheckpoint` (yaml, float32 state dict, names, stride, anchors...).
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import types
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from yoloport.errors import YoloportError
from yoloport.io.checkpoint import require_checkpoint_file, sniff_file


class RefusedPickle(pickle.UnpicklingError):
    """The checkpoint's pickle asked for something the restricted unpickler does not do."""


class RefusedGlobal(RefusedPickle):
    """A pickle named a global that is not on the allow-list (carries ``module.name``)."""

    def __init__(self, qualname: str):
        super().__init__(qualname)
        self.qualname = qualname


# --------------------------------------------------------------------------------------------
# inert records
# --------------------------------------------------------------------------------------------
#: Module prefixes whose classes are rebuilt as inert records (never imported).
RECORD_MODULE_PREFIXES: tuple[str, ...] = ("models.", "utils.", "ultralytics.", "torch.nn.modules.")


class _FrozenRecordType(type):
    """Metaclass of record classes: the class object itself cannot be modified after creation
    (a pickle BUILD on the class would otherwise ``setattr`` on it)."""

    def __setattr__(cls, name: str, value: Any) -> None:
        raise RefusedPickle(f"it tries to modify the record class {cls.qualname}")

    def __delattr__(cls, name: str) -> None:
        raise RefusedPickle(f"it tries to modify the record class {cls.qualname}")


class InertRecord(metaclass=_FrozenRecordType):
    """The pickled state of an object whose class yoloport refuses to import.

    ``qualname`` is the pickled ``module.Class`` name (e.g. ``'models.common.Conv'``),
    ``state`` the object's pickled ``__dict__`` (for an ``nn.Module``: ``_modules``,
    ``_parameters``, ``_buffers``, ``_non_persistent_buffers_set``, ``training`` and plain
    attributes such as ``nc`` or ``yaml``) and ``args`` whatever the pickle passed to the
    constructor (usually ``()``). Records have slots only, so unpickling cannot attach
    attributes (or a ``__setstate__``) to them.
    """

    __slots__ = ("state", "args")
    qualname = "InertRecord"
    dump_patches = False  # torch's legacy loader reads this: never write .patch files

    def __new__(cls, *args: Any, **kwargs: Any) -> "InertRecord":
        self = object.__new__(cls)
        object.__setattr__(self, "args", (args, kwargs))
        object.__setattr__(self, "state", {})
        return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        """Pickle BUILD: keep the state, never interpret it."""
        if isinstance(state, tuple) and len(state) == 2 and (state[0] is None or isinstance(state[0], dict)):
            merged = dict(state[0] or {})
            if isinstance(state[1], dict):
                merged.update(state[1])
            state = merged
        object.__setattr__(self, "state", state)

    @property
    def short_name(self) -> str:
        """The class name without its module, e.g. ``'Conv'``."""
        return type(self).qualname.rsplit(".", 1)[-1]

    def __repr__(self) -> str:
        return f"<record {type(self).qualname}>"


_RECORD_CLASSES: dict[str, type] = {}


def _record_class(qualname: str) -> type:
    """The (cached, frozen) record class standing for ``qualname``."""
    cls = _RECORD_CLASSES.get(qualname)
    if cls is None:
        name = qualname.rsplit(".", 1)[-1]
        cls = _FrozenRecordType(name, (InertRecord,), {"__slots__": (), "qualname": qualname})
        _RECORD_CLASSES[qualname] = cls
    return cls


# --------------------------------------------------------------------------------------------
# the allow-list and the restricted unpickler
# --------------------------------------------------------------------------------------------
def _latin1_encode(obj: Any, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """Stand-in for ``_codecs.encode``: numpy pickles bytes as ``encode(str, 'latin1')``."""
    if not isinstance(obj, str) or encoding.lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1"):
        raise RefusedPickle(f"it calls _codecs.encode with encoding {encoding!r} (only latin-1 is allowed)")
    return obj.encode("latin1", errors="strict")


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """numpy's pickle helpers under both their numpy 1 and numpy 2 module names."""
    reconstruct = np.ndarray((0,)).__reduce__()[0]
    scalar = np.float64(0).__reduce__()[0]
    out: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out[(mod, "_reconstruct")] = reconstruct
        out[(mod, "scalar")] = scalar
    return out


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """Every callable or value (other than records) a checkpoint pickle may name.

    Each entry is harmless whatever arguments the pickle passes: it builds a tensor, a
    container or a numpy array, and never calls anything it is given.
    """
    u = torch._utils
    allowed: dict[tuple[str, str], Any] = {
        ("torch._utils", "_rebuild_tensor"): u._rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): u._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): u._rebuild_parameter,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set,
        ("__builtin__", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("__builtin__", "frozenset"): frozenset,
        ("torch", "Size"): torch.Size,
        ("torch", "device"): torch.device,
        ("_codecs", "encode"): _latin1_encode,
    }
    for dtype_name in ("float16", "bfloat16", "float32", "float64", "int8", "uint8", "int16", "int32", "int64", "bool"):
        allowed[("torch", dtype_name)] = getattr(torch, dtype_name)
    allowed.update(_numpy_globals())
    return allowed


_ALLOWED = _allowed_globals()


def resolve_global(module: str, name: str) -> Any:
    """What the restricted unpickler hands back for ``module.name``; raises :class:`RefusedGlobal`."""
    if not isinstance(module, str) or not isinstance(name, str):
        raise RefusedGlobal(f"{module!r}.{name!r}")
    qualname = f"{module}.{name}"
    hit = _ALLOWED.get((module, name))
    if hit is not None:
        return hit
    if module.startswith(RECORD_MODULE_PREFIXES) and name.isidentifier() and "." not in name:
        return _record_class(qualname)
    raise RefusedGlobal(qualname)


_ALLOWED_CALLABLES: tuple[Any, ...] = tuple(v for v in _ALLOWED.values() if callable(v))
#: Types whose instances a pickle BUILD may set state on (through the type's own __setstate__).
_BUILDABLE_TYPES: tuple[type, ...] = (InertRecord, torch.Tensor, np.ndarray, np.dtype)


def _is_record_class(obj: Any) -> bool:
    """True for the classes :func:`_record_class` makes (not the InertRecord base)."""
    return isinstance(obj, type) and issubclass(obj, InertRecord) and obj is not InertRecord


def _check_callable(func: Any, opcode: str) -> None:
    """Only allow-listed callables and record classes may be called by a pickle."""
    if _is_record_class(func) or any(func is f for f in _ALLOWED_CALLABLES):
        return
    raise RefusedPickle(
        f"it tries to call a {type(func).__name__} ({opcode}); only allow-listed callables may be called"
    )


class RestrictedUnpickler(pickle._Unpickler):  # the pure-Python unpickler: its opcodes can be guarded
    """An unpickler that can only ever call what :func:`resolve_global` allow-lists.

    - GLOBAL/STACK_GLOBAL/INST/EXT*: names go through ``find_class`` = :func:`resolve_global`.
    - REDUCE, NEWOBJ, NEWOBJ_EX, INST, OBJ: the callable must *be* an allow-listed callable or
      a record class (identity check), not merely something a previous call returned.
    - BUILD: only on records, tensors, numpy arrays and dtypes, through their type's own
      ``__setstate__`` (never an instance attribute), and plain ``__dict__`` entries on an
      ``OrderedDict`` (a state_dict's ``_metadata``); never a ``setattr`` on anything else,
      e.g. a function's ``__defaults__``.
    """

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102 (see class docstring)
        return resolve_global(module, name)

    def _load_reduce(self) -> None:
        args = self.stack.pop()
        func = self.stack[-1]
        _check_callable(func, "REDUCE")
        if not isinstance(args, tuple):
            raise pickle.UnpicklingError("REDUCE arguments must be a tuple")
        self.stack[-1] = func(*args)

    def _load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        _check_callable(cls, "NEWOBJ")
        if not isinstance(cls, type) or not isinstance(args, tuple):
            raise pickle.UnpicklingError("malformed NEWOBJ")
        self.append(cls.__new__(cls, *args))

    def _load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        _check_callable(cls, "NEWOBJ_EX")
        if not isinstance(cls, type) or not isinstance(args, tuple) or not isinstance(kwargs, dict):
            raise pickle.UnpicklingError("malformed NEWOBJ_EX")
        self.append(cls.__new__(cls, *args, **kwargs))

    def _instantiate(self, klass: Any, args: list) -> None:  # INST and OBJ (protocols 0 and 1)
        _check_callable(klass, "INST/OBJ")
        self.append(klass(*args))

    def _load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        for t in _BUILDABLE_TYPES:
            if isinstance(inst, t):
                type(inst).__setstate__(inst, state)
                return
        if type(inst) is collections.OrderedDict:  # a state_dict's `_metadata` attribute
            if isinstance(state, tuple) and len(state) == 2 and state[1] is None:
                state = state[0]
            if isinstance(state, dict) and all(type(k) is str for k in state):
                inst.__dict__.update(state)  # plain dict entries: no setattr, no descriptors
                return
        raise RefusedPickle(f"it tries to set the state of a {type(inst).__name__} (BUILD)")

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.REDUCE[0]] = _load_reduce
    dispatch[pickle.NEWOBJ[0]] = _load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = _load_newobj_ex
    dispatch[pickle.BUILD[0]] = _load_build


def _restricted_load(file: Any, **kwargs: Any) -> Any:
    """``pickle.load`` with :class:`RestrictedUnpickler`."""
    return RestrictedUnpickler(file, **kwargs).load()


def _restricted_loads(data: bytes, **kwargs: Any) -> Any:
    """``pickle.loads`` with :class:`RestrictedUnpickler`."""
    return RestrictedUnpickler(io.BytesIO(data), **kwargs).load()


#: A stand-in for the ``pickle`` module, given to ``torch.load(pickle_module=...)``. torch
#: subclasses ``Unpickler`` (its wrapper maps ``torch.*Storage`` names itself and sends every
#: other global to our ``find_class``) and uses ``load`` for the legacy format's headers.
restricted_pickle = types.SimpleNamespace(
    __name__="yoloport_restricted_pickle",
    Unpickler=RestrictedUnpickler,
    load=_restricted_load,
    loads=_restricted_loads,
    UnpicklingError=pickle.UnpicklingError,
)


def safe_torch_load(path: str | os.PathLike) -> Any:
    """Unpickle a ``torch.save`` file with the allow-list; tensors on CPU, classes as records.

    Raises :class:`YoloportError` if the file is missing, not a PyTorch checkpoint, a
    TorchScript archive, truncated/corrupt, or names a global outside the allow-list.
    """
    p = Path(path)
    kind = sniff_file(p)
    if kind in ("missing", "directory", "bad-zip"):
        require_checkpoint_file(p, kind)
    if kind == "torchscript":
        raise YoloportError(
            f"{p} is a TorchScript archive (torch.jit.save), not a training checkpoint; "
            "give yoloport the .pt written by Ultralytics' train.py"
        )
    if kind == "zip":
        raise YoloportError(f"{p} is a zip file but not a PyTorch checkpoint (no data.pkl)")
    if kind == "safetensors":
        raise YoloportError(f"{p} is a safetensors file, not a PyTorch (.pt) checkpoint")
    if kind not in ("torch-zip", "pickle"):
        raise YoloportError(f"{p} is not a PyTorch checkpoint")
    if kind == "torch-zip":
        from .checkpoint import zip_crc_problem

        problem = zip_crc_problem(p)
        if problem:
            raise YoloportError(f"{p} is corrupt: {problem}")
    if os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "0").lower() in ("1", "y", "yes", "true"):
        raise YoloportError(
            "TORCH_FORCE_WEIGHTS_ONLY_LOAD is set, which stops yoloport's own restricted unpickler; "
            f"unset it to import {p}"
        )
    try:
        with open(p, "rb") as f, warnings.catch_warnings():
            # torch's legacy loader warns that it cannot find the source of our record classes
            warnings.filterwarnings("ignore", message="Couldn't retrieve source code")
            warnings.filterwarnings("ignore", category=torch.serialization.SourceChangeWarning)
            # A file object (not the path) keeps torch off its path-based shortcuts (.safetensors
            # suffix, mmap); TorchScript archives were refused above, so torch.jit is never reached.
            return torch.load(f, map_location="cpu", weights_only=False, pickle_module=restricted_pickle, mmap=False)
    except RefusedGlobal as e:
        raise YoloportError(
            f"refusing to load {p}: the checkpoint asks for '{e.qualname}', which is not on yoloport's allow-list"
        ) from None
    except RefusedPickle as e:
        raise YoloportError(f"refusing to load {p}: {e}") from None
    except YoloportError:
        raise
    except Exception as e:  # truncated zip member, bad pickle opcode, EOF, bad storage record...
        raise YoloportError(
            f"{p} is not a readable PyTorch checkpoint (truncated or corrupt?): {type(e).__name__}: {e}"
        ) from None


# --------------------------------------------------------------------------------------------
# reading the model out of the records
# --------------------------------------------------------------------------------------------
@dataclass
class UltralyticsCheckpoint:
    """What yoloport takes from an Ultralytics YOLOv5 checkpoint.

    Attributes:
        yaml: the model config dict stored on the model (``model.yaml``).
        state_dict: tensors named as ``nn.Module.state_dict()`` names them on the original model
            (``model.0.conv.weight``, ``model.24.m.0.weight``, ``model.24.anchors``, BN
            ``running_mean``/``running_var``/``num_batches_tracked``); floating tensors are
            float32, integer ones keep their dtype. Non-persistent buffers are left out.
        names: class names, index = class id.
        nc: number of classes (the Detect head's).
        stride: output strides per detection level, e.g. ``[8.0, 16.0, 32.0]``.
        anchors_grid_units: Detect's ``anchors`` buffer, ``[nl][na][2]`` in grid units
            (multiply by ``stride[i]`` for pixels).
        activation: class name of the ``act`` module of the ``Conv`` blocks (``'SiLU'``...).
        module_types: the layer class names of ``model.model`` in order (``['Focus', 'Conv', ...]``).
        layer_from: each layer's ``f`` (input index or list of indices), as Ultralytics stored it.
        hyp: the training hyperparameters stored on the model (``model.hyp``), if any.
        detect_attrs: the Detect head's plain attributes (``nc``, ``no``, ``nl``, ``na``,
            ``inplace``, ``anchor_grid_buffer``...), JSON-able values only.
        source: provenance: ``key`` (``'ema'`` or ``'model'``), ``epoch``, ``date``, ``git``,
            ``best_fitness``, ``dtype`` of the stored weights, ``model_class``, when present.
        param_count: number of ``_parameters`` elements (buffers excluded).
    """

    yaml: dict
    state_dict: dict[str, torch.Tensor]
    names: list[str]
    nc: int
    stride: list[float]
    anchors_grid_units: list[list[list[float]]]
    activation: str | None
    module_types: list[str]
    layer_from: list[Any]
    detect_attrs: dict[str, Any]
    hyp: dict[str, Any] | None = None
    source: dict[str, Any] = field(default_factory=dict)
    param_count: int = 0


class _Malformed(Exception):
    """Internal: the records do not look like a YOLOv5 model; the message says what is off."""


def _state(rec: Any, what: str) -> dict:
    """The pickled ``__dict__`` of a record, or :class:`_Malformed` naming ``what``."""
    if not isinstance(rec, InertRecord) or not isinstance(rec.state, dict):
        raise _Malformed(f"{what} is a {type(rec).__name__}, not a pickled module")
    return rec.state


def _layer(rec: Any, index: int) -> InertRecord:
    """Layer ``index`` of ``model.model``, checked to be a pickled module."""
    _state(rec, f"layer {index} of model.model")
    return rec


def _mapping(value: Any, what: str) -> Mapping:
    """``value`` if it is a mapping (None reads as empty), else :class:`_Malformed`."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _Malformed(f"{what} is a {type(value).__name__}, expected a dict")
    return value


def _walk_module(
    rec: Any, prefix: str, out: dict[str, torch.Tensor], params: dict[int, int], ancestors: tuple[int, ...] = ()
) -> None:
    """Fill ``out`` in ``nn.Module.state_dict()`` order (parameters, persistent buffers, then
    children); ``params`` collects ``id(tensor) -> numel`` of every parameter (shared ones once)."""
    if id(rec) in ancestors:
        raise _Malformed(f"module {prefix.rstrip('.')} contains itself")
    st = _state(rec, prefix.rstrip(".") or "model")
    for name, t in _mapping(st.get("_parameters"), f"{prefix}_parameters").items():
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise _Malformed(f"parameter {prefix}{name} is a {type(t).__name__}, not a tensor")
        out[prefix + name] = t
        params[id(t)] = t.numel()
    non_persistent = st.get("_non_persistent_buffers_set") or set()
    for name, t in _mapping(st.get("_buffers"), f"{prefix}_buffers").items():
        if t is None or name in non_persistent:
            continue
        if not isinstance(t, torch.Tensor):
            raise _Malformed(f"buffer {prefix}{name} is a {type(t).__name__}, not a tensor")
        out[prefix + name] = t
    for name, child in _mapping(st.get("_modules"), f"{prefix}_modules").items():
        if child is not None:
            _walk_module(child, f"{prefix}{name}.", out, params, ancestors + (id(rec),))


def _to_float32(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Plain (detached, non-Parameter) contiguous CPU tensors; floating ones as float32."""
    out = {}
    for k, t in sd.items():
        t = t.detach()
        if t.is_floating_point():
            t = t.to(torch.float32)
        out[k] = t.contiguous()
    return out


_SKIP = object()  # "not representable as JSON"


def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON types (tuples, tensors and arrays become lists), or ``_SKIP``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (torch.Tensor, np.ndarray, np.generic)):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        items = [_jsonable(v) for v in value]
        return _SKIP if any(i is _SKIP for i in items) else items
    if isinstance(value, Mapping):
        items = {str(k): _jsonable(v) for k, v in value.items()}
        return _SKIP if any(v is _SKIP for v in items.values()) else items
    return _SKIP


_MAX_ATTR_ELEMENTS = 64


def _holds_big_tensor(value: Any) -> bool:
    """True for a tensor (or a list/tuple of tensors) with more than 64 elements in total:
    cached grids, not attributes worth reporting."""
    tensors = value if isinstance(value, (list, tuple)) else [value]
    return sum(t.numel() for t in tensors if isinstance(t, torch.Tensor)) > _MAX_ATTR_ELEMENTS


def _names_list(names: Any, nc: int) -> list[str]:
    """Ultralytics stores names as a list or as ``{index: name}``; default ``['0', '1', ...]``."""
    if names is None:
        return [str(i) for i in range(nc)]
    if isinstance(names, Mapping):
        try:
            keyed = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError):
            raise _Malformed("names is a dict whose keys are not class indices") from None
        if sorted(keyed) != list(range(len(keyed))):
            raise _Malformed(f"names has keys {sorted(keyed)}, expected 0..{len(keyed) - 1}")
        return [keyed[i] for i in range(len(keyed))]
    if isinstance(names, (list, tuple)):
        return [str(n) for n in names]
    raise _Malformed(f"names is a {type(names).__name__}, expected a list or dict")


def _activation(layers: list[Any]) -> str | None:
    """The most common ``act`` class name among Conv records anywhere in the layer tree."""
    counts: collections.Counter[str] = collections.Counter()
    stack = list(layers)
    seen: set[int] = set()
    while stack:
        rec = stack.pop()
        if not isinstance(rec, InertRecord) or id(rec) in seen or not isinstance(rec.state, dict):
            continue
        seen.add(id(rec))
        mods = rec.state.get("_modules")
        if not isinstance(mods, Mapping):
            continue
        if rec.short_name == "Conv" and isinstance(mods.get("act"), InertRecord):
            counts[mods["act"].short_name] += 1
        stack.extend(mods.values())
    return counts.most_common(1)[0][0] if counts else None


def _pick_model(obj: Any) -> tuple[Any, dict[str, Any]]:
    """The model record of a loaded checkpoint and the provenance of the top-level dict."""
    if isinstance(obj, InertRecord):  # torch.save(model) directly
        return obj, {"key": None}
    if not isinstance(obj, Mapping):
        raise _Malformed(f"unknown checkpoint format: the file holds a {type(obj).__name__}, not a dict")
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise _Malformed(
            "unknown checkpoint format: a plain state_dict (tensors only) without the model and its yaml; "
            "yoloport needs the full Ultralytics checkpoint (with 'model'), or a yoloport .safetensors"
        )
    key = "ema" if obj.get("ema") is not None else "model"
    model = obj.get(key)
    if model is None:
        keys = ", ".join(sorted(map(str, obj.keys()))) or "none"
        raise _Malformed(f"unknown checkpoint format: no model under 'model' or 'ema' (top-level keys: {keys})")
    if isinstance(model, Mapping):
        raise _Malformed(
            f"unknown checkpoint format: '{key}' holds a state_dict, not the pickled model with its yaml"
        )
    info: dict[str, Any] = {"key": key}
    for k in ("epoch", "date", "git", "best_fitness", "updates", "wandb_id"):
        if k in obj:
            v = _jsonable(obj[k])
            if isinstance(v, list) and len(v) == 1 and isinstance(v[0], (int, float)):
                v = v[0]  # v5.0 stores best_fitness as a 1-element numpy array
            if v is not _SKIP:
                info[k] = v
    return model, info


def _check_model_record(model: Any) -> dict:
    """The model's state, after checking it is a YOLOv5 (anchor-based) detection model."""
    st = _state(model, "the checkpoint's model")
    qual = type(model).qualname
    if qual.startswith("ultralytics."):
        raise _Malformed(
            f"the model is an 'ultralytics' package model ({qual}: YOLOv8/YOLOv5u family, anchor-free); "
            "yoloport imports models from the YOLOv5 repository (models.yolo.Model)"
        )
    if not qual.startswith("models.") or qual.rsplit(".", 1)[-1] not in ("Model", "DetectionModel"):
        raise _Malformed(f"the model is a {qual}, not a YOLOv5 detection model (models.yolo.Model/DetectionModel)")
    return st


def _detect_info(detect: Any, stride_attr: Any) -> tuple[dict[str, Any], list[float], list]:
    """Detect's plain attributes, the strides and the anchors in grid units."""
    st = _state(detect, "the last layer")
    if detect.short_name != "Detect":
        raise _Malformed(
            f"the last layer is {type(detect).qualname}, not Detect: yoloport imports detection models only"
        )
    buffers = _mapping(st.get("_buffers"), "Detect._buffers")
    anchors = buffers.get("anchors")
    if not isinstance(anchors, torch.Tensor) or anchors.ndim != 3 or anchors.shape[-1] != 2:
        raise _Malformed("the Detect head has no anchors buffer of shape [nl, na, 2]")
    stride = stride_attr if stride_attr is not None else st.get("stride")
    if not isinstance(stride, torch.Tensor) or stride.numel() != anchors.shape[0]:
        raise _Malformed("the checkpoint has no stride for each detection level")
    attrs: dict[str, Any] = {}
    for k, v in st.items():
        if k.startswith("_") or k == "training" or _holds_big_tensor(v):
            continue  # torch internals; cached grids (v6.1+ keeps grid/anchor_grid as tensor lists)
        jv = _jsonable(v)
        if jv is not _SKIP:
            attrs[k] = jv
    attrs["anchor_grid_buffer"] = "anchor_grid" in buffers
    strides = [float(s) for s in stride.flatten().tolist()]
    return attrs, strides, anchors.detach().to(torch.float32).tolist()


def _read_model(model: Any) -> dict[str, Any]:
    """Everything :class:`UltralyticsCheckpoint` needs from the model record."""
    st = _check_model_record(model)
    yaml = _jsonable(st.get("yaml"))  # a plain-types copy: nothing unpickled leaks into the config
    if not isinstance(yaml, dict):
        raise _Malformed("the model carries no yaml config dict (or one with non-plain values)")
    seq = _mapping(st.get("_modules"), "model._modules").get("model")
    layers = list(_mapping(_state(seq, "model.model").get("_modules"), "model.model._modules").values())
    if not layers:
        raise _Malformed("model.model has no layers")
    raw_sd: dict[str, torch.Tensor] = {}
    params: dict[int, int] = {}
    _walk_module(model, "", raw_sd, params)
    n_params = sum(params.values())
    attrs, strides, anchors = _detect_info(layers[-1], st.get("stride"))
    nc = attrs.get("nc", yaml.get("nc"))
    if not isinstance(nc, int):
        raise _Malformed("cannot tell the number of classes (no Detect.nc nor yaml nc)")
    names = _names_list(st.get("names"), nc)
    if len(names) != nc:
        raise _Malformed(f"the model has {nc} classes but {len(names)} names")
    return {
        "yaml": yaml,
        "raw_state_dict": raw_sd,
        "param_count": n_params,
        "names": names,
        "nc": nc,
        "stride": strides,
        "anchors_grid_units": anchors,
        "activation": _activation(layers),
        "module_types": [_layer(r, i).short_name for i, r in enumerate(layers)],
        "layer_from": [_jsonable(_layer(r, i).state.get("f")) for i, r in enumerate(layers)],
        "detect_attrs": attrs,
        "hyp": hyp if isinstance(hyp := _jsonable(st.get("hyp")), dict) else None,
    }


def read_ultralytics_checkpoint(path: str | os.PathLike) -> UltralyticsCheckpoint:
    """Read an Ultralytics YOLOv5 ``.pt`` checkpoint without importing or running its code.

    Takes ``ckpt['ema']`` when present and not None, else ``ckpt['model']`` (a bare pickled model
    is accepted too). Raises :class:`YoloportError` for a missing/corrupt/non-PyTorch file, a
    global outside the allow-list, or a checkpoint that is not a YOLOv5 detection model.
    """
    p = Path(path)
    obj = safe_torch_load(p)
    try:
        model, info = _pick_model(obj)
        m = _read_model(model)
    except _Malformed as e:
        raise YoloportError(f"cannot import {p}: {e}") from None
    except RecursionError:  # self-referencing or absurdly nested containers
        raise YoloportError(f"cannot import {p}: its structure is nested too deeply or refers to itself") from None
    raw_sd = m.pop("raw_state_dict")
    float_dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in raw_sd.values() if t.is_floating_point()})
    info["dtype"] = float_dtypes[0] if len(float_dtypes) == 1 else float_dtypes
    info["model_class"] = type(model).qualname
    if isinstance(model.state.get("yaml_file"), str):
        info["yaml_file"] = model.state["yaml_file"]
    return UltralyticsCheckpoint(state_dict=_to_float32(raw_sd), source=info, **m)
