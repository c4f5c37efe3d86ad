"""Distributed data parallel training under ``torchrun`` (PyTorch's own runtime).

``torchrun --nproc_per_node=N -m wgangp.cli.train ...`` starts N copies of ``wgangp-train``
with ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` in
their environment. :func:`init_from_env` (called by ``wgangp.cli.train.main`` before Hydra
composes anything) joins the process group through that environment (``env://``):

* backend ``cpu:gloo,cuda:nccl`` when CUDA is present (NCCL for the CUDA tensors that
  DDP all-reduces, gloo for the few CPU-side objects such as the shared start time),
  plain ``gloo`` otherwise;
* one process per device: rank ``r`` trains on ``cuda:LOCAL_RANK`` (or the CPU).

Everything else keeps working in a single process: without ``WORLD_SIZE`` > 1 in the
environment nothing is initialised, :func:`world_size` is 1, :func:`is_main` is true
and every collective helper is a no-op.

The gradient-penalty pattern (see :mod:`wgangp.train.trainer` and ``docs_scale.md``): the
critic step calls the DDP-wrapped critic for D(x), D(x̃) *and* D(x̂) (the penalty's
``autograd.grad(create_graph=True)`` goes through the wrapper) and ends with one
``backward()`` of the total loss; DDP's reducer then averages the full gradient,
penalty included, exactly once. ``static_graph=True`` must not be used with this
pattern: with ``autograd.grad`` through the DDP output it silently skips the all-reduce.
The generator step calls the DDP generator and the *unwrapped* critic (whose parameters
are frozen for the step), so no reducer ever sees a backward that leaves its parameters
without gradient and ``find_unused_parameters`` stays off.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

# the environment parsing and the shared start time sit in the config layer, which
# needs them before composing (re-exported here: this module is the runtime's one place)
from wgangp.config.torchrun import DistInfo, env_info, start_time
from wgangp.data.image_source import rank_seed
from wgangp.models.sampling import has_batchnorm

log = logging.getLogger(__name__)

#: how long a rank waits for the others in a collective before failing (not hanging)
TIMEOUT = datetime.timedelta(minutes=30)


def backend() -> str:
    """``cpu:gloo,cuda:nccl`` with CUDA (NCCL for DDP's tensors), else ``gloo``."""
    if torch.cuda.is_available() and dist.is_nccl_available():
        return "cpu:gloo,cuda:nccl"
    return "gloo"


def init_from_env() -> DistInfo:
    """Join the process group torchrun describes; a no-op outside torchrun. Idempotent."""
    info = env_info()
    if not info.enabled or dist.is_initialized():
        return info
    if torch.cuda.is_available():
        torch.cuda.set_device(info.local_rank % torch.cuda.device_count())
    dist.init_process_group(backend=backend(), init_method="env://", timeout=TIMEOUT)
    log.debug("rank %d/%d joined (%s)", info.rank, info.world_size, backend())
    return info


def info() -> DistInfo:
    """This process's :class:`DistInfo` (from the live process group when there is one)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), env_info().local_rank, dist.get_world_size())
    return DistInfo()


def is_main() -> bool:
    """True on rank 0 and in single-process runs: the process that writes files."""
    return info().is_main


def world_size() -> int:
    return info().world_size


def barrier() -> None:
    if info().enabled:
        dist.barrier()


def cleanup() -> None:
    """Leave the process group (end of a run); safe to call when none exists."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` as rank ``src`` has it, on every rank (small picklable objects only)."""
    if not info().enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` when alone)."""
    if not info().enabled:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def any_true(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any rank (one tiny all-reduce)."""
    if not info().enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def any_true_each(flags: tuple[bool, ...], device: torch.device) -> list[bool]:
    """:func:`any_true` of each flag, in one all-reduce for all of them."""
    if not info().enabled:
        return list(flags)
    t = torch.tensor([1.0 if f else 0.0 for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def mean_over_ranks(values: dict[str, Tensor]) -> dict[str, Tensor]:
    """Average scalar tensors over ranks (one all-reduce for the whole dict)."""
    if not info().enabled or not values:
        return values
    keys = sorted(values)
    flat = torch.stack([values[k].detach().float().reshape(()) for k in keys])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    return {k: flat[i] for i, k in enumerate(keys)}


def device_for(device: torch.device, local: DistInfo) -> torch.device:
    """One process per device: under DDP a CUDA run uses ``cuda:LOCAL_RANK``."""
    if local.enabled and device.type == "cuda":
        index = local.local_rank % torch.cuda.device_count()
        if device.index not in (None, index):
            log.warning("trainer.device=%s ignored under torchrun: using cuda:%d", device, index)
        return torch.device("cuda", index)
    return device


def wrap(module: nn.Module, device: torch.device, *, sync_bn: bool = False) -> nn.Module:
    """``module`` wrapped in DistributedDataParallel when distributed, else itself.

    ``sync_bn`` converts BatchNorm layers to SyncBatchNorm first (statistics over the
    global batch). PyTorch's SyncBatchNorm runs on CUDA only; on the CPU the layers
    stay per-rank BatchNorm and a warning says so. Returns the wrapper; the module
    itself (for checkpoints, EMA, pictures) is ``wrapper.module``.
    """
    if not info().enabled:
        if sync_bn:
            log.warning(
                "trainer.sync_bn: one process, nothing to synchronise (it applies under "
                "torchrun with several ranks); BatchNorm stays as it is"
            )
        return module
    if sync_bn and has_batchnorm(module):
        if device.type == "cuda":
            module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
        else:
            log.warning("trainer.sync_bn: SyncBatchNorm needs CUDA; BatchNorm stays per-rank")
    ids = [device.index] if device.type == "cuda" else None
    # static_graph must stay off: see the module docstring (gradient penalty)
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, static_graph=False)


__all__ = [
    "DistInfo",
    "any_true",
    "any_true_each",
    "backend",
    "barrier",
    "broadcast_object",
    "cleanup",
    "device_for",
    "env_info",
    "gather_objects",
    "info",
    "init_from_env",
    "is_main",
    "mean_over_ranks",
    "rank_seed",
    "start_time",
    "wrap",
]
