import contextlib
import json
import os
import subprocess
import sys

import pytest
import torch

from convmixer import create_model
from convmixer.checkpoint import save_checkpoint
from convmixer.cli import main

from ..export.helpers import fmnist_images, random_uint8, reference, tiny_convmixer

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
MEAN, STD = [0.2860], [0.3530]
CONFIG = {"dim": 32, "depth": 2, "kernel_size": 5, "patch_size": 4, "num_classes": 10, "in_chans": 1, "act": "gelu"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A checkpoint laid out as `convmixer train` writes it (model, EMA, config, classes, mean/std)."""
    model, ema = tiny_convmixer(seed=1), tiny_convmixer(seed=2)
    path = tmp_path_factory.mktemp("run") / "best.pt"
    torch.save({"model": model.state_dict(), "model_name": "convmixer_fmnist", "model_config": CONFIG,
                "config": {"data": {"dataset": "fashion_mnist", "image_size": 28}}, "model_ema": ema.state_dict(),
                "classes": CLASSES, "mean": MEAN, "std": STD, "image_size": 28, "step": 10}, path)
    return path, model, ema


def export(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["export", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_export_onnx_from_a_training_checkpoint(trained, tmp_path, capsys):
    from convmixer.export import OnnxRunner

    fmnist_batch = fmnist_images()
    ckpt, model, _ = trained
    out = tmp_path / "deploy" / "fmnist.onnx"  # missing directories are created
    code, stdout, _ = export(capsys, "--checkpoint", str(ckpt), "--format", "onnx", "--out", str(out))
    assert code == 0 and out.is_file()
    assert "ONNX opset 18" in stdout and "uint8 (batch, 1, 28, 28) 0..255" in stdout
    assert "top-1 agreement 8/8" in stdout
    runner = OnnxRunner(out)
    assert runner.metadata["classes"] == CLASSES and runner.metadata["dataset"] == "fashion_mnist"
    assert runner.metadata["mean"] == MEAN and runner.metadata["source_checkpoint"] == "best.pt"
    want = reference(model, fmnist_batch, MEAN, STD)
    got = runner.torch(fmnist_batch)
    assert (got - want).abs().max() <= 1e-4 and torch.equal(got.argmax(1), want.argmax(1))
    assert sorted(os.listdir(out.parent)) == ["fmnist.onnx"]  # no temporary files left


def test_export_torchscript_of_the_ema_weights_as_json(trained, tmp_path, capsys):
    from convmixer.export import load_torchscript

    ckpt, model, ema = trained
    out = tmp_path / "fmnist.pt"
    code, stdout, _ = export(capsys, "--checkpoint", str(ckpt), "--format", "torchscript", "--out", str(out),
                             "--ema", "--json")
    assert code == 0
    report = json.loads(stdout)
    assert report["format"] == "torchscript" and report["check"]["max_abs_diff"] <= 1e-4
    module, meta = load_torchscript(out)
    images = random_uint8(3)
    assert (module(images) - reference(ema, images, MEAN, STD)).abs().max() <= 1e-4
    assert (module(images) - reference(model, images, MEAN, STD)).abs().max() > 1e-2  # really the EMA weights
    assert meta["classes"] == CLASSES


def test_fixed_batch_float_input_and_other_size(trained, tmp_path, capsys):
    from convmixer.export import OnnxRunner

    ckpt, model, _ = trained
    out = tmp_path / "f.onnx"
    code, stdout, _ = export(capsys, "--checkpoint", str(ckpt), "--format", "onnx", "--out", str(out),
                             "--no-dynamic-batch", "--input-dtype", "float32", "--image-size", "32", "--opset", "20")
    assert code == 0 and "float32 (1, 1, 32, 32) 0..1" in stdout
    runner = OnnxRunner(out)
    assert runner.input_shape == [1, 1, 32, 32] and runner.metadata["opset"] == 20
    images = random_uint8(1, size=32)
    assert (runner.torch(images.float() / 255) - reference(model, images, MEAN, STD)).abs().max() <= 1e-4


def _not_a_convmixer(tmp_path):
    torch.manual_seed(0)
    return save_checkpoint(create_model("resnet20", num_classes=10, in_chans=1), tmp_path / "resnet20.safetensors")


def _random_tensors(tmp_path):
    path = tmp_path / "random.pt"
    torch.save({"weights": torch.randn(4, 4), "bias": torch.randn(4)}, path)
    return path


def _garbage(tmp_path):
    path = tmp_path / "garbage.pth.tar"
    path.write_bytes(os.urandom(1000))
    return path


@pytest.mark.parametrize("case,extra,match", [
    ("resnet", [], "need a ConvMixer; got resnet20"),
    ("random", [], "does not say which model it holds"),
    ("random", ["--model", "convmixer_fmnist"], "does not fit convmixer_fmnist"),
    ("missing", [], "checkpoint not found"),
    ("trained", ["--image-size", "3"], "image size 3 is smaller than convmixer_fmnist's patch size 4"),
    ("trained", ["--image-size", "0"], "positive integer"),
    ("trained", ["--opset", "16"], "opset must be an integer >= 17"),
    ("trained", ["--format", "torchscript", "--opset", "18"], "ONNX export only"),
    ("garbage", [], "corrupt or truncated"),
])
def test_bad_input_is_one_line_exit_2_and_no_file(trained, tmp_path, capsys, case, extra, match):
    ckpt = {"resnet": _not_a_convmixer, "random": _random_tensors, "missing": lambda p: p / "nope.pt",
            "garbage": _garbage, "trained": lambda p: trained[0]}[case](tmp_path)
    out = tmp_path / "out" / "model.onnx"
    argv = ["--checkpoint", str(ckpt), "--format", "onnx", "--out", str(out), *extra]
    if "--format" in extra:
        argv[2:4] = []
    code, _, err = export(capsys, *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("convmixer: error: "), err
    assert match in err, err
    assert not out.parent.exists()


def test_unwritable_output_paths(trained, tmp_path, capsys):
    ckpt = str(trained[0])
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    for out, match in [(a_file / "model.onnx", "is not a directory"), (tmp_path, "is a directory"),
                       (trained[0], "is the checkpoint itself")]:
        code, _, err = export(capsys, "--checkpoint", ckpt, "--format", "onnx", "--out", str(out))
        assert code == 2 and len(err.strip().splitlines()) == 1 and match in err, err
    if os.geteuid() != 0:  # root writes anywhere: the permission check only means something for other users
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        code, _, err = export(capsys, "--checkpoint", ckpt, "--format", "onnx", "--out", str(ro / "m.onnx"))
        assert code == 2 and "not writable" in err
    assert sorted(os.listdir(tmp_path)) == ["file.txt", "ro"][: 1 + (os.geteuid() != 0)]


def test_a_write_that_fails_halfway_leaves_no_partial_file(trained, tmp_path, capsys, monkeypatch):
    import convmixer.io

    real = convmixer.io.atomic_write

    class DiskFull:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            raise OSError(28, "No space left on device")

    @contextlib.contextmanager
    def half_then_full(path, mode="wb"):
        with real(path, mode) as f:
            yield DiskFull(f)

    monkeypatch.setattr(convmixer.io, "atomic_write", half_then_full)
    out = tmp_path / "model.onnx"
    for fmt in ("onnx", "torchscript"):
        code, _, err = export(capsys, "--checkpoint", str(trained[0]), "--format", fmt, "--out", str(out))
        assert code == 2 and "No space left on device" in err and len(err.strip().splitlines()) == 1
        assert os.listdir(tmp_path) == []


def test_a_failed_check_writes_nothing_and_keeps_an_old_file(trained, tmp_path, capsys, monkeypatch):
    from convmixer.export import api
    from convmixer.export.common import Agreement

    out = tmp_path / "model.onnx"
    out.write_bytes(b"previous export")
    monkeypatch.setattr(api, "compare_logits", lambda a, b: Agreement(8, 0.5, 3.0, 7))
    code, _, err = export(capsys, "--checkpoint", str(trained[0]), "--format", "onnx", "--out", str(out))
    assert code == 2 and "does not reproduce the PyTorch model" in err and "nothing was written" in err
    assert out.read_bytes() == b"previous export" and os.listdir(tmp_path) == ["model.onnx"]


def test_errors_reach_the_shell_as_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "convmixer", "export", "--checkpoint", str(_not_a_convmixer(tmp_path)),
                           "--format", "onnx", "--out", str(tmp_path / "m.onnx")], capture_output=True, text=True)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "need a ConvMixer" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "m.onnx").exists()


def test_without_the_export_extra_the_error_says_how_to_install(trained, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    out = tmp_path / "m.onnx"
    code, _, err = export(capsys, "--checkpoint", str(trained[0]), "--format", "onnx", "--out", str(out))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "needs the export extra" in err and "pip install -e '.[export]'" in err and not out.exists()
    code, _, _ = export(capsys, "--checkpoint", str(trained[0]), "--format", "torchscript", "--out", str(out))
    assert code == 0 and out.is_file()  # TorchScript needs nothing beyond torch
