"""Several processes on one storage: every point runs exactly once, and a dead worker's point is resumed.

Each test runs on the default SQLite file and on a PostgreSQL server (the ``storage`` fixture; the PostgreSQL case is
skipped, with the reason, where CONVMIXER_TEST_POSTGRES_URL is not set)."""

import collections
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from convmixer.experiments.spec import load_spec
from convmixer.experiments.sweep import Sweep
from convmixer.training.engine import Trainer
from convmixer.training.state import load_state

from .test_sweep import trials


def claims(url):
    """(point, attempt, trial number, owner) of every claim in the storage."""
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(
                "select point, attempt, trial_number, owner from convmixer_sweep_claims order by point, attempt"))]
    finally:
        engine.dispose()


def test_two_workers_on_one_storage_run_every_point_exactly_once(write_spec, tmp_path, storage):
    spec, out = write_spec(grid={"model.kernel_size": [3, 5]}), tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "convmixer", "sweep", str(spec), "--out", str(out), "--workers", "2",
                           "--heartbeat", "1", "--no-throughput", *storage.args],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep_dir = out / "tiny"
    url = storage.for_sweep(sweep_dir)
    assert (sweep_dir / "sweep.db").exists() == (storage.url is None)  # the study is where the storage says
    ids = [f"k{k}-s{s}" for k in (3, 5) for s in (0, 1)]
    assert sorted(p.parent.name for p in sweep_dir.glob("*/summary.json")) == sorted(ids)
    # the study: one trained trial per point; anything else a worker created was a lost claim, never a second run
    study = trials(spec, out, storage=url)
    by_status = collections.Counter((pid, status) for pid, state, status in study if state == "COMPLETE")
    assert by_status == {(i, "trained"): 1 for i in ids}
    assert all(status in ("duplicate", "idle") for _, state, status in study if state != "COMPLETE")
    # the claims: each point claimed once; the workers' logs: each point trained once, by one of the two workers
    assert sorted((p, a) for p, a, _, _ in claims(url)) == [(i, 0) for i in sorted(ids)]
    logs = [f.read_text() for f in sorted((sweep_dir / "logs").glob("worker-*.log"))]
    assert len(logs) == 2
    started = [m for log in logs for m in re.findall(r"^(\S+): training$", log, re.M)]
    assert sorted(started) == sorted(ids)
    assert "| `k5` |" in proc.stdout and (sweep_dir / "results.csv").is_file()


def test_a_dead_workers_point_goes_to_another_worker_which_resumes_it(write_spec, tmp_path, storage):
    # 3 epochs of 64 steps, last.pt written every ~0.1 s
    spec = write_spec(grid={}, seeds=[0], set={"data.synthetic_size": 2048, "schedule.epochs": 3,
                                               "run.checkpoint_minutes": 0.002})
    out = tmp_path / "out"
    run_dir, url = out / "tiny" / "base-s0", storage.for_sweep(out / "tiny")
    worker = subprocess.Popen([sys.executable, "-m", "convmixer", "sweep", str(spec), "--out", str(out), "--worker",
                               "--heartbeat", "1", "--threads", "1", *storage.args], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not (run_dir / "last.pt").exists() and worker.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert worker.poll() is None, worker.stderr.read().decode()[-2000:]
    worker.send_signal(signal.SIGKILL)  # no chance to save or to tell the storage
    worker.wait()
    step = load_state(run_dir / "last.pt")["progress"]["step"]
    assert 0 < step < 192 and not (run_dir / "summary.json").exists()
    assert trials(spec, out, storage=url) == [("base-s0", "RUNNING", "running")]

    spec_ = load_spec(spec)
    survivor = Sweep(spec_, spec_.points(out_dir=out / "tiny"), out / "tiny", storage=storage.url, heartbeat=1,
                     grace=2, log=lambda m: None)
    resumed = []
    original = Trainer.resume.__func__

    def spy(cls, run_dir, **kwargs):
        resumed.append(run_dir)
        return original(cls, run_dir, **kwargs)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(Trainer, "resume", classmethod(spy))
        result = survivor.work()  # waits until the dead worker's heartbeat is 2 s old, then takes the point over
    survivor.close()
    assert result.trained == ["base-s0"] and resumed == [run_dir]
    assert trials(spec, out, storage=url) == [("base-s0", "FAIL", "running"), ("base-s0", "COMPLETE", "trained")]
    assert [(a, n) for _, a, n, _ in claims(url)] == [(0, 0), (1, 1)]
    assert load_state(run_dir / "last.pt")["progress"]["step"] == 192
