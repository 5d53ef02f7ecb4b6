"""Face port: AP drop (WIDER FACE easy/medium/hard) and landmark displacement, fp32 -> int8, every backend.

    nice -n 10 python benchmarks/bench_face_port.py                 # fixture yolov5n-0.5, 7 WIDER val images, 640
    python benchmarks/bench_face_port.py --targets onnxruntime,mlu-sim --calib-n 16 --img-size 640 640

Runs ``yoloport port --task face`` (:func:`yoloport.analysis.port_face.run_face_port`) on the fixture
face checkpoint and the fixture WIDER FACE val images (official .mat ground truth), every target
(ONNX Runtime, OpenVINO + NNCF, RKNN simulator rk3588, mlu-sim) at its own output convention, and
prints one table: AP easy/medium/hard of the fp32 reference and each int8 target, the drops in points,
NME on the fixture's one landmark-labelled WIDER train image, and the landmark displacement between
fp32 and int8 of matched detections (pixels of the 640x640 input).

Calibration: COCO 2017 images of the fixtures' ``coco-extra/images/calib2017`` pool (many with people;
none is a WIDER image), so the reported images are never calibration images (the port refuses an
overlap). Seven images are few: the numbers say what this port costs on them, not on all of WIDER val.
Numbers, not asserts: a benchmark, never a test. Timings depend on the machine's load.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    from yoloport.analysis.port import parse_targets
    from yoloport.analysis.port_face import format_face_table, run_face_port
    from yoloport.fixtures import fixtures_dir
    from yoloport.models import load_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", default="onnxruntime,openvino,rknn:rk3588,mlu-sim")
    ap.add_argument("--img-size", nargs=2, type=int, default=[640, 640], metavar=("W", "H"))
    ap.add_argument("--calib-n", type=int, default=32)
    ap.add_argument("--out", help="run folder (default: a new temporary folder)")
    ap.add_argument("--json", help="also write the report JSON here")
    args = ap.parse_args(argv)

    fx = fixtures_dir()
    face = fx / "face" if fx else None
    if face is None or not (face / "weights" / "yolov5n-0.5.pt").is_file():
        print("face fixtures not found (../shared/fixtures/face or $YOLOPORT_FIXTURES/face)")
        return 2
    model = load_model(str(face / "weights" / "yolov5n-0.5.pt")).float().eval()
    run_dir = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench_face_port_"))
    if (run_dir / "report.json").exists():
        print(f"{run_dir} already holds a report: choose another --out")
        return 2
    img_hw = (args.img_size[1], args.img_size[0])
    report = run_face_port(model, face / "widerface_val", parse_targets(args.targets), run_dir, img_hw,
                           str(fx / "coco-extra" / "images" / "calib2017"), calib_n=args.calib_n, max_drop=100.0,
                           nme_data=face / "landmarks_train")
    print()
    print(f"yolov5n-0.5 face, {report['data']['images']} WIDER FACE val images, {img_hw[1]}x{img_hw[0]}; calibration "
          f"{report['calibration']['count']} COCO calib2017 images; NME on {report['data']['nme_data']}")
    print(format_face_table(report))
    for n in report.get("notes", []):
        print(f"note: {n}")
    print(f"report: {report['paths']['md']}; total {report['total_s']} s")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
