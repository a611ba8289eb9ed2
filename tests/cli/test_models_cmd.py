import json
import subprocess
import sys

import pytest

from convmixer.cli import main


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "convmixer_1536_20" in out and "81.37" in out
    assert main(["list", "convmixer_768*"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("convmixer_768_32")


def test_info_counts(capsys):
    assert main(["info", "convmixer_256_8_ks5_p2", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == 594_186 and info["tokens"] == "16x16"
    assert main(["info", "convmixer_256_8_ks5_p2", "--image-size", "28", "--num-classes", "3", "--in-chans", "1"]) == 0
    out = capsys.readouterr().out
    assert "1x28x28" in out and "14x14" in out


@pytest.mark.parametrize("argv,match", [
    (["info", "convmixer_9999"], "unknown model"),
    (["info", "convmixer_256_8_ks5_p2", "--image-size", "1"], "smaller than"),
    (["info", "convmixer_256_8_ks5_p2", "--num-classes", "-3"], "num_classes"),
    (["info", "convmixer_256_8_ks5_p2", "--image-size", "abc"], "invalid int"),
    (["frobnicate"], "invalid choice"),
])
def test_errors_are_one_line_and_exit_2(argv, match):
    proc = subprocess.run([sys.executable, "-m", "convmixer", *argv], capture_output=True, text=True)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert match in proc.stderr and "Traceback" not in proc.stderr
