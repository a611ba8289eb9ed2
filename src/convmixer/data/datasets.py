"""In-memory datasets: Fashion-MNIST and MNIST (IDX files), CIFAR (see cifar.py) and synthetic data.

Each loads into an :class:`ArrayDataset`: uint8 images ``(N, C, H, W)``, int64 labels ``(N,)`` and the class
names. IDX files are looked for in the explicit ``root`` alone when one is given (a root that holds no files is an
error, never a fallback to another copy); otherwise, in order, in ``$CONVMIXER_DATA``, the user cache
(``convmixer.io.cache_dir("data")``) and system directories (Debian's ``dataset-fashion-mnist`` package). In each
of those places both the directory itself and a dataset-named subdirectory count. When absent (and no root was
given) they are downloaded into the cache, MD5-checked (see download.py). What each dataset is (title, classes,
sizes, statistics) is its entry in registry.py; the loaders named there (``idx_from_config``,
``synthetic_from_config``) are at the end of their sections.
"""

from __future__ import annotations

import gzip
import os
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import DataError
from ..io import cache_dir
from .download import MIRROR_ENV, ChecksumError, DownloadError, download_file
from .registry import get_dataset_info
from .seeding import generator

if TYPE_CHECKING:
    from .config import DataConfig

DATA_ENV = "CONVMIXER_DATA"  # directory searched for datasets before the cache


@dataclass
class ArrayDataset:
    """A dataset held in memory as tensors: classification (one label per image) or segmentation (a mask per
    image, registry entries with ``task="segmentation"``)."""

    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # classification: int64 (N,), values in 0..len(classes)-1; segmentation: uint8 masks
    # (N, H, W) of class indices 0..len(classes)-1, 255 = ignore (unlabelled, padding)
    classes: list[str]  # class names, index = label
    name: str = ""  # what it is, for messages ("fashion_mnist train")
    skipped: dict[str, str] = field(default_factory=dict)  # files left out at load (path -> reason): bad pairs

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def head(self, n: int | None) -> ArrayDataset:
        """The first ``n`` samples (all when ``n`` is None or larger than the dataset)."""
        if n is None or n >= len(self):
            return self
        return dataclasses.replace(self, images=self.images[:n], labels=self.labels[:n])


# ----------------------------------------------------------------------------------------------------------------
# IDX (MNIST-style) files
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class IdxSpec:
    """Where an IDX dataset's files come from. What it contains (title, classes) is its registry entry's."""

    name: str  # the dataset's registry name (convmixer.data.registry)
    files: dict  # (split, "images" | "labels") -> file name of the gzipped IDX file
    md5: dict  # file name -> MD5 of the .gz as published
    mirrors: tuple[str, ...]  # base URLs tried in order; the file name is appended
    dirnames: tuple[str, ...]  # subdirectories of a search location that may hold the files
    system_dirs: tuple[str, ...] = ()  # system-wide install locations (distribution packages)
    apt_package: str | None = None  # the Debian/Ubuntu package that installs the files

    @property
    def title(self) -> str:
        """Human name, for messages (the registry entry's)."""
        return get_dataset_info(self.name).title

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names, index = label (the registry entry's)."""
        return get_dataset_info(self.name).classes


def _idx_files(prefix_train: str = "train", prefix_test: str = "t10k") -> dict:
    return {
        ("train", "images"): f"{prefix_train}-images-idx3-ubyte.gz",
        ("train", "labels"): f"{prefix_train}-labels-idx1-ubyte.gz",
        ("test", "images"): f"{prefix_test}-images-idx3-ubyte.gz",
        ("test", "labels"): f"{prefix_test}-labels-idx1-ubyte.gz",
    }


IDX_DATASETS: dict[str, IdxSpec] = {
    "fashion_mnist": IdxSpec(
        name="fashion_mnist",
        files=_idx_files(),
        md5={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        dirnames=("fashion_mnist", "fashion-mnist", "FashionMNIST/raw"),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        apt_package="dataset-fashion-mnist",
    ),
    "mnist": IdxSpec(
        name="mnist",
        files=_idx_files(),
        md5={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        dirnames=("mnist", "MNIST/raw"),
    ),
}

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzipped or raw, told apart by content) into an array of its declared shape."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"cannot read {path}: {e}; delete it and download it again") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number {data[:4].hex()}); delete it or replace it")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_TYPES[data[2]])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise DataError(f"{path} is truncated or corrupt ({len(data)} bytes, header says {expected}); "
                        "delete it and download it again")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def _find_file(directory: Path, gz_name: str) -> Path | None:
    """``gz_name`` or its decompressed twin (``gz_name`` without .gz) in ``directory``."""
    for name in (gz_name, gz_name.removesuffix(".gz")):
        if (directory / name).is_file():
            return directory / name
    return None


def search_dirs(spec: IdxSpec, root: str | os.PathLike | None) -> list[Path]:
    """The directories searched for ``spec``'s files, in priority order (existing or not). An explicit ``root`` is
    the only place looked in (it and its dataset-named subdirectories): a root that was named but holds no files
    must be an error, never a silent switch to another copy."""
    if root:
        return [Path(root).expanduser()] + [Path(root).expanduser() / d for d in spec.dirnames]
    bases = [Path(p).expanduser() for p in (os.environ.get(DATA_ENV),) if p] + [cache_dir("data")]
    out = [d for base in bases for d in (base, *(base / name for name in spec.dirnames))]
    return list(dict.fromkeys(out + [Path(d) for d in spec.system_dirs]))


def _how_to_get(spec: IdxSpec, names: list[str]) -> str:
    where = cache_dir("data", spec.dirnames[0])
    apt = f"install the Debian package {spec.apt_package} (apt install {spec.apt_package}), or " if spec.apt_package else ""
    return (f"{apt}download {', '.join(names)} from {spec.mirrors[0]} into {where}, "
            f"or point --root / ${DATA_ENV} at a directory holding them")


