"""Planning rules (with fake devices: no GPU needed), options, the probe cache and the no-compiler fallback."""

import json

import pytest
import torch
from torch import nn

from convmixer import create_model
from convmixer.errors import ConfigError
from convmixer.fast import ExecutionPlan, FastOptions, apply_plan, maybe_compile, plan_execution
from convmixer.fast import build, probe
from convmixer.fast.hardware import DeviceInfo, device_info
from convmixer.fast.plan import ModelFacts, model_facts, rules
from convmixer.models import ConvMixer

ZEN5 = DeviceInfo("cpu", "zen5", bf16_native=True, simd512=True)
OLD_CPU = DeviceInfo("cpu", "avx2 cpu", bf16_native=False, simd512=False)
A100 = DeviceInfo("cuda", "NVIDIA A100", bf16_native=True, fp16_native=True)
V100 = DeviceInfo("cuda", "Tesla V100", bf16_native=False, fp16_native=True)


def facts(k=9, convmixer=True):
    return ModelFacts(convmixer, kernel_size=k, dim=64, patch_size=2, convnet=True, config={"kernel_size": k})


def test_cpu_rules():
    c = rules(ZEN5, facts(9), "train")
    assert (c.channels_last, c.dtype, c.compile, c.kernel, c.unsure) == (True, torch.bfloat16, False, "fused", False)
    c = rules(OLD_CPU, facts(9), "infer")
    assert c.dtype is None and c.kernel == "fused" and c.unsure  # no AVX-512: the probe decides
    assert rules(ZEN5, facts(3), "train").unsure  # small kernel: the probe decides
    c = rules(ZEN5, facts(9), "train", kernels_ok=False)
    assert c.kernel == "native" and c.channels_last and "compiler" in " ".join(c.reasons)
    c = rules(ZEN5, facts(convmixer=False), "train")
    assert c.kernel == "native" and c.channels_last and not c.compile


@pytest.mark.parametrize("k,fast", [(7, True), (5, True), (9, False), (8, False)])
def test_cuda_rules_depend_on_kernel_size(k, fast):
    c = rules(A100, facts(k), "train")
    assert c.kernel == "native" and c.dtype == torch.bfloat16
    assert c.channels_last == fast and c.compile == fast
    assert rules(V100, facts(k), "infer").dtype == torch.float16


def test_other_devices_get_the_plain_path():
    c = rules(DeviceInfo("mps", "mps", bf16_native=False), facts(9), "train")
    assert (c.channels_last, c.dtype, c.compile, c.kernel) == (False, None, False, "native")


def test_cuda_plan_without_a_gpu_is_still_made_and_native(monkeypatch):
    model = ConvMixer(32, 2, 7, 7, num_classes=10)
    plan = plan_execution(model, mode="train", device="cuda", input_shape=(8, 3, 64, 64),
                          options=FastOptions(kernel="fused"))
    assert plan.device == "cuda" and plan.kernel == "native" and plan.cudnn_benchmark
    assert plan.channels_last and plan.compile  # k=7
    assert plan.autocast_dtype in (torch.bfloat16, torch.float16)
    if not torch.cuda.is_available():
        assert not device_info("cuda").available
    plan9 = plan_execution(ConvMixer(32, 2, 9, 7), mode="infer", device="cuda:0", input_shape=(8, 3, 64, 64))
    assert not plan9.channels_last and not plan9.compile


def test_plain_and_overrides():
    model = ConvMixer(16, 1, 9, 2, num_classes=3)
    shape = (4, 3, 8, 8)
    plain = plan_execution(model, mode="train", device="cpu", input_shape=shape, options=FastOptions(plain=True))
    assert plain.plain and plain.autocast_dtype is None and plain.kernel == "native" and not plain.channels_last
    plan = plan_execution(model, mode="infer", device="cpu", input_shape=shape,
                          options=FastOptions(channels_last=False, dtype="float32", kernel="native", compile=False))
    assert (plan.channels_last, plan.autocast_dtype, plan.kernel, plan.compile) == (False, None, "native", False)
    assert "forced" in plan.reason
    plan = plan_execution(model, mode="infer", device="cpu", input_shape=shape, options=FastOptions(dtype="bfloat16"))
    assert plan.autocast_dtype == torch.bfloat16


@pytest.mark.parametrize("kwargs,match", [
    (dict(mode="eval"), "unknown mode"),
    (dict(input_shape=(3, 8, 8)), "input_shape"),
    (dict(device="gpu7"), "bad device"),
])
def test_plan_errors(kwargs, match):
    args = dict(mode="train", device="cpu", input_shape=(2, 3, 8, 8)) | kwargs
    with pytest.raises(ConfigError, match=match):
        plan_execution(ConvMixer(8, 1, 3, 2), **args)


def test_option_errors():
    with pytest.raises(ConfigError, match="dtype"):
        FastOptions(dtype="fp8")
    with pytest.raises(ConfigError, match="kernel"):
        FastOptions(kernel="cuda")


def test_execution_plan_helpers():
    plan = ExecutionPlan("cpu", "infer", True, torch.bfloat16, False, "fused", "why")
    x = torch.randn(2, 3, 4, 4)
    y = plan.prepare_input(x)
    assert y.is_contiguous(memory_format=torch.channels_last) and y.dtype == x.dtype and torch.equal(x, y)
    assert plan.prepare_input(torch.randn(2, 3)).shape == (2, 3)
    with plan.autocast():
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    plain = ExecutionPlan("cpu", "infer", False, None, False, "native", "why")
    with plain.autocast():
        assert not torch.is_autocast_enabled("cpu")
    assert "channels_last" in plan.describe() and "bfloat16" in plan.describe() and "kernel=fused" in plan.describe()
    assert "NCHW" in plain.describe() and "float32" in plain.describe()
    module = nn.Linear(2, 2)
    assert maybe_compile(module, plain) is module


