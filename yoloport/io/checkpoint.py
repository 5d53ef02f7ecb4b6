"""yoloport's own checkpoint format, atomic file writes, and checkpoint-format sniffing.

A yoloport checkpoint is a `safetensors <https://github.com/huggingface/safetensors>`_ file:
the tensors are the model's ``state_dict`` and the safetensors ``__metadata__`` map holds one
key, ``"yoloport"``, whose value is a JSON document::

    {"format_version": 1, "yaml": {...}, "names": [...], "stride": [...], "anchors": [...],
     "img_size": [h, w], ...any other JSON-able keys the writer adds...}

Loading one never runs code (no pickle), unlike an Ultralytics ``.pt``.

Every write goes through :func:`atomic_path` / :func:`atomic_write`: the bytes land in a
temporary file next to the target, are fsync'ed, and only then ``os.replace`` the target, so a
crash or an exception mid-write leaves the previous file untouched and no temporary behind.
"""
from __future__ import annotations

import json
import os
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch

from yoloport.errors import YoloportError

from .atomic import atomic_path, atomic_write  # noqa: F401 (re-exported: written here before io/atomic.py)

#: Version of the JSON document stored under ``__metadata__["yoloport"]``.
FORMAT_VERSION = 1
#: The safetensors metadata key that marks a yoloport checkpoint.
METADATA_KEY = "yoloport"

_SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024  # the limit safetensors itself enforces
_ZIP_MAGIC = b"PK\x03\x04"
_NOT_A_CHECKPOINT = "is not a checkpoint yoloport can read (expected a yoloport .safetensors or an Ultralytics .pt)"

FileKind = Literal[
    "missing", "directory", "empty", "safetensors", "torch-zip", "torchscript", "zip", "bad-zip", "pickle", "other"
]


# --------------------------------------------------------------------------------------------
# sniffing
# --------------------------------------------------------------------------------------------
def _safetensors_header(path: Path) -> dict | None:
    """The parsed JSON header of a safetensors file, or None if ``path`` is not one."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return None
            (n,) = struct.unpack("<Q", head)
            if n < 2 or n > _SAFETENSORS_MAX_HEADER or n > size - 8:
                return None
            first = f.read(1)
            if first != b"{":
                return None
            header = json.loads(first + f.read(n - 1))
    except (OSError, ValueError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
    return header if isinstance(header, dict) else None


def _zip_kind(path: Path) -> FileKind:
    """'torch-zip' (torch.save archive), 'torchscript' (torch.jit.save archive), any other 'zip',
    or 'bad-zip' (starts like a zip but its directory cannot be read: truncated or corrupt)."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return "bad-zip"
    if any(n == "constants.pkl" or n.endswith("/constants.pkl") for n in names):
        return "torchscript"
    if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        return "torch-zip"
    return "zip"


def sniff_file(path: str | os.PathLike) -> FileKind:
    """Classify a file by its bytes, never by its name. Reads at most the headers.

    Returns one of ``'missing'``, ``'directory'``, ``'empty'``, ``'safetensors'``,
    ``'torch-zip'`` (``torch.save`` zip archive with a ``data.pkl``), ``'torchscript'``,
    ``'zip'`` (any other zip), ``'bad-zip'`` (truncated/corrupt zip), ``'pickle'`` (starts with a pickle PROTO opcode,
    e.g. torch's legacy format) or ``'other'``.
    """
    p = Path(path)
    if not p.exists():
        return "missing"
    if p.is_dir():
        return "directory"
    try:
        with open(p, "rb") as f:
            head = f.read(4)
    except OSError:
        return "other"
    if not head:
        return "empty"
    if head == _ZIP_MAGIC:
        return _zip_kind(p)
    if head[:1] == b"\x80" and len(head) >= 2 and 2 <= head[1] <= 5:
        return "pickle"
    if _safetensors_header(p) is not None:
        return "safetensors"
    return "other"


def is_safetensors(path: str | os.PathLike) -> bool:
    """True if ``path`` is a readable file whose bytes start with a valid safetensors header."""
    p = Path(path)
    return p.is_file() and _safetensors_header(p) is not None


