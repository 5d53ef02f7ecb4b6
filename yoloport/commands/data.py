"""``yoloport data <tool>``: dataset tools. Each tool is a sub-command with its own arguments.

``yoloport data synth --out DIR --n N --img-size W H [--seed S] [--val-n M] [--classes ...]``
writes a deterministic synthetic dataset (see :mod:`yoloport.data.synth`): a ``train`` split of N
images and a ``val`` split (default ``max(1, N // 5)`` images, its own seed stream).
``--task face`` writes synthetic faces with five known landmarks instead (:mod:`yoloport.data.synth_face`:
15-column labels, ``DIR/train`` and ``DIR/val`` each with ``images/`` and ``labels/``).
"""
from __future__ import annotations

import argparse
import json
import time

from ..errors import YoloportError


def _add_synth(parser: argparse.ArgumentParser) -> None:
    from ..data.synth import IMAGE_FORMATS, SHAPE_CLASSES

    parser.add_argument("--out", required=True, help="output directory (new, empty, or a previous synthetic dataset)")
    parser.add_argument("--n", type=int, required=True, help="number of training images")
    parser.add_argument("--img-size", type=int, nargs="+", default=[640, 640], metavar="PX",
                        help="image width then height, W H (one value: square); default 640 640")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (same seed -> identical files)")
    parser.add_argument("--val-n", type=int, default=None, help="number of validation images (default max(1, N // 5))")
    parser.add_argument("--classes", nargs="+", default=None, metavar="NAME",
                        help=f"shape classes to draw, in class-index order (default all: {' '.join(SHAPE_CLASSES)})")
    parser.add_argument("--max-objects", type=int, default=None, help="most objects per image (default 12; faces: 6)")
    parser.add_argument("--task", choices=("detect", "face"), default="detect",
                        help="face: drawn faces with five known landmarks (yolov5-face's 15-column labels)")
    parser.add_argument("--format", choices=IMAGE_FORMATS, default="jpg", help="image file format (default jpg)")
    parser.add_argument("--workers", type=int, default=None, help="rendering processes (default: CPU count, at most 8)")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a non-empty directory that is not a synthetic dataset (deletes and replaces nothing: a file of the same name there is an error)")


TOOLS = {"synth": ("generate a deterministic synthetic YOLO dataset (shapes on cluttered backgrounds)", _add_synth)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="TOOL")
    for name, (help_text, add) in TOOLS.items():
        add(sub.add_parser(name, help=help_text, description=help_text))


def run_synth(args: argparse.Namespace) -> int:
    """Generate the dataset, print the YAML path and a per-split table of counts."""
    from ..data.synth import make_synthetic_dataset, read_synth_report

    if args.n < 1:
        raise YoloportError(f"--n must be >= 1, got {args.n}")
    val_n = max(1, args.n // 5) if args.val_n is None else args.val_n
    if val_n < 1:
        raise YoloportError(f"--val-n must be >= 1, got {val_n}")
    if getattr(args, "task", "detect") == "face":
        return _run_synth_face(args, val_n)
    t0 = time.perf_counter()
    yaml_path = make_synthetic_dataset(
        args.out, {"train": args.n, "val": val_n}, args.img_size, seed=args.seed, classes=args.classes,
        max_objects=12 if args.max_objects is None else args.max_objects, image_format=args.format,
        workers=args.workers, overwrite=args.overwrite)
    elapsed = time.perf_counter() - t0
    report = read_synth_report(yaml_path.parent)
    names = report["names"]
    w, h = report["img_size_wh"]
    print(f"synthetic dataset {w}x{h}, seed {report['seed']}, {len(names)} classes, written in {elapsed:.1f} s")
    header = ["split", "images", "background", "objects"] + names
    rows = [[s, c["images"], c["background_images"], c["objects"]] + [c["per_class"][n] for n in names]
            for s, c in report["counts"].items()]
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    for r in [header] + rows:
        print("  ".join(str(v).rjust(wd) if i else str(v).ljust(wd) for i, (v, wd) in enumerate(zip(r, widths))))
    print(f"data: {yaml_path}")
    print(f"report: {yaml_path.parent / 'synth.json'}")
    return 0


def _run_synth_face(args: argparse.Namespace, val_n: int) -> int:
    """``data synth --task face``: the synthetic face set; prints its YAML and counts."""
    from ..data.synth_face import FaceOptions, make_face_dataset

    if args.classes:
        raise YoloportError("--classes is for the shapes dataset; a face dataset has one class, 'face'")
    if args.format != "jpg":
        raise YoloportError("the synthetic face dataset is written as jpg only")
    max_faces = 6 if args.max_objects is None else args.max_objects
    if max_faces < 1:
        raise YoloportError(f"--max-objects must be >= 1, got {max_faces}")
    t0 = time.perf_counter()
    yaml_path = make_face_dataset(args.out, {"train": args.n, "val": val_n}, args.img_size, seed=args.seed,
                                  options=FaceOptions(max_faces=max_faces), overwrite=args.overwrite)
    report = json.loads((yaml_path.parent / "synth.json").read_text())
    w, h = report["img_size_wh"]
    print(f"synthetic face dataset {w}x{h}, seed {report['seed']}, 5 landmarks per face, "
          f"written in {time.perf_counter() - t0:.1f} s")
    print(f"{'split':<6} {'images':>7} {'background':>11} {'faces':>6}")
    for split, c in report["counts"].items():
        print(f"{split:<6} {c['images']:>7} {c['background_images']:>11} {c['faces']:>6}")
    print(f"data: {yaml_path}")
    print(f"validate a face model on it: yoloport val --task face --data {yaml_path.parent / 'val'}")
    return 0


def run(args: argparse.Namespace) -> int:
    tool = getattr(args, "data_command", None)
    if tool is None:
        raise YoloportError(f"choose a data tool: {', '.join(TOOLS)} (yoloport data TOOL --help)")
    return {"synth": run_synth}[tool](args)
