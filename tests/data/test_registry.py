"""The dataset registry: consistent facts, refused duplicates, close-match errors, resolvable loaders, and a
dataset added by one entry plus its loader working end to end."""

import ast
import dataclasses
import sys
from pathlib import Path

import pytest
import torch

from convmixer.data import (
    DATASET_STATS, DATASETS, ArrayDataset, DataConfig, build_data, load_idx, make_synthetic, no_augment,
)
from convmixer.data import registry
from convmixer.data.loaders import load_array_dataset
from convmixer.data.registry import DatasetInfo, get_dataset_info, list_datasets, register_dataset
from convmixer.errors import ConfigError

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.parametrize("name", list_datasets())
def test_every_entry_has_consistent_facts(name):
    info = get_dataset_info(name)
    assert info.name == name and info.title
    assert info.check() is info
    resolved = info.for_config(DataConfig(dataset=name))  # synthetic: the config's shape and sizes
    assert resolved.in_chans is not None and len(resolved.mean) == len(resolved.std) == resolved.in_chans
    assert all(s > 0 for s in resolved.std) and all(0 <= m <= 1 for m in resolved.mean)
    assert resolved.image_size >= 1
    for fact in ("num_classes", "train_size", "eval_size"):
        value = getattr(resolved, fact)
        assert value is None or value >= 1, fact
    if info.classes is not None:
        assert len(info.classes) == info.num_classes == len(set(info.classes))
    assert info.in_memory == (info.loader is not None)


def test_derived_names_follow_the_registry():
    assert DATASETS == list_datasets() == ("fashion_mnist", "mnist", "cifar10", "cifar100", "folder", "synthetic",
                                           "fashion_mnist_scenes", "seg_folder", "voc")
    assert DATASET_STATS == {n: (get_dataset_info(n).mean, get_dataset_info(n).std) for n in DATASETS}
    assert list_datasets(in_memory=True) == ("fashion_mnist", "mnist", "cifar10", "cifar100", "synthetic",
                                             "fashion_mnist_scenes", "seg_folder", "voc")
    assert [n for n in DATASETS if get_dataset_info(n).task == "segmentation"] == [
        "fashion_mnist_scenes", "seg_folder", "voc"]
    assert list_datasets(in_memory=False) == ("folder",)


def test_synthetic_facts_come_from_its_config():
    data = DataConfig(dataset="synthetic", synthetic_chans=1, synthetic_image_size=12, synthetic_classes=4,
                      synthetic_size=50, synthetic_eval_size=9)
    info = get_dataset_info("synthetic").for_config(data)
    assert (info.in_chans, info.image_size, info.num_classes, info.train_size, info.eval_size) == (1, 12, 4, 50, 9)
    assert info.mean == (0.5,) and info.std == (0.25,)
    assert get_dataset_info("fashion_mnist").for_config(data) is get_dataset_info("fashion_mnist")


def test_duplicates_are_refused():
    with pytest.raises(ConfigError, match="'mnist' is already registered"):
        register_dataset(get_dataset_info("mnist"))
    assert get_dataset_info("mnist").title == "MNIST"


def test_inconsistent_entries_are_refused():
    good = get_dataset_info("mnist")
    for bad, match in [
        (dict(mean=(0.1, 0.2), std=(0.3, 0.4)), "1 values"),
        (dict(std=(0.3, 0.4)), "one value per channel"),
        (dict(num_classes=9), "number of class names"),
        (dict(train_size=0), "positive integer"),
        (dict(loader=None), "needs a loader"),
        (dict(loader="no_colon"), "package.module:function"),
        (dict(task="detection"), "task must be one of"),
    ]:
        with pytest.raises(ConfigError, match=match):
            register_dataset(dataclasses.replace(good, name="bad_entry", **bad))
    assert "bad_entry" not in list_datasets()


def test_unknown_name_is_one_line_with_close_matches():
    with pytest.raises(ConfigError, match=r"unknown dataset 'fashion-mnist'; did you mean fashion_mnist\b") as e:
        get_dataset_info("fashion-mnist")
    assert "\n" not in str(e.value) and "choose one of fashion_mnist, mnist" in str(e.value)
    with pytest.raises(ConfigError, match="unknown dataset 'imagenet22k'; choose one of") as e:
        get_dataset_info("imagenet22k")
    assert "did you mean" not in str(e.value)


@pytest.mark.parametrize("name", list_datasets(in_memory=True))
def test_in_memory_loaders_resolve(name):
    assert callable(get_dataset_info(name).resolve_loader())


def test_folder_has_no_array_loader():
    with pytest.raises(ConfigError, match="not an in-memory dataset"):
        get_dataset_info("folder").resolve_loader()


