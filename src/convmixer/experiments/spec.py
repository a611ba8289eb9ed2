"""The sweep specification: which training runs a sweep is made of.

A spec is a YAML file (docs/experiments.md):

    name: kernel                       # the sweep's name: its output folder and study (default: the file's stem)
    description: ...                   # a paragraph for results.md
    base: fmnist                       # a recipe in configs/ or a path (relative to the spec file)
    set: {model.dim: 128}              # overrides on the recipe: dotted TrainConfig keys (or a list of "key=value")
    grid: {model.kernel_size: [3, 5]}  # every combination of these values is a setting
    arms:                              # optional: heterogeneous settings, each with its own overrides and grid
      - {name: resnet20, set: {model.name: resnet20}}
    seeds: [0, 1, 2]                   # every setting runs once per seed
    quick: {set: {schedule.epochs: 1}, seeds: [0]}   # what `--quick` changes

The points are arms x grid x seeds (no arms: one unnamed arm). A point's settings are applied in this order:
recipe <- ``set`` <- the arm's ``set`` <- its grid values <- ``quick.set`` (with --quick) <- ``run.seed``; the
runner then sets the run directory. Every point is validated (:meth:`TrainConfig.validate`) when the spec is
expanded, so a bad point fails with one line naming it before anything runs.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from ..training.config import TrainConfig, base_source, load_config, parse_assignment, set_value

# Grid keys in point ids: these get a short prefix (or none), in this order; any other key follows, sorted.
SHORT_KEYS = {"model.name": "", "model.dim": "h", "model.depth": "d", "model.kernel_size": "k",
              "model.patch_size": "p", "model.act": ""}
RESERVED_KEYS = ("run.out_dir", "run.name", "run.seed")  # the sweep sets these itself
# Settings that do not change what a run computes; left out of a point's fingerprint.
VOLATILE_KEYS = ("run.out_dir", "run.name", "run.progress", "run.tensorboard", "run.checkpoint_minutes",
                 "run.device")
# Settings added after sweeps were first recorded: left out of the fingerprint while at their default, so that
# the points a sweep finished before they existed still count as done.
LATER_DEFAULTS = {"schedule.resize_from": 0, "schedule.resize_until": 0.5, "optim.lookahead_k": 0, "optim.lookahead_alpha": 0.5,
                  "model.stem_kernel": None, "optim.muon": False, "optim.muon_momentum": 0.95, "optim.muon_lr_scale": 1.0,
                  "optim.muon_all_convs": False, "run.ema_bn_images": 0}
TOP_LEVEL = ("name", "description", "base", "set", "grid", "arms", "seeds", "quick")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Arm:
    """A named group of settings with its own overrides and grid (e.g. one baseline)."""

    name: str | None
    set: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list] = field(default_factory=dict)


@dataclass
class Point:
    """One training run of a sweep."""

    id: str  # stable and readable: "<arm>-<grid values>-s<seed>", e.g. "small-p2-s0"
    setting: str  # the id without the seed: the runs a results row averages over
    arm: str | None
    values: dict[str, Any]  # the grid values of this point, by dotted key
    seed: int
    cfg: TrainConfig  # resolved and validated
    index: int  # position in the spec's order

    @property
    def fingerprint(self) -> str:
        return config_fingerprint(self.cfg)


@dataclass
class SweepSpec:
    name: str
    base: str
    set: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list] = field(default_factory=dict)
    arms: list[Arm] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    quick_set: dict[str, Any] = field(default_factory=dict)
    quick_seeds: list[int] | None = None
    description: str = ""
    path: Path | None = None

    def arm_list(self) -> list[Arm]:
        """The arms with the spec's grid merged in (an arm's own grid lists replace the spec's for a key)."""
        arms = self.arms or [Arm(None)]
        return [Arm(a.name, a.set, {**self.grid, **a.grid}) for a in arms]

    def swept_keys(self) -> list[str]:
        """Every grid key of any arm, in id order."""
        return _key_order({k for arm in self.arm_list() for k in arm.grid})

    def run_name(self, quick: bool) -> str:
        """The sweep's folder under --out: the quick form never shares runs with the full one."""
        return f"{self.name}-quick" if quick else self.name

    def points(self, quick: bool = False, out_dir: str | Path | None = None, device: str | None = None) -> list[Point]:
        """Expand and validate every point. ``out_dir`` is the sweep's folder (each run goes to out_dir/<id>)."""
        seeds = (self.quick_seeds or self.seeds) if quick else self.seeds
        points: list[Point] = []
        seen: dict[str, str] = {}
        for arm in self.arm_list():
            keys = _key_order(arm.grid)
            for combo in itertools.product(*(arm.grid[k] for k in keys)):
                values = dict(zip(keys, combo))
                setting = setting_id(arm.name, values)
                for seed in seeds:
                    pid = f"{setting}-s{seed}"
                    where = f"{arm.name + ' ' if arm.name else ''}{_describe(values)}seed {seed}"
                    if pid in seen:
                        raise ConfigError(f"two points of sweep {self.name!r} get the id {pid!r} ({seen[pid]} and "
                                          f"{where}); give the arms distinct names or the grid distinct values")
                    seen[pid] = where
                    cfg = self._resolve(arm, values, seed, quick, pid, out_dir, device)
                    points.append(Point(pid, setting, arm.name, values, seed, cfg, len(points)))
        return points

    def _resolve(self, arm: Arm, values: dict[str, Any], seed: int, quick: bool, pid: str,
                 out_dir: str | Path | None, device: str | None) -> TrainConfig:
        try:
            cfg = load_config(self._base_source())
            for key, value in [*self.set.items(), *arm.set.items(), *values.items(),
                               *(self.quick_set.items() if quick else ())]:
                set_value(cfg, key, value)
            set_value(cfg, "run.seed", seed)
            set_value(cfg, "run.progress", False)  # one line per epoch; the sweep shows the bar over points
            if out_dir is not None:
                set_value(cfg, "run.out_dir", str(out_dir))
                set_value(cfg, "run.name", pid)
            if device is not None:
                set_value(cfg, "run.device", device)
            cfg.validate()
        except ConfigError as e:
            raise ConfigError(f"sweep {self.name!r}, point {pid}: {e}") from None
        return cfg

    def _base_source(self) -> str:
        return base_source(self.base, self.path.parent if self.path is not None else None)


