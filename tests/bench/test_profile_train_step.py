"""benchmarks/profile_train_step.py: the real step under the profiler, summed into the parts of a ConvMixer step."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "model.name=convmixer_256_8_ks5_p2", "model.dim=16", "model.depth=2", "model.kernel_size=3", "model.patch_size=4",
    "data.dataset=synthetic", "data.synthetic_size=256", "data.synthetic_eval_size=64", "data.synthetic_image_size=16",
    "data.synthetic_chans=1", "data.synthetic_classes=4", "data.batch_size=32", "data.eval_batch_size=64",
    "schedule.epochs=1", "run.ema_decay=0.9", "aug.test_flip=false", "run.plain=true",
]


def load_script():
    spec = importlib.util.spec_from_file_location("profile_train_step", ROOT / "benchmarks" / "profile_train_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_parts_add_up_to_the_profiled_step(tmp_path, monkeypatch, capsys):
    out = tmp_path / "parts.json"
    monkeypatch.setattr(sys, "argv", ["profile_train_step.py", "--set", *TINY, "--warmup", "4", "--steps", "3",
                                      "--threads", "1", "--json-out", str(out)])
    load_script().main()
    report = json.loads(out.read_text())
    assert report["steps"] == 3 and report["batch_size"] == 32
    parts = report["parts_ms"]
    assert "the rest" in parts and "AdamW step (own time)" in parts  # the optimizer ran inside the profiled steps
    assert sum(parts.values()) == pytest.approx(report["step_ms_profiled"], rel=0.01)
    assert report["step_ms_unprofiled"] > 0
    printed = capsys.readouterr().out
    assert "ms a step, of which" in printed and "the rest" in printed
