"""Image folders (``root/train/<class>/*``, ``root/val/<class>/*``): ImageNet-1k's layout and users' own data.

Images are decoded with Pillow in DataLoader workers. Every image becomes 8-bit RGB (or L for 1-channel
models): grayscale, RGBA, CMYK, palette and 16-bit images are converted (alpha is dropped like Pillow's
``convert("RGB")``; 16-bit values are scaled by 255/65535). Files whose extension is not an image's are
ignored; a file that cannot be decoded is reported by the worker, and the loader skips and counts it with a
warning (or raises with ``strict_images``), so a bad file never stops an epoch halfway.

Training samples are random-resized-cropped in the worker with a generator seeded from (seed, epoch,
index), so what a sample looks like does not depend on which worker or rank decoded it.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError
from .augment import rrc_fallback_box
from .seeding import derive_seed

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".tif", ".tiff", ".webp", ".gif")
VAL_DIRNAMES = ("val", "validation", "test")  # first one present under root is the evaluation split
SUBSTITUTE_TRIES = 10  # train: how many following samples to try in place of an unreadable one


class PathTable:
    """Many paths in two numpy arrays (utf-8 bytes + offsets) rather than a list of str: forked DataLoader
    workers then share the pages instead of copying them as Python's reference counts touch each object."""

    def __init__(self, paths: list[str]) -> None:
        encoded = [p.encode("utf-8", "surrogateescape") for p in paths]
        self.offsets = np.cumsum([0] + [len(e) for e in encoded], dtype=np.int64)
        self.blob = np.frombuffer(b"".join(encoded), dtype=np.uint8) if encoded else np.zeros(0, np.uint8)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:
        return self.blob[self.offsets[i]: self.offsets[i + 1]].tobytes().decode("utf-8", "surrogateescape")


@dataclass
class FolderSplit:
    """One split of an image folder."""

    paths: PathTable  # image files, sorted by class then path
    labels: np.ndarray  # int64 (N,), index into the folder's class list
    root: Path  # the split's directory

    def __len__(self) -> int:
        return len(self.labels)


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS)


def _class_files(directory: Path) -> list[str]:
    """Image files under ``directory`` (recursively, following links), sorted; hidden and non-image files skipped."""
    out = []
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [os.path.join(dirpath, f) for f in sorted(filenames) if _is_image(f)]
    return out


def _class_dirs(split_dir: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))


def _scan_split(split_dir: Path, classes: list[str], names: list[str]) -> FolderSplit:
    paths: list[str] = []
    labels: list[int] = []
    index = {c: i for i, c in enumerate(classes)}
    for name in names:
        files = _class_files(split_dir / name)
        if not files:
            raise DataError(f"class folder {split_dir / name} has no images ({', '.join(IMG_EXTENSIONS)}); "
                            "add images or remove the folder")
        paths += files
        labels += [index[name]] * len(files)
    return FolderSplit(PathTable(paths), np.asarray(labels, dtype=np.int64), split_dir)


def scan_image_folder(root: str | os.PathLike, *, train: bool = True
                      ) -> tuple[list[str], FolderSplit | None, FolderSplit]:
    """Classes (the sorted sub-folders of ``root/train``) and the train and val splits of an image folder.

    ``train=False`` (evaluation) lists no training files, and needs no ``root/train`` at all: a user with only
    ImageNet val can evaluate, the classes then being the sorted sub-folders of ``root/val``. The split returned for
    train is then None."""
    root = Path(root).expanduser()
    train_dir = root / "train"
    classes = None
    if train_dir.is_dir():
        classes = _class_dirs(train_dir)
        if not classes:
            raise DataError(f"{train_dir} has no class folders; put each class's images in train/<class name>/")
    elif train:
        raise DataError(f"{train_dir} does not exist; a folder dataset needs root/train/<class>/<images> "
                        f"and root/val/<class>/<images>")
    val_dir = next((root / d for d in VAL_DIRNAMES if (root / d).is_dir()), None)
    if val_dir is None:
        raise DataError(f"{root} has no val/ folder; add root/val/<class>/<images> for evaluation")
    val_classes = _class_dirs(val_dir)
    if classes is None:
        if not val_classes:
            raise DataError(f"{val_dir} has no class folders; put each class's images in val/<class name>/")
        classes = val_classes
    unknown = sorted(set(val_classes) - set(classes))
    if unknown:
        raise DataError(f"{val_dir} has class folders missing from {train_dir}: {', '.join(unknown[:5])}; "
                        "every val class must also be a train class")
    train_split = _scan_split(train_dir, classes, classes) if train else None
    return classes, train_split, _scan_split(val_dir, classes, val_classes)


