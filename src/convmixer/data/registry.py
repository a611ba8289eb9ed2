"""The dataset registry: every fact about a dataset in one entry.

A :class:`DatasetInfo` holds what the rest of the project knows about a dataset before loading it: its shape,
sizes, normalization statistics, class names and how to load it. The data pipeline (:func:`build_data`), the
training config (native image size), the sweep cost estimates (shapes and sizes) and the model variants
(mean/std of the data they were trained on) all read it from here.

Adding a dataset is one :func:`register_dataset` call plus its loader function (docs/data.md, "Adding a
dataset"). This module imports only the standard library and ``convmixer.errors`` so that any module (models
included) can read these facts without an import circle; a loader is named by its dotted path and imported on
first use.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..errors import ConfigError

# ImageNet-1k's per-channel statistics of 0..1 pixels: image folders default to them, and so does the
# preprocessing of the released ConvMixer weights (models.registry.PretrainedCfg).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Facts that a dataset may leave to its DataConfig (see DatasetInfo.config_fields).
CONFIG_FACTS = ("in_chans", "image_size", "num_classes", "train_size", "eval_size")
TASKS = ("classification", "segmentation")  # what a dataset's labels are (DatasetInfo.task)
IGNORE_INDEX = 255  # segmentation masks: the value of pixels that count in neither the loss nor the metrics


@dataclass(frozen=True)
class DatasetInfo:
    """What is known about a dataset without loading it. ``None`` means "not known before loading" or, for the
    facts named in ``config_fields``, "set by the DataConfig" (:meth:`for_config` fills those in)."""

    name: str  # the registry key: the value of DataConfig.dataset / --dataset
    title: str  # human name, for messages ("Fashion-MNIST")
    in_chans: int | None  # image channels
    image_size: int | None  # native square side in px: what DataConfig.image_size=None means (folder: the default)
    num_classes: int | None  # classes; None where the data decides (folder: its class folders)
    train_size: int | None  # images in the training split; None where unknown before loading
    eval_size: int | None  # images in the evaluation split; None where unknown before loading
    mean: tuple[float, ...]  # per-channel mean of 0..1 pixels of the training set (normalize's default)
    std: tuple[float, ...]  # per-channel std of 0..1 pixels of the training set (normalize's default)
    in_memory: bool  # True: loaded whole by `loader` and held on the device as uint8 (one gather per batch);
    # False: an image folder (root/train/<class>/, root/val/<class>/) decoded and cropped by DataLoader workers
    loader: str | Callable[..., Any] | None = None  # in-memory data: "package.module:function" (or the function)
    # taking (DataConfig, split "train" | "test") and returning the whole split as an ArrayDataset; imported on
    # first use (resolve_loader). None for folder data
    classes: tuple[str, ...] | None = None  # class names, index = label, where fixed; None: read from the data
    # files (CIFAR-100's meta file, folder names) or made by the loader (synthetic)
    crop_pct: float | None = None  # folder data, evaluation: resize the short side to image_size / crop_pct and
    # centre-crop (DataConfig.crop_pct=None means this); None: in-memory images are used as they are
    config_fields: Mapping[str, str] = field(default_factory=dict, hash=False)  # fact -> the DataConfig field that
    # sets it, for data whose shape is configured (synthetic: in_chans -> "synthetic_chans", ...)
    task: str = "classification"  # what a label is: "classification" (one class per image, int64 (N,)) or
    # "segmentation" (one class per pixel: uint8 masks (N, H, W), 255 = ignore; classes[0] = "background" where the
    # data has one)

    def __post_init__(self) -> None:
        object.__setattr__(self, "config_fields", MappingProxyType(dict(self.config_fields)))
        object.__setattr__(self, "mean", tuple(self.mean))
        object.__setattr__(self, "std", tuple(self.std))
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(self.classes))

    def check(self) -> DatasetInfo:
        """Raise a one-line ConfigError where the facts disagree (register_dataset calls it); return ``self``."""

        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ConfigError(f"dataset entry {self.name!r}: {what}")

        need(isinstance(self.name, str) and self.name != "" and not any(c.isspace() for c in self.name),
             "the name must be one word")
        unknown = set(self.config_fields) - set(CONFIG_FACTS)
        need(not unknown, f"config_fields may set {', '.join(CONFIG_FACTS)}, not {', '.join(sorted(unknown))}")
        for fact in CONFIG_FACTS:
            value = getattr(self, fact)
            need(value is None or (isinstance(value, int) and value >= 1), f"{fact} must be a positive integer")
            need(value is None or fact not in self.config_fields, f"{fact} is set by the config; leave it None")
        need(len(self.mean) >= 1 and len(self.mean) == len(self.std), "mean and std need one value per channel")
        need(all(s > 0 for s in self.std), "std must be positive")
        need(self.in_chans is None or len(self.mean) == self.in_chans, f"mean/std need {self.in_chans} values")
        need(self.classes is None or len(self.classes) == self.num_classes,
             "num_classes must be the number of class names")
        need(self.in_memory == (self.loader is not None), "an in-memory dataset needs a loader; a folder has none")
        need(self.loader is None or callable(self.loader) or _split_loader_name(self.loader) is not None,
             f"loader must be a function or 'package.module:function', got {self.loader!r}")
        need(self.crop_pct is None or 0 < self.crop_pct <= 1, "crop_pct must be in (0, 1]")
        need(self.task in TASKS, f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        need(self.task != "segmentation" or self.in_memory, "segmentation data is held in memory; give it a loader")
        need(self.task != "segmentation" or self.num_classes is None or self.num_classes <= IGNORE_INDEX,
             f"segmentation masks hold at most {IGNORE_INDEX} classes ({IGNORE_INDEX} = ignore)")
        return self

    def for_config(self, data: Any) -> DatasetInfo:
        """This entry with the facts that ``data`` (a DataConfig) sets filled in (synthetic data: channels,
        size, classes and split sizes); mean/std are then fitted to the configured channels. Entries without
        ``config_fields`` come back unchanged."""
        if not self.config_fields:
            return self
        facts = {fact: getattr(data, attr) for fact, attr in self.config_fields.items()}
        chans = facts.get("in_chans")
        if chans is not None:
            facts["mean"], facts["std"] = _fit(self.mean, chans), _fit(self.std, chans)
        return dataclasses.replace(self, config_fields={}, **facts)

    def resolve_loader(self) -> Callable[..., Any]:
        """The loader function ``(DataConfig, split) -> ArrayDataset`` (importing its module on first use)."""
        if self.loader is None:
            raise ConfigError(f"{self.name} is not an in-memory dataset; it has no array loader")
        if callable(self.loader):
            return self.loader
        module, attr = _split_loader_name(self.loader)
        return getattr(importlib.import_module(module), attr)


def _split_loader_name(name: str) -> tuple[str, str] | None:
    module, sep, attr = name.partition(":")
    return (module, attr) if sep and module and attr.isidentifier() else None


def _fit(values: tuple[float, ...], chans: int) -> tuple[float, ...]:
    """Per-channel statistics for ``chans`` channels: the first ``chans`` values, or a single value repeated."""
    return values * chans if len(values) == 1 else values[:chans]


_REGISTRY: dict[str, DatasetInfo] = {}


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    """Add ``info`` to the registry; an inconsistent entry or a name that is already registered is refused."""
    info.check()
    if info.name in _REGISTRY:
        raise ConfigError(f"dataset {info.name!r} is already registered")
    _REGISTRY[info.name] = info
    return info


def unregister_dataset(name: str) -> DatasetInfo:
    """Remove ``name`` from the registry and return its entry (for tests and plugins that register their own)."""
    info = get_dataset_info(name)
    del _REGISTRY[name]
    return info


def get_dataset_info(name: str) -> DatasetInfo:
    """The entry of dataset ``name``; an unknown name raises a one-line ConfigError with close matches."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ConfigError(f"unknown dataset {name!r}; {hint}choose one of {', '.join(_REGISTRY)}") from None


