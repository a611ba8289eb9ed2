"""The harness on tiny models: what it measures, how it reports, how a backend plugs in."""

import pytest
import torch

from convmixer.bench import BACKENDS, Backend, BenchConfig, BenchResult, percentile, run_bench
from convmixer.bench.backends import Setup
from convmixer.bench.harness import RunResult, cpu_step_peak
from convmixer.bench.settings import check_config
from convmixer.errors import ConfigError

TINY = dict(model="convmixer_256_8_ks5_p2", model_args={"dim": 16, "depth": 1, "kernel_size": 3}, image_size=12,
            batch_size=4, repeats=2, warmup=1, latency_repeats=2, progress=False)


@pytest.mark.parametrize("mode", ["train", "infer"])
def test_run_bench_fast_against_reference(mode):
    result = run_bench(BenchConfig(mode=mode, memory=False, **TINY))
    data = result.as_dict()
    assert set(data["runs"]) == {"fast", "reference"}
    assert data["input_shape"] == [4, 3, 12, 12] and data["batch_size"] == 4 and data["mode"] == mode
    assert data["ratio"] > 0 and data["ratio_min"] <= data["ratio"] <= data["ratio_max"]
    for run in data["runs"].values():
        assert run["images_per_s"] > 0 and len(run["step_ms"]) == 2
        assert run["latency_ms_p50"] > 0 and run["latency_ms_p95"] >= run["latency_ms_p50"]
    assert "reference" in data["runs"]["reference"]["description"]
    assert data["plan"] == data["runs"]["fast"]["description"]


def test_cpu_memory_is_measured_in_fresh_processes():
    # activations of ~0.5 MiB a tensor: above glibc's trim threshold, so the resident set follows them (TINY's few
    # KiB are served from memory the process already holds, and a step can rightly measure 0)
    sized = {**TINY, "model_args": {"dim": 32, "depth": 1, "kernel_size": 3}, "image_size": 32, "batch_size": 16}
    result = run_bench(BenchConfig(mode="train", **{**sized, "latency_repeats": 0}))
    for run in result.runs.values():
        assert run.peak_memory_bytes and run.peak_memory_bytes > 0, run.memory_method
        assert run.memory_method.startswith("cpu:")
    assert result.memory_ratio() > 0


def test_no_reference_and_plain():
    result = run_bench(BenchConfig(reference=False, plain=True, memory=False, **TINY))
    assert set(result.runs) == {"fast"} and result.ratio() is None and result.as_dict()["ratio"] is None
    assert "plain path forced" in result.plan


def test_baseline_models_use_their_own_plain_run_as_reference():
    cfg = dict(TINY, model="resnet20", model_args={}, image_size=16)
    result = run_bench(BenchConfig(memory=False, **cfg))
    assert "same architecture" in result.runs["reference"].description


def test_step_peak_counts_a_steps_allocations():
    class Hog:
        def step(self):
            a = torch.ones(32 * 2**20 // 4)  # 32 MiB, touched
            del a

    peak, method = cpu_step_peak(Hog(), warmup=1)
    assert method.startswith("cpu:")
    assert peak >= 16 * 2**20


def test_percentile_and_ratio():
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 95) == pytest.approx(3.85)
    runs = {"fast": RunResult("fast", "", 8, [1.0, 2.0, 1.0]),
            "reference": RunResult("reference", "", 8, [3.0, 4.0, 5.0])}
    result = BenchResult(BenchConfig("x"), {}, "", runs)
    assert result.ratio() == (3.0, 2.0, 5.0)
    assert runs["fast"].images_per_s == 8.0


@pytest.mark.parametrize("kwargs,match", [
    (dict(mode="eval"), "mode"),
    (dict(dtype="fp8"), "dtype"),
    (dict(kernel="x"), "kernel"),
    (dict(batch_size=0), "batch-size"),
    (dict(repeats=0), "repeats"),
    (dict(device="cuda:99" if torch.cuda.is_available() else "cuda"), "CUDA|no CUDA device"),
    (dict(device="quantum"), "bad device"),
])
def test_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        check_config(BenchConfig("convmixer_256_8_ks5_p2", **kwargs))


def test_image_smaller_than_patch_and_unknown_model():
    with pytest.raises(ConfigError, match="smaller than"):
        run_bench(BenchConfig(**{**TINY, "model": "convmixer_1536_20", "image_size": 5, "model_args": {}}))
    with pytest.raises(ConfigError, match="unknown model"):
        run_bench(BenchConfig(**{**TINY, "model": "convmixer_0_0"}))


def test_a_backend_plugs_in(monkeypatch):
    class Counter:
        def __init__(self, name):
            self.name, self.description, self.calls = name, f"counter {name}", 0

        def step(self):
            self.calls += 1

        latency_step = step

        def sync(self):
            pass

    class CountingBackend(Backend):
        name = "counting"

        def setup(self, cfg):
            return Setup(Counter("fast"), Counter("reference"), 2, (2, 3, 8, 8), torch.device("cpu"), "cpu", "plan")

    monkeypatch.setitem(BACKENDS, "counting", CountingBackend())
    result = run_bench(BenchConfig("anything", backend="counting", memory=False, repeats=3, warmup=1,
                                   latency_repeats=2, progress=False))
    assert result.resolved["backend"] == "counting" and len(result.runs["fast"].step_seconds) == 3
    with pytest.raises(ConfigError, match="unknown backend"):
        run_bench(BenchConfig("anything", backend="nope"))