def require_checkpoint_file(path: Path, kind: FileKind) -> None:
    """Raise the user-facing error if ``kind`` (from :func:`sniff_file`) says ``path`` cannot be a
    checkpoint at all: missing, a directory, empty, or a truncated zip."""
    if kind == "missing":
        raise YoloportError(f"{path} does not exist")
    if kind == "directory":
        raise YoloportError(f"{path} is a directory, not a checkpoint file")
    if kind == "empty":
        raise YoloportError(f"{path} is empty: {_NOT_A_CHECKPOINT}")
    if kind == "bad-zip":
        raise YoloportError(f"{path} is truncated or corrupt (its zip directory cannot be read)")


def detect_checkpoint_format(path: str | os.PathLike) -> Literal["yoloport", "ultralytics", "unknown"]:
    """Tell a yoloport checkpoint from an Ultralytics ``.pt`` by their bytes.

    - ``'yoloport'``: a safetensors file carrying yoloport's ``__metadata__`` key;
    - ``'ultralytics'``: a ``torch.save`` file (zip with ``data.pkl``, or torch's legacy pickle
      format); that it really holds a YOLOv5 model is only known after
      :func:`yoloport.io.ultralytics.read_ultralytics_checkpoint` reads it;
    - ``'unknown'``: a recognisable container that is neither (a safetensors file without
      yoloport metadata, a TorchScript archive, a zip without ``data.pkl``).

    Raises :class:`YoloportError` for a missing path, a directory, an empty file, a truncated
    zip or bytes that are no checkpoint container at all.
    """
    p = Path(path)
    kind = sniff_file(p)
    require_checkpoint_file(p, kind)
    if kind == "safetensors":
        meta = (_safetensors_header(p) or {}).get("__metadata__") or {}
        return "yoloport" if isinstance(meta, dict) and METADATA_KEY in meta else "unknown"
    if kind in ("torch-zip", "pickle"):
        return "ultralytics"
    if kind in ("torchscript", "zip"):
        return "unknown"
    raise YoloportError(f"{p} {_NOT_A_CHECKPOINT}")


# --------------------------------------------------------------------------------------------
# yoloport checkpoints
# --------------------------------------------------------------------------------------------
def _json_default(obj: Any) -> Any:
    """JSON fallback for the values checkpoints commonly carry (numpy/torch scalars, paths)."""
    if isinstance(obj, (Path, os.PathLike)):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().tolist()
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy arrays and scalars
        return obj.tolist()
    raise TypeError(f"checkpoint metadata value of type {type(obj).__name__} is not JSON-serialisable: {obj!r}")


def _tensors_for_safetensors(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, CPU, contiguous tensors; any tensor sharing storage with an earlier one is cloned
    (safetensors refuses shared storage, e.g. tied weights or views)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, t in state_dict.items():
        if not isinstance(name, str):
            raise TypeError(f"state_dict keys must be str, got {type(name).__name__}: {name!r}")
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"state_dict[{name!r}] is a {type(t).__name__}, not a torch.Tensor")
        t = t.detach().to("cpu")
        ptr = t.untyped_storage().data_ptr() if t.numel() else None
        if ptr is not None and ptr in seen:
            t = t.clone(memory_format=torch.contiguous_format)
        elif not t.is_contiguous():
            t = t.contiguous()
        if ptr is not None:
            seen.add(ptr)
        out[name] = t
    return out