def list_datasets(*, in_memory: bool | None = None) -> tuple[str, ...]:
    """Registered dataset names in registration order; ``in_memory`` keeps only in-memory (True) or folder
    (False) datasets."""
    return tuple(n for n, info in _REGISTRY.items() if in_memory is None or info.in_memory == in_memory)


# ----------------------------------------------------------------------------------------------------------------
# The built-in datasets. Download locations and file layouts stay with their loaders (datasets.py: IDX_DATASETS,
# cifar.py: CIFAR_LAYOUT); everything else about a dataset is here.
# ----------------------------------------------------------------------------------------------------------------
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
register_dataset(DatasetInfo(
    name="fashion_mnist", title="Fashion-MNIST", in_chans=1, image_size=28, num_classes=10,
    train_size=60_000, eval_size=10_000, mean=(0.2860,), std=(0.3530,), in_memory=True,
    loader="convmixer.data.datasets:idx_from_config", classes=FASHION_MNIST_CLASSES,
))
register_dataset(DatasetInfo(
    name="mnist", title="MNIST", in_chans=1, image_size=28, num_classes=10,
    train_size=60_000, eval_size=10_000, mean=(0.1307,), std=(0.3081,), in_memory=True,
    loader="convmixer.data.datasets:idx_from_config",
    classes=tuple(str(i) for i in range(10)),
))
register_dataset(DatasetInfo(
    name="cifar10", title="CIFAR-10", in_chans=3, image_size=32, num_classes=10,
    train_size=50_000, eval_size=10_000, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
    in_memory=True, loader="convmixer.data.cifar:cifar_from_config",
    # the names when the archive's batches.meta is missing (the meta file is read when present)
    classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
))
register_dataset(DatasetInfo(
    name="cifar100", title="CIFAR-100", in_chans=3, image_size=32, num_classes=100,  # the 100 fine labels
    train_size=50_000, eval_size=10_000, mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762),
    in_memory=True, loader="convmixer.data.cifar:cifar_from_config",  # class names: the archive's meta file
))
register_dataset(DatasetInfo(
    name="folder", title="image folder", in_chans=3, image_size=224, num_classes=None,
    train_size=None, eval_size=None, mean=IMAGENET_MEAN, std=IMAGENET_STD,
    in_memory=False, crop_pct=0.96,  # the released ConvMixer weights' evaluation crop
))
register_dataset(DatasetInfo(
    name="synthetic", title="synthetic data", in_chans=None, image_size=None, num_classes=None,
    train_size=None, eval_size=None, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), in_memory=True,
    loader="convmixer.data.datasets:synthetic_from_config",
    config_fields={"in_chans": "synthetic_chans", "image_size": "synthetic_image_size",
                   "num_classes": "synthetic_classes", "train_size": "synthetic_size",
                   "eval_size": "synthetic_eval_size"},
))
register_dataset(DatasetInfo(
    name="fashion_mnist_scenes", title="Fashion-MNIST scenes", in_chans=1, image_size=64, num_classes=11,
    train_size=20_000, eval_size=4_000, mean=(0.1573,), std=(0.2909,), in_memory=True,
    loader="convmixer.data.scenes:scenes_from_config", classes=("background", *FASHION_MNIST_CLASSES),
    task="segmentation",  # 64 x 64 canvases of 1-4 Fashion-MNIST items (scenes.py); masks: 0 background, 1 + label
))
register_dataset(DatasetInfo(
    name="seg_folder", title="segmentation folder", in_chans=3, image_size=256, num_classes=None,
    train_size=None, eval_size=None, mean=IMAGENET_MEAN, std=IMAGENET_STD, in_memory=True,
    loader="convmixer.data.segfolder:seg_folder_from_config", task="segmentation",
    # root/classes.txt, root/{train,val}/images/*.png|jpg + masks/<stem>.png; loaded whole, longer side -> image_size
))
register_dataset(DatasetInfo(
    name="voc", title="Pascal VOC 2012", in_chans=3, image_size=256, num_classes=21,
    train_size=1_464, eval_size=1_449, mean=IMAGENET_MEAN, std=IMAGENET_STD, in_memory=True,
    loader="convmixer.data.segfolder:voc_from_config", task="segmentation",
    classes=("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
             "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
             "tvmonitor"),
))
