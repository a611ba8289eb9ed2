"""Loaders: order as a pure function of (seed, epoch), DistributedSampler-style sharding, resume, build_data."""

import pytest
import torch

from convmixer.data import AugmentConfig, DataConfig, build_data, no_augment, shard_plan
from convmixer.errors import ConfigError

from .helpers import write_idx_dataset

SYN = dict(dataset="synthetic", synthetic_size=203, synthetic_eval_size=37, synthetic_image_size=12)


def _build(world_size=1, rank=0, batch=8, seed=0, **kw):
    cfg = DataConfig(**{**SYN, "batch_size": batch, "eval_batch_size": 10, **kw})
    return build_data(cfg, no_augment(), device="cpu", seed=seed, rank=rank, world_size=world_size)


def test_union_over_ranks_is_the_single_process_batch():
    n, world, per_rank = 203, 4, 6
    single = shard_plan(n, world * per_rank, seed=1, epoch=2, rank=0, world_size=1)
    ranks = [shard_plan(n, per_rank, seed=1, epoch=2, rank=r, world_size=world) for r in range(world)]
    assert all(len(r) == len(single) == n // (world * per_rank) for r in ranks)
    for i in range(len(single)):
        union = torch.cat([r[i] for r in ranks])
        assert sorted(union.tolist()) == sorted(single[i].tolist())
    everything = torch.cat([r.flatten() for r in ranks])
    assert len(everything.unique()) == len(everything)  # disjoint


def test_loader_batches_across_ranks():
    world = 3
    single = _build(batch=12)
    ranks = [_build(world_size=world, rank=r, batch=4) for r in range(world)]
    assert len(single.train_loader) == len(ranks[0].train_loader) == 203 // 12
    assert ranks[0].train_loader.batch_size == 4 and ranks[0].train_loader.num_samples == 16 * 4
    for i, (x, y) in enumerate(single.train_loader.iterate(5)):
        parts = [list(r.train_loader.iterate(5, start_batch=i))[0] for r in ranks] if i < 2 else None
        if parts:
            key = lambda imgs: sorted(map(bytes, imgs.flatten(1).numpy()))  # noqa: E731
            assert key(torch.cat([p[0] for p in parts])) == key(x)


def test_order_is_a_pure_function_of_seed_and_epoch():
    a, b = _build(seed=4), _build(seed=4)
    ea = [y for _, y in a.train_loader.iterate(3)]
    eb = [y for _, y in b.train_loader.iterate(3)]
    assert all(torch.equal(p, q) for p, q in zip(ea, eb))
    other_epoch = [y for _, y in a.train_loader.iterate(4)]
    other_seed = [y for _, y in _build(seed=5).train_loader.iterate(3)]
    assert not all(torch.equal(p, q) for p, q in zip(ea, other_epoch))
    assert not all(torch.equal(p, q) for p, q in zip(ea, other_seed))


def test_resume_mid_epoch_yields_the_same_batches():
    dm = _build()
    full = list(dm.train_loader.iterate(7))
    resumed = list(dm.train_loader.iterate(7, start_batch=10))
    assert len(resumed) == len(full) - 10
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(full[10:], resumed))
    assert list(dm.train_loader.iterate(7, start_batch=len(full))) == []
    with pytest.raises(ConfigError):
        next(dm.train_loader.iterate(0, start_batch=len(full) + 1))


def test_epoch_visits_each_sample_at_most_once():
    dm = _build(batch=16)
    seen = torch.cat([x.flatten(1) for x, _ in dm.train_loader.iterate(0)])
    assert len(seen) == (203 // 16) * 16


def test_eval_sharding_covers_everything_once_without_padding():
    world = 4
    parts = [_build(world_size=world, rank=r).eval_loader for r in range(world)]
    assert [p.num_samples for p in parts] == [10, 9, 9, 9] and all(p.dataset_size == 37 for p in parts)
    single = _build().eval_loader
    labels = {r: torch.cat([y for _, y in p.iterate()]) for r, p in enumerate(parts)}
    all_labels = torch.cat([y for _, y in single.iterate()])
    assert sum(len(v) for v in labels.values()) == 37
    for r in range(world):
        assert torch.equal(labels[r], all_labels[r::world])
    first = [y for _, y in single.iterate()]
    assert all(torch.equal(p, q) for p, q in zip(first, [y for _, y in single.iterate()]))  # fixed order
    assert len(single) == 4 and [len(y) for y in first] == [10, 10, 10, 7]


def test_data_module_contract(tmp_path, no_system_data):
    write_idx_dataset(tmp_path, n_train=50, n_test=20)
    dm = build_data(DataConfig(root=str(tmp_path), batch_size=16), AugmentConfig(), device="cpu", seed=0)
    assert dm.classes[0] == "T-shirt/top" and dm.num_classes == 10 and dm.in_chans == 1 and dm.image_size == 28
    assert dm.mean == (0.2860,) and dm.std == (0.3530,)
    x, y = next(dm.train_loader.iterate(0))
    assert x.dtype == torch.uint8 and x.shape == (16, 1, 28, 28) and y.dtype == torch.int64 and len(dm.train_loader) == 3
    out, t = dm.augment(x, y, torch.Generator().manual_seed(0))
    assert out.dtype == torch.float32 and out.shape == x.shape and t.shape == (16, 10)
    norm = dm.normalize(x)
    assert norm.dtype == torch.float32 and torch.allclose(norm, (x / 255 - 0.2860) / 0.3530, atol=1e-5)
    ev = build_data(DataConfig(root=str(tmp_path)), no_augment(), device="cpu", seed=0, train=False)
    assert ev.train_loader is None and ev.eval_loader.num_samples == 20
    assert "fashion_mnist" in dm.describe()


def test_image_size_resizes_small_data_once():
    dm = _build(image_size=20)
    x, _ = next(dm.train_loader.iterate(0))
    e, _ = next(dm.eval_loader.iterate())
    assert x.shape[-2:] == (20, 20) and e.shape[-2:] == (20, 20) and dm.image_size == 20


def test_subsets_and_custom_stats():
    dm = _build(train_subset=40, eval_subset=15, mean=(0.5,), std=(0.2,))
    assert dm.train_loader.dataset_size == 40 and dm.eval_loader.dataset_size == 15
    assert dm.mean == (0.5, 0.5, 0.5) and dm.std == (0.2, 0.2, 0.2)


@pytest.mark.parametrize("kw,match", [
    (dict(batch=300), "fewer than one global batch"),
    (dict(rank=2, world_size=2), "rank"),
    (dict(mean=(0.1, 0.2)), "values"),
])
def test_build_errors(kw, match):
    with pytest.raises(ConfigError, match=match):
        _build(**kw)