# ----------------------------------------------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------------------------------------------
def _to_8bit_mode(img, in_chans: int):
    """Any Pillow image -> mode "RGB" (in_chans 3) or "L" (in_chans 1)."""
    from PIL import Image

    mode = img.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float32)
        if mode != "F":  # 16-bit (or 32-bit int holding 16-bit data): scale 0..65535 to 0..255
            arr = arr / 257.0
        img = Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8), "L")
    elif mode in ("P", "PA"):
        img = img.convert("RGBA" if mode == "PA" or "transparency" in img.info else "RGB")
    elif mode in ("1", "LA", "La"):
        img = img.convert("L")
    if img.mode not in ("L", "RGB"):
        img = img.convert("RGB")  # RGBA, RGBa, RGBX, CMYK, YCbCr, LAB, HSV, ...: drop alpha / change space
    want = "L" if in_chans == 1 else "RGB"
    return img if img.mode == want else img.convert(want)


def open_image(path: str | os.PathLike, in_chans: int = 3):
    """Open and fully decode an image with Pillow as mode RGB/L; DataError if it cannot be read."""
    from PIL import Image

    if in_chans not in (1, 3):
        raise DataError(f"images can be decoded to 1 or 3 channels, not {in_chans}")
    try:
        with Image.open(path) as img:
            img.load()
            return _to_8bit_mode(img, in_chans)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path} does not exist") from None
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, DecompressionBombError, ...
        raise DataError(f"cannot decode image {path}: {type(e).__name__}: {e}") from None


