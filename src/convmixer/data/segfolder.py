"""Users' segmentation data, loaded whole into memory: a folder of image/mask pairs, or Pascal VOC 2012 as shipped.

``seg_folder`` (``DataConfig.root`` = ``root``)::

    root/classes.txt                      class names, one per line (index = line number, blank lines skipped)
    root/train/images/<stem>.png|.jpg|.jpeg
    root/train/masks/<stem>.png           class indices, single-channel (L, I;16) or palette (P) PNG, 255 = ignore
    root/val/images/..., root/val/masks/...

``voc`` (``DataConfig.root`` = the ``VOC2012`` folder, or a folder holding ``VOC2012`` or ``VOCdevkit/VOC2012``):
``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png`` (palette), ``ImageSets/Segmentation/{train,val}.txt``;
the 21 class names are the registry entry's.

A palette mask's pixel values are its palette indices, never its colours. Every pair becomes a fixed-size canvas
at load: resized so its longer side is ``image_size`` (the image antialiased bilinear, the mask nearest), then
padded at the right and bottom to a square, the image with the mean colour (0 after normalization) and the mask
with 255 (ignored). Evaluation is at that resolution. A bad pair (no mask, sizes that differ, a mask value that
is neither a class nor 255, a file that cannot be decoded) is skipped with a one-line warning and counted in the
dataset's ``skipped``; with ``strict_images`` the first one raises a DataError. Nothing is unpickled.
"""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import ConfigError, ConvMixerWarning, DataError
from .datasets import ArrayDataset
from .folder import open_image
from .registry import IGNORE_INDEX, get_dataset_info

if TYPE_CHECKING:
    from .config import DataConfig

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SPLIT_DIRS = {"train": "train", "test": "val"}  # loader split -> folder


class SkippedPairWarning(ConvMixerWarning):
    """An image/mask pair could not be used and was left out (the CLI prints it as one line)."""


def read_mask(path: Path) -> np.ndarray:
    """The class indices of a mask file as uint16 (H, W): palette images give their indices, L / I;16 / 1 images
    their values; colour masks are refused (DataError)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in ("P", "L", "1", "I;16", "I;16B", "I;16L", "I"):
                raise DataError(f"mask {path} is a {img.mode} image; save class indices as a single-channel or "
                                "palette PNG")
            return np.asarray(img).astype(np.uint16 if img.mode != "I" else np.int64)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"mask {path} does not exist") from None
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, ...
        raise DataError(f"cannot decode mask {path}: {type(e).__name__}: {e}") from None


def _canvas(image, mask: np.ndarray, size: int, fill: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """A Pillow RGB image and its uint8 mask -> (size, size, 3) and (size, size): longer side resized to ``size``
    (image bilinear, antialiased; mask nearest), padded at the right and bottom (image ``fill``, mask 255)."""
    from PIL import Image

    w, h = image.size
    scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    out_image = np.empty((size, size, 3), np.uint8)
    out_image[:] = np.asarray(fill, np.uint8)
    out_mask = np.full((size, size), IGNORE_INDEX, np.uint8)
    out_image[:nh, :nw] = np.asarray(image.resize((nw, nh), Image.Resampling.BILINEAR))
    out_mask[:nh, :nw] = np.asarray(Image.fromarray(mask).resize((nw, nh), Image.Resampling.NEAREST))
    return out_image, out_mask


def _load_pair(image_path: Path, mask_path: Path, num_classes: int, size: int, fill: tuple[int, ...]):
    """One pair as canvases; DataError (one line) saying why the pair is bad."""
    if not mask_path.is_file():
        raise DataError(f"{image_path} has no mask ({mask_path} is missing)")
    image = open_image(image_path, 3)
    mask = read_mask(mask_path)
    if mask.shape != (image.height, image.width):
        raise DataError(f"{mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image {image_path} is "
                        f"{image.width}x{image.height}")
    bad = (mask >= num_classes) & (mask != IGNORE_INDEX)
    if bad.any():
        raise DataError(f"{mask_path} holds class index {int(mask[bad].max())}, outside 0..{num_classes - 1} "
                        f"(and not {IGNORE_INDEX} = ignore)")
    return _canvas(image, mask.astype(np.uint8), size, fill)


def load_pairs(pairs: list[tuple[Path, Path]], classes: list[str], *, size: int, fill: tuple[int, ...],
               strict: bool, workers: int, name: str) -> ArrayDataset:
    """The (image, mask) files ``pairs`` as an ArrayDataset of canvases (module docstring); bad pairs skipped,
    warned about and listed in ``skipped`` (strict: the first one raises). No usable pair: a ConfigError."""

    def load(pair):
        try:
            return _load_pair(*pair, len(classes), size, fill)
        except DataError as e:
            return e

    with ThreadPoolExecutor(max(1, workers)) as pool:  # Pillow releases the GIL while it decodes and resizes
        results = list(pool.map(load, pairs))
    kept, skipped = [], {}
    for (image_path, _), result in zip(pairs, results):
        if not isinstance(result, DataError):
            kept.append(result)
            continue
        if strict:
            raise DataError(f"{result} (strict_images is on: fix or remove the pair, or turn it off to skip)")
        skipped[str(image_path)] = str(result)
        warnings.warn(f"skipped bad image/mask pair ({len(skipped)} so far): {result}", SkippedPairWarning,
                      stacklevel=2)
    if not kept:
        raise ConfigError(f"{name} has no usable image/mask pairs ({len(pairs)} listed, {len(skipped)} bad); "
                          "check the dataset root and its layout (docs/data.md, 'Segmentation data')")
    images = torch.from_numpy(np.stack([im for im, _ in kept])).permute(0, 3, 1, 2).contiguous()
    masks = torch.from_numpy(np.stack([m for _, m in kept]))
    return ArrayDataset(images, masks, list(classes), name, skipped=skipped)


def _settings(data: DataConfig) -> dict:
    info = get_dataset_info(data.dataset)
    if not data.root:
        raise ConfigError(f"the {data.dataset} dataset needs --root (docs/data.md, 'Segmentation data')")
    mean = tuple(data.mean or info.mean)
    mean = mean * 3 if len(mean) == 1 else mean
    return dict(size=data.image_size or info.image_size, fill=tuple(round(255 * m) for m in mean[:3]),
                strict=data.strict_images, workers=data.workers)


def _subset(data: DataConfig, split: str, pairs: list) -> list:
    n = data.train_subset if split == "train" else data.eval_subset
    return pairs if n is None else pairs[:n]


def read_classes(path: Path) -> list[str]:
    """Class names from ``classes.txt``: one per line, blank lines skipped."""
    try:
        classes = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as e:
        raise DataError(f"cannot read the class names {path}: {e.strerror or e}; write one class name per line "
                        "there (index 0 first, e.g. background)") from None
    if not classes:
        raise DataError(f"{path} names no classes; write one class name per line")
    if len(classes) > IGNORE_INDEX:
        raise DataError(f"{path} names {len(classes)} classes; masks hold at most {IGNORE_INDEX} "
                        f"({IGNORE_INDEX} = ignore)")
    return classes


def folder_pairs(split_dir: Path) -> list[tuple[Path, Path]]:
    """(image, mask) paths of a seg_folder split, sorted by image name; a missing mask is the pair's problem."""
    images_dir = split_dir / "images"
    if not images_dir.is_dir():
        raise DataError(f"{images_dir} does not exist; a seg_folder split needs images/ and masks/ "
                        "(docs/data.md, 'Segmentation data')")
    files = sorted(p for p in images_dir.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)
    return [(p, split_dir / "masks" / (p.stem + ".png")) for p in files]


