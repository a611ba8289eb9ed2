"""The H/p resolution ceiling: exact at p=1, block majority by hand, ignored pixels left out."""

import pytest
import torch

from convmixer.experiments.segmentation import block_majority, resolution_ceiling
from convmixer.training.tasks.segmentation import IGNORE_INDEX


def test_patch_one_is_the_truth_itself():
    masks = torch.randint(0, 4, (3, 8, 8), dtype=torch.uint8)
    r = resolution_ceiling(masks, 1, 4)
    assert r.miou == 100.0 and r.pixel_acc == 100.0


def test_block_majority_by_hand():
    m = torch.tensor([[[1, 1, 2, 2],
                       [1, 0, 2, IGNORE_INDEX],
                       [3, 3, 0, 0],
                       [3, 1, 0, 0]]], dtype=torch.uint8)
    out = block_majority(m, 2, 4)
    assert out.tolist() == [[[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 0, 0], [3, 3, 0, 0]]]
    r = resolution_ceiling(m, 2, 4)
    # wrong: the 0 in the top-left block and the 1 in the bottom-left one; the ignored pixel does not count
    assert r.pixel_acc == pytest.approx(100 * 13 / 15)


def test_ceiling_falls_with_the_patch_size():
    torch.manual_seed(0)
    masks = torch.zeros(4, 32, 32, dtype=torch.uint8)
    for i in range(4):  # blobs at odd positions and sizes
        y, x, s = torch.randint(0, 24, (3,)).tolist()
        masks[i, y:y + 3 + s % 7, x:x + 5 + s % 5] = 1 + i % 3
    values = [resolution_ceiling(masks, p, 4).miou for p in (1, 2, 4, 8)]
    assert values[0] == 100.0 and values == sorted(values, reverse=True) and values[-1] < values[1]


def test_sides_that_are_not_multiples_of_the_patch():
    masks = torch.randint(0, 3, (2, 7, 9), dtype=torch.uint8)
    assert block_majority(masks, 4, 3).shape == (2, 7, 9)
