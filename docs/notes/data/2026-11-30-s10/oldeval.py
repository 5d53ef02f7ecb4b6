import sys, torch, json
sys.path.insert(0, "/tmp/s10/wt/benchmarks")
from bench_int8_accuracy import evaluate
import yoloport
print(yoloport.__file__)
torch.set_num_threads(1)
F = "/work/shared/fixtures"
ref = {"coco-extra": 0.3321, "coco128": 0.3549}
ref = {"coco-extra": 0.33213, "coco128": 0.35490}
for row in ("qat_distill", "new_default"):
    for s in (0, 1, 2):
        d = f"/tmp/s10/qat-t1/yolov5n-v6.1/640x640/mlu-sim/{row}/n128-s{s}/model.mlusim.safetensors"
        out = []
        for name, y in (("coco-extra", F + "/coco-extra/coco-extra.yaml"), ("coco128", F + "/coco128/coco128.yaml")):
            r = evaluate("mlu-sim", d, None, y, (640, 640), 1, 0)
            out.append(f"{name} {r['mAP50_95']:.4f}")
        print(row, s, out, flush=True)
