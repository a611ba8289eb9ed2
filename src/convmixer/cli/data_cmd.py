"""``convmixer data show``: a PNG grid of training samples before and after augmentation, to see the recipe."""

from __future__ import annotations

import argparse
import math


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="inspect datasets and augmentation")
    data_sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    data_sub.required = True
    s = data_sub.add_parser("show", help="write a PNG of original and augmented training samples with labels")
    s.add_argument("--dataset", default="fashion_mnist",
                   help="fashion_mnist (default), mnist, cifar10, cifar100, folder or synthetic")
    s.add_argument("--root", help="dataset location (default: search $CONVMIXER_DATA, the cache, system dirs)")
    s.add_argument("--no-download", action="store_true", help="fail instead of downloading a missing dataset")
    s.add_argument("--augment", default="paper", help="preset: paper (default), light or none")
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
    from matplotlib.figure import Figure

    from ..data import DataConfig, augment_preset, build_data, denormalize
    from ..data.seeding import generator
    from ..errors import ConfigError
    from ..io import atomic_write

    if not 1 <= args.num <= 256:
        raise ConfigError(f"--num must be in 1..256, got {args.num}")
    if not args.out.lower().endswith(".png"):
        raise ConfigError(f"--out must name a .png file, got {args.out!r}")
    overrides = {k: getattr(args, k) for k in _OVERRIDES if getattr(args, k) is not None}
    aug = augment_preset(args.augment, **overrides)
    data = DataConfig(dataset=args.dataset, root=args.root, download=not args.no_download,
                      image_size=args.image_size, batch_size=args.num, eval_batch_size=args.num, workers=0).validate()
    dm = build_data(data, aug, device="cpu", seed=args.seed)
    images, labels = next(dm.train_loader.iterate(0))
    # the draws of training step 0 on rank 0 with this seed: the picture shows what training sees first
    augmented, targets = dm.augment(images, labels, generator(args.seed, "augment", 0, 0))
    shown = denormalize(augmented, dm.mean, dm.std)

    cols = min(args.num, 8)
    rows = math.ceil(args.num / cols)
    fig = Figure(figsize=(1.6 * cols, 3.9 * rows))
    fig.suptitle(f"{dm.name}: top = original, bottom = augmented ({args.augment}"
                 f"{', ' + ', '.join(f'{k}={v}' for k, v in overrides.items()) if overrides else ''})", fontsize=9)
    cmap = "gray" if dm.in_chans == 1 else None
    for i in range(args.num):
        r, c = divmod(i, cols)
        for row, img, title in ((2 * r, images[i].float() / 255, dm.classes[int(labels[i])][:14]),
                                (2 * r + 1, shown[i], _label(targets[i], dm.classes))):
            ax = fig.add_subplot(2 * rows, cols, row * cols + c + 1)
            pixels = img[0] if dm.in_chans == 1 else img.permute(1, 2, 0)
            ax.imshow(pixels.numpy(), cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(title, fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    with atomic_write(args.out) as f:
        fig.savefig(f, format="png", dpi=100)
    print(f"wrote {args.out}: {args.num} samples of {dm.describe()}")
    return 0
