"""torch.compile over the fast path: the custom operators trace (fake implementations) and give eager's results."""

import copy

import pytest
import torch
import torch.nn.functional as F

from convmixer.fast import ExecutionPlan, apply_plan, maybe_compile
from convmixer.models import ConvMixer

pytestmark = pytest.mark.usefixtures("require_kernels")


def _pair():
    torch.manual_seed(0)
    eager = apply_plan(ConvMixer(16, 2, 3, 2, num_classes=4), ExecutionPlan("cpu", "train", True, None, False,
                                                                             "fused", "test"))
    return eager, copy.deepcopy(eager)


def _step(model, x, y):
    model.zero_grad(set_to_none=True)
    out = model(x)
    F.cross_entropy(out, y).backward()
    return out


def _check(backend):
    torch._dynamo.reset()
    eager, other = _pair()
    compiled = torch.compile(other, backend=backend, fullgraph=True)
    x = torch.randn(3, 3, 12, 12).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 4, (3,))
    for _ in range(2):
        assert torch.allclose(_step(compiled, x, y), _step(eager, x, y), atol=1e-5, rtol=1e-4)
    for a, b in zip(eager.parameters(), other.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-5, rtol=1e-3)
    for a, b in zip(eager.buffers(), other.buffers()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5, rtol=1e-4)
    eager.eval()
    other.eval()
    with torch.no_grad():
        assert torch.allclose(compiled(x), eager(x), atol=1e-5, rtol=1e-4)


def test_compile_traces_the_custom_ops_in_one_graph():
    _check("aot_eager")


@pytest.mark.slow
def test_inductor_matches_eager():
    _check("inductor")


def test_maybe_compile_only_when_planned():
    model = torch.nn.Linear(2, 2)
    assert maybe_compile(model, ExecutionPlan("cpu", "train", False, None, False, "native", "")) is model
    compiled = maybe_compile(model, ExecutionPlan("cpu", "train", False, None, True, "native", ""))
    assert compiled is not model and compiled._orig_mod is model
