import pytest
import torch

from convmixer import ConvMixer
from convmixer.training.config import OptimConfig
from convmixer.training.optim import build_optimizer, param_groups, soft_cross_entropy


def test_no_weight_decay_on_biases_and_norms():
    model = ConvMixer(8, 2, kernel_size=3, patch_size=2, num_classes=4)
    decay, no_decay = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert decayed == {"stem.0.weight", "blocks.0.0.fn.0.weight", "blocks.0.1.weight", "blocks.1.0.fn.0.weight",
                       "blocks.1.1.weight", "head.weight"}
    assert all(names[id(p)].endswith("bias") or ".2." in names[id(p)] or names[id(p)].startswith("blocks")
               for p in no_decay["params"])
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_optimizer_uses_the_recipe_settings():
    opt = build_optimizer(ConvMixer(8, 1, num_classes=2), OptimConfig(lr=0.02, eps=1e-3, betas=(0.8, 0.9)))
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["eps"] == 1e-3 and opt.defaults["betas"] == (0.8, 0.9)


def test_the_multi_tensor_adamw_is_the_single_tensor_one_to_the_bit():
    """build_optimizer asks for foreach (torch picks it by itself only on GPUs) because it is faster on the CPU too;
    that is safe only while it is the same arithmetic, so recorded runs reproduce exactly."""
    cfg = OptimConfig(lr=0.003, eps=1e-8, weight_decay=0.05)
    weights = []
    for foreach in (True, False):
        torch.manual_seed(0)
        model = ConvMixer(16, 2, kernel_size=3, patch_size=2, in_chans=1, num_classes=4)
        start = [p.detach().clone() for p in model.parameters()]
        opt = build_optimizer(model, cfg)
        assert opt.defaults["foreach"] is True
        for group in opt.param_groups:
            group["foreach"] = foreach
        x, y = torch.randn(8, 1, 12, 12), torch.randint(0, 4, (8,))
        for _ in range(5):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        weights.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights))
    assert not any(torch.equal(a, b) for a, b in zip(weights[0], start))  # the steps did move every tensor


def test_soft_cross_entropy_matches_hard_and_smoothed():
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 5), torch.randint(0, 5, (6,))
    onehot = torch.nn.functional.one_hot(labels, 5).float()
    torch.testing.assert_close(soft_cross_entropy(logits, onehot), torch.nn.functional.cross_entropy(logits, labels))
    smooth = onehot * 0.9 + 0.1 / 5
    torch.testing.assert_close(soft_cross_entropy(logits, smooth),
                               torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.1))


def test_lookahead_pulls_the_slow_weights_every_k_steps_and_restarts_from_them():
    from convmixer.training.optim import Lookahead

    w = torch.nn.Parameter(torch.zeros(3))
    la = Lookahead([w], k=2, alpha=0.5)
    with torch.no_grad():
        w.fill_(1.0)
    la.after_step(1)  # not a sync step: nothing happens
    assert torch.equal(w, torch.ones(3)) and torch.equal(la.slow[0], torch.zeros(3))
    with torch.no_grad():
        w.fill_(2.0)
    la.after_step(2)  # slow = 0 + 0.5 * (2 - 0) = 1, and the fast weights restart there
    assert torch.equal(la.slow[0], torch.ones(3)) and torch.equal(w.detach(), torch.ones(3))
    other = Lookahead([torch.nn.Parameter(torch.zeros(3))], k=2, alpha=0.5)
    other.load_state_dict(la.state_dict())
    assert torch.equal(other.slow[0], torch.ones(3))


def test_muon_takes_the_channel_mixing_weights_and_adamw_the_rest():
    model = ConvMixer(16, 2, kernel_size=3, patch_size=2, in_chans=1, num_classes=4)
    opt = build_optimizer(model, OptimConfig(lr=0.003, eps=1e-8, weight_decay=0.05, muon=True))
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in opt.matrices) == ["blocks.0.1.weight", "blocks.1.1.weight"]
    in_adamw = [names[id(p)] for g in opt.adamw.param_groups for p in g["params"]]
    assert len(in_adamw) + 2 == len(names) and "blocks.0.1.weight" not in in_adamw
    # the engine sets the lr of every group it sees, Muon's included
    assert len(opt.param_groups) == 3 and opt.param_groups[-1]["params"][0].shape == (16, 16)


def test_muon_updates_the_conv_weights_as_torchs_muon_updates_a_matrix():
    """The (h, h, 1, 1) weights are given to torch.optim.Muon as 2-D views of their storage: the same arithmetic as
    torch's Muon on a separate (h, h) matrix with the same gradients, also for channels-last weights."""
    torch.manual_seed(0)
    model = ConvMixer(16, 1, kernel_size=3, patch_size=2, in_chans=1, num_classes=4).to(memory_format=torch.channels_last)
    cfg = OptimConfig(lr=0.003, eps=1e-8, weight_decay=0.05, muon=True, muon_momentum=0.9)
    opt = build_optimizer(model, cfg)
    conv = model.blocks[0][1].weight
    twin = torch.nn.Parameter(conv.detach().clone().reshape(16, 16))
    ref = torch.optim.Muon([twin], lr=0.003, weight_decay=0.05, momentum=0.9, nesterov=True,
                           adjust_lr_fn="match_rms_adamw")
    x, y = torch.randn(8, 1, 12, 12), torch.randint(0, 4, (8,))
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        twin.grad = conv.grad.detach().reshape(16, 16).clone()
        opt.step()
        ref.step()
        assert conv.grad is not None and all(v.grad is None for v in opt.views)
    assert torch.equal(conv.detach().reshape(16, 16), twin.detach())
    state = opt.state_dict()
    assert set(state) == {"adamw", "muon"} and len(state["muon"]["state"]) == 1


def test_muon_on_a_model_without_channel_mixing_matrices_is_refused():
    from convmixer.errors import ConfigError

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    with pytest.raises(ConfigError, match="no square 1x1 convolutions"):
        build_optimizer(model, OptimConfig(muon=True))


def test_muon_state_loads_only_into_muon():
    model = ConvMixer(8, 1, kernel_size=3, patch_size=2, in_chans=1, num_classes=4)
    opt = build_optimizer(model, OptimConfig(muon=True))
    with pytest.raises(ValueError, match="not Muon"):
        opt.load_state_dict(build_optimizer(model, OptimConfig()).state_dict())
    opt.load_state_dict(opt.state_dict())
