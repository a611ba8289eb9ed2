"""What a training run prints: the epoch line, silence off rank 0, durations."""

from pathlib import Path

from convmixer.training.console import Console, duration
from convmixer.training.tasks import ClassificationTask


def test_duration():
    assert duration(0) == "0m00s" and duration(-3) == "0m00s"
    assert duration(187.9) == "3m07s"
    assert duration(3723) == "1h02m03s"


def test_epoch_line_and_stop_message(capsys):
    console = Console(enabled=True, progress=False, task=ClassificationTask(), epochs=10, steps_per_epoch=468)
    console.epoch_line({"epoch": 2, "train_loss": 0.61234, "train_top1": 80.5, "eval_loss": 0.4, "eval_top1": 88.12,
                        "eval_top5": 99.5, "images_per_s": 1106.6, "elapsed_s": 130.0})
    console.stopped("SIGINT", 700, Path("runs/x/last.pt"), Path("runs/x"))
    out = capsys.readouterr().out.splitlines()
    assert out[0] == ("epoch 2/10 | train loss 0.6123 acc 80.50% | test loss 0.4000 top-1 88.12% top-5 99.50% | "
                      "1107 img/s, 2m10s")
    assert out[-1] == ("SIGINT: stopped after step 700; saved runs/x/last.pt. "
                       "Continue with: convmixer train --resume runs/x")


def test_other_ranks_print_nothing(capsys):
    console = Console(enabled=False, progress=True, task=ClassificationTask(), epochs=1, steps_per_epoch=4)
    console.announce(resuming=False, model="m", params=1, dataset="d", batch_size=2, world_size=2, plan="p",
                     run_dir=Path("r"))
    console.start_epoch(0, 0)
    console.step({"loss_sum": 1.0, "samples": 2.0, "correct": 1.0}, 10.0, 5.0)
    console.end_epoch()
    console.epoch_line({"epoch": 1, "images_per_s": 1.0, "elapsed_s": 1.0})
    assert console.bar is None and capsys.readouterr() == ("", "")


def test_announce_names_the_processes(capsys):
    console = Console(enabled=True, progress=False, task=ClassificationTask(), epochs=3, steps_per_epoch=8)
    console.announce(resuming=True, model="convmixer_fmnist", params=165002, dataset="fashion_mnist", batch_size=64,
                     world_size=2, plan="train on cpu", run_dir=Path("runs/a"))
    assert capsys.readouterr().out == ("resuming convmixer_fmnist (165,002 params) on fashion_mnist: 3 epochs x 8 "
                                       "steps, batch 64 x 2 processes; train on cpu\nrun directory: runs/a\n")
