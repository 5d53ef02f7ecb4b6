"""A deploy folder per port target: what someone copies to the device, and how to run it there.

:func:`write_deploy_folder` writes, into a new folder::

    <artifact files>            the artifact and the files its sidecar vouches for (the ones its integrity
                                record lists, same relative paths), copied byte for byte
    <artifact>.json             its sidecar (class names, input size, head layout, sha256 of every file):
                                yoloport refuses a copy that differs from it
    calibration.sha256          the calibration images used (``sha256sum`` format: hash, two spaces, the
                                path on the port machine); absent for a float artifact
    sample.<ext>                one validation image (not a calibration image), so ``detect`` runs as written
    README.md                   the device's runtime and its install line, the exact ``yoloport detect`` and
                                ``yoloport bench`` commands, and what the port measured here

The device's runtime is read from the backends' specs: the backend that runs the builder's artifacts on a
board (``SPEC.built_by``: ``rknn`` -> ``rknn-lite``), else the builder itself. Every ``yoloport`` line of
the README's command block runs in the folder as it is (:func:`readme_commands` reads them back).

It lives in ``analysis/`` (not ``deploy/``): it reads backend specs and sidecars, a layer above ``deploy``.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from .._version import __version__
from ..backends.base import file_digest, read_sidecar, sidecar_path
from ..backends.registry import describe_batch, get_spec, runtime_backends
from ..errors import YoloportError
from ..io.paths import write_text_atomic

README = "README.md"
CALIBRATION_LIST = "calibration.sha256"
SAMPLE_STEM = "sample"  # + the image's own suffix
COMMAND_PREFIX = "yoloport "


def device_runtime(builder: str):
    """The spec of the backend that runs ``builder``'s artifacts on the device: one that declares it runs
    them (``built_by``) and runs on a board, else ``builder`` itself."""
    for name in runtime_backends(builder)[1:]:
        spec = get_spec(name)
        if spec.board:
            return spec
    return get_spec(builder)


def copy_artifact(artifact: Path, dest: Path) -> Path:
    """Copy ``artifact``, its sidecar and every file the sidecar's integrity record lists (same paths
    relative to the artifact's folder) into ``dest``; the copy is checked against the sidecar. Returns
    the copied artifact's path."""
    artifact = Path(artifact)
    info = read_sidecar(artifact)  # refuses a damaged artifact before anything is copied
    for rel in info["integrity"]:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(artifact.parent / rel, target)
    shutil.copy2(sidecar_path(artifact), dest / sidecar_path(artifact).name)
    copied = dest / artifact.name
    read_sidecar(copied)
    return copied


def calibration_lines(paths) -> list[str]:
    """``sha256  path`` for each calibration image (``sha256sum -c`` reads these)."""
    return [f"{file_digest(Path(p))['sha256']}  {Path(p).resolve()}" for p in paths]


def run_commands(runtime, artifact_name: str, sample: str | None) -> list[str]:
    """The ``yoloport`` commands that run the artifact with ``runtime`` (a spec) from inside the folder."""
    base = f"--backend {runtime.name} --artifact {artifact_name}"
    cmds = []
    if sample:
        cmds.append(f"yoloport detect {base} --source {sample}")
    cmds.append(f"yoloport bench {base} --batch 1 --repeat 50")
    return cmds


def readme_commands(readme: str | Path) -> list[str]:
    """The ``yoloport ...`` lines of a deploy README's command block, in order."""
    text = Path(readme).read_text(encoding="utf-8")
    return [ln.strip() for ln in text.splitlines() if ln.strip().startswith(COMMAND_PREFIX)]


