"""Loaders and :func:`build_data`, the data layer's entry point.

In-memory datasets (registry entries with ``in_memory``: IDX, CIFAR, synthetic) are loaded by their entry's
loader and live on the device as uint8 tensors; a training batch is one ``index_select``. Folder datasets
decode and random-resized-crop in DataLoader workers. Either way the loader yields uint8 ``(B, C, S, S)``
images and int64 labels on the device, and the batched :class:`~convmixer.data.augment.Augment` does the rest.

Order. Epoch e visits ``perm = randperm(N, seed=(seed, e))``; rank r of W takes ``perm[r::W]`` and cuts it
into batches of B (the per-rank batch), dropping the remainder, DistributedSampler-style. So batch i of
every rank together is exactly batch i of a one-process run with batch W * B, and
``iterate(epoch, start_batch)`` resumes mid-epoch on the very same batches. Evaluation visits
``arange(N)[r::W]`` in order, unpadded (metrics are summed over ranks).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ..errors import ConfigError, ConvMixerWarning, DataError
from .augment import Augment, normalize
from .config import AugmentConfig, DataConfig
from .datasets import ArrayDataset
from .folder import (
    SUBSTITUTE_TRIES, FolderEvalSet, FolderSplit, FolderTrainSet, PathTable, collate_decoded, scan_image_folder,
)
from .registry import get_dataset_info, list_datasets
from .seg_augment import SegAugment
from .seeding import generator

Tensor = torch.Tensor
Batch = tuple[Tensor, Tensor]

# Per-channel (mean, std) of 0..1 pixels of each built-in dataset, from its registry entry (ImageNet's for folder
# data). The pipeline reads the registry itself, so datasets registered later count too.
DATASET_STATS = {name: (get_dataset_info(name).mean, get_dataset_info(name).std) for name in list_datasets()}


class UnreadableImageWarning(ConvMixerWarning):
    """An image file could not be decoded and was skipped (the CLI prints it as one line)."""


def shard_plan(num_samples: int, batch_size: int, *, seed: int, epoch: int, rank: int, world_size: int) -> Tensor:
    """(batches, batch_size) int64 indices of rank ``rank``'s batches in ``epoch`` (see the module docstring)."""
    perm = torch.randperm(num_samples, generator=generator(seed, "train-order", epoch))
    batches = num_samples // (batch_size * world_size)
    return perm[rank::world_size][: batches * batch_size].view(batches, batch_size)


class _FailureLog:
    """Counts unreadable images reported by workers; warns once per file, or raises in strict mode."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.skipped: dict[str, str] = {}  # path -> reason, every unreadable file seen so far

    def report(self, failures: list[tuple[str, str]]) -> None:
        for path, message in failures:
            if self.strict:
                raise DataError(f"{message} (strict_images is on: fix or remove the file, or turn it off to skip)")
            if path not in self.skipped:
                self.skipped[path] = message
                warnings.warn(f"skipped unreadable image ({len(self.skipped)} so far): {message}",
                              UnreadableImageWarning, stacklevel=3)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # a worker decodes one image at a time; threads would only oversubscribe the CPU


class _Batches(torch.utils.data.Sampler):
    """The batches of the current pass, as a DataLoader ``batch_sampler``; replaced before every pass so one
    DataLoader (and its persistent worker processes) serves every epoch."""

    def __init__(self) -> None:
        self.batches: list[list] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class _DecodingPool:
    """A dataset of decoded images run by ``workers`` persistent DataLoader processes (or in-process with 0)."""

    def __init__(self, dataset, *, workers: int, device: torch.device, strict: bool) -> None:
        self.dataset = dataset
        self.workers = workers
        self.device = device
        self.log = _FailureLog(strict)
        self._sampler = _Batches()
        self._loader = None  # created on first use: building a module must not start processes

    def run(self, batches: list[list]) -> Iterator[tuple[Tensor, Tensor, int]]:
        """Yield (images, labels, requested batch size) of ``batches`` on the device, unreadable files left out."""
        if self._loader is None:
            self._loader = torch.utils.data.DataLoader(
                self.dataset, batch_sampler=self._sampler, num_workers=self.workers, collate_fn=collate_decoded,
                pin_memory=self.device.type == "cuda", worker_init_fn=_worker_init if self.workers else None,
                prefetch_factor=4 if self.workers else None, persistent_workers=self.workers > 0,
            )
        self._sampler.batches = batches
        for (images, labels, failures), wanted in zip(self._loader, batches):
            self.log.report(failures)
            if images is None:
                continue
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True), len(wanted)


# ----------------------------------------------------------------------------------------------------------------
# Training loaders
# ----------------------------------------------------------------------------------------------------------------
class _TrainLoaderBase:
    def __init__(self, num_samples: int, batch_size: int, *, seed: int, rank: int, world_size: int,
                 device: torch.device) -> None:
        self.dataset_size = num_samples  # samples in the whole training set
        self.batch_size = batch_size  # per process
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.device = device

    def __len__(self) -> int:
        """Batches per epoch per rank (the last incomplete global batch is dropped)."""
        return self.dataset_size // (self.batch_size * self.world_size)

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch."""
        return len(self) * self.batch_size

    def plan(self, epoch: int) -> Tensor:
        return shard_plan(self.dataset_size, self.batch_size, seed=self.seed, epoch=epoch, rank=self.rank,
                          world_size=self.world_size)

    def _check_start(self, start_batch: int) -> None:
        if not 0 <= start_batch <= len(self):
            raise ConfigError(f"start_batch {start_batch} is outside 0..{len(self)} (batches per epoch)")


