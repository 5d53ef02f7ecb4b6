"""Run configs and the model registry.

A **run config** is a YAML bundling what a run needs (the seed's ``config_v5s_conv.yaml``)::

    data: data/motor.yaml          # Ultralytics data YAML
    model: yolov5s-conv            # model YAML or bundled config (training)
    weights: runs/motor/best.safetensors
    model_key: yolov5s-conv-9-20211104
    img_size: [736, 416]           # W H
    conf_thres: 0.2
    iou_thres: 0.3
    batch_size: 16
    epochs: 100
    hyp: {lr0: 0.01}               # or a path to a hyperparameter YAML

Keys use the command-line names with ``_`` or ``-``. Precedence: command-line flag > run config >
the command's default.

The **model registry** maps a model key to weights, config, image size, names and export settings
(the seed's ``config.py`` with ``--model_key yolov5s-conv-9-20211104``)::

    models:
      yolov5s-conv-9-20211104:
        weights: weights/yolov5s-conv-9.safetensors   # relative to the registry file
        cfg: yolov5s-conv
        img_size: [736, 416]
        names: [car, bus, truck, motorcycle, bicycle, person, tricycle, van, other]
        export: {mode: split, opset: 12, target: rknn, platform: rk3588}

Registries searched: ``--registry FILE``, then ``$YOLOPORT_REGISTRY``, then the bundled one
(``yoloport/configs/models.yaml``). ``${fixtures}`` in a path expands to the shared fixtures folder
and ``${package}`` to the installed package.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import YoloportError
from .fixtures import fixtures_dir

PACKAGE_DIR = Path(__file__).resolve().parent
BUNDLED_REGISTRY = PACKAGE_DIR / "configs" / "models.yaml"


def read_yaml(path, what: str = "YAML file") -> dict:
    """Read a YAML mapping or raise one clear error."""
    p = Path(path)
    if not p.is_file():
        raise YoloportError(f"{what} {p} does not exist")
    try:
        d = yaml.safe_load(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise YoloportError(f"{what} {p} is not valid YAML: {str(e).splitlines()[0]}") from None
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise YoloportError(f"{what} {p} must be a mapping of keys to values")
    return d


def expand_path(value: str | None, base: Path | None = None) -> str | None:
    """Expand ``${fixtures}``, ``${package}``, ``~`` and make relative paths relative to ``base``."""
    if value is None:
        return None
    s = str(value)
    if "${fixtures}" in s:
        fx = fixtures_dir()
        if fx is None:
            raise YoloportError(f"{s} refers to the shared fixtures, which are not present (set YOLOPORT_FIXTURES)")
        s = s.replace("${fixtures}", str(fx))
    s = os.path.expanduser(s.replace("${package}", str(PACKAGE_DIR)))
    if base is not None and not os.path.isabs(s) and ("/" in s or s.endswith((".pt", ".safetensors", ".yaml", ".yml"))):
        candidate = base / s
        if candidate.exists() or not Path(s).exists():
            s = str(candidate)
    return s


# ----------------------------------------------------------------------------- run config


def load_run_config(path) -> dict:
    """A run config as a dict with ``-`` normalised to ``_`` and paths relative to the file."""
    p = Path(path)
    d = read_yaml(p, "run config")
    out = {}
    for k, v in d.items():
        key = str(k).replace("-", "_")
        if key in {"data", "weights", "model", "cfg", "save_dir", "project", "source", "hyp", "registry"} and isinstance(v, str):
            v = expand_path(v, p.parent)
        out[key] = v
    if "model_key" in out and out.get("model_key") is not None:
        out["model_key"] = str(out["model_key"])
    return out


def resolve_settings(args: argparse.Namespace, defaults: dict) -> argparse.Namespace:
    """Merge ``defaults`` < ``args.config`` (a run config) < flags given on the command line.

    Flags meant to be overridable must be declared with ``default=None`` in the parser. The shared
    options (image sizes, thresholds, batch sizes, counts) are validated here, before any work, by
    :func:`yoloport.options.check_options`.
    """
    from .options import check_options

    cfg = load_run_config(args.config) if getattr(args, "config", None) else {}
    merged = dict(defaults)
    for k, v in cfg.items():
        merged[k] = v
    for k, v in vars(args).items():
        if v is not None or k not in merged:
            merged[k] = v
    check_options(merged)
    return argparse.Namespace(**merged)


def cache_dir() -> Path:
    """Where yoloport keeps results it can reuse between runs (the port's fp32 reference metrics):
    ``$YOLOPORT_CACHE``, else ``~/.cache/yoloport``."""
    return Path(os.environ.get("YOLOPORT_CACHE") or Path.home() / ".cache" / "yoloport")


def add_run_folder_arguments(p, default_project: str, replaces: str) -> None:
    """``--project``, ``--name``, ``--exist-ok`` and ``--overwrite`` of a command that writes a run folder
    (``replaces``: what ``--overwrite`` replaces there, for the help)."""
    p.add_argument("--project", help=f"parent of the run folder ({default_project})")
    p.add_argument("--name", help="run folder name (exp)")
    p.add_argument("--exist-ok", dest="exist_ok", action="store_true", default=None,
                   help="write into an existing run folder (files already there are kept: a clash is an error)")
    p.add_argument("--overwrite", action="store_true", default=None,
                   help=f"with an existing run folder, replace {replaces} there")


def add_common_arguments(p: argparse.ArgumentParser, weights: bool = True) -> None:
    """Flags every model command shares: ``--config``, ``--model-key``, ``--registry``, ``--weights``."""
    p.add_argument("--config", help="run config YAML (flags on the command line override it)")
    p.add_argument("--model-key", "--model_key", dest="model_key", help="model key from the registry")
    p.add_argument("--registry", help="model registry YAML (default: $YOLOPORT_REGISTRY, then the bundled one)")
    if weights:
        p.add_argument("--weights", help="checkpoint (.safetensors or Ultralytics .pt), model YAML or bundled config")


# ----------------------------------------------------------------------------- model registry


@dataclass
class RegistryEntry:
    key: str
    weights: str | None = None
    cfg: str | None = None
    img_size: tuple[int, int] | None = None  # (h, w)
    names: list[str] | None = None
    export: dict = field(default_factory=dict)
    source: str = ""


def registry_paths(explicit=None) -> list[Path]:
    paths = []
    if explicit:
        paths.append(Path(explicit))
    if os.environ.get("YOLOPORT_REGISTRY"):
        paths.append(Path(os.environ["YOLOPORT_REGISTRY"]))
    paths.append(BUNDLED_REGISTRY)
    return paths


def read_registry(path) -> dict[str, RegistryEntry]:
    p = Path(path)
    d = read_yaml(p, "model registry")
    models = d.get("models", d)
    if not isinstance(models, dict):
        raise YoloportError(f"model registry {p}: 'models' must map model keys to settings")
    out = {}
    for key, e in models.items():
        if not isinstance(e, dict):
            raise YoloportError(f"model registry {p}: entry {key!r} must be a mapping")
        size = e.get("img_size")
        hw = None
        if size is not None:
            size = [size, size] if isinstance(size, int) else list(size)
            hw = (int(size[1]), int(size[0]))  # registry stores W H like the command line
        out[str(key)] = RegistryEntry(
            key=str(key),
            weights=str(e["weights"]) if e.get("weights") else None,  # expanded when looked up
            cfg=e.get("cfg") or e.get("model"),
            img_size=hw,
            names=e.get("names"),
            export=dict(e.get("export") or {}),
            source=str(p),
        )
    return out


def lookup_model_key(key: str, registry=None, required: bool = True) -> RegistryEntry | None:
    """The registry entry for ``key``; explicit registry first, then env, then bundled."""
    seen = []
    for path in registry_paths(registry):
        if not path.exists():
            if path != BUNDLED_REGISTRY:
                raise YoloportError(f"model registry {path} does not exist")
            continue
        entries = read_registry(path)
        if key in entries:
            entry = entries[key]
            if entry.weights:
                entry.weights = expand_path(entry.weights, path.parent)
            return entry
        seen.extend(entries)
    if required:
        raise YoloportError(f"unknown model key {key!r}; known keys: {', '.join(sorted(set(seen))) or 'none'}")
    return None


def model_source(settings: argparse.Namespace, default: str | None = None) -> str:
    """What to load for a command: ``--weights`` if given, else ``--model-key``, else ``default``."""
    w = getattr(settings, "weights", None)
    key = getattr(settings, "model_key", None)
    if w:
        return str(w)
    if key:
        entry = lookup_model_key(key, getattr(settings, "registry", None))
        return entry.key
    if default:
        return default
    raise YoloportError("no model given: pass --weights PATH or --model-key KEY")


def weights_path(name) -> Path:
    """``name`` as a checkpoint path: an existing file, or a key of the model registry (the bundled one names
    the fixtures' official weights: ``yolov5s-v5.0``, ``yolov5n-v6.1``) whose weights file exists. A
    YoloportError otherwise (benchmarks and scripts: one lookup for "a path or a fixture's name")."""
    p = Path(str(name)).expanduser()
    if p.is_file():
        return p
    entry = lookup_model_key(str(name), required=False)
    if entry is not None and entry.weights and Path(entry.weights).is_file():
        return Path(entry.weights)
    raise YoloportError(f"weights {name!r} not found: neither a file nor a model key whose weights exist "
                        f"(the fixtures' keys need {fixtures_dir() or '../shared/fixtures'})")
