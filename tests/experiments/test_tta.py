import importlib.util
import json
from pathlib import Path

import pytest

from convmixer.experiments.tta import first_reach, main, run_recipe
from convmixer.training.engine import Trainer

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "model.name=convmixer_256_8_ks5_p2", "model.dim=16", "model.depth=2", "model.kernel_size=3", "model.patch_size=4",
    "data.dataset=synthetic", "data.synthetic_size=256", "data.synthetic_eval_size=64", "data.synthetic_image_size=16",
    "data.synthetic_chans=1", "data.synthetic_classes=4", "data.batch_size=32", "data.eval_batch_size=64",
    "schedule.epochs=2", "optim.lr=0.005", "run.plain=true", "run.ema_decay=0", "aug.test_flip=false",
]


def load_bench():
    """benchmarks/bench_tta.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("bench_tta", ROOT / "benchmarks" / "bench_tta.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_points_are_taken_at_fixed_image_counts_outside_the_timed_loop(tmp_path, monkeypatch):
    evaluations = []
    original = Trainer.evaluate

    def spy(self):
        evaluations.append(self.progress.images)
        return original(self)

    monkeypatch.setattr(Trainer, "evaluate", spy)
    result = run_recipe("fmnist", [*TINY, "run.ema_decay=0.9"], eval_every=100, out_dir=tmp_path, log=lambda m: None)
    points = result["points"]
    # 16 steps of 32 images: a point every 100 images (at the first step past it) and one at the end
    assert [p["images"] for p in points] == [128, 224, 320, 416, 512]
    assert set(points[0]["metrics"]) == {"model", "model_flip", "ema", "ema_flip"}
    assert all(0 <= v <= 100 for p in points for v in p["metrics"].values())
    times = [p["train_s"] for p in points]
    assert times == sorted(times) and times[-1] <= result["summary"]["wall_time_s"] + 0.05
    assert evaluations == [512]  # the engine evaluated only once, after the last epoch (run.eval_every is off)
    assert result["summary"]["test_top1"] == pytest.approx(points[-1]["metrics"]["model"], abs=0.01)


def test_an_extra_ema_of_the_recipes_decay_is_the_recipes_ema(tmp_path):
    result = run_recipe("fmnist", [*TINY, "run.ema_decay=0.9"], eval_every=200, out_dir=tmp_path,
                        ema_decays=(0.9, 0.5), log=lambda m: None)
    points = result["points"]
    assert set(points[0]["metrics"]) == {"model", "model_flip", "ema", "ema_flip", "ema@0.9_flip", "ema@0.5_flip"}
    # the same decay from the same first step: the same weights and buffers, so the same accuracy at every point
    assert [p["metrics"]["ema@0.9_flip"] for p in points] == [p["metrics"]["ema_flip"] for p in points]


def test_the_recipes_ema_is_recalibrated_before_each_point_when_it_asks(tmp_path, monkeypatch):
    calls = []
    original = Trainer.recalibrate_ema

    def spy(self):
        calls.append(self.progress.images)
        return original(self)

    monkeypatch.setattr(Trainer, "recalibrate_ema", spy)
    run_recipe("fmnist", [*TINY, "run.ema_decay=0.9", "run.ema_bn_images=64"], eval_every=200, out_dir=tmp_path,
               log=lambda m: None)
    assert calls == [224, 416, 512, 512]  # each point's, then the engine's own evaluation after the last epoch
    calls.clear()
    run_recipe("fmnist", [*TINY, "run.ema_decay=0.9"], eval_every=200, out_dir=tmp_path / "plain", log=lambda m: None)
    assert calls == []


def test_an_ema_decay_outside_0_1_is_refused(tmp_path, capsys):
    for entry, argv in ((main, ["--ema-decays", "1.0", "--json", str(tmp_path / "r.json")]),
                        (load_bench().main, ["--recipe", "a: fmnist", "--ema-decays", "0", "--out",
                                             str(tmp_path / "r.json")])):
        with pytest.raises(SystemExit) as exc:
            entry(argv)
        assert exc.value.code == 2 and "--ema-decays" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_the_runs_eta_is_recorded_against_the_time_the_run_took(tmp_path, monkeypatch):
    import convmixer.experiments.tta as tta

    monkeypatch.setattr(tta, "ETA_CHECK_S", (0.0, 1e9))  # after the first step; the second never comes
    result = run_recipe("fmnist", TINY, eval_every=10_000, out_dir=tmp_path, log=lambda m: None)
    (check,) = result["eta_checks"]
    assert check["eta_s"] > 0 and check["predicted_total_s"] == pytest.approx(check["train_s"] + check["eta_s"], abs=0.2)
    actual = check["predicted_total_s"] / (1 + check["error"])
    assert actual >= result["summary"]["wall_time_s"] - 0.1  # training time plus the run's epoch ends


def test_first_reach():
    points = [{"images": i, "train_s": i / 10, "epoch": i / 100, "metrics": {"model": acc}}
              for i, acc in ((100, 80.0), (200, 93.0), (300, 92.0), (400, 94.5))]
    assert first_reach(points, "model", 93.0)["images"] == 200
    assert first_reach(points, "model", 94.0)["train_s"] == 40.0
    assert first_reach(points, "model", 95.0) is None


def test_the_benchmark_compares_recipes_in_alternating_order(tmp_path):
    bench = load_bench()
    a, b = bench.parse_recipe("a: fmnist x=1"), bench.parse_recipe("b: fmnist_v1")
    assert a == {"label": "a", "config": "fmnist", "overrides": ["x=1"]}
    assert [(r["label"], s) for r, s in bench.order([a, b], [0, 1, 2])] == \
        [("a", 0), ("b", 0), ("b", 1), ("a", 1), ("a", 2), ("b", 2)]
    with pytest.raises(SystemExit, match="LABEL: CONFIG"):
        bench.parse_recipe("fmnist")
    out = tmp_path / "r.json"
    recipe = "tiny: fmnist " + " ".join(TINY)
    fast = recipe.replace("tiny", "fast") + " optim.lr=0.02 run.ema_decay=0.9 aug.test_flip=true"
    assert bench.main(["--recipe", recipe, "--recipe", fast,
                       "--eval-every", "256", "--targets", "50", "--threads", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [r["label"] for r in report["runs"]] == ["tiny", "fast"] and out.with_suffix(".png").is_file()
    # each recipe is judged by what it reports: the EMA where it keeps one, with flip TTA where it asks for it
    assert report["machine"]["cpu"] and [r["metric"] for r in report["runs"]] == ["model", "ema_flip"]
    row = report["summary"][0]
    assert row["reached_50.0"] in ("0/1", "1/1") and row["final_mean"] == report["runs"][0]["final"]


def test_main_writes_json(tmp_path, monkeypatch):
    import convmixer.fast.allocator as allocator

    calls = []
    monkeypatch.setattr(allocator, "tune_malloc", lambda: calls.append(1) or True)
    out = tmp_path / "one.json"
    assert main(["--config", "fmnist", "--set", *TINY, "run.max_steps=3", "--eval-every", "1000",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [p["images"] for p in result["points"]] == [96]
    assert result["gemm_gflops"]["before"] > 0 and result["machine"]["kernel_lanes"] in (None, 8, 16)
    # the runs are timed with the allocator as `convmixer train` sets it (page faults otherwise cost a quarter of a
    # patch-1 step)
    assert calls == [1] and result["malloc_tuned"] is True
