"""The commands the README and docs/ show still work with today's code: every ``convmixer ...`` line of their code
blocks parses with the CLI, every ``convmixer train`` of them resolves to a valid config (recipe, flags, ``--set``),
and every ``bench_tta.py --recipe "LABEL: CONFIG KEY=VALUE ..."`` names a recipe and settings that exist.

Nothing runs: parsing and config validation only. Placeholders (``CHECKPOINT``, ``<run>``, ``...``) are skipped; so
are data roots that exist only on a user's machine (``/data/imagenet``)."""

from __future__ import annotations

import functools
import importlib.util
import re
import shlex
from pathlib import Path

import pytest

from convmixer.cli import build_parser
from convmixer.cli.train_cmd import resolve
from convmixer.errors import ConfigError
from convmixer.training.config import load_config

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def code_lines(text: str) -> list[str]:
    """The lines of fenced (```) and indented (4 spaces) code blocks, shell continuations joined, comments cut."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, re.S) + re.findall(r"(?:^|\n)((?:    .*\n)+)", text)
    lines = []
    for block in blocks:
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = re.sub(r"(^|\s)#.*", "", line).strip()
            if line:
                lines.append(line)
    return lines


def is_placeholder(word: str) -> bool:
    return ("..." in word or "<" in word or "[" in word or "$" in word
            or bool(re.fullmatch(r"[A-Z][A-Z_0-9]*", word)) or bool(re.search(r"=[A-Z][A-Z_0-9]*$", word)))


def documented(pattern: str) -> list[tuple[str, list[str]]]:
    """(file name, argv after the match) for each code line of the docs matching ``pattern``, placeholders out."""
    found, seen = [], set()
    for path in DOCS:
        for line in code_lines(path.read_text()):
            m = re.search(pattern, line)
            if not m:
                continue
            try:
                argv = shlex.split(re.split(r"\s[|;&>]|\s&&\s", m.group(1))[0])
            except ValueError:
                continue
            if any(is_placeholder(w) for w in argv) or (path.name, tuple(argv)) in seen:
                continue
            seen.add((path.name, tuple(argv)))
            found.append((path.name, argv))
    return found


@functools.cache
def parser():
    """The CLI's parser, built once (parsing does not change it)."""
    return build_parser()


@functools.cache
def parse_recipe():
    """benchmarks/bench_tta.py's own parser of ``--recipe`` (a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("bench_tta", ROOT / "benchmarks" / "bench_tta.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.parse_recipe


CLI_COMMANDS = documented(r"(?:^|[\s/])convmixer\s+([a-z].*)")
TTA_RECIPES = sorted({(name, r) for name, argv in documented(r"bench_tta\.py\s+(.*)")
                      for flag, r in zip(argv, argv[1:]) if flag == "--recipe"})


def test_the_docs_show_commands():
    """The extraction finds what it is meant to check (a regression guard on the patterns above)."""
    assert sum(argv[0] == "train" for _, argv in CLI_COMMANDS) >= 10
    assert len({argv[0] for _, argv in CLI_COMMANDS}) >= 6
    assert len(TTA_RECIPES) >= 10


@pytest.mark.parametrize("doc,argv", CLI_COMMANDS, ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_documented_command_parses(doc, argv):
    try:
        args = parser().parse_args(argv)
    except SystemExit as e:
        pytest.fail(f"{doc}: `convmixer {' '.join(argv)}` does not parse (exit {e.code})")
    if argv[0] == "train" and not args.resume:
        cfg = resolve(args)
        try:
            cfg.validate()
        except ConfigError as e:
            if "data.root" not in str(e):  # a dataset only the user has
                pytest.fail(f"{doc}: `convmixer {' '.join(argv)}`: {e}")


@pytest.mark.parametrize("doc,recipe", TTA_RECIPES, ids=lambda v: v)
def test_documented_tta_recipe_resolves(doc, recipe):
    try:
        r = parse_recipe()(recipe)
    except SystemExit as e:
        pytest.fail(f"{doc}: {e}")
    load_config(r["config"], r["overrides"]).validate()
