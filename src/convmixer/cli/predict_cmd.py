"""``convmixer predict``: top-k classes for image files or every image in a directory, batched.

    convmixer predict --checkpoint runs/<name>/best.pt shirt.png boots.jpg photos/
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify images with a checkpoint (files or directories)")
    p.add_argument("images", nargs="+", help="image files and/or directories (every image inside, recursively)")
    p.add_argument("--checkpoint", required=True, help="training checkpoint, weights file or released paper file")
    p.add_argument("--model", help="registry name, for files that do not record it (the released weights)")
    p.add_argument("--classes", help="text file with one class name per line (for files without names)")
    p.add_argument("--top-k", type=int, default=5, help="classes to show per image")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--json", action="store_true", help="print one JSON object per image")
    p.set_defaults(func=run)


def collect(paths: list[str]) -> tuple[list[Path], list[str]]:
    """Image files named or found under directories, and problems with the arguments themselves."""
    files, problems = [], []
    for arg in paths:
        path = Path(arg)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                problems.append(f"{path}: no images inside")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            problems.append(f"{path}: no such file or directory")
    return files, problems


def run(args: argparse.Namespace) -> int:
    import sys

    import torch

    from ..data import decode_image, eval_transform
    from ..errors import ConfigError, DataError
    from ..fast import FastOptions, apply_plan, plan_execution
    from ..inference import load_for_inference
    from ..training.distributed import DistInfo, resolve_device
    from ..training.tasks import get_task

    if args.top_k < 1 or args.batch_size < 1:
        raise ConfigError("--top-k and --batch-size must be >= 1")
    files, problems = collect(args.images)
    device = resolve_device(args.device, DistInfo())
    info = load_for_inference(args.checkpoint, args.model)
    classes = info.classes
    if args.classes:
        classes = [line.strip() for line in Path(args.classes).read_text().splitlines() if line.strip()]
        if len(classes) != info.num_classes:
            raise ConfigError(f"{args.classes} names {len(classes)} classes; the model predicts {info.num_classes}")
    names = classes or [f"class {i}" for i in range(info.num_classes)]
    model = info.model.to(device)
    plan = plan_execution(model, mode="infer", device=device,
                          input_shape=(args.batch_size, info.in_chans, info.image_size, info.image_size),
                          options=FastOptions())
    apply_plan(model, plan)
    mean = torch.tensor(info.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(info.std, device=device).view(1, -1, 1, 1)
    task = get_task("classification")

    def flush(batch: list[tuple[Path, torch.Tensor]]) -> None:
        x = torch.stack([img for _, img in batch]).to(device).float().div_(255).sub_(mean).div_(std)
        with torch.no_grad(), plan.autocast():
            outputs = model(plan.prepare_input(x))
        for (path, _), prediction in zip(batch, task.predictions(outputs, names, args.top_k)):
            if args.json:
                print(json.dumps({"image": str(path), **prediction}))
            else:
                print(f"{path}: {task.prediction_text(prediction)}")

    batch: list = []
    predicted = 0
    for path in files:
        try:
            img = eval_transform(decode_image(path, info.in_chans), info.image_size, info.crop_pct, info.interpolation)
        except DataError as e:
            problems.append(str(e))
            continue
        batch.append((path, img))
        predicted += 1
        if len(batch) == args.batch_size:
            flush(batch)
            batch = []
    if batch:
        flush(batch)
    for problem in problems:
        print(f"convmixer: skipped {problem}", file=sys.stderr)
    if predicted == 0:
        raise DataError(f"no image could be read ({len(problems)} skipped)")
    return 0
