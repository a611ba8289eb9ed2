"""The training configuration: one tree of dataclasses, loaded from YAML and `--set key=value` overrides.

    TrainConfig
      model:    ModelConfig     which network (a registry name plus overrides)
      data:     DataConfig      which dataset, resolution, batch size   (convmixer.data.config)
      aug:      AugmentConfig   the augmentation recipe                 (convmixer.data.config)
      optim:    OptimConfig     AdamW, weight decay, clipping, accumulation
      schedule: ScheduleConfig  epochs and the one-cycle learning-rate shape
      run:      RunConfig       seed, device, precision, output, checkpoints, logging

Every value is type-checked when it is set, and :meth:`TrainConfig.validate` checks the whole tree
before any work starts, so a bad setting fails in a second with one line, not after an epoch.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from ..data.config import AugmentConfig, DataConfig
from ..errors import ConfigError

DEFAULT_MODEL = "convmixer_fmnist"


@dataclass
class ModelConfig:
    name: str = DEFAULT_MODEL  # registry name (`convmixer list`); in_chans and num_classes come from the data
    dim: int | None = None  # override the width h (None: the registered value)
    depth: int | None = None  # override the depth d
    kernel_size: int | None = None  # override the depthwise kernel size k (px)
    patch_size: int | None = None  # override the patch size p (px)
    act: str | None = None  # override the activation: gelu | relu | silu
    stem_kernel: int | None = None  # ConvMixer: stem conv kernel (px) >= p, overlapping patches (None: p, the paper's)
    pretrained: str | None = None  # weights to start from (path or URL); a different head is re-initialized
    sync_bn: bool = False  # SyncBatchNorm across processes under torchrun (batch statistics of the global batch)
    init: str = ""  # extra initialization of a new run, comma-separated: whiten (stem from patch PCA), zero_residual
    head: str | None = None  # segmentation: override the decode head: linear | pixelshuffle
    aux_indices: tuple[int, ...] | None = None  # segmentation: override the blocks that feed auxiliary heads ([] none)
    aux_weight: float = 0.4  # segmentation: loss weight of each auxiliary head (SETR's 0.4)

    def overrides(self) -> dict[str, Any]:
        """The builder overrides set in this config (architecture fields that are not None)."""
        keys = ("dim", "depth", "kernel_size", "patch_size", "act", "stem_kernel", "head", "aux_indices")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


@dataclass
class OptimConfig:
    lr: float = 0.01  # peak learning rate of the one-cycle schedule (lr_max)
    weight_decay: float = 2e-5  # AdamW decoupled weight decay; never applied to biases and norm parameters
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW moment decay rates
    eps: float = 1e-3  # AdamW epsilon (the paper's recipe uses 1e-3, not the usual 1e-8)
    clip_grad: float | None = 1.0  # clip the global gradient L2 norm to this (None: no clipping)
    accum_steps: int = 1  # micro-batches per optimizer step (effective batch = batch_size * accum_steps * world)
    lookahead_k: int = 0  # Lookahead (Zhang et al. 2019): every k optimizer steps pull the slow weights toward the
    # fast ones and restart from them (0: off; the paper's 5-10)
    lookahead_alpha: float = 0.5  # Lookahead: slow weights += alpha * (fast - slow) every k steps
    muon: bool = False  # Muon (orthogonalized Nesterov momentum; training/optim.py) for the square 1x1 conv weights
    # (a ConvMixer's channel mixing), at the schedule's lr scaled to AdamW's update size (0.2 sqrt(width)); AdamW
    # for everything else. Its Newton-Schulz iterations run in fp32 on a CPU (torch's bf16 ones are emulated, 60x
    # AdamW's step, on CPUs without avx512_bf16) and in bf16 on a GPU
    muon_momentum: float = 0.95  # Muon's momentum (its paper's)
    muon_lr_scale: float = 1.0  # Muon's lr relative to the schedule's (after the scaling to AdamW's update size)
    muon_all_convs: bool = False  # with optim.muon: Muon for every conv weight (stem, depthwise filters), not only
    # the square 1x1s; without it nothing (so that `--set optim.muon=false` alone turns Muon off)


@dataclass
class ScheduleConfig:
    epochs: int = 10  # passes over the training set
    kind: Literal["onecycle", "constant"] = "onecycle"  # LR shape, stepped every optimizer step
    peak_at: float = 0.4  # onecycle: fraction of training at which the LR reaches lr (the paper: 2/5)
    anneal_at: float = 0.8  # onecycle: fraction at which it has fallen to lr / final_div (the paper: 4/5)
    final_div: float = 20.0  # onecycle: LR at `anneal_at` is lr / final_div; it then falls linearly to 0
    resize_from: int = 0  # progressive resizing: side (px) of the training images at step 0 (0: off, full size)
    resize_until: float = 0.5  # progressive resizing: fraction of training at which they have grown to full size


@dataclass
class RunConfig:
    name: str | None = None  # run directory name under out_dir (None: <model>-<dataset>-<timestamp>)
    out_dir: str = "runs"  # parent directory of run directories
    seed: int = 0  # seeds init, data order and augmentation; same seed + config = same run
    device: str = "auto"  # auto | cpu | cuda | cuda:N (under torchrun: each rank its local GPU)
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"  # autocast dtype; auto: bf16/fp16 on CUDA, bf16 on a CPU where faster
    channels_last: bool | None = None  # memory format (None: chosen per kernel size and device)
    compile: bool | None = None  # torch.compile the model (None: where it measurably helps)
    plain: bool = False  # force the straightforward path: eager, NCHW, fp32, built-in kernels
    ema_decay: float = 0.0  # EMA of weights with this decay per optimizer step (0: off), evaluated beside the model
    ema_bn_images: int = 0  # recompute the EMA's BatchNorm statistics on this many training images before evaluating
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower on CUDA; CPU runs are deterministic anyway)
    eval_every: int = 1  # evaluate every N epochs (and always after the last)
    checkpoint_minutes: float = 10.0  # also write last.pt every this many minutes mid-epoch (0: only at epoch ends)
    progress: bool = True  # show progress bars (rank 0 only)
    tensorboard: bool = True  # write TensorBoard events when tensorboard is installed
    max_steps: int | None = None  # stop after this many optimizer steps (smoke tests); the schedule still spans all epochs


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    aug: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, tree: dict[str, Any]) -> TrainConfig:
        cfg = cls()
        apply_tree(cfg, tree)
        return cfg

    def validate(self) -> None:
        """Check every value and the combinations; raise :class:`ConfigError` on the first problem."""
        from ..models import get_model_entry

        from .init import parse_inits

        entry = get_model_entry(self.model.name)  # unknown model: error with close matches
        parse_inits(self.model.init)
        self._validate_task(entry)
        self.data.validate()
        self.aug.validate()
        self._validate_model_fits_data()
        for key in ("dim", "depth", "kernel_size", "patch_size", "stem_kernel"):
            value = getattr(self.model, key)
            if value is not None and value < 1:
                raise ConfigError(f"model.{key} must be >= 1, got {value}")
        o, s, r = self.optim, self.schedule, self.run
        _positive("optim.lr", o.lr)
        _non_negative("optim.weight_decay", o.weight_decay)
        _positive("optim.eps", o.eps)
        if not all(0 <= b < 1 for b in o.betas):
            raise ConfigError(f"optim.betas must lie in [0, 1), got {o.betas}")
        if o.clip_grad is not None:
            _positive("optim.clip_grad", o.clip_grad)
        _positive("optim.accum_steps", o.accum_steps)
        _non_negative("optim.lookahead_k", o.lookahead_k)
        _positive("optim.muon_lr_scale", o.muon_lr_scale)
        if not 0 <= o.muon_momentum < 1:
            raise ConfigError(f"optim.muon_momentum must lie in [0, 1), got {o.muon_momentum}")
        if not 0 < o.lookahead_alpha <= 1:
            raise ConfigError(f"optim.lookahead_alpha must lie in (0, 1], got {o.lookahead_alpha}")
        _positive("schedule.epochs", s.epochs)
        if not 0 <= s.peak_at <= s.anneal_at <= 1:
            raise ConfigError(f"schedule needs 0 <= peak_at <= anneal_at <= 1, got {s.peak_at} and {s.anneal_at}")
        _positive("schedule.final_div", s.final_div)
        if not (isinstance(s.resize_from, int) and s.resize_from >= 0):
            raise ConfigError(f"schedule.resize_from must be a side in px (0: off), got {s.resize_from!r}")
        if not 0 < s.resize_until <= 1:
            raise ConfigError(f"schedule.resize_until must lie in (0, 1], got {s.resize_until}")
        if not 0 <= r.ema_decay < 1:
            raise ConfigError(f"run.ema_decay must lie in [0, 1), got {r.ema_decay}")
        _non_negative("run.ema_bn_images", r.ema_bn_images)
        if r.ema_bn_images and not r.ema_decay:
            raise ConfigError("run.ema_bn_images recalibrates the EMA's BatchNorm statistics: it needs run.ema_decay > 0")
        _positive("run.eval_every", r.eval_every)
        _non_negative("run.checkpoint_minutes", r.checkpoint_minutes)
        if r.max_steps is not None:
            _positive("run.max_steps", r.max_steps)
        if r.device != "auto" and not (r.device == "cpu" or r.device.split(":")[0] == "cuda"):
            raise ConfigError(f"run.device must be auto, cpu, cuda or cuda:N, got {r.device!r}")
        if self.data.root is not None and not Path(self.data.root).expanduser().exists():
            raise ConfigError(f"data.root {self.data.root!r} does not exist")

    def _validate_task(self, entry) -> None:
        """The model must be built for the dataset's task (a classifier cannot be trained on masks)."""
        from ..data.registry import get_dataset_info

        task = get_dataset_info(self.data.dataset).task
        if entry.task != task:
            raise ConfigError(f"{self.model.name} is a {entry.task} model but {self.data.dataset} is a {task} dataset; "
                              f"choose a {task} model (convmixer list --task {task})")
        if task != "segmentation" and (self.model.head is not None or self.model.aux_indices is not None):
            raise ConfigError("model.head and model.aux_indices apply to segmentation models only")
        if task == "segmentation":
            from ..data.seg_augment import check_for_segmentation

            check_for_segmentation(self.aug)  # before any work, not when the data is built
        _non_negative("model.aux_weight", self.model.aux_weight)

    def image_size(self) -> int:
        """The training resolution (px) without loading the data: explicit, else the dataset's native size."""
        from ..data.registry import get_dataset_info

        native = get_dataset_info(self.data.dataset).for_config(self.data).image_size  # synthetic: its config's
        return self.data.image_size or native

    def _validate_model_fits_data(self) -> None:
        """Build the model on the meta device (no memory, no compute) to catch bad overrides, and check the
        patch fits the image."""
        import torch

        from ..models import build_registered, model_kwargs

        size = self.image_size()
        patch = model_kwargs(self.model.name, **self.model.overrides()).get("patch_size")
        if patch is not None and patch > size:
            raise ConfigError(f"patch size {patch} is larger than the {size}x{size} images of {self.data.dataset}")
        start = self.schedule.resize_from
        if isinstance(start, int) and start and not (patch or 1) <= start < size:
            raise ConfigError(f"schedule.resize_from={start} must lie between the patch size ({patch or 1}) and the "
                              f"{size} px side of the training images (0: off)")
        with torch.device("meta"):
            model = build_registered(self.model.name, **self.model.overrides())
            if isinstance(start, int) and start:
                self._check_any_size(model, start)

    def _check_any_size(self, model, side: int) -> None:
        """Progressive resizing needs a model that runs at a smaller side: a forward pass on the meta device at the
        first step's side (``side`` rounded down to the model's size multiple, as the engine does)."""
        import torch

        from ..errors import InputShapeError
        from ..models.registry import size_multiple

        multiple = size_multiple(model)
        side = max(multiple, side // multiple * multiple)
        chans = getattr(model, "in_chans", None) or 3
        try:
            model(torch.empty(2, chans, side, side))
        except InputShapeError as e:
            raise ConfigError(f"schedule.resize_from: {self.model.name} cannot run at {side} px: "
                              f"{str(e).splitlines()[0]}") from None


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{name} must be > 0, got {value}")


def _non_negative(name: str, value: float) -> None:
    if not value >= 0:
        raise ConfigError(f"{name} must be >= 0, got {value}")


def _plain(obj: Any) -> Any:
    """Tuples to lists, recursively, so the tree is plain YAML/JSON (and torch.load weights_only-safe)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


# ----------------------------------------------------------------------------------------------------------------
# Typed assignment: YAML trees and `--set a.b=value` both end here.
# ----------------------------------------------------------------------------------------------------------------
_YAML_BOOL_WORDS = {False: ("off", "no", "false", "n"), True: ("on", "yes", "true", "y")}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} fits none of {tp}")
    if origin is Literal:
        if isinstance(value, bool) and value not in args:  # YAML 1.1 reads off/on/no/yes as booleans
            words = [a for a in args if isinstance(a, str) and a.lower() in _YAML_BOOL_WORDS[value]]
            value = words[0] if len(words) == 1 else value
        if value not in args:
            raise ConfigError(f"{key} must be one of {', '.join(map(str, args))}; got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list like [a, b], got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], key) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{key} must have {len(args)} elements, got {len(value)}")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported field type {tp}")


def _fields(obj: Any) -> dict[str, Any]:
    hints = typing.get_type_hints(type(obj))
    return {f.name: hints[f.name] for f in dataclasses.fields(obj)}


def set_value(cfg: TrainConfig, key: str, value: Any) -> None:
    """Set ``cfg.<key>`` (dotted, e.g. ``optim.lr``) to ``value``, type-checked against the field."""
    node: Any = cfg
    parts = key.split(".")
    for i, part in enumerate(parts):
        fields = _fields(node)
        if part not in fields:
            where = ".".join(parts[:i]) or "the config"
            close = difflib.get_close_matches(part, list(fields), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join('.'.join([*parts[:i], c]) for c in close)}?" if close else \
                f"; {where} has {', '.join(fields)}"
            raise ConfigError(f"unknown setting {key!r}{hint}")
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(getattr(node, part)):
                if not isinstance(value, dict):
                    raise ConfigError(f"{key} is a section; set its fields, e.g. {key}.<field>=...")
                apply_tree(getattr(node, part), value, prefix=key)
            else:
                setattr(node, part, _coerce(value, fields[part], key))
        else:
            node = getattr(node, part)
            if not dataclasses.is_dataclass(node):
                raise ConfigError(f"{'.'.join(parts[: i + 1])} is a value, not a section")


def apply_tree(node: Any, tree: dict[str, Any], prefix: str = "") -> None:
    """Apply a nested dict (a YAML recipe) onto a config node, field by field, type-checked."""
    if not isinstance(tree, dict):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {tree!r}")
    root = node
    for key, value in tree.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        fields = _fields(root)
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; expected one of {', '.join(fields)}"
            raise ConfigError(f"unknown setting {full!r}{hint}")
        if dataclasses.is_dataclass(getattr(root, key)):
            apply_tree(getattr(root, key), value, full)
        else:
            setattr(root, key, _coerce(value, fields[key], full))


def parse_assignment(text: str) -> tuple[str, Any]:
    """``"optim.lr=3e-3"`` -> ``("optim.lr", 0.003)``; the value is parsed as YAML (so ``[1, 2]``, ``null``, ``true``)."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def recipe_dirs() -> list[Path]:
    """Where shipped recipes live: configs/ of a source checkout, or <prefix>/share/convmixer/configs."""
    checkout = Path(__file__).resolve().parents[3] / "configs"
    installed = Path(sys.prefix) / "share" / "convmixer" / "configs"
    return [d for d in (checkout, installed) if d.is_dir()]


def list_recipes() -> list[str]:
    return sorted({p.stem for d in recipe_dirs() for p in d.glob("*.yaml")})


def recipe_path(name_or_path: str) -> Path:
    """A YAML path, or the name of a recipe shipped in configs/ (``fmnist``, ``cifar10``, ...)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        return path
    for directory in recipe_dirs():
        if (directory / f"{name_or_path}.yaml").is_file():
            return directory / f"{name_or_path}.yaml"
    raise ConfigError(f"no config file or recipe named {name_or_path!r}; recipes: {', '.join(list_recipes())}")


def _recipe_trees(path: Path, seen: tuple[Path, ...] = ()) -> list[dict[str, Any]]:
    """The YAML trees to apply for one recipe, its ``base:`` chain first: a recipe may start from another (a shipped
    recipe's name, or a path relative to the recipe's own folder) and change only what differs, so each shared
    setting keeps one home."""
    if path.resolve() in seen:
        raise ConfigError(f"{path}: its base: chain comes back to itself")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path} must be a mapping of settings, got {type(tree).__name__}")
    base = tree.pop("base", None)
    if base is None:
        return [tree]
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: base must be a recipe name or a YAML path, got {base!r}")
    return [*_recipe_trees(recipe_path(base_source(base, path.parent)), (*seen, path.resolve())), tree]


def base_source(base: str, folder: Path | None) -> str:
    """A ``base:`` entry (of a recipe or a sweep spec) as :func:`recipe_path` takes it: a recipe name as it is, a
    YAML path as given where it exists, else relative to ``folder``, the folder of the file that names it."""
    path = Path(base)
    if path.suffix in (".yaml", ".yml") and not path.is_absolute() and not path.exists() and folder is not None:
        if (folder / path).exists():
            return str(folder / path)
    return base


def load_config(source: str | os.PathLike | None = None, assignments: list[str] = ()) -> TrainConfig:
    """Defaults <- YAML recipe (a path or a shipped recipe name; its ``base:`` first) <- ``key=value`` assignments."""
    cfg = TrainConfig()
    if source is not None:
        for tree in _recipe_trees(recipe_path(str(source))):
            apply_tree(cfg, tree, prefix="")
    for text in assignments:
        set_value(cfg, *parse_assignment(text))
    return cfg


def dump_yaml(cfg: TrainConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
