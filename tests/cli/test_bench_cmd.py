import json
import subprocess
import sys

import pytest

from convmixer.cli import main

TINY = ["--model", "convmixer_256_8_ks5_p2", "--model-arg", "dim=16", "--model-arg", "depth=1",
        "--model-arg", "kernel_size=3", "--image-size", "10", "--batch-size", "4", "--repeats", "2", "--warmup", "1",
        "--latency-repeats", "2", "--no-progress"]


def test_bench_prints_a_table_and_json(capsys, tmp_path):
    out_file = tmp_path / "bench.json"
    assert main(["bench", *TINY, "--mode", "train", "--in-chans", "1", "--num-classes", "3", "--no-memory",
                 "--json-out", str(out_file)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    data = json.loads(out[-1])
    assert data == json.loads(out_file.read_text())
    assert data["input_shape"] == [4, 1, 10, 10] and data["mode"] == "train" and data["ratio"] > 0
    assert data["config"]["model_args"] == {"dim": 16, "depth": 1, "kernel_size": 3}
    table = "\n".join(out[:-1])
    for word in ("images/s", "p50 ms@1", "peak MiB", "fast", "reference", "speed vs reference"):
        assert word in table


def test_bench_flags_reach_the_plan(capsys):
    assert main(["bench", *TINY, "--dtype", "float32", "--no-channels-last", "--kernel", "native", "--no-compile",
                 "--no-reference", "--no-memory", "--threads", "1"]) == 0
    data = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "NCHW, float32, kernel=native, compile=off" in data["plan"]
    assert data["ratio"] is None and set(data["runs"]) == {"fast"} and data["threads"] == 1


def test_bench_onnxruntime_backend(capsys):
    pytest.importorskip("onnxruntime")
    assert main(["bench", *TINY, "--backend", "onnxruntime", "--threads", "1"]) == 0
    data = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert data["backend"] == "onnxruntime" and "onnxruntime" in data["plan"]
    assert data["runs"]["fast"]["peak_memory_bytes"] is not None and data["ratio"] > 0


@pytest.mark.parametrize("argv,match", [
    (["bench", "--model", "convmixer_256_8_ks5_p2", "--backend", "onnxruntime", "--mode", "train"], "inference only"),
    (["bench", "--model", "convmixer_9999"], "unknown model"),
    (["bench", "--model", "convmixer_1536_20", "--image-size", "4"], "smaller than"),
    (["bench", "--model", "convmixer_256_8_ks5_p2", "--device", "cuda"], "CUDA is not available"),
    (["bench", "--model", "convmixer_256_8_ks5_p2", "--dtype", "fp8"], "invalid choice"),
    (["bench", "--model", "convmixer_256_8_ks5_p2", "--batch-size", "0"], "batch-size"),
    (["bench", "--model", "convmixer_256_8_ks5_p2", "--model-arg", "dim"], "KEY=VALUE"),
    (["bench", "--model", "convmixer_256_8_ks5_p2", "--model-arg", "wings=2"], "cannot build"),
])
def test_bench_errors_are_one_line_and_exit_2(argv, match):
    import torch

    if "cuda" in argv and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = subprocess.run([sys.executable, "-m", "convmixer", *argv], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert match in proc.stderr and "Traceback" not in proc.stderr
