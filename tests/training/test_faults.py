"""Killing the process at any moment (SIGKILL, also in the middle of a save) never corrupts last.pt."""

import random
import signal
import subprocess
import sys
import time

import torch

from convmixer.training.state import load_state

from .conftest import TINY


def test_sigkill_at_random_moments_never_corrupts_the_latest_checkpoint(tmp_path):
    # checkpoint_minutes=1e-6 writes last.pt after every step, so kills land inside saves often
    args = [sys.executable, "-m", "convmixer", "train", "--config", "fmnist", *sum((["--set", a] for a in TINY), []),
            "--set", "schedule.epochs=50", "--set", "run.checkpoint_minutes=1e-6", "--set", "data.synthetic_size=512",
            "--out-dir", str(tmp_path), "--name", "k"]
    rng = random.Random(0)
    last = tmp_path / "k" / "last.pt"
    steps = []
    for attempt in range(4):
        cmd = args if attempt == 0 else [sys.executable, "-m", "convmixer", "train", "--resume", str(tmp_path / "k")]
        before = last.stat().st_mtime_ns if last.exists() else None
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        # wait for this process's first save, then kill it at a random moment of its steps and saves
        while time.monotonic() < deadline and proc.poll() is None and \
                (not last.exists() or last.stat().st_mtime_ns == before):
            time.sleep(0.02)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(rng.uniform(0.05, 0.8))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        state = load_state(last)  # must always load...
        assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
        steps.append(state["progress"]["step"])
    assert steps == sorted(steps) and steps[-1] > steps[0]  # ...and each resume made progress
    # a kill during a save can leave a temporary file; a resume sweeps it away, so at most the last kill's remains
    assert len(list((tmp_path / "k").glob(".*.tmp*"))) <= 1
