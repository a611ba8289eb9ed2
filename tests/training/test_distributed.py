"""torchrun with 2 CPU processes (gloo) trains like 1 process with the same global batch."""

import json
import re
import subprocess
import sys

import pytest
import torch

from convmixer.cli import main
from convmixer.training.state import load_state

from .conftest import TINY


def run(tmp_path, name, nproc, batch):
    common = [*sum((["--set", a] for a in TINY), []), "--set", f"data.batch_size={batch}",
              "--set", "model.sync_bn=true", "--set", "aug.crop=none", "--set", "aug.hflip=0",
              "--out-dir", str(tmp_path), "--name", name, "--device", "cpu"]
    if nproc == 1:
        cmd = [sys.executable, "-m", "convmixer", "train", *common]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone",
               "-m", "convmixer", "train", *common]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**__import__("os").environ,
                                                                                   "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    one = run(tmp_path, "one", 1, 32)
    two = run(tmp_path, "two", 2, 16)
    m1 = [json.loads(line) for line in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    m2 = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert len(m1) == len(m2) == 2
    for a, b in zip(m1, m2):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert b["eval_loss"] == pytest.approx(a["eval_loss"], rel=1e-3)
    w1, w2 = load_state(tmp_path / "one" / "last.pt")["model"], load_state(tmp_path / "two" / "last.pt")["model"]
    for k in w1:
        if w1[k].is_floating_point():
            torch.testing.assert_close(w2[k], w1[k], rtol=1e-3, atol=1e-4)
    # rank 0 alone writes: one run directory, one set of files, one summary line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    assert two.stdout.count("test top-1") == 1


CRASH_AFTER_EPOCH_1 = """
import os, sys
from convmixer.cli import main
from convmixer.training.engine import Trainer

save = Trainer._save

def save_then_crash(self, *names):
    save(self, *names)
    if self.progress.epoch == 1 and self.dist.restart == 0 and self.dist.rank == 0:
        open(sys.argv[1], "w").close()
        os._exit(3)  # the first attempt dies right after its end-of-epoch-1 checkpoint

Trainer._save = save_then_crash
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow  # ~1 min on a quiet 2-core CPU; under load the restarted gloo group can miss its connect window
def test_an_elastic_restart_resumes_from_the_last_checkpoint(tmp_path):
    script, marker = tmp_path / "crashing_train.py", tmp_path / "crashed"
    script.write_text(CRASH_AFTER_EPOCH_1)
    common = [*sum((["--set", a] for a in TINY), []), "--set", "data.batch_size=16", "--set", "aug.crop=none",
              "--set", "aug.hflip=0", "--set", "model.sync_bn=true", "--out-dir", str(tmp_path), "--name", "elastic",
              "--device", "cpu"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", "--max-restarts=1",
           str(script), str(marker), "train", *common]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert marker.exists()  # the first attempt did crash, and the agent's restart finished the run
    records = [json.loads(line) for line in (tmp_path / "elastic" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert json.loads((tmp_path / "elastic" / "summary.json").read_text())["steps"] == 16
    # epoch 2 continued where epoch 1 ended: the weights match one uninterrupted process with the same global batch
    run(tmp_path, "one", 1, 32)
    w1, w2 = load_state(tmp_path / "one" / "last.pt")["model"], load_state(tmp_path / "elastic" / "last.pt")["model"]
    for k in w1:
        if w1[k].is_floating_point():
            torch.testing.assert_close(w2[k], w1[k], rtol=1e-3, atol=1e-4)


THREADS_AFTER_THE_RUN = """
import os, sys
from convmixer.cli import main

before = len(os.listdir("/proc/self/task"))
rc = main(sys.argv[1:])
print(f"rank {os.environ['RANK']}: {before} threads before, {len(os.listdir('/proc/self/task'))} after, rc {rc}")
"""


@pytest.mark.skipif(not __import__("os").path.isdir("/proc/self/task"), reason="counts threads through /proc")
def test_the_process_group_and_its_threads_are_gone_when_the_run_returns(tmp_path):
    """gloo's worker threads must be joined while the interpreter is whole: one that still holds a finished
    collective when the interpreter shuts down aborts the process as it drops the collective's tensors (a
    flaky exit -6 on loaded machines). That needs the group freed, so nothing may keep it: DDP's reducer is let
    go first, and torch.distributed.nn.functional (which DDP imports) is imported before the group exists."""
    script = tmp_path / "count_threads.py"
    script.write_text(THREADS_AFTER_THE_RUN)
    common = [*sum((["--set", a] for a in TINY), []), "--set", "data.batch_size=16", "--set", "schedule.epochs=1",
              "--set", "model.sync_bn=true", "--out-dir", str(tmp_path), "--name", "t", "--device", "cpu"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", str(script),
           "train", *common]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the two ranks print at the same moment into one pipe: a line's newline may land after the other's text
    counts = re.findall(r"rank (\d+): (\d+) threads before, (\d+) after, rc (-?\d+)", proc.stdout)
    assert sorted(rank for rank, *_ in counts) == ["0", "1"], proc.stdout[-2000:]
    for rank, before, after, rc in counts:
        assert int(after) <= int(before), counts  # the group's worker and transport threads were joined
        assert rc == "0", counts


def test_the_reported_accuracy_is_that_of_the_saved_checkpoint(tmp_path):
    """Without model.sync_bn every process ends with BatchNorm statistics of its own batches; they are averaged
    before the evaluation and the checkpoint, so what the run reports is what its last.pt gives."""
    common = [*sum((["--set", a] for a in TINY), []), "--set", "data.batch_size=16", "--set", "schedule.epochs=1",
              "--out-dir", str(tmp_path), "--name", "bn", "--device", "cpu"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           "-m", "convmixer", "train", *common]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "bn" / "summary.json").read_text())
    # --plain: the execution path the run evaluated on (TINY's run.plain), so only the statistics could differ
    assert main(["eval", "--checkpoint", str(tmp_path / "bn" / "last.pt"), "--out", str(tmp_path / "e"),
                 "--device", "cpu", "--plain"]) == 0
    report = json.loads((tmp_path / "e" / "eval.json").read_text())
    assert report["num_samples"] == 64
    assert report["loss"] == pytest.approx(summary["test_loss"], rel=1e-6)  # rank-0 statistics alone: 1e-4 off
    assert report["top1"] == pytest.approx(summary["test_top1"], abs=1e-9)


def test_segmentation_under_two_processes_reduces_the_confusion_matrix(tmp_path):
    """2 processes x 8 scenes = 1 x 16: the same training, and the mIoU from the ranks' summed confusion matrices
    (each rank evaluates half of the test scenes) is what one process computes from last.pt."""
    seg = ["model.dim=16", "model.depth=2", "model.kernel_size=3", "model.patch_size=4", "data.train_subset=64",
           "data.eval_subset=40", "data.image_size=32", "schedule.epochs=1", "run.progress=false",
           "run.tensorboard=false", "run.plain=true", "model.sync_bn=true", "aug.crop=none", "aug.hflip=0"]

    def train(name, nproc, batch):
        common = ["--config", "fmnist_seg", *sum((["--set", a] for a in seg), []), "--set", f"data.batch_size={batch}",
                  "--out-dir", str(tmp_path), "--name", name, "--device", "cpu"]
        launcher = ["-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone"] if nproc > 1 else []
        proc = subprocess.run([sys.executable, *launcher, "-m", "convmixer", "train", *common], capture_output=True,
                              text=True, timeout=300, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads((tmp_path / name / "summary.json").read_text())

    one, two = train("one", 1, 16), train("two", 2, 8)
    assert two["test_miou"] == pytest.approx(one["test_miou"], abs=0.05)
    assert main(["eval", "--checkpoint", str(tmp_path / "two" / "last.pt"), "--out", str(tmp_path / "e"),
                 "--device", "cpu", "--plain"]) == 0
    report = json.loads((tmp_path / "e" / "eval.json").read_text())
    assert report["num_samples"] == 40 and sum(map(sum, report["confusion"])) == 40 * 32 * 32
    assert report["miou"] == pytest.approx(two["test_miou"], abs=1e-9)
