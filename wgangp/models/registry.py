"""Name → builder registries for critics and generators.

A builder takes the group's config node (``critic`` or ``generator``) and the shape of
one data sample (``(D,)`` for points, ``(C, H, W)`` for images) and returns a module.
Generators expose ``z_dim`` and map ``(N, z_dim)`` noise to ``(N, *sample_shape)``;
critics map ``(N, *sample_shape)`` to ``(N,)`` scores (linear output, no sigmoid).

Class-conditional (AC-GAN) training: an architecture registered with
``conditional=True`` has a builder that also takes ``num_classes``; with
``num_classes = K > 0`` its generator maps ``(z, labels)`` to samples (``labels`` of
shape ``(N,)``, optional) and its critic's ``critic(x, with_logits=True)`` returns
``(scores (N,), class logits (N, K))`` while ``critic(x)`` stays the plain score.
``build_critic``/``build_generator`` refuse ``num_classes > 0`` for any other
architecture, and never pass ``num_classes`` to one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from wgangp.errors import ConfigError

# (cfg, sample_shape) → module; a conditional-capable one also takes num_classes=
Builder = Callable[..., nn.Module]

CRITICS: dict[str, Builder] = {}
GENERATORS: dict[str, Builder] = {}
#: names whose builders accept ``num_classes`` (class-conditional, AC-GAN)
CONDITIONAL_CRITICS: set[str] = set()
CONDITIONAL_GENERATORS: set[str] = set()


def register_critic(name: str, *, conditional: bool = False) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        CRITICS[name] = fn
        if conditional:
            CONDITIONAL_CRITICS.add(name)
        return fn

    return deco


def register_generator(name: str, *, conditional: bool = False) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        GENERATORS[name] = fn
        if conditional:
            CONDITIONAL_GENERATORS.add(name)
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


def _check_conditional(group: str, name: str, capable: set[str], num_classes: int) -> None:
    """Refuse ``num_classes > 0`` for an architecture without a conditional variant."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        # it comes from the data set's class count, not from the user
        raise ValueError(f"num_classes must be an integer ≥ 0, not {num_classes!r}")
    if num_classes and name not in capable:
        names = " | ".join(sorted(capable))
        raise ConfigError(
            "conditional.enabled",
            True,
            f"true only with {group}.name={names}, not {group}.name={name}",
            "class-conditional training (AC-GAN) is built for the resnet and dcgan "
            "networks; use critic=resnet generator=resnet (or dcgan), or "
            "conditional.enabled=false",
        )


def check_conditional_generator(cfg: Any) -> None:  # noqa: ANN401
    """A class-conditional generator's norms: the labels enter only through conditional
    batch norm per channel, so any other norm would leave them unused."""
    fix = (
        "the labels enter the generator through conditional batch norm per channel, so "
        "without it they would be ignored: use generator.norm=batchnorm (and "
        "generator.input_norm=channel), or conditional.enabled=false"
    )
    if cfg.norm != "batchnorm":
        raise ConfigError(
            "generator.norm", cfg.norm, "batchnorm with conditional.enabled=true", fix
        )
    input_norm = getattr(cfg, "input_norm", "channel")
    if input_norm != "channel":
        raise ConfigError(
            "generator.input_norm", input_norm, "channel with conditional.enabled=true", fix
        )


def build_critic(cfg: Any, sample_shape: tuple[int, ...], num_classes: int = 0) -> nn.Module:
    """The ``cfg.name`` critic; ``num_classes > 0``: with a K-class AC-GAN head."""
    builder = _lookup(CRITICS, "critic", cfg.name)
    _check_conditional("critic", cfg.name, CONDITIONAL_CRITICS, num_classes)
    if num_classes:
        return builder(cfg, tuple(sample_shape), num_classes=num_classes)
    return builder(cfg, tuple(sample_shape))


def build_generator(cfg: Any, sample_shape: tuple[int, ...], num_classes: int = 0) -> nn.Module:
    """The ``cfg.name`` generator; ``num_classes > 0``: conditioned on K classes."""
    builder = _lookup(GENERATORS, "generator", cfg.name)
    _check_conditional("generator", cfg.name, CONDITIONAL_GENERATORS, num_classes)
    input_norm = getattr(cfg, "input_norm", "channel")
    if input_norm != "channel" and cfg.name != "dcgan":
        # only the DCGAN generator normalises its linear layer's output
        raise ConfigError(
            "generator.input_norm",
            input_norm,
            f"channel with generator.name={cfg.name} (feature is the dcgan generator's)",
            "drop generator.input_norm, or use generator=dcgan",
        )
    if num_classes:
        check_conditional_generator(cfg)
        return builder(cfg, tuple(sample_shape), num_classes=num_classes)
    return builder(cfg, tuple(sample_shape))