def readme_text(target_name: str, builder, runtime, artifact_name: str, info: dict, commands: list[str],
                n_calibration: int, sample: str | None, measured: dict | None) -> str:
    """The README of a deploy folder (markdown)."""
    lines = [f"# {target_name}: deploy folder", "",
             f"Made by `yoloport port` (yoloport {__version__}). Copy this folder to the device and run the commands below in it.", "",
             "| file | what |", "|---|---|",
             f"| `{artifact_name}` | the artifact ({builder.name}, {(info.get('qconfig') or {}).get('precision', '?')}, "
             f"input {info['input_hw'][1]}x{info['input_hw'][0]} W x H, batch {describe_batch(info.get('batch', 1))}) |",
             f"| `{sidecar_path(Path(artifact_name)).name}` | its sidecar: class names, head layout, sha256 of every file "
             "(yoloport refuses a copy that differs) |"]
    others = sorted(set(info["integrity"]) - {artifact_name})
    if others:
        lines.append(f"| {', '.join(f'`{o}`' for o in others)} | files the sidecar vouches for (what the x86 simulator "
                     "rebuilds the model from; the device does not read them) |")
    if n_calibration:
        lines.append(f"| `{CALIBRATION_LIST}` | the {n_calibration} calibration images (sha256 and path on the port machine; "
                     f"`sha256sum -c {CALIBRATION_LIST}` there checks them) |")
    if sample:
        lines.append(f"| `{sample}` | a validation image (not a calibration image) |")
    lines += ["",
              f"## On the device: {runtime.name}", "", runtime.summary + ".", "", "```sh",
              "pip install yoloport        # torch-free: letterbox, decode + NMS, detect, val, bench",
              f"# {runtime.name}: {runtime.install}", *commands, "```", ""]
    if "core_mask" in runtime.runtime_options:
        lines += ["`--core-mask` picks the NPU cores on an RK3588 (`auto`, `0`, `1`, `2`, `0_1`, `0_1_2`) or RK3576 "
                  "(`auto`, `0`, `1`, `0_1`); the default is `auto`.", ""]
    if runtime.name != builder.name:
        lines += [f"The artifact was built with the `{builder.name}` backend; `{runtime.name}` runs the same file "
                  "with the same host pre- and post-processing.", ""]
    lines += ["Validate on your own labelled images with "
              f"`yoloport val --backend {runtime.name} --artifact {artifact_name} --data YOUR_DATA.yaml`.", ""]
    if runtime.board:
        lines += ["**Timings**: only `yoloport bench` on the board measures the NPU. Any timing taken on the port "
                  "machine comes from a simulator and says nothing about the board.", ""]
    if measured:
        lines += ["## Measured by the port", "",
                  *[f"- {k}: {v}" for k, v in measured.items()], ""]
    return "\n".join(lines)


def write_deploy_folder(dest, artifact, target_name: str, calibration=None, sample_image=None,
                        measured: dict | None = None) -> Path:
    """Write the deploy folder of one port target into ``dest`` (new or empty; an existing file is never
    replaced) and return it. ``artifact``: what the backend built (sidecar next to it); ``calibration``:
    the CalibrationSet it was calibrated on (None for a float artifact); ``sample_image``: a validation
    image for the README's ``detect``; ``measured``: lines for the README (``{"mAP@0.5:0.95": ...}``)."""
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise YoloportError(f"deploy folder {dest} is not empty; choose a new one")
    artifact = Path(artifact)
    info = read_sidecar(artifact)
    builder = get_spec(info["backend"])
    runtime = device_runtime(builder.name)
    dest.mkdir(parents=True, exist_ok=True)
    copied = copy_artifact(artifact, dest)
    n_calib = 0
    if calibration is not None and len(calibration):
        write_text_atomic(dest / CALIBRATION_LIST, "\n".join(calibration_lines(calibration.paths)) + "\n")
        n_calib = len(calibration)
    sample = None
    if sample_image and Path(sample_image).is_file():
        sample = SAMPLE_STEM + Path(sample_image).suffix.lower()
        shutil.copy2(sample_image, dest / sample)
    commands = run_commands(runtime, copied.name, sample)
    write_text_atomic(dest / README, readme_text(target_name, builder, runtime, copied.name, info, commands, n_calib,
                                                 sample, measured))
    write_text_atomic(dest / "deploy.json", json.dumps({
        "target": target_name, "builder": builder.name, "runtime": runtime.name, "artifact": copied.name,
        "commands": commands, "calibration_images": n_calib, "yoloport_version": __version__}, indent=2) + "\n")
    return dest


def for_port_target(dest, rec: dict, calibration, sample_images) -> str:
    """:func:`write_deploy_folder` for one target record of ``yoloport port`` (its ``artifact``, ``name``,
    ``precision`` and, once validated, ``val``/``drop``); the sample is the first of ``sample_images`` that
    is not a calibration image. Returns the folder as a string (for the report)."""
    calib = calibration if rec.get("precision") == "int8" else None
    used = {Path(p).resolve() for p in (calib.paths if calib is not None else [])}
    sample = next((p for p in sample_images or [] if Path(p).resolve() not in used), None)
    measured = {}
    if rec.get("val"):
        measured["mAP@0.5:0.95 / mAP@0.5 on the port's validation set"] = (
            f"{rec['val'].get('mAP50_95', 0):.4f} / {rec['val'].get('mAP50', 0):.4f}")
    if rec.get("drop") is not None:
        measured["drop from the fp32 reference"] = f"{rec['drop']:.2f} mAP@0.5:0.95 points"
    if rec.get("note"):
        measured["note"] = rec["note"]
    return str(write_deploy_folder(dest, rec["artifact"], rec["name"], calib, sample, measured))
