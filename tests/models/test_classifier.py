"""The classifier interface ConvMixer and the baselines share (convmixer.models.classifier.ImageClassifier)."""

import pytest
import torch
from torch import nn

from convmixer import ConfigError, ConvMixer, create_model
from convmixer.models.classifier import ImageClassifier


def models():
    return {
        "convmixer": ConvMixer(dim=8, depth=1, kernel_size=3, patch_size=2, num_classes=10, in_chans=1),
        "resnet20": create_model("resnet20", num_classes=10, in_chans=1),
    }


@pytest.mark.parametrize("name", ["convmixer", "resnet20"])
def test_every_model_is_an_image_classifier(name):
    assert isinstance(models()[name], ImageClassifier)


@pytest.mark.parametrize("name", ["convmixer", "resnet20"])
@pytest.mark.parametrize("bad", [True, False, -1, 2.0, "5", None])
def test_reset_classifier_refuses_what_is_not_a_class_count(name, bad):
    model = models()[name]
    head = model.get_classifier()
    with pytest.raises(ConfigError, match="num_classes must be an integer >= 0"):
        model.reset_classifier(bad)
    assert model.get_classifier() is head and model.num_classes == 10  # unchanged


@pytest.mark.parametrize("name", ["convmixer", "resnet20"])
def test_reset_classifier_to_0_and_5(name):
    model = models()[name].eval()
    x = torch.randn(2, 1, 16, 16)
    features = model.forward_head(model.forward_features(x), pre_logits=True)
    assert features.shape == (2, model.num_features)

    model.reset_classifier(5)
    head = model.get_classifier()
    assert isinstance(head, nn.Linear) and model.head is head and model.num_classes == 5
    assert tuple(head.weight.shape) == (5, model.num_features) and tuple(head.bias.shape) == (5,)
    assert model(x).shape == (2, 5)

    model.reset_classifier(0)
    assert isinstance(model.get_classifier(), nn.Identity) and model.num_classes == 0
    assert torch.equal(model(x), features)  # the pooled features, unchanged by the head swaps
