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
``instancenorm`` can be forced, and ``batchnorm`` (``Normalize`` in the other modes)
with ``loss=wgan|dcgan|lsgan``. It sits at both pre-activation points of every
:class:`~wgangp.models.blocks.ResidualBlock`, never in the first block/conv. The
generator uses batch norm there (``generator.norm``).

Init (``init=tflib``): 3×3 convs in the blocks he, 1×1 shortcuts glorot, linears
glorot, and the input/output convs as noted above (formulas in
:mod:`wgangp.models.blocks`).

**Class-conditional (AC-GAN) variant** (``num_classes = K > 0``; the official
``gan_cifar_resnet.py`` with ``CONDITIONAL = ACGAN = True``, the paper's Table 3
"supervised" model). Generator: both norms of every residual block become
:class:`~wgangp.models.blocks.ConditionalBatchNorm2d` (batch statistics, per-class
scale and offset); the output norm stays plain batch norm (the official
``Generator.OutputN`` gets no labels) and nothing else sees the label, so
``generator.norm`` must be ``batchnorm``. ``G(z, labels)``; without labels it draws
none but uses ``arange(N) % K``, equal class counts in a fixed order. Critic: the trunk
is unchanged and a second linear head (the official ``Discriminator.ACGANOutput``)
reads the same features as the score: ``D(x)`` is the score as before,
``D(x, with_logits=True)`` is ``(score (N,), logits (N, K))``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from wgangp.models.blocks import (
    ActFactory,
    OptimizedDownBlock,
    ResidualBlock,
    check_with_logits,
    conv,
    generator_labels,
    image_net_args,
    log2_stages,
    norm_layer,
    run_blocks,
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
    """G of ``gan_cifar_resnet.py``, generalised to 16×16; ``num_classes > 0``: the
    ``CONDITIONAL`` one (conditional batch norm in the blocks, see the module doc)."""

    def __init__(
        self,
        channels: int,
        size: int,
        dim: int,
        z_dim: int,
        norm: str,
        act: ActFactory,
        out: type[nn.Module] = nn.Tanh,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        self.sample_shape = (channels, size, size)
        self.z_dim, self.dim, self.num_classes = z_dim, dim, num_classes
        self.input = tag(nn.Linear(z_dim, 4 * 4 * dim), "glorot")
        self.blocks = nn.Sequential(
            *(
                ResidualBlock(dim, dim, "up", norm, act, num_classes=num_classes)
                for _ in range(log2_stages(size))
            )
        )
        # unconditional even in the conditional model (the official OutputN gets no labels)
        self.output = nn.Sequential(
            norm_layer(norm, dim), act(), conv(dim, channels, 3, init="glorot"), out()
        )

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        labels = generator_labels(self.num_classes, z, labels)
        h = self.input(z).view(z.shape[0], self.dim, 4, 4)
        return self.output(run_blocks(self.blocks, h, labels))


class CifarResNetCritic(nn.Module):
    """D of ``gan_cifar_resnet.py``; ``num_classes > 0`` adds its AC-GAN head."""

    def __init__(
        self,
        channels: int,
        size: int,
        dim: int,
        norm: str,
        act: ActFactory,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        self.sample_shape = (channels, size, size)
        self.num_classes = num_classes
        blocks: list[nn.Module] = [OptimizedDownBlock(channels, dim, act)]
        r = size // 2
        while r > 8:  # down to 8×8 like the 32×32 model
            blocks.append(ResidualBlock(dim, dim, "down", norm, act))
            r //= 2
        blocks += [ResidualBlock(dim, dim, None, norm, act) for _ in range(2)]
        self.blocks = nn.Sequential(*blocks)
        self.act = act()
        self.output = tag(nn.Linear(dim, 1), "glorot")
        if num_classes:  # Discriminator.ACGANOutput, on the same pooled features
            self.acgan = tag(nn.Linear(dim, num_classes), "glorot")

    def forward(self, x: Tensor, with_logits: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Score ``(N,)``; with ``with_logits`` also the class logits ``(N, K)``."""
        check_with_logits(self, with_logits)
        h = self.act(self.blocks(x)).mean(dim=(2, 3))  # global mean pool: (N, dim)
        score = self.output(h).squeeze(1)
        return (score, self.acgan(h)) if with_logits else score


# ----------------------------------------------------------------- 64×64 variant


class LargeResNetGenerator(nn.Module):
    """G of ``gan_64x64.py`` (``GoodGenerator``), generalised to 128×128;
    ``num_classes > 0``: conditional batch norm in the blocks, as the CIFAR one."""

    def __init__(
        self,
        channels: int,
        size: int,
        dim: int,
        z_dim: int,
        norm: str,
        act: ActFactory,
        out: type[nn.Module] = nn.Tanh,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        self.sample_shape = (channels, size, size)
        self.z_dim, self.num_classes = z_dim, num_classes
        self.top_channels = _large_width(dim, size, 4)
        self.input = tag(nn.Linear(z_dim, 4 * 4 * self.top_channels), "glorot")
        blocks: list[nn.Module] = []
        r = 4
        while r < size:
            c_in, c_out = _large_width(dim, size, r), _large_width(dim, size, 2 * r)
            blocks.append(
                ResidualBlock(
                    c_in, c_out, "up", norm, act, conv1_bias=False, num_classes=num_classes
                )
            )
            r *= 2
        self.blocks = nn.Sequential(*blocks)
        self.output = nn.Sequential(
            norm_layer(norm, dim), act(), conv(dim, channels, 3, init="he"), out()
        )

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        labels = generator_labels(self.num_classes, z, labels)
        h = self.input(z).view(z.shape[0], self.top_channels, 4, 4)
        return self.output(run_blocks(self.blocks, h, labels))


class LargeResNetCritic(nn.Module):
    """D of ``gan_64x64.py`` (``GoodDiscriminator``), generalised to 128×128;
    ``num_classes > 0`` adds an AC-GAN head on the flattened features the score reads."""

    def __init__(
        self,
        channels: int,
        size: int,
        dim: int,
        norm: str,
        act: ActFactory,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        self.sample_shape = (channels, size, size)
        self.num_classes = num_classes
        self.input = conv(channels, dim, 3, init="glorot")
        blocks: list[nn.Module] = []
        r = size
        while r > 4:
            c_in, c_out = _large_width(dim, size, r), _large_width(dim, size, r // 2)
            blocks.append(ResidualBlock(c_in, c_out, "down", norm, act, conv1_bias=False))
            r //= 2
        self.blocks = nn.Sequential(*blocks)
        features = 4 * 4 * _large_width(dim, size, 4)
        self.flatten = nn.Flatten()
        self.output = tag(nn.Linear(features, 1), "glorot")
        if num_classes:
            self.acgan = tag(nn.Linear(features, num_classes), "glorot")

    def forward(self, x: Tensor, with_logits: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Score ``(N,)``; with ``with_logits`` also the class logits ``(N, K)``."""
        check_with_logits(self, with_logits)
        h = self.flatten(self.blocks(self.input(x)))  # (N, C·4·4), channel-major
        score = self.output(h).squeeze(1)
        return (score, self.acgan(h)) if with_logits else score


# ----------------------------------------------------------------- builders


def default_critic_norm(size: int) -> str:
    """What ``critic.norm=auto`` means at ``size``: the official choice per variant."""
    return "none" if size in CIFAR_SIZES else "layernorm"


@register_critic("resnet", conditional=True)
def build_resnet_critic(cfg: Any, sample_shape: tuple[int, ...], num_classes: int = 0) -> nn.Module:
    a = image_net_args("critic", cfg, sample_shape, SIZES, "resnet", default_critic_norm)
    cls = CifarResNetCritic if a.size in CIFAR_SIZES else LargeResNetCritic
    return init_weights(cls(a.channels, a.size, a.dim, a.norm, a.act, num_classes), a.init)


@register_generator("resnet", conditional=True)
def build_resnet_generator(
    cfg: Any, sample_shape: tuple[int, ...], num_classes: int = 0
) -> nn.Module:
    a = image_net_args("generator", cfg, sample_shape, SIZES, "resnet")
    cls = CifarResNetGenerator if a.size in CIFAR_SIZES else LargeResNetGenerator
    g = cls(a.channels, a.size, a.dim, a.z_dim, a.norm, a.act, a.out, num_classes)
    return init_weights(g, a.init)


__all__ = [
    "CifarResNetCritic",
    "CifarResNetGenerator",
    "LargeResNetCritic",
    "LargeResNetGenerator",
    "build_resnet_critic",
    "build_resnet_generator",
    "default_critic_norm",
]
