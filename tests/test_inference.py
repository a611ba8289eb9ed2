"""load_for_inference: the model and the preprocessing it expects, from each kind of weights file."""

import pytest
import torch

from convmixer import CheckpointError, create_model, save_checkpoint
from convmixer.checkpoint import timm_to_official
from convmixer.data.imagenet import imagenet_classes
from convmixer.inference import load_for_inference
from convmixer.models import IMAGENET_MEAN, IMAGENET_STD
from convmixer.training.config import load_config
from convmixer.training.state import save_state

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)  # convmixer_256_8_ks5_p2's registry cfg


def tiny(name="convmixer_256_8_ks5_p2", seed=0, **kw):
    torch.manual_seed(seed)
    model = create_model(name, dim=8, depth=1, **kw)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so weights loaded from the wrong entry would show
        model.train()(torch.randn(4, model.in_chans, 16, 16))
    return model.eval()


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def training_state(model, *, ema=None, data=(), **records):
    """A checkpoint laid out as the Trainer writes last.pt/best.pt (training/state.py)."""
    cfg = load_config("fmnist", ["model.name=convmixer_256_8_ks5_p2", "data.dataset=synthetic",
                                 "data.synthetic_chans=1", "data.synthetic_classes=4", "data.synthetic_image_size=16",
                                 *data])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return {
        "model": model.state_dict(), "model_name": "convmixer_256_8_ks5_p2", "model_config": model.config(),
        "config": cfg.to_dict(), "optimizer": opt.state_dict(), "scaler": {},
        "model_ema": None if ema is None else ema.state_dict(), "ema_n_averaged": None if ema is None else 3,
        "rng": {}, "progress": {"step": 8, "epoch": 1}, **records,
    }


def test_training_checkpoint_gives_back_its_recorded_data_settings(tmp_path):
    model = tiny(in_chans=1, num_classes=4)
    path = tmp_path / "best.pt"
    # the top-level records win over the run's DataConfig (which holds the settings as given, here mean=0.1)
    save_state(path, training_state(model, data=["data.mean=[0.1]", "data.std=[0.9]", "data.crop_pct=0.875",
                                                 "data.interpolation=bilinear"],
                                    classes=["ant", "bee", "cat", "dog"], mean=[0.25], std=[0.5], image_size=16))
    info = load_for_inference(path)
    assert info.name == "convmixer_256_8_ks5_p2"
    assert info.classes == ["ant", "bee", "cat", "dog"]
    assert info.mean == (0.25,) and info.std == (0.5,)
    assert info.image_size == 16  # recorded; the registry entry says 32
    assert info.crop_pct == 0.875 and info.interpolation == "bilinear"  # from the DataConfig; registry: 1.0, bicubic
    assert info.in_chans == 1 and info.num_classes == 4
    assert info.dataset == "synthetic"
    assert info.data_config["synthetic_classes"] == 4 and info.data_config["crop_pct"] == 0.875
    assert not info.model.training
    assert same_weights(info.model, model)
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(info.model(x), model(x))


def test_training_checkpoint_without_data_records_falls_back_to_the_registry(tmp_path):
    model = tiny(num_classes=10)
    path = tmp_path / "last.pt"
    state = training_state(model)
    state["config"]["data"]["interpolation"] = None  # as if the run's config did not record it
    save_state(path, state)
    info = load_for_inference(path)
    assert info.mean == CIFAR_MEAN and info.std == CIFAR_STD
    assert info.image_size == 32 and info.crop_pct == 1.0 and info.interpolation == "bicubic"
    assert info.classes is None and info.dataset == "synthetic"


def test_safetensors_file_falls_back_to_the_registry_cfg(tmp_path):
    model = tiny()
    path = save_checkpoint(model, tmp_path / "w.safetensors")
    info = load_for_inference(path)
    assert info.name == "convmixer_256_8_ks5_p2"
    assert info.mean == CIFAR_MEAN and info.std == CIFAR_STD
    assert info.image_size == 32 and info.crop_pct == 1.0 and info.interpolation == "bicubic"
    assert info.in_chans == 3 and info.num_classes == 10
    assert info.classes is None and info.dataset is None and info.data_config is None
    assert same_weights(info.model, model)


def test_safetensors_file_of_an_imagenet_entry_gets_its_crop_and_size(tmp_path):
    model = tiny("convmixer_1536_20", num_classes=10)  # an ImageNet entry fine-tuned to 10 classes
    info = load_for_inference(save_checkpoint(model, tmp_path / "w.safetensors"))
    assert info.mean == tuple(IMAGENET_MEAN) and info.std == tuple(IMAGENET_STD)
    assert info.image_size == 224 and info.crop_pct == 0.96
    assert info.num_classes == 10 and info.classes is None  # ImageNet names only for 1000 outputs


def test_one_channel_model_without_records_gets_a_one_channel_mean_and_std(tmp_path):
    model = tiny(in_chans=1)
    info = load_for_inference(save_checkpoint(model, tmp_path / "gray.safetensors"))
    assert info.in_chans == 1
    assert info.mean == pytest.approx((sum(CIFAR_MEAN) / 3,)) and len(info.mean) == 1
    assert info.std == pytest.approx((sum(CIFAR_STD) / 3,)) and len(info.std) == 1


def test_imagenet_entry_with_1000_outputs_gets_the_imagenet_class_names(tmp_path):
    model = tiny("convmixer_1536_20")  # 1000 classes, as released (a tiny width: the full model takes seconds)
    path = tmp_path / "convmixer_1536_20_ks9_p7.pth.tar"
    # paper-style file: official-layout weights under "state_dict", beside training extras; no class names
    torch.save({"state_dict": timm_to_official(model.state_dict()), "model_config": model.config(), "epoch": 150},
               path)
    info = load_for_inference(path, "convmixer_1536_20")
    assert info.num_classes == 1000 and len(info.classes) == 1000
    assert info.classes == imagenet_classes() and info.classes[0] == "tench"
    assert info.crop_pct == 0.96 and info.image_size == 224 and info.mean == tuple(IMAGENET_MEAN)
    assert same_weights(info.model, model)
    # the same weights as a save_checkpoint file: the name is recorded, the class names still come from ImageNet
    assert load_for_inference(save_checkpoint(model, tmp_path / "w.safetensors")).classes == imagenet_classes()


def test_unnamed_file_without_config_is_refused(tmp_path):
    path = tmp_path / "anon.pth"
    torch.save(tiny().state_dict(), path)
    with pytest.raises(CheckpointError, match="which model"):
        load_for_inference(path)


def test_use_ema_picks_the_ema_weights(tmp_path):
    model, ema = tiny(in_chans=1, num_classes=4, seed=0), tiny(in_chans=1, num_classes=4, seed=1)
    assert not same_weights(model, ema)
    path = tmp_path / "last.pt"
    save_state(path, training_state(model, ema=ema, classes=list("abcd"), mean=[0.3], std=[0.4], image_size=16))
    assert same_weights(load_for_inference(path).model, model)
    info = load_for_inference(path, use_ema=True)
    assert same_weights(info.model, ema)
    assert info.classes == list("abcd") and info.mean == (0.3,)  # the records do not depend on which weights

    plain = tmp_path / "no_ema.pt"
    save_state(plain, training_state(model))
    with pytest.raises(CheckpointError, match="no EMA weights"):
        load_for_inference(plain, use_ema=True)