def setting_id(arm: str | None, values: dict[str, Any]) -> str:
    """``"small-p2"``: the arm's name and the grid values, each with a short key prefix."""
    last = [k.rsplit(".", 1)[-1] for k in values]
    parts = [arm] if arm else []
    for key in _key_order(values):
        value = _fmt(values[key])
        if key in SHORT_KEYS:
            parts.append(f"{SHORT_KEYS[key]}{value}")
        else:
            tail = key.rsplit(".", 1)[-1]
            name = tail if last.count(tail) == 1 else key.replace(".", "_")
            parts.append(f"{name}_{value}")
    return "-".join(parts) or "base"


def config_fingerprint(cfg: TrainConfig) -> str:
    """A digest of everything that decides what a run computes (not where it writes or how it logs)."""
    tree = cfg.to_dict()
    for key in VOLATILE_KEYS:
        section, name = key.split(".")
        tree[section].pop(name, None)
    for key, default in LATER_DEFAULTS.items():
        section, name = key.split(".")
        if tree[section].get(name) == default:
            tree[section].pop(name)
    return hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()[:16]


def load_spec(path: str | Path) -> SweepSpec:
    """Read and check a spec file (structure only; :meth:`SweepSpec.points` validates every point)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep spec not found: {path}")
    try:
        tree = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    return spec_from_dict(tree, path)


def spec_from_dict(tree: Any, path: Path | None = None) -> SweepSpec:
    where = str(path) if path else "sweep spec"
    if not isinstance(tree, dict):
        raise ConfigError(f"{where} must be a mapping with at least `base` and `grid` or `arms`")
    _check_keys(tree, TOP_LEVEL, where)
    name = str(tree.get("name") or (path.stem if path else ""))
    if not _NAME.match(name):
        raise ConfigError(f"{where}: name {name!r} must be letters, digits, '_', '.' or '-' (it names a folder)")
    base = tree.get("base", "fmnist")
    if not isinstance(base, str):
        raise ConfigError(f"{where}: base must be a recipe name or a path, got {base!r}")
    arms = []
    for i, raw in enumerate(tree.get("arms") or []):
        if not isinstance(raw, dict) or "name" not in raw:
            raise ConfigError(f"{where}: arms[{i}] must be a mapping with a name (and set, grid)")
        _check_keys(raw, ("name", "set", "grid"), f"{where}: arm {raw['name']!r}")
        arm_name = str(raw["name"])
        if not _NAME.match(arm_name):
            raise ConfigError(f"{where}: arm name {arm_name!r} must be letters, digits, '_', '.' or '-'")
        arms.append(Arm(arm_name, _overrides(raw.get("set"), f"{where}: arm {arm_name} set"),
                        _grid(raw.get("grid"), f"{where}: arm {arm_name} grid")))
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: arm names must be unique, got {names}")
    quick = tree.get("quick") or {}
    if not isinstance(quick, dict):
        raise ConfigError(f"{where}: quick must be a mapping with set and/or seeds")
    _check_keys(quick, ("set", "seeds"), f"{where}: quick")
    spec = SweepSpec(
        name=name, base=base, set=_overrides(tree.get("set"), f"{where}: set"),
        grid=_grid(tree.get("grid"), f"{where}: grid"), arms=arms,
        seeds=_seeds(tree.get("seeds", [0]), f"{where}: seeds"),
        quick_set=_overrides(quick.get("set"), f"{where}: quick.set"),
        quick_seeds=_seeds(quick["seeds"], f"{where}: quick.seeds") if "seeds" in quick else None,
        description=str(tree.get("description") or "").strip(), path=path)
    _check_conflicts(spec, where)
    return spec


# ----------------------------------------------------------------------------------------------------------------
def _check_keys(tree: dict, allowed: tuple[str, ...], where: str) -> None:
    for key in tree:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"; did you mean {close[0]}?" if close else f"; expected {', '.join(allowed)}"
            raise ConfigError(f"{where}: unknown field {key!r}{hint}")


def _overrides(raw: Any, where: str) -> dict[str, Any]:
    """A mapping of dotted keys, or a list of "key=value" strings (YAML-parsed like --set)."""
    if raw is None:
        return {}
    if isinstance(raw, list):
        pairs = [parse_assignment(str(item)) for item in raw]
    elif isinstance(raw, dict):
        pairs = [(str(k), v) for k, v in raw.items()]
    else:
        raise ConfigError(f"{where} must be a mapping of dotted keys or a list of key=value, got {raw!r}")
    out = dict(pairs)
    for key in out:
        if key in RESERVED_KEYS:
            raise ConfigError(f"{where}: {key} is set by the sweep itself (use `seeds:` for seeds, --out for the "
                              f"folder)")
        _check_setting(key, where)
    return out


def _grid(raw: Any, where: str) -> dict[str, list]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping of dotted keys to lists of values, got {raw!r}")
    grid = {}
    for key, values in raw.items():
        key = str(key)
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: {key} must be a non-empty list of values, got {values!r}")
        if key in RESERVED_KEYS:
            raise ConfigError(f"{where}: {key} is set by the sweep itself (use `seeds:` for seeds)")
        if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
            raise ConfigError(f"{where}: {key} lists a value twice: {values}")
        _check_setting(key, where)
        grid[key] = list(values)
    return grid


def _check_setting(key: str, where: str) -> None:
    """An unknown key fails here, with close matches, rather than at the first point."""
    try:
        node: Any = TrainConfig()
        for part in key.split("."):
            if not hasattr(node, "__dataclass_fields__") or part not in node.__dataclass_fields__:
                raise KeyError(part)
            node = getattr(node, part)
    except KeyError:
        try:
            set_value(TrainConfig(), key, None)  # for its message with close matches
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        raise ConfigError(f"{where}: unknown setting {key!r}") from None


def _seeds(raw: Any, where: str) -> list[int]:
    if not isinstance(raw, list) or not raw or not all(isinstance(s, int) and not isinstance(s, bool) for s in raw):
        raise ConfigError(f"{where} must be a non-empty list of integers, got {raw!r}")
    if len(set(raw)) != len(raw):
        raise ConfigError(f"{where} lists a seed twice: {raw}")
    return list(raw)


def _check_conflicts(spec: SweepSpec, where: str) -> None:
    for arm in spec.arm_list():
        for key in arm.set:
            if key in arm.grid:
                raise ConfigError(f"{where}: arm {arm.name} sets {key}, which its grid also sweeps; keep one of them")
    swept = set(spec.swept_keys())
    for key in spec.quick_set:
        if key in swept:
            raise ConfigError(f"{where}: quick.set changes {key}, which the grid sweeps; the quick form may only "
                              f"shorten runs (epochs, subsets)")


def _key_order(keys) -> list[str]:
    keys = list(keys)
    known = [k for k in SHORT_KEYS if k in keys]
    return known + sorted(k for k in keys if k not in SHORT_KEYS)


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "none"
    elif isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, (list, tuple)):
        text = "x".join(_fmt(v) for v in value)
    else:
        text = str(value)
    return re.sub(r"[^A-Za-z0-9_.]", "_", text)


def _describe(values: dict[str, Any]) -> str:
    return "".join(f"{k}={v}, " for k, v in values.items())
