"""Shared test helpers: the fixtures folder (real weights, images, COCO128) and a tiny model."""
from __future__ import annotations

import json
import os

import pytest
import torch

if os.environ.get("YOLOPORT_NO_FIXTURES") == "1":  # a run as on a machine without ../shared/fixtures
    import yoloport.fixtures

    yoloport.fixtures.fixtures_dir = lambda: None

from yoloport.fixtures import fixtures_dir  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """yoloport's reuse cache (the port's fp32 reference) in a folder of this test session, not ~/.cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("YOLOPORT_CACHE", str(tmp_path_factory.mktemp("yoloport-cache")))
    yield
    mp.undo()


def pytest_collection_modifyitems(config, items):
    """Tests marked ``slow`` are skipped (with a reason) in the default run, which must stay within
    ~15 minutes on a 2-core CPU. Run them with ``pytest -m slow`` or ``YOLOPORT_SLOW=1``."""
    if config.getoption("-m") or os.environ.get("YOLOPORT_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: run with `pytest -m slow` or YOLOPORT_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Where the shared fixtures are absent (or ``YOLOPORT_NO_FIXTURES=1``), a test that skips for
    want of them but is not marked ``fixtures`` fails instead: every fixture-dependent test carries
    the marker, so ``-m "not fixtures"`` is exactly the fixture-free suite."""
    outcome = yield
    rep = outcome.get_result()
    if not rep.skipped or "fixtures" in item.keywords or fixtures_dir() is not None:
        return
    reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
    if "fixture" in reason.lower() and not reason.startswith("slow:"):
        rep.outcome = "failed"
        rep.longrepr = f"{item.nodeid} skipped for want of the shared fixtures ({reason}) but is not marked @pytest.mark.fixtures"


def fixture_path(rel: str):
    """Path of a shared fixture file, or skip the test saying what is missing."""
    root = fixtures_dir()
    if root is None:
        pytest.skip("shared fixtures not found: set YOLOPORT_FIXTURES or place them at ../shared/fixtures")
    p = root / rel
    if not p.exists():
        pytest.skip(f"fixture {rel} not present in {root}")
    return p


@pytest.fixture(scope="session")
def reference():
    return json.loads(fixture_path("reference.json").read_text())


@pytest.fixture(scope="session")
def v5s_model():
    from yoloport.models import load_model

    return load_model(fixture_path("weights/yolov5s-v5.0.pt"))


@pytest.fixture(scope="session")
def v5n_model():
    from yoloport.models import load_model

    return load_model(fixture_path("weights/yolov5n-v6.1.pt"))


def signal_model():
    """A fresh copy of the embedded default model (a yolov5n trained on yoloport's synthetic shapes,
    6 classes): its head outputs depend strongly on the image (see ``test_guard_signal.py``), so a
    backend that ignores its input, or runs another model, cannot pass a comparison against it.
    Random-weight models are useless for that: their outputs change by ~1e-5 between images."""
    from yoloport.models import load_model

    return load_model("default").eval()


@pytest.fixture(scope="session")
def tiny_model():
    """The shared model for backend, export and compare tests: the embedded default model (6 shape
    classes) - small (yolov5n) and input-sensitive. Session-wide: tests must not modify it."""
    return signal_model()


def detect_layer(model) -> str:
    """The Detect layer's module name, ``model.<i>`` (``model.24`` in yolov5n, ``model.25`` in the embedded
    default model's ``yolov5n-p2``): tests name head layers through it, not by a number tied to one YAML."""
    return f"model.{len(model.model) - 1}"


def random_model(nc: int = 6, seed: int = 1, names=None, cfg="yolov5n"):
    """A random-weight model of ``cfg`` (a yolov5n unless told): "another model" for negative controls and
    refusal tests. Pass ``cfg=model.yaml`` for another model *of the same layout* (same output shapes)."""
    from yoloport.nn.model import DetectionModel

    torch.manual_seed(seed)
    return DetectionModel(cfg, nc=nc, names=names).eval()


def with_signal(model, seed: int = 0):
    """Re-initialise ``model`` in place so its outputs depend on the input: convolution weights drawn
    with variance 2 / fan_in (PyTorch's default init shrinks the signal layer by layer until the head
    sees ~1e-9 of it), small random biases, BatchNorm statistics and affines near 1 (so BN fusion is
    exercised). Measured on yolov5n-v5.0 at 64x64, two random images: raw outputs differ by 0.50 /
    0.087 / 0.018 per level (PyTorch's default init: 1e-5 / 2e-7 / 3e-9). Returns ``model``."""
    import math

    from torch import nn

    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.weight.data = torch.randn(m.weight.shape, generator=g) * math.sqrt(2.0 / m.weight[0].numel())
            if m.bias is not None:
                m.bias.data = torch.randn(m.bias.shape, generator=g) * 0.1
        elif isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.weight.data = torch.rand(c, generator=g) * 0.5 + 0.75
            m.bias.data = torch.randn(c, generator=g) * 0.1
            m.running_mean = torch.randn(c, generator=g) * 0.1
            m.running_var = torch.rand(c, generator=g) * 0.5 + 0.75
    return model


def write_synth_images(d, n: int = 4, size_hw=(96, 128), seed: int = 0, prefix: str = "im"):
    """``n`` synthetic-shape images (the default model's domain) written into ``d`` as JPEGs.

    Different ``seed`` values give different images: use one seed for calibration and another
    for the images an agreement is judged on."""
    import cv2
    import numpy as np

    from yoloport.data.synth import RenderOptions, render_image

    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    options = RenderOptions(max_objects=6, background_prob=0.0, min_object_size=12.0)
    for i in range(n):
        cv2.imwrite(str(d / f"{prefix}{seed}_{i}.jpg"), render_image(tuple(size_hw), rng, options).image)
    return d


def write_box_images(d, n: int = 4, size_hw=(120, 160), boxes: int = 5, box_wh=(35, 25), seed: int = 0):
    """``n`` small structured images (coloured rectangles on grey, not noise) written into ``d``."""
    import cv2
    import numpy as np

    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        im = np.full((*size_hw, 3), 114, np.uint8)
        for _ in range(boxes):
            x, y = (int(v) for v in rng.integers(0, size_hw[0], 2))
            cv2.rectangle(im, (x, y), (x + box_wh[0], y + box_wh[1]), tuple(int(c) for c in rng.integers(0, 255, 3)), -1)
        cv2.imwrite(str(d / f"im{i}.jpg"), im)
    return d
