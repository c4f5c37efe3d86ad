"""What a run settles once, at its start, from its config, data and machine: the
classes of a class-conditional run, the networks' memory format, and the summary it
logs of them."""

from __future__ import annotations

import logging
from typing import Any

import torch
from omegaconf import DictConfig

from wgangp.errors import ConfigError
from wgangp.fast import layout
from wgangp.models.mlp import count_parameters
from wgangp.train import distributed

log = logging.getLogger("wgangp.train.trainer")  # the trainer's log lines, as users see them


def conditional_classes(cfg: DictConfig, data: Any) -> int:  # noqa: ANN401
    """The classes a class-conditional run (``conditional.enabled``) is trained on: the
    data set's, or 0 when the run is unconditional."""
    if not cfg.conditional.enabled:
        return 0
    if not data.num_classes:
        why = data.label_problem or f"dataset={cfg.dataset.name} has none"
        raise ConfigError(
            "conditional.enabled",
            True,
            "false for a data set without class labels",
            f"{why}; or train unconditionally (conditional.enabled=false)",
        )
    return int(data.num_classes)


def agreed_memory_format(
    setting: Any,  # noqa: ANN401 - the speed.channels_last value
    device: torch.device,
    shape: tuple[int, ...],
    dist: distributed.DistInfo,
) -> torch.memory_format:
    """The networks' memory format for ``setting`` on this machine
    (wgangp/fast/layout.py). Under torchrun every rank takes rank 0's choice: DDP
    refuses replicas whose parameters' strides differ, which ``auto`` could give on a
    mixed cluster."""
    fmt = layout.resolve_memory_format(setting, device, shape)
    if dist.enabled and layout.normalize_setting(setting) == "auto":
        nhwc = distributed.broadcast_object(fmt == torch.channels_last)
        fmt = torch.channels_last if nhwc else torch.contiguous_format
    if len(shape) == 3:
        log.info("memory format: %s (speed.channels_last=%s)", fmt, setting)
    return fmt


def log_summary(
    cfg: DictConfig,
    data: Any,  # noqa: ANN401 - the DataSource
    critic: torch.nn.Module,
    generator: torch.nn.Module,
    dist: distributed.DistInfo,
) -> None:
    """The run's data, networks and effective batch size, in two log lines."""
    log.info(
        "data %s | critic %s: %d params | generator %s: %d params",
        data.describe(),
        cfg.critic.name,
        count_parameters(critic),
        cfg.generator.name,
        count_parameters(generator),
    )
    batch = int(cfg.trainer.batch_size)
    log.info(
        "effective batch size %d (%d per rank × %d ranks)",
        batch * dist.world_size,
        batch,
        dist.world_size,
    )


__all__ = ["agreed_memory_format", "conditional_classes", "log_summary"]
