"""Backend-neutral quantization: what every backend shares.

- :mod:`.float_scope`: :class:`FloatScope`, the one way to say "keep these layers in float".
- :mod:`.fake_quant`: fake quantization primitives (PyTorch) and the one SQNR.
- :mod:`.ranking`: per-layer sensitivity ranking (pure: model + images in, ranking out).
- :mod:`.search`: mixed-precision search that builds and validates real backend artifacts.
- :mod:`.ort_debug`: ONNX Runtime's accumulated per-layer error (the ``qdq_loss_debug`` idea).

A new quantization algorithm (bias correction, equalization, learned rounding, QAT) is one new
module here that takes a model and calibration images and gives a model or ranges every backend uses.
"""
