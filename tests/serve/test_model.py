"""Loading a checkpoint for serving: the library's preprocessing and model, each backend, the size checks."""

import pytest
import torch

from convmixer.data import decode_image, eval_transform
from convmixer.errors import CheckpointError, ConfigError
from convmixer.export.common import reference_logits
from convmixer.inference import load_for_inference
from convmixer.serve import BadImage, ImageTooLarge, check_declared_size, load_served_model

from .helpers import CLASSES, encode, png_declaring


def test_preprocessing_and_model_are_the_library_s(served, checkpoint, tmp_path):
    data = encode((45, 33), mode="RGB", fmt="PNG", seed=3)  # not square, not 28, colour: resized, cropped, made L
    path = tmp_path / "shirt.png"
    path.write_bytes(data)
    image = served.preprocess(data, "shirt.png")
    assert image.dtype == torch.uint8 and image.shape == (1, 28, 28)
    assert torch.equal(image, eval_transform(decode_image(path, 1), 28, 1.0, "bicubic"))  # what predict does

    # the served (folded, fast-path) model computes the checkpoint's model on normalized pixels
    info = load_for_inference(checkpoint)
    images = torch.stack([image, served.preprocess(encode(seed=4), "b")])
    torch.testing.assert_close(served.predict(list(images)), reference_logits(info.model, images, info.mean, info.std),
                               atol=1e-4, rtol=1e-4)
    top = served.top_k(served.predict([image]), 10)[0]["top"]
    assert sorted(t["class"] for t in top) == sorted(CLASSES) and sum(t["probability"] for t in top) == \
        pytest.approx(1.0, abs=1e-5)


def test_the_onnxruntime_backend_agrees_with_torch(served, checkpoint, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    onnx_model = load_served_model(checkpoint, backend="onnxruntime", max_batch=4)
    images = [served.preprocess(encode(seed=i), f"{i}") for i in range(4)]
    torch.testing.assert_close(onnx_model.predict(images), served.predict(images), atol=1e-4, rtol=1e-4)
    described = onnx_model.describe()
    assert described["backend"] == "onnxruntime" and described["runtime"].startswith("onnxruntime")
    assert {k: v for k, v in described.items() if k not in ("backend", "runtime")} == \
        {k: v for k, v in served.describe().items() if k not in ("backend", "runtime")}

    # a file `convmixer export` wrote serves the same, its metadata saying how to feed it
    from convmixer.export import export_checkpoint

    exported = export_checkpoint(checkpoint, tmp_path / "tiny.onnx", check=False).path  # compared below
    from_file = load_served_model(exported, backend="onnxruntime", warmup=False)
    torch.testing.assert_close(from_file.predict(images), served.predict(images), atol=1e-4, rtol=1e-4)
    assert from_file.class_names == CLASSES and from_file.image_size == 28 and from_file.in_chans == 1
    assert from_file.parameters == served.parameters  # of the model it was exported from
    with pytest.raises(ConfigError, match="--backend onnxruntime"):
        load_served_model(exported, backend="torch")


def test_declared_size_is_checked_before_decoding():
    assert check_declared_size(encode((40, 30)), "a", 1200) == (40, 30)
    with pytest.raises(ImageTooLarge, match="40x30"):
        check_declared_size(encode((40, 30)), "a", 1199)
    with pytest.raises(ImageTooLarge):
        check_declared_size(png_declaring(200_000, 200_000), "bomb", 10**12)  # beyond Pillow's own limit too
    with pytest.raises(BadImage, match="not an image"):
        check_declared_size(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "eps", 100)  # no EPS decoder


def test_bad_settings_and_files_are_one_line_errors(checkpoint, tmp_path):
    with pytest.raises(ConfigError, match="backend"):
        load_served_model(checkpoint, backend="tensorrt")
    for bad in ({"max_batch": 0}, {"threads": 0}, {"max_pixels": 0}):
        with pytest.raises(ConfigError):
            load_served_model(checkpoint, **bad)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises((CheckpointError, ConfigError)):
        load_served_model(empty)
    with pytest.raises(ConfigError, match="ConvMixer"):  # a baseline cannot be folded
        from convmixer import create_model, save_checkpoint

        baseline = tmp_path / "resnet.safetensors"
        save_checkpoint(create_model("resnet20", num_classes=10), baseline)
        load_served_model(baseline, kernel="native")


def test_a_segmentation_model_is_refused_with_a_pointer_to_predict(tmp_path):
    from convmixer import create_model, save_checkpoint

    path = tmp_path / "seg.safetensors"
    save_checkpoint(create_model("convmixer_seg_fmnist", dim=8, depth=1), path)
    with pytest.raises(ConfigError, match="segmentation model; the server answers classification only"):
        load_served_model(path)
