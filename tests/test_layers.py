"""No import runs back up the layers: checked by parsing (ast) every ``import`` under src/convmixer, including the
ones inside functions, so nothing is imported to run it.

A *unit* is a top-level module or package of ``convmixer`` (``models``, ``checkpoint.py``, ``cli``, ...), the
package itself (``convmixer``: its ``__init__.py``, the public facade) and ``data.registry`` (a pure facts module
that ``models`` may read while the rest of ``data`` sits beside ``models``). Imports inside one unit are free.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "convmixer"

# The layers, bottom first. A unit may import only units of strictly lower layers, and of those only the ones
# ALLOWED lists for it. To add a unit, place it here and list what it imports below.
LAYERS: list[tuple[str, ...]] = [
    ("errors",),  # ConvMixerError and subclasses; imports nothing of ours
    ("io",),  # atomic_write, cache_dir
    ("data.registry",),  # facts about the datasets (shapes, sizes, classes): plain data, no torch
    ("models", "checkpoint", "profile", "data"),  # architectures + registry; weights files; costs; datasets
    ("factory", "fast"),  # registry + weights -> models (create_model, build_model); the fast execution path
    ("convmixer", "inference", "training"),  # the package facade; loading for inference; training
    ("export",),  # ONNX / TorchScript, the folded inference model
    ("bench", "serve"),  # `convmixer bench`: measures the fast path and the exports; `convmixer serve`: HTTP
    ("experiments",),  # sweeps over training runs
    ("cli",),  # one module per subcommand
    ("__main__",),  # python -m convmixer
]

# The bottom layers are the foundation: every unit above them may import them.
FOUNDATION = {"errors", "io", "data.registry"}

# What each unit imports besides FOUNDATION (what the code does; every entry must sit in a lower layer).
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "io": set(),
    "data.registry": set(),
    "models": set(),
    "checkpoint": set(),
    "profile": set(),
    "data": set(),
    "factory": {"models", "checkpoint"},
    "fast": {"models"},
    "convmixer": {"models", "checkpoint", "factory"},
    "inference": {"models", "checkpoint", "data", "factory"},
    "training": {"models", "checkpoint", "data", "factory", "fast"},
    "export": {"convmixer", "models", "fast", "inference"},  # convmixer: __version__ for the export metadata
    "bench": {"models", "checkpoint", "factory", "fast", "export"},
    "serve": {"models", "data", "inference", "training", "export"},  # training: the task's top-k (what predict prints)
    # fast: the time-to-accuracy runner's entry point tunes the allocator as the CLI does (fast.allocator)
    "experiments": {"models", "data", "profile", "factory", "fast", "training", "bench"},
    "cli": {"models", "data", "profile", "factory", "fast", "inference", "training", "export", "bench", "serve",
            "experiments"},
    "__main__": {"cli"},
}

SUBUNITS = ("data.registry",)  # modules inside a package that are units of their own


def layer_of(unit: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if unit in layer)


def unit_of(parts: list[str]) -> str:
    """The unit of module ``convmixer.<parts>`` (``parts`` without the leading "convmixer")."""
    if not parts or parts == ["__init__"]:
        return "convmixer"
    dotted = ".".join(parts)
    for sub in SUBUNITS:
        if dotted == sub or dotted.startswith(sub + "."):
            return sub
    return parts[0]


def module_parts(path: Path) -> list[str]:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def is_module(parts: list[str]) -> bool:
    """A module or a package (a namespace package too: a directory of modules without an ``__init__.py``)."""
    base = SRC.joinpath(*parts)
    return (bool(parts) and base.with_suffix(".py").is_file()) or base.is_dir()


def where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


def convmixer_imports(path: Path) -> list[tuple[ast.stmt, list[str], list[str]]]:
    """``(node, module, names)`` for every import of a convmixer module in ``path``: ``module`` is its dotted path below
    ``convmixer`` as a list (``[]``: the package itself), ``names`` what a ``from`` import takes from it. Relative
    imports are resolved for files under src/convmixer only."""
    in_src = path.is_relative_to(SRC)
    own = module_parts(path) if in_src else []
    package = own if path.name == "__init__.py" else own[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node, n[1:], []) for n in (a.name.split(".") for a in node.names) if n[0] == "convmixer"]
        elif isinstance(node, ast.ImportFrom):
            if node.level and in_src:
                module = package[:len(package) - node.level + 1] + (node.module.split(".") if node.module else [])
            elif not node.level and node.module and node.module.split(".")[0] == "convmixer":
                module = node.module.split(".")[1:]
            else:
                continue
            found.append((node, module, [a.name for a in node.names]))
    return found


def imported_modules(path: Path) -> list[tuple[int, list[str], str]]:
    """``(line, module parts below convmixer, source text)`` for every convmixer module ``path`` imports, once per
    line and module. ``from . import ops`` imports the submodule ``ops``; ``from .. import __version__`` the package."""
    text = path.read_text()
    found = []
    for node, module, names in convmixer_imports(path):
        source = " ".join((ast.get_source_segment(text, node) or "").split())
        for target in [module + [n] if is_module(module + [n]) else module for n in names] or [module]:
            if (node.lineno, target) not in [(line, m) for line, m, _ in found]:
                found.append((node.lineno, target, source))
    return found


def top_level_names(path: Path) -> set[str] | None:
    """The names a module binds at top level (None when it cannot be told statically: ``import *``, ``__getattr__``)."""
    names: set[str] = set()
    body = list(ast.parse(path.read_text(), str(path)).body)
    while body:
        node = body.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name == "*":
                    return None
                names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            body += [*node.body, *getattr(node, "orelse", []), *getattr(node, "finalbody", []),
                     *(s for h in getattr(node, "handlers", []) for s in h.body)]
    return None if "__getattr__" in names else names


def sources() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_layers_and_allowed_lists_agree():
    units = [u for layer in LAYERS for u in layer]
    assert len(units) == len(set(units)), "a unit is in two layers"
    assert set(ALLOWED) == set(units)
    upward = [f"{u} -> {d}" for u, deps in ALLOWED.items() for d in deps if layer_of(d) >= layer_of(u)]
    assert not upward, "ALLOWED lets a unit import one of its own layer or above: " + ", ".join(upward)
    unplaced = sorted({unit_of(module_parts(p)) for p in sources()} - set(units))
    assert not unplaced, f"place these in LAYERS and ALLOWED: {unplaced}"


def test_no_import_runs_up_the_layers():
    offending = []
    for path in sources():
        unit = unit_of(module_parts(path))
        if unit not in ALLOWED:
            continue  # reported by test_layers_and_allowed_lists_agree
        allowed = ALLOWED[unit] | {unit} | {f for f in FOUNDATION if layer_of(f) < layer_of(unit)}
        for line, target, source in imported_modules(path):
            dep = unit_of(target)
            if dep not in allowed:
                offending.append(f"{where(path, line)}: {unit} imports {dep} ({source}); "
                                 f"{unit} may import {', '.join(sorted(allowed - {unit})) or 'nothing of ours'}")
    assert not offending, "imports that run up the layers:\n" + "\n".join(offending)


def test_checkpoint_and_models_do_not_know_each_other():
    """The cycle this layering removed: the registry loading weights, checkpoint building registered models."""
    for path in [SRC / "checkpoint.py", *sorted((SRC / "models").rglob("*.py"))]:
        other = "models" if path.name == "checkpoint.py" else "checkpoint"
        bad = [f"{where(path, line)}: {src}" for line, t, src in imported_modules(path)
               if unit_of(t) in (other, "factory")]
        assert not bad, "\n".join(bad)


def test_imported_names_exist():
    """Every ``from convmixer... import name`` names something the module defines (imports inside functions run only
    when called, so a moved name would otherwise surface only then)."""
    missing = []
    for path in [*sources(), *sorted((ROOT / "tests").rglob("*.py")), *sorted((ROOT / "benchmarks").rglob("*.py"))]:
        for node, module, names in convmixer_imports(path):
            dotted = ".".join(["convmixer", *module])
            if not is_module(module):
                missing.append(f"{where(path, node.lineno)}: no module {dotted}")
                continue
            base = SRC.joinpath(*module)
            init = base / "__init__.py"
            # a namespace package (no __init__.py) holds only its submodules
            defined = top_level_names(init) if init.is_file() else set() if base.is_dir() else top_level_names(
                base.with_suffix(".py"))
            for name in names:
                if defined is not None and name not in defined and not is_module(module + [name]):
                    missing.append(f"{where(path, node.lineno)}: {dotted} has no {name!r}")
    assert not missing, "imports of names that do not exist:\n" + "\n".join(missing)
