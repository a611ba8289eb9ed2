"""``convmixer sweep SPEC.yaml``: a grid of training runs (settings x baselines x seeds), resumable and shareable
between worker processes and machines, then a results table and plots.

    convmixer sweep configs/sweeps/kernel.yaml --dry-run        # the points, their cost and the estimated time
    convmixer sweep kernel --quick                              # the smoke form, a few minutes (a name finds configs/sweeps)
    convmixer sweep kernel --workers 2                          # two worker processes on this machine
    convmixer sweep kernel --storage postgresql://u:p@db/sweeps # the same command on every machine
    convmixer sweep kernel --report-only                        # results.csv, results.md and plots from what exists

docs/experiments.md describes the spec format and the outputs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from pathlib import Path

DEFAULT_OUT = "runs/sweeps"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="run a grid of training runs over settings, baselines and seeds; tabulate them",
                       description="Run every point of a sweep spec (arms x grid x seeds) in its own run directory "
                                   "under OUT/<sweep>/, skipping finished runs and resuming interrupted ones, then "
                                   "write results.csv, results.md and plots there. Workers on this machine "
                                   "(--workers) or on others (the same --storage URL) share the points; each point "
                                   "runs once.")
    p.add_argument("spec", help="sweep spec: a YAML path, or the name of one shipped in configs/sweeps "
                                "(an unknown name lists them)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"parent folder of the sweep folders (default: {DEFAULT_OUT})")
    p.add_argument("--storage", metavar="URL", help="Optuna RDB storage (default: sqlite:///OUT/<sweep>/sweep.db); "
                                                    "a postgresql:// or mysql:// URL shares the sweep between machines")
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine (default: 1)")
    p.add_argument("--threads", type=int, help="torch threads per worker (default: all cores, split between workers)")
    p.add_argument("--quick", action="store_true", help="the spec's quick form (short runs, own folder): a smoke test")
    p.add_argument("--dry-run", action="store_true",
                   help="list the points, their cost and the estimated time; run nothing")
    p.add_argument("--report-only", action="store_true",
                   help="only write the results table and plots from the finished runs")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N for every run (default: the recipe's)")
    p.add_argument("--no-throughput", action="store_true", help="do not measure speed (no images/s columns or plot)")
    p.add_argument("--heartbeat", type=int, default=30, metavar="SECONDS",
                   help="how often a worker signals it is alive; a point whose worker is silent for 6 beats is "
                        "given to another worker, which resumes it (default: 30)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one worker process, no report
    p.set_defaults(func=run)


def find_spec(text: str) -> Path:
    """A path, or the name of a spec shipped in configs/sweeps/."""
    from ..errors import ConfigError
    from ..training.config import recipe_dirs

    path = Path(text)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"sweep spec not found: {path}")
        return path
    for directory in recipe_dirs():
        candidate = directory / "sweeps" / f"{text}.yaml"
        if candidate.is_file():
            return candidate
    shipped = sorted({p.stem for d in recipe_dirs() for p in (d / "sweeps").glob("*.yaml")})
    raise ConfigError(f"no sweep spec file or shipped sweep named {text!r}; shipped: {', '.join(shipped) or 'none'}")


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError

    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    if args.heartbeat < 1:
        raise ConfigError(f"--heartbeat must be >= 1 second, got {args.heartbeat}")
    if sum([args.dry_run, args.report_only, args.worker]) > 1:
        raise ConfigError("choose one of --dry-run, --report-only and --worker")

    import torch

    from ..experiments import sweep as sw
    from ..experiments.spec import load_spec

    spec_path = find_spec(args.spec)
    spec = load_spec(spec_path)
    sweep_dir = Path(args.out) / spec.run_name(args.quick)
    threads = args.threads
    if threads is None and args.workers > 1:
        threads = max(1, _cores() // args.workers)
    if threads is not None:  # the workers' threads; the report measures speed with them too
        torch.set_num_threads(threads)
    points = spec.points(args.quick, out_dir=sweep_dir, device=args.device)  # every point validated here
    states = sw.check_run_dirs(points, sweep_dir)  # a run directory of other settings fails here
    if args.dry_run:
        return _dry_run(args, spec, points, states, sweep_dir)
    sweep = sw.Sweep(spec, points, sweep_dir, storage=args.storage, quick=args.quick, heartbeat=args.heartbeat)
    try:
        if args.report_only:
            return _report(args, spec, points, sweep, stored=sweep.stored_summaries())
        if args.worker:
            result = sweep.work()
            return _signal_code(result.interrupted)
        return _run(args, spec, points, sweep, spec_path, threads)
    finally:
        sweep.close()


def _run(args, spec, points, sweep, spec_path, threads) -> int:
    from tqdm.auto import tqdm

    from ..errors import ConvMixerError
    from ..experiments import sweep as sw

    sweep.open()
    where = sweep.safe_url
    print(f"sweep {spec.name}{' (quick)' if args.quick else ''}: {len(points)} runs in {sweep.sweep_dir}; "
          f"storage {where}, study {sweep.study_name}", flush=True)
    bar = tqdm(total=len(points), desc=f"sweep {spec.run_name(args.quick)}", unit="run", dynamic_ncols=True,
               disable=None)  # no bar when the output is not a terminal (logs)

    def progress(states) -> None:
        bar.n = sum(1 for s in states.values() if s.done)
        bar.refresh()

    interrupted = None
    try:
        if args.workers > 1:
            import torch

            devices: list[str | None] = [args.device]
            if args.device in (None, "auto", "cuda") and torch.cuda.is_available() and torch.cuda.device_count() > 1:
                devices = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
            argv = ["sweep", str(spec_path), "--out", str(args.out), "--storage", sweep.storage_url,
                    "--heartbeat", str(args.heartbeat), *(["--quick"] if args.quick else [])]
            procs = sw.spawn_workers(argv, args.workers, sweep.sweep_dir / "logs", threads, devices)
            print(f"{args.workers} workers ({threads} thread{'s' if threads != 1 else ''} each) log to "
                  f"{sweep.sweep_dir / 'logs'}/worker-*.log", flush=True)
            codes = sw.wait_workers(procs, lambda: progress(sweep.states()))
            for (proc, log), code in zip(procs, codes):
                if code in (130, 143):
                    interrupted = interrupted or ("SIGINT" if code == 130 else "SIGTERM")
                elif code != 0:
                    tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.is_file() else []
                    print(f"worker {proc.pid} exited with code {code}: {tail[0] if tail else ''} (see {log})",
                          flush=True)
        else:
            with contextlib.redirect_stdout(_AboveBar(sys.stdout)):  # the runs' epoch lines print above the bar
                interrupted = sweep.work(on_progress=progress).interrupted
    finally:
        bar.close()
    if interrupted:
        print(f"sweep interrupted ({interrupted}); run the same command again to continue", flush=True)
        return _signal_code(interrupted)
    states = sweep.states()
    code = _report(args, spec, points, sweep,
                   stored={pid: s.summary for pid, s in states.items() if s.done and s.summary})
    failed = {pid: s.error or "did not finish" for pid, s in states.items() if not s.done}
    if failed:
        first = next(iter(failed.items()))
        raise ConvMixerError(f"{len(failed)} of {len(points)} runs did not finish ({first[0]}: {first[1]}); fix the "
                             f"cause and run the same command again: finished runs are kept")
    return code


def _report(args, spec, points, sweep, stored) -> int:
    from ..experiments.report import make_report

    report = make_report(spec, points, sweep.sweep_dir, stored=stored, quick=args.quick,
                         throughput=not args.no_throughput, command=_command(args, sweep))
    print(report.markdown, end="")
    print(f"wrote {', '.join(str(f) for f in report.files)}", flush=True)
    return 0


def _dry_run(args, spec, points, states, sweep_dir) -> int:
    import torch

    from ..experiments.costs import ArchCache
    from ..experiments.report import plan_table

    settings = len({p.setting for p in points})
    seeds = len(points) // max(settings, 1)
    print(f"sweep {spec.name}{' (quick)' if args.quick else ''}: {settings} settings x {seeds} seeds = {len(points)} "
          f"runs in {sweep_dir}", flush=True)
    n = torch.get_num_threads()
    if not args.no_throughput:
        print(f"timing a few training steps of each architecture with {n} torch thread{'s' if n != 1 else ''} "
              f"(what each of {args.workers} worker{'s' if args.workers != 1 else ''} would use) ...", flush=True)
    cache = ArchCache(sweep_dir / "architectures.json" if sweep_dir.is_dir() else None)
    print(plan_table(points, states, cache, args.workers, measure=not args.no_throughput, log=lambda m: None), end="")
    return 0


def _command(args, sweep) -> str:
    parts = ["convmixer", "sweep", args.spec]
    if args.out != DEFAULT_OUT:
        parts += ["--out", str(args.out)]
    if args.storage:
        parts += ["--storage", sweep.safe_url]
    for flag, value in (("--workers", args.workers if args.workers > 1 else None), ("--device", args.device)):
        if value is not None:
            parts += [flag, str(value)]
    if args.quick:
        parts.append("--quick")
    return " ".join(parts)


class _AboveBar(io.TextIOBase):
    """A stdout that prints whole lines with ``tqdm.write``, so they land above the progress bar."""

    def __init__(self, stream) -> None:
        self.stream, self.pending = stream, ""

    def write(self, text: str) -> int:
        from tqdm.auto import tqdm

        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            tqdm.write(line, file=self.stream)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def _signal_code(name: str | None) -> int:
    return {None: 0, "SIGINT": 130}.get(name, 143)
