"""Fashion-MNIST scenes: a small semantic-segmentation dataset built from Fashion-MNIST, in memory.

A scene is a 64 x 64 grayscale canvas, black, holding 1-4 Fashion-MNIST items pasted at random positions and
sizes; later items lie on top of earlier ones. Its mask gives every pixel the class of the item that owns it:
0 = background, 1..10 = the Fashion-MNIST classes (``1 + label``). No pixel is ignored (255 never occurs).

Construction (all of it fixed: the scenes do not depend on the run's seed):

- Parameters are drawn per split from ``seeding.generator(SCENES_SEED, "fashion-mnist-scenes", split)`` for the
  whole split at once (``SCENES_SIZES``), so the first n scenes are the same whatever n is (``train_subset``).
  Per scene: the item count, uniform in 1..4; per item: a side uniform in 20..48 px (integer) and a top-left
  corner uniform over the places where the item lies wholly inside the canvas. Items are taken in the order of a
  random permutation of the split's items (scene i's slot k takes item ``perm[(4 i + k) % N]``), so train scenes
  hold only training items and test scenes only test items, and an item recurs only after all others were used.
- An item's silhouette is decided on its 28 x 28 source: pixels >= 16 (of 255; lower values are the faint
  noise and halo around the garment), then holes filled (dark pixels that cannot reach the image border through
  dark pixels, 4-connected: black prints and shadows inside a garment, the gap of a bag's handle). A garment is
  opaque, so its dark interior belongs to it; without the filling the masks would call the inside of a dark
  shirt "background" while the image shows the shirt around it.
- The item and its silhouette are resized to the item's side with the same separable bilinear weights
  (antialiased when shrinking, ``ops.resample_matrix``); canvas pixels where the resized silhouette is >= 0.5
  take the item's resized pixels and its class. So image and mask agree exactly: every pixel labelled with an
  item shows that item, every background pixel is 0.

All of it is batched torch (a Python loop over chunks of scenes and the 4 item slots only) and takes a few
seconds for the 20,000 + 4,000 scenes (docs/data.md, "Segmentation data", has the measured figures).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from . import ops
from .datasets import ArrayDataset, load_idx
from .registry import get_dataset_info
from .seeding import generator

if TYPE_CHECKING:
    from .config import DataConfig

Tensor = torch.Tensor

NAME = "fashion_mnist_scenes"
SCENES_SEED = 0  # the scenes' own seed: independent of any run's seed
SCENES_SIZES = {"train": 20_000, "test": 4_000}  # scenes per split
CANVAS = 64  # scene side, px
ITEM_SIDES = (20, 48)  # an item's side in px, uniform integer in this closed range
MAX_ITEMS = 4  # items per scene, uniform in 1..MAX_ITEMS
THRESHOLD = 16  # source pixels >= this (of 255) are the item's; holes are then filled
_PAD = 2  # zero border around a source item, so resampling fades to black at its edges instead of smearing it
_CHUNK = 2048  # scenes rendered at once (bounds the memory of the resampled items)


def fill_holes(silhouettes: Tensor) -> Tensor:
    """Bool (n, H, W) silhouettes (W <= 62) with every hole filled: a pixel is outside only if a 4-connected path
    of outside pixels joins it to the image border. A batched flood fill from the border, run until nothing
    changes, on rows packed into the bits of an int64 (one shift spreads a whole row at once)."""
    n, h, w = silhouettes.shape
    if w > 62:
        raise ValueError(f"fill_holes packs a row into 62 bits; got width {w}")
    bits = torch.int32 if w <= 30 else torch.int64  # room for the row and the shifts out of it
    weights = torch.ones(w, dtype=bits) << torch.arange(w, dtype=bits)
    # bit j of row i set = pixel (i, j) is free (not silhouette); float64 sums of distinct powers of 2 are exact
    free = ((~silhouettes).reshape(n * h, w).double() @ weights.double()).to(bits).view(n, h)
    edge = torch.full((h,), 1 | (1 << (w - 1)), dtype=bits)
    edge[0] = edge[-1] = (1 << w) - 1
    outside = free & edge
    active = torch.arange(n)  # the silhouettes whose fill still changed in the last pass
    while active.numel():
        now, room = outside[active], free[active]
        grown = now.clone()
        grown[:, 1:] |= now[:, :-1]
        grown[:, :-1] |= now[:, 1:]
        grown = _spread_along_rows(grown & room, room)
        changed = (grown != now).any(1)
        outside[active] = grown
        active = active[changed]
    return (outside[..., None] & weights) == 0


def _spread_along_rows(seeds: Tensor, free: Tensor) -> Tensor:
    """Bits of ``seeds`` extended left and right through the runs of set bits of ``free`` that hold them: a
    parallel-prefix (Kogge-Stone) fill, log2(62) shift steps per direction instead of one step per pixel."""
    out = seeds
    for left in (True, False):
        g, through = seeds.clone(), free.clone()
        for d in (1, 2, 4, 8, 16, 32):
            g |= through & (g << d if left else g >> d)
            through &= through << d if left else through >> d
        out = out | g
    return out


def silhouettes(items: Tensor) -> Tensor:
    """uint8 (n, H, W) items -> bool (n, H, W): pixels >= THRESHOLD, holes filled (the module docstring's rule)."""
    return fill_holes(items >= THRESHOLD)


def _draw_layout(n: int, n_items: int, g: torch.Generator) -> dict[str, Tensor]:
    """Every scene's parameters: item count (n,), and per slot (n, MAX_ITEMS) the item index, side, top, left."""
    count = torch.randint(1, MAX_ITEMS + 1, (n,), generator=g)
    side = torch.randint(ITEM_SIDES[0], ITEM_SIDES[1] + 1, (n, MAX_ITEMS), generator=g)
    room = (CANVAS - side + 1).float()  # places per axis where the item fits wholly
    top = (torch.rand((n, MAX_ITEMS), generator=g) * room).floor().long()
    left = (torch.rand((n, MAX_ITEMS), generator=g) * room).floor().long()
    perm = torch.randperm(n_items, generator=g)
    item = perm[torch.arange(n * MAX_ITEMS) % n_items].view(n, MAX_ITEMS)
    return {"count": count, "item": item, "side": side, "top": top, "left": left}


def _placement_weights(source: int) -> Tensor:
    """(sides, CANVAS, CANVAS, source) resampling weights: entry [side - ITEM_SIDES[0], offset] maps a source
    axis of ``source`` px (the item plus its _PAD border) onto a canvas axis where the item spans
    [offset, offset + side): bilinear, antialiased when shrinking (ops.resample_matrix), zero off the item.
    Offsets past CANVAS - side are never drawn; their rows are computed anyway, to keep the table rectangular."""
    inner = source - 2 * _PAD
    side, offset = torch.meshgrid(torch.arange(ITEM_SIDES[0], ITEM_SIDES[1] + 1), torch.arange(CANVAS), indexing="ij")
    scale = inner / side.flatten().double()  # source pixels per canvas pixel
    weights = ops.resample_matrix((_PAD - offset.flatten() * scale).float(), (CANVAS * scale).float(), source,
                                  CANVAS, torch.zeros(side.numel(), dtype=torch.bool))
    return weights.view(*side.shape, CANVAS, source)


def _render(sources: Tensor, weights: Tensor, side: Tensor, top: Tensor, left: Tensor) -> Tensor:
    """(m, K, s, s) float sources placed on (m, K, CANVAS, CANVAS) canvases, each at its own side and top-left
    corner, with the weights of :func:`_placement_weights`."""
    rows = weights[side - ITEM_SIDES[0], top]  # (m, CANVAS, s)
    cols = weights[side - ITEM_SIDES[0], left]
    return rows[:, None] @ sources @ cols.transpose(1, 2)[:, None]


def make_scenes(items: Tensor, labels: Tensor, split: str, n: int | None = None, *,
                total: int | None = None) -> tuple[Tensor, Tensor]:
    """The first ``n`` scenes (default: all ``total``, default SCENES_SIZES[split]) of ``split`` made from
    ``items`` uint8 (N, 28, 28) with int64 ``labels`` (N,): uint8 images (n, 1, 64, 64) and uint8 masks
    (n, 64, 64) of classes 0 (background) .. 10."""
    total = SCENES_SIZES[split] if total is None else total
    n = total if n is None else min(n, total)
    layout = _draw_layout(total, len(items), generator(SCENES_SEED, "fashion-mnist-scenes", split))
    layout = {k: v[:n] for k, v in layout.items()}
    used = torch.unique(layout["item"][layout["count"][:, None] > torch.arange(MAX_ITEMS)])
    # the silhouettes of the items that occur, looked up by item index through `where`
    where = torch.full((len(items),), -1, dtype=torch.int64)
    where[used] = torch.arange(len(used))
    sil = silhouettes(items[used])
    sources = F.pad(torch.stack([items[used].float(), sil.float()], 1), (_PAD,) * 4)  # (u, 2, s, s)
    weights = _placement_weights(sources.shape[-1])
    images = torch.zeros(n, CANVAS, CANVAS, dtype=torch.uint8)
    masks = torch.zeros(n, CANVAS, CANVAS, dtype=torch.uint8)
    for lo in range(0, n, _CHUNK):
        chunk = slice(lo, min(n, lo + _CHUNK))
        image, mask = images[chunk], masks[chunk]  # views: written in place
        for slot in range(MAX_ITEMS):
            scene = (layout["count"][chunk] > slot).nonzero().squeeze(1)
            if scene.numel() == 0:
                continue
            item = layout["item"][chunk][scene, slot]
            out = _render(sources[where[item]], weights, layout["side"][chunk][scene, slot],
                          layout["top"][chunk][scene, slot], layout["left"][chunk][scene, slot])
            owned = out[:, 1] >= 0.5
            pixels = out[:, 0].round_().clamp_(0, 255).to(torch.uint8).mul_(owned)
            label = (labels[item] + 1).to(torch.uint8)[:, None, None] * owned
            if slot == 0:  # every scene has a first item, on an empty canvas
                image.copy_(pixels)
                mask.copy_(label)
            else:
                image[scene] = torch.where(owned, pixels, image[scene])
                mask[scene] = torch.where(owned, label, mask[scene])
    return images.unsqueeze(1), masks


def scenes_from_config(data: DataConfig, split: str) -> ArrayDataset:
    """The registry's loader: ``split`` ("train" | "test") of the scenes, built from the Fashion-MNIST files found
    like the fashion_mnist dataset's (``data.root`` names their folder); only the first ``train_subset`` /
    ``eval_subset`` scenes are rendered."""
    source = load_idx("fashion_mnist", split, root=data.root, download=data.download, mirror=data.mirror)
    images, masks = make_scenes(source.images[:, 0], source.labels, split,
                                data.train_subset if split == "train" else data.eval_subset)
    return ArrayDataset(images, masks, list(get_dataset_info(NAME).classes), f"{NAME} {split}")
