"""Split one labelled image set into a calibration pool and a held-out selection set, as a data YAML.

The accuracy protocol keeps three sets apart: calibration, selection (the images a choice between recipes or
settings is made on) and reporting. The fixtures have two reporting sets (coco-extra val2017, COCO128) and one
calibration pool (coco-extra calib2017); this cuts a selection set off the pool, deterministically: the images
sorted by file name, the last ``--select`` of them held out. It writes ``calib.txt`` and ``select.txt`` (image
paths; labels are found beside them as for any YOLO set) and ``split.yaml`` with ``train: calib.txt`` and ``val:
select.txt`` and the source's class names, so that

    python benchmarks/split_selection.py --out runs/split                       # coco-extra calib2017: 160 + 49
    python benchmarks/bench_int8_accuracy.py ... --calib runs/split/split.yaml:train \\
        --select runs/split/split.yaml --baseline-row <row>

calibrates on the pool, decides on ``split`` (the selection set) and reports on the ``--val`` sets (by default
coco-extra val2017 and COCO128). ``--data`` / ``--split`` name another labelled set. Nothing is copied.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def split_pool(images: list[Path], n_select: int) -> tuple[list[Path], list[Path]]:
    """``(pool, selection)``: ``images`` sorted by file name, the last ``n_select`` held out."""
    ordered = sorted(images, key=lambda p: (p.name, str(p)))
    if not 0 < n_select < len(ordered):
        raise SystemExit(f"--select must be between 1 and {len(ordered) - 1} for {len(ordered)} images, got {n_select}")
    return ordered[:-n_select], ordered[-n_select:]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="data YAML of the labelled set (default: the fixtures' coco-extra.yaml)")
    p.add_argument("--split", default="train", help="its split to cut (default train: coco-extra's calib2017)")
    p.add_argument("--select", type=int, default=49, help="images held out for selection (default 49)")
    p.add_argument("--out", required=True, help="folder for calib.txt, select.txt and split.yaml (must not hold them yet)")
    a = p.parse_args(argv)

    import yaml

    from yoloport.data.dataset import list_images, load_data_yaml
    from yoloport.errors import YoloportError
    from yoloport.fixtures import fixtures_dir

    if a.data is None:
        fx = fixtures_dir()
        if fx is None:
            raise SystemExit("shared fixtures not found (set YOLOPORT_FIXTURES or pass --data)")
        a.data = str(fx / "coco-extra" / "coco-extra.yaml")
    try:
        cfg = load_data_yaml(a.data)
        images = [Path(x).resolve() for x in list_images(cfg.split(a.split))]
    except YoloportError as e:
        raise SystemExit(str(e)) from None
    names = list(cfg.names)
    pool, selection = split_pool(images, a.select)
    out = Path(a.out)
    targets = [out / n for n in ("calib.txt", "select.txt", "split.yaml")]
    if any(t.exists() for t in targets):
        raise SystemExit(f"{out} already holds a split: choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    targets[0].write_text("".join(f"{x}\n" for x in pool))
    targets[1].write_text("".join(f"{x}\n" for x in selection))
    doc = {"path": str(out.resolve()), "train": "calib.txt", "val": "select.txt", "nc": len(names), "names": names}
    targets[2].write_text(f"# {a.data}:{a.split}: sorted by file name, the first {len(pool)} calibrate, the last {len(selection)} select\n"
                          + yaml.safe_dump(doc, sort_keys=False))
    print(f"{len(pool)} calibration images, {len(selection)} selection images: {targets[2]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
