import itertools
import json
import os
import signal

import pytest
import torch

from convmixer.checkpoint import read_checkpoint
from convmixer.errors import ConfigError
from convmixer.training.tasks import classification as engine_module  # the task owns the loss
from convmixer.training.engine import NonFiniteLossError, Trainer
from convmixer.training.state import load_state


def final_weights(run_dir):
    return load_state(run_dir / "last.pt")["model"]


def test_train_writes_the_run_directory(tiny_cfg):
    result = Trainer(tiny_cfg("run.ema_decay=0.9")).fit()
    run = result.run_dir
    for name in ("config.yaml", "metrics.jsonl", "last.pt", "best.pt", "curves.png", "summary.json"):
        assert (run / name).is_file(), name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert all({"train_loss", "eval_top1", "eval_top5", "eval_ema_top1", "lr"} <= set(r) for r in records)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 16 and summary["epochs"] == 2
    assert summary["test_top1"] == records[-1]["eval_top1"] and 0 <= summary["test_top1"] <= 100
    state = load_state(run / "last.pt")
    assert state["config"]["model"]["dim"] == 16 and state["progress"]["step"] == 16
    assert state["model_ema"] is not None
    # the checkpoint is readable as plain weights, with its model config, by everything downstream
    ckpt = read_checkpoint(run / "best.pt")
    assert ckpt.model_name == "convmixer_256_8_ks5_p2" and ckpt.model_config["in_chans"] == 1
    ema = read_checkpoint(run / "last.pt", use_ema=True).state_dict
    assert not torch.equal(ema["head.weight"], ckpt.state_dict["head.weight"])


def test_learns_the_synthetic_task(tiny_cfg):
    summary = Trainer(tiny_cfg("schedule.epochs=6", "data.synthetic_size=512", "optim.lr=0.01")).fit().summary
    assert summary["test_top1"] > 50  # 4 classes: chance is 25%


def interrupt_at(monkeypatch, step, signum=signal.SIGINT):
    original = Trainer._train_step

    def wrapped(self, batches):
        stats = original(self, batches)
        if self.progress.step + 1 == step:  # this call performs optimizer step number `step`
            os.kill(os.getpid(), signum)
        return stats

    monkeypatch.setattr(Trainer, "_train_step", wrapped)


