"""The sweep report on made-up results: tables (CSV, Markdown), plots, speed caching, the dry-run plan.

Nothing is trained: summaries are written into run directories the way the sweep leaves them, or handed in as the
storage's stored summaries; params and MACs are profiled on the tiny spec of conftest.py (ConvMixer-16/2 p4 on
16x16 grayscale synthetic data, kernel 3 or 5).
"""

import csv
import io
import json
import statistics

import pytest
from PIL import Image

from convmixer.errors import ConfigError
from convmixer.experiments import report as report_mod
from convmixer.experiments.costs import ArchCache
from convmixer.experiments.report import (
    PLOTS,
    Row,
    collect,
    make_report,
    markdown_table,
    plan_table,
    results_table,
    to_csv,
    write_plots,
)
from convmixer.experiments.spec import Arm, SweepSpec, load_spec
from convmixer.experiments.sweep import _write_marker

CSV_HEADER = ["setting", "model", "kernel_size", "params", "macs", "train_images_per_s", "infer_images_per_s",
              "top1_mean", "top1_std", "n_seeds", "seeds", "top1_per_seed", "wall_time_s_mean"]
PNG_SIZE = (768, 528)  # figsize 6.4 x 4.4 in at 120 dpi


@pytest.fixture
def tiny_sweep(write_spec, tmp_path):
    """(spec, points, sweep folder) of a 2-kernel x 2-seed sweep, nothing run yet."""

    def make(**fields):
        spec = load_spec(write_spec(**fields))
        sweep_dir = tmp_path / "out" / spec.name
        return spec, spec.points(out_dir=sweep_dir), sweep_dir

    return make


def finish(point, sweep_dir, spec, **summary):
    """Leave ``point``'s run directory as a finished run does: its marker and summary.json."""
    _write_marker(point, sweep_dir, spec.name)
    (sweep_dir / point.id / "summary.json").write_text(json.dumps(summary))


def read_csv(path):
    return list(csv.reader(io.StringIO(path.read_text())))


def table_rows(markdown):
    """Markdown table lines -> {first cell: cells} (the backticks of the setting cell stripped)."""
    out = {}
    for line in markdown.splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            out[cells[0].strip("`")] = cells
    return out


def assert_png(path):
    assert path.is_file() and path.stat().st_size > 1000
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == PNG_SIZE
        im.load()  # the whole file decodes


def no_speed_measurement(*args, **kwargs):
    raise AssertionError("throughput=False must not measure speed")


# ----------------------------------------------------------------------------------------------------------------
def test_report_averages_each_setting_over_its_seeds(tiny_sweep, monkeypatch):
    spec, points, sweep_dir = tiny_sweep()
    monkeypatch.setattr("convmixer.experiments.throughput.measure_throughput", no_speed_measurement)
    by_id = {p.id: p for p in points}
    finish(by_id["k3-s0"], sweep_dir, spec, test_top1=90.0, wall_time_s=10.0)
    stored = {
        "k3-s0": {"test_top1": 50.0},  # the run directory on this machine wins over the storage
        "k3-s1": {"test_top1": 92.5, "wall_time_s": 14.0},  # made on another machine
        "k5-s0": {"test_top1": 80.0},  # no wall time recorded
        "k5-s1": {"test_top1": None, "wall_time_s": 3.0},  # a run that never evaluated: not a result
    }
    rep = make_report(spec, points, sweep_dir, stored=stored, throughput=False, log=lambda s: None)

    assert [r.setting for r in rep.rows] == ["k3", "k5"]  # spec order, one row per setting
    k3, k5 = rep.rows
    assert k3.seeds == [0, 1] and k3.scores == {0: 90.0, 1: 92.5} and k3.wall == {0: 10.0, 1: 14.0}
    assert k5.seeds == [0, 1] and k5.scores == {0: 80.0} and k5.wall == {}

    rows = read_csv(sweep_dir / "results.csv")
    assert rows[0] == CSV_HEADER
    got = [dict(zip(CSV_HEADER, r)) for r in rows[1:]]
    assert [(r["setting"], r["model"], r["kernel_size"]) for r in got] == \
        [("k3", "ConvMixer-16/2 k3 p4", "3"), ("k5", "ConvMixer-16/2 k5 p4", "5")]
    a, b = got
    assert (a["top1_mean"], a["top1_std"]) == ("91.2500", f"{statistics.stdev([90.0, 92.5]):.4f}")
    assert (a["n_seeds"], a["seeds"], a["top1_per_seed"], a["wall_time_s_mean"]) == ("2", "0 1", "90.00 92.50", "12.0")
    assert (b["top1_mean"], b["top1_std"], b["n_seeds"], b["seeds"], b["top1_per_seed"], b["wall_time_s_mean"]) == \
        ("80.0000", "", "1", "0", "80.00", "")
    assert a["train_images_per_s"] == a["infer_images_per_s"] == ""  # --no-throughput
    # two mixer layers of 16 depthwise k x k filters: k5 has 2 * 16 * (25 - 9) more weights than k3
    assert int(b["params"]) - int(a["params"]) == 2 * 16 * (25 - 9)
    assert int(b["macs"]) > int(a["macs"]) > 0

    md = (sweep_dir / "results.md").read_text()
    assert md == rep.markdown
    assert md.startswith("# Sweep `tiny`\n")
    assert "recipe `fmnist`, dataset synthetic, 2 epochs, evaluated on 64 test images; " \
           "2 settings x seeds [0, 1]: 3/4 runs done." in md
    cells = table_rows(md)
    assert cells["k3"][1:3] == ["ConvMixer-16/2 k3 p4", "3"]
    assert cells["k3"][3] == f"{int(a['params']):,}"
    assert cells["k3"][-3:] == ["91.25 ± 1.77", "2/2", "12 s"]
    assert cells["k5"][-3:] == ["80.00", "1/2", "—"]
    assert "Not finished: `k5-s1`." in md
    assert "Speed:" not in md  # no speed, no note

    kernel, params = sweep_dir / PLOTS["kernel"], sweep_dir / PLOTS["params"]
    assert rep.files == [sweep_dir / "results.csv", sweep_dir / "results.md", kernel, params]
    for plot in (kernel, params):
        assert_png(plot)
        assert f"![{plot.stem}]({plot.name})" in md
    assert not (sweep_dir / PLOTS["patch"]).exists() and not (sweep_dir / PLOTS["throughput"]).exists()


