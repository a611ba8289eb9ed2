import pytest
import torch

from convmixer.errors import ConfigError
from convmixer.export import export_torchscript, fold_for_inference, load_torchscript, torchscript_bytes

from .helpers import FMNIST_MEAN, FMNIST_STD, fmnist_model, random_uint8, reference, tiny_convmixer

ATOL = 1e-4


@pytest.fixture(scope="module")
def fmnist_script(tmp_path_factory):
    model = fmnist_model(seed=8)
    folded = fold_for_inference(model, FMNIST_MEAN, FMNIST_STD)
    path = export_torchscript(folded, tmp_path_factory.mktemp("ts") / "fmnist.pt", image_size=28,
                              metadata={"image_size": 28, "classes": ["a", "b"]})
    return model, path


def test_torchscript_matches_pytorch_on_random_and_real_batches(fmnist_script, fmnist_batch):
    model, path = fmnist_script
    module, meta = load_torchscript(path)
    assert isinstance(module, torch.jit.ScriptModule) and meta == {"image_size": 28, "classes": ["a", "b"]}
    for images in (random_uint8(1), random_uint8(7, seed=3), fmnist_batch):  # any batch size
        want = reference(model, images)
        assert want.abs().max() > 1
        with torch.no_grad():
            for x in (images, images.float() / 255):  # the dtype branch survived tracing
                got = module(x)
                assert (got - want).abs().max() <= ATOL
                assert torch.equal(got.argmax(1), want.argmax(1))


def test_torchscript_refuses_other_integer_input(fmnist_script):
    module, _ = load_torchscript(fmnist_script[1])
    with pytest.raises(Exception, match="uint8 images"):
        module(random_uint8(2).long())


def test_torchscript_bytes_and_bad_files(tmp_path):
    model = tiny_convmixer(seed=9)
    data = torchscript_bytes(fold_for_inference(model, 0.5, 0.25), image_size=16)
    module, meta = load_torchscript(data)
    images = random_uint8(3, size=16)
    assert meta == {} and (module(images) - reference(model, images, (0.5,), (0.25,))).abs().max() <= ATOL
    with pytest.raises(ConfigError, match="fold_for_inference"):
        torchscript_bytes(model, image_size=16)
    with pytest.raises(ConfigError, match="not found"):
        load_torchscript(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"junk")
    with pytest.raises(ConfigError, match="not a TorchScript file"):
        load_torchscript(junk)
