"""A sweep's results: one row per setting (its points averaged over seeds), as CSV, Markdown and plots.

    results.csv   every figure unrounded, one row per setting
    results.md    the same table, formatted, with what was run and how speed was measured
    acc_vs_kernel.png, acc_vs_patch.png, acc_vs_params.png, acc_vs_throughput.png
                  the sweep's metric (mean, error bars = std over seeds); each only where the sweep's axes vary it

The metric is the primary test figure of the task the sweep's dataset defines: test top-1 for classification,
test mIoU for segmentation (:func:`sweep_metric`).

Results come from the run directories (summary.json, checked against the point's settings) and, for runs
made on other machines that share the storage, from the trials' stored summaries. Parameters and MACs come
from :func:`convmixer.profile.profile_model` at the data's input size; train and inference images/s from
:func:`convmixer.experiments.throughput.measure_throughput`, once per distinct architecture (not per seed),
cached in the sweep folder's architectures.json.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..io import atomic_write
from .costs import ArchCache, arch_key, describe_model, duration, run_images
from .spec import Point, SweepSpec

PLOTS = {"kernel": "acc_vs_kernel.png", "patch": "acc_vs_patch.png", "params": "acc_vs_params.png",
         "throughput": "acc_vs_throughput.png"}


@dataclass(frozen=True)
class Metric:
    """The figure a sweep compares: the primary test metric of its task."""

    name: str  # "top1" | "miou": the CSV columns' prefix, summary.json's key without "test_"
    label: str  # "top-1" | "mIoU": for tables and plots

    @property
    def key(self) -> str:
        return f"test_{self.name}"


def sweep_metric(cfg) -> Metric:
    """The metric of the task ``cfg``'s dataset defines."""
    from ..training.tasks import task_for_config

    primary = task_for_config(cfg).primary
    return Metric(primary, {"top1": "top-1", "miou": "mIoU"}.get(primary, primary))


@dataclass
class Row:
    setting: str
    arm: str | None
    values: dict[str, Any]  # swept key -> value
    model: str  # e.g. "ConvMixer-128/8 k5 p2"
    kernel_size: int | None
    patch_size: int | None
    seeds: list[int]  # the spec's seeds for this setting
    scores: dict[int, float] = field(default_factory=dict)  # seed -> the sweep's metric (test top-1 or mIoU, %)
    wall: dict[int, float] = field(default_factory=dict)  # seed -> training wall time (s)
    params: int | None = None
    macs: int | None = None
    train_ips: float | None = None
    infer_ips: float | None = None
    speed_how: str | None = None  # where and how the speed was measured

    @property
    def n(self) -> int:
        return len(self.scores)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.scores.values()) if self.scores else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.scores.values()) if len(self.scores) > 1 else None

    @property
    def wall_mean(self) -> float | None:
        return statistics.fmean(self.wall.values()) if self.wall else None


@dataclass
class Report:
    markdown: str
    files: list[Path]
    rows: list[Row]


# ----------------------------------------------------------------------------------------------------------------
def collect(points: list[Point], sweep_dir: Path, stored: dict[str, dict[str, Any]] | None = None) -> dict[str, dict]:
    """point id -> summary, from the run directories, else from the storage (``stored``: id -> summary)."""
    from .sweep import local_state, read_summary

    found: dict[str, dict] = {}
    for p in points:
        summary = read_summary(p, sweep_dir) if local_state(p, sweep_dir) == "done" else None
        if summary is None and stored:
            summary = stored.get(p.id)
        if summary is not None and summary.get(sweep_metric(p.cfg).key) is not None:
            found[p.id] = summary
    return found


def build_rows(spec: SweepSpec, points: list[Point], summaries: dict[str, dict], cache: ArchCache, *,
               throughput: bool = True, log: Callable[[str], None] = print) -> list[Row]:
    """One row per setting with its results, its architecture's params and MACs and (optionally) its speed."""
    from ..models import model_kwargs

    rows: dict[str, Row] = {}
    for p in points:
        row = rows.get(p.setting)
        if row is None:
            kw = model_kwargs(p.cfg.model.name, **p.cfg.model.overrides())
            row = rows[p.setting] = Row(p.setting, p.arm, p.values, describe_model(p.cfg), kw.get("kernel_size"),
                                        kw.get("patch_size"), [])
            facts, key = cache.profile(p.cfg)
            row.params, row.macs = cache.get(key, "params"), cache.get(key, "macs")
            if throughput:
                row.train_ips, row.infer_ips = speed(p.cfg, facts, cache, log)
                measured = cache.data.get(_speed_key(p.cfg, facts), {})
                row.speed_how = _how(measured.get("device"), measured.get("threads"), measured.get("how"))
        row.seeds.append(p.seed)
        summary = summaries.get(p.id)
        if summary is not None:
            row.scores[p.seed] = float(summary[sweep_metric(p.cfg).key])
            if summary.get("wall_time_s") is not None:
                row.wall[p.seed] = float(summary["wall_time_s"])
    return list(rows.values())


