import copy

import pytest
import yaml

from convmixer.errors import ConfigError
from convmixer.experiments.spec import config_fingerprint, load_spec, setting_id, spec_from_dict

from .conftest import TINY_SET


def test_points_are_arms_x_grid_x_seeds_with_readable_ids(write_spec, tmp_path):
    spec = load_spec(write_spec(arms=[{"name": "small", "grid": {"model.patch_size": [2, 4]}},
                                      {"name": "wide", "set": {"model.dim": 32}, "grid": {"model.patch_size": [4]}}],
                                seeds=[0, 7]))
    points = spec.points(out_dir=tmp_path / "out")
    assert [p.id for p in points] == [
        "small-k3-p2-s0", "small-k3-p2-s7", "small-k3-p4-s0", "small-k3-p4-s7",
        "small-k5-p2-s0", "small-k5-p2-s7", "small-k5-p4-s0", "small-k5-p4-s7",
        "wide-k3-p4-s0", "wide-k3-p4-s7", "wide-k5-p4-s0", "wide-k5-p4-s7"]
    p = points[-1]
    assert (p.setting, p.arm, p.values, p.seed) == ("wide-k5-p4", "wide", {"model.kernel_size": 5,
                                                                           "model.patch_size": 4}, 7)
    assert (p.cfg.model.dim, p.cfg.model.kernel_size, p.cfg.model.patch_size, p.cfg.run.seed) == (32, 5, 4, 7)
    assert (p.cfg.run.out_dir, p.cfg.run.name, p.cfg.run.progress) == (str(tmp_path / "out"), p.id, False)
    assert points[0].cfg.model.dim == 16  # the spec's set, not the wide arm's


def test_ids_and_fingerprints_do_not_depend_on_the_order_of_the_spec(tmp_path):
    grid = {"model.patch_size": [2, 4], "model.kernel_size": [3, 5], "optim.lr": [0.01, 0.002]}
    a = spec_from_dict({"name": "a", "set": TINY_SET, "grid": grid})
    b = spec_from_dict({"name": "a", "set": dict(reversed(TINY_SET.items())), "grid": dict(reversed(grid.items()))})
    ids = {p.id: p.fingerprint for p in a.points()}
    assert ids == {p.id: p.fingerprint for p in b.points()}
    assert "k3-p2-lr_0.002-s0" in ids
    assert setting_id("resnet20", {}) == "resnet20" and setting_id(None, {}) == "base"
    assert setting_id(None, {"model.name": "vit_64_6_p4", "model.act": "relu", "run.plain": True}) == \
        "vit_64_6_p4-relu-plain_true"


def test_fingerprint_ignores_where_a_run_writes_but_not_what_it_computes(write_spec, tmp_path):
    spec = load_spec(write_spec())
    here, there = spec.points(out_dir=tmp_path / "a")[0], spec.points(out_dir=tmp_path / "b", device="cpu")[0]
    assert here.fingerprint == there.fingerprint
    cfg = copy.deepcopy(here.cfg)
    cfg.optim.lr = 0.1
    assert config_fingerprint(cfg) != here.fingerprint
    assert load_spec(write_spec(set={"schedule.epochs": 3})).points()[0].fingerprint != there.fingerprint


def test_settings_added_later_keep_the_fingerprints_of_finished_sweeps_while_at_their_default():
    # recorded before schedule.resize_* and optim.lookahead_* existed: a new field must join LATER_DEFAULTS (or
    # change a default on purpose), or every finished sweep point would be run again
    from convmixer.training.config import TrainConfig, load_config

    assert config_fingerprint(TrainConfig()) == "9e44988323824ddf"
    assert config_fingerprint(load_config("fmnist_v1")) == "d5cd550d9e75fd4c"  # the base of the recorded sweeps
    assert config_fingerprint(load_config("fmnist_seg")) == "31e94f8664e5f688"
    assert config_fingerprint(load_config("fmnist_seg", ["optim.lookahead_k=5"])) != "31e94f8664e5f688"
    assert config_fingerprint(load_config("fmnist_seg", ["schedule.resize_from=32"])) != "31e94f8664e5f688"
    assert config_fingerprint(load_config("fmnist_seg", ["optim.muon=true"])) != "31e94f8664e5f688"
    assert config_fingerprint(load_config("fmnist_v1", ["model.stem_kernel=4"])) != "d5cd550d9e75fd4c"
    assert config_fingerprint(load_config("fmnist_v1", ["run.ema_bn_images=2000"])) != "d5cd550d9e75fd4c"
    assert config_fingerprint(load_config("fmnist_seg", ["optim.muon=true", "optim.muon_all_convs=true"])) \
        != config_fingerprint(load_config("fmnist_seg", ["optim.muon=true"]))


