"""torchrun + DistributedDataParallel: detection from the environment, set-up and metric reduction.

``torchrun --nproc_per_node=N -m convmixer train ...`` sets RANK, LOCAL_RANK and WORLD_SIZE; without
them this is a single process and every helper here is a no-op.
"""

from __future__ import annotations

import datetime
import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0  # global rank of this process
    local_rank: int = 0  # rank on this machine (which GPU)
    world_size: int = 1  # number of processes
    restart: int = 0  # how many times torchrun's elastic agent restarted the workers

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info_from_env() -> DistInfo:
    env = os.environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return DistInfo()
    return DistInfo(int(env["RANK"]), int(env.get("LOCAL_RANK", 0)), int(env["WORLD_SIZE"]),
                    int(env.get("TORCHELASTIC_RESTART_COUNT", 0)))


def resolve_device(requested: str, info: DistInfo) -> torch.device:
    """``auto`` picks CUDA when present; under torchrun each rank takes the GPU of its local rank."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {requested!r} requested but CUDA is not available (use --device cpu)")
        if info.enabled or requested == "cuda":
            index = info.local_rank if info.enabled else torch.cuda.current_device()
            requested = f"cuda:{index}"
        device = torch.device(requested)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"{requested}: only {torch.cuda.device_count()} GPU(s) visible")
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def init_distributed(info: DistInfo, device: torch.device) -> None:
    """Join the process group: NCCL between GPUs, gloo on the CPU."""
    if info.enabled and not dist.is_initialized():
        # Imported before the group exists on purpose: this module's functions take ``group=group.WORLD`` as a
        # default argument, so importing it afterwards (DDP does, lazily) stores the group object in them for
        # the life of the process. Then destroy_process_group cannot free the group, gloo's worker threads
        # outlive it, and one that drops the last reference to a tensor of a late collective (all_gather_object,
        # then barrier) while the interpreter shuts down aborts the process ("terminate called without an
        # active exception", exit -6; 4 of 20 two-process runs on a loaded 2-core machine, 0 of 100 since).
        import torch.distributed.nn.functional  # noqa: F401

        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))


def cleanup_distributed() -> None:
    """Leave the process group and free it, which joins the backend's worker threads (after they finish the
    work they hold) while the interpreter is still whole. The caller drops its DDP wrapper first: DDP's
    reducer holds the group too."""
    if dist.is_available() and dist.is_initialized():
        gc.collect()  # a dropped DDP wrapper sits in reference cycles (its hooks) until a collection
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks in place (a no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s Python object on every rank."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj) -> list:
    """Every rank's Python object, in rank order (``[obj]`` in a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def average_running_stats(*modules: torch.nn.Module) -> None:
    """Give every rank the same BatchNorm running statistics: each ``running_mean`` and ``running_var`` becomes its
    mean over the ranks (one all-reduce; a no-op in a single process).

    Without synchronized BatchNorm each process updates the statistics with its own batches, so after the last step
    the ranks disagree: evaluated as they are, every rank scores its share of the test set with other statistics than
    the checkpoint (rank 0's) holds. DDP broadcasts rank 0's buffers before each forward, so the ranks differ by the
    last step's updates, and the mean of ``running_mean`` is what one process holding the global batch would have.
    The mean of ``running_var`` is the mean of the per-rank batch variances, which leaves out the spread of the
    per-rank batch means (the global batch's variance is that mean plus the variance of the means): it is slightly
    low, by about the sampling noise of a per-rank mean, var / (per-rank batch x pixels), which is small next to var.
    ``model.sync_bn`` computes the global statistics at every step instead.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    buffers = [b for m in modules for sub in m.modules()
               for b in (getattr(sub, "running_mean", None), getattr(sub, "running_var", None))
               if isinstance(b, torch.Tensor) and b.is_floating_point()]
    if not buffers:
        return
    flat = torch.cat([b.detach().reshape(-1).to(torch.float64) for b in buffers])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    for b, value in zip(buffers, flat.split([b.numel() for b in buffers])):
        b.copy_(value.view_as(b))


class CrossProcessBatchNorm2d(torch.nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the global batch of all processes, on any device.

    torch's SyncBatchNorm runs only on GPUs; this one all-reduces sums with torch's functional all_reduce
    (``torch.distributed._functional_collectives``, differentiable: its backward all-reduces the gradient; the
    older ``torch.distributed.nn.functional.all_reduce`` is deprecated for it) in two passes (mean, then
    centered sum of squares), so gradients flow through the statistics exactly as in a single process holding
    the whole batch.
    Evaluation, and training without a process group, is plain BatchNorm2d. Same parameters and buffers,
    so checkpoints are unchanged.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        from torch.distributed._functional_collectives import all_reduce

        def total(t: torch.Tensor) -> torch.Tensor:
            return all_reduce(t, "sum", dist.group.WORLD)

        dims = (0, 2, 3)
        count = torch.tensor([x.numel() // x.shape[1]], dtype=x.dtype, device=x.device)
        n = total(count)[0]
        mean = total(x.sum(dims)) / n
        centered = x - mean[None, :, None, None]
        var = total(centered.square().sum(dims)) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach(), factor)
                self.running_var.lerp_(var.detach() * n / max(n - 1, 1), factor)
        y = centered * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def convert_sync_batchnorm(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Global-batch BatchNorm: torch's SyncBatchNorm on GPUs, :class:`CrossProcessBatchNorm2d` elsewhere."""
    if device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for module in model.modules():
        if type(module) is torch.nn.BatchNorm2d:
            module.__class__ = CrossProcessBatchNorm2d  # same state; only forward changes
    return model
