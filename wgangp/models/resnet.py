r"""The paper's residual networks, one ``resnet`` name chosen by resolution.

Two variants from the official code, picked from the image side ``S``:

**CIFAR variant** (``gan_cifar_resnet.py``; ``S ∈ {16, 32}``, paper: ``dim = 128``).
Constant width ``dim`` everywhere.

Generator ``(N, z_dim) → (N, C, S, S)``::

    linear z → 4·4·dim, reshape (dim, 4, 4)
    log2(S/4) × ResidualBlock(dim → dim, up)        # 4 → 8 → 16 (→ 32)
    norm, ReLU, 3×3 conv dim → C (glorot), tanh

Critic ``(N, C, S, S) → (N,)``::

    OptimizedDownBlock(C → dim)                      # S → S/2, no norm
    ResidualBlock(dim → dim, down) until 8×8         # one at 32, none at 16
    2 × ResidualBlock(dim → dim)                     # at 8×8
    ReLU, mean over H×W, linear dim → 1

**64×64 variant** (``gan_64x64.py``'s ``GoodGenerator``/``GoodDiscriminator``;
``S ∈ {64, 128}``, paper: ``dim = 64``). The width at a feature map of side ``r`` is
``dim · min(8, S/r)``: ``8·dim`` at 4×4 and 8×8 down to ``dim`` at ``S×S`` (the
official 64×64 plan 8-8-4-2-1; at 128 one more ``8·dim`` stage).

Generator::

    linear z → 4·4·8·dim, reshape (8·dim, 4, 4)
    log2(S/4) × ResidualBlock(up), widths as above (first conv without bias)
    norm, ReLU, 3×3 conv dim → C (he), tanh

Critic::

    3×3 conv C → dim (glorot)
    log2(S/4) × ResidualBlock(down), widths as above (first conv without bias)
    flatten 8·dim·4·4 → linear → 1

Critic norm (``critic.norm``): ``auto`` (the YAML default) resolves to the official
choice, ``none`` for the CIFAR variant (``NORMALIZATION_D = False``) and ``layernorm``
for the 64×64 one (``Normalize`` in WGAN-GP mode); ``none``, ``layernorm`` and
``instancenorm`` can be forced. It sits at both pre-activation points of every
:class:`~wgangp.models.blocks.ResidualBlock`, never in the first block/conv. The
generator uses batch norm there (``generator.norm``).

Init (``init=tflib``): 3×3 convs in the blocks he, 1×1 shortcuts glorot, linears
glorot, and the input/output convs as noted above (formulas in
:mod:`wgangp.models.blocks`).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from wgangp.models.blocks import (
    ActFactory,
    OptimizedDownBlock,
    ResidualBlock,
    conv,
    image_net_args,
    log2_stages,
    norm_layer,
)
from wgangp.models.init import init_weights, tag
from wgangp.models.registry import register_critic, register_generator

CIFAR_SIZES = (16, 32)
LARGE_SIZES = (64, 128)
SIZES = CIFAR_SIZES + LARGE_SIZES
MAX_MULT = 8  # the 64×64 model never goes wider than 8·dim


def _large_width(dim: int, size: int, r: int) -> int:
    """Channels of the 64×64 variant at an r×r feature map of an S×S model."""
    return dim * min(MAX_MULT, size // r)


# ----------------------------------------------------------------- CIFAR variant


class CifarResNetGenerator(nn.Module):
    """G of ``gan_cifar_resnet.py`` (unconditional), generalised to 16×16."""

    def __init__(
        self,
        channels: int,
        size: int,
        dim: int,
        z_dim: int,
        norm: str,
        act: ActFactory,
        out: type[nn.Module] = nn.Tanh,
    ) -> None:
        super().__init__()
        self.sample_shape = (channels, size, size)
        self.z_dim, self.dim = z_dim, dim
        self.input = tag(nn.Linear(z_dim, 4 * 4 * dim), "glorot")
        self.blocks = nn.Sequential(
            *(ResidualBlock(dim, dim, "up", norm, act) for _ in range(log2_stages(size)))
        )
        self.output = nn.Sequential(
            norm_layer(norm, dim), act(), conv(dim, channels, 3, init="glorot"), out()
        )

    def forward(self, z: Tensor) -> Tensor:
        h = self.input(z).view(z.shape[0], self.dim, 4, 4)
        return self.output(self.blocks(h))


class CifarResNetCritic(nn.Module):
    """D of ``gan_cifar_resnet.py`` (WGAN output only, no AC-GAN head)."""

    def __init__(self, channels: int, size: int, dim: int, norm: str, act: ActFactory) -> None:
        super().__init__()
        self.sample_shape = (channels, size, size)
        blocks: list[nn.Module] = [OptimizedDownBlock(channels, dim, act)]
        r = size // 2
        while r > 8:  # down to 8×8 like the 32×32 model
            blocks.append(ResidualBlock(dim, dim, "down", norm, act))
            r //= 2
        blocks += [ResidualBlock(dim, dim, None, norm, act) for _ in range(2)]
        self.blocks = nn.Sequential(*blocks)
        self.act = act()
        self.output = tag(nn.Linear(dim, 1), "glorot")

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(self.blocks(x)).mean(dim=(2, 3))  # global mean pool: (N, dim)
        return self.output(h).squeeze(1)


# ----------------------------------------------------------------- 64×64 variant


class LargeResNetGenerator(nn.Module):
    """G of ``gan_64x64.py`` (``GoodGenerator``), generalised to 128×128."""

    def __init__(
        self,
        channels: int,
        size: int,
        dim: int,
        z_dim: int,
        norm: str,
        act: ActFactory,
        out: type[nn.Module] = nn.Tanh,
    ) -> None:
        super().__init__()
        self.sample_shape = (channels, size, size)
        self.z_dim = z_dim
        self.top_channels = _large_width(dim, size, 4)
        self.input = tag(nn.Linear(z_dim, 4 * 4 * self.top_channels), "glorot")
        blocks: list[nn.Module] = []
        r = 4
        while r < size:
            c_in, c_out = _large_width(dim, size, r), _large_width(dim, size, 2 * r)
            blocks.append(ResidualBlock(c_in, c_out, "up", norm, act, conv1_bias=False))
            r *= 2
        self.blocks = nn.Sequential(*blocks)
        self.output = nn.Sequential(
            norm_layer(norm, dim), act(), conv(dim, channels, 3, init="he"), out()
        )

    def forward(self, z: Tensor) -> Tensor:
        h = self.input(z).view(z.shape[0], self.top_channels, 4, 4)
        return self.output(self.blocks(h))


class LargeResNetCritic(nn.Module):
    """D of ``gan_64x64.py`` (``GoodDiscriminator``), generalised to 128×128."""

    def __init__(self, channels: int, size: int, dim: int, norm: str, act: ActFactory) -> None:
        super().__init__()
        self.sample_shape = (channels, size, size)
        self.input = conv(channels, dim, 3, init="glorot")
        blocks: list[nn.Module] = []
        r = size
        while r > 4:
            c_in, c_out = _large_width(dim, size, r), _large_width(dim, size, r // 2)
            blocks.append(ResidualBlock(c_in, c_out, "down", norm, act, conv1_bias=False))
            r //= 2
        self.blocks = nn.Sequential(*blocks)
        self.output = tag(nn.Linear(4 * 4 * _large_width(dim, size, 4), 1), "glorot")

    def forward(self, x: Tensor) -> Tensor:
        return self.output(self.blocks(self.input(x)).flatten(1)).squeeze(1)


# ----------------------------------------------------------------- builders


def default_critic_norm(size: int) -> str:
    """What ``critic.norm=auto`` means at ``size``: the official choice per variant."""
    return "none" if size in CIFAR_SIZES else "layernorm"


@register_critic("resnet")
def build_resnet_critic(cfg: Any, sample_shape: tuple[int, ...]) -> nn.Module:
    a = image_net_args("critic", cfg, sample_shape, SIZES, "resnet", default_critic_norm)
    cls = CifarResNetCritic if a.size in CIFAR_SIZES else LargeResNetCritic
    return init_weights(cls(a.channels, a.size, a.dim, a.norm, a.act), a.init)


@register_generator("resnet")
def build_resnet_generator(cfg: Any, sample_shape: tuple[int, ...]) -> nn.Module:
    a = image_net_args("generator", cfg, sample_shape, SIZES, "resnet")
    cls = CifarResNetGenerator if a.size in CIFAR_SIZES else LargeResNetGenerator
    return init_weights(cls(a.channels, a.size, a.dim, a.z_dim, a.norm, a.act, a.out), a.init)


__all__ = [
    "CifarResNetCritic",
    "CifarResNetGenerator",
    "LargeResNetCritic",
    "LargeResNetGenerator",
    "build_resnet_critic",
    "build_resnet_generator",
    "default_critic_norm",
]
