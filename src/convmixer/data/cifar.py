"""CIFAR-10 and CIFAR-100, "python version" (the pickled batches from https://www.cs.toronto.edu/~kriz/cifar.html).

The batches are pickles, and unpickling can run arbitrary code, so they are read with
:class:`RestrictedUnpickler`, which resolves only the few globals a genuine batch refers to (numpy's array
reconstruction, ``ndarray``, ``dtype``, ``scalar``, and ``_frombuffer`` / ``_codecs.encode`` for batches re-pickled
by Python 3) and refuses everything else before it can be called. The loaded values are then type-checked.
"""

from __future__ import annotations

import codecs
import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import DataError
from ..io import cache_dir
from .datasets import DATA_ENV, ArrayDataset
from .registry import get_dataset_info

if TYPE_CHECKING:
    from .config import DataConfig

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"

# dataset -> (directory name, train files, test file, meta file, label key, names key); what each dataset is
# (title, classes, sizes, statistics) is its entry in registry.py
CIFAR_LAYOUT = {
    "cifar10": ("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta",
                "labels", "label_names"),
    "cifar100": ("cifar-100-python", ("train",), "test", "meta", "fine_labels", "fine_label_names"),
}

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): np.ndarray.__reduce__(np.zeros(1))[0],
    ("numpy._core.multiarray", "_reconstruct"): np.ndarray.__reduce__(np.zeros(1))[0],
    ("numpy.core.multiarray", "scalar"): np.float64(0).__reduce__()[0],
    ("numpy._core.multiarray", "scalar"): np.float64(0).__reduce__()[0],
    ("numpy", "ndarray"): np.ndarray,
    # pickle protocol 5 (a batch re-pickled by numpy >= 1.16 on Python >= 3.8) rebuilds arrays from a buffer
    ("numpy.core.numeric", "_frombuffer"): np.ndarray.__reduce_ex__(np.zeros(1), 5)[0],
    ("numpy._core.numeric", "_frombuffer"): np.ndarray.__reduce_ex__(np.zeros(1), 5)[0],
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals in ``_ALLOWED_GLOBALS`` and raises DataError on any other."""

    def __init__(self, file, path: str = "<pickle>") -> None:
        super().__init__(file, encoding="latin1")  # numpy's advice for Python 2 pickles of arrays
        self.path = path

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle's hook
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise DataError(
                f"{self.path} refers to {module}.{name}, which a CIFAR batch never does; refusing to unpickle it "
                f"(re-download the 'python version' from {CIFAR_URL})"
            ) from None


def load_pickle(path: str | os.PathLike) -> dict:
    """Unpickle a CIFAR batch/meta file with :class:`RestrictedUnpickler`; keys are returned as str."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            obj = RestrictedUnpickler(f, str(path)).load()
    except DataError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise DataError(f"{path} is not a readable CIFAR pickle ({e}); re-download it from {CIFAR_URL}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} holds a {type(obj).__name__}, not a CIFAR dict; re-download it from {CIFAR_URL}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _decode(names) -> list[str]:
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


def find_cifar(name: str, root: str | os.PathLike | None) -> Path:
    """The directory holding ``name``'s batches: ``root`` itself or ``root/<cifar-...>`` when a root is given (and
    nowhere else: a root without the batches is an error, not a fallback to another copy), else in $CONVMIXER_DATA
    or the cache."""
    dirname, train_files = CIFAR_LAYOUT[name][0], CIFAR_LAYOUT[name][1]
    bases = [Path(p).expanduser() for p in ((root,) if root else (os.environ.get(DATA_ENV), cache_dir("data"))) if p]
    candidates = [d for b in bases for d in (b, b / dirname)]
    for d in candidates:
        if (d / train_files[0]).is_file():
            return d
    title = get_dataset_info(name).title
    where = f" in {bases[0]}" if root else ""
    raise DataError(
        f"{title} not found{where} (looked for {dirname}/{train_files[0]} in {', '.join(str(b) for b in bases)}); "
        f"download and extract the 'CIFAR python version' from {CIFAR_URL} and pass its folder with --root"
    )


def load_cifar(name: str, split: str = "train", root: str | os.PathLike | None = None) -> ArrayDataset:
    """CIFAR-10/100 ``split`` ("train" | "test") as an :class:`ArrayDataset` of uint8 (N, 3, 32, 32)."""
    if name not in CIFAR_LAYOUT:
        raise DataError(f"unknown CIFAR dataset {name!r}; choose cifar10 or cifar100")
    _, train_files, test_file, meta_file, label_key, names_key = CIFAR_LAYOUT[name]
    directory = find_cifar(name, root)
    images, labels = [], []
    for file in train_files if split == "train" else (test_file,):
        path = directory / file
        if not path.is_file():
            raise DataError(f"{path} is missing; re-extract the CIFAR archive from {CIFAR_URL}")
        batch = load_pickle(path)
        data, lab = batch.get("data"), batch.get(label_key)
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise DataError(f"{path}: 'data' is not a uint8 array of shape (N, 3072); re-download it")
        lab = np.asarray(lab)
        if lab.shape != (len(data),) or not np.issubdtype(lab.dtype, np.integer):
            raise DataError(f"{path}: '{label_key}' is not {len(data)} integer labels; re-download it")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(lab.astype(np.int64))
    meta_path = directory / meta_file
    if meta_path.is_file():
        classes = _decode(load_pickle(meta_path).get(names_key) or [])
    elif get_dataset_info(name).classes is not None:  # CIFAR-10: the registry knows the names
        classes = list(get_dataset_info(name).classes)
    else:
        raise DataError(f"{meta_path} (the class names) is missing; re-extract the CIFAR-100 archive")
    all_labels = np.concatenate(labels)
    if len(all_labels) and (all_labels.min() < 0 or all_labels.max() >= len(classes)):
        raise DataError(f"{directory}: labels outside 0..{len(classes) - 1}; re-download the dataset")
    return ArrayDataset(torch.from_numpy(np.concatenate(images)), torch.from_numpy(all_labels), classes,
                        f"{name} {split}")


def cifar_from_config(data: DataConfig, split: str) -> ArrayDataset:
    """The registry's loader of CIFAR-10/100: ``data.dataset``'s ``split`` from ``data.root`` (or the usual places)."""
    return load_cifar(data.dataset, split, data.root)
