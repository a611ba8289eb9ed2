"""Faults of the machine and of the input, as every command meets them: a full disk, empty checkpoints, a --data that
holds no dataset, unreadable images. Each ends in one line on stderr and exit code 2, never a traceback."""

import errno
import json
import os
import re
import sys

import pytest
from PIL import Image

from convmixer.cli import main
from convmixer.training.config import load_config
from convmixer.training.engine import Trainer
from convmixer.training.state import load_state

from ..data.helpers import make_image_folder, write_idx_dataset
from ..experiments.conftest import write_spec  # noqa: F401  (fixture)
from ..training.conftest import TINY

SETS = sum((["--set", a] for a in TINY), [])


def one_line_error(capsys) -> str:
    """The command's error: one line, the last on stderr (after any progress bar), and no traceback."""
    err = capsys.readouterr().err
    lines = [line.strip() for line in re.split(r"[\r\n]", err) if line.strip()]
    assert lines and lines[-1].startswith("convmixer: error: ") and "Traceback" not in err, err
    assert sum(line.startswith("convmixer: error") for line in lines) == 1, err
    return lines[-1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """last.pt of a two-step run on synthetic data."""
    out = tmp_path_factory.mktemp("runs")
    cfg = load_config("fmnist", [*TINY, f"run.out_dir={out}", "run.name=t", "run.max_steps=2"])
    return Trainer(cfg).fit().run_dir / "last.pt"


@pytest.fixture
def full_disk(monkeypatch):
    """``full_disk(name, after=0)``: from the (after+1)-th on, writing a file whose name contains ``name`` fails with
    ENOSPC when its data is flushed to disk, as on a full file system (every file is written by io.atomic_write)."""
    real_fsync = os.fsync

    def arm(name: str, after: int = 0) -> None:
        seen = [0]

        def fsync(fd: int) -> None:
            try:
                target = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
            except OSError:
                target = ""
            if name in target:
                seen[0] += 1
                if seen[0] > after:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)

    return arm


# ----------------------------------------------------------------------------------------------------------------
# A full disk
# ----------------------------------------------------------------------------------------------------------------
def test_a_full_disk_while_training_keeps_the_last_good_checkpoint(tmp_path, full_disk, capsys, monkeypatch):
    full_disk("last.pt", after=1)  # epoch 1's last.pt is written; epoch 2's finds the disk full
    assert main(["train", *SETS, "--out-dir", str(tmp_path), "--name", "full"]) == 2
    err = one_line_error(capsys)
    run = tmp_path / "full"
    assert "No space left on device" in err and str(run / "last.pt") in err and f"--resume {run}" in err
    assert load_state(run / "last.pt")["progress"]["step"] == 8  # the end of epoch 1, intact
    assert not list(run.glob(".*.tmp*"))  # no half-written temporary file
    monkeypatch.undo()  # space again
    result = Trainer.resume(run).fit()  # the run continues from there
    assert result.summary["steps"] == 16


def test_a_full_disk_is_one_line_in_every_command(checkpoint, tmp_path, full_disk, capsys, monkeypatch, write_spec):
    out = tmp_path / "out"
    cases = [
        ("confusion.png", ["eval", "--checkpoint", str(checkpoint), "--out", str(out)]),
        ("show.png", ["data", "show", "--dataset", "synthetic", "--num", "2", "--out", str(out / "show.png")]),
        ("m.pt", ["export", "--checkpoint", str(checkpoint), "--format", "torchscript", "--out", str(out / "m.pt"),
                  "--no-check"]),
        ("b.json", ["bench", "--model", "convmixer_256_8_ks5_p2", "--model-arg", "dim=8", "--model-arg", "depth=1",
                    "--image-size", "16", "--batch-size", "2", "--repeats", "1", "--warmup", "0",
                    "--latency-repeats", "0", "--no-memory", "--no-reference", "--no-progress", "--plain",
                    "--json-out", str(out / "b.json")]),
        ("results", ["sweep", str(write_spec()), "--out", str(out / "sweeps"), "--report-only", "--no-throughput"]),
    ]
    for name, argv in cases:
        full_disk(name)
        assert main(argv) == 2, argv
        err = one_line_error(capsys)
        assert "No space left on device" in err and name in err, err

    class FullStdout:  # `convmixer predict ... > predictions.txt` on a full disk
        def write(self, text):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def flush(self):
            pass

    image = tmp_path / "a.png"
    Image.new("L", (16, 16), 100).save(image)
    monkeypatch.setattr(sys, "stdout", FullStdout())
    assert main(["predict", "--checkpoint", str(checkpoint), str(image)]) == 2
    assert "No space left on device" in one_line_error(capsys)


# ----------------------------------------------------------------------------------------------------------------
# Empty and unreadable checkpoints
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["eval", "predict", "export"])
def test_an_empty_checkpoint_of_any_kind_is_one_line(command, tmp_path, capsys):
    image = tmp_path / "a.png"
    Image.new("L", (16, 16), 100).save(image)
    extra = {"eval": [], "predict": [str(image)], "export": ["--format", "torchscript", "--out", str(tmp_path / "m")]}
    for name in ("w.pt", "w.pth", "w.pth.tar", "w.safetensors"):
        (tmp_path / name).write_bytes(b"")
        assert main([command, "--checkpoint", str(tmp_path / name), *extra[command]]) == 2
        err = one_line_error(capsys)
        assert f"{tmp_path / name} is empty" in err, err


