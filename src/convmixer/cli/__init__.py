"""The ``convmixer`` command line.

Each subcommand lives in its own module exposing ``register(subparsers)``; the module imports torch and
friends only when the command runs, so ``convmixer --help`` is instant. User errors
(:class:`~convmixer.errors.ConvMixerError`, bad arguments, and any OSError: missing or unreadable files, a full
disk) print one line on stderr and exit with code 2; a traceback means a bug. The project's own warnings
(:class:`~convmixer.errors.ConvMixerWarning`) print as one line each, ``convmixer: warning: ...``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

# Modules under convmixer.cli that define subcommands, in the order `--help` lists them.
COMMAND_MODULES = ("train_cmd", "eval_cmd", "predict_cmd", "models_cmd", "data_cmd", "bench_cmd", "sweep_cmd",
                   "export_cmd", "serve_cmd")


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


def _one_line_warnings(previous):
    """A ``warnings.showwarning`` that prints the project's own warnings (:class:`ConvMixerWarning`) as one line each,
    without Python's source line, and hands any other to ``previous``."""
    from ..errors import ConvMixerWarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if not issubclass(category, ConvMixerWarning):
            return previous(message, category, filename, lineno, file, line)
        from tqdm import tqdm

        text = " ".join(str(message).split("\n")).strip()
        try:  # tqdm.write: above a progress bar, not into it
            tqdm.write(f"convmixer: warning: {text}", file=file or sys.stderr)
        except OSError:  # as with Python's own: showing a warning never raises
            pass

    return show


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..errors import ConvMixerError, os_error_message
    from ..fast.allocator import tune_malloc

    tune_malloc()  # page faults of freed-and-refetched temporaries cost a quarter of a CPU training step

    try:
        with warnings.catch_warnings():  # restores warnings.showwarning afterwards (main may run inside a program)
            warnings.showwarning = _one_line_warnings(warnings.showwarning)
            return int(args.func(args) or 0)
    except ConvMixerError as e:
        return fail(str(e))
    except KeyboardInterrupt:
        print("convmixer: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `convmixer list | head`
        return 0
    except OSError as e:  # a full disk, a read-only file system, a missing or unreadable file, ...
        return fail(os_error_message(e))
