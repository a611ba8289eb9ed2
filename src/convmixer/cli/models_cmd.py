"""``convmixer list`` and ``convmixer info``: what is registered and what each model costs."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list registered models")
    p.add_argument("pattern", nargs="?", help="shell-style filter, e.g. 'convmixer_1536*'")
    p.add_argument("--family", help="only this family (convmixer, resnet, vit, unet, ...)")
    p.add_argument("--task", help="only models for this task (classification, segmentation)")
    p.set_defaults(func=run_list)

    p = sub.add_parser("info", help="parameters, MACs, FLOPs and activation memory of a model")
    p.add_argument("name", help="registered model name (see `convmixer list`)")
    p.add_argument("--image-size", type=int, help="input height = width in pixels (default: the model's)")
    p.add_argument("--num-classes", type=int, help="classifier outputs (default: the model's)")
    p.add_argument("--in-chans", type=int, help="input channels (default: the model's)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run_info)


def run_list(args: argparse.Namespace) -> int:
    from ..data.registry import TASKS
    from ..errors import ConfigError
    from ..models import get_model_entry, list_models

    if args.task is not None and args.task not in TASKS:
        raise ConfigError(f"--task must be one of {', '.join(TASKS)}, got {args.task!r}")
    names = list_models(args.pattern, family=args.family, task=args.task)
    width = max((len(n) for n in names), default=0)
    for name in names:
        entry = get_model_entry(name)
        top1 = f"  top-1 {entry.cfg.top1:.2f}%" if entry.cfg.top1 else ""
        task = f"  {entry.task}" if entry.task != "classification" else ""
        size = "x".join(map(str, entry.cfg.input_size[1:]))
        print(f"{name:<{width}}  {entry.description:<34} {size:>7} {entry.cfg.num_classes:>5} classes{top1}{task}")
    return 0


def _human(n: float, unit: str = "") -> str:
    for suffix in ("", "K", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.3g}{suffix}{unit}"
        n /= 1000
    return f"{n:.3g}P{unit}"


def run_info(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..factory import create_model
    from ..models import get_model_entry
    from ..profile import profile_model

    entry = get_model_entry(args.name)
    overrides = {k: v for k, v in (("num_classes", args.num_classes), ("in_chans", args.in_chans)) if v is not None}
    model = create_model(args.name, **overrides)
    chans = args.in_chans or entry.cfg.input_size[0]
    size = args.image_size or entry.cfg.input_size[1]
    patch = getattr(model, "patch_size", 1)
    if size < 1 or size < patch:
        raise ConfigError(f"--image-size {size} is smaller than {args.name}'s patch size {patch}")
    prof = profile_model(model, (chans, size, size))
    info = {"model": args.name, "description": entry.description, "task": entry.task, **prof.as_dict()}
    if hasattr(model, "patch_size"):
        grid = size // model.patch_size
        info["tokens"] = f"{grid}x{grid}"
    if hasattr(model, "kernel_size") and hasattr(model, "depth"):  # ConvMixer: p + d(k-1)p
        info["receptive_field_px"] = model.patch_size * (1 + model.depth * (model.kernel_size - 1))
    if args.json:
        print(json.dumps(info))
        return 0
    rows = [
        ("model", f"{args.name} ({entry.description})"),
        ("task", entry.task),
        ("input", "x".join(map(str, info["input_size"]))),
        ("parameters", f"{prof.params:,}"),
        ("MACs / image", f"{prof.macs:,} ({_human(prof.macs)})"),
        ("FLOPs / image", f"{prof.flops:,} ({_human(prof.flops)})"),
        ("activations / image", f"{_human(prof.activation_bytes, 'B')} saved for backward (fp32)"),
    ]
    if "tokens" in info:
        rows.append(("patch grid", info["tokens"]))
    if "receptive_field_px" in info:
        rows.append(("receptive field", f"{info['receptive_field_px']} px"))
    for key, value in rows:
        print(f"{key:<20} {value}")
    return 0
