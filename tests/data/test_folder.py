"""Image folders: mode conversion, unreadable files, layout errors, evaluation crop."""

import io
import shutil
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from convmixer.data import DataConfig, UnreadableImageWarning, build_data, decode_image, eval_transform, no_augment
from convmixer.data.folder import scan_image_folder
from convmixer.errors import DataError

from .helpers import make_image_folder


def _save(img: Image.Image, path, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


def test_mode_conversions(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    gray = _save(Image.fromarray(rgb[..., 0]), tmp_path / "g.png")
    out = decode_image(gray, 3)
    assert out.shape == (3, 6, 7) and out.dtype == torch.uint8
    assert torch.equal(out[0], out[1]) and torch.equal(out[0], torch.from_numpy(rgb[..., 0].copy()))

    rgba = np.concatenate([rgb, np.zeros((6, 7, 1), np.uint8)], 2)  # fully transparent: colour kept, alpha dropped
    out = decode_image(_save(Image.fromarray(rgba, "RGBA"), tmp_path / "a.png"), 3)
    assert torch.equal(out, torch.from_numpy(rgb.transpose(2, 0, 1).copy()))

    cmyk = decode_image(_save(Image.new("CMYK", (5, 4), (0, 255, 255, 0)), tmp_path / "c.jpg", quality=100), 3)
    assert cmyk.shape == (3, 4, 5) and cmyk[0].float().mean() > 200 and cmyk[1:].float().mean() < 60  # red

    pal = Image.fromarray(rgb[..., 0]).convert("P")
    pal.info["transparency"] = 0
    p = decode_image(_save(pal, tmp_path / "p.png"), 3)
    assert p.shape == (3, 6, 7)

    sixteen = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    img16 = Image.fromarray(sixteen)
    assert img16.mode.startswith("I;16")
    out = decode_image(_save(img16, tmp_path / "s.png"), 3)
    assert out[0].tolist() == [[0, 100, 255]]  # scaled, not clipped

    assert decode_image(_save(Image.fromarray(rgb), tmp_path / "rgb.bmp"), 1).shape == (1, 6, 7)
    bw = decode_image(_save(Image.new("1", (3, 3), 1), tmp_path / "bw.png"), 1)
    assert bw.unique().tolist() == [255]


def test_unreadable_files_raise_data_error(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"definitely not a jpeg")
    with pytest.raises(DataError, match="cannot decode"):
        decode_image(tmp_path / "x.jpg")
    with pytest.raises(DataError, match="does not exist"):
        decode_image(tmp_path / "nope.png")


def _truncated_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()[: len(buf.getvalue()) // 2]


def _folder_with_bad_files(tmp_path):
    root = make_image_folder(tmp_path / "ds", per_class=4, size=20)
    (root / "train" / "cat" / "broken.jpg").write_bytes(_truncated_jpeg())
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    (root / "train" / "dog" / ".hidden.png").write_bytes(b"junk")
    (root / "val" / "dog" / "broken.jpg").write_bytes(_truncated_jpeg())
    return root


def test_scan_ignores_non_images(tmp_path):
    classes, train, val = scan_image_folder(_folder_with_bad_files(tmp_path))
    assert classes == ["cat", "dog"] and len(train) == 9 and len(val) == 9  # 4 + broken + 4; 4 + 4 + broken
    assert all(not train.paths[i].endswith((".txt", ".hidden.png")) for i in range(len(train)))
    assert train.labels.tolist() == [0] * 5 + [1] * 4


def test_truncated_image_is_skipped_with_a_warning(tmp_path):
    root = _folder_with_bad_files(tmp_path)
    cfg = DataConfig(dataset="folder", root=str(root), image_size=16, batch_size=3, eval_batch_size=4, workers=0)
    dm = build_data(cfg, no_augment(), device="cpu", seed=0)
    with pytest.warns(UnreadableImageWarning, match="broken.jpg"):
        batches = list(dm.train_loader.iterate(0))
    assert len(batches) == 3 and all(x.shape == (3, 3, 16, 16) for x, _ in batches)  # full batches (substituted)
    assert len(dm.train_loader.skipped) == 1
    with pytest.warns(UnreadableImageWarning):
        seen = sum(len(y) for _, y in dm.eval_loader.iterate())
    assert seen == 8 and len(dm.eval_loader.skipped) == 1  # eval drops it
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a file already reported is counted once, not warned again
        list(dm.train_loader.iterate(1))


def test_eval_split_train_reads_the_training_folder(tmp_path):
    root = make_image_folder(tmp_path / "ds", per_class=3, size=12)
    shutil.copy(root / "val" / "cat" / "0.png", root / "val" / "cat" / "extra.png")  # val: one more than train
    cfg = DataConfig(dataset="folder", root=str(root), image_size=8, eval_batch_size=4, workers=0)
    test = build_data(cfg, no_augment(), device="cpu", seed=0, train=False)
    train = build_data(cfg, no_augment(), device="cpu", seed=0, train=False, eval_split="train")
    assert train.train_loader is None
    assert sum(len(y) for _, y in test.eval_loader.iterate()) == 7
    labels = torch.cat([y for _, y in train.eval_loader.iterate()])
    assert labels.tolist() == [0, 0, 0, 1, 1, 1]  # every training image once, in order, unaugmented
    subset = build_data(cfg.__class__(**{**cfg.__dict__, "train_subset": 2}), no_augment(), device="cpu", seed=0,
                        train=False, eval_split="train")
    assert sorted(torch.cat([y for _, y in subset.eval_loader.iterate()]).tolist()) == [0, 1]


def test_strict_mode_fails_with_one_line(tmp_path):
    root = _folder_with_bad_files(tmp_path)
    cfg = DataConfig(dataset="folder", root=str(root), image_size=16, batch_size=9, workers=0, strict_images=True)
    dm = build_data(cfg, no_augment(), device="cpu", seed=0)
    with pytest.raises(DataError, match="broken.jpg") as e:
        list(dm.train_loader.iterate(0))
    assert "\n" not in str(e.value) and "strict_images" in str(e.value)


@pytest.mark.parametrize("setup,match", [
    (lambda r: (r / "train" / "dog").mkdir(parents=True) or (r / "train" / "dog" / "readme.txt").write_text("x"),
     "has no images"),
    (lambda r: (r / "val" / "bird").mkdir(parents=True) or _save(Image.new("RGB", (4, 4)), r / "val" / "bird" / "0.png"),
     "missing from"),
])
def test_layout_errors(tmp_path, setup, match):
    root = make_image_folder(tmp_path / "ds", classes=("cat",), per_class=1, size=8)
    setup(root)
    with pytest.raises(DataError, match=match):
        scan_image_folder(root)


def test_missing_train_or_val(tmp_path):
    with pytest.raises(DataError, match="train"):
        scan_image_folder(tmp_path)
    make_image_folder(tmp_path, classes=("a",), per_class=1, size=8, val=False)
    with pytest.raises(DataError, match="val/"):
        scan_image_folder(tmp_path)


def test_evaluation_needs_only_val(tmp_path):
    """A user with only ImageNet val can evaluate: no train/ folder, classes from val/, no training files listed."""
    root = make_image_folder(tmp_path / "ds", classes=("cat", "dog"), per_class=2, size=8)
    classes, train, val = scan_image_folder(root, train=False)
    assert classes == ["cat", "dog"] and train is None and len(val) == 4
    for path in (root / "train").rglob("*.png"):
        path.unlink()
    for d in sorted((root / "train").iterdir()):
        d.rmdir()
    (root / "train").rmdir()
    classes, train, val = scan_image_folder(root, train=False)
    assert classes == ["cat", "dog"] and train is None and sorted(set(val.labels.tolist())) == [0, 1]
    with pytest.raises(DataError, match="train"):
        scan_image_folder(root)
    dm = build_data(DataConfig(dataset="folder", root=str(root), image_size=8, eval_batch_size=4), no_augment(),
                    device="cpu", seed=0, train=False)
    assert dm.classes == ["cat", "dog"] and dm.train_loader is None


def test_eval_transform_resizes_short_side_and_centre_crops():
    img = torch.zeros(3, 100, 200, dtype=torch.uint8)
    img[:, 40:60, 90:110] = 255  # a white square at the centre
    out = eval_transform(img, 50, crop_pct=1.0)
    assert out.shape == (3, 50, 50) and out.dtype == torch.uint8
    assert out[:, 22:28, 22:28].float().mean() > 240 and out[:, :10].float().mean() < 5  # centred
    assert eval_transform(img, 224, 0.875).shape == (3, 224, 224)
    flat = torch.full((1, 30, 41), 77, dtype=torch.uint8)
    assert eval_transform(flat, 24, 0.96, "bilinear").unique().tolist() == [77]


def test_folder_module_with_workers_is_reproducible(tmp_path):
    root = make_image_folder(tmp_path / "ds", classes=("a", "b", "c"), per_class=4, size=24)
    cfg = DataConfig(dataset="folder", root=str(root), image_size=16, batch_size=4, eval_batch_size=5, workers=2)
    dm = build_data(cfg, no_augment(crop="rrc", hflip=0.5), device="cpu", seed=3)
    assert dm.classes == ["a", "b", "c"] and dm.in_chans == 3 and dm.image_size == 16
    assert dm.mean == (0.485, 0.456, 0.406)
    first = list(dm.train_loader.iterate(0))
    again = list(dm.train_loader.iterate(0))
    assert len(first) == 3 and all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    single = build_data(cfg.__class__(**{**cfg.__dict__, "workers": 0}), no_augment(crop="rrc"), device="cpu", seed=3)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, single.train_loader.iterate(0)))  # workers don't matter
    assert not torch.equal(first[0][0], next(dm.train_loader.iterate(1))[0])  # a new epoch, new crops and order
    x, y = next(dm.eval_loader.iterate())
    assert x.shape == (5, 3, 16, 16) and y.tolist() == [0, 0, 0, 0, 1]


def test_worker_crop_box_sampler():
    import random

    from convmixer.data.folder import random_resized_crop_pil, rrc_box

    rng = random.Random(0)
    boxes = [rrc_box(rng, 300, 200, (0.08, 1.0), (3 / 4, 4 / 3)) for _ in range(2000)]
    assert all(0 <= t and 0 <= l and t + h <= 300 and l + w <= 200 for t, l, h, w in boxes)
    areas = [h * w / 60000 for _, _, h, w in boxes]
    from convmixer.data.augment import rrc_boxes  # the batched sampler: the same distribution

    _, _, bh, bw = rrc_boxes(20000, 300, 200, (0.08, 1.0), (3 / 4, 4 / 3), torch.Generator().manual_seed(0),
                             torch.device("cpu"))
    assert 0.07 < min(areas) and max(areas) <= 1.0
    assert abs(sum(areas) / len(areas) - (bh * bw / 60000).mean().item()) < 0.02
    assert rrc_box(rng, 20, 40, (1.0, 1.0), (1.0, 1.0)) == (0, 10, 20, 20)  # nothing fits: the centre crop
    img = Image.new("RGB", (50, 30))
    assert random_resized_crop_pil(img, 16, (0.08, 1.0), (3 / 4, 4 / 3), "random", rng).size == (16, 16)
