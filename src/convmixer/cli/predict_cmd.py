"""``convmixer predict``: top-k classes for image files or every image in a directory, batched; for a segmentation
checkpoint, a mask per image (a palette PNG of class indices at the image's own size) and an overlay.

    convmixer predict --checkpoint runs/<name>/best.pt shirt.png boots.jpg photos/
    convmixer predict --checkpoint runs/<seg run>/best.pt scene.png --out masks/   # masks/scene.png, scene_overlay.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify images, or segment them, with a checkpoint (files or directories)")
    p.add_argument("images", nargs="+", help="image files and/or directories (every image inside, recursively)")
    p.add_argument("--checkpoint", required=True, help="training checkpoint, weights file or released paper file")
    p.add_argument("--model", help="registry name, for files that do not record it (the released weights)")
    p.add_argument("--classes", help="text file with one class name per line (for files without names)")
    p.add_argument("--top-k", type=int, default=5, help="classes to show per image")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--json", action="store_true", help="print one JSON object per image")
    p.add_argument("--out", default="predictions",
                   help="segmentation: directory for the mask PNGs and overlays (default: predictions)")
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
    from ..io import check_output_path
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
    task = get_task(info.task)
    segmentation = info.task == "segmentation"
    out_dir = Path(args.out)
    if segmentation:
        check_output_path(out_dir / "mask.png")  # a bad --out fails now, not after the first batch
    fill = [round(255 * m) for m in info.mean]
    used_stems: set[str] = set()

    def flush(batch: list[tuple[Path, torch.Tensor, tuple[int, int, int, int]]]) -> None:
        x = torch.stack([img for _, img, _ in batch]).to(device).float().div_(255).sub_(mean).div_(std)
        with torch.no_grad(), plan.autocast():
            outputs = model(plan.prepare_input(x))
        if segmentation:
            outputs = [back_to_image(o[None], box) for o, (_, _, (box, _)) in zip(outputs.float(), batch)]
            outputs = [task.predictions(o, names, args.top_k)[0] for o in outputs]
        else:
            outputs = task.predictions(outputs, names, args.top_k)
        for (path, _, extra), prediction in zip(batch, outputs):
            if segmentation:
                prediction = write_mask(prediction, path, extra[1], out_dir, used_stems)
            if args.json:
                print(json.dumps({"image": str(path), **prediction}))
            else:
                print(f"{path}: {task.prediction_text(prediction)}")

    batch: list = []
    predicted = 0
    for path in files:
        try:
            img = decode_image(path, info.in_chans)
            if segmentation:
                canvas, box = letterbox(img, info.image_size, fill)
                batch.append((path, canvas, (box, img)))
            else:
                img = eval_transform(img, info.image_size, info.crop_pct, info.interpolation)
        except DataError as e:
            problems.append(str(e))
            continue
        if not segmentation:
            batch.append((path, img, None))
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


def letterbox(img, size: int, fill: list[int]):
    """uint8 (C, H, W) -> (uint8 (C, size, size), box): the longer side resized to ``size`` (antialiased bilinear),
    the rest padded at the right and bottom with ``fill`` (the mean colour), as the segmentation folders are
    loaded for training; ``box`` = (valid height, valid width, original height, original width)."""
    import torch
    import torch.nn.functional as F

    c, h, w = img.shape
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = F.interpolate(img[None].float(), size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    canvas = torch.tensor(fill, dtype=torch.float32).view(c, 1, 1).expand(c, size, size).clone()
    canvas[:, :nh, :nw] = resized[0].round().clamp(0, 255)
    return canvas.to(torch.uint8), (nh, nw, h, w)


def back_to_image(logits, box):
    """Logits (1, K, S, S) of a letterboxed canvas -> (1, K, H, W) of the original image: the valid region cut out
    and resized bilinearly, so the mask has the image's own size."""
    import torch.nn.functional as F

    nh, nw, h, w = box
    return F.interpolate(logits[:, :, :nh, :nw], size=(h, w), mode="bilinear", align_corners=False)


def write_mask(prediction: dict, path: Path, image, out_dir: Path, used: set[str]) -> dict:
    """Write ``prediction``'s mask as ``<out>/<stem>.png`` (palette PNG of class indices) and
    ``<stem>_overlay.png`` (the image with the classes coloured); return the prediction with the file names in
    place of the mask; ``image`` is the decoded uint8 (C, H, W) input. A stem already ``used`` in this run (same name in two directories) gets a counter."""
    import numpy as np
    import torch
    from PIL import Image

    from ..data.palette import overlay, save_palette_png
    from ..io import atomic_write

    stem, n = path.stem, 1
    while stem in used:
        stem, n = f"{path.stem}-{n}", n + 1
    used.add(stem)
    out_dir.mkdir(parents=True, exist_ok=True)
    mask = prediction.pop("mask")
    mask_path, overlay_path = out_dir / f"{stem}.png", out_dir / f"{stem}_overlay.png"
    save_palette_png(mask.numpy(), mask_path)
    picture = (overlay(image.float() / 255, mask) * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    with atomic_write(overlay_path) as f:
        Image.fromarray(np.ascontiguousarray(picture)).save(f, format="PNG")
    return {"mask": str(mask_path), "overlay": str(overlay_path), **prediction}
