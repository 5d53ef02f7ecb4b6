import torch, sys
sys.path.insert(0, "/work/main/tests")
import importlib
from yoloport.backends import mlu_sim as ms
import test_backend_mlu_sim as T
bad = 0
junk = []
for it in range(300):
    junk.append(torch.empty(int(torch.randint(1, 5000, (1,)))))
    if it % 50 == 0: torch.set_num_threads(1 + (it // 50) % 2)
    g = torch.Generator().manual_seed(0)
    conv = torch.nn.Conv2d(64, 32, 3, padding=1)
    x = torch.randn(2, 64, 16, 16, generator=g)
    with torch.no_grad():
        conv.weight.mul_(3)
    q = ms.QConv(conv, "c"); q.set_scales(0.03, 127, per_channel=True, firstconv=True); q.mode = "quant"
    with torch.no_grad():
        y = q(x); r = T._exact_reference(q, x, padding=1)
        if not torch.equal(y, r):
            bad += 1
            scale, qmax, qmin = q.input_grid()
            xi32 = ms.quantize_activation(x, scale, qmax, qmin)
            xi64 = torch.clamp(torch.round(x.double() / scale), qmin, qmax)
            wq, ch = q.integer_weight()
            wi = torch.clamp(torch.round(q.conv.weight.double() / q.w_scale.double()), -127, 127)
            acc = torch.nn.functional.conv2d(xi32, wq, None, padding=1)
            acc64 = torch.nn.functional.conv2d(xi64, wi, None, padding=1)
            print(it, torch.get_num_threads(), "x", torch.equal(xi32.double(), xi64), "w", torch.equal(wq.double(), wi), "acc", (acc.double()-acc64).abs().max().item(), "y-r", (y-r).abs().max().item(), flush=True)
print("bad", bad)
