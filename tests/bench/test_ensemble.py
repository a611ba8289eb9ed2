"""benchmarks/bench_ensemble.py: every combination of the members, scored by their averaged probabilities."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from convmixer import create_model, save_checkpoint
from convmixer.data.datasets import load_idx

from ..data.helpers import write_idx_dataset
from ..serve.helpers import tiny_checkpoint

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("bench_ensemble", ROOT / "benchmarks" / "bench_ensemble.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(script, monkeypatch, *args) -> int:
    monkeypatch.setattr(sys, "argv", ["bench_ensemble.py", *map(str, args)])
    return script.main()


def test_every_combination_is_scored_by_its_mean_probabilities(script, tmp_path, monkeypatch):
    write_idx_dataset(tmp_path / "fm", n_train=10, n_test=60)
    paths = [tiny_checkpoint(tmp_path / f"m{i}.safetensors", seed=i) for i in range(3)]
    out = tmp_path / "ensemble.json"
    assert run(script, monkeypatch, *(f"m{i}={p}" for i, p in enumerate(paths)), "--root", tmp_path / "fm",
               "--out", out) == 0
    result = json.loads(out.read_text())
    rows = {tuple(r["members"]): r for r in result["model"]}
    assert len(rows) == 7 and result["test_images"] == 60  # 3 alone, 3 pairs, 1 triple
    test = load_idx("fashion_mnist", "test", root=tmp_path / "fm", download=False)
    probs = {f"m{i}": script.member_probabilities(str(p), test, use_ema=False) for i, p in enumerate(paths)}
    assert all(torch.allclose(p.sum(1), torch.ones(60)) for p in probs.values())
    for members, row in rows.items():
        mean = torch.stack([probs[m] for m in members]).mean(0)
        expected = 100 * (mean.argmax(1) == test.labels).double().mean().item()
        assert row["top1"] == pytest.approx(expected, abs=0.006)
        alone = [rows[(m,)]["top1"] for m in members]
        assert row["members_mean_top1"] == pytest.approx(sum(alone) / len(alone), abs=0.006)
    shared = result["model_shared_errors"]
    wrong = torch.stack([p.argmax(1) != test.labels for p in probs.values()]).sum(0)
    assert shared["wrong_in_k_members"] == [int((wrong == k).sum()) for k in range(4)]
    assert sum(shared["wrong_in_all_by_class"].values()) == shared["wrong_in_k_members"][3]


def test_members_that_cannot_be_averaged_are_refused_in_one_line(script, tmp_path, monkeypatch, capsys):
    write_idx_dataset(tmp_path / "fm", n_train=10, n_test=20)
    for run_dir in "ab":
        (tmp_path / run_dir).mkdir()
    a = tiny_checkpoint(tmp_path / "a" / "model.safetensors")
    b = tiny_checkpoint(tmp_path / "b" / "model.safetensors", seed=1)
    with pytest.raises(SystemExit) as exc:  # the same run-directory name twice
        run(script, monkeypatch, a, tmp_path / "a" / "model.safetensors", "--root", tmp_path / "fm")
    assert exc.value.code == 2 and "NAME=CHECKPOINT" in capsys.readouterr().err
    # members are named after their run directories; without an EMA there is nothing to score with --weights ema
    assert run(script, monkeypatch, a, b, "--root", tmp_path / "fm", "--weights", "ema") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("bench_ensemble: error:") and "EMA" in err
    torch.manual_seed(0)
    save_checkpoint(create_model("convmixer_fmnist", dim=16, depth=1, num_classes=7), tmp_path / "seven.safetensors")
    assert run(script, monkeypatch, a, f"seven={tmp_path / 'seven.safetensors'}", "--root", tmp_path / "fm") == 2
    assert "predicts 7 classes" in capsys.readouterr().err