def seg_folder_from_config(data: DataConfig, split: str) -> ArrayDataset:
    """The registry's loader of ``seg_folder``: ``split`` ("train" -> train/, "test" -> val/) of ``data.root``."""
    settings = _settings(data)
    root = Path(data.root).expanduser()
    classes = read_classes(root / "classes.txt")
    pairs = _subset(data, split, folder_pairs(root / SPLIT_DIRS[split]))
    return load_pairs(pairs, classes, name=f"seg_folder {SPLIT_DIRS[split]} ({root})", **settings)


def voc_root(root: str | Path) -> Path:
    """The VOC2012 folder: ``root`` itself, or ``root/VOC2012``, or ``root/VOCdevkit/VOC2012``."""
    root = Path(root).expanduser()
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "ImageSets" / "Segmentation").is_dir():
            return candidate
    raise DataError(f"{root} holds no Pascal VOC 2012 (ImageSets/Segmentation/ not found in it, in VOC2012/ or in "
                    "VOCdevkit/VOC2012/); point --root at the extracted VOC2012 folder")


def voc_from_config(data: DataConfig, split: str) -> ArrayDataset:
    """The registry's loader of ``voc``: ``split`` ("train" -> train.txt, "test" -> val.txt) of Pascal VOC 2012."""
    settings = _settings(data)
    root = voc_root(data.root)
    listing = root / "ImageSets" / "Segmentation" / f"{SPLIT_DIRS[split]}.txt"
    try:
        ids = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    except OSError as e:
        raise DataError(f"cannot read {listing}: {e.strerror or e}") from None
    pairs = [(root / "JPEGImages" / f"{i}.jpg", root / "SegmentationClass" / f"{i}.png") for i in ids]
    return load_pairs(_subset(data, split, pairs), list(get_dataset_info("voc").classes),
                      name=f"voc {SPLIT_DIRS[split]} ({root})", **settings)