def test_an_exported_model_is_not_taken_for_a_checkpoint(checkpoint, tmp_path, capsys):
    (tmp_path / "m.onnx").write_bytes(b"\x08\x07")
    assert main(["eval", "--checkpoint", str(tmp_path / "m.onnx")]) == 2
    assert "is an exported ONNX model, not a checkpoint" in one_line_error(capsys)
    assert main(["export", "--checkpoint", str(checkpoint), "--format", "torchscript", "--out", str(tmp_path / "m.pt"),
                 "--no-check"]) == 0
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(tmp_path / "m.pt"), str(tmp_path / "m.onnx")]) == 2
    assert "is an exported TorchScript model, not a checkpoint" in one_line_error(capsys)


# ----------------------------------------------------------------------------------------------------------------
# --data that holds no dataset
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture
def fmnist_elsewhere(tmp_path, monkeypatch):
    """A small Fashion-MNIST in $CONVMIXER_DATA (where the search finds it) and the system copy hidden."""
    from convmixer.data import datasets

    write_idx_dataset(tmp_path / "data" / "fashion_mnist", n_train=64, n_test=16)
    monkeypatch.setenv("CONVMIXER_DATA", str(tmp_path / "data"))
    for name, spec in list(datasets.IDX_DATASETS.items()):
        monkeypatch.setitem(datasets.IDX_DATASETS, name, datasets.IdxSpec(**{**spec.__dict__, "system_dirs": ()}))
    empty = tmp_path / "empty"
    empty.mkdir()
    return empty


def test_data_that_holds_no_dataset_is_an_error_never_another_copy(fmnist_elsewhere, checkpoint, tmp_path, capsys):
    empty = fmnist_elsewhere
    cfg = load_config("fmnist", [*TINY, "data.dataset=fashion_mnist", "data.batch_size=16", f"run.out_dir={tmp_path}",
                                 "run.name=fm", "run.max_steps=1"])
    fm = Trainer(cfg).fit().run_dir / "last.pt"  # trained on the copy in $CONVMIXER_DATA
    runs = tmp_path / "runs"
    for argv in (["eval", "--checkpoint", str(fm), "--data", str(empty), "--out", str(tmp_path / "e")],
                 ["eval", "--checkpoint", str(fm), "--dataset", "folder", "--data", str(empty)],
                 ["train", *SETS, "--set", "data.dataset=fashion_mnist", "--data-root", str(empty), "--out-dir",
                  str(runs)],
                 ["data", "show", "--root", str(empty), "--out", str(tmp_path / "s.png")],
                 ["eval", "--checkpoint", str(checkpoint), "--data", str(empty)]):  # synthetic data reads no files
        assert main(argv) == 2, argv
        assert str(empty) in one_line_error(capsys)
    assert not (tmp_path / "e").exists() and not runs.exists() and not (tmp_path / "s.png").exists()
    assert main(["eval", "--checkpoint", str(fm), "--out", str(tmp_path / "e")]) == 0  # no --data: the usual search


# ----------------------------------------------------------------------------------------------------------------
# Unreadable images
# ----------------------------------------------------------------------------------------------------------------
def test_skipped_images_are_one_line_warnings_and_counted_at_the_end(tmp_path, capsys):
    root = make_image_folder(tmp_path / "imgs", per_class=4, size=20)
    for split in ("train", "val"):
        (root / split / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    settings = ["data.dataset=folder", "data.workers=0", "data.batch_size=4", "data.eval_batch_size=4",
                "data.image_size=16", "aug.crop=none", "schedule.epochs=1"]  # after TINY's, which they replace
    argv = ["train", *SETS, *sum((["--set", a] for a in settings), []), "--data-root", str(root),
            "--out-dir", str(tmp_path / "runs"), "--name", "f"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    warned = [line for line in captured.err.splitlines() if "broken.png" in line]
    assert len(warned) == 2, captured.err  # each file once
    assert all(line.startswith("convmixer: warning: skipped unreadable image") for line in warned), captured.err
    assert "warnings.warn" not in captured.err and "UnreadableImageWarning" not in captured.err
    assert "2 unreadable image files were skipped" in captured.out
    assert json.loads((tmp_path / "runs" / "f" / "summary.json").read_text())["skipped_files"] == 2

    assert main(["eval", "--checkpoint", str(tmp_path / "runs" / "f" / "last.pt"), "--workers", "0",
                 "--out", str(tmp_path / "e")]) == 0
    captured = capsys.readouterr()
    assert "(8 images, 1 unreadable skipped;" in captured.out
    assert [line.startswith("convmixer: warning: skipped") for line in captured.err.splitlines()
            if "broken.png" in line] == [True]
    assert json.loads((tmp_path / "e" / "eval.json").read_text())["skipped_files"] == 1