def test_a_setting_with_no_finished_runs_keeps_its_row_and_gets_no_plot(tiny_sweep, monkeypatch):
    spec, points, sweep_dir = tiny_sweep()
    monkeypatch.setattr("convmixer.experiments.throughput.measure_throughput", no_speed_measurement)
    stored = {"k3-s0": {"test_top1": 70.0, "wall_time_s": 100.0}, "k3-s1": {"test_top1": 71.0, "wall_time_s": 110.0}}
    rep = make_report(spec, points, sweep_dir, stored=stored, throughput=False, log=lambda s: None)

    got = {r[0]: dict(zip(CSV_HEADER, r)) for r in read_csv(sweep_dir / "results.csv")[1:]}
    assert list(got) == ["k3", "k5"]
    assert got["k3"]["top1_mean"] == "70.5000" and got["k3"]["wall_time_s_mean"] == "105.0"
    empty = got["k5"]
    assert (empty["top1_mean"], empty["top1_std"], empty["n_seeds"], empty["seeds"], empty["top1_per_seed"],
            empty["wall_time_s_mean"]) == ("", "", "0", "", "", "")
    assert int(empty["params"]) > 0  # the architecture is still profiled

    cells = table_rows(rep.markdown)
    assert cells["k3"][-3:] == ["70.50 ± 0.71", "2/2", "1.8 min"]
    assert cells["k5"][-3:] == ["—", "0/2", "—"]
    assert "2/4 runs done" in rep.markdown and "Not finished: `k5-s0`, `k5-s1`." in rep.markdown
    # one finished setting: a kernel or params plot would be a single point, so none is drawn
    assert rep.files == [sweep_dir / "results.csv", sweep_dir / "results.md"]
    assert not list(sweep_dir.glob("*.png")) and "![" not in rep.markdown


def test_a_single_seed_has_no_std(tiny_sweep):
    spec, points, sweep_dir = tiny_sweep(seeds=[7], description="Kernel size on tiny data.")
    stored = {"k3-s7": {"test_top1": 91.0}, "k5-s7": {"test_top1": 93.0}}
    rep = make_report(spec, points, sweep_dir, stored=stored, quick=True, throughput=False,
                      command="convmixer sweep tiny.yaml --quick", log=lambda s: None)
    got = {r[0]: dict(zip(CSV_HEADER, r)) for r in read_csv(sweep_dir / "results.csv")[1:]}
    assert [(g["top1_mean"], g["top1_std"], g["n_seeds"], g["seeds"]) for g in got.values()] == \
        [("91.0000", "", "1", "7"), ("93.0000", "", "1", "7")]
    cells = table_rows(rep.markdown)
    assert cells["k3"][-3:-1] == ["91.00", "1/1"] and cells["k5"][-3:-1] == ["93.00", "1/1"]
    lines = rep.markdown.splitlines()
    assert lines[:6] == ["# Sweep `tiny` (quick form)", "", "Kernel size on tiny data.", "",
                         "Command: `convmixer sweep tiny.yaml --quick`", ""]
    assert "2 settings x seeds [7]: 2/2 runs done." in rep.markdown and "Not finished" not in rep.markdown
    assert_png(sweep_dir / PLOTS["kernel"])  # two kernels with results: a line, std 0 error bars


