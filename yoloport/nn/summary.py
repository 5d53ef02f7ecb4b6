"""Model summary: layer (module) count, parameters, gradients and GFLOPs at a given input size."""
from __future__ import annotations

import torch
from torch import nn


def count_flops(model: nn.Module, img_hw: tuple[int, int]) -> float:
    """Floating-point operations (2 x multiply-accumulates) of Conv2d layers for one image of ``img_hw``.

    Convolutions are >99% of a YOLOv5's arithmetic; this counts their MACs exactly (bias excluded),
    the way ``thop`` does for Ultralytics' summary.
    """
    total = 0

    def hook(m: nn.Conv2d, _inp, out):
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        total += out.numel() // out.shape[0] * k

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    p = next(model.parameters())
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, *img_hw, dtype=p.dtype, device=p.device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return 2.0 * total


def model_summary(model: nn.Module, img_size=640) -> dict:
    hw = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    n_p = sum(x.numel() for x in model.parameters())
    n_g = sum(x.numel() for x in model.parameters() if x.requires_grad)
    return {
        "layers": len(list(model.modules())),
        "parameters": n_p,
        "gradients": n_g,
        "gflops": count_flops(model, hw) / 1e9,
        "img_hw": list(hw),
    }


def summary_line(info: dict, name: str = "Model") -> str:
    h, w = info["img_hw"]
    return (
        f"{name} summary: {info['layers']} layers, {info['parameters']:,} parameters, "
        f"{info['gradients']:,} gradients, {info['gflops']:.1f} GFLOPs at {w}x{h}"
    )
