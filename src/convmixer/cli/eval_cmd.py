"""``convmixer eval``: a checkpoint's figures on a dataset (classification: top-1/top-5 and per-class accuracy;
segmentation: mIoU, pixel accuracy and per-class IoU), with the confusion matrix as JSON and a plot.

    convmixer eval --checkpoint runs/<name>/best.pt                        # the data it was trained on
    convmixer eval --checkpoint runs/<name>/best.pt --split train          # its training images, unaugmented
    convmixer eval --checkpoint convmixer_1536_20_ks9_p7.pth.tar --model convmixer_1536_20 \\
                   --dataset folder --data-root /data/imagenet             # the published 81.37%
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint: top-1/top-5 or mIoU, per-class figures, confusion matrix")
    p.add_argument("--checkpoint", required=True, help="training checkpoint (.pt), weights (.safetensors), or a "
                                                       "released paper file (.pth.tar, give --model)")
    p.add_argument("--model", help="registry name, for files that do not record it (the released weights)")
    p.add_argument("--dataset", help="dataset (default: the one the checkpoint was trained on, else folder)")
    p.add_argument("--data-root", "--data", dest="data_root", help="where the dataset lives")
    p.add_argument("--split", choices=("test", "train"), default="test",
                   help="test: the test (val) split; train: the training images without augmentation, to measure "
                        "the generalization gap (reports eval-train.json, confusion-train.png)")
    p.add_argument("--image-size", type=int, help="evaluation resolution (default: the model's)")
    p.add_argument("--crop-pct", type=float, help="folder data: resize to size/crop_pct, center crop (default: model's)")
    p.add_argument("--batch-size", type=int, default=256, help="images per batch")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers for folder data")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--ema", action="store_true", help="evaluate the EMA weights stored in the checkpoint")
    p.add_argument("--plain", action="store_true", help="force the straightforward execution path")
    p.add_argument("--test-flip", action=argparse.BooleanOptionalAction, default=None,
                   help="average the logits of each image and its mirror (default: as the run did, aug.test_flip)")
    p.add_argument("--out", help="directory for eval.json and confusion.png (default: beside the checkpoint)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data import build_data
    from ..data.config import DataConfig, no_augment
    from ..data.registry import get_dataset_info
    from ..errors import ConfigError
    from ..fast import FastOptions, apply_plan, plan_execution
    from ..io import atomic_write, check_output_path
    from ..training.distributed import DistInfo, resolve_device
    from ..training.tasks import get_task
    from ..inference import load_for_inference

    device = resolve_device(args.device, DistInfo())
    out = Path(args.out) if args.out else Path(args.checkpoint).resolve().parent
    suffix = "" if args.split == "test" else f"-{args.split}"  # a train-split report never replaces the test one
    check_output_path(out / f"eval{suffix}.json")  # before the evaluation, not after it
    info = load_for_inference(args.checkpoint, args.model, use_ema=args.ema)
    model = info.model.to(device)
    dataset = args.dataset or info.dataset or "folder"
    # start from the training run's data settings when evaluating on its dataset, then apply the flags
    base = dict(info.data_config) if info.data_config and dataset == info.dataset else {}
    base.update(dataset=dataset, eval_batch_size=args.batch_size, workers=args.workers, mean=info.mean, std=info.std,
                interpolation=info.interpolation)
    if args.data_root:
        base["root"] = args.data_root
    if args.image_size or dataset == "folder":
        base["image_size"] = args.image_size or info.image_size
    if args.crop_pct or dataset == "folder":
        base["crop_pct"] = args.crop_pct or info.crop_pct
    if dataset == "folder" and not base.get("root"):
        raise ConfigError("folder data needs --data-root (root/val/<class>/*)")
    known = set(DataConfig.__dataclass_fields__)
    data_cfg = DataConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in base.items() if k in known})
    test_flip = info.test_flip if args.test_flip is None else args.test_flip
    data = build_data(data_cfg.validate(), no_augment(test_flip=test_flip), device=device, seed=0, train=False,
                      eval_split=args.split)
    task = get_task(info.task)
    data_task = get_dataset_info(dataset).task
    if data_task != info.task:
        raise ConfigError(f"the model is a {info.task} model but {dataset} is a {data_task} dataset")
    if data.num_classes != info.num_classes:
        raise ConfigError(f"the model predicts {info.num_classes} classes but {dataset} has {data.num_classes}")
    if data.in_chans != info.in_chans:
        raise ConfigError(f"the model takes {info.in_chans}-channel images but {dataset} has {data.in_chans}")
    shape = (args.batch_size, data.in_chans, data.image_size, data.image_size)
    plan = plan_execution(model, mode="infer", device=device, input_shape=shape, options=FastOptions(plain=args.plain))
    apply_plan(model, plan)
    prepare = lambda images: plan.prepare_input(data.normalize(images))  # noqa: E731
    result = task.evaluate(model, data, prepare, autocast=plan.autocast(), progress=True)

    out.mkdir(parents=True, exist_ok=True)
    classes = list(data.classes)
    skipped = len(getattr(data.eval_loader, "skipped", {}))  # unreadable files of folder data, each warned about
    report = {"checkpoint": str(args.checkpoint), "dataset": dataset, "split": args.split,
              **task.eval_report(result, classes),
              "test_flip": test_flip, "execution": plan.describe(), "skipped_files": skipped}
    with atomic_write(out / f"eval{suffix}.json", "w") as f:
        json.dump(report, f, indent=2)
    written = task.write_eval_outputs(result, classes, out / f"confusion{suffix}.png",
                                      f"{Path(args.checkpoint).name} on {dataset} {args.split}")
    *lines, headline = task.eval_lines(result, classes)
    for line in lines:
        print(line)
    left_out = f", {skipped} unreadable skipped" if skipped else ""
    what = "images" if args.split == "test" else "training images"
    print(f"{headline}  ({result.num_samples} {what}{left_out}; "
          f"{', '.join(str(p) for p in [out / f'eval{suffix}.json', *written])})")
    return 0
