"""IDX parsing, the search order for Fashion-MNIST/MNIST, synthetic data."""

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from convmixer.data import datasets, load_idx, make_synthetic, read_idx
from convmixer.errors import DataError

from .helpers import idx_bytes, write_idx_dataset


def test_read_idx_raw_and_gzip(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(idx_bytes(arr))
    (tmp_path / "b.gz").write_bytes(gzip.compress(idx_bytes(arr)))
    (tmp_path / "c").write_bytes(gzip.compress(idx_bytes(arr)))  # gzip told apart by content, not name
    for name in ("a", "b.gz", "c"):
        out = read_idx(tmp_path / name)
        assert out.shape == (2, 3, 4) and out.dtype == np.uint8 and np.array_equal(out, arr)


@pytest.mark.parametrize("content,match", [
    (b"\x00\x00\x08\x01\x00\x00\x00\x05abc", "truncated"),
    (b"PK\x03\x04whatever", "not an IDX"),
    (b"\x1f\x8b\x08\x00broken", "cannot read"),
])
def test_read_idx_rejects_bad_files(tmp_path, content, match):
    (tmp_path / "bad").write_bytes(content)
    with pytest.raises(DataError, match=match):
        read_idx(tmp_path / "bad")


@pytest.mark.parametrize("gz", [True, False])
def test_load_idx_from_explicit_root(tmp_path, no_system_data, gz):
    write_idx_dataset(tmp_path / "fm", n_train=30, n_test=10, gz=gz)
    train = load_idx("fashion_mnist", "train", root=tmp_path / "fm", download=False)
    test = load_idx("fashion_mnist", "test", root=tmp_path / "fm", download=False)
    assert train.images.shape == (30, 1, 28, 28) and train.images.dtype == torch.uint8
    assert train.labels.dtype == torch.int64 and train.labels.tolist() == [i % 10 for i in range(30)]
    assert len(test) == 10 and train.classes[0] == "T-shirt/top" and len(train.classes) == 10


def test_search_order(tmp_path, monkeypatch, no_system_data):
    """explicit root > $CONVMIXER_DATA > the cache > system directories; a dataset-named subdirectory counts."""
    monkeypatch.setenv("CONVMIXER_CACHE", str(tmp_path / "cache"))
    roots = {"root": tmp_path / "r", "env": tmp_path / "e" / "fashion-mnist", "cache": tmp_path / "cache" / "data" /
             "fashion_mnist", "system": tmp_path / "sys"}
    for i, (_, d) in enumerate(roots.items()):
        write_idx_dataset(d, n_train=10 + i, n_test=5)
    spec = datasets.IDX_DATASETS["fashion_mnist"]
    monkeypatch.setitem(datasets.IDX_DATASETS, "fashion_mnist",
                        datasets.IdxSpec(**{**spec.__dict__, "system_dirs": (str(roots["system"]),)}))
    monkeypatch.setenv("CONVMIXER_DATA", str(tmp_path / "e"))

    def n_found(**kw):
        return len(load_idx("fashion_mnist", "train", download=False, **kw))

    assert n_found(root=roots["root"]) == 10
    assert n_found() == 11  # $CONVMIXER_DATA/fashion-mnist
    monkeypatch.delenv("CONVMIXER_DATA")
    assert n_found() == 12  # cache/data/fashion_mnist
    for f in roots["cache"].iterdir():
        f.unlink()
    assert n_found() == 13  # the system directory


def test_missing_without_download_says_how_to_get_it(tmp_path, no_system_data):
    with pytest.raises(DataError) as e:
        load_idx("fashion_mnist", "train", root=tmp_path, download=False)
    msg = str(e.value)
    assert "\n" not in msg and "apt install dataset-fashion-mnist" in msg
    assert "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/" in msg


def test_inconsistent_files_are_errors(tmp_path, no_system_data):
    write_idx_dataset(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(7, np.uint8))))
    with pytest.raises(DataError, match="40 images but"):
        load_idx("fashion_mnist", "train", root=tmp_path, download=False)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.full(40, 12, np.uint8))))
    with pytest.raises(DataError, match="label 12"):
        load_idx("fashion_mnist", "train", root=tmp_path, download=False)


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist_from_the_debian_package(monkeypatch):
    monkeypatch.delenv("CONVMIXER_DATA", raising=False)
    test = load_idx("fashion_mnist", "test", download=False)
    assert test.images.shape == (10000, 1, 28, 28)
    assert torch.bincount(test.labels).tolist() == [1000] * 10


def test_synthetic_is_deterministic_and_learnable():
    a = make_synthetic(64, num_classes=4, chans=3, size=16, seed=1)
    b = make_synthetic(64, num_classes=4, chans=3, size=16, seed=1)
    ev = make_synthetic(64, num_classes=4, chans=3, size=16, seed=1, split="test")
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert a.images.shape == (64, 3, 16, 16) and a.images.dtype == torch.uint8 and a.classes == [f"class{i}" for i in range(4)]
    assert not torch.equal(a.images, ev.images)
    # nearest class mean classifies most eval images: the classes carry signal
    means = torch.stack([a.images[a.labels == k].float().mean(0) for k in range(4)])
    pred = torch.cdist(ev.images.float().flatten(1), means.flatten(1)).argmin(1)
    assert (pred == ev.labels).float().mean() > 0.5
    assert len(make_synthetic(0, num_classes=2)) == 0


def test_an_explicit_root_without_the_files_is_an_error_not_another_copy(tmp_path, monkeypatch, no_system_data):
    write_idx_dataset(tmp_path / "elsewhere")
    monkeypatch.setenv("CONVMIXER_DATA", str(tmp_path / "elsewhere"))
    assert len(load_idx("fashion_mnist", "test", download=False)) == 12  # no root: the search finds it
    (tmp_path / "empty").mkdir()
    for download in (False, True):  # nothing is downloaded into, or instead of, a root that was named
        with pytest.raises(DataError, match=f"Fashion-MNIST test files not found in {tmp_path / 'empty'}"):
            load_idx("fashion_mnist", "test", root=tmp_path / "empty", download=download)


def test_synthetic_data_takes_no_root(tmp_path):
    from convmixer.data import DataConfig
    from convmixer.data.datasets import synthetic_from_config

    with pytest.raises(DataError, match="synthetic data is generated"):
        synthetic_from_config(DataConfig(dataset="synthetic", root=str(tmp_path)), "test")