def speed(cfg, facts, cache: ArchCache, log: Callable[[str], None], infer: bool = True,
          repeats: int = 10) -> tuple[float | None, float | None]:
    """(train, inference) images/s of ``cfg``'s architecture, measured once per architecture, device, thread count
    and execution settings, and cached; ``infer=False`` measures (and needs) only the training speed."""
    from .throughput import measure_throughput

    key = _speed_key(cfg, facts)
    if cache.get(key, "infer_images_per_s" if infer else "train_images_per_s") is None:
        log(f"measuring the speed of {describe_model(cfg)} ...")
        cache.put(key, **measure_throughput(cfg, facts, infer=infer, repeats=repeats).as_dict())
    return cache.get(key, "train_images_per_s"), cache.get(key, "infer_images_per_s")


def _speed_key(cfg, facts) -> str:
    """Speed depends on the architecture, the batch sizes, the execution settings, the device and the threads."""
    import torch

    return json.dumps({"arch": arch_key(cfg, facts), "batch": [cfg.data.batch_size, cfg.data.eval_batch_size],
                       "exec": [cfg.run.plain, cfg.run.amp, cfg.run.channels_last, cfg.run.compile],
                       "device": cfg.run.device, "threads": torch.get_num_threads()}, sort_keys=True)


def _how(device: str | None, threads: int | None, how: str | None) -> str | None:
    if device is None:
        return None
    return f"on {device}, {threads} thread{'s' if threads != 1 else ''}, with {how}"


def throughput_note(rows: list[Row]) -> str:
    hows = sorted({r.speed_how for r in rows if r.speed_how})
    if not hows:
        return ""
    return (f"Speed: images/s, measured once per architecture {'; '.join(hows)}. Train: forward, loss, backward "
            f"and AdamW step at the training batch size; inference: forward under inference_mode at the evaluation "
            f"batch size; random input, the execution plan training uses.")


# ----------------------------------------------------------------------------------------------------------------
def make_report(spec: SweepSpec, points: list[Point], sweep_dir: Path, *, stored: dict[str, dict] | None = None,
                quick: bool = False, throughput: bool = True, command: str | None = None,
                log: Callable[[str], None] = print) -> Report:
    """Collect, tabulate, plot and write results.csv, results.md and the plots into ``sweep_dir``."""
    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    summaries = collect(points, sweep_dir, stored)
    cache = ArchCache(sweep_dir / "architectures.json")
    rows = build_rows(spec, points, summaries, cache, throughput=throughput, log=log)
    keys = spec.swept_keys()
    metric = sweep_metric(points[0].cfg) if points else Metric("top1", "top-1")
    files = [sweep_dir / "results.csv", sweep_dir / "results.md"]
    with atomic_write(files[0], "w") as f:
        f.write(to_csv(rows, keys, spec, metric))
    plots = write_plots(spec, rows, keys, sweep_dir, quick, metric)
    files += plots
    markdown = to_markdown(spec, points, rows, keys, summaries, plots, quick, command, metric)
    with atomic_write(files[1], "w") as f:
        f.write(markdown)
    return Report(markdown, files, rows)


def _columns(spec: SweepSpec, keys: list[str]) -> list[tuple[str, Callable[[Row], Any]]]:
    """The arm (if any) and every swept key, named by its last part where that is unambiguous."""
    cols: list[tuple[str, Callable[[Row], Any]]] = []
    if spec.arms:
        cols.append(("arm", lambda r: r.arm))
    tails = [k.rsplit(".", 1)[-1] for k in keys]
    for key, tail in zip(keys, tails):
        cols.append((tail if tails.count(tail) == 1 else key, lambda r, k=key: r.values.get(k)))
    return cols


def to_csv(rows: list[Row], keys: list[str], spec: SweepSpec, metric: Metric = Metric("top1", "top-1")) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    cols = _columns(spec, keys)
    writer.writerow(["setting", "model", *(c for c, _ in cols), "params", "macs", "train_images_per_s",
                     "infer_images_per_s", f"{metric.name}_mean", f"{metric.name}_std", "n_seeds", "seeds",
                     f"{metric.name}_per_seed",
                     "wall_time_s_mean"])
    for r in rows:
        writer.writerow([r.setting, r.model, *(_plain(fn(r)) for _, fn in cols), _plain(r.params), _plain(r.macs),
                         _num(r.train_ips, 1), _num(r.infer_ips, 1), _num(r.mean, 4), _num(r.std, 4), r.n,
                         " ".join(map(str, sorted(r.scores))), " ".join(f"{r.scores[s]:.2f}" for s in sorted(r.scores)),
                         _num(r.wall_mean, 1)])
    return buf.getvalue()


