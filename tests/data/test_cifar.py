"""CIFAR batches through the restricted unpickler."""

import os
import pickle

import numpy as np
import pytest
import torch

from convmixer.data import load_cifar
from convmixer.data.cifar import RestrictedUnpickler, load_pickle
from convmixer.errors import DataError


def _write_cifar10(root, n=10, protocol=2, bytes_keys=True):
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    key = (lambda s: s.encode()) if bytes_keys else (lambda s: s)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {key("data"): rng.integers(0, 256, (n, 3072), dtype=np.uint8), key("labels"): list(range(n)),
                 key("batch_label"): b"x"}
        (d / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    names = [c.encode() for c in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")]
    (d / "batches.meta").write_bytes(pickle.dumps({key("label_names"): names}, protocol=protocol))
    return d


@pytest.mark.parametrize("protocol,bytes_keys", [(2, True), (4, False), (5, True)])
def test_cifar10_loads(tmp_path, protocol, bytes_keys):
    d = _write_cifar10(tmp_path, protocol=protocol, bytes_keys=bytes_keys)
    train = load_cifar("cifar10", "train", tmp_path)
    assert train.images.shape == (50, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.labels.dtype == torch.int64 and train.classes[1] == "automobile"
    # the row layout: 1024 red values, then green, then blue, each row-major 32 x 32
    raw = load_pickle(d / "data_batch_1")["data"][0]
    assert torch.equal(train.images[0, 1].flatten(), torch.from_numpy(raw[1024:2048].copy()))
    assert len(load_cifar("cifar10", "test", d)) == 10  # root may also be the batches folder itself


def test_cifar100_layout(tmp_path):
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    rng = np.random.default_rng(0)
    for name, n in (("train", 20), ("test", 5)):
        (d / name).write_bytes(pickle.dumps({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                                             "fine_labels": [i % 100 for i in range(n)],
                                             "coarse_labels": [0] * n}, protocol=2))
    (d / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"c{i}" for i in range(100)]}, protocol=2))
    ds = load_cifar("cifar100", "train", tmp_path)
    assert len(ds) == 20 and len(ds.classes) == 100 and ds.labels[19] == 19


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_with_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    (d / "data_batch_1").write_bytes(pickle.dumps({"data": _Evil(marker), "labels": [0]}))
    with pytest.raises(DataError, match="system") as e:
        load_cifar("cifar10", "train", tmp_path)
    assert not marker.exists()
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("module,name", [("builtins", "eval"), ("subprocess", "Popen"), ("numpy", "load"),
                                         ("torch", "load")])
def test_only_the_allowed_globals_resolve(tmp_path, module, name):
    with pytest.raises(DataError, match=f"{module}.{name}"):
        RestrictedUnpickler(open(os.devnull, "rb"), "x").find_class(module, name)


def test_bad_batches(tmp_path):
    d = _write_cifar10(tmp_path)
    (d / "data_batch_3").write_bytes(pickle.dumps({"data": np.zeros((4, 100), np.uint8), "labels": [0] * 4}))
    with pytest.raises(DataError, match="3072"):
        load_cifar("cifar10", "train", tmp_path)
    (d / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a readable CIFAR pickle"):
        load_cifar("cifar10", "train", tmp_path)
    (d / "data_batch_3").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(DataError, match="not a CIFAR dict"):
        load_cifar("cifar10", "train", tmp_path)


def test_missing_cifar_says_where_to_get_it(tmp_path, monkeypatch):
    monkeypatch.delenv("CONVMIXER_DATA", raising=False)
    with pytest.raises(DataError, match="cs.toronto.edu"):
        load_cifar("cifar10", "train", tmp_path)


def test_an_explicit_root_without_cifar_is_an_error_not_another_copy(tmp_path, monkeypatch):
    _write_cifar10(tmp_path / "elsewhere")
    monkeypatch.setenv("CONVMIXER_DATA", str(tmp_path / "elsewhere"))
    assert len(load_cifar("cifar10", "test")) == 10  # no root: the search finds it
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=f"CIFAR-10 not found in {tmp_path / 'empty'}"):
        load_cifar("cifar10", "test", tmp_path / "empty")
