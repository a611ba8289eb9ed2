import sys

import numpy as np
import pytest
import torch

from convmixer import create_model
from convmixer.errors import ConfigError, InputShapeError
from convmixer.export import (OnnxRunner, build_metadata, export_onnx, fold_for_inference, onnx_bytes,
                              onnxruntime_bench_runner, read_onnx_metadata)

from .helpers import FMNIST_MEAN, FMNIST_STD, fmnist_model, random_uint8, reference, tiny_convmixer

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

ATOL = 1e-4


def agree(got, want) -> None:
    got = torch.as_tensor(np.asarray(got))
    assert got.shape == want.shape and got.dtype == torch.float32
    assert (got - want).abs().max().item() <= ATOL
    assert torch.equal(got.argmax(1), want.argmax(1))


@pytest.fixture(scope="module")
def fmnist_export(tmp_path_factory):
    """The registered convmixer_fmnist architecture (random weights, random BN statistics), exported once."""
    model = fmnist_model(seed=4)
    folded = fold_for_inference(model, FMNIST_MEAN, FMNIST_STD)
    meta = build_metadata(folded, image_size=28, input_dtype="uint8", dynamic_batch=True,
                          model_name="convmixer_fmnist", classes=[f"c{i}" for i in range(10)], crop_pct=1.0,
                          interpolation="bicubic", dataset="fashion_mnist", source="random.safetensors")
    path = export_onnx(folded, tmp_path_factory.mktemp("onnx") / "fmnist.onnx", image_size=28, metadata=meta)
    return model, path, meta


def test_onnx_export_matches_pytorch_on_random_and_real_batches(fmnist_export, fmnist_batch):
    model, path, _ = fmnist_export
    runner = OnnxRunner(path, threads=1)
    for images in (random_uint8(32, seed=7), fmnist_batch):
        want = reference(model, images)
        assert want.abs().max() > 1
        agree(runner(images), want)  # a torch tensor in, numpy out
        agree(runner.torch(images.numpy()), want)  # numpy in, torch out


def test_onnx_file_is_checked_and_has_the_contract(fmnist_export):
    _, path, _ = fmnist_export
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert inp.name == "images" and out.name == "logits"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert isinstance(dims[0], str) and dims[1:] == [1, 28, 28]
    # no normalization left in the graph: the first node touching the input is the cast to float
    first = [n for n in proto.graph.node if "images" in n.input]
    assert [n.op_type for n in first] == ["Cast"]


def test_dynamic_batch_one_and_seven_through_one_file(fmnist_export):
    model, path, _ = fmnist_export
    runner = OnnxRunner(path)
    for n in (1, 7):
        images = random_uint8(n, seed=n)
        agree(runner(images), reference(model, images))


def test_metadata_round_trip(fmnist_export):
    _, path, meta = fmnist_export
    stored = read_onnx_metadata(path)
    assert stored == {k: v for k, v in meta.items()}
    assert stored["classes"] == [f"c{i}" for i in range(10)] and stored["image_size"] == 28
    assert stored["input_dtype"] == "uint8" and stored["input_range"] == "0..255"
    assert stored["mean"] == list(FMNIST_MEAN) and stored["model_config"]["dim"] == 128
    assert OnnxRunner(path).metadata == stored


def test_float_input_variant_and_fixed_batch(tmp_path, fmnist_batch):
    model = tiny_convmixer(seed=5)
    folded = fold_for_inference(model, FMNIST_MEAN, FMNIST_STD)
    path = export_onnx(folded, tmp_path / "f.onnx", image_size=28, input_dtype="float32", dynamic_batch=False,
                       metadata={"input_range": "0..1"})
    runner = OnnxRunner(path)
    assert runner.input_dtype == np.float32 and runner.input_shape == [1, 1, 28, 28]
    images = fmnist_batch[:1]
    want = reference(model, images)
    agree(runner(images.float() / 255), want)
    agree(runner(images), want)  # uint8 pixels are scaled for a 0..1 float graph
    with pytest.raises(InputShapeError, match=r"shape \(1, 1, 28, 28\)"):
        runner(fmnist_batch[:2].float() / 255)


@pytest.mark.parametrize("opset", [17, 18])
def test_both_exporters_on_rgb_relu_even_kernel_and_odd_size(opset):
    """Opset 17 goes through the TorchScript-based exporter, 18 through the dynamo one. An even kernel ("same"
    padding is asymmetric), ReLU, 3 channels and a size that is not a multiple of the patch all survive both."""
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    model = tiny_convmixer(seed=6, in_chans=3, kernel_size=4, patch_size=3, act="relu")
    data = onnx_bytes(fold_for_inference(model, mean, std), image_size=22, in_chans=3, opset=opset)
    proto = onnx.load_from_string(data)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [opset]
    images = random_uint8(5, chans=3, size=22)
    agree(OnnxRunner(data)(images), reference(model, images, mean, std))


def test_runner_refuses_what_the_graph_cannot_take(fmnist_export, tmp_path):
    _, path, _ = fmnist_export
    runner = OnnxRunner(path)
    with pytest.raises(InputShapeError, match="takes uint8 images"):
        runner(np.zeros((2, 1, 28, 28), np.float32))
    with pytest.raises(InputShapeError, match="resize/crop"):
        runner(random_uint8(2, size=32))
    with pytest.raises(InputShapeError, match="4-D batch"):
        runner(np.zeros((1, 28, 28), np.uint8))
    with pytest.raises(ConfigError, match="not found"):
        OnnxRunner(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="not a usable ONNX model"):
        OnnxRunner(junk)


def test_bad_opsets_and_unfolded_uint8_are_refused(tmp_path):
    model = tiny_convmixer()
    folded = fold_for_inference(model, 0.5, 0.25)
    with pytest.raises(ConfigError, match=">= 17"):
        onnx_bytes(folded, image_size=16, in_chans=1, opset=16)
    with pytest.raises(ConfigError, match="newer than"):
        onnx_bytes(folded, image_size=16, in_chans=1, opset=999)
    with pytest.raises(ConfigError, match="fold_for_inference"):
        export_onnx(model, tmp_path / "m.onnx", image_size=16)


@pytest.mark.parametrize("missing", ["onnx", "onnxruntime", "onnxscript"])
def test_missing_export_extra_says_how_to_install(monkeypatch, tmp_path, missing):
    monkeypatch.setitem(sys.modules, missing, None)  # makes `import <missing>` raise ImportError
    folded = fold_for_inference(tiny_convmixer(), 0.5, 0.25)
    with pytest.raises(ConfigError, match=r"needs the export extra .*pip install -e '\.\[export\]'"):
        if missing == "onnxruntime":
            OnnxRunner(b"")
        else:
            export_onnx(folded, tmp_path / "m.onnx", image_size=16)
    assert not (tmp_path / "m.onnx").exists()


def test_bench_runner_times_convmixers_and_baselines():
    runner = onnxruntime_bench_runner(tiny_convmixer(), (4, 1, 16, 16), threads=1)
    assert runner.name == "fast" and runner.x.dtype == np.uint8 and runner.x.shape == (4, 1, 16, 16)
    runner.step()
    runner.latency_step()
    runner.sync()
    assert "onnxruntime" in runner.description and "uint8" in runner.description
    torch.manual_seed(0)
    base = onnxruntime_bench_runner(create_model("resnet20", num_classes=10, in_chans=1).eval(), (2, 1, 16, 16),
                                    name="onnx")
    assert base.x.dtype == np.float32 and base.name == "onnx"
    base.step()
