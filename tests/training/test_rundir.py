"""The run directory's logs: metrics.jsonl and the TensorBoard events beside it."""

import json
import os
import shutil
import sys

import pytest

from convmixer.cli import main
from convmixer.errors import DataError
from convmixer.training.config import load_config
from convmixer.training.engine import Trainer
from convmixer.training.rundir import RunLog

from ..data.helpers import make_image_folder
from .conftest import TINY


def test_tensorboard_events_hold_the_metrics_of_every_epoch(tiny_cfg):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = Trainer(tiny_cfg("run.tensorboard=true")).fit().run_dir
    assert list(run.glob("events.out.tfevents.*")), "no TensorBoard event file"
    events = EventAccumulator(str(run))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/top1", "eval/top1", "eval/loss", "lr"} <= tags
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    top1 = events.Scalars("eval/top1")
    assert [e.step for e in top1] == [r["step"] for r in records] == [8, 16]
    assert [e.value for e in top1] == pytest.approx([r["eval_top1"] for r in records])


def test_without_tensorboard_only_metrics_jsonl_is_written(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if it were not installed
    log = RunLog(tmp_path, tensorboard=True)
    log.log({"epoch": 1, "step": 5, "train_loss": 0.5}, step=5)
    log.close()
    assert log.writer is None and not list(tmp_path.glob("events.*"))
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"epoch": 1, "step": 5, "train_loss": 0.5}


def test_a_run_directory_in_use_is_refused_to_a_second_run_and_to_resume(tiny_cfg, tmp_path, capsys):
    """Two runs with one name would write into one directory (metrics of epochs 1, 1, 2, 2): the second is refused,
    and so is resuming a run that is still alive."""
    argv = ["train", *sum((["--set", a] for a in TINY), []), "--out-dir", str(tmp_path), "--name", "run"]
    codes = {}

    def meanwhile(trainer):
        if trainer.progress.step == 1:  # nothing saved yet: only the lock tells that the directory is in use
            codes["same name"] = main(argv)
            codes["same name err"] = capsys.readouterr().err
        if trainer.progress.step == 9:  # epoch 1's last.pt exists
            codes["resume"] = main(["train", "--resume", str(trainer.run_dir)])
            codes["resume err"] = capsys.readouterr().err

    result = Trainer(tiny_cfg(), on_step=meanwhile).fit()
    for what in ("same name", "resume"):
        err = codes[f"{what} err"].strip()
        assert codes[what] == 2 and len(err.splitlines()) == 1, err
        assert f"{result.run_dir} is in use by another run (process {os.getpid()})" in err
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]


def test_the_lock_of_a_killed_run_does_not_block_resume(tiny_cfg):
    run = Trainer(tiny_cfg("run.max_steps=4")).fit().run_dir
    (run / ".lock").write_text("999999999\n")  # what a killed run leaves: the file, but no lock held on it
    assert Trainer.resume(run).fit().summary["steps"] == 4  # resumed (and done: it stops at max_steps)


@pytest.mark.parametrize("fault,match", [
    ("empty class", "has no images"),
    ("val class missing from train", "missing from"),
])
def test_a_failed_start_leaves_no_run_directory(tmp_path, fault, match):
    root = make_image_folder(tmp_path / "imgs", per_class=2, size=20)
    if fault == "empty class":
        (root / "train" / "bird").mkdir()
        (root / "val" / "bird").mkdir()
    else:
        make_image_folder(tmp_path / "imgs", classes=("fox",), per_class=2, size=20)
        shutil.rmtree(root / "train" / "fox")
    out = tmp_path / "runs"
    cfg = load_config("fmnist", [*TINY, "data.dataset=folder", f"data.root={root}", "data.workers=0",
                                 f"run.out_dir={out}", "run.name=bad"])
    with pytest.raises(DataError, match=match):
        Trainer(cfg).fit()
    assert not out.exists()
    out.mkdir()  # a parent that was there before stays
    with pytest.raises(DataError, match=match):
        Trainer(cfg).fit()
    assert out.is_dir() and not any(out.iterdir())