def _hwc(img) -> np.ndarray:
    """Pillow L/RGB image -> uint8 (H, W, C) array."""
    arr = np.asarray(img, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


def pil_to_tensor(img) -> torch.Tensor:
    """Pillow L/RGB image -> uint8 (C, H, W)."""
    return torch.from_numpy(np.array(_hwc(img).transpose(2, 0, 1), order="C"))  # a writable (C, H, W) copy


def decode_image(path: str | os.PathLike, in_chans: int = 3) -> torch.Tensor:
    """Decode an image file to uint8 (C, H, W) with C = ``in_chans`` (1 or 3). Raises DataError if unreadable."""
    return pil_to_tensor(open_image(path, in_chans))


def eval_transform(img: torch.Tensor, image_size: int, crop_pct: float = 0.96,
                   interpolation: str = "bicubic") -> torch.Tensor:
    """uint8 (C, H, W) -> uint8 (C, S, S): resize the short side to floor(S / crop_pct) (antialiased), then take
    the centre S x S crop; timm's evaluation preprocessing."""
    if img.dim() != 3:
        raise DataError(f"eval_transform expects one (C, H, W) image, got shape {tuple(img.shape)}")
    _, h, w = img.shape
    scale_size = math.floor(image_size / crop_pct)
    if h <= w:
        nh, nw = scale_size, max(1, int(scale_size * w / h))
    else:
        nh, nw = max(1, int(scale_size * h / w)), scale_size
    x = img[None].to(torch.float32)
    if (nh, nw) != (h, w):
        mode = interpolation if interpolation in ("bilinear", "bicubic") else "nearest-exact"
        kwargs = {"antialias": True, "align_corners": False} if mode != "nearest-exact" else {}
        x = F.interpolate(x, size=(nh, nw), mode=mode, **kwargs)
    top = int(round((nh - image_size) / 2.0))
    left = int(round((nw - image_size) / 2.0))
    if top < 0 or left < 0:
        x = F.pad(x, (max(0, -left), max(0, -left), max(0, -top), max(0, -top)))
        top, left = max(0, top), max(0, left)
    x = x[:, :, top: top + image_size, left: left + image_size]
    return x.round().clamp(0, 255).to(torch.uint8)[0]


_PIL_FILTERS = {"nearest": 0, "bilinear": 2, "bicubic": 3}  # Image.Resampling values


def rrc_box(rng: random.Random, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
            attempts: int = 10) -> tuple[int, int, int, int]:
    """One random-resized-crop box (top, left, h, w): the sampler of augment.rrc_boxes, in plain Python because
    a worker crops one image at a time (ten tiny torch calls would cost more than the crop)."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(attempts):
        target = rng.uniform(*scale) * area
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    return rrc_fallback_box(height, width, ratio)


def random_resized_crop_pil(img, size: int, scale: tuple[float, float], ratio: tuple[float, float],
                            interpolation: str, rng: random.Random):
    """A random resized crop of a Pillow image, cropped and resized (antialiased) by Pillow in one call;
    "random" interpolation picks bilinear or bicubic per image, as timm's training default."""
    top, left, h, w = rrc_box(rng, img.height, img.width, scale, ratio)
    if interpolation == "random":
        interpolation = "bicubic" if rng.random() < 0.5 else "bilinear"
    return img.resize((size, size), _PIL_FILTERS[interpolation], box=(left, top, left + w, top + h))


# ----------------------------------------------------------------------------------------------------------------
# Datasets run by DataLoader workers
# ----------------------------------------------------------------------------------------------------------------
class FolderTrainSet(torch.utils.data.Dataset):
    """Worker side of the folder training loader. Item ``(index, epoch)`` -> ``(uint8 (S, S, C), label, failures)``.

    An unreadable image is replaced by the next readable one (deterministically), and ``failures`` lists
    ``(path, message)`` of the skipped files so the main process can count and report them; in strict mode
    nothing is replaced and the image is None.
    """

    def __init__(self, split: FolderSplit, *, size: int, in_chans: int, crop: str, scale, ratio,
                 interpolation: str, seed: int, strict: bool) -> None:
        self.split = split
        self.size = size
        self.in_chans = in_chans
        self.crop = crop  # "rrc": random resized crop here; else resize the short side to size and centre-crop
        self.scale, self.ratio = tuple(scale), tuple(ratio)
        self.interpolation = interpolation
        self.seed = seed
        self.strict = strict

    def __len__(self) -> int:
        return len(self.split)

    def _load(self, index: int, epoch: int) -> torch.Tensor:
        img = open_image(self.split.paths[index], self.in_chans)
        if self.crop == "rrc":
            rng = random.Random(derive_seed(self.seed, "folder-crop", epoch, index))
            return _hwc(random_resized_crop_pil(img, self.size, self.scale, self.ratio, self.interpolation, rng))
        # other crops run batched later: bring the image to size x size like evaluation does, without a border
        interp = "bicubic" if self.interpolation == "random" else self.interpolation
        return eval_transform(pil_to_tensor(img), self.size, 1.0, interp).permute(1, 2, 0).numpy()

    def __getitem__(self, item: tuple[int, int]):
        index, epoch = item
        failures = []
        n = len(self.split)
        for k in range(1 if self.strict else SUBSTITUTE_TRIES):
            i = (index + k) % n
            try:
                return self._load(i, epoch), int(self.split.labels[i]), failures
            except DataError as e:
                failures.append((self.split.paths[i], str(e)))
        return None, int(self.split.labels[index]), failures


class FolderEvalSet(torch.utils.data.Dataset):
    """Worker side of the folder evaluation loader: index -> ``(uint8 (S, S, C) or None, label, failures)``."""

    def __init__(self, split: FolderSplit, *, size: int, in_chans: int, crop_pct: float, interpolation: str) -> None:
        self.split = split
        self.size = size
        self.in_chans = in_chans
        self.crop_pct = crop_pct
        self.interpolation = interpolation

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int):
        path = self.split.paths[index]
        try:
            img = eval_transform(decode_image(path, self.in_chans), self.size, self.crop_pct, self.interpolation)
        except DataError as e:
            return None, int(self.split.labels[index]), [(path, str(e))]
        return img.permute(1, 2, 0).numpy(), int(self.split.labels[index]), []


def collate_decoded(batch: list) -> tuple[torch.Tensor | None, torch.Tensor, list]:
    """Stack the (H, W, C) uint8 arrays of a batch, dropping missing ones; returns (images, labels, failures).

    The images come out as a (B, C, H, W) view of one (B, H, W, C) block (channels_last strides): one copy
    per batch instead of a transpose per image, and the layout convolutions on CPU prefer anyway.
    """
    failures = [f for _, _, fs in batch for f in fs]
    kept = [(img, label) for img, label, _ in batch if img is not None]
    if not kept:
        return None, torch.zeros(0, dtype=torch.int64), failures
    images = torch.from_numpy(np.stack([img for img, _ in kept])).permute(0, 3, 1, 2)
    labels = torch.tensor([label for _, label in kept], dtype=torch.int64)
    return images, labels, failures
