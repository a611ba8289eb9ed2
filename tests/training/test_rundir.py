"""The run directory's logs: metrics.jsonl and the TensorBoard events beside it."""

import json
import sys

import pytest

from convmixer.training.engine import Trainer
from convmixer.training.rundir import RunLog


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
