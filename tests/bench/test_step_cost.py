"""benchmarks/bench_step_cost.py: shapes side by side, ratios against the first shape per round."""

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ratios_are_per_round_against_the_first_shape(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_step_cost", ROOT / "benchmarks" / "bench_step_cost.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.parse_shape("w160:dim=160,patch_size=1") == ("w160", ["dim=160", "patch_size=1"])
    summary = tmp_path / "summary.json"
    monkeypatch.setattr(sys, "argv", ["bench_step_cost.py", "--shape", "base:dim=16,depth=2", "--shape",
                                      "wide:dim=32,depth=2", "--rounds", "2", "--repeats", "2", "--isa", "native",
                                      "--out-dir", str(tmp_path / "runs"), "--summary", str(summary)])
    script.main()
    (results,) = json.loads(summary.read_text())["results"].values()
    assert results["base"]["ratio_median"] == 1.0
    wide = results["wide"]
    ratios = [a / b for a, b in zip(wide["step_ms_per_round"], results["base"]["step_ms_per_round"])]
    assert len(ratios) == 2 and wide["ratio_range"] == [round(min(ratios), 3), round(max(ratios), 3)]
    assert len(list((tmp_path / "runs").glob("native-*-r*.json"))) == 4
