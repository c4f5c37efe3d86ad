"""torchrun's description of this process, read before anything is composed.

``torchrun`` puts ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` in every rank's
environment; the config checks (a CUDA graph cannot hold DDP's all-reduce) and the run
directory's name (rank 0's clock on every rank) need them before the trainer exists.
:mod:`wgangp.train.distributed` builds the process group on top of these.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_info(environ: dict[str, str] | None = None) -> DistInfo:
    """Rank, local rank and world size from torchrun's environment variables."""
    env = os.environ if environ is None else environ
    world = int(env.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(
        rank=int(env.get("RANK", "0")),
        local_rank=int(env.get("LOCAL_RANK", "0")),
        world_size=world,
    )


_START: float | None = None


def start_time() -> float:
    """The job's start time, rank 0's clock on every rank (cached after the first call).

    Called once by every rank before Hydra composes the config, so the default run
    directory ``outputs/<date>/<time>`` names the same directory on every rank.
    """
    global _START
    if _START is None:
        now = [time.time()]
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.broadcast_object_list(now, src=0)
        _START = float(now[0])
    return _START
