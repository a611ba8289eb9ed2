"""The data layer: datasets, downloads, batched augmentation on the device, loaders.

Entry point: ``build_data(DataConfig(...), AugmentConfig(...), device=..., seed=...) -> DataModule``. What is
known about each dataset (shape, sizes, statistics, classes, loader) is its entry in ``registry.py``.
docs/data.md describes every setting; docs/architecture.md the contracts. Importing this package loads no
data and does no I/O.
"""

from .augment import Augment, denormalize, normalize
from .cifar import RestrictedUnpickler, load_cifar
from .config import AUGMENT_PRESETS, DATASETS, AugmentConfig, DataConfig, augment_preset, no_augment
from .datasets import IDX_DATASETS, ArrayDataset, load_idx, make_synthetic, read_idx
from .folder import IMG_EXTENSIONS, decode_image, eval_transform, scan_image_folder
from .loaders import (
    DATASET_STATS,
    DataModule,
    FolderEvalLoader,
    FolderTrainLoader,
    TensorEvalLoader,
    TensorTrainLoader,
    UnreadableImageWarning,
    build_data,
    shard_plan,
)
from .mix import Mix, mix_targets, smooth_one_hot
from .randaugment import RandAugment, RandAugmentSpec, parse_randaugment
from .registry import DatasetInfo, get_dataset_info, list_datasets, register_dataset, unregister_dataset

__all__ = [
    "AUGMENT_PRESETS", "DATASETS", "DATASET_STATS", "IDX_DATASETS", "IMG_EXTENSIONS", "ArrayDataset", "Augment",
    "AugmentConfig", "DataConfig", "DataModule", "DatasetInfo", "FolderEvalLoader", "FolderTrainLoader", "Mix",
    "RandAugment", "RandAugmentSpec", "RestrictedUnpickler", "TensorEvalLoader", "TensorTrainLoader",
    "UnreadableImageWarning",
    "augment_preset", "build_data", "decode_image", "denormalize", "eval_transform", "get_dataset_info",
    "list_datasets", "load_cifar", "load_idx", "make_synthetic", "mix_targets", "no_augment", "normalize",
    "parse_randaugment", "read_idx", "register_dataset", "scan_image_folder", "shard_plan", "smooth_one_hot",
    "unregister_dataset",
]