def test_collect_reads_run_directories_and_refuses_a_foreign_one(tiny_sweep):
    spec, points, sweep_dir = tiny_sweep()
    by_id = {p.id: p for p in points}
    finish(by_id["k3-s0"], sweep_dir, spec, test_top1=88.0)
    finish(by_id["k3-s1"], sweep_dir, spec, test_top1=None)  # finished without a test accuracy: skipped
    _write_marker(by_id["k5-s0"], sweep_dir, spec.name)  # started, never finished: nothing to read
    assert collect(points, sweep_dir) == {"k3-s0": {"test_top1": 88.0}}
    assert collect(points, sweep_dir, {"k5-s0": {"test_top1": 1.0}, "k5-s1": {}}) == \
        {"k3-s0": {"test_top1": 88.0}, "k5-s0": {"test_top1": 1.0}}

    changed = spec.points(out_dir=sweep_dir)[2]  # k5-s0, expanded afresh and then trained differently
    assert changed.id == "k5-s0"
    changed.cfg.optim.lr = 0.5
    (sweep_dir / "k5-s0" / "summary.json").write_text(json.dumps({"test_top1": 1.0}))
    with pytest.raises(ConfigError, match="other settings than point k5-s0"):
        collect([changed], sweep_dir)


def test_speed_is_measured_once_per_architecture_and_cached(tiny_sweep, monkeypatch):
    spec, points, sweep_dir = tiny_sweep()
    calls = []

    class FakeThroughput:
        def __init__(self, k):
            self.k = k

        def as_dict(self):
            return {"train_images_per_s": 100.0 * self.k, "infer_images_per_s": 1000.0 * self.k, "device": "cpu",
                    "threads": 1, "how": "a stopwatch"}

    def fake_measure(cfg, facts, *, infer=True, repeats=10):
        calls.append((cfg.model.kernel_size, facts.input_size, infer))
        return FakeThroughput(cfg.model.kernel_size)

    monkeypatch.setattr("convmixer.experiments.throughput.measure_throughput", fake_measure)
    stored = {p.id: {"test_top1": 80.0 + p.seed + p.cfg.model.kernel_size} for p in points}
    logged = []
    rep = make_report(spec, points, sweep_dir, stored=stored, log=logged.append)
    assert calls == [(3, (1, 16, 16), True), (5, (1, 16, 16), True)]  # not once per seed
    assert logged == ["measuring the speed of ConvMixer-16/2 k3 p4 ...",
                      "measuring the speed of ConvMixer-16/2 k5 p4 ..."]
    got = {r[0]: dict(zip(CSV_HEADER, r)) for r in read_csv(sweep_dir / "results.csv")[1:]}
    assert (got["k3"]["train_images_per_s"], got["k3"]["infer_images_per_s"]) == ("300.0", "3000.0")
    assert (got["k5"]["train_images_per_s"], got["k5"]["infer_images_per_s"]) == ("500.0", "5000.0")
    cells = table_rows(rep.markdown)
    assert cells["k5"][5:7] == ["500", "5,000"]
    assert "Speed: images/s, measured once per architecture on cpu, 1 thread, with a stopwatch." in rep.markdown
    assert_png(sweep_dir / PLOTS["throughput"])
    assert (sweep_dir / "architectures.json").is_file()

    calls.clear()
    again = make_report(spec, points, sweep_dir, stored=stored, log=logged.append)
    assert calls == []  # architectures.json answers
    assert again.markdown == rep.markdown


# ----------------------------------------------------------------------------------------------------------------
def row(setting, top1, *, arm=None, values=None, model="ConvMixer-16/2 k3 p4", k=3, p=4, params=None, **kw):
    return Row(setting, arm, values or {}, model, k, p, sorted(top1), dict(top1), params=params, **kw)


