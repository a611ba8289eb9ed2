"""Data-pipeline throughput: batched augmentation of Fashion-MNIST, a training step to compare it with, and
decode + random-resized-crop of a folder of 224 px JPEGs in DataLoader workers.

    python benchmarks/bench_data.py                      # everything, default sizes
    python benchmarks/bench_data.py --skip-folder --repeats 50

Each figure is the median over ``--repeats`` timed runs after warm-up. Augmentation is timed per component
and for the whole paper recipe, in images per second; "% of step" is the recipe's time per batch of 128
relative to one training step (forward + backward + AdamW) at 28x28, channels_last, batch 128, in the same
process, of ConvMixer-256/8 (k=5, p=2) and of the project's Fashion-MNIST default model. The folder figure
is a whole epoch through the training loader (decode + random resized crop to 224 in ``--workers``
processes, batches stacked and handed to the main process), after a warm-up epoch that starts the
workers. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from convmixer.data import AugmentConfig, DataConfig, build_data, load_idx, make_synthetic, no_augment
from convmixer.data.augment import Augment
from convmixer.fast.allocator import tune_malloc

COMPONENTS = {
    "none (normalize + one-hot)": no_augment(),
    "random resized crop": no_augment(crop="rrc"),
    "pad crop 2 px": no_augment(crop="pad", crop_padding=2),
    "hflip": no_augment(hflip=0.5),
    "randaugment m9 mstd0.5 inc1": no_augment(randaugment="rand-m9-mstd0.5-inc1"),
    "random erasing 0.25 pixel": no_augment(erase_prob=0.25),
    "mixup/cutmix + smoothing": no_augment(mixup_alpha=0.5, cutmix_alpha=0.5, label_smoothing=0.1),
    "paper recipe (all of the above but pad)": AugmentConfig(),
}


def median_time(fn, repeats: int, warmup: int = 3) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def load_fmnist() -> tuple[torch.Tensor, torch.Tensor, str]:
    try:
        ds = load_idx("fashion_mnist", "train", download=False)
        return ds.images, ds.labels, "fashion_mnist"
    except Exception:  # noqa: BLE001 - fall back to data of the same shape
        ds = make_synthetic(60000, chans=1, size=28)
        return ds.images, ds.labels, "synthetic 1x28x28 (Fashion-MNIST not found)"


def bench_augment(images, labels, batch_sizes, repeats) -> dict:
    """img/s of each component and the full recipe, per batch size."""
    out: dict = {}
    for name, cfg in COMPONENTS.items():
        aug = Augment(cfg, num_classes=10, mean=(0.286,), std=(0.353,), in_chans=1, image_size=28)
        out[name] = {}
        for b in batch_sizes:
            state = {"i": 0}

            def step(aug=aug, b=b, state=state):
                i = state["i"] = (state["i"] + 1) % (len(images) // b)
                g = torch.Generator().manual_seed(i)
                aug(images[i * b:(i + 1) * b], labels[i * b:(i + 1) * b], g)

            out[name][b] = b / median_time(step, repeats)
    return out


def bench_train_step(name: str, repeats: int, batch: int = 128) -> float:
    """Seconds per training step (forward, soft-target loss, backward, AdamW) of model ``name`` at 28x28, 1 channel,
    10 classes, channels_last."""
    from convmixer import create_model

    model = create_model(name, in_chans=1, num_classes=10).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    t = torch.softmax(torch.randn(batch, 10), 1)

    def step():
        loss = torch.sum(-t * torch.log_softmax(model(x), 1), 1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return median_time(step, repeats, warmup=2)


def make_jpeg_folder(root: Path, n: int, size: int = 224, classes: int = 4) -> None:
    """``n`` training JPEGs (quality 90) of smooth random colour fields plus noise, ``size`` x ``size`` px."""
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        c = rng.random((3, 3))
        img = np.stack([c[k, 0] + c[k, 1] * xx + c[k, 2] * yy for k in range(3)], -1) * 120
        img = np.clip(img + rng.normal(0, 20, img.shape), 0, 255).astype(np.uint8)
        for split in ("train",) + (("val",) if i < classes else ()):
            d = root / split / f"class{i % classes}"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(d / f"{i}.jpg", quality=90)


def bench_folder(n: int, workers: int, batch: int, repeats: int) -> dict:
    """Decode + random-resized-crop to 224 img/s through the folder loader with ``workers`` processes."""
    from convmixer.data.folder import open_image, random_resized_crop_pil

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_jpeg_folder(root, n)
        cfg = DataConfig(dataset="folder", root=str(root), image_size=224, batch_size=batch, workers=workers)
        dm = build_data(cfg, AugmentConfig(), device="cpu", seed=0)
        per_epoch = len(dm.train_loader) * batch
        epoch = {"e": 0}

        def run_epoch():
            epoch["e"] += 1
            for _ in dm.train_loader.iterate(epoch["e"]):
                pass

        loader_rate = per_epoch / median_time(run_epoch, repeats, warmup=1)
        files = sorted(root.glob("train/*/*.jpg"))[:64]
        rng = random.Random(0)

        def one_process():
            for f in files:
                random_resized_crop_pil(open_image(f), 224, (0.08, 1.0), (3 / 4, 4 / 3), "random", rng)

        single_rate = len(files) / median_time(one_process, max(3, repeats), warmup=1)
        jpeg_kb = statistics.mean(f.stat().st_size for f in files) / 1024
    return {"images_per_epoch": per_epoch, "workers": workers, "batch": batch, "loader_img_s": loader_rate,
            "one_process_img_s": single_rate, "mean_jpeg_kb": jpeg_kb}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 256, 512], help="augmentation batch sizes")
    p.add_argument("--repeats", type=int, default=30, help="timed runs per figure (median reported)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, = cores)")
    p.add_argument("--folder-images", type=int, default=512, help="JPEGs in the generated folder")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers for the folder benchmark")
    p.add_argument("--skip-folder", action="store_true", help="skip the JPEG folder benchmark")
    p.add_argument("--tune-malloc", action="store_true",
                   help="keep freed memory in the process (glibc mallopt) to avoid page faults; see tune_malloc")
    p.add_argument("--models", nargs="+", default=["convmixer_256_8_ks5_p2", "convmixer_fmnist"],
                   help="registered models whose training step the augmentation is compared with")
    p.add_argument("--skip-step", action="store_true", help="skip the training-step comparison")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    malloc_tuned = tune_malloc() if args.tune_malloc else False

    images, labels, source = load_fmnist()
    result: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "data": source, "repeats": args.repeats,
        "malloc_tuned": malloc_tuned,
    }
    aug = bench_augment(images, labels, args.batch_sizes, args.repeats)
    result["augment_img_s"] = aug
    print(f"Augmentation of {source} batches, images/s (median of {args.repeats}), {torch.get_num_threads()} threads"
          f"{', glibc malloc tuned' if malloc_tuned else ''}")
    print(f"{'component':<42}" + "".join(f"{'B=' + str(b):>12}" for b in args.batch_sizes))
    for name, rates in aug.items():
        print(f"{name:<42}" + "".join(f"{rates[b]:>12,.0f}" for b in args.batch_sizes))

    if not args.skip_step and 128 in args.batch_sizes:
        from convmixer.models import list_models

        recipe = list(COMPONENTS)[-1]
        aug_s = 128 / aug[recipe][128]
        result["augment_ms_b128"] = aug_s * 1e3
        result["train_step"] = {}
        print(f"\npaper-recipe augmentation of a batch of 128: {aug_s * 1e3:.2f} ms")
        for name in args.models:
            if name not in list_models():
                continue
            step_s = bench_train_step(name, max(5, args.repeats // 3))
            result["train_step"][name] = {"step_ms": step_s * 1e3, "augment_pct": 100 * aug_s / step_s}
            print(f"training step {name}, 28x28, batch 128, channels_last: {step_s * 1e3:.1f} ms; "
                  f"augmentation = {100 * aug_s / step_s:.1f}% of a step")

    if not args.skip_folder:
        folder = bench_folder(args.folder_images, args.workers, 64, max(3, args.repeats // 10))
        result["folder"] = folder
        print(f"\nfolder of {args.folder_images} 224x224 JPEGs (~{folder['mean_jpeg_kb']:.0f} KB): decode + random "
              f"resized crop to 224: {folder['loader_img_s']:,.0f} img/s with {args.workers} workers "
              f"(one process: {folder['one_process_img_s']:,.0f} img/s)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