def test_model_facts():
    f = model_facts(ConvMixer(24, 2, 8, 4))
    assert f.convmixer and f.kernel_size == 8 and f.dim == 24 and "kernel_size=8" in f.key()
    f = model_facts(create_model("vit_64_6_p4", num_classes=10))
    assert not f.convmixer and f.config["model"] == "vit_64_6_p4"
    assert model_facts(create_model("resnet20", num_classes=10)).convnet


def test_probe_runs_once_and_caches(monkeypatch, tmp_path):
    monkeypatch.setenv("CONVMIXER_CACHE", str(tmp_path))
    calls = []

    def fake_measure(f, mode, shape, dtype, kernels, repeats=3):
        calls.append(kernels)
        return {"fused": 1.0, "native": 0.5}  # the built-ins clearly faster: the probe picks them

    monkeypatch.setattr(probe, "measure", fake_measure)
    f = facts(3)
    assert probe.probe_kernel(ZEN5, f, "train", (8, 64, 16, 16), torch.bfloat16, "fused")[0] == "native"
    assert probe.probe_kernel(ZEN5, f, "train", (8, 64, 16, 16), torch.bfloat16, "fused")[0] == "native"
    assert len(calls) == 1
    data = json.loads(probe.cache_path().read_text())
    (key,) = data
    assert "zen5" in key and torch.__version__ in key and "8x64x16x16" in key and "train" in key
    assert data[key]["kernel"] == "native"


def test_probe_cache_tells_cpu_generations_of_one_name_apart(monkeypatch):
    """One cpuinfo name ("AMD EPYC") covers AVX2-only and AVX-512 parts, on which the probe's winner differs."""
    info = DeviceInfo("cpu", "AMD EPYC", bf16_native=False)
    keys = []
    for flags in ({"avx2", "fma"}, {"avx2", "fma", "avx512f", "avx512_bf16"}):
        monkeypatch.setattr(probe, "cpu_flags", lambda flags=flags: frozenset(flags))
        keys.append(probe.probe_key(info, "cfg", "train", (128, 1, 28, 28), None))
    assert keys[0] != keys[1] and all(k.startswith("AMD EPYC [") for k in keys)
    gpu = DeviceInfo("cuda", "NVIDIA H200", bf16_native=True)
    assert probe.probe_key(gpu, "cfg", "train", (1,), torch.bfloat16).startswith("NVIDIA H200|")


def test_probe_keeps_the_default_unless_clearly_beaten(monkeypatch, tmp_path):
    monkeypatch.setenv("CONVMIXER_CACHE", str(tmp_path))
    monkeypatch.setattr(probe, "measure", lambda *a, **k: {"fused": 1.0, "native": 0.95})
    assert probe.probe_kernel(ZEN5, facts(3), "infer", (8, 64, 16, 16), None, "fused")[0] == "fused"


@pytest.mark.usefixtures("require_kernels")
def test_probe_measures_for_real_quickly():
    times = probe.measure(facts(3), "train", (4, 64, 16, 16), None, ("fused", "native"), repeats=1)
    assert set(times) == {"fused", "native"} and all(t > 0 for t in times.values())


def test_plan_uses_the_probe_for_small_kernels(monkeypatch):
    seen = []
    monkeypatch.setattr(probe, "probe_kernel", lambda *a, **k: (seen.append(a) or ("native", "probe: native")))
    monkeypatch.setattr(build, "available", lambda k=0: True)
    model = ConvMixer(16, 1, 3, 2)
    plan = plan_execution(model, mode="train", device="cpu", input_shape=(2, 3, 8, 8))
    if device_info("cpu").type == "cpu":
        assert seen and plan.kernel == "native" and "probe" in plan.reason
    no_probe = plan_execution(model, mode="train", device="cpu", input_shape=(2, 3, 8, 8),
                              options=FastOptions(probe=False))
    assert no_probe.kernel == "fused"


def test_no_compiler_falls_back_to_builtin_kernels(monkeypatch):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    build.reset()
    try:
        with pytest.warns(RuntimeWarning, match="unavailable"):
            assert build.load_kernels(5) is None
        assert "compiler" in build.build_error(5)
        model = ConvMixer(16, 1, 5, 2, num_classes=3)
        plan = plan_execution(model, mode="train", device="cpu", input_shape=(2, 3, 8, 8))
        assert plan.kernel == "native" and plan.channels_last
        forced = plan_execution(model, mode="train", device="cpu", input_shape=(2, 3, 8, 8),
                                options=FastOptions(kernel="fused"))
        assert forced.kernel == "native" and "unavailable" in forced.reason
        apply_plan(model, ExecutionPlan("cpu", "train", True, None, False, "fused", "forced"))
        assert type(model.blocks[0]) is nn.Sequential  # kernels missing: the plain layers stay
        model(torch.randn(2, 3, 8, 8))
    finally:
        build.reset()


def test_disabled_by_environment(monkeypatch):
    monkeypatch.setenv("CONVMIXER_NO_KERNELS", "1")
    assert build.load_kernels(3) is None and "CONVMIXER_NO_KERNELS" in build.build_error(3)


@pytest.mark.usefixtures("require_kernels")
def test_kernel_library_is_cached_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVMIXER_CACHE", str(tmp_path))
    build.reset()
    try:
        assert build.load_kernels(0) is not None
        files = list((tmp_path / "kernels").glob("cmx-k0-*.so"))
        assert len(files) == 1
        stamp = files[0].stat().st_mtime_ns
        build.reset()
        assert build.load_kernels(0) is not None
        assert files[0].stat().st_mtime_ns == stamp  # loaded, not rebuilt
    finally:
        build.reset()
