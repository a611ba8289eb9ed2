"""``convmixer data show``: a PNG grid of training samples before and after augmentation, to see the recipe.
Segmentation samples are drawn with their masks laid over them in the VOC palette, with a legend."""

from __future__ import annotations

import argparse
import math


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="inspect datasets and augmentation")
    data_sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    data_sub.required = True
    s = data_sub.add_parser("show", help="write a PNG of original and augmented training samples with labels")
    s.add_argument("--dataset", default="fashion_mnist",
                   help="fashion_mnist (default), mnist, cifar10, cifar100, folder, synthetic, fashion_mnist_scenes, "
                        "seg_folder or voc (any registered dataset)")
    s.add_argument("--root", help="dataset location (default: search $CONVMIXER_DATA, the cache, system dirs)")
    s.add_argument("--no-download", action="store_true", help="fail instead of downloading a missing dataset")
    s.add_argument("--augment", help="preset: paper, light, none or segmentation (default: paper, or segmentation "
                                     "for a segmentation dataset)")
    s.add_argument("--randaugment", help="RandAugment spec, e.g. rand-m9-mstd0.5-inc1 ('' = off)")
    s.add_argument("--crop", choices=("rrc", "pad", "none"), help="crop kind")
    s.add_argument("--hflip", type=float, help="horizontal flip probability")
    s.add_argument("--mixup-alpha", type=float, help="mixup Beta alpha (0 = off)")
    s.add_argument("--cutmix-alpha", type=float, help="CutMix Beta alpha (0 = off)")
    s.add_argument("--erase-prob", type=float, help="random erasing probability (0 = off)")
    s.add_argument("--label-smoothing", type=float, help="label smoothing of the soft targets")
    s.add_argument("--image-size", type=int, help="image side in px (default: the dataset's)")
    s.add_argument("--num", type=int, default=16, help="samples to show (default 16)")
    s.add_argument("--seed", type=int, default=0, help="seed of the sample choice and the augmentation")
    s.add_argument("--out", default="data_show.png", help="output PNG (default data_show.png)")
    s.set_defaults(func=run_show)


_OVERRIDES = ("randaugment", "crop", "hflip", "mixup_alpha", "cutmix_alpha", "erase_prob", "label_smoothing")


def _label(targets, classes: list[str], k: int = 2) -> str:
    """The top-``k`` classes of a soft target with their weights, one per line."""
    weights, idx = targets.topk(min(k, len(classes)))
    floor = float(targets.min())
    lines = [f"{classes[int(i)][:12]} {float(w):.2f}" for w, i in zip(weights, idx) if float(w) > floor + 1e-3]
    return "\n".join(lines[:1] + [line for line in lines[1:] if float(line.rsplit(" ", 1)[1]) >= 0.05])


def run_show(args: argparse.Namespace) -> int:
    import torch
    from matplotlib.figure import Figure

    from ..data import (
        DataConfig,
        augment_preset,
        build_data,
        denormalize,
        get_dataset_info,
    )
    from ..data.seeding import generator
    from ..errors import ConfigError
    from ..data.palette import overlay
    from ..io import atomic_write

    if not 1 <= args.num <= 256:
        raise ConfigError(f"--num must be in 1..256, got {args.num}")
    if not args.out.lower().endswith(".png"):
        raise ConfigError(f"--out must name a .png file, got {args.out!r}")
    overrides = {k: getattr(args, k) for k in _OVERRIDES if getattr(args, k) is not None}
    data = DataConfig(dataset=args.dataset, root=args.root, download=not args.no_download,
                      image_size=args.image_size, batch_size=args.num, eval_batch_size=args.num, workers=0).validate()
    segmentation = get_dataset_info(args.dataset).task == "segmentation"
    args.augment = args.augment or ("segmentation" if segmentation else "paper")
    aug = augment_preset(args.augment, **overrides)
    dm = build_data(data, aug, device="cpu", seed=args.seed)
    images, labels = next(dm.train_loader.iterate(0))
    # the draws of training step 0 on rank 0 with this seed: the picture shows what training sees first
    augmented, targets = dm.augment(images, labels, generator(args.seed, "augment", 0, 0))
    shown = denormalize(augmented, dm.mean, dm.std)

    cols = min(args.num, 8)
    rows = math.ceil(args.num / cols)
    fig = Figure(figsize=(1.6 * cols, 3.9 * rows + (0.5 if segmentation else 0)))
    fig.suptitle(f"{dm.name}: top = original, bottom = augmented ({args.augment}"
                 f"{', ' + ', '.join(f'{k}={v}' for k, v in overrides.items()) if overrides else ''})", fontsize=9)
    cmap = "gray" if dm.in_chans == 1 else None
    for i in range(args.num):
        r, c = divmod(i, cols)
        if segmentation:
            panels = ((2 * r, overlay(images[i].float() / 255, labels[i]), "original"),
                      (2 * r + 1, overlay(shown[i], targets[i]), "augmented"))
        else:
            panels = ((2 * r, images[i].float() / 255, dm.classes[int(labels[i])][:14]),
                      (2 * r + 1, shown[i], _label(targets[i], dm.classes)))
        for row, img, title in panels:
            ax = fig.add_subplot(2 * rows, cols, row * cols + c + 1)
            pixels = img[0] if img.shape[0] == 1 else img.permute(1, 2, 0)
            ax.imshow(pixels.numpy(), cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(title, fontsize=7)
            ax.axis("off")
    if segmentation:
        _legend(fig, dm.classes, torch.cat([labels.flatten().long(), targets.flatten()]))
        fig.tight_layout(rect=(0, 0.5 / (3.9 * rows + 0.5), 1, 1))
    else:
        fig.tight_layout()
    with atomic_write(args.out) as f:
        fig.savefig(f, format="png", dpi=100)
    print(f"wrote {args.out}: {args.num} samples of {dm.describe()}")
    return 0


def _legend(fig, classes: list[str], values) -> None:
    """A legend at the bottom of ``fig``: the colour and name of every class that occurs in ``values``."""
    from matplotlib.patches import Patch

    from ..data.palette import voc_palette

    palette = voc_palette()
    present = sorted({int(v) for v in values.unique()})
    handles = [Patch(facecolor=[c / 255 for c in palette[v]], edgecolor="black", linewidth=0.5,
                     label=classes[v] if v < len(classes) else "ignore") for v in present]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=7, frameon=False)
