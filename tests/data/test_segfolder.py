"""Users' segmentation data: the seg_folder layout and Pascal VOC's, palette masks, bad pairs, errors."""

import warnings

import numpy as np
import pytest
import torch

from convmixer.data import DataConfig, augment_preset, build_data
from convmixer.data.loaders import load_array_dataset
from convmixer.data.palette import voc_palette
from convmixer.data.segfolder import SkippedPairWarning, read_mask
from convmixer.errors import ConfigError, DataError


def _palette_png(path, mask):
    from PIL import Image

    img = Image.fromarray(mask.astype(np.uint8), "P")
    img.putpalette([v for rgb in voc_palette() for v in rgb])
    img.save(path)


def _pair(directory, stem, h, w, value, rng, suffix=".png"):
    """An image whose left half is class ``value`` (mask), right half class 0; the image shows the class."""
    from PIL import Image

    mask = np.zeros((h, w), np.uint8)
    mask[:, : w // 2] = value
    image = np.stack([mask * 40 + rng.integers(0, 5, (h, w))] * 3, -1).astype(np.uint8)
    Image.fromarray(image).save(directory / "images" / f"{stem}{suffix}")
    _palette_png(directory / "masks" / f"{stem}.png", mask)


def make_seg_folder(root, *, bad=False):
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("background\ncat\ndog\n\n")
    for split, n in (("train", 5), ("val", 3)):
        for sub in ("images", "masks"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            _pair(root / split, f"{i:03d}", 30 + 4 * i, 40, 1 + i % 2, rng, ".jpg" if i == 1 else ".png")
    if bad:
        from PIL import Image

        d = root / "train"
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(d / "images" / "nomask.png")
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(d / "images" / "size.png")
        _palette_png(d / "masks" / "size.png", np.zeros((9, 8)))
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(d / "images" / "range.png")
        _palette_png(d / "masks" / "range.png", np.full((8, 8), 7))
        (d / "images" / "broken.png").write_bytes(b"\x89PNG not really")
        _palette_png(d / "masks" / "broken.png", np.zeros((8, 8)))
    return root


def test_palette_masks_give_indices_not_colours(tmp_path):
    mask = np.array([[0, 1, 15], [255, 2, 0]], np.uint8)
    _palette_png(tmp_path / "m.png", mask)
    assert np.array_equal(read_mask(tmp_path / "m.png"), mask)
    from PIL import Image

    Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(DataError, match="single-channel or palette"):
        read_mask(tmp_path / "rgb.png")
    assert voc_palette()[:3] == [(0, 0, 0), (128, 0, 0), (0, 128, 0)] and voc_palette()[255] == (224, 224, 192)


def test_seg_folder_loads_canvases(tmp_path):
    root = make_seg_folder(tmp_path)
    data = DataConfig(dataset="seg_folder", root=str(root), image_size=32, batch_size=2, workers=0).validate()
    ds = load_array_dataset(data, "train")
    assert ds.classes == ["background", "cat", "dog"] and len(ds) == 5 and ds.skipped == {}
    assert ds.images.shape == (5, 3, 32, 32) and ds.labels.shape == (5, 32, 32) and ds.labels.dtype == torch.uint8
    # image 0 is 30x40: longer side 40 -> 32, so 24 rows of data and 8 rows of padding (ignored)
    assert (ds.labels[0, 24:] == 255).all() and (ds.labels[0, :24] != 255).all()
    assert set(ds.labels[0, :24].unique().tolist()) == {0, 1}
    mean_colour = round(255 * 0.485)
    assert (ds.images[0, 0, 24:] == mean_colour).all()
    # the image shows its mask's classes (class * 40 + noise), away from the class edge
    assert (ds.images[0, 0, :24, :12].float() - 40).abs().max() < 8 and ds.images[0, 0, :24, 20:].max() < 8
    dm = build_data(data, augment_preset("segmentation"), device="cpu", seed=0)
    assert dm.task == "segmentation" and dm.num_classes == 3 and dm.eval_loader.dataset_size == 3
    images, masks = next(dm.train_loader.iterate(0))
    x, y = dm.augment(images, masks, torch.Generator().manual_seed(0))
    assert x.shape == (2, 3, 32, 32) and y.shape == (2, 32, 32)
    sub = load_array_dataset(DataConfig(dataset="seg_folder", root=str(root), train_subset=2, workers=2), "train")
    assert len(sub) == 2


def test_bad_pairs_are_skipped_counted_and_warned(tmp_path):
    root = make_seg_folder(tmp_path, bad=True)
    data = DataConfig(dataset="seg_folder", root=str(root), image_size=16, workers=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_array_dataset(data, "train")
    assert len(ds) == 5 and len(ds.skipped) == 4
    messages = [str(w.message) for w in caught if issubclass(w.category, SkippedPairWarning)]
    assert len(messages) == 4 and all("\n" not in m for m in messages)
    text = " ".join(messages)
    assert "has no mask" in text and "9" in text and "class index 7" in text and "cannot decode" in text
    strict = DataConfig(dataset="seg_folder", root=str(root), image_size=16, workers=0, strict_images=True)
    with pytest.raises(DataError, match="strict_images"):
        load_array_dataset(strict, "train")


def test_empty_split_missing_classes_and_root_are_one_line_errors(tmp_path):
    root = make_seg_folder(tmp_path)
    for p in (root / "val" / "images").iterdir():
        p.unlink()
    with pytest.raises(ConfigError, match="no usable image/mask pairs") as e:
        load_array_dataset(DataConfig(dataset="seg_folder", root=str(root), workers=0), "test")
    assert "\n" not in str(e.value)
    (root / "classes.txt").unlink()
    with pytest.raises(DataError, match="classes.txt"):
        load_array_dataset(DataConfig(dataset="seg_folder", root=str(root)), "train")
    with pytest.raises(ConfigError, match="needs --root"):
        load_array_dataset(DataConfig(dataset="voc"), "train")
    with pytest.raises(DataError, match="no Pascal VOC 2012"):
        load_array_dataset(DataConfig(dataset="voc", root=str(tmp_path)), "train")


def test_voc_layout_is_read_as_shipped(tmp_path):
    from PIL import Image

    voc = tmp_path / "VOCdevkit" / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / d).mkdir(parents=True)
    rng = np.random.default_rng(1)
    ids = {"train": ["2007_000001", "2007_000002", "2007_000003"], "val": ["2008_000001", "2008_000002"]}
    for split, names in ids.items():
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n")
        for k, name in enumerate(names):
            mask = np.zeros((20, 28), np.uint8)
            mask[5:15, 5:20] = 15  # person
            mask[4, :] = 255  # VOC's object borders: ignored
            Image.fromarray(rng.integers(0, 255, (20, 28, 3), dtype=np.uint8)).save(voc / "JPEGImages" / f"{name}.jpg")
            _palette_png(voc / "SegmentationClass" / f"{name}.png", mask)
    (voc / "SegmentationClass" / "2007_000003.png").unlink()  # a missing mask: skipped
    data = DataConfig(dataset="voc", root=str(tmp_path), image_size=28, batch_size=2, workers=0).validate()
    with pytest.warns(SkippedPairWarning, match="2007_000003"):
        dm = build_data(data, augment_preset("segmentation"), device="cpu", seed=0)
    assert dm.classes[0] == "background" and dm.classes[15] == "person" and dm.num_classes == 21
    assert dm.train_loader.dataset_size == 2 and dm.eval_loader.dataset_size == 2
    masks = dm.eval_loader.labels
    assert set(masks.unique().tolist()) == {0, 15, 255}
    assert (masks[:, 20:] == 255).all()  # 20x28 -> 20 rows of data, 8 of padding
