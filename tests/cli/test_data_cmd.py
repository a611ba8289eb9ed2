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


def test_show_draws_segmentation_masks(tmp_path, capsys):
    from tests.data.test_segfolder import make_seg_folder

    root = make_seg_folder(tmp_path / "seg")
    out = tmp_path / "seg.png"
    assert main(["data", "show", "--dataset", "seg_folder", "--root", str(root), "--image-size", "32", "--num", "4",
                 "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "SegAugment" in capsys.readouterr().out
    assert main(["data", "show", "--dataset", "seg_folder", "--root", str(root), "--augment", "paper", "--num", "2",
                 "--out", str(out)]) == 2
    assert "set aug.mixup_alpha=0" in capsys.readouterr().err


def test_segmentation_overlay_colours_classes_only():
    import torch

    from convmixer.data.palette import overlay

    image = torch.full((1, 2, 2), 0.5)
    mask = torch.tensor([[0, 1], [255, 2]], dtype=torch.uint8)
    out = overlay(image, mask)
    assert out.shape == (3, 2, 2) and torch.allclose(out[:, 0, 0], torch.full((3,), 0.5))
    assert not torch.allclose(out[:, 0, 1], torch.full((3,), 0.5)) and out[0, 0, 1] > out[1, 0, 1]  # VOC 1: red


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