def markdown_table(header: list[str], body: list[list[str]], right: set[int] = frozenset()) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join("---:" if i in right else "---" for i in range(len(header))) + " |"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in body]
    return "\n".join(lines)


def results_table(spec: SweepSpec, rows: list[Row], keys: list[str], metric: Metric = Metric("top1", "top-1")) -> str:
    cols = _columns(spec, keys)
    header = ["setting", "model", *(c for c, _ in cols), "params", "MACs", "train img/s", "infer img/s",
              f"{metric.label} (%)", "n", "wall/run"]
    body = []
    for r in rows:
        score = "—" if r.mean is None else f"{r.mean:.2f}" + (f" ± {r.std:.2f}" if r.std is not None else "")
        body.append([f"`{r.setting}`", r.model, *(_cell(fn(r)) for _, fn in cols), _count(r.params),
                     _macs(r.macs), _rate(r.train_ips), _rate(r.infer_ips), score, f"{r.n}/{len(r.seeds)}",
                     duration(r.wall_mean)])
    first = 2 + len(cols)
    return markdown_table(header, body, right=set(range(first, len(header))))


def to_markdown(spec: SweepSpec, points: list[Point], rows: list[Row], keys: list[str], summaries: dict[str, dict],
                plots: list[Path], quick: bool, command: str | None, metric: Metric = Metric("top1", "top-1")) -> str:
    cfg = points[0].cfg if points else None
    seeds = sorted({p.seed for p in points})
    out = [f"# Sweep `{spec.name}`{' (quick form)' if quick else ''}", ""]
    if spec.description:
        out += [spec.description, ""]
    if command:
        out += [f"Command: `{command}`", ""]
    done = sum(1 for p in points if p.id in summaries)
    facts = []
    if cfg is not None:
        train, evals = run_images(cfg)
        epochs = cfg.schedule.epochs
        facts.append(f"recipe `{spec.base}`, dataset {cfg.data.dataset}, {epochs} epoch{'s' if epochs != 1 else ''}"
                     + (f" on {cfg.data.train_subset:,} training images" if cfg.data.train_subset else "")
                     + (f", evaluated on {evals:,} test images" if evals else ""))
    facts.append(f"{len(rows)} settings x seeds {seeds}: {done}/{len(points)} runs done")
    out += ["; ".join(facts) + ".", "", results_table(spec, rows, keys, metric), ""]
    what = "test accuracy" if metric.name == "top1" else f"test {metric.label}"
    out += [f"{metric.label}: {what} after the last epoch, mean ± sample standard deviation over the seeds that "
            "finished (n of the planned seeds). MACs: multiply-accumulates per image, forward, at the data's input "
            "size. Equal parameter counts do not mean equal compute: compare the MACs and speed columns too. "
            "wall/run: training time of one run, evaluation and start-up excluded.", ""]
    note = throughput_note(rows)
    if note:
        out += [note, ""]
    missing = [p.id for p in points if p.id not in summaries]
    if missing:
        out += [f"Not finished: {', '.join(f'`{m}`' for m in missing)}.", ""]
    for plot in plots:
        out += [f"![{plot.stem}]({plot.name})", ""]
    return "\n".join(out).rstrip() + "\n"


# ----------------------------------------------------------------------------------------------------------------
def write_plots(spec: SweepSpec, rows: list[Row], keys: list[str], sweep_dir: Path, quick: bool,
                metric: Metric = Metric("top1", "top-1")) -> list[Path]:
    """The plots the sweep's axes make meaningful; returns their paths."""
    done = [r for r in rows if r.mean is not None]
    title = f"{spec.name}{' (quick)' if quick else ''}: test {metric.label}, mean ± std over seeds"
    ylabel = f"test {metric.label} (%)"
    written = []
    for axis, key, attr, label in (("kernel", "model.kernel_size", "kernel_size", "depthwise kernel size k (px)"),
                                   ("patch", "model.patch_size", "patch_size", "patch size p (px)")):
        pts = [r for r in done if getattr(r, attr) is not None]
        if key in keys and len({getattr(r, attr) for r in pts}) >= 2:
            written.append(_line_plot(pts, attr, key, label, title, ylabel, sweep_dir / PLOTS[axis]))
    if len({r.params for r in done if r.params}) >= 2:
        written.append(_scatter([r for r in done if r.params], lambda r: r.params, "parameters", title, ylabel,
                                sweep_dir / PLOTS["params"]))
    fast = [r for r in done if r.infer_ips]
    if len(fast) >= 2:
        written.append(_scatter(fast, lambda r: r.infer_ips, "inference throughput (images/s)", title, ylabel,
                                sweep_dir / PLOTS["throughput"]))
    return written


