"""Name → builder registries for critics and generators.

A builder takes the group's config node (``critic`` or ``generator``) and the shape of
one data sample (``(D,)`` for points, ``(C, H, W)`` for images) and returns a module.
Generators expose ``z_dim`` and map ``(N, z_dim)`` noise to ``(N, *sample_shape)``;
critics map ``(N, *sample_shape)`` to ``(N,)`` scores (linear output, no sigmoid).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from wgangp.errors import ConfigError

Builder = Callable[[Any, tuple[int, ...]], nn.Module]

CRITICS: dict[str, Builder] = {}
GENERATORS: dict[str, Builder] = {}


def register_critic(name: str) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        CRITICS[name] = fn
        return fn

    return deco


def register_generator(name: str) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        GENERATORS[name] = fn
        return fn

    return deco


def _lookup(table: dict[str, Builder], group: str, name: str) -> Builder:
    if name not in table:
        raise ConfigError(
            f"{group}.name",
            name,
            f"one of {sorted(table)}",
            f"pick an existing {group} architecture",
        )
    return table[name]


def build_critic(cfg: Any, sample_shape: tuple[int, ...]) -> nn.Module:
    return _lookup(CRITICS, "critic", cfg.name)(cfg, tuple(sample_shape))


def build_generator(cfg: Any, sample_shape: tuple[int, ...]) -> nn.Module:
    builder = _lookup(GENERATORS, "generator", cfg.name)
    input_norm = getattr(cfg, "input_norm", "channel")
    if input_norm != "channel" and cfg.name != "dcgan":
        # only the DCGAN generator normalises its linear layer's output
        raise ConfigError(
            "generator.input_norm",
            input_norm,
            f"channel with generator.name={cfg.name} (feature is the dcgan generator's)",
            "drop generator.input_norm, or use generator=dcgan",
        )
    return builder(cfg, tuple(sample_shape))
