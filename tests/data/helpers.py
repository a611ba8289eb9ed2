"""Builders of small on-disk datasets for the data tests: IDX files and image folders."""

import gzip
import hashlib
from pathlib import Path

import numpy as np

from convmixer.data import datasets


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of a uint8 array: magic (0, 0, 0x08, ndim), big-endian dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_dataset(directory: Path, n_train: int = 40, n_test: int = 12, gz: bool = True, seed: int = 0,
                      names: dict | None = None) -> dict:
    """Write the four Fashion-MNIST-named IDX files; returns {file name: md5}."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    names = names or datasets._idx_files()
    md5 = {}
    for (split, kind), name in names.items():
        n = n_train if split == "train" else n_test
        arr = rng.integers(0, 256, (n, 28, 28)) if kind == "images" else np.arange(n) % 10
        data = idx_bytes(np.asarray(arr))
        if gz:
            data = gzip.compress(data, mtime=0)
        else:
            name = name.removesuffix(".gz")
        (directory / name).write_bytes(data)
        md5[name] = hashlib.md5(data).hexdigest()
    return md5


def make_image_folder(root: Path, classes=("cat", "dog"), per_class: int = 3, size: int = 40, val: bool = True,
                      seed: int = 0) -> Path:
    """root/train/<class>/*.png and root/val/<class>/*.png of random RGB images."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split in ("train", "val") if val else ("train",):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                arr = rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{i}.png")
    return root

