import json
import subprocess
import sys
import time

import pytest
from PIL import Image

from convmixer.cli import main

from ..training.conftest import TINY

SETS = sum((["--set", a] for a in TINY), [])


def cli(*argv, timeout=120):
    return subprocess.run([sys.executable, "-m", "convmixer", *argv], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("argv,match", [
    (["--lr", "-1"], "optim.lr must be > 0"),
    (["--set", "model.patch_size=64"], "larger than the 28x28"),
    (["--model", "convmixer_9000"], "unknown model"),
    (["--dataset", "imagenet21k"], "unknown dataset"),
    (["--data-root", "/no/such/place"], "does not exist"),
    (["--out-dir", "/proc/convmixer-runs"], "cannot write to the output directory"),
    (["--set", "optim.lr=abc"], "must be a number"),
    (["--set", "optim.lrate=1"], "did you mean optim.lr"),
    (["--epochs", "x"], "invalid int"),
    (["--config", "nope.yaml"], "not found"),
    (["--resume", "/tmp/no-such-run"], "nothing to resume"),
])
def test_bad_settings_fail_fast_with_one_line(argv, match):
    start = time.monotonic()
    proc = cli("train", *argv)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and match in proc.stderr, proc.stderr
    assert time.monotonic() - start < 30  # before any data or model work


def test_print_config_shows_resolved_values(capsys):
    assert main(["train", "--epochs", "3", "--set", "optim.lr=2e-3", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "epochs: 3" in out and "lr: 0.002" in out


def test_resume_refuses_other_settings(tmp_path):
    proc = cli("train", "--resume", str(tmp_path), "--epochs", "3")
    assert proc.returncode == 2 and "--resume continues a run with its saved config" in proc.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    proc = cli("train", *SETS, "--out-dir", str(out), "--name", "t", timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "test top-1" in proc.stdout
    return out / "t"


def test_train_eval_predict_end_to_end(trained, tmp_path):
    summary = json.loads((trained / "summary.json").read_text())
    proc = cli("eval", "--checkpoint", str(trained / "best.pt"), "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["num_samples"] == 64 and len(report["per_class"]) == 4
    assert (tmp_path / "confusion.png").stat().st_size > 1000
    best = max(json.loads(line)["eval_top1"] for line in (trained / "metrics.jsonl").read_text().splitlines())
    assert report["top1"] == pytest.approx(best, abs=1e-6)
    assert summary["best_top1"] == pytest.approx(best)

    images = tmp_path / "imgs"
    (images / "sub").mkdir(parents=True)
    Image.new("L", (16, 16), 200).save(images / "a.png")
    Image.new("RGB", (40, 30), (10, 20, 30)).save(images / "sub" / "b.jpg")
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (images / "notes.txt").write_text("not an image")
    proc = cli("predict", "--checkpoint", str(trained / "last.pt"), "--top-k", "2", "--json", str(images))
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["image"].split("/")[-1] for line in lines] == ["a.png", "b.jpg"]
    assert all(len(line["top"]) == 2 and sum(t["probability"] for t in line["top"]) <= 1.0001 for line in lines)
    assert "broken.png" in proc.stderr and "skipped" in proc.stderr
    proc = cli("predict", "--checkpoint", str(trained / "last.pt"), str(images / "broken.png"))
    assert proc.returncode == 2 and "no image could be read" in proc.stderr


def test_eval_on_the_training_images(trained, tmp_path):
    """--split train: the training images without augmentation, reported beside (not over) the test figures."""
    assert cli("eval", "--checkpoint", str(trained / "last.pt"), "--out", str(tmp_path)).returncode == 0
    test_report = (tmp_path / "eval.json").read_text()
    proc = cli("eval", "--checkpoint", str(trained / "last.pt"), "--out", str(tmp_path), "--split", "train")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "eval-train.json").read_text())
    assert report["split"] == "train" and report["num_samples"] == 256 and len(report["per_class"]) == 4
    assert json.loads(test_report)["split"] == "test" and (tmp_path / "eval.json").read_text() == test_report
    assert (tmp_path / "confusion-train.png").stat().st_size > 1000
    assert "(256 training images;" in proc.stdout.splitlines()[-1]
    proc = cli("eval", "--checkpoint", str(trained / "last.pt"), "--split", "val")
    assert proc.returncode == 2 and "invalid choice: 'val'" in proc.stderr


def test_eval_does_test_time_flip_as_the_run_did(tmp_path):
    out = tmp_path / "runs"
    proc = cli("train", *SETS, "--set", "aug.test_flip=true", "--set", "run.max_steps=4", "--set", "run.ema_decay=0.9",
               "--out-dir", str(out), "--name", "f", timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((out / "f" / "summary.json").read_text())
    reported = summary["test_top1"]
    # the headline says how the figure was measured and gives the EMA's beside it
    assert summary["test_flip"] is True
    assert f"EMA top-1 {summary['test_ema_top1']:.2f}%, with test-time flip" in proc.stdout.splitlines()[-1]
    for flags, flip in (([], True), (["--no-test-flip"], False), (["--test-flip"], True)):
        proc = cli("eval", "--checkpoint", str(out / "f" / "last.pt"), "--out", str(tmp_path / "e"), *flags)
        assert proc.returncode == 0, proc.stderr
        report = json.loads((tmp_path / "e" / "eval.json").read_text())
        assert report["test_flip"] is flip
        if flip:
            assert report["top1"] == pytest.approx(reported, abs=1e-6)


def test_eval_errors(trained, tmp_path):
    proc = cli("eval", "--checkpoint", str(tmp_path / "missing.pt"))
    assert proc.returncode == 2 and "not found" in proc.stderr
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage" * 100)
    proc = cli("eval", "--checkpoint", str(bad))
    assert proc.returncode == 2 and "corrupt" in proc.stderr
    proc = cli("eval", "--checkpoint", str(trained / "best.pt"), "--dataset", "fashion_mnist")
    assert proc.returncode == 2 and "predicts 4 classes" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    proc = cli("eval", "--checkpoint", str(trained / "best.pt"), "--out", str(blocker / "report"))
    assert proc.returncode == 2 and "is not a directory" in proc.stderr and "Traceback" not in proc.stderr
