import pytest
import torch

from convmixer import create_model
from convmixer.cli import main
from convmixer.cli.sweep_cmd import find_spec
from convmixer.experiments.spec import load_spec
from convmixer.models import get_model_entry

from ..experiments.conftest import _one_thread, write_spec  # noqa: F401  (fixtures)


@pytest.mark.parametrize("argv,match", [
    (["no-such-sweep"], "no sweep spec file or shipped sweep named 'no-such-sweep'; shipped: baselines, kernel, kernel_long, patch"),
    (["missing.yaml"], "sweep spec not found: missing.yaml"),
    (["kernel", "--workers", "0"], "--workers must be >= 1"),
    (["kernel", "--dry-run", "--report-only"], "choose one of --dry-run, --report-only and --worker"),
    (["kernel", "--device", "tpu"], "point k3-s0: run.device must be auto, cpu, cuda or cuda:N"),
])
def test_bad_sweeps_fail_with_one_line_before_running(argv, match, capsys, tmp_path):
    assert main(["sweep", *argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err, err
    assert not any(tmp_path.iterdir())  # nothing was created


def test_a_bad_point_in_the_spec_stops_everything(write_spec, tmp_path, capsys):
    spec = write_spec(grid={"model.patch_size": [2, 4, 32]})
    assert main(["sweep", str(spec), "--out", str(tmp_path / "out")]) == 2
    assert "point p32-s0: patch size 32 is larger than the 16x16" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _params(point) -> int:
    with torch.device("meta"):
        model = create_model(point.cfg.model.name, **point.cfg.model.overrides(), in_chans=1, num_classes=10)
    return sum(p.numel() for p in model.parameters())


def test_the_shipped_sweeps_are_valid_and_test_what_they_claim():
    specs = {name: load_spec(find_spec(name)) for name in ("kernel", "kernel_long", "patch", "baselines")}
    for spec in specs.values():
        full, quick = spec.points(), spec.points(quick=True)  # every point validated
        assert len(spec.seeds) >= 3 and all(p.cfg.data.dataset == "fashion_mnist" for p in full)
        assert spec.base == "fmnist_v1" and len(quick) < len(full)  # what their recorded results were measured with
        assert all(p.cfg.data.train_subset and p.cfg.schedule.epochs == 1 for p in quick)
    kernel = specs["kernel"].points()
    assert sorted({p.cfg.model.kernel_size for p in kernel}) == [3, 5, 7, 9]
    assert len({(p.cfg.model.dim, p.cfg.model.depth, p.cfg.model.patch_size) for p in kernel}) == 1
    # kernel_long: the kernel sweep's model and recipe, its two ends of k, trained longer
    long = specs["kernel_long"].points()
    assert sorted({p.cfg.model.kernel_size for p in long}) == [3, 9]
    assert {(p.cfg.model.dim, p.cfg.model.depth, p.cfg.model.patch_size) for p in long} == \
        {(p.cfg.model.dim, p.cfg.model.depth, p.cfg.model.patch_size) for p in kernel}
    assert min(p.cfg.schedule.epochs for p in long) >= 5 * max(p.cfg.schedule.epochs for p in kernel)
    patch = specs["patch"].points()
    small = {p.cfg.model.patch_size for p in patch if p.arm == "small"}
    large = {p.cfg.model.patch_size for p in patch if p.arm == "large"}
    assert small == {1, 2, 4, 7} and large and max(large) == 7
    assert min(p.cfg.model.dim for p in patch if p.arm == "large") > max(p.cfg.model.dim for p in patch
                                                                         if p.arm == "small")
    base = specs["baselines"].points()
    families = {get_model_entry(p.cfg.model.name).family for p in base}
    assert families == {"convmixer", "resnet", "vit", "mlp_mixer", "resmlp"}
    mixer = next(_params(p) for p in base if get_model_entry(p.cfg.model.name).family == "convmixer")
    for p in base:
        assert abs(_params(p) / mixer - 1) < 0.2, p.id  # matched parameter counts


def test_dry_run_lists_points_and_cost_without_running(write_spec, tmp_path, capsys):
    assert main(["sweep", str(write_spec()), "--out", str(tmp_path / "out"), "--dry-run", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "2 settings x 2 seeds = 4 runs" in out and "| `k5-s1` | ConvMixer-16/2 k5 p4 | 1,876 |" in out
    assert "4 of 4 runs to go: about" in out
    assert not (tmp_path / "out" / "tiny").exists()


def test_report_only_on_a_sweep_that_has_not_run(write_spec, tmp_path, capsys):
    assert main(["sweep", str(write_spec()), "--out", str(tmp_path / "out"), "--report-only", "--no-throughput"]) == 0
    out = capsys.readouterr().out
    assert "0/4 runs done" in out and "Not finished: `k3-s0`, `k3-s1`, `k5-s0`, `k5-s1`." in out
    sweep_dir = tmp_path / "out" / "tiny"
    assert (sweep_dir / "results.csv").is_file() and not (sweep_dir / "sweep.db").exists()
    assert not list(sweep_dir.glob("*.png"))  # no results, no plots