def locate_idx(name: str, split: str, *, root: str | os.PathLike | None = None, download: bool = True,
               mirror: str | None = None, progress: bool = True) -> tuple[Path, Path]:
    """Paths of the (images, labels) files of ``name``'s ``split`` ("train" | "test"), downloading if needed."""
    spec = IDX_DATASETS[name]
    names = [spec.files[(split, "images")], spec.files[(split, "labels")]]
    dirs = search_dirs(spec, root)
    for d in dirs:
        found = [_find_file(d, n) for n in names]
        if all(found):
            return found[0], found[1]
    looked = ", ".join(str(d) for d in dirs if d.is_dir()) or "nowhere that exists"
    if root:  # named explicitly: nothing else is searched, and nothing is downloaded in its place
        raise DataError(f"{spec.title} {split} files not found in {Path(root).expanduser()} ({', '.join(names)}; "
                        f"looked in {looked}); point --root at the folder that holds them, or leave it out to search "
                        f"the usual places; to get them: {_how_to_get(spec, names)}")
    if not download:
        raise DataError(f"{spec.title} {split} files not found (looked in {looked}); {_how_to_get(spec, names)}")
    mirror = mirror or os.environ.get(MIRROR_ENV)
    mirrors = (mirror.rstrip("/") + "/",) if mirror else spec.mirrors
    target = cache_dir("data", spec.dirnames[0])
    paths = []
    for n in names:
        errors = []
        for base in mirrors:
            try:
                paths.append(download_file(base + n, target / n, spec.md5[n], progress=progress))
                break
            except ChecksumError as e:
                errors.append(str(e))
                if len(mirrors) == 1:
                    raise
            except DownloadError as e:
                errors.append(str(e))
        else:
            raise DataError(f"{spec.title} not found locally and could not be downloaded ({'; '.join(errors)}); "
                            f"offline? {_how_to_get(spec, names)}")
    return paths[0], paths[1]


def load_idx(name: str, split: str = "train", **kwargs) -> ArrayDataset:
    """Fashion-MNIST or MNIST ``split`` ("train" | "test") as an :class:`ArrayDataset` (N, 1, 28, 28)."""
    spec = IDX_DATASETS[name]
    image_path, label_path = locate_idx(name, split, **kwargs)
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3 or labels.ndim != 1 or images.dtype != np.uint8:
        raise DataError(f"{image_path} / {label_path}: expected uint8 images (N, H, W) and labels (N,), got "
                        f"{images.dtype} {images.shape} and {labels.shape}")
    if len(images) != len(labels):
        raise DataError(f"{image_path} has {len(images)} images but {label_path} has {len(labels)} labels")
    if len(labels) and int(labels.max()) >= len(spec.classes):
        raise DataError(f"{label_path} has label {int(labels.max())}; {spec.title} has {len(spec.classes)} classes")
    return ArrayDataset(
        torch.from_numpy(images.copy()).unsqueeze(1),
        torch.from_numpy(labels.astype(np.int64)),
        list(spec.classes),
        f"{name} {split}",
    )


def idx_from_config(data: DataConfig, split: str) -> ArrayDataset:
    """The registry's loader of IDX datasets: ``data.dataset``'s ``split`` from ``data.root`` (or downloaded)."""
    return load_idx(data.dataset, split, root=data.root, download=data.download, mirror=data.mirror)


# ----------------------------------------------------------------------------------------------------------------
# Synthetic data
# ----------------------------------------------------------------------------------------------------------------
def make_synthetic(n: int, *, num_classes: int = 10, chans: int = 3, size: int = 32, seed: int = 0,
                   split: str = "train") -> ArrayDataset:
    """Learnable random data: each class is a smooth random template; an image is its class's template, randomly
    shifted by up to size/8 px, plus noise. The templates depend on ``seed`` only, the samples on ``split`` too,
    so train and eval share classes but not images."""
    low = torch.rand(num_classes, chans, 4, 4, generator=generator(seed, "synthetic-templates"))
    templates = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    g = generator(seed, "synthetic-samples", split)
    labels = torch.randint(num_classes, (n,), generator=g)
    shift = size // 8
    dy, dx = torch.randint(-shift, shift + 1, (2, n, 1), generator=g)
    images = templates[labels]  # (n, C, S, S); roll each image by its own (dy, dx), wrapping around
    rows = ((torch.arange(size) - dy) % size).view(n, 1, size, 1).expand(n, chans, size, size)
    cols = ((torch.arange(size) - dx) % size).view(n, 1, 1, size).expand(n, chans, size, size)
    images = images.gather(2, rows).gather(3, cols)
    images = images * 180 + 40 + 25 * torch.randn(images.shape, generator=g)
    return ArrayDataset(
        images.round().clamp(0, 255).to(torch.uint8),
        labels.to(torch.int64),
        [f"class{i}" for i in range(num_classes)],
        f"synthetic {split}",
    )


def synthetic_from_config(data: DataConfig, split: str) -> ArrayDataset:
    """The registry's loader of synthetic data: ``split`` made with ``data``'s synthetic_* settings. It reads no
    files, so a ``root`` is an error: whoever gave one expected that data, not synthetic images."""
    if data.root:
        raise DataError(f"synthetic data is generated, not read from {data.root}; leave out the data root, or name "
                        "the dataset that lives there (--dataset)")
    return make_synthetic(data.synthetic_size if split == "train" else data.synthetic_eval_size,
                          num_classes=data.synthetic_classes, chans=data.synthetic_chans,
                          size=data.synthetic_image_size, seed=data.synthetic_seed, split=split)
