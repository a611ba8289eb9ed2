"""The ``convmixer`` command line.

Each subcommand lives in its own module exposing ``register(subparsers)``; the module imports torch and
friends only when the command runs, so ``convmixer --help`` is instant. User errors
(:class:`~convmixer.errors.ConvMixerError`, missing files, bad arguments) print one line on stderr and
exit with code 2; a traceback means a bug.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules under convmixer.cli that define subcommands, in the order `--help` lists them.
COMMAND_MODULES = ("train_cmd", "eval_cmd", "predict_cmd", "models_cmd", "data_cmd", "bench_cmd", "sweep_cmd",
                   "export_cmd")


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit code 2) instead of usage + message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog="convmixer", description="ConvMixer: train, evaluate, benchmark and deploy.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineErrorParser)
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def fail(message: str) -> int:
    print(f"convmixer: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..errors import ConvMixerError
    from ..fast.allocator import tune_malloc

    tune_malloc()  # page faults of freed-and-refetched temporaries cost a quarter of a CPU training step

    try:
        return int(args.func(args) or 0)
    except ConvMixerError as e:
        return fail(str(e))
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as e:
        return fail(f"{e.strerror}: {e.filename}" if e.filename else str(e))
    except KeyboardInterrupt:
        print("convmixer: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `convmixer list | head`
        return 0