def test_a_bad_point_fails_at_expansion_with_one_line_naming_it(write_spec):
    spec = load_spec(write_spec(grid={"model.patch_size": [4, 32]}))
    with pytest.raises(ConfigError, match=r"point p32-s0: patch size 32 is larger than the 16x16") as e:
        spec.points()
    assert "\n" not in str(e.value)
    bad_model = load_spec(write_spec(arms=[{"name": "r", "set": {"model.name": "resnet20"}}]))
    with pytest.raises(ConfigError, match=r"point r-k3-s0: cannot build 'resnet20'"):
        bad_model.points()  # the spec's ConvMixer overrides (dim, depth, ...) do not fit a ResNet


@pytest.mark.parametrize("fields,match", [
    ({"grid": {"model.kernal_size": [3]}}, "did you mean model.kernel_size"),
    ({"grid": {"run.seed": [0, 1]}}, "use `seeds:`"),
    ({"set": {"run.out_dir": "x"}}, "set by the sweep itself"),
    ({"grid": {"model.kernel_size": 3}}, "must be a non-empty list"),
    ({"grid": {"model.kernel_size": [3, 3]}}, "lists a value twice"),
    ({"seeds": [0, 0]}, "lists a seed twice"),
    ({"seeds": []}, "non-empty list of integers"),
    ({"quick": {"set": {"model.kernel_size": 3}}}, "quick.set changes model.kernel_size"),
    ({"quick": {"epochs": 1}}, "unknown field 'epochs'"),
    ({"grids": {}}, "did you mean grid"),
    ({"name": "a b"}, "names a folder"),
    ({"arms": [{"name": "x"}, {"name": "x"}]}, "arm names must be unique"),
    ({"arms": [{"name": "x", "set": {"model.kernel_size": 3}}]}, "its grid also sweeps"),
    ({"arms": [{"set": {}}]}, "must be a mapping with a name"),
])
def test_spec_errors_are_one_line(write_spec, fields, match):
    with pytest.raises(ConfigError, match=match) as e:
        load_spec(write_spec(**fields)).points()
    assert "\n" not in str(e.value)


def test_colliding_ids_are_refused(write_spec):
    spec = load_spec(write_spec(grid={"optim.lr": [0.01, "0.01"]}))
    with pytest.raises(ConfigError, match="get the id 'lr_0.01-s0'"):
        spec.points()


def test_quick_form_set_seeds_and_folder(write_spec):
    spec = load_spec(write_spec(quick={"set": {"schedule.epochs": 1, "data.train_subset": 64}, "seeds": [0]}))
    full, quick = spec.points(), spec.points(quick=True)
    assert len(full) == 4 and [p.id for p in quick] == ["k3-s0", "k5-s0"]
    assert (quick[0].cfg.schedule.epochs, quick[0].cfg.data.train_subset) == (1, 64)
    assert full[0].cfg.schedule.epochs == 2 and quick[0].fingerprint != full[0].fingerprint
    assert (spec.run_name(False), spec.run_name(True)) == ("tiny", "tiny-quick")


def test_base_recipe_beside_the_spec_and_set_as_key_value_list(tmp_path):
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump({"optim": {"lr": 0.003}, "schedule": {"epochs": 5}}))
    spec_path = tmp_path / "s.yaml"
    spec_path.write_text(yaml.safe_dump({"base": "mine.yaml", "set": [f"{k}={v}" for k, v in TINY_SET.items()
                                                                    if k != "optim.lr"] + ["model.patch_size=4"]}))
    spec = load_spec(spec_path)
    (point,) = spec.points()
    assert (spec.name, point.id, point.cfg.optim.lr, point.cfg.schedule.epochs) == ("s", "base-s0", 0.003, 2)
