"""Downloads against a local HTTP server on 127.0.0.1: good file, corrupt file, server down. Never the internet."""

import dataclasses

import pytest

from convmixer.data import DataConfig, build_data, datasets, no_augment
from convmixer.data.download import ChecksumError, DownloadError, download_file, md5sum
from convmixer.errors import DataError
from convmixer.io import cache_dir

from .helpers import write_idx_dataset


@pytest.fixture
def served_fmnist(http_server, no_system_data, monkeypatch):
    """Small Fashion-MNIST-named IDX files on the local server, with their MD5s made the official ones."""
    url, www = http_server
    md5 = write_idx_dataset(www, n_train=20, n_test=8)
    spec = datasets.IDX_DATASETS["fashion_mnist"]
    monkeypatch.setitem(datasets.IDX_DATASETS, "fashion_mnist", dataclasses.replace(spec, md5=md5))
    return url, www


def test_good_download_lands_in_the_cache(served_fmnist, monkeypatch):
    url, _ = served_fmnist
    monkeypatch.setenv("CONVMIXER_DATA_MIRROR", url)
    ds = datasets.load_idx("fashion_mnist", "train", progress=False)
    assert len(ds) == 20
    target = cache_dir("data", "fashion_mnist")
    assert sorted(p.name for p in target.iterdir()) == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
    # second time: found in the cache, no server needed
    monkeypatch.setenv("CONVMIXER_DATA_MIRROR", "http://127.0.0.1:9/")
    assert len(datasets.load_idx("fashion_mnist", "train", progress=False)) == 20


def test_build_data_downloads_with_the_mirror_setting(served_fmnist):
    url, _ = served_fmnist
    dm = build_data(DataConfig(batch_size=4, mirror=url), no_augment(), device="cpu", seed=0)
    assert dm.train_loader.dataset_size == 20 and dm.eval_loader.dataset_size == 8


def test_corrupt_file_is_rejected_and_not_kept(served_fmnist, monkeypatch):
    url, www = served_fmnist
    (www / "train-images-idx3-ubyte.gz").write_bytes(b"not the real file")
    monkeypatch.setenv("CONVMIXER_DATA_MIRROR", url)
    with pytest.raises(ChecksumError) as e:
        datasets.load_idx("fashion_mnist", "train", progress=False)
    assert "MD5" in str(e.value) and "\n" not in str(e.value)
    target = cache_dir("data", "fashion_mnist")
    assert not target.exists() or list(target.iterdir()) == []  # no file, not even a temporary one


def test_server_down_gives_the_offline_recipe(no_system_data, closed_port_url, monkeypatch):
    monkeypatch.setenv("CONVMIXER_DATA_MIRROR", closed_port_url)
    with pytest.raises(DataError) as e:
        datasets.load_idx("fashion_mnist", "train", progress=False)
    msg = str(e.value)
    assert "\n" not in msg
    assert "apt install dataset-fashion-mnist" in msg
    assert "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/" in msg
    assert "train-images-idx3-ubyte.gz" in msg


def test_download_file_errors(http_server, tmp_path):
    url, www = http_server
    (www / "f.bin").write_bytes(b"hello")
    dest = download_file(url + "f.bin", tmp_path / "out" / "f.bin", md5sum(www / "f.bin"), progress=False)
    assert dest.read_bytes() == b"hello"
    with pytest.raises(DownloadError, match="404|Not Found"):
        download_file(url + "missing.bin", tmp_path / "m.bin", progress=False)
    assert not (tmp_path / "m.bin").exists()


def test_mnist_mirror_list_falls_through(no_system_data, closed_port_url, http_server, monkeypatch):
    """MNIST tries its mirrors in order: a dead first mirror does not stop the download."""
    url, www = http_server
    md5 = write_idx_dataset(www, n_train=6, n_test=4)
    spec = datasets.IDX_DATASETS["mnist"]
    monkeypatch.setitem(datasets.IDX_DATASETS, "mnist",
                        dataclasses.replace(spec, md5=md5, mirrors=(closed_port_url, url)))
    ds = datasets.load_idx("mnist", "test", progress=False)
    assert len(ds) == 4 and ds.classes == [str(i) for i in range(10)]