def _group_label(row: Row, key: str) -> str:
    """The line a row belongs to in a plot against ``key``: its arm and model without the plotted setting."""
    model = row.model
    if key == "model.kernel_size":
        model = model.replace(f" k{row.kernel_size}", "")
    if key == "model.patch_size":
        model = model.replace(f" p{row.patch_size}", "")
    others = [f"{k.rsplit('.', 1)[-1]}={v}" for k, v in row.values.items() if k != key and not k.startswith("model.")]
    return ", ".join([f"{row.arm}: {model}" if row.arm else model] + others)


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    return plt, fig, ax


def _save(plt, fig, ax, title: str, ylabel: str, path: Path) -> Path:
    ax.set_title(title, fontsize=9)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)
    return path


def _line_plot(rows: list[Row], attr: str, key: str, xlabel: str, title: str, ylabel: str, path: Path) -> Path:
    plt, fig, ax = _figure()
    groups: dict[str, list[Row]] = {}
    for r in rows:
        groups.setdefault(_group_label(r, key), []).append(r)
    for label, members in groups.items():
        members.sort(key=lambda r: getattr(r, attr))
        ax.errorbar([getattr(r, attr) for r in members], [r.mean for r in members],
                    yerr=[r.std or 0.0 for r in members], marker="o", capsize=3, label=label)
    ax.set_xlabel(xlabel)
    ax.set_xticks(sorted({getattr(r, attr) for r in rows}))
    ax.legend(fontsize=8)
    return _save(plt, fig, ax, title, ylabel, path)


def axis_scale(values: list[float]) -> str:
    """"log" when the values span 3x or more, else "linear" (over a 1.2x range a log axis piles up its labels)."""
    return "log" if values and min(values) > 0 and max(values) / min(values) >= 3 else "linear"


def _scatter(rows: list[Row], x: Callable[[Row], float], xlabel: str, title: str, ylabel: str, path: Path) -> Path:
    from matplotlib.ticker import EngFormatter, NullFormatter

    plt, fig, ax = _figure()
    xs = [x(r) for r in rows]
    for r, xv in zip(rows, xs):
        ax.errorbar([xv], [r.mean], yerr=[r.std or 0.0], marker="o", capsize=3, linestyle="none")
        ax.annotate(r.setting, (xv, r.mean), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if axis_scale(xs) == "log":
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        xlabel += " (log scale)"
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 100k, 1M
    ax.set_xlabel(xlabel)
    return _save(plt, fig, ax, title, ylabel, path)


# ----------------------------------------------------------------------------------------------------------------
def plan_table(points: list[Point], states: dict[str, str], cache: ArchCache, workers: int, *, measure: bool = True,
               log: Callable[[str], None] = print) -> str:
    """The dry run: every point with its cost and status, and the estimated time of what is left to run (from a
    few timed training steps per architecture, with this process's threads)."""
    header = ["point", "model", "params", "MACs", "train images", "est. time", "status"]
    body, left, unknown = [], 0.0, False
    for p in points:
        facts, key = cache.profile(p.cfg)
        train, evals = run_images(p.cfg)
        rate = speed(p.cfg, facts, cache, log, infer=False, repeats=3)[0] if measure else None
        seconds = train / rate + (evals or 0) / (3 * rate) if train is not None and rate else None
        if states[p.id] != "done":
            unknown = unknown or seconds is None
            left += seconds or 0.0
        body.append([f"`{p.id}`", describe_model(p.cfg), _count(cache.get(key, "params")),
                     _macs(cache.get(key, "macs")), _count(train), duration(seconds), states[p.id]])
    table = markdown_table(header, body, right={2, 3, 4, 5})
    todo = sum(1 for s in states.values() if s != "done")
    workers = max(workers, 1)
    estimate = f"{todo} of {len(points)} runs to go"
    if measure:
        estimate += (f": about {duration(left)} of one worker's time, {duration(left / workers)} with {workers} "
                     f"worker{'s' if workers != 1 else ''} (evaluation counted as a third of a training step per "
                     f"image; start-up and the speed measurements of the report are extra)"
                     + ("; some runs have no estimate (unknown data size)" if unknown else ""))
    return f"{table}\n\n{estimate}.\n"


# ----------------------------------------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    return "" if value is None else value


def _num(value: float | None, digits: int) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _cell(value: Any) -> str:
    return "—" if value is None else str(value)


def _count(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def _macs(value: int | None) -> str:
    if value is None:
        return "—"
    if value >= 1e9:
        return f"{value / 1e9:.2f}G"
    return f"{value / 1e6:.1f}M" if value >= 1e6 else f"{value / 1e3:.1f}K"


def _rate(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


