"""``convmixer train``: run a recipe. With no arguments, the Fashion-MNIST default.

    convmixer train                                   # the default: Fashion-MNIST, convmixer_128_6_ks5_p1
    convmixer train --config cifar10 --data-root ~/data/cifar-10-batches-py
    convmixer train --epochs 30 --set aug.erase_prob=0.25 --set optim.lr=0.005
    convmixer train --resume runs/<name>              # continue an interrupted run exactly
    torchrun --nproc_per_node=4 -m convmixer train --config imagenet_1536_20 --data-root /data/imagenet --name in1k
"""

from __future__ import annotations

import argparse

# (flag, dotted config key, type, help): the common settings; anything else via --set key=value
FLAGS = (
    ("--model", "model.name", str, "registry name (`convmixer list`)"),
    ("--dataset", "data.dataset", str, "fashion_mnist | mnist | cifar10 | cifar100 | folder | synthetic"),
    ("--data-root", "data.root", str, "where the dataset lives (default: searched, downloaded if allowed)"),
    ("--epochs", "schedule.epochs", int, "passes over the training set"),
    ("--batch-size", "data.batch_size", int, "images per step per process"),
    ("--lr", "optim.lr", float, "peak learning rate of the one-cycle schedule"),
    ("--weight-decay", "optim.weight_decay", float, "AdamW weight decay"),
    ("--seed", "run.seed", int, "seed for init, data order and augmentation"),
    ("--device", "run.device", str, "auto | cpu | cuda | cuda:N"),
    ("--amp", "run.amp", str, "auto | off | bf16 | fp16"),
    ("--workers", "data.workers", int, "DataLoader workers for folder datasets"),
    ("--name", "run.name", str, "run directory name under --out-dir"),
    ("--out-dir", "run.out_dir", str, "parent directory of run directories (default: runs)"),
    ("--max-steps", "run.max_steps", int, "stop after this many optimizer steps (smoke tests)"),
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (default: ConvMixer on Fashion-MNIST)",
                       description="Train with the paper's recipe. Settings: a YAML recipe (--config), the flags below, "
                                   "then --set key=value for any field (see `convmixer train --print-config`).")
    p.add_argument("--config", help="YAML recipe: a path or a shipped name (fmnist, fmnist_v2, fmnist_p1, fmnist_long, "
                                    "cifar10, imagenet_1536_20, imagenet_768_32); default: fmnist")
    for flag, key, typ, text in FLAGS:
        p.add_argument(flag, dest=key.replace(".", "__"), type=typ, help=text)
    p.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                   help="set any config field, e.g. --set aug.mixup_alpha=0 (repeatable)")
    p.add_argument("--compile", dest="run__compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the model (default: where it helps)")
    p.add_argument("--plain", dest="run__plain", action="store_true", default=None,
                   help="force the straightforward path (eager, NCHW, fp32)")
    p.add_argument("--no-progress", dest="run__progress", action="store_false", default=None,
                   help="no progress bars (logs only)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last.pt")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.set_defaults(func=run)


def resolve(args: argparse.Namespace):
    """Defaults <- recipe <- flags <- --set, each value type-checked as it is set (the whole config is validated
    once, by the Trainer, or here for --print-config)."""
    from ..training.config import load_config, parse_assignment, set_value

    cfg = load_config(args.config or "fmnist")
    for key in [f[1] for f in FLAGS] + ["run.compile", "run.plain", "run.progress"]:
        value = getattr(args, key.replace(".", "__"))
        if value is not None:
            set_value(cfg, key, value)
    for text in args.assignments:  # --set comes last, so it wins over the named flags
        set_value(cfg, *parse_assignment(text))
    return cfg


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..training.config import dump_yaml
    from ..training.engine import Trainer

    if args.resume:
        given = [f for f, key, *_ in FLAGS if getattr(args, key.replace(".", "__")) is not None]
        if args.config or args.assignments or given:
            raise ConfigError("--resume continues a run with its saved config; drop the other settings "
                              f"({', '.join(given + (['--config'] if args.config else []) + (['--set'] if args.assignments else []))})")
        result = Trainer.resume(args.resume).fit()
    else:
        cfg = resolve(args)
        if args.print_config:
            cfg.validate()
            print(dump_yaml(cfg), end="")
            return 0
        result = Trainer(cfg).fit()
    if result.stopped_by:
        return 130 if result.stopped_by == "SIGINT" else 143
    s = result.summary
    if s:
        top1, top5 = s.get("test_top1"), s.get("test_top5")
        if top1 is not None:
            ema = s.get("test_ema_top1")
            extra = (f"  EMA top-1 {ema:.2f}%" if ema is not None else "") + \
                (", with test-time flip" if s.get("test_flip") else "")
            print(f"test top-1 {top1:.2f}%  top-5 {top5:.2f}%{extra}  ({s['model']} on {s['dataset']}, "
                  f"{s['epochs']} epochs, {s['wall_time_s'] / 60:.1f} min training, "
                  f"{s['train_images_per_s']:.0f} img/s) -> {result.run_dir}")
    return 0
