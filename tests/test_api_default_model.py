"""``yoloport.load()`` with no argument returns the embedded default model, as the CLI's commands use it
without --weights (issue 15 item 5)."""
from __future__ import annotations

import numpy as np

import yoloport
from yoloport.backends.base import model_fingerprint
from yoloport.data.synth import SHAPE_CLASSES
from yoloport.models import load_model


def test_load_without_argument_is_the_embedded_default_model():
    demo = yoloport.load()
    assert demo.names == list(SHAPE_CLASSES)
    assert model_fingerprint(demo.net) == model_fingerprint(load_model("default"))
    assert tuple(demo.net.img_size) == (320, 320)


def test_the_default_model_finds_shapes():
    """Not just any checkpoint: on a synthetic image it detects shapes with its class names."""
    from yoloport.data.synth import render_image

    im = render_image((320, 320), np.random.default_rng(5)).image
    (dets,) = yoloport.load().predict(im, img_size=(320, 320), conf=0.25, iou=0.45)
    assert len(dets.xyxy) > 0 and list(dets.names) == list(SHAPE_CLASSES)
