"""Fashion-MNIST scenes: deterministic, prefix-stable, masks that agree with the items, disjoint splits, stats."""

import time
from pathlib import Path

import pytest
import torch

from convmixer.data import DataConfig, augment_preset, build_data, load_idx, scenes
from convmixer.data.loaders import load_array_dataset
from convmixer.data.registry import get_dataset_info

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
pytestmark = pytest.mark.skipif(not FMNIST_DIR.is_dir(), reason="dataset-fashion-mnist not installed")


@pytest.fixture(scope="module")
def source():
    return {split: load_idx("fashion_mnist", split, root=FMNIST_DIR, download=False) for split in ("train", "test")}


@pytest.fixture(scope="module")
def full_train(source):
    start = time.perf_counter()
    built = scenes.make_scenes(source["train"].images[:, 0], source["train"].labels, "train")
    return built, time.perf_counter() - start


def test_fill_holes_fills_only_enclosed_background():
    ring = torch.zeros(1, 7, 7, dtype=torch.bool)
    ring[0, 1:6, 1:6] = True
    ring[0, 2:5, 2:5] = False  # an enclosed hole
    cup = ring.clone()
    cup[0, 1, 3] = False  # the top wall opened: the inside reaches the border, so it is no hole
    filled = scenes.fill_holes(torch.cat([ring, cup]))
    assert filled[0, 1:6, 1:6].all() and int(filled[0].sum()) == 25
    assert torch.equal(filled[1], cup[0])


def test_shapes_determinism_and_prefix(source):
    items, labels = source["test"].images[:, 0], source["test"].labels
    images, masks = scenes.make_scenes(items, labels, "test", 300)
    assert images.shape == (300, 1, 64, 64) and images.dtype == torch.uint8
    assert masks.shape == (300, 64, 64) and masks.dtype == torch.uint8 and int(masks.max()) <= 10
    again = scenes.make_scenes(items, labels, "test", 120)
    assert torch.equal(again[0], images[:120]) and torch.equal(again[1], masks[:120])
    # image and mask agree: background is black, every labelled item pixel shows that item
    assert (images[:, 0][masks == 0] == 0).all()


def test_masks_hold_the_classes_of_the_items_used(source):
    items, labels = source["train"].images[:, 0], source["train"].labels
    n = 200
    layout = scenes._draw_layout(scenes.SCENES_SIZES["train"], len(items),
                                 scenes.generator(scenes.SCENES_SEED, "fashion-mnist-scenes", "train"))
    _, masks = scenes.make_scenes(items, labels, "train", n)
    for i in range(n):
        used = layout["item"][i, : layout["count"][i]]
        present = set(masks[i].unique().tolist()) - {0}
        assert present <= set((labels[used] + 1).tolist())
        assert (labels[used[-1]] + 1).item() in present  # the top item is never hidden
        assert 1 <= int(layout["count"][i]) <= scenes.MAX_ITEMS
    sides = layout["side"]
    assert int(sides.min()) >= scenes.ITEM_SIDES[0] and int(sides.max()) <= scenes.ITEM_SIDES[1]
    assert ((layout["top"] + sides) <= scenes.CANVAS).all() and ((layout["left"] + sides) <= scenes.CANVAS).all()


def test_train_and_test_draw_from_their_own_items(source):
    # item indices index the split's own source set: test scenes can only hold test items, by construction
    for split, total in scenes.SCENES_SIZES.items():
        n_items = len(source[split])
        layout = scenes._draw_layout(total, n_items, scenes.generator(scenes.SCENES_SEED, "fashion-mnist-scenes",
                                                                      split))
        assert int(layout["item"].max()) < n_items
        first = layout["item"].flatten()[: min(n_items, total * scenes.MAX_ITEMS)]
        assert len(first.unique()) == len(first)  # no item recurs before all were used


def test_registry_entry_and_stats(full_train):
    (images, masks), seconds = full_train
    info = get_dataset_info("fashion_mnist_scenes")
    assert info.task == "segmentation" and info.classes[0] == "background" and info.num_classes == 11
    assert len(images) == info.train_size == scenes.SCENES_SIZES["train"]
    counts = torch.bincount(images.flatten(), minlength=256).double()  # exact statistics from the histogram
    levels = torch.arange(256, dtype=torch.float64) / 255
    mean = (counts * levels).sum() / counts.sum()
    std = ((counts * (levels - mean) ** 2).sum() / (counts.sum() - 1)).sqrt()
    assert info.mean[0] == pytest.approx(mean.item(), abs=5e-4)
    assert info.std[0] == pytest.approx(std.item(), abs=5e-4)
    assert seconds < 30


def test_build_data_respects_subsets_and_resizes_masks_nearest():
    data = DataConfig(dataset="fashion_mnist_scenes", root=str(FMNIST_DIR), train_subset=64, eval_subset=20,
                      batch_size=16, image_size=32).validate()
    assert len(load_array_dataset(data, "train")) == 64
    dm = build_data(data, augment_preset("segmentation"), device="cpu", seed=0)
    assert dm.task == "segmentation" and dm.image_size == 32 and dm.train_loader.dataset_size == 64
    images, masks = next(dm.train_loader.iterate(0))
    assert images.shape == (16, 1, 32, 32) and masks.shape == (16, 32, 32) and masks.dtype == torch.uint8
    x, y = dm.augment(images, masks, torch.Generator().manual_seed(0))
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and y.shape == (16, 32, 32)
    full = load_array_dataset(DataConfig(dataset="fashion_mnist_scenes", root=str(FMNIST_DIR), eval_subset=20), "test")
    assert set(dm.eval_loader.labels.unique().tolist()) <= set(full.labels.unique().tolist())
