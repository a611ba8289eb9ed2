"""Segmentation through the same engine and commands: train, resume, eval, predict, and the config's checks."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from convmixer.errors import ConfigError
from convmixer.training.config import load_config
from convmixer.training.engine import Trainer
from convmixer.training.state import load_state
from convmixer.training.tasks import SegmentationTask

from .test_engine import interrupt_at

# A seconds-long run: a small segmenter on the first 96 scenes (48 px canvases keep it cheap), plain path.
SEG_TINY = ["model.dim=16", "model.depth=2", "model.kernel_size=3", "model.patch_size=4",
            "data.train_subset=96", "data.eval_subset=48", "data.image_size=48", "data.batch_size=16",
            "data.eval_batch_size=48", "schedule.epochs=2", "run.progress=false", "run.tensorboard=false",
            "run.plain=true"]


@pytest.fixture
def seg_cfg(tmp_path):
    def make(*assignments: str, name: str = "run"):
        return load_config("fmnist_seg", [*SEG_TINY, f"run.out_dir={tmp_path}", f"run.name={name}", *assignments])

    return make


def test_a_segmentation_run_reports_miou_and_keeps_the_best(seg_cfg):
    trainer = Trainer(seg_cfg("model.aux_indices=[0]", "run.ema_decay=0.9"))
    assert isinstance(trainer.task, SegmentationTask)  # chosen by the dataset
    run = trainer.fit().run_dir
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all({"train_loss", "train_pixel_acc", "eval_miou", "eval_pixel_acc", "eval_ema_miou"} <= set(r)
               for r in records)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test_miou"] == records[-1]["eval_miou"] and 0 < summary["test_miou"] <= 100
    assert summary["best_miou"] == max(r["eval_miou"] for r in records)
    assert (run / "curves.png").stat().st_size > 0


def test_interrupted_segmentation_run_resumes_exactly(seg_cfg, monkeypatch):
    full = Trainer(seg_cfg(name="full")).fit()
    interrupt_at(monkeypatch, 7)
    cut = Trainer(seg_cfg(name="cut")).fit()
    assert cut.stopped_by == "SIGINT"
    monkeypatch.undo()
    resumed = Trainer.resume(cut.run_dir).fit()
    a, b = load_state(full.run_dir / "last.pt")["model"], load_state(resumed.run_dir / "last.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.summary["test_miou"] == full.summary["test_miou"]


@pytest.mark.parametrize("assignments,match", [
    (["model.name=convmixer_fmnist"], "convmixer_fmnist is a classification model but fashion_mnist_scenes is a "
                                      "segmentation dataset"),
    (["aug.mixup_alpha=0.5"], "set aug.mixup_alpha=0"),
    (["model.head=conv"], "head"),
    (["model.aux_weight=-1"], "model.aux_weight must be >= 0"),
])
def test_bad_segmentation_settings_are_refused_before_any_work(seg_cfg, assignments, match):
    with pytest.raises(ConfigError, match=match):
        seg_cfg(*assignments).validate()


def test_a_segmentation_model_on_classification_data_is_refused():
    cfg = load_config("fmnist", ["model.name=convmixer_seg_fmnist"])
    with pytest.raises(ConfigError, match="segmentation model but fashion_mnist is a classification dataset"):
        cfg.validate()
    with pytest.raises(ConfigError, match="segmentation models only"):
        load_config("fmnist", ["model.head=linear"]).validate()


def cli(*argv):
    return subprocess.run([sys.executable, "-m", "convmixer", *argv], capture_output=True, text=True, timeout=300)


def test_eval_and_predict_a_segmentation_checkpoint(seg_cfg, tmp_path):
    run = Trainer(seg_cfg("schedule.epochs=1")).fit().run_dir
    proc = cli("eval", "--checkpoint", str(run / "best.pt"), "--plain")
    assert proc.returncode == 0, proc.stderr
    assert "mIoU" in proc.stdout.splitlines()[-1] and "background" in proc.stdout
    report = json.loads((run / "eval.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    assert report["miou"] == pytest.approx(summary["test_miou"], abs=1e-6)  # what training reported
    confusion = np.array(report["confusion"])
    assert confusion.shape == (11, 11) and confusion.sum() == 48 * 48 * 48  # every labelled pixel once
    assert (run / "confusion.png").is_file()

    # predict: a mask at each image's own size, as a palette PNG of class indices, and an overlay
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 70), dtype=np.uint8)).save(images / "wide.png")
    (images / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "masks"
    proc = cli("predict", "--checkpoint", str(run / "best.pt"), str(images), "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    assert "broken.png" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    prediction = json.loads(proc.stdout.strip().splitlines()[0])
    mask = Image.open(prediction["mask"])
    assert mask.mode == "P" and mask.size == (70, 30) and np.asarray(mask).max() < 11
    assert Image.open(prediction["overlay"]).size == (70, 30)
    assert abs(sum(c["fraction"] for c in prediction["classes"]) - 1) < 1e-6 or len(prediction["classes"]) == 5


def test_eval_refuses_a_classifier_on_segmentation_data(tmp_path):
    from convmixer.checkpoint import save_checkpoint
    from convmixer.factory import create_model

    path = tmp_path / "cls.safetensors"
    save_checkpoint(create_model("convmixer_fmnist", num_classes=11, in_chans=1), path)
    proc = cli("eval", "--checkpoint", str(path), "--dataset", "fashion_mnist_scenes")
    assert proc.returncode == 2 and "classification model but fashion_mnist_scenes is a segmentation dataset" \
        in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_train_on_a_voc_folder_through_the_cli(tmp_path):
    """configs/voc_seg.yaml on a VOC-layout folder (shrunk to a tiny model and canvas): trains, skips the bad pair."""
    from ..data.test_segfolder import _palette_png

    voc = tmp_path / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / d).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, names in {"train": [f"t{i}" for i in range(9)], "val": ["v0", "v1"]}.items():
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n")
        for name in names:
            mask = np.zeros((24, 30), np.uint8)
            mask[4:18, 6:20] = 15
            Image.fromarray(rng.integers(0, 255, (24, 30, 3), dtype=np.uint8)).save(voc / "JPEGImages" / f"{name}.jpg")
            _palette_png(voc / "SegmentationClass" / f"{name}.png", mask)
    (voc / "SegmentationClass" / "t8.png").unlink()
    proc = cli("train", "--config", "voc_seg", "--data-root", str(voc), "--out-dir", str(tmp_path / "runs"),
               "--name", "voc", "--no-progress",
               *sum((["--set", a] for a in ("model.dim=8", "model.depth=2", "model.patch_size=4",
                                            "model.kernel_size=3", "model.aux_indices=[0]", "data.image_size=32",
                                            "data.batch_size=4", "schedule.epochs=1", "run.plain=true",
                                            "run.tensorboard=false")), []))
    assert proc.returncode == 0, proc.stderr
    assert "t8" in proc.stderr  # the pair without a mask: one warning line
    summary = json.loads((tmp_path / "runs" / "voc" / "summary.json").read_text())
    assert summary["test_miou"] is not None and summary["skipped_files"] == 1 and summary["steps"] == 2


def test_onnx_export_of_a_trained_segmenter_agrees_on_real_scenes(seg_cfg, tmp_path):
    """Issue 16's parity: max abs logit difference <= 1e-4 and identical masks on real test scenes."""
    pytest.importorskip("onnxruntime")
    from convmixer.data.config import DataConfig
    from convmixer.data.loaders import load_array_dataset
    from convmixer.export.api import export_checkpoint
    from convmixer.export.onnx import OnnxRunner
    from convmixer.inference import load_for_inference

    run = Trainer(seg_cfg("schedule.epochs=1", "model.patch_size=2", "data.image_size=64")).fit().run_dir
    report = export_checkpoint(run / "best.pt", tmp_path / "seg.onnx")
    scenes = load_array_dataset(DataConfig(dataset="fashion_mnist_scenes", eval_subset=64).validate(), "test").images
    info = load_for_inference(run / "best.pt")
    mean, std = torch.tensor(info.mean).view(1, -1, 1, 1), torch.tensor(info.std).view(1, -1, 1, 1)
    with torch.no_grad():
        expected = info.model((scenes.float() / 255 - mean) / std)
    got = OnnxRunner(report.path).torch(scenes)  # the export takes uint8 pixels and normalizes inside
    assert got.shape == expected.shape == (64, 11, 64, 64)
    assert (got - expected).abs().max().item() <= 1e-4
    assert torch.equal(got.argmax(1), expected.argmax(1))


def test_progressive_resizing_feeds_a_unet_only_sides_it_takes(tmp_path, monkeypatch):
    from .test_engine import record_input_sides

    sides = record_input_sides(monkeypatch)
    unet = [a for a in SEG_TINY if not a.startswith("model.")]
    cfg = load_config("fmnist_seg", [*unet, "model.name=unet_fmnist", "schedule.resize_from=9",
                                     "schedule.resize_until=1.0", f"run.out_dir={tmp_path}", "run.name=unet"])
    Trainer(cfg).fit()
    assert sides and all(s % 4 == 0 for s in sides) and sides[0] == 8  # 2 levels: multiples of 4; 9 -> 8
