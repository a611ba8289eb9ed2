"""Tiny sweeps end to end, in this process: results, skipping finished runs, resuming interrupted ones, failures."""

import csv
import json
import signal

import optuna
import pytest
import torch

from convmixer.cli import main
from convmixer.errors import ConfigError
from convmixer.experiments.spec import load_spec
from convmixer.experiments.sweep import default_storage, study_name
from convmixer.training import engine
from convmixer.training.engine import Trainer
from convmixer.training.state import load_state


def sweep(spec, out, *extra):
    return main(["sweep", str(spec), "--out", str(out), "--threads", "1", *extra])


def trials(spec_path, out, quick=False, storage=None):
    """(point id, state, status) of every trial of the sweep's study (in ``storage``, by default its SQLite file)."""
    spec = load_spec(spec_path)
    sweep_dir = out / spec.run_name(quick)
    rdb = optuna.storages.RDBStorage(storage or default_storage(sweep_dir))
    try:
        study = optuna.load_study(study_name=study_name(spec, spec.points(quick, out_dir=sweep_dir), quick),
                                  storage=rdb)
        return [(t.user_attrs.get("point_id"), t.state.name, t.user_attrs.get("status")) for t in study.trials]
    finally:
        rdb.engine.dispose()


def test_sweep_runs_every_point_writes_results_and_skips_them_next_time(write_spec, tmp_path, capsys, monkeypatch):
    spec, out = write_spec(), tmp_path / "out"
    assert sweep(spec, out) == 0
    shown = capsys.readouterr().out
    sweep_dir = out / "tiny"
    ids = ["k3-s0", "k3-s1", "k5-s0", "k5-s1"]
    assert all((sweep_dir / i / "summary.json").is_file() and (sweep_dir / i / "sweep_point.json").is_file()
               for i in ids)
    assert sorted(trials(spec, out)) == [(i, "COMPLETE", "trained") for i in ids]
    rows = list(csv.DictReader((sweep_dir / "results.csv").open()))
    assert [(r["setting"], r["kernel_size"], r["n_seeds"], r["seeds"]) for r in rows] == \
        [("k3", "3", "2", "0 1"), ("k5", "5", "2", "0 1")]
    for r in rows:
        assert int(r["params"]) > 0 and int(r["macs"]) > 0 and float(r["infer_images_per_s"]) > 0
        tops = [json.loads((sweep_dir / f"{r['setting']}-s{s}" / "summary.json").read_text())["test_top1"]
                for s in (0, 1)]
        assert float(r["top1_mean"]) == pytest.approx(sum(tops) / 2, abs=1e-3)
    md = (sweep_dir / "results.md").read_text()
    assert "| setting | model | kernel_size | params | MACs |" in md and "ConvMixer-16/2 k3 p4" in md
    assert md in shown  # the table is printed too
    assert {p.name for p in sweep_dir.glob("*.png")} == {"acc_vs_kernel.png", "acc_vs_params.png",
                                                         "acc_vs_throughput.png"}  # no patch axis here
    stamps = {i: (sweep_dir / i / "summary.json").stat().st_mtime_ns for i in ids}

    def no_training(*args, **kwargs):
        raise AssertionError("a finished point was trained again")

    monkeypatch.setattr(Trainer, "fit", no_training)
    assert sweep(spec, out, "--no-throughput") == 0
    assert stamps == {i: (sweep_dir / i / "summary.json").stat().st_mtime_ns for i in ids}
    assert len(trials(spec, out)) == 4  # nothing was even offered again


def test_an_interrupted_run_resumes_exactly_where_it_stopped(write_spec, tmp_path, monkeypatch):
    spec, out = write_spec(grid={}, seeds=[0]), tmp_path / "out"
    run_dir = out / "tiny" / "base-s0"

    def stop_at_once(self):  # as if SIGTERM arrived during the first step
        self.signal = signal.SIGTERM
        return self

    with monkeypatch.context() as m:
        m.setattr(engine.StopRequest, "__enter__", stop_at_once)
        assert sweep(spec, out, "--no-throughput") == 143
    assert (run_dir / "last.pt").is_file() and not (run_dir / "summary.json").exists()
    assert load_state(run_dir / "last.pt")["progress"]["step"] == 1
    assert trials(spec, out) == [("base-s0", "FAIL", "interrupted")]

    resumed = []
    original = Trainer.resume.__func__

    def spy(cls, run_dir, **kwargs):
        resumed.append(run_dir)
        return original(cls, run_dir, **kwargs)

    monkeypatch.setattr(Trainer, "resume", classmethod(spy))
    assert sweep(spec, out, "--no-throughput") == 0
    assert resumed == [run_dir]
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 16
    assert [r["epoch"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())] == [1, 2]
    assert trials(spec, out)[-1] == ("base-s0", "COMPLETE", "trained")

    # the resumed run ends with the weights of an uninterrupted one
    (point,) = load_spec(spec).points(out_dir=tmp_path / "straight")
    Trainer(point.cfg).fit()
    a = load_state(run_dir / "last.pt")["model"]
    b = load_state(tmp_path / "straight" / "base-s0" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_failing_point_is_recorded_the_others_finish_and_a_rerun_retries_it(write_spec, tmp_path, monkeypatch,
                                                                                 capsys):
    spec, out = write_spec(seeds=[0]), tmp_path / "out"
    original = Trainer.__init__

    def broken(self, cfg, **kwargs):
        if cfg is not None and cfg.run.name == "k5-s0":
            raise ConfigError("k5 went wrong")
        original(self, cfg, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(Trainer, "__init__", broken)
        assert sweep(spec, out, "--no-throughput") == 2
    captured = capsys.readouterr()
    assert "1 of 2 runs did not finish (k5-s0: k5 went wrong)" in captured.err
    assert "Not finished: `k5-s0`" in (out / "tiny" / "results.md").read_text()
    assert sorted(trials(spec, out)) == [("k3-s0", "COMPLETE", "trained"), ("k5-s0", "FAIL", "error")]
    assert sweep(spec, out, "--no-throughput") == 0  # a new invocation retries the failed point
    assert ("k5-s0", "COMPLETE", "trained") in trials(spec, out)


def test_a_run_directory_of_other_settings_stops_the_sweep_before_it_starts(write_spec, tmp_path, capsys):
    out = tmp_path / "out"
    assert sweep(write_spec(grid={}, seeds=[0]), out, "--no-throughput") == 0
    capsys.readouterr()
    changed = write_spec(grid={}, seeds=[0], set={"optim.lr": 0.001})
    assert sweep(changed, out, "--no-throughput") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "base-s0 was trained with other settings than point base-s0" in err and "optim.lr: 0.005 there" in err


@pytest.mark.parametrize("values, scale", [([99_178, 116_938], "linear"), ([568, 13_261], "log"),
                                           ([1.0, 2.9], "linear"), ([1.0, 3.0], "log"), ([0.0, 10.0], "linear")])
def test_scatter_axis_is_log_only_over_a_wide_range(values, scale):
    from convmixer.experiments.report import axis_scale

    assert axis_scale(values) == scale
