"""The segmentation task's loss, statistics and metrics, checked against hand-counted examples."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convmixer.training.tasks import SegmentationTask, get_task
from convmixer.training.tasks.segmentation import (
    IGNORE_INDEX,
    FlipAverageMasks,
    confusion_matrix,
    evaluate,
    iou_per_class,
    pixel_cross_entropy,
    result_from_confusion,
)


def test_confusion_matrix_counts_labelled_pixels_only():
    truth = torch.tensor([[[0, 1, 1], [2, IGNORE_INDEX, 2]]])
    pred = torch.tensor([[[0, 1, 2], [2, 0, 0]]])
    c = confusion_matrix(pred, truth, 3)
    assert c.tolist() == [[1, 0, 0], [0, 1, 1], [1, 0, 1]]  # the ignored pixel is in no cell
    assert c.sum() == 5


def test_iou_and_miou_by_hand():
    # class 0: tp 1, fp 1 (a 2 predicted 0), fn 0 -> 1/2; class 1: tp 1, fn 1 -> 1/2; class 2: tp 1, fp 1, fn 1 -> 1/3
    c = torch.tensor([[1, 0, 0], [0, 1, 1], [1, 0, 1]])
    iou = iou_per_class(c)
    assert iou.tolist() == pytest.approx([50.0, 50.0, 100 / 3])
    r = result_from_confusion(c, loss=0.5, num_samples=1)
    assert r.miou == pytest.approx((50 + 50 + 100 / 3) / 3)
    assert r.pixel_acc == pytest.approx(60.0)


def test_miou_leaves_out_classes_absent_from_truth_and_predictions():
    c = torch.zeros(4, 4, dtype=torch.int64)
    c[0, 0], c[1, 1] = 10, 5  # classes 2 and 3 never occur
    iou = iou_per_class(c)
    assert iou[:2].tolist() == [100.0, 100.0] and math.isnan(iou[2]) and math.isnan(iou[3])
    assert result_from_confusion(c, 0.0, 1).miou == 100.0
    c[2, 0] = 5  # class 2 occurs but is never found: IoU 0 counts
    assert result_from_confusion(c, 0.0, 1).miou == pytest.approx((100 * 10 / 15 + 100 + 0) / 3)


def test_pixel_cross_entropy_ignores_pixels_and_survives_an_all_ignored_batch():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    masks = torch.randint(0, 3, (2, 4, 4))
    masks[0, :2] = IGNORE_INDEX
    labelled = masks != IGNORE_INDEX
    expected = F.cross_entropy(logits.permute(0, 2, 3, 1)[labelled], masks[labelled])
    assert pixel_cross_entropy(logits, masks).item() == pytest.approx(expected.item(), rel=1e-6)
    empty = pixel_cross_entropy(logits, torch.full_like(masks, IGNORE_INDEX))
    assert empty.item() == 0.0
    empty.backward()  # a finite zero gradient, not NaN
    assert torch.isfinite(logits.grad).all()


def test_loss_adds_the_weighted_auxiliary_heads():
    task = get_task("segmentation", aux_weight=0.4)
    main, aux = torch.randn(2, 3, 5, 5), torch.randn(2, 3, 5, 5)
    masks = torch.randint(0, 3, (2, 5, 5))
    plain = task.loss(main, masks)
    both = task.loss((main, aux), masks)
    assert both.item() == pytest.approx(plain.item() + 0.4 * pixel_cross_entropy(aux, masks).item(), rel=1e-6)
    assert isinstance(task, SegmentationTask) and task.primary == "miou"


def test_step_stats_count_labelled_pixels():
    task = SegmentationTask()
    logits = torch.zeros(1, 2, 2, 2)
    logits[:, 1] = 1.0  # predicts class 1 everywhere
    masks = torch.tensor([[[1, 0], [1, IGNORE_INDEX]]])
    stats = task.step_stats((logits, logits), masks)
    assert stats["correct"].item() == 2 and stats["pixels"].item() == 3
    metrics = task.train_metrics({"loss_sum": 3.0, "samples": 1, "correct": 2.0, "pixels": 3.0})
    assert metrics["train_pixel_acc"] == pytest.approx(200 / 3)


class _Shift(nn.Module):
    """A position-dependent 'model': logits whose class-1 score grows to the right, so mirroring matters."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, x):
        ramp = torch.arange(x.shape[-1], dtype=x.dtype).expand_as(x[:, 0])
        return torch.stack([x[:, 0] * 0, self.w * (ramp + x[:, 0])], 1)


def test_flip_average_mirrors_back_each_pixel():
    model = _Shift()
    x = torch.randn(2, 1, 3, 4)
    out = FlipAverageMasks(model)(x)
    expected = (model(x) + model(x.flip(-1)).flip(-1)) / 2
    assert torch.allclose(out, expected)
    assert not torch.allclose(out, model(x))  # it changed something: the mirror is averaged in


def test_evaluate_matches_a_direct_computation():
    torch.manual_seed(0)
    model = nn.Conv2d(1, 3, 3, padding=1)
    images = torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8)
    masks = torch.randint(0, 3, (6, 8, 8), dtype=torch.uint8)
    masks[0, 0] = IGNORE_INDEX
    prepare = lambda im: im.float() / 255  # noqa: E731
    batches = [(images[:4], masks[:4]), (images[4:], masks[4:])]
    r = evaluate(model, batches, prepare, num_classes=3)
    with torch.no_grad():
        logits = model(prepare(images))
    m = masks.long()
    assert r.confusion.tolist() == confusion_matrix(logits.argmax(1), m, 3).tolist()
    assert r.loss == pytest.approx(pixel_cross_entropy(logits, m).item(), rel=1e-5)
    assert r.num_samples == 6
    assert r.as_dict()["eval_miou"] == r.miou


def test_progressive_resizing_resizes_masks_by_nearest_neighbour():
    x = torch.randn(2, 1, 8, 8)
    masks = torch.zeros(2, 8, 8, dtype=torch.long)
    masks[:, :4] = 3
    masks[:, :, :2] = 255  # ignored pixels stay ignored, never blended into a class
    small_x, small = SegmentationTask().resize(x, masks, 4)
    assert small_x.shape == (2, 1, 4, 4) and small.shape == (2, 4, 4) and small.dtype == torch.long
    assert set(small.unique().tolist()) == {0, 3, 255}
    assert (small[:, :, 0] == 255).all() and (small[:, 2:, 1:] == 0).all()
