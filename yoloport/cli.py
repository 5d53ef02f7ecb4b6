"""The ``yoloport`` command: a thin dispatcher.

Each sub-command lives in ``yoloport/commands/<name>.py`` and provides two functions::

    def add_arguments(parser: argparse.ArgumentParser) -> None
    def run(args: argparse.Namespace) -> int       # exit status

Command modules are imported only when their command runs, so ``yoloport --help`` stays fast and a
missing optional backend breaks only the command that needs it. A :class:`YoloportError` becomes
one line on stderr and a non-zero exit, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import YoloportError

# name -> one-line help. The module is yoloport.commands.<name with '-' replaced by '_'>.
COMMANDS: dict[str, str] = {
    "train": "train a YOLOv5 model (from scratch, a model YAML or any readable checkpoint)",
    "val": "validate on a data YAML: P, R, mAP@0.5, mAP@0.5:0.95, per class",
    "detect": "run detection on images, a folder, a glob or a video",
    "export": "export to ONNX with an NPU-friendly Detect head (raw, split, decoded, end2end)",
    "lint": "check an ONNX graph against an NPU's rules (rknn, mlu, onnxruntime, openvino)",
    "convert": "rewrite a checkpoint (Focus to Conv, BN fusion) into yoloport's safe format",
    "quantize": "build an int8 (or float) artifact for a backend from calibration images",
    "qat": "quantization-aware fine-tuning on a backend's int8 grid, then its int8 artifact",
    "compare": "float vs quantized detections and per-output SQNR / cosine similarity",
    "sensitivity": "rank layers by the error their quantization adds; mixed precision",
    "profile": "time per operator type on a backend (the CNRT-style table)",
    "bench": "throughput and latency at given batch sizes",
    "port": "export, quantize, validate, compare, profile and benchmark for every target",
    "data": "dataset tools (synth: generate a synthetic YOLO dataset)",
    "info": "show a checkpoint's or model key's summary (layers, parameters, GFLOPs)",
}


def _module_for(name: str):
    return importlib.import_module(f"yoloport.commands.{name.replace('-', '_')}")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="yoloport",
        description="YOLOv5 from training to validated int8 deployment on edge NPUs and CPU runtimes.",
    )
    from ._version import __version__

    parser.add_argument("--version", action="version", version=f"yoloport {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == only:
            _module_for(name).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    try:
        parser = build_parser(command if command in COMMANDS else None)
        args = parser.parse_args(argv)
        if not args.command:
            parser.print_help()
            return 2
        return int(_module_for(args.command).run(args) or 0)
    except YoloportError as e:
        print(f"yoloport {command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("yoloport: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed early: not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
