"""Data sets by name: each data module registers its builder here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from wgangp.data.base import DataSource
from wgangp.data.toy import TOY_DATASETS, build_toy
from wgangp.errors import ConfigError

DataBuilder = Callable[[Any, int, torch.device, int], DataSource]

#: name → builder(dataset_cfg, batch_size, device, seed)
DATASETS: dict[str, DataBuilder] = {name: build_toy for name in TOY_DATASETS}


def register_dataset(name: str) -> Callable[[DataBuilder], DataBuilder]:
    def deco(fn: DataBuilder) -> DataBuilder:
        DATASETS[name] = fn
        return fn

    return deco


def build_data(cfg: Any, batch_size: int, device: torch.device, seed: int) -> DataSource:
    if cfg.name not in DATASETS:
        raise ConfigError("dataset.name", cfg.name, f"one of {sorted(DATASETS)}")
    return DATASETS[cfg.name](cfg, batch_size, device, seed)
