"""The 1-D and 3-D synthetic tasks: registered, deterministic per index, and what they claim to be."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sknet.data import DATASETS, build_dataset
from sknet.data.synthetic import ScaledBursts, ScaledFashionMNISTVolumes

FASHION = Path("/usr/share/datasets/fashion-mnist")


def test_bursts_are_deterministic_per_index_and_their_class_is_the_cycle_count():
    assert "bursts-1d" in DATASETS
    a = build_dataset("bursts-1d", split="val", size=50)
    b = build_dataset("bursts-1d", split="val", size=80)  # a longer set: the same first items
    assert a.info.input_size == (1, 256) and a.info.num_classes == 5
    for i in (0, 7, 49):
        (xa, ya), (xb, yb) = a[i], b[i]
        assert torch.equal(xa, xb) and ya == yb and xa.shape == (1, 256)
    train = build_dataset("bursts-1d", split="train", size=50)
    assert not torch.equal(train[0][0], a[0][0])  # each split its own items
    # Without noise, the burst's zero crossings inside its window count its cycles (2 per cycle).
    clean = ScaledBursts(40, noise=0.0, seed=3)
    for i in range(40):
        label, x = clean._draw(i)
        inside = x[0][x[0].abs() > 0.02 * x[0].abs().max()]
        crossings = int((torch.sign(inside[1:]) != torch.sign(inside[:-1])).sum())
        assert abs(crossings - 2 * (label + 1)) <= 2, (i, label, crossings)


def test_bursts_training_flip_is_seeded_per_sample():
    ds = build_dataset("bursts-1d", split="train", size=20, seed=4)
    assert all(torch.equal(ds[i][0], ds[i][0]) for i in range(20))  # same augmentation for the same index
    flipped = [not torch.equal(ds[i][0], ds._draw(i)[1]) for i in range(20)]
    assert 0 < sum(flipped) < 20


@pytest.mark.skipif(not (FASHION / "t10k-images-idx3-ubyte.gz").exists(), reason="Fashion-MNIST not installed")
def test_fashion_mnist_volumes_hold_the_item_resized_through_a_run_of_slices():
    ds = build_dataset("fashion-mnist-3d", split="val", augment=False)
    assert ds.info.input_size == (1, 16, 32, 32) and len(ds) == 10000
    x, y = ds[5]
    assert x.shape == (1, 16, 32, 32) and x.dtype == torch.float32 and y == int(ds.targets[5])
    vol = ds.volume(5)[0]  # (16, 32, 32) uint8
    occupied = vol.flatten(1).amax(1) > 0
    slices = torch.nonzero(occupied).flatten()
    assert len(slices) >= 2 and torch.equal(slices, torch.arange(slices[0], slices[-1] + 1))  # one run
    assert all(torch.equal(vol[slices[0]], vol[s]) for s in slices)  # the same object in each slice
    again = ScaledFashionMNISTVolumes(ds.images, ds.targets, seed=1)
    assert torch.equal(again.volume(5), ds.volume(5))  # deterministic per (seed, index)
