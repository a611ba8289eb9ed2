"""`convmixer data show`."""

import subprocess
import sys

import pytest

from convmixer.cli import main


def test_show_writes_a_png(tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["data", "show", "--dataset", "synthetic", "--num", "6", "--seed", "1", "--out", str(out)]) == 0
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert "wrote" in capsys.readouterr().out
    from PIL import Image

    with Image.open(out) as img:
        assert img.width > 400 and img.height > 300


def test_show_with_flags(tmp_path):
    out = tmp_path / "g.png"
    argv = ["data", "show", "--dataset", "synthetic", "--augment", "none", "--randaugment", "rand-m9-mstd0.5-inc1",
            "--crop", "pad", "--num", "3", "--out", str(out)]
    assert main(argv) == 0 and out.exists()


@pytest.mark.parametrize("argv,match", [
    (["data", "show", "--augment", "fancy"], "unknown augmentation preset"),
    (["data", "show", "--out", "x.jpg"], ".png"),
    (["data", "show", "--dataset", "cifar10", "--root", "/nonexistent"], "CIFAR-10 not found"),
    (["data", "show", "--dataset", "synthetic", "--randaugment", "rand-zz"], "RandAugment"),
    (["data", "show", "--num", "0"], "--num"),
    (["data", "show", "--dataset", "synthetic", "--hflip", "2"], "hflip"),
])
def test_bad_input_is_one_line_and_exit_2(argv, match, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and match in err


def test_a_real_process_prints_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "convmixer", "data", "show", "--dataset", "cifar10", "--root",
                           str(tmp_path)], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "cs.toronto.edu" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "convmixer", "data", "show", "--num", "x"], capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode == 2 and "invalid int" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