def test_columns_name_the_arm_and_each_swept_key_unambiguously():
    spec = SweepSpec("mix", "fmnist", arms=[Arm("a"), Arm("b")])
    keys = ["model.dim", "data.batch_size", "optim.batch_size"]  # two keys end in batch_size: spelled out
    rows = [row("a-h8", {0: 60.0, 1: 62.0}, arm="a", values={"model.dim": 8, "data.batch_size": 32},
                params=1_234_567, macs=2_340_000, train_ips=12_345.6, infer_ips=None),
            row("b-h16", {}, arm="b", values={"model.dim": 16, "optim.batch_size": 64}, model="vit (a|b)",
                macs=1_500_000_000)]
    lines = list(csv.reader(io.StringIO(to_csv(rows, keys, spec))))
    assert lines[0][:6] == ["setting", "model", "arm", "dim", "data.batch_size", "optim.batch_size"]
    assert lines[1][:9] == ["a-h8", "ConvMixer-16/2 k3 p4", "a", "8", "32", "", "1234567", "2340000", "12345.6"]
    assert lines[2][:8] == ["b-h16", "vit (a|b)", "b", "16", "", "64", "", "1500000000"]

    table = results_table(spec, rows, keys).splitlines()
    assert table[0] == ("| setting | model | arm | dim | data.batch_size | optim.batch_size | params | MACs | "
                        "train img/s | infer img/s | top-1 (%) | n | wall/run |")
    assert table[1] == "| --- | --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    assert table[2] == "| `a-h8` | ConvMixer-16/2 k3 p4 | a | 8 | 32 | — | 1,234,567 | 2.3M | 12,346 | — | " \
                       "61.00 ± 1.41 | 2/2 | — |"
    assert table[3] == "| `b-h16` | vit (a\\|b) | b | 16 | — | 64 | — | 1.50G | — | — | — | 0/0 | — |"


def test_markdown_table_alignment_and_escaping():
    assert markdown_table(["a", "b"], [["x|y", "1"]], right={1}) == "| a | b |\n| --- | ---: |\n| x\\|y | 1 |"


def test_line_plots_group_by_arm_and_the_unplotted_settings(tmp_path):
    from convmixer.experiments.report import _group_label

    r = row("a-k3-lr_0.01", {0: 1.0}, arm="a", values={"model.kernel_size": 3, "optim.lr": 0.01})
    assert _group_label(r, "model.kernel_size") == "a: ConvMixer-16/2 p4, lr=0.01"
    assert _group_label(r, "model.patch_size") == "a: ConvMixer-16/2 k3, lr=0.01"
    assert _group_label(row("k3", {0: 1.0}), "model.kernel_size") == "ConvMixer-16/2 p4"

    spec = SweepSpec("grid", "fmnist")
    keys = ["model.kernel_size", "model.patch_size"]
    rows = [row(f"k{k}-p{p}", {0: 50.0 + k + p, 1: 51.0 + k}, model=f"ConvMixer-16/2 k{k} p{p}", k=k, p=p,
                values={"model.kernel_size": k, "model.patch_size": p}, params=1000 + 10 * k * k)
            for k in (3, 5) for p in (2, 4)]
    written = write_plots(spec, rows, keys, tmp_path, quick=False)
    assert written == [tmp_path / PLOTS["kernel"], tmp_path / PLOTS["patch"], tmp_path / PLOTS["params"]]
    for path in written:
        assert_png(path)
    # rows without results are left out: one patch size with results is no line
    for r in rows:
        if r.patch_size == 4:
            r.scores.clear()
    assert write_plots(spec, rows, keys, tmp_path, quick=True) == [tmp_path / PLOTS["kernel"], tmp_path / PLOTS["params"]]


def test_plan_table_lists_every_point_and_what_is_left(tiny_sweep):
    spec, points, sweep_dir = tiny_sweep()
    states = {"k3-s0": "done", "k3-s1": "partial", "k5-s0": "new", "k5-s1": "new"}
    text = plan_table(points, states, ArchCache(None), workers=2, measure=False, log=lambda s: None)
    cells = table_rows(text)
    assert list(cells) == ["k3-s0", "k3-s1", "k5-s0", "k5-s1"]
    # 256 synthetic images at batch 32: 8 steps an epoch, 2 epochs
    assert [c[4:] for c in cells.values()] == [["512", "—", s] for s in states.values()]
    assert cells["k5-s0"][1] == "ConvMixer-16/2 k5 p4"
    assert text.endswith("\n\n3 of 4 runs to go.\n")


def test_plan_table_estimates_from_the_measured_training_speed(tiny_sweep, monkeypatch):
    spec, points, sweep_dir = tiny_sweep(grid={}, seeds=[0, 1])

    class Fake:
        def as_dict(self):
            return {"train_images_per_s": 4.0, "infer_images_per_s": None, "device": "cpu", "threads": 1, "how": "x"}

    monkeypatch.setattr("convmixer.experiments.throughput.measure_throughput", lambda *a, **k: Fake())
    text = plan_table(points, {"base-s0": "new", "base-s1": "new"}, ArchCache(None), workers=2, log=lambda s: None)
    # 512 training images at 4/s; the 64 evaluation images counted at three times that rate
    seconds = 512 / 4 + 64 / (3 * 4)
    assert [c[5] for c in table_rows(text).values()] == [report_mod.duration(seconds)] * 2
    assert f"2 of 2 runs to go: about {report_mod.duration(2 * seconds)} of one worker's time, " \
           f"{report_mod.duration(seconds)} with 2 workers" in text
