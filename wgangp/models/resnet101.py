r"""The 101-layer bottleneck ResNets of ``gan_64x64.py`` (64×64 only).

``ResnetGenerator`` / ``ResnetDiscriminator``, the last pair of the paper's Figure 2
(``experiment=fig2_resnet101``; paper: ``dim = 64``). Written ``d`` for ``dim``.

Bottleneck block ``c_in → c_out`` (official ``BottleneckResidualBlock``, all convs
``he`` init)::

    h = ReLU(x)
    h = 1×1 conv c_in → c_in/2                 (bias)
    h = ReLU(h)
    h = 3×3 conv c_in/2 → c_out/2              (bias; down: stride 2, up: stride-2
                                                transposed conv)
    h = ReLU(h)
    h = 1×1 conv c_out/2 → c_out               (no bias: a norm follows)
    h = norm(h)                                (G: batch norm, D: layer norm)
    out = shortcut(x) + 0.3·h

The shortcut is the identity when nothing changes shape, otherwise a 1×1 conv with
bias and glorot init: a stride-2 1×1 conv going down (the top-left pixel of every 2×2
block), a sub-pixel 1×1 conv going up (:class:`SubpixelConv`: 1×1 conv to ``4·c_out``
channels, then TensorFlow's ``depth_to_space(2)``).

Generator ``(N, z_dim) → (N, C, 64, 64)``::

    linear z → 4·4·8d (glorot), reshape (8d, 4, 4)     # no norm, no activation
    6 × block(8d)   at 4×4,   block(8d → 4d, up)
    6 × block(4d)   at 8×8,   block(4d → 2d, up)
    6 × block(2d)   at 16×16, block(2d → d, up)
    6 × block(d)    at 32×32, block(d → d/2, up)
    5 × block(d/2)  at 64×64
    1×1 conv d/2 → C (glorot, bias), tanh(x / 5)

Critic ``(N, C, 64, 64) → (N,)``::

    1×1 conv C → d/2 (glorot, bias)
    5 × block(d/2)  at 64×64, block(d/2 → d, down)
    6 × block(d)    at 32×32, block(d → 2d, down)
    6 × block(2d)   at 16×16, block(2d → 4d, down)
    6 × block(4d)   at 8×8,   block(4d → 8d, down)
    6 × block(8d)   at 4×4
    flatten 8d·4·4 → linear → 1 (glorot), score / 5

"101 layers": each network has 33 blocks of 3 convolutions on the residual path plus
its input and output layer, 33·3 + 2 = 101 weight layers along the main path; the four
1×1 shortcut convs of the resampling blocks are not counted (He et al.'s ResNet-101
counts the same way: 1 + 33·3 + 1, projection shortcuts excluded).

Norms (``critic.norm`` / ``generator.norm``): ``Normalize`` is batch norm in the
generator and layer norm over (C, H, W) in the critic in WGAN-GP mode
(``critic.norm=auto`` → ``layernorm``); ``none`` and ``instancenorm`` can be forced.

Padding: the 3×3 stride-2 conv (padding 1) maps 2H → H and the 3×3 transposed conv
(padding 1, output padding 1) H → 2H like TensorFlow's 'SAME'; TensorFlow pads (0, 1)
instead of (1, 1) for that conv (and crops its adjoint accordingly), a one-pixel shift
of the residual branch against the shortcut, as in :mod:`wgangp.models.dcgan`.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from wgangp.errors import ConfigError
from wgangp.models.blocks import ActFactory, conv, image_net_args, norm_layer
from wgangp.models.init import init_weights, tag
from wgangp.models.registry import register_critic, register_generator

SIZES = (64,)
RESIDUAL_SCALE = 0.3  # shortcut + 0.3·output
OUTPUT_SCALE = 5.0  # G: tanh(x / 5); D: score / 5
#: (width multiple of dim, blocks at that resolution) from 4×4 up to 64×64
STAGES = ((8.0, 6), (4.0, 6), (2.0, 6), (1.0, 6), (0.5, 5))


class DepthToSpace(nn.Module):
    """TensorFlow's ``depth_to_space(2)`` on an NCHW map: ``(N, 4C, H, W) → (N, C, 2H, 2W)``.

    ``out[n, c, 2h + i, 2w + j] = x[n, (2i + j)·C + c, h, w]`` (TensorFlow's channel
    order; ``nn.PixelShuffle`` reads channel ``4c + 2i + j`` instead).
    """

    def forward(self, x: Tensor) -> Tensor:
        n, c4, h, w = x.shape
        c = c4 // 4
        y = x.reshape(n, 2, 2, c, h, w).permute(0, 3, 4, 1, 5, 2)
        return y.reshape(n, c, 2 * h, 2 * w)


class StridedPointwiseConv(nn.Conv2d):
    """1×1 stride-2 conv ``(N, c_in, 2H, 2W) → (N, c_out, H, W)`` (the official 'down'
    shortcut; TensorFlow's 'SAME' pads nothing here): the pixels ``x[:, :, ::2, ::2]``
    through a 1×1 conv, the same map. It is a stride-2 ``Conv2d`` for its init (tflib's
    ``fan_out = c_out / 4``) but never calls the strided kernel: PyTorch's CPU (oneDNN)
    backward of a strided 1×1 conv on channels-last maps with few channels corrupts the
    heap (seen with PyTorch 2.14 at 64×64, 4 → 8 and 8 → 16 channels: tiny widths and
    ``speed.channels_last``)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(c_in, c_out, 1, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x[:, :, ::2, ::2], self.weight, self.bias)


class SubpixelConv(nn.Sequential):
    """The official ``SubpixelConv2D`` with a 1×1 kernel: conv ``c_in → 4·c_out``
    (glorot, bias), then :class:`DepthToSpace`. ``(N, c_in, H, W) → (N, c_out, 2H, 2W)``."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(conv(c_in, 4 * c_out, 1, init="glorot"), DepthToSpace())


class BottleneckBlock(nn.Module):
    """``shortcut(x) + 0.3·norm(conv2(act(conv1b(act(conv1(act(x)))))))``, see the
    module docstring. ``resample``: ``None``, ``"down"`` or ``"up"``."""

    def __init__(
        self, c_in: int, c_out: int, resample: str | None, norm: str, act: ActFactory
    ) -> None:
        super().__init__()
        mid_in, mid_out = c_in // 2, c_out // 2
        self.act1 = act()
        self.conv1 = conv(c_in, mid_in, 1)
        self.act2 = act()
        self.conv1b: nn.Module
        if resample == "down":
            self.conv1b = tag(nn.Conv2d(mid_in, mid_out, 3, stride=2, padding=1), "he")
        elif resample == "up":
            layer = nn.ConvTranspose2d(mid_in, mid_out, 3, stride=2, padding=1, output_padding=1)
            self.conv1b = tag(layer, "he")
        elif resample is None:
            self.conv1b = conv(mid_in, mid_out, 3)
        else:
            raise ValueError(resample)
        self.act3 = act()
        self.conv2 = conv(mid_out, c_out, 1, bias=False)
        self.norm = norm_layer(norm, c_out)
        self.shortcut: nn.Module
        if resample == "down":
            self.shortcut = tag(StridedPointwiseConv(c_in, c_out), "glorot")
        elif resample == "up":
            self.shortcut = SubpixelConv(c_in, c_out)
        elif c_in != c_out:
            self.shortcut = conv(c_in, c_out, 1, init="glorot")
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1b(self.act2(self.conv1(self.act1(x))))
        h = self.norm(self.conv2(self.act3(h)))
        return self.shortcut(x) + RESIDUAL_SCALE * h


def _width(dim: int, mult: float) -> int:
    return int(dim * mult)


def _stage_blocks(
    dim: int, stages: tuple[tuple[float, int], ...], resample: str, norm: str, act: ActFactory
) -> nn.Sequential:
    """Each stage's ``n`` shape-keeping blocks, then one ``resample`` block into the next
    stage's width (none after the last stage)."""
    blocks: list[nn.Module] = []
    for k, (mult, n) in enumerate(stages):
        c = _width(dim, mult)
        blocks += [BottleneckBlock(c, c, None, norm, act) for _ in range(n)]
        if k + 1 < len(stages):
            blocks.append(BottleneckBlock(c, _width(dim, stages[k + 1][0]), resample, norm, act))
    return nn.Sequential(*blocks)


class ResNet101Generator(nn.Module):
    """G of ``gan_64x64.py`` (``ResnetGenerator``)."""

    def __init__(
        self,
        channels: int,
        dim: int,
        z_dim: int,
        norm: str,
        act: ActFactory,
        out: type[nn.Module] = nn.Tanh,
    ) -> None:
        super().__init__()
        self.sample_shape = (channels, 64, 64)
        self.z_dim = z_dim
        self.top_channels = _width(dim, STAGES[0][0])
        self.input = tag(nn.Linear(z_dim, 4 * 4 * self.top_channels), "glorot")
        self.blocks = _stage_blocks(dim, STAGES, "up", norm, act)
        self.output = conv(_width(dim, STAGES[-1][0]), channels, 1, init="glorot")
        self.out = out()

    def forward(self, z: Tensor) -> Tensor:
        h = self.blocks(self.input(z).view(z.shape[0], self.top_channels, 4, 4))
        return self.out(self.output(h) / OUTPUT_SCALE)


class ResNet101Critic(nn.Module):
    """D of ``gan_64x64.py`` (``ResnetDiscriminator``): a per-sample score / 5."""

    def __init__(self, channels: int, dim: int, norm: str, act: ActFactory) -> None:
        super().__init__()
        self.sample_shape = (channels, 64, 64)
        stages = STAGES[::-1]  # 64×64 down to 4×4
        self.input = conv(channels, _width(dim, stages[0][0]), 1, init="glorot")
        self.blocks = _stage_blocks(dim, stages, "down", norm, act)
        self.flatten = nn.Flatten()
        self.output = tag(nn.Linear(4 * 4 * _width(dim, stages[-1][0]), 1), "glorot")

    def forward(self, x: Tensor) -> Tensor:
        h = self.flatten(self.blocks(self.input(x)))  # (N, C·4·4), channel-major
        return self.output(h).squeeze(1) / OUTPUT_SCALE


def _check_dim(group: str, dim: int) -> None:
    if dim % 4:
        raise ConfigError(
            f"{group}.dim",
            dim,
            "a multiple of 4",
            "the 64×64 blocks are dim/2 wide with dim/4-wide bottlenecks (the paper: 64)",
        )


@register_critic("resnet101")
def build_resnet101_critic(cfg: Any, sample_shape: tuple[int, ...]) -> nn.Module:
    a = image_net_args("critic", cfg, sample_shape, SIZES, "resnet101", lambda _: "layernorm")
    _check_dim("critic", a.dim)
    return init_weights(ResNet101Critic(a.channels, a.dim, a.norm, a.act), a.init)


@register_generator("resnet101")
def build_resnet101_generator(cfg: Any, sample_shape: tuple[int, ...]) -> nn.Module:
    a = image_net_args("generator", cfg, sample_shape, SIZES, "resnet101")
    _check_dim("generator", a.dim)
    model = ResNet101Generator(a.channels, a.dim, a.z_dim, a.norm, a.act, a.out)
    return init_weights(model, a.init)


__all__ = [
    "BottleneckBlock",
    "DepthToSpace",
    "ResNet101Critic",
    "ResNet101Generator",
    "StridedPointwiseConv",
    "SubpixelConv",
    "build_resnet101_critic",
    "build_resnet101_generator",
]