def save_checkpoint(path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> Path:
    """Write a yoloport checkpoint (safetensors + JSON metadata) atomically; returns the path.

    ``meta`` is any JSON-able mapping (tuples become lists; numpy/torch scalars and arrays,
    ``Path`` and sets are converted). Conventional keys: ``yaml`` (the model config dict),
    ``names``, ``stride``, ``anchors``, ``img_size`` (``[h, w]``), plus whatever the writer needs
    (training state, provenance). ``format_version`` is reserved.
    """
    if "format_version" in meta:
        raise ValueError("meta key 'format_version' is reserved for yoloport's checkpoint format")
    doc = json.dumps({"format_version": FORMAT_VERSION, **meta}, default=_json_default, allow_nan=True)
    tensors = _tensors_for_safetensors(state_dict)
    from safetensors.torch import save as _st_save

    data = _st_save(tensors, metadata={METADATA_KEY: doc})
    return atomic_write(path, lambda f: f.write(data))


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a yoloport checkpoint: ``(state_dict, meta)`` with CPU tensors and the metadata dict
    as it was given to :func:`save_checkpoint` (JSON types: tuples come back as lists).

    Raises :class:`YoloportError` for anything that is not a yoloport checkpoint, pointing
    Ultralytics ``.pt`` files to the importer.
    """
    p = Path(path)
    fmt = detect_checkpoint_format(p)
    if fmt == "ultralytics":
        raise YoloportError(
            f"{p} is a PyTorch (.pt) checkpoint, not a yoloport .safetensors checkpoint; "
            "import it with yoloport.io.ultralytics.read_ultralytics_checkpoint"
        )
    if fmt != "yoloport":
        raise YoloportError(f"{p} is not a yoloport checkpoint (no '{METADATA_KEY}' metadata): {_NOT_A_CHECKPOINT}")
    check_safetensors_layout(p)
    from safetensors import safe_open

    try:
        with safe_open(str(p), framework="pt", device="cpu") as f:
            raw_meta = (f.metadata() or {}).get(METADATA_KEY)
            state_dict = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own SafetensorError for corrupt/truncated files
        raise YoloportError(f"{p} is a corrupt or truncated yoloport checkpoint: {e}") from None
    try:
        doc = json.loads(raw_meta)
    except (TypeError, ValueError):
        raise YoloportError(f"{p} has unreadable yoloport metadata (not JSON)") from None
    if not isinstance(doc, dict):
        raise YoloportError(f"{p} has malformed yoloport metadata (expected a JSON object)")
    version = doc.pop("format_version", None)
    if not isinstance(version, int):
        raise YoloportError(f"{p} has malformed yoloport metadata (no format_version)")
    if version > FORMAT_VERSION:
        raise YoloportError(
            f"{p} was written by a newer yoloport (checkpoint format {version}, this one reads up to "
            f"{FORMAT_VERSION}); upgrade yoloport"
        )
    if "yaml" in doc:  # a model checkpoint: its description must be sound before anything is built
        problem = model_meta_problem(doc)
        if problem:
            raise YoloportError(f"{p} has inconsistent model metadata: {problem}")
    return state_dict, doc


# --------------------------------------------------------------------------------------------
# verification
# --------------------------------------------------------------------------------------------
_ST_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
                "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def safetensors_layout_problem(header: dict, data_size: int) -> str | None:
    """What is wrong with a safetensors header for a data section of ``data_size`` bytes, or None.

    Every tensor entry needs a known ``dtype``, a ``shape`` of non-negative ints and ``data_offsets``
    ``[begin, end]`` with ``end - begin == prod(shape) * itemsize``; the entries, sorted by offset,
    must tile the data section exactly (no gap, no overlap, nothing missing at the end)."""
    spans = []
    for name, e in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(e, dict):
            return f"tensor {name!r} has no description"
        dtype, shape, offs = e.get("dtype"), e.get("shape"), e.get("data_offsets")
        if dtype not in _ST_ITEMSIZE:
            return f"tensor {name!r} has unknown dtype {dtype!r}"
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            return f"tensor {name!r} has a malformed shape {shape!r}"
        if (not isinstance(offs, list) or len(offs) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offs) or not 0 <= offs[0] <= offs[1]):
            return f"tensor {name!r} has malformed data offsets {offs!r}"
        n = _ST_ITEMSIZE[dtype]
        for d in shape:
            n *= d
        if offs[1] - offs[0] != n:
            return f"tensor {name!r} ({dtype} {shape}) needs {n} bytes but its offsets span {offs[1] - offs[0]}"
        spans.append((offs[0], offs[1], name))
    end = 0
    for begin, stop, name in sorted(spans):
        if begin != end:
            return f"tensor {name!r} starts at byte {begin} of the data, expected {end} (gap or overlap)"
        end = stop
    if end != data_size:
        return f"the tensors cover {end} bytes but the file holds {data_size} bytes of data (truncated or padded)"
    return None


def check_safetensors_layout(path: Path) -> None:
    """A YoloportError when ``path``'s safetensors header does not describe its bytes exactly."""
    header = _safetensors_header(path)
    if header is None:
        raise YoloportError(f"{path} is not a readable safetensors file")
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
    problem = safetensors_layout_problem(header, path.stat().st_size - 8 - n)
    if problem:
        raise YoloportError(f"{path} is corrupt or truncated: {problem}")


def zip_crc_problem(path: Path) -> str | None:
    """The first member of a zip archive whose bytes fail their CRC-32, as a sentence, or None.

    ``torch.load`` does not check the CRCs a ``torch.save`` archive records, so flipped bytes in a
    tensor would load as wrong weights without this."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
        return f"its zip archive cannot be read ({e})"
    except Exception as e:  # noqa: BLE001 - zlib.error and friends from a damaged deflate stream
        return f"its zip archive cannot be read ({type(e).__name__}: {e})"
    return None if bad is None else f"zip member {bad!r} fails its CRC check (the file is damaged)"


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


def model_meta_problem(meta: Mapping[str, Any]) -> str | None:
    """What is inconsistent in a model checkpoint's metadata, or None.

    Checked: ``yaml`` is a mapping with a positive int ``nc`` and ``anchors`` (a count or one list of
    ``w, h`` pairs per level) and ``backbone``/``head`` lists; ``names`` (when given) is a list of
    strings with exactly ``nc`` entries; ``nc`` (when given) equals the YAML's; ``stride`` is one
    positive number per detection level; ``anchors_px`` is ``[levels][anchors][2]`` positive numbers;
    ``img_size`` is ``[h, w]`` positive ints or null."""
    y = meta.get("yaml")
    if not isinstance(y, Mapping):
        return f"'yaml' must be the model's config mapping, got {type(y).__name__} {y!r:.40}"
    nc = y.get("nc")
    if not _is_count(nc):
        return f"the model yaml's nc must be a positive integer, got {nc!r:.40}"
    if not isinstance(y.get("backbone"), list) or not isinstance(y.get("head"), list):
        return "the model yaml has no 'backbone' and 'head' layer lists"
    anchors = y.get("anchors")
    levels = None
    if isinstance(anchors, list):
        if not anchors or not all(isinstance(a, list) and a and len(a) % 2 == 0 and all(_is_number(x) and x > 0 for x in a)
                                  for a in anchors):
            return f"the model yaml's anchors must be one list of positive w, h pairs per level, got {anchors!r:.60}"
        levels = len(anchors)
    elif not _is_count(anchors):
        return f"the model yaml's anchors must be a count or per-level lists, got {anchors!r:.40}"
    if "nc" in meta and meta["nc"] != nc:
        return f"nc is {meta['nc']!r} but the model yaml says {nc}"
    names = meta.get("names")
    if names is not None:
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            return f"names must be a list of strings, got {type(names).__name__} {names!r:.40}"
        if len(names) != nc:
            return f"{len(names)} names for {nc} classes"
    stride = meta.get("stride")
    if stride is not None:
        if not isinstance(stride, list) or not stride or not all(_is_number(v) and v > 0 for v in stride):
            return f"stride must be a list of positive numbers, got {stride!r:.40}"
        if levels is not None and len(stride) != levels:
            return f"{len(stride)} strides for {levels} detection levels"
        levels = len(stride)
    apx = meta.get("anchors_px")
    if apx is not None:
        ok = isinstance(apx, list) and apx and all(
            isinstance(lv, list) and lv and all(isinstance(a, list) and len(a) == 2 and all(_is_number(x) and x > 0 for x in a)
                                                for a in lv) for lv in apx)
        if not ok:
            return f"anchors_px must be [levels][anchors][w, h] positive numbers, got {apx!r:.60}"
        if levels is not None and len(apx) != levels:
            return f"anchors_px has {len(apx)} levels, the model {levels}"
    size = meta.get("img_size")
    if size is not None and not (isinstance(size, list) and len(size) == 2 and all(_is_count(v) for v in size)):
        return f"img_size must be [h, w] positive integers, got {size!r:.40}"
    return None
