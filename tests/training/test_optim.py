import pytest
import torch

from convmixer import ConvMixer
from convmixer.training.config import OptimConfig
from convmixer.training.optim import NS_COEFFICIENTS, Muon, MuonAndAdamW, build_optimizer, newton_schulz, param_groups, soft_cross_entropy


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
    assert len(opt.param_groups) == 3 and opt.param_groups[-1]["params"][0] is model.blocks[0][1].weight


def test_muon_all_convs_takes_the_stem_and_depthwise_filters_too():
    model = ConvMixer(16, 2, kernel_size=3, patch_size=2, in_chans=1, num_classes=4)
    opt = build_optimizer(model, OptimConfig(lr=0.003, eps=1e-8, weight_decay=0.05, muon=True, muon_all_convs=True))
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in opt.matrices) == ["blocks.0.0.fn.0.weight", "blocks.0.1.weight",
                                                         "blocks.1.0.fn.0.weight", "blocks.1.1.weight",
                                                         "stem.0.weight"]
    assert not {id(p) for g in opt.adamw.param_groups for p in g["params"]} & {id(p) for p in opt.matrices}
    before = model.blocks[0][0].fn[0].weight.detach().clone()  # (16, 1, 3, 3): stepped as a (16, 9) matrix
    model(torch.randn(4, 1, 8, 8)).logsumexp(1).mean().backward()
    opt.step()
    assert not torch.equal(before, model.blocks[0][0].fn[0].weight)


def test_muon_updates_the_conv_weights_as_it_updates_a_matrix():
    """Muon steps the (h, h, 1, 1) weights themselves as (h, h) matrices: the same arithmetic as Muon on a separate
    (h, h) matrix with the same gradients, also for channels-last weights."""
    torch.manual_seed(0)
    model = ConvMixer(16, 1, kernel_size=3, patch_size=2, in_chans=1, num_classes=4).to(memory_format=torch.channels_last)
    cfg = OptimConfig(lr=0.003, eps=1e-8, weight_decay=0.05, muon=True, muon_momentum=0.9)
    opt = build_optimizer(model, cfg)
    conv = model.blocks[0][1].weight
    twin = torch.nn.Parameter(conv.detach().clone().reshape(16, 16))
    ref = Muon([twin], lr=0.003, weight_decay=0.05, momentum=0.9)
    x, y = torch.randn(8, 1, 12, 12), torch.randint(0, 4, (8,))
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        twin.grad = conv.grad.detach().reshape(16, 16).clone()
        opt.step()
        ref.step()
    assert torch.equal(conv.detach().reshape(16, 16), twin.detach())
    state = opt.state_dict()
    assert set(state) == {"adamw", "muon"} and len(state["muon"]["state"]) == 1


@pytest.mark.parametrize("shape", [(16, 16), (24, 16), (16, 24)])
def test_newton_schulz_in_bfloat16_is_torchs_iteration(shape):
    """In bf16 the iteration is torch.optim.Muon's own, to the bit (tall, wide and square)."""
    muon_module = pytest.importorskip("torch.optim._muon")
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    ours = newton_schulz(g, NS_COEFFICIENTS, 5, 1e-7, torch.bfloat16)
    assert torch.equal(ours, muon_module._zeropower_via_newtonschulz(g, NS_COEFFICIENTS, 5, 1e-7))


@pytest.mark.parametrize("shape", [(16, 16), (40, 16), (16, 40)])
def test_newton_schulz_in_float32_nearly_orthogonalizes(shape):
    """Five fp32 steps bring singular values spread over two decades into Muon's band around 1 (about 0.7..1.2),
    and keep the singular vectors: U^T x V is diagonal."""
    gen = torch.Generator().manual_seed(1)
    u, _, vh = torch.linalg.svd(torch.randn(*shape, generator=gen), full_matrices=False)
    spread = torch.logspace(0, -2, min(shape))  # singular values 1 .. 0.01 (the slope at 0 is 3.4: 5 steps lift x485)
    g = u @ torch.diag(spread) @ vh
    x = newton_schulz(g, NS_COEFFICIENTS, 5, 1e-7, torch.float32)
    assert x.dtype == torch.float32 and x.shape == g.shape
    inner = u.mT @ x @ vh.mT
    sv = torch.diagonal(inner)
    assert 0.6 < sv.min() and sv.max() < 1.25
    assert (inner - torch.diag(sv)).abs().max() < 1e-3


def test_muon_step_on_the_cpu_is_the_float32_formula():
    """One step from a zero momentum buffer: w <- w (1 - lr wd) - lr 0.2 sqrt(max(A, B)) NS(nesterov update), with
    the iteration in fp32 (torch's bf16 one is emulated, 15x slower, on CPUs without avx512_bf16)."""
    gen = torch.Generator().manual_seed(2)
    w = torch.nn.Parameter(torch.randn(16, 24, generator=gen))
    w0, grad = w.detach().clone(), torch.randn(16, 24, generator=gen)
    opt = Muon([w], lr=0.01, weight_decay=0.05, momentum=0.9)
    w.grad = grad.clone()
    opt.step()
    buf = grad * (1 - 0.9)
    update = newton_schulz(grad.lerp(buf, 0.9), NS_COEFFICIENTS, 5, 1e-7, torch.float32)
    expected = w0 * (1 - 0.01 * 0.05) - 0.01 * 0.2 * 24 ** 0.5 * update
    assert torch.allclose(w.detach(), expected, atol=1e-7, rtol=1e-6)
    assert torch.equal(opt.state[w]["momentum_buffer"], buf)


