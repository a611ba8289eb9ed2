"""The classification task: its batch, loss, statistics, evaluation metrics and reports."""

import json
import math
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from torch import nn

from convmixer.errors import ConfigError
from convmixer.training.tasks import ClassificationTask, get_task
from convmixer.training.tasks.classification import evaluate


class Logits(nn.Module):
    """A 'model' whose input already is the logits (a parameter gives evaluate its device)."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return x + 0 * self.anchor


LOGITS = torch.tensor([[5.0, 1, 0, 0, 0, 0],   # label 0: top-1 hit
                       [1.0, 0, 5, 4, 3, 2],   # label 1: top-1 miss, top-5 miss (rank 6)
                       [0.0, 5, 4, 1, 2, 3],   # label 2: top-1 miss, top-5 hit
                       [0.0, 0.5, 0.1, 9, 0.2, 0.3]])  # label 3: top-1 hit
LABELS = torch.tensor([0, 1, 2, 3])


def test_evaluate_counts_top1_top5_loss_and_confusion():
    model = Logits().train()
    batches = [(LOGITS[:3], LABELS[:3]), (LOGITS[3:], LABELS[3:])]
    result = evaluate(model, batches, prepare=lambda x: x, num_classes=6)
    assert model.training  # evaluate restores the mode it found
    assert result.num_samples == 4
    assert result.top1 == pytest.approx(50.0) and result.top5 == pytest.approx(75.0)
    assert result.loss == pytest.approx(nn.functional.cross_entropy(LOGITS, LABELS).item())
    expected = torch.zeros(6, 6, dtype=torch.int64)
    for true, pred in ((0, 0), (1, 2), (2, 1), (3, 3)):
        expected[true, pred] += 1
    assert torch.equal(result.confusion, expected)
    per_class = result.per_class
    assert per_class[:4] == [100.0, 0.0, 0.0, 100.0] and math.isnan(per_class[4])  # no sample of class 4
    assert result.as_dict("eval_ema") == {"eval_ema_loss": result.loss, "eval_ema_top1": 50.0, "eval_ema_top5": 75.0}


def test_top5_with_fewer_than_five_classes_is_top_k():
    result = evaluate(Logits(), [(LOGITS[:, :3], torch.tensor([0, 1, 2, 0]))], lambda x: x, num_classes=3)
    assert result.top5 == 100.0


def test_training_statistics_and_progress_text():
    task = ClassificationTask()
    targets = nn.functional.one_hot(LABELS, 6).float() * 0.9 + 0.1 / 6  # label-smoothed
    stats = task.step_stats(LOGITS, targets)
    assert set(stats) == set(task.stat_names) == {"correct"} and stats["correct"].item() == 2
    loss = task.loss(LOGITS, targets)
    assert loss.dtype == torch.float32 and loss.item() > 0
    sums = {"loss_sum": 2.0, "samples": 8.0, "correct": 6.0}
    assert task.train_metrics(sums) == {"train_loss": 0.25, "train_top1": 75.0}
    assert task.train_metrics({"loss_sum": 0.0, "samples": 0.0, "correct": 0.0}) == {}
    assert task.progress_text(sums) == "loss 0.250 acc 75.0%"


def test_batch_is_the_data_modules_augmentation():
    seen = {}

    def augment(images, labels, generator):
        seen.update(images=images, generator=generator)
        return images.float(), labels

    data = SimpleNamespace(augment=augment)
    g = torch.Generator()
    x, y = ClassificationTask().batch(data, torch.zeros(2, 1, 4, 4, dtype=torch.uint8), LABELS[:2], g)
    assert seen["generator"] is g and x.dtype == torch.float32 and torch.equal(y, LABELS[:2])


def test_record_text_and_summary():
    task = ClassificationTask()
    record = {"train_loss": 0.5, "train_top1": 80.0, "eval_loss": 0.4, "eval_top1": 85.0, "eval_top5": 99.0,
              "eval_ema_top1": 86.0}
    assert task.record_text(record) == ["train loss 0.5000 acc 80.00%",
                                        "test loss 0.4000 top-1 85.00% top-5 99.00%", "EMA top-1 86.00%"]
    assert task.record_text({}) == []
    assert task.summary(record, 85.5) == {"test_top1": 85.0, "test_top5": 99.0, "test_loss": 0.4, "best_top1": 85.5}
    assert task.summary_extras(record) == {"test_ema_top1": 86.0}
    assert task.summary_extras({"eval_top1": 1.0}) == {}


def test_eval_report_lines_and_confusion_plot(tmp_path):
    task = ClassificationTask()
    classes = [f"c{i}" for i in range(6)]
    result = evaluate(Logits(), [(LOGITS, LABELS)], lambda x: x, num_classes=6)
    report = task.eval_report(result, classes)
    assert report["num_samples"] == 4 and report["top1"] == 50.0 and report["per_class"]["c3"] == 100.0
    json.dumps(report, allow_nan=True)  # eval.json is JSON
    *per_class, headline = task.eval_lines(result, classes)
    assert len(per_class) == 6 and per_class[0] == "  c0  100.00%"
    assert headline == f"top-1 50.00%  top-5 75.00%  loss {result.loss:.4f}"
    [png] = task.write_eval_outputs(result, classes, tmp_path / "confusion.png", "tiny")
    assert png == tmp_path / "confusion.png" and Image.open(png).size[0] > 100


def test_predictions_are_sorted_probabilities():
    task = ClassificationTask()
    names = [f"c{i}" for i in range(6)]
    preds = task.predictions(LOGITS, names, top_k=2)
    assert [[t["index"] for t in p["top"]] for p in preds] == [[0, 1], [2, 3], [1, 2], [3, 1]]
    probs = LOGITS.softmax(1)
    assert preds[3]["top"][0]["probability"] == pytest.approx(probs[3, 3].item())
    assert task.prediction_text(preds[0]).startswith("c0 9")
    assert len(task.predictions(LOGITS, names, top_k=50)[0]["top"]) == 6  # capped at the number of classes


def test_get_task():
    assert isinstance(get_task(), ClassificationTask) and get_task() is not get_task()
    with pytest.raises(ConfigError, match="unknown task 'detection'; choose one of classification, segmentation"):
        get_task("detection")
    assert get_task("segmentation", aux_weight=0.25).aux_weight == 0.25


def test_test_flip_evaluates_the_mean_logits_of_each_image_and_its_mirror():
    from convmixer.data.config import no_augment
    from convmixer.training.tasks.classification import FlipAverage

    # logits = the image's one row, left to right, times (1, 1, 1, 1.5): the mirror reverses the row
    images = torch.tensor([[[[0.0, 1, 0, 9]]], [[[4.0, 0, 0, 2]]]])  # (2, 1, 1, 4), 4 classes
    labels = torch.tensor([3, 3])

    class Weighted(Logits):
        def forward(self, x):
            return super().forward(x.flatten(1)) * torch.tensor([1.0, 1, 1, 1.5])

    model = Weighted()

    class Loader:
        def __len__(self):
            return 1

        def iterate(self):
            return iter([(images, labels)])

    def data(flip):
        return SimpleNamespace(eval_loader=Loader(), num_classes=4, augment=SimpleNamespace(cfg=no_augment(test_flip=flip)))

    task = ClassificationTask()
    plain = task.evaluate(model, data(False), prepare=lambda x: x)
    flipped = task.evaluate(model, data(True), prepare=lambda x: x)
    assert plain.top1 == 50.0  # image 2's logits (4, 0, 0, 3): class 0
    assert flipped.top1 == 100.0  # averaged with its mirror's (2, 0, 0, 6): (3, 0, 0, 4.5), class 3
    expected = (model(images) + model(images.flip(-1))) / 2
    assert torch.equal(FlipAverage(model)(images), expected)
