"""Folding with ConvMixer's other head options (global_pool, drop_rate): the folded model still equals the original."""

import pytest
import torch
from torch import nn

from convmixer.export import fold_for_inference

from .helpers import FMNIST_MEAN, FMNIST_STD, random_uint8, reference, tiny_convmixer

TOL = 1e-5


@pytest.mark.parametrize("pool,folds_last_bn", [("avg", True), ("", True), ("max", False), ("avgmax", False)])
def test_fold_is_exact_with_every_global_pool(pool, folds_last_bn):
    """The last BatchNorm goes into the head only where the pooling is linear (average, or none: the head at every
    position); max pooling does not commute with a per-channel affine map, so there it stays."""
    model = tiny_convmixer(global_pool=pool, drop_rate=0.3)
    with torch.no_grad():
        model.blocks[-1][3].weight[::2] *= -1  # negative BN scales: max(s * x) != s * max(x)
    folded = fold_for_inference(model, FMNIST_MEAN, FMNIST_STD)
    assert isinstance(folded.model.blocks[-1][3], nn.Identity) == folds_last_bn
    images = random_uint8(8)
    want = reference(model.eval(), images)
    with torch.no_grad():
        got = folded(images)
    assert got.shape == want.shape and (got - want).abs().max() <= TOL
