"""Training augmentation and the training dataset: geometry, label bookkeeping, determinism."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from yoloport.data.augment import (
    augment_hsv,
    box_candidates,
    flip,
    mosaic4,
    mosaic_placement,
    random_perspective,
    sample_rng,
)
from yoloport.data.train_dataset import EpochSampler, TrainDataset

HYP = {"hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4, "degrees": 0.0, "translate": 0.1, "scale": 0.5, "shear": 0.0,
       "perspective": 0.0, "flipud": 0.0, "fliplr": 0.5, "mosaic": 1.0, "mixup": 0.0}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from yoloport.data.synth import make_synthetic_dataset

    out = tmp_path_factory.mktemp("synth")
    return make_synthetic_dataset(out, {"train": 6, "val": 2}, (128, 96), seed=3, workers=1, max_objects=4,
                                  min_object_size=10)


def test_box_candidates():
    before = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 100, 1]], float).T
    after = np.array([[0, 0, 10, 10], [0, 0, 1.5, 10], [0, 0, 3, 3], [0, 0, 300, 2.5]], float).T
    assert box_candidates(before, after).tolist() == [True, False, False, False]


def test_random_perspective_identity_and_scaling():
    im = np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    labels = np.array([[1, 10, 20, 40, 50]], np.float32)
    out, lb = random_perspective(im.copy(), labels.copy(), np.random.default_rng(0), translate=0.0, scale=0.0)
    assert np.array_equal(out, im) and np.allclose(lb, labels)
    out, lb = random_perspective(im.copy(), labels.copy(), np.random.default_rng(1), degrees=30, translate=0.2,
                                 scale=0.5, shear=5, perspective=0.0005)
    assert out.shape == im.shape
    assert len(lb) <= 1 and (lb[:, [1, 3]] <= 96).all() and (lb[:, [2, 4]] <= 64).all()


def test_mosaic_geometry_and_labels_inside():
    assert mosaic_placement(0, 50, 40, (30, 20), (100, 100)) == ((30, 10, 50, 40), (0, 0, 20, 30))
    assert mosaic_placement(3, 90, 90, (30, 20), (100, 100)) == ((90, 90, 100, 100), (0, 0, 10, 10))
    rng = np.random.default_rng(5)
    tiles = [(np.full((64, 48, 3), 40 * k, np.uint8), np.array([[k, 0.5, 0.5, 0.5, 0.5]], np.float32)) for k in range(4)]
    im, lb = mosaic4(tiles, (64, 64), rng, HYP)
    assert im.shape == (64, 64, 3) and im.dtype == np.uint8
    assert lb.shape[1] == 5 and (lb[:, 1:] >= 0).all() and (lb[:, [1, 3]] <= 64).all() and (lb[:, [2, 4]] <= 64).all()
    assert ((lb[:, 3] - lb[:, 1]) > 2).all()


def test_hsv_and_flip():
    im = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    out = augment_hsv(im.copy(), np.random.default_rng(0), 0.015, 0.7, 0.4)
    assert out.shape == im.shape and not np.array_equal(out, im)
    assert np.array_equal(augment_hsv(im.copy(), np.random.default_rng(0), 0, 0, 0), im)
    lb = np.array([[0, 0.2, 0.3, 0.1, 0.1]], np.float32)
    f, l2 = flip(im, lb.copy(), np.random.default_rng(0), fliplr=1.0, flipud=1.0)
    assert np.array_equal(f, im[::-1, ::-1]) and np.allclose(l2[0, 1:3], [0.8, 0.7])


def test_train_dataset_deterministic_per_epoch_and_index(synth):
    from yoloport.data.dataset import load_data_yaml

    data = load_data_yaml(synth)
    ds = TrainDataset(data.train, data.nc, (96, 128), HYP, augment=True, seed=7)
    a_im, a_lb, _ = ds[2]
    b_im, b_lb, _ = ds[2]
    assert a_im.dtype == torch.uint8 and a_im.shape == (3, 96, 128)
    assert torch.equal(a_im, b_im) and torch.equal(a_lb, b_lb)
    ds.set_epoch(1)
    c_im, _, _ = ds[2]
    assert not torch.equal(a_im, c_im)
    ds2 = TrainDataset(data.train, data.nc, (96, 128), HYP, augment=True, seed=7)
    ds2.set_epoch(1)
    assert torch.equal(ds2[2][0], c_im)
    ims, targets, paths = TrainDataset.collate([ds[i] for i in range(3)])
    assert ims.shape == (3, 3, 96, 128) and targets.shape[1] == 6 and len(paths) == 3
    assert set(targets[:, 0].long().tolist()) <= {0, 1, 2}
    assert ((targets[:, 2:] >= 0) & (targets[:, 2:] <= 1)).all()


def test_rect_dataset_and_sampler(synth):
    from yoloport.data.dataset import load_data_yaml

    data = load_data_yaml(synth)
    ds = TrainDataset(data.train, data.nc, (128, 128), HYP, augment=False, rect=True, batch_size=2)
    im, lb, _ = ds[0]
    assert im.shape[1:] == tuple(ds.batch_shapes[0])  # 128 x 96 image -> rectangular batch 96 x 128
    assert im.shape[1:] == (96, 128)
    s = EpochSampler(6, shuffle=True, seed=1)
    s.set_epoch(0)
    e0 = list(s)
    s.set_epoch(1)
    assert sorted(e0) == list(range(6)) and list(s) != e0
    parts = [list(EpochSampler(5, shuffle=True, seed=1, rank=r, world=2)) for r in range(2)]
    assert len(parts[0]) == len(parts[1]) == 3 and set(parts[0] + parts[1]) == set(range(5))
    rect_parts = [list(EpochSampler(6, False, rank=r, world=2, rect_batch_size=2)) for r in range(2)]
    assert rect_parts == [[0, 1, 4, 5], [2, 3, 0, 1]]


def test_sample_rng_independent_streams():
    assert sample_rng(0, 0, 1).random() != sample_rng(0, 0, 2).random()
    assert sample_rng(0, 3, 1).random() == sample_rng(0, 3, 1).random()
