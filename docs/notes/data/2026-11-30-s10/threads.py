import sys, numpy as np, torch, time
from pathlib import Path
from yoloport.models import load_model
from yoloport.backends import mlu_sim as ms
from yoloport.ops.postprocess import HeadSpec
from yoloport.data.calibration import load_calibration
F="/work/shared/fixtures"
m = load_model(F+"/weights/yolov5n-v6.1.pt")
hw=(640,640)
cal = load_calibration(F+"/coco-extra/images/calib2017", n=16, img_size_hw=hw, seed=0)
ev = load_calibration(F+"/coco128/images/train2017", n=12, img_size_hw=hw, seed=None)
art = ms.build(m, None, HeadSpec.from_model(m, "raw"), Path("/tmp/s10/art"), cal, {"precision":"int8", "output":"raw"})
r = ms.load(art, m, output="raw")
outs={}
for t in (1,2):
    torch.set_num_threads(t)
    t0=time.time()
    outs[t]=[r.raw(a) for a in ev.arrays()]
    print(t, "threads", time.time()-t0)
d=[max(float(np.abs(a-b).max()) for a,b in zip(x,y)) for x,y in zip(outs[1],outs[2])]
print("max abs diff per image", d)
