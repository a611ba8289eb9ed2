"""training/ema.py: the EMA of the weights is torch's AveragedModel EMA to the bit, with a cheaper update."""

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from convmixer import create_model
from convmixer.training.ema import EMA


def test_the_same_numbers_and_state_as_averaged_model():
    torch.manual_seed(0)
    model = create_model("convmixer_fmnist", dim=16, depth=2, in_chans=1, num_classes=10)
    ours = EMA(model, 0.9)
    torch_ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(5):  # training steps change parameters and BatchNorm buffers, num_batches_tracked included
        loss = model(torch.randn(8, 1, 28, 28)).logsumexp(1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        ours.update_parameters(model)
        torch_ema.update_parameters(model)
        a, b = ours.state_dict(), torch_ema.state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert int(ours.n_averaged) == 5
    assert not torch.equal(ours.module.blocks[0][1].weight, model.blocks[0][1].weight)  # an average, not a copy
    bn = ours.module.stem[2]
    assert bn.num_batches_tracked.dtype == torch.int64 and int(bn.num_batches_tracked) > 0


def test_a_model_of_another_shape_is_refused():
    ema = EMA(nn.Linear(3, 2), 0.5)
    try:
        ema.update_parameters(nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2)))
    except ValueError as e:
        assert "parameters and buffers" in str(e)
    else:
        raise AssertionError("a model with other tensors was averaged")
