"""Exporting segmentation models: the folds, ONNX parity (logits within 1e-4, identical argmax masks), dynamic axes,
TorchScript, and the refusal of what cannot be exported."""

import numpy as np
import pytest
import torch

from convmixer import ConfigError, create_model, save_checkpoint
from convmixer.export import (
    OnnxRunner,
    compare_logits,
    export_checkpoint,
    fold_for_inference,
    onnx_bytes,
)
from convmixer.export.torchscript import load_torchscript, torchscript_bytes

from .helpers import FMNIST_MEAN, FMNIST_STD, random_uint8, randomize, reference

ATOL = 1e-4


def segmenter(head, seed=0, **kw):
    torch.manual_seed(seed)
    model = create_model("convmixer_seg_fmnist", **{"dim": 24, "depth": 2, "head": head, "aux_indices": [0], **kw})
    with torch.no_grad():  # logits of order 1, so a wrong fold would show
        model.decode_head.proj.weight.mul_(8)
    return randomize(model, seed)


def assert_parity(ref, got):
    ref, got = np.asarray(ref, dtype=np.float64), np.asarray(got, dtype=np.float64)
    assert ref.shape == got.shape
    assert np.abs(ref - got).max() <= ATOL
    assert (ref.argmax(1) == got.argmax(1)).all()


@pytest.mark.parametrize("head", ["linear", "pixelshuffle"])
def test_folding_is_exact(head):
    model = segmenter(head)
    folded = fold_for_inference(model, FMNIST_MEAN, FMNIST_STD)
    x = random_uint8(3, size=15)  # not a multiple of p: the edge padding commutes with the folded normalization
    with torch.no_grad():
        got = folded(x)
    assert got.shape == (3, 11, 15, 15)
    assert_parity(reference(model, x), got)
    assert "decode head" in folded.folds
    assert isinstance(model.decode_head.proj.weight, torch.nn.Parameter) and model.training is False  # untouched
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.backbone.blocks[-1])


def test_onnx_parity_dynamic_batch_at_an_odd_size():
    model = segmenter("pixelshuffle")
    folded = fold_for_inference(model, FMNIST_MEAN, FMNIST_STD)
    runner = OnnxRunner(onnx_bytes(folded, image_size=31, in_chans=1))
    assert runner.input_shape == ["batch", 1, 31, 31]
    for batch in (1, 5):
        x = random_uint8(batch, size=31, seed=batch)
        assert_parity(reference(model, x), runner(x))


def test_export_checkpoint_with_dynamic_size(tmp_path):
    model = segmenter("linear", seed=1)
    ckpt = save_checkpoint(model, tmp_path / "seg.safetensors")
    report = export_checkpoint(ckpt, tmp_path / "seg.onnx", image_size=32, dynamic_size=True)
    assert report.agreement.ok(ATOL) and report.agreement.pixels_differ == 0
    meta = report.metadata
    assert meta["task"] == "segmentation" and meta["output_shape"] == ["batch", 11, "height", "width"]
    assert meta["model_config"]["head"] == "linear" and meta["model_config"]["aux_indices"] == [0]
    runner = OnnxRunner(report.path)
    assert runner.input_shape == ["batch", 1, "height", "width"]
    for batch, h, w in ((2, 32, 32), (3, 17, 23), (1, 64, 48)):
        x = random_uint8(batch, size=h, seed=h)[..., :w] if w <= h else random_uint8(batch, size=w, seed=w)[:, :, :h]
        assert_parity(reference(model, x, meta["mean"], meta["std"]), runner(x))  # the registry's statistics


def test_torchscript_export():
    model = segmenter("pixelshuffle", seed=2)
    folded = fold_for_inference(model, FMNIST_MEAN, FMNIST_STD)
    module, _ = load_torchscript(torchscript_bytes(folded, image_size=21))
    x = random_uint8(4, size=21)
    assert_parity(reference(model, x), module(x).detach())


def test_mask_agreement_is_every_pixel():
    ref = torch.zeros(2, 3, 4, 4)
    ref[:, 1] = 1.0
    assert compare_logits(ref, ref).ok(ATOL) and compare_logits(ref, ref).top1_agree == 2
    got = ref.clone()
    got[1, 2, 3, 3] = 2.0  # one pixel of one image
    a = compare_logits(ref, got)
    assert (a.top1_agree, a.pixels_differ) == (1, 1) and not a.ok(10.0)
    assert "identical masks 1/2 (1 pixel(s) differ)" in a.describe()


def test_baselines_and_torchscript_dynamic_size_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="need a ConvMixer; got unet_fmnist"):
        fold_for_inference(create_model("unet_fmnist", width=2), FMNIST_MEAN, FMNIST_STD)
    ckpt = save_checkpoint(segmenter("linear"), tmp_path / "seg.safetensors")
    with pytest.raises(ConfigError, match="dynamic-size is for ONNX only"):
        export_checkpoint(ckpt, tmp_path / "seg.pt", fmt="torchscript", dynamic_size=True)
