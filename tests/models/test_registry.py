import functools
import http.server
import threading

import pytest
import torch

from convmixer import (CheckpointError, ConfigError, ConvMixer, UnknownModelError, create_model, list_models,
                       register_model, save_checkpoint)
from convmixer.models import registry

PAPER = ["convmixer_1536_20", "convmixer_768_32", "convmixer_1024_20_ks9_p14", "convmixer_1536_24_ks9_p14",
         "convmixer_1024_16_ks9_p7", "convmixer_512_16_ks8_p7"]
CIFAR = ["convmixer_256_8_ks5_p2", "convmixer_256_8_ks9_p1", "convmixer_256_16_ks9_p1"]


def test_paper_and_cifar_variants_are_registered():
    names = list_models()
    assert set(PAPER + CIFAR) <= set(names)
    assert names == sorted(names)
    assert list_models("convmixer_1536*") == ["convmixer_1536_20", "convmixer_1536_24_ks9_p14"]


@pytest.mark.parametrize("name", PAPER)
def test_imagenet_preprocessing_config(name):
    cfg = registry.get_model_entry(name).cfg
    assert cfg.input_size == (3, 224, 224) and cfg.crop_pct == 0.96 and cfg.interpolation == "bicubic"
    assert cfg.mean == (0.485, 0.456, 0.406) and cfg.std == (0.229, 0.224, 0.225)


def test_variant_hyperparameters():
    m = create_model("convmixer_512_16_ks8_p7")
    assert (m.dim, m.depth, m.kernel_size, m.patch_size, m.act) == (512, 16, 8, 7, "gelu")
    m = create_model("convmixer_768_32")
    assert (m.dim, m.depth, m.kernel_size, m.patch_size, m.act) == (768, 32, 7, 7, "relu")
    m = create_model("convmixer_128_6_ks5_p1")  # the main job's model (configs/fmnist.yaml): Fashion-MNIST's 1 channel
    assert (m.dim, m.depth, m.kernel_size, m.patch_size, m.in_chans, m.num_classes) == (128, 6, 5, 1, 1, 10)
    assert sum(p.numel() for p in m.parameters()) == 123_914


def test_unknown_name_lists_close_matches():
    with pytest.raises(UnknownModelError, match="did you mean convmixer_1536_20"):
        create_model("convmixer_1536_2O")
    with pytest.raises(UnknownModelError, match="convmixer list"):
        create_model("qqq9000xyz")


def test_duplicate_registration_is_refused():
    with pytest.raises(ConfigError, match="already registered"):
        register_model("convmixer_1536_20", ConvMixer, dim=8, depth=1)


def test_overrides_and_bad_overrides():
    m = create_model("convmixer_256_8_ks5_p2", num_classes=3, in_chans=1, depth=2)
    assert m(torch.randn(1, 1, 8, 8)).shape == (1, 3) and m.depth == 2
    assert m.registry_name == "convmixer_256_8_ks5_p2"
    with pytest.raises(ConfigError, match="cannot build"):
        create_model("convmixer_256_8_ks5_p2", wings=2)


def _small(**kw):
    return create_model("convmixer_256_8_ks5_p2", dim=8, depth=2, **kw)


def test_pretrained_from_a_path_and_fine_tuning_head(tmp_path):
    torch.manual_seed(0)
    src = _small()
    path = save_checkpoint(src, tmp_path / "w.safetensors")
    same = create_model("convmixer_256_8_ks5_p2", dim=8, depth=2, pretrained=path)
    torch.testing.assert_close(same.state_dict()["head.weight"], src.state_dict()["head.weight"])
    # A different class count: body loaded, head fresh.
    tuned = create_model("convmixer_256_8_ks5_p2", dim=8, depth=2, num_classes=4, pretrained=path)
    torch.testing.assert_close(tuned.stem[0].weight, src.stem[0].weight)
    assert tuned.head.weight.shape == (4, 8)
    # A different depth is not a fine-tuning case: refused with the offending keys.
    with pytest.raises(CheckpointError, match="blocks.2"):
        create_model("convmixer_256_8_ks5_p2", dim=8, depth=3, pretrained=path)


def test_pretrained_without_released_weights():
    with pytest.raises(CheckpointError, match="no released weights"):
        create_model("convmixer_256_8_ks5_p2", dim=8, depth=1, pretrained=True)


@pytest.fixture
def http_root(tmp_path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_pretrained_download_from_local_server(http_root, monkeypatch):
    root, url = http_root
    torch.manual_seed(0)
    src = _small()
    # released files are official-layout .pth.tar with a "state_dict" wrapper
    from convmixer.checkpoint import timm_to_official
    torch.save({"state_dict": timm_to_official(src.state_dict()), "epoch": 3}, root / "weights.pth.tar")
    model = create_model("convmixer_256_8_ks5_p2", dim=8, depth=2, pretrained=f"{url}/weights.pth.tar")
    torch.testing.assert_close(model.head.bias, src.head.bias)
    # pretrained=True follows the registered URL
    entry = registry.get_model_entry("convmixer_256_8_ks9_p1")
    monkeypatch.setitem(registry._REGISTRY, "tiny_released", registry.ModelEntry(
        "tiny_released", entry.builder, {**entry.kwargs, "dim": 8, "depth": 2, "kernel_size": 5, "patch_size": 2},
        registry.PretrainedCfg(url=f"{url}/weights.pth.tar", num_classes=10)))
    model = create_model("tiny_released", pretrained=True)
    torch.testing.assert_close(model.head.weight, src.head.weight)
    with pytest.raises(CheckpointError, match="could not download"):
        create_model("convmixer_256_8_ks5_p2", dim=8, depth=2, pretrained=f"{url}/missing.pth")