def test_registry_imports_only_the_standard_library_and_errors():
    """models/ reads facts from the registry, so it must not import torch, numpy or other data modules."""
    tree = ast.parse(Path(registry.__file__).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert all(a.name.split(".")[0] in sys.stdlib_module_names for a in node.names), ast.dump(node)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                assert node.level == 2 and node.module == "errors", ast.dump(node)
            else:
                assert node.module.split(".")[0] in sys.stdlib_module_names or node.module == "__future__"


def test_synthetic_loader_is_make_synthetic():
    data = DataConfig(dataset="synthetic", synthetic_size=20, synthetic_eval_size=7, synthetic_chans=1,
                      synthetic_image_size=8, synthetic_classes=3, synthetic_seed=5, eval_subset=5)
    for split, n, keep in (("train", 20, 20), ("test", 7, 5)):
        want = make_synthetic(n, num_classes=3, chans=1, size=8, seed=5, split=split)
        got = load_array_dataset(data, split)
        assert torch.equal(got.images, want.images[:keep]) and torch.equal(got.labels, want.labels[:keep])


@pytest.mark.skipif(not FMNIST_DIR.is_dir(), reason="Fashion-MNIST is not installed in /usr/share/datasets")
def test_fashion_mnist_entry_matches_the_files():
    info = get_dataset_info("fashion_mnist")
    train = load_idx("fashion_mnist", "train", root=FMNIST_DIR, download=False)
    test = load_idx("fashion_mnist", "test", root=FMNIST_DIR, download=False)
    assert (len(train), len(test)) == (info.train_size, info.eval_size) == (60_000, 10_000)
    assert tuple(train.classes) == tuple(test.classes) == info.classes
    assert train.images.shape[1:] == (info.in_chans, info.image_size, info.image_size)
    assert int(train.labels.max()) + 1 == info.num_classes
    mean = train.images.double().div(255).mean().item()
    std = train.images.double().div(255).std().item()
    assert info.mean[0] == pytest.approx(mean, abs=5e-4) and info.std[0] == pytest.approx(std, abs=5e-4)


# ----------------------------------------------------------------------------------------------------------------
# Adding a dataset: one entry plus its loader
# ----------------------------------------------------------------------------------------------------------------
def _toy_loader(data, split):
    """Four classes of 6x6 grayscale images: class k is a constant image of value 40 + 50 k."""
    n = 24 if split == "train" else 8
    labels = torch.arange(n) % 4
    images = (40 + 50 * labels).to(torch.uint8).view(n, 1, 1, 1).expand(n, 1, 6, 6).contiguous()
    return ArrayDataset(images, labels.to(torch.int64), ["a", "b", "c", "d"], f"toy {split}")


@pytest.fixture
def toy_dataset():
    info = register_dataset(DatasetInfo(
        name="toy_test", title="toy", in_chans=1, image_size=6, num_classes=4, train_size=24, eval_size=8,
        mean=(0.4,), std=(0.2,), in_memory=True, loader=_toy_loader, classes=("a", "b", "c", "d"),
    ))
    try:
        yield info
    finally:
        registry.unregister_dataset("toy_test")
    assert "toy_test" not in list_datasets()


def test_a_registered_dataset_works_end_to_end(toy_dataset):
    data = DataConfig(dataset="toy_test", batch_size=8, eval_batch_size=5)
    dm = build_data(data.validate(), no_augment(), device="cpu", seed=0)
    assert (dm.name, dm.classes, dm.in_chans, dm.image_size) == ("toy_test", ["a", "b", "c", "d"], 1, 6)
    assert (dm.mean, dm.std) == ((0.4,), (0.2,))
    assert dm.train_loader.dataset_size == 24 and len(dm.train_loader) == 3 and dm.eval_loader.dataset_size == 8
    images, labels = next(dm.train_loader.iterate(epoch=0))
    assert images.dtype == torch.uint8 and images.shape == (8, 1, 6, 6)
    assert torch.equal(images[:, 0, 0, 0], (40 + 50 * labels).to(torch.uint8))
    x, targets = dm.augment(images, labels, torch.Generator().manual_seed(0))
    assert x.shape == (8, 1, 6, 6) and targets.shape == (8, 4)
    torch.testing.assert_close(x, dm.normalize(images))
    assert sum(len(y) for _, y in dm.eval_loader.iterate()) == 8
    resized = build_data(dataclasses.replace(data, image_size=12), no_augment(), device="cpu", seed=0)
    assert resized.image_size == 12
    # the training images through the evaluation loader (convmixer eval --split train), no training loader built
    on_train = build_data(data.validate(), no_augment(), device="cpu", seed=0, train=False, eval_split="train")
    assert on_train.train_loader is None and on_train.eval_loader.dataset_size == 24
    seen = torch.cat([y for _, y in on_train.eval_loader.iterate()])
    assert torch.equal(seen.sort().values, torch.cat([y for _, y in dm.train_loader.iterate(epoch=0)]).sort().values)
    with pytest.raises(ConfigError, match="evaluation split must be one of test, train"):
        build_data(data.validate(), no_augment(), device="cpu", seed=0, eval_split="val")


def test_a_registered_dataset_reaches_the_training_config_and_costs(toy_dataset):
    from convmixer.experiments.costs import data_facts, run_images
    from convmixer.training.config import TrainConfig

    cfg = TrainConfig()
    cfg.data = DataConfig(dataset="toy_test", batch_size=8)
    assert cfg.image_size() == 6
    facts = data_facts(cfg)
    assert (facts.in_chans, facts.image_size, facts.num_classes) == (1, 6, 4)
    train, evals = run_images(cfg)
    assert train == 24 * cfg.schedule.epochs and evals == 8


def test_unregistered_names_fail_validation():
    with pytest.raises(ConfigError, match="unknown dataset 'toy_test'; choose one of fashion_mnist"):
        DataConfig(dataset="toy_test").validate()