def test_muon_in_bfloat16_is_torchs_muon():
    """With the iteration in bf16 (as on a GPU), three steps of a matrix are torch.optim.Muon's to the bit."""
    gen = torch.Generator().manual_seed(3)
    w = torch.nn.Parameter(torch.randn(16, 24, generator=gen))
    twin = torch.nn.Parameter(w.detach().clone())
    ours = Muon([w], lr=0.01, weight_decay=0.05, momentum=0.9, ns_dtype=torch.bfloat16)
    ref = torch.optim.Muon([twin], lr=0.01, weight_decay=0.05, momentum=0.9, nesterov=True,
                           adjust_lr_fn="match_rms_adamw")
    for _ in range(3):
        grad = torch.randn(16, 24, generator=gen)
        w.grad, twin.grad = grad.clone(), grad.clone()
        ours.step()
        ref.step()
    assert torch.equal(w.detach(), twin.detach())


def test_muon_steps_tall_conv_weights_as_their_matrices():
    """A (8, 2, 1, 1) weight is an 8x2 (tall) matrix: its update is the matrix's, scaled by lr 0.2 sqrt(8), back in
    the weight's shape, with singular values in Muon's band."""
    w = torch.nn.Parameter(torch.zeros(8, 2, 1, 1))
    opt = Muon([w], lr=1.0, weight_decay=0.0, momentum=0.0, nesterov=False)
    grad = torch.randn(8, 2, 1, 1, generator=torch.Generator().manual_seed(5))
    w.grad = grad.clone()
    opt.step()
    m = w.detach().reshape(8, 2) / -(0.2 * 8 ** 0.5)
    assert torch.allclose(m, newton_schulz(grad.reshape(8, 2), NS_COEFFICIENTS, 5, 1e-7, torch.float32), atol=1e-6)
    sv = torch.linalg.svdvals(m)
    assert 0.6 < sv.min() and sv.max() < 1.25


def test_muon_refuses_vectors():
    with pytest.raises(ValueError, match="weight matrices"):
        Muon([torch.nn.Parameter(torch.zeros(4))], lr=0.01, weight_decay=0.0)


def test_fp16_grad_scaler_unscales_and_checks_muons_matrices():
    """GradScaler unscales and inf-checks the gradients of ``param_groups``: Muon's matrices are among them, so
    their gradients come back unscaled and an inf in one of them skips the whole step."""
    torch.manual_seed(4)
    model = ConvMixer(16, 1, kernel_size=3, patch_size=2, in_chans=1, num_classes=4)
    opt = build_optimizer(model, OptimConfig(lr=0.003, eps=1e-8, weight_decay=0.05, muon=True))
    assert isinstance(opt, MuonAndAdamW)
    conv = model.blocks[0][1].weight
    x, y = torch.randn(8, 1, 12, 12), torch.randint(0, 4, (8,))
    torch.nn.functional.cross_entropy(model(x), y).backward()
    plain = conv.grad.clone()
    opt.zero_grad()
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaler.scale(torch.nn.functional.cross_entropy(model(x), y)).backward()
    scaler.unscale_(opt)
    assert torch.allclose(conv.grad, plain, rtol=1e-5, atol=1e-8)
    scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() == 1024.0  # a finite step keeps the scale
    before = conv.detach().clone()
    opt.zero_grad()
    scaler.scale(torch.nn.functional.cross_entropy(model(x), y)).backward()
    conv.grad[0, 0, 0, 0] = float("inf")
    scaler.step(opt)  # unscales, finds the inf in Muon's matrix, skips
    scaler.update()
    assert torch.equal(conv.detach(), before) and scaler.get_scale() == 512.0


def test_muon_on_a_model_without_channel_mixing_matrices_is_refused():
    from convmixer.errors import ConfigError

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    for all_convs in (False, True):  # its convolutions are no reason for Muon either
        with pytest.raises(ConfigError, match="no square 1x1 convolutions"):
            build_optimizer(model, OptimConfig(muon=True, muon_all_convs=all_convs))


def test_muon_all_convs_without_muon_is_adamw_alone():
    """The default recipe sets both; `--set optim.muon=false` alone must turn Muon off."""
    model = ConvMixer(8, 1, kernel_size=3, patch_size=2, in_chans=1, num_classes=4)
    opt = build_optimizer(model, OptimConfig(muon=False, muon_all_convs=True))
    assert isinstance(opt, torch.optim.AdamW)
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == sum(p.numel() for p in model.parameters())


def test_muon_state_loads_only_into_muon():
    model = ConvMixer(8, 1, kernel_size=3, patch_size=2, in_chans=1, num_classes=4)
    opt = build_optimizer(model, OptimConfig(muon=True))
    with pytest.raises(ValueError, match="not Muon"):
        opt.load_state_dict(build_optimizer(model, OptimConfig()).state_dict())
    opt.load_state_dict(opt.state_dict())
