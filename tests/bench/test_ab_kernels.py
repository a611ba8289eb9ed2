"""benchmarks/ab_kernels.py: two versions of kernels.c swapped inside one training run."""

import importlib.util
import json
import types
from pathlib import Path

import pytest
from torch import nn

from convmixer.fast import build, probe

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "model.name=convmixer_256_8_ks5_p2", "model.dim=16", "model.depth=2", "model.kernel_size=3", "model.patch_size=4",
    "data.dataset=synthetic", "data.synthetic_size=256", "data.synthetic_eval_size=64", "data.synthetic_image_size=16",
    "data.synthetic_chans=1", "data.synthetic_classes=4", "data.batch_size=8", "data.eval_batch_size=64",
    "schedule.epochs=1", "run.ema_decay=0.9", "aug.test_flip=false",
]

pytestmark = pytest.mark.skipif(not build.available(), reason="no C compiler for the kernels")


def load_script():
    spec = importlib.util.spec_from_file_location("ab_kernels", ROOT / "benchmarks" / "ab_kernels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def packaged_kernels_after():
    yield
    build.reset()  # the next test loads the packaged file again


def test_the_libraries_alternate_every_window(packaged_kernels_after):
    script = load_script()
    model = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.Conv2d(4, 4, 1))
    assert script.depthwise_kernel_sizes(model) == {3}
    source = build.kernel_source()
    hook = script.Alternator([source + "/* base */\n", source + "/* new */\n"], window=3, warmup=2)
    trainer = types.SimpleNamespace(model=model)
    hook(trainer)  # first step: builds both versions for the elementwise and the k=3 libraries, base loaded
    assert [sorted(libs) for libs in hook.libs] == [[0, 3], [0, 3]]
    assert hook.libs[0][3] is not hook.libs[1][3]
    loaded = []
    for _ in range(14):
        hook(trainer)
        loaded.append(0 if build.load_kernels(3) is hook.libs[0][3] else 1)
        assert build.load_kernels(0) is hook.libs[hook.current][0]
    # calls 3-15 time a step each (calls 1 and 2 are the warm-up); after every 3 timed steps the other version
    assert loaded == [0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0]
    assert [len(s) for s in hook.steps_ms] == [7, 6] and [len(w) for w in hook.windows_ms] == [2, 2]
    summary = hook.summary()
    assert summary["ratio_base_over_new"]["window_pairs"] == 2 and summary["base"]["steps"] == 7


def test_a_run_reports_both_versions(tmp_path, monkeypatch, capsys, packaged_kernels_after):
    # a model this small may be faster on the built-in operators, which the timing probe would pick: keep the kernels
    monkeypatch.setattr(probe, "probe_kernel", lambda *args, default, **kw: (default, "probe skipped (test)"))
    base = tmp_path / "base.c"
    base.write_text(build.kernel_source() + "/* an earlier version */\n")
    out = tmp_path / "ab.json"
    assert load_script().main([str(base), "--set", *TINY, "--steps", "24", "--window", "4", "--warmup", "4",
                               "--threads", "1", "--json-out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert "kernel=fused" in report["plan"]
    assert report["sha256"]["base"] != report["sha256"]["new"]
    assert report["base"]["steps"] >= 8 and report["new"]["steps"] >= 8
    assert report["ratio_base_over_new"]["window_pairs"] >= 2
    assert "base / new:" in capsys.readouterr().out


def test_a_source_that_does_not_compile_is_a_usage_error(tmp_path, capsys):
    bad = tmp_path / "bad.c"
    bad.write_text("int broken = ;\n")
    with pytest.raises(SystemExit) as e:
        load_script().main([str(bad)])
    assert e.value.code == 2
    assert "does not compile" in capsys.readouterr().err
