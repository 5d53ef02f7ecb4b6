"""Empirical bias correction (Nagel et al. 2019, "Data-Free Quantization", the empirical variant): the
rounding of a convolution's weights to a backend's int8 grid shifts the mean of each output channel by
``E[W_q x] - E[W x]``; that shift, measured on calibration images, is subtracted from the channel's bias.

Pure: a folded float model, its float reference and calibration images in; the corrected model out.
``W`` is the reference's weight (the float weight before any rounding step, e.g. before AdaRound),
``W_q`` the model's weight on the backend's grid (what the backend's quantizer will make of it), and
``x`` the convolution's input in the reference model.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from ..errors import YoloportError
from .layers import WeightGrid, quant_layers, torch_batches


@torch.no_grad()
def output_mean_shift(reference, model, images, grid: WeightGrid, skip=()) -> dict[str, torch.Tensor]:
    """``{layer: E[W_q x] - E[W x]  [Cout]}`` (float64), the mean over images and positions of each
    output channel's shift; ``W`` from ``reference``, ``W_q = grid.quantize(model's weight)``, ``x`` the
    layer's input in ``reference`` over ``images`` (see :func:`~yoloport.quant.layers.torch_batches`)."""
    ref_layers = {q.name: q for q in quant_layers(reference, skip)}
    layers = [q for q in quant_layers(model, skip) if q.name in ref_layers]
    delta_w = {q.name: (grid.quantize(q.conv.weight) - ref_layers[q.name].conv.weight.float()) for q in layers}
    sums = {q.name: torch.zeros(q.conv.out_channels, dtype=torch.float64) for q in layers}
    counts = {q.name: 0 for q in layers}

    def hook(name, conv):
        def record(_mod, inputs):
            x = inputs[0].float()
            y = F.conv2d(x, delta_w[name], None, conv.stride, conv.padding, conv.dilation, conv.groups)
            sums[name] += y.double().sum(dim=(0, 2, 3))
            counts[name] += y.shape[0] * y.shape[2] * y.shape[3]
        return record

    handles = [ref_layers[q.name].conv.register_forward_pre_hook(hook(q.name, ref_layers[q.name].conv)) for q in layers]
    try:
        n = 0
        for x in torch_batches(images):
            reference(x)
            n += 1
    finally:
        for h in handles:
            h.remove()
    if n == 0:
        raise YoloportError("bias correction: the calibration set yielded no image")
    return {k: sums[k] / max(counts[k], 1) for k in sums}


def bias_correction(model, images, grid: WeightGrid, reference=None, skip=()) -> tuple[object, dict]:
    """A copy of the folded ``model`` whose quantized convolutions' biases absorb the mean output shift
    their weight rounding on ``grid`` causes (:func:`output_mean_shift`, measured against ``reference``,
    default ``model`` itself). Returns ``(model, record)``; ``record`` holds the number of corrected
    layers and the largest shift relative to the bias scale."""
    reference = model if reference is None else reference
    shifts = output_mean_shift(reference, model, images, grid, skip)
    out = copy.deepcopy(model)
    worst, total = 0.0, 0
    for layer in quant_layers(out, skip):
        d = shifts.get(layer.name)
        if d is None:
            continue
        layer.bias.data = (layer.bias.data.double() - d).to(layer.bias.dtype)
        worst = max(worst, float(d.abs().max()))
        total += 1
    return out, {"layers": total, "max_abs_shift": worst}