class TensorTrainLoader(_TrainLoaderBase):
    """Training batches of an in-memory dataset, already on the device: one gather per batch."""

    def __init__(self, dataset: ArrayDataset, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1,
                 device: torch.device = torch.device("cpu")) -> None:
        super().__init__(len(dataset), batch_size, seed=seed, rank=rank, world_size=world_size, device=device)
        self.images = dataset.images.to(device)
        self.labels = dataset.labels.to(device)
        self.skipped = dataset.skipped  # files left out when the data was loaded (a folder's bad image/mask pairs)

    def iterate(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        """Yield (uint8 (B, C, H, W), labels: int64 (B,) or uint8 masks (B, H, W)) on the device for batches
        start_batch.. of ``epoch``."""
        self._check_start(start_batch)
        plan = self.plan(epoch)[start_batch:].to(self.device)
        for idx in plan:
            yield self.images.index_select(0, idx), self.labels.index_select(0, idx)


class FolderTrainLoader(_TrainLoaderBase):
    """Training batches of an image folder, decoded and cropped by ``workers`` DataLoader processes."""

    def __init__(self, dataset, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1,
                 device: torch.device = torch.device("cpu"), workers: int = 2, strict: bool = False) -> None:
        super().__init__(len(dataset), batch_size, seed=seed, rank=rank, world_size=world_size, device=device)
        self.dataset = dataset  # a FolderTrainSet
        self.pool = _DecodingPool(dataset, workers=workers, device=device, strict=strict)

    @property
    def skipped(self) -> dict[str, str]:
        """Unreadable files seen so far (path -> reason)."""
        return self.pool.log.skipped

    def iterate(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        self._check_start(start_batch)
        batches = [[(i, epoch) for i in row] for row in self.plan(epoch)[start_batch:].tolist()]
        for images, labels, wanted in self.pool.run(batches):
            if len(images) != wanted:
                raise DataError(f"{wanted - len(images)} images of a training batch and the {SUBSTITUTE_TRIES - 1} "
                                "files after each are all unreadable; check the dataset")
            yield images, labels


# ----------------------------------------------------------------------------------------------------------------
# Evaluation loaders
# ----------------------------------------------------------------------------------------------------------------
class _EvalLoaderBase:
    def __init__(self, num_samples: int, batch_size: int, *, rank: int, world_size: int, device: torch.device):
        self.dataset_size = num_samples  # samples in the whole evaluation set
        self.indices = torch.arange(num_samples)[rank::world_size]  # this rank's share, in order
        self.num_samples = len(self.indices)  # samples this rank evaluates
        self.batch_size = batch_size
        self.device = device

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)


class TensorEvalLoader(_EvalLoaderBase):
    """Evaluation batches of an in-memory dataset, in a fixed order."""

    def __init__(self, dataset: ArrayDataset, batch_size: int, *, rank: int = 0, world_size: int = 1,
                 device: torch.device = torch.device("cpu")) -> None:
        super().__init__(len(dataset), batch_size, rank=rank, world_size=world_size, device=device)
        self.images = dataset.images.to(device)
        self.labels = dataset.labels.to(device)
        self.skipped = dataset.skipped  # files left out when the data was loaded (a folder's bad image/mask pairs)

    def iterate(self) -> Iterator[Batch]:
        for idx in self.indices.to(self.device).split(self.batch_size):
            yield self.images.index_select(0, idx), self.labels.index_select(0, idx)


class FolderEvalLoader(_EvalLoaderBase):
    """Evaluation batches of an image folder (resize + centre crop in workers); unreadable files are skipped."""

    def __init__(self, dataset, batch_size: int, *, rank: int = 0, world_size: int = 1,
                 device: torch.device = torch.device("cpu"), workers: int = 2, strict: bool = False) -> None:
        super().__init__(len(dataset), batch_size, rank=rank, world_size=world_size, device=device)
        self.dataset = dataset  # a FolderEvalSet
        self.pool = _DecodingPool(dataset, workers=workers, device=device, strict=strict)

    @property
    def skipped(self) -> dict[str, str]:
        """Unreadable files seen so far (path -> reason)."""
        return self.pool.log.skipped

    def iterate(self) -> Iterator[Batch]:
        batches = [b.tolist() for b in self.indices.split(self.batch_size)]
        for images, labels, _ in self.pool.run(batches):
            yield images, labels


# ----------------------------------------------------------------------------------------------------------------
# The data module
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class DataModule:
    """Everything the training engine needs from the data layer."""

    name: str  # dataset name, e.g. "fashion_mnist"
    classes: list[str]  # class names, index = label
    in_chans: int  # image channels
    image_size: int  # square side of the images the loaders yield, px
    mean: tuple[float, ...]  # per-channel mean of 0..1 pixels used by normalize
    std: tuple[float, ...]  # per-channel std of 0..1 pixels used by normalize
    train_loader: TensorTrainLoader | FolderTrainLoader | None  # None when built with train=False
    eval_loader: TensorEvalLoader | FolderEvalLoader
    augment: Augment | SegAugment  # classification: (uint8 images, labels, generator) -> (normalized float images,
    # soft targets); segmentation: (uint8 images, uint8 masks, generator) -> (normalized images, int64 masks)
    task: str = "classification"  # the dataset's task (registry entry): "classification" | "segmentation"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def normalize(self, images: Tensor) -> Tensor:
        """uint8 (B, C, H, W) -> float32 ``(x / 255 - mean) / std`` on the same device (evaluation input)."""
        return normalize(images, self.mean, self.std)

    def describe(self) -> str:
        """One line for logs."""
        train = f"{self.train_loader.dataset_size} train" if self.train_loader is not None else "no train"
        return (f"{self.name}: {train} / {self.eval_loader.dataset_size} eval images, {self.num_classes} classes, "
                f"{self.in_chans}x{self.image_size}x{self.image_size}, {self.augment!r}")


EVAL_SPLITS = ("test", "train")  # what an evaluation loader can read (build_data's eval_split)


def load_array_dataset(data: DataConfig, split: str) -> ArrayDataset:
    """The in-memory dataset ``data.dataset``'s ``split`` ("train" | "test") from its registry entry's loader, cut
    to the configured subset."""
    ds = get_dataset_info(data.dataset).resolve_loader()(data, split)
    return ds.head(data.train_subset if split == "train" else data.eval_subset)


def resize_dataset(ds: ArrayDataset, size: int, interpolation: str = "bicubic", chunk: int = 4096) -> ArrayDataset:
    """All images resized to ``size`` x ``size`` once (antialiased), for small data used at another resolution;
    segmentation masks (N, H, W) with them, nearest (a class index is never blended)."""
    if ds.images.shape[-2:] == (size, size):
        return ds
    mode = interpolation if interpolation in ("bilinear", "bicubic") else "nearest-exact"
    kwargs = {"antialias": True, "align_corners": False} if mode != "nearest-exact" else {}
    out = [torch.nn.functional.interpolate(part.float(), size=(size, size), mode=mode, **kwargs)
           .round_().clamp_(0, 255).to(torch.uint8) for part in ds.images.split(chunk)]
    images = torch.cat(out) if out else ds.images[:, :, :size, :size]
    labels = ds.labels
    if labels.dim() == 3:  # masks
        labels = torch.cat([torch.nn.functional.interpolate(part[:, None], size=(size, size), mode="nearest-exact")[:, 0]
                            for part in labels.split(chunk)]) if len(labels) else labels[:, :size, :size]
    return dataclasses.replace(ds, images=images, labels=labels)


def _stats(data: DataConfig, in_chans: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    info = get_dataset_info(data.dataset)
    mean, std = info.mean, info.std
    mean, std = tuple(data.mean or mean[:in_chans]), tuple(data.std or std[:in_chans])
    if len(mean) == 1 and in_chans > 1:
        mean *= in_chans
    if len(std) == 1 and in_chans > 1:
        std *= in_chans
    if len(mean) != in_chans or len(std) != in_chans:
        raise ConfigError(f"mean {mean} / std {std} need {in_chans} values (one per channel) for {data.dataset}")
    return mean, std


def build_data(data: DataConfig, aug: AugmentConfig, *, device: torch.device | str, seed: int, rank: int = 0,
               world_size: int = 1, train: bool = True, eval_split: str = "test") -> DataModule:
    """Load ``data.dataset`` and build its loaders and augmentation for rank ``rank`` of ``world_size``.

    The evaluation loader reads ``eval_split``: "test" (the test or val split) or "train" (the training images,
    cut to ``data.train_subset``, without augmentation: what ``convmixer eval --split train`` measures, the
    generalization gap).

    ``data`` and ``aug`` are validated where they enter (the Trainer, the CLI commands); this checks only what
    depends on the data itself (batch size against the set's size, mean/std against its channels)."""
    device = torch.device(device)
    if not (isinstance(world_size, int) and world_size >= 1 and 0 <= rank < world_size):
        raise ConfigError(f"rank {rank} must be in 0..world_size-1 (world_size {world_size})")
    if eval_split not in EVAL_SPLITS:
        raise ConfigError(f"the evaluation split must be one of {', '.join(EVAL_SPLITS)}, got {eval_split!r}")
    if not get_dataset_info(data.dataset).in_memory:
        return _build_folder(data, aug, device=device, seed=seed, rank=rank, world_size=world_size, train=train,
                             eval_split=eval_split)
    eval_ds = load_array_dataset(data, eval_split)
    train_ds = load_array_dataset(data, "train") if train else None
    size = data.image_size or eval_ds.images.shape[-1]
    eval_ds = resize_dataset(eval_ds, size, data.interpolation)
    in_chans = eval_ds.images.shape[1]
    mean, std = _stats(data, in_chans)
    train_loader = None
    if train_ds is not None:
        train_ds = resize_dataset(train_ds, size, data.interpolation)
        _check_batches(data, len(train_ds), world_size)
        train_loader = TensorTrainLoader(train_ds, data.batch_size, seed=seed, rank=rank, world_size=world_size,
                                         device=device)
    task = get_dataset_info(data.dataset).task
    transform = SegAugment if task == "segmentation" else Augment
    return DataModule(
        name=data.dataset, classes=list(eval_ds.classes), in_chans=in_chans, image_size=size, mean=mean, std=std,
        train_loader=train_loader,
        eval_loader=TensorEvalLoader(eval_ds, data.eval_batch_size, rank=rank, world_size=world_size, device=device),
        augment=transform(aug, num_classes=len(eval_ds.classes), mean=mean, std=std, in_chans=in_chans,
                          image_size=size),
        task=task,
    )


def _check_batches(data: DataConfig, n: int, world_size: int) -> None:
    if n < data.batch_size * world_size:
        raise ConfigError(f"the training set has {n} images, fewer than one global batch "
                          f"({data.batch_size} x {world_size} processes); lower batch_size")


def _build_folder(data: DataConfig, aug: AugmentConfig, *, device: torch.device, seed: int, rank: int,
                  world_size: int, train: bool, eval_split: str) -> DataModule:
    if not data.root:
        raise ConfigError("the folder dataset needs --root (a directory with train/<class>/ and val/<class>/)")
    classes, train_split, val_split = scan_image_folder(data.root, train=train or eval_split == "train")
    info = get_dataset_info(data.dataset)
    in_chans, size = info.in_chans, data.image_size or info.image_size
    crop_pct = data.crop_pct or info.crop_pct
    mean, std = _stats(data, in_chans)
    if train_split is not None and data.train_subset is not None:
        train_split = _head_split(train_split, data.train_subset)
    if eval_split == "train":
        val_split = train_split  # the training images through the evaluation transform (resize, center crop)
    elif data.eval_subset is not None:
        val_split = _head_split(val_split, data.eval_subset)
    eval_set = FolderEvalSet(val_split, size=size, in_chans=in_chans, crop_pct=crop_pct,
                             interpolation=data.interpolation)
    eval_loader = FolderEvalLoader(eval_set, data.eval_batch_size, rank=rank, world_size=world_size, device=device,
                                   workers=data.workers, strict=data.strict_images)
    train_loader = None
    if train:
        _check_batches(data, len(train_split), world_size)
        train_set = FolderTrainSet(train_split, size=size, in_chans=in_chans, crop=aug.crop, scale=aug.scale,
                                   ratio=aug.ratio, interpolation=aug.interpolation, seed=seed,
                                   strict=data.strict_images)
        train_loader = FolderTrainLoader(train_set, data.batch_size, seed=seed, rank=rank, world_size=world_size,
                                         device=device, workers=data.workers, strict=data.strict_images)
    return DataModule(
        name=data.dataset, classes=classes, in_chans=in_chans, image_size=size, mean=mean, std=std,
        train_loader=train_loader, eval_loader=eval_loader,
        augment=Augment(aug, num_classes=len(classes), mean=mean, std=std, in_chans=in_chans, image_size=size,
                        crop_in_loader=aug.crop == "rrc"),
    )


def _head_split(split: FolderSplit, n: int) -> FolderSplit:
    """``n`` files spread evenly over the (class-sorted) split, so a subset still has every class."""
    n = min(n, len(split))
    keep = [i * len(split) // n for i in range(n)]
    return FolderSplit(PathTable([split.paths[i] for i in keep]), split.labels[keep], split.root)