@pytest.mark.parametrize("stop_step,signum", [(5, signal.SIGINT), (8, signal.SIGTERM), (11, signal.SIGINT)])
def test_interrupted_and_resumed_run_ends_with_identical_weights(tiny_cfg, monkeypatch, stop_step, signum):
    extra = ("run.ema_decay=0.5", "optim.accum_steps=2", "data.synthetic_size=512")
    full = Trainer(tiny_cfg(*extra, name="full")).fit()
    with monkeypatch.context() as m:
        interrupt_at(m, stop_step, signum)
        cut = Trainer(tiny_cfg(*extra, name="cut")).fit()
    assert cut.stopped_by == signal.Signals(signum).name
    assert load_state(cut.run_dir / "last.pt")["progress"]["step"] == stop_step
    resumed = Trainer.resume(cut.run_dir).fit()
    assert resumed.stopped_by is None
    a, b = final_weights(full.run_dir), final_weights(resumed.run_dir)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:3]
    ema_a = load_state(full.run_dir / "last.pt")["model_ema"]
    ema_b = load_state(resumed.run_dir / "last.pt")["model_ema"]
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)
    # metrics of the resumed run cover each epoch once
    epochs = [json.loads(line)["epoch"] for line in (resumed.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_cfg, monkeypatch):
    calls = {"n": 0}
    real = engine_module.soft_cross_entropy

    def poisoned(logits, targets):
        calls["n"] += 1
        loss = real(logits, targets)
        return loss * float("nan") if calls["n"] == 11 else loss  # step 11 is in epoch 2

    monkeypatch.setattr(engine_module, "soft_cross_entropy", poisoned)
    cfg = tiny_cfg()
    with pytest.raises(NonFiniteLossError, match="non-finite at step 11.*last good checkpoint"):
        Trainer(cfg).fit()
    state = load_state(tiny_cfg().run.out_dir + "/run/last.pt")
    assert state["progress"]["step"] == 8  # the end of epoch 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_non_finite_loss_before_any_checkpoint_says_so(tiny_cfg, monkeypatch):
    real = engine_module.soft_cross_entropy
    monkeypatch.setattr(engine_module, "soft_cross_entropy", lambda logits, targets: real(logits, targets) * float("nan"))
    with pytest.raises(NonFiniteLossError, match="non-finite at step 1 .*no checkpoint had been written yet"):
        Trainer(tiny_cfg()).fit()


class NanGradient(torch.autograd.Function):
    """Identity forward, NaN backward: the loss stays finite while every gradient becomes NaN."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


@pytest.mark.parametrize("clip", ["1.0", "null"])
def test_non_finite_gradients_with_a_finite_loss_stop_the_run_before_the_step(tiny_cfg, monkeypatch, clip):
    real = engine_module.soft_cross_entropy
    calls = {"n": 0}

    def poisoned(logits, targets):
        calls["n"] += 1
        return real(NanGradient.apply(logits) if calls["n"] == 3 else logits, targets)

    monkeypatch.setattr(engine_module, "soft_cross_entropy", poisoned)
    trainer = Trainer(tiny_cfg(f"optim.clip_grad={clip}"))
    with pytest.raises(NonFiniteLossError, match=r"the gradients \(with a finite loss\) became non-finite at step 3 "):
        trainer.fit()
    # the poisoned step was not taken: the weights in memory are those after step 2, all finite
    assert trainer.progress.step == 2
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_refuses_to_overwrite_a_run_and_resume_needs_a_run(tiny_cfg, tmp_path):
    Trainer(tiny_cfg("schedule.epochs=1")).fit()
    with pytest.raises(ConfigError, match="already holds a run"):
        Trainer(tiny_cfg("schedule.epochs=1")).fit()
    with pytest.raises(ConfigError, match="nothing to resume"):
        Trainer.resume(tmp_path / "nowhere")


def test_max_steps_and_accumulation(tiny_cfg):
    result = Trainer(tiny_cfg("optim.accum_steps=2", "run.max_steps=3")).fit()
    summary = result.summary
    assert summary["steps"] == 3 and summary["test_top1"] is not None
    # 3 steps of 2 micro-batches of 32: the run stops mid-epoch 1, evaluates once and counts every image
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["step"]) for r in records] == [(1, 3)]
    assert summary["test_top1"] == records[0]["eval_top1"] == summary["best_top1"]
    progress = load_state(result.run_dir / "last.pt")["progress"]
    assert progress["images"] == 3 * 2 * 32 and progress["epoch"] == 1 and progress["batch"] == 0


def test_every_draw_comes_from_the_one_seeding_scheme(tiny_cfg, monkeypatch):
    import convmixer.factory as factory
    from convmixer.data.seeding import derive_seed

    seeds, initial = [], []
    original_batch, original_build = engine_module.ClassificationTask.batch, factory.build_model

    def batch(self, data, images, labels, generator):
        seeds.append(generator.initial_seed())
        return original_batch(self, data, images, labels, generator)

    def build(*args, **kwargs):
        model = original_build(*args, **kwargs)
        initial.append(({k: v.clone() for k, v in model.state_dict().items()}, args, kwargs))
        return model

    monkeypatch.setattr(engine_module.ClassificationTask, "batch", batch)
    monkeypatch.setattr(factory, "build_model", build)
    Trainer(tiny_cfg("run.seed=7", "run.max_steps=3")).fit()
    assert seeds == [derive_seed(7, "augment", 0, i) for i in range(3)]
    # the initial weights come from torch's global generator seeded with (seed, "init"), and only from it
    torch.manual_seed(derive_seed(7, "init"))
    torch.rand(1)  # (a different draw: the weights below must then differ)
    weights, args, kwargs = initial[0]
    shifted = original_build(*args, **kwargs)
    torch.manual_seed(derive_seed(7, "init"))
    again = original_build(*args, **kwargs)
    assert all(torch.equal(again.state_dict()[k], v) for k, v in weights.items())
    assert not torch.equal(shifted.state_dict()["head.weight"], weights["head.weight"])


def test_the_eta_counts_the_steps_and_the_evaluations_left(tiny_cfg):
    from types import SimpleNamespace

    from convmixer.training.engine import Progress

    trainer = Trainer(tiny_cfg("schedule.epochs=4", "run.eval_every=2"))
    loader = SimpleNamespace(batch_size=32)
    trainer.data = SimpleNamespace(train_loader=loader, eval_loader=SimpleNamespace(dataset_size=960))
    trainer.steps_per_epoch, trainer.total_steps = 8, 32
    trainer.progress = Progress(step=4, epoch=0)
    trainer._epoch_end_s = None
    # 28 steps x 32 images at 320 img/s = 2.8 s; evaluations after epochs 2 and 4, each 960 images at 3 x 320/s
    assert trainer._remaining_seconds(320.0) == pytest.approx(2.8 + 2 * 1.0)
    trainer._epoch_end_s = 5.0  # measured: the last epoch end took 5 s
    trainer.progress = Progress(step=20, epoch=2)
    assert trainer._remaining_seconds(320.0) == pytest.approx(12 * 32 / 320 + 5.0)
    trainer.cfg.run.max_steps = 12  # ends in epoch 2, which then evaluates
    trainer.progress = Progress(step=4, epoch=0)
    assert trainer._remaining_seconds(320.0) == pytest.approx(8 * 32 / 320 + 5.0)


def record_input_sides(monkeypatch):
    """The side of every training batch the model sees (evaluation batches excluded)."""
    sides = []
    original = Trainer._train_step

    def wrapped(self, batches):
        hook = self.model.register_forward_pre_hook(lambda m, args: sides.append(args[0].shape[-1]) if m.training else None)
        try:
            return original(self, batches)
        finally:
            hook.remove()

    monkeypatch.setattr(Trainer, "_train_step", wrapped)
    return sides


@pytest.mark.parametrize("plain", ["true", "false"])
def test_progressive_resizing_trains_small_then_full_size_and_evaluates_at_full_size(tiny_cfg, monkeypatch, plain):
    sides = record_input_sides(monkeypatch)
    trainer = Trainer(tiny_cfg("schedule.resize_from=8", "schedule.resize_until=0.5", f"run.plain={plain}"))
    summary = trainer.fit().summary
    # 16 steps, 16 px images, patch 4: 8 px for the first steps, 12 px, then 16 px from step 8 (half-way) on
    assert sides[0] == 8 and set(sides[8:]) == {16} and sides == sorted(sides) and 12 in sides
    assert 0 <= summary["test_top1"] <= 100


def test_the_eta_weighs_the_cheaper_small_steps(tiny_cfg):
    trainer = Trainer(tiny_cfg("schedule.resize_from=8", "schedule.resize_until=1.0", "schedule.epochs=1"))
    trainer.fit()
    # after the first steps at 8 px (a quarter of the pixels), the steps left cost more per step than those done
    assert trainer._cost_ratio(2, 8) > 1.5
    assert trainer._cost_ratio(0, 8) == 1.0
    plain = Trainer(tiny_cfg("schedule.epochs=1", name="plain"))
    plain.fit()
    assert plain._cost_ratio(2, 8) == 1.0


@pytest.mark.parametrize("extra", [("schedule.resize_from=8", "schedule.resize_until=0.75"),
                                   ("optim.lookahead_k=3", "optim.lookahead_alpha=0.5"),
                                   ("optim.muon=true",),
                                   ("run.ema_decay=0.9", "run.ema_bn_images=64")],
                         ids=["resize", "lookahead", "muon", "ema-bn"])
def test_interrupted_run_with_a_step_dependent_option_resumes_exactly(tiny_cfg, monkeypatch, extra):
    full = Trainer(tiny_cfg(*extra, name="full")).fit()
    with monkeypatch.context() as m:
        interrupt_at(m, 5)
        cut = Trainer(tiny_cfg(*extra, name="cut")).fit()
    resumed = Trainer.resume(cut.run_dir).fit()
    a, b = final_weights(full.run_dir), final_weights(resumed.run_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)
    ema_a, ema_b = (load_state(r / "last.pt")["model_ema"] for r in (full.run_dir, resumed.run_dir))
    assert (ema_a is None) == (ema_b is None)
    assert ema_a is None or all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)


def test_ema_bn_images_gives_the_ema_its_own_batchnorm_statistics(tiny_cfg):
    """With run.ema_bn_images the EMA is evaluated (and saved) with the BatchNorm statistics of its own
    activations on the first training batches of the epoch, not the average of the model's statistics."""
    trainer = Trainer(tiny_cfg("run.ema_decay=0.9", "run.ema_bn_images=40", "schedule.epochs=1", name="recal"))
    result = trainer.fit()
    saved = load_state(result.run_dir / "last.pt")["model_ema"]
    plain = Trainer(tiny_cfg("run.ema_decay=0.9", "schedule.epochs=1", name="averaged")).fit()
    averaged = load_state(plain.run_dir / "last.pt")["model_ema"]
    # the same training (weights of model and EMA equal), other statistics
    assert torch.equal(saved["stem.0.weight"], averaged["stem.0.weight"])
    assert not torch.equal(saved["stem.2.running_mean"], averaged["stem.2.running_mean"])
    # 40 images at batch 32: two batches, the first two of epoch 0's order (the epoch just trained)
    loader = trainer.data.train_loader
    images = torch.cat([x for x, _ in itertools.islice(loader.iterate(0), 2)])
    stem = trainer.ema.module.stem
    with torch.no_grad():
        z = stem[1](stem[0](trainer.data.normalize(images[:32])))
        w = stem[1](stem[0](trainer.data.normalize(images[32:])))
    expected = (z.mean((0, 2, 3)) + w.mean((0, 2, 3))) / 2
    torch.testing.assert_close(saved["stem.2.running_mean"], expected, rtol=1e-5, atol=1e-6)
    assert int(saved["stem.2.num_batches_tracked"]) == 2
    assert trainer.ema.module.stem[2].momentum == 0.1  # torch's update_bn restores the momentum


def test_ema_bn_images_on_a_folder_with_workers_leaves_the_training_alone(tiny_cfg, tmp_path):
    """On decoded image folders the recalibration reads the loader's workers part-way through an epoch's order;
    the next epoch must still get its own batches: the model ends the same with and without it."""
    from ..data.helpers import make_image_folder

    root = make_image_folder(tmp_path / "imgs", classes=("cat", "dog"), per_class=12, size=20)
    folder = ("data.dataset=folder", f"data.root={root}", "data.workers=2", "data.batch_size=4",
              "data.image_size=16", "run.ema_decay=0.9", "schedule.epochs=2")
    recal = Trainer(tiny_cfg(*folder, "run.ema_bn_images=8", name="recal")).fit()
    plain = Trainer(tiny_cfg(*folder, name="plain")).fit()
    a, b = final_weights(recal.run_dir), final_weights(plain.run_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)
    ema_a, ema_b = (load_state(r.run_dir / "last.pt")["model_ema"] for r in (recal, plain))
    assert not torch.equal(ema_a["stem.2.running_var"], ema_b["stem.2.running_var"])


def test_lookahead_changes_the_training_and_keeps_its_slow_weights_in_the_checkpoint(tiny_cfg):
    plain = Trainer(tiny_cfg("schedule.epochs=1", name="plain")).fit()
    trainer = Trainer(tiny_cfg("schedule.epochs=1", "optim.lookahead_k=4", name="la"))
    la = trainer.fit()
    slow = load_state(la.run_dir / "last.pt")["lookahead"]
    params = [q for g in trainer.optimizer.param_groups for q in g["params"]]
    assert len(slow) == len(params) == len(list(trainer.model.parameters()))
    # 8 steps with k = 4: the last step was a sync, so the saved slow weights are the model's weights
    assert all(torch.equal(a, b.detach()) for a, b in zip(slow, params))
    assert not torch.equal(final_weights(plain.run_dir)["head.weight"], final_weights(la.run_dir)["head.weight"])
    assert load_state(plain.run_dir / "last.pt")["lookahead"] is None


def test_muon_trains_under_fp16_autocast(tiny_cfg):
    """fp16's GradScaler unscales and inf-checks Muon's matrices too (they are in the optimizer's param_groups): the
    run trains with finite losses, and Muon, not AdamW, moved the channel-mixing weights."""
    fp16 = ("run.amp=fp16", "run.plain=false", "schedule.epochs=1")
    trainer = Trainer(tiny_cfg("optim.muon=true", *fp16, name="muon"))
    muon = trainer.fit()
    assert trainer.scaler.is_enabled()
    history = [json.loads(line) for line in (muon.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert history and all(torch.isfinite(torch.tensor(h["train_loss"])) for h in history)
    adamw = Trainer(tiny_cfg("optim.muon=false", *fp16, name="adamw")).fit()
    a, b = final_weights(muon.run_dir), final_weights(adamw.run_dir)
    assert all(torch.isfinite(v).all() for v in a.values() if v.is_floating_point())
    assert not torch.equal(a["blocks.0.1.weight"], b["blocks.0.1.weight"])
