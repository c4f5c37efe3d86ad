r"""Building blocks shared by the convolutional critics and generators.

Everything here is a small ``nn.Module`` or a function that makes one, so that
:mod:`wgangp.models.dcgan` and :mod:`wgangp.models.resnet` read as a list of layers.

Weight initialisation lives in :mod:`wgangp.models.init`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wgangp.errors import ConfigError
from wgangp.models.init import check_init, tag
from wgangp.models.mlp import ACTIVATIONS, activation, image_output

ActFactory = Callable[[], nn.Module]

#: ``activation: gated``: the gated multiplicative nonlinearity (conv nets that support it)
GATED = "gated"

# batchnorm: for the baselines without a penalty only (loss=wgan|dcgan|lsgan, as the
# official scripts in those modes); wgangp.config.validate and the Trainer refuse it with one
CRITIC_NORMS = ("none", "layernorm", "instancenorm", "auto", "batchnorm")
GENERATOR_NORMS = ("batchnorm", "none", "layernorm", "instancenorm")

# ---------------------------------------------------------------------------- layers


def conv(c_in: int, c_out: int, k: int, *, init: str = "he", bias: bool = True) -> nn.Conv2d:
    """k×k stride-1 convolution that keeps H×W (tflib's 'SAME' padding for odd k)."""
    return tag(nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=bias), init)  # type: ignore[return-value]


class LayerNorm2d(nn.GroupNorm):
    """Layer norm of a conv feature map: statistics over (C, H, W) of *each sample*.

    The official ``Layernorm(name, [1, 2, 3], x)`` normalises over all non-batch axes
    and learns one scale and offset per channel, which is exactly ``GroupNorm`` with
    a single group (ε = 1e-5 in both). One sample's output never depends on another's,
    so the critic stays a per-sample function and the gradient penalty stays valid.
    """

    def __init__(self, channels: int) -> None:
        super().__init__(1, channels, eps=1e-5, affine=True)


def norm_layer(kind: str, channels: int) -> nn.Module:
    """A 2-D normalisation of ``channels`` feature maps (``none`` → identity)."""
    if kind == "none":
        return nn.Identity()
    if kind == "layernorm":
        return LayerNorm2d(channels)
    if kind == "instancenorm":
        # per sample and channel over H×W; affine so it can undo the normalisation
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "batchnorm":
        return nn.BatchNorm2d(channels)
    raise ValueError(kind)  # builders validate before getting here


class ConditionalBatchNorm2d(nn.Module):
    r"""Class-conditional batch norm (Dumoulin et al., ICLR 2017), tflib's ``cond_batchnorm``.

    .. math::

        y_{n,c,h,w} = \gamma_{\ell_n,c}\,
            \frac{x_{n,c,h,w} - \mu_c}{\sqrt{\sigma^2_c + \epsilon}} + \beta_{\ell_n,c}

    with :math:`\mu_c, \sigma^2_c` the mean and (biased) variance of channel ``c`` over
    ``(N, H, W)`` of the whole batch, exactly as plain batch norm (ε = 1e-5), and the
    scale :math:`\gamma` and offset :math:`\beta` looked up per sample from its class
    label :math:`\ell_n`: two ``(num_classes, channels)`` tables, initialised to ones
    and zeros, so at init this *is* ``BatchNorm2d(affine=False)``.

    The normalisation is an ``nn.BatchNorm2d(affine=False)`` child (``self.bn``) so that
    ``SyncBatchNorm.convert_sync_batchnorm``, eval mode's running statistics and
    :func:`~wgangp.models.sampling.sampling_mode` treat it like any other batch norm.
    The tables are ``nn.Embedding`` modules, which
    :func:`~wgangp.models.init.init_weights` leaves alone (it only touches linear, conv
    and affine norm layers). Shapes: ``x (N, C, H, W)``, ``labels (N,)`` int64 in
    ``[0, num_classes)`` → ``(N, C, H, W)``.
    """

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, eps=1e-5, affine=False)
        # from given tables rather than Embedding's N(0, 1) init: no random numbers are
        # drawn, so a seed builds the same convolutions as for the unconditional model
        self.scale = nn.Embedding.from_pretrained(torch.ones(num_classes, channels), freeze=False)
        self.offset = nn.Embedding.from_pretrained(torch.zeros(num_classes, channels), freeze=False)

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        scale = self.scale(labels)[:, :, None, None]
        offset = self.offset(labels)[:, :, None, None]
        return self.bn(x) * scale + offset


def class_norm_layer(kind: str, channels: int, num_classes: int) -> nn.Module:
    """:func:`norm_layer`, or conditional batch norm if ``num_classes > 0`` (the
    builders check that ``kind`` is ``batchnorm`` then)."""
    if num_classes:
        return ConditionalBatchNorm2d(channels, num_classes)
    return norm_layer(kind, channels)


def generator_labels(num_classes: int, z: Tensor, labels: Tensor | None) -> Tensor | None:
    """The ``(N,)`` labels a generator conditions on (``None`` if it is unconditional).

    A conditional generator called without labels uses ``arange(N) % num_classes``:
    balanced classes in a fixed order (a 10-column picture grid has one class per
    column). It draws no random numbers, so it is safe inside CUDA-graph capture.
    """
    if not num_classes:
        if labels is not None:
            raise ValueError("labels given to an unconditional generator")
        return None
    if labels is None:
        return torch.arange(z.shape[0], device=z.device) % num_classes
    if labels.shape != (z.shape[0],):
        raise ValueError(f"labels of shape {tuple(labels.shape)} for {z.shape[0]} noise vectors")
    return labels


def run_blocks(blocks: nn.Sequential, h: Tensor, labels: Tensor | None) -> Tensor:
    """``blocks(h)``, or with the labels given to each block that takes them
    (residual blocks, conditional norms; Sequential passes one input only)."""
    if labels is None:
        return blocks(h)
    for block in blocks:
        h = block(h, labels) if _takes_labels(block) else block(h)
    return h


def _takes_labels(module: nn.Module) -> bool:
    return isinstance(module, ConditionalBatchNorm2d) or getattr(module, "num_classes", 0) > 0


def check_with_logits(critic: nn.Module, with_logits: bool) -> None:
    """Refuse ``critic(x, with_logits=True)`` on a critic without a class head."""
    if with_logits and not critic.num_classes:
        raise ValueError("with_logits=True on an unconditional critic (no class head)")


class GatedTanh(nn.Module):
    r"""The official ``pixcnn_gated_nonlinearity``: :math:`\sigma(a) \cdot \tanh(b)`.

    ``a`` is the even channels ``x[:, 0::2]`` and ``b`` the odd ones ``x[:, 1::2]``
    (``gan_64x64.py``'s ``output[:, ::2], output[:, 1::2]``), so the gate halves the
    channel count: ``(N, 2C, ...) → (N, C, ...)``. A layer feeding it produces twice
    the channels it would feed a pointwise activation, and any norm between the two
    normalises all ``2C`` of them (``activation: gated``).
    """

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(x[:, 0::2]) * torch.tanh(x[:, 1::2])


class MeanPool(nn.Module):
    """2×2 average pooling (the official code's sum of the four strided slices / 4)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, 2)


class Upsample(nn.Module):
    """2× nearest-neighbour up-sampling.

    The official ``UpsampleConv`` concatenates four copies of the channels and applies
    ``depth_to_space(2)``, which copies each pixel into a 2×2 block: nearest neighbour.
    """

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=2, mode="nearest")


class ResidualBlock(nn.Module):
    """Pre-activation residual block: ``shortcut(x) + F(x)``.

    ``F = conv2 ∘ act ∘ norm2 ∘ conv1 ∘ act ∘ norm1`` with 3×3 convolutions; the
    resampling (``up``: nearest 2×, ``down``: 2×2 mean pool) sits *before* ``conv1``
    when going up and *after* ``conv2`` when going down, as in the official
    ``UpsampleConv`` / ``ConvMeanPool``. Shapes: ``(N, c_in, H, W) → (N, c_out, H', W')``
    with ``H' = 2H`` (up), ``H/2`` (down) or ``H``.

    The shortcut is the identity when nothing changes shape, otherwise a 1×1
    convolution (glorot init) applied after up-sampling or after mean pooling (for a
    1×1 conv, pooling before or after gives the same result, so the official
    ``ConvMeanPool`` shortcut of the CIFAR model and ``MeanPoolConv`` one of the 64×64
    model are the same function; pooling first is cheaper).

    Channel plan (official): ``up``: conv1 c_in→c_out, conv2 c_out→c_out; ``down`` and
    none: conv1 c_in→c_in, conv2 c_in→c_out. ``conv1_bias=False`` reproduces the 64×64
    model, whose first convolution has no bias (a norm follows it).

    ``num_classes > 0`` (only with ``norm="batchnorm"``) makes norm1 and norm2
    :class:`ConditionalBatchNorm2d` (the official ``CONDITIONAL`` generator's ``N1``,
    ``N2``), and ``forward`` then needs the ``(N,)`` class labels; an unconditional
    block ignores ``labels`` and has exactly the modules (and state_dict keys) it had
    before conditioning existed.
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        resample: str | None,
        norm: str,
        act: ActFactory,
        *,
        conv1_bias: bool = True,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        if resample not in (None, "up", "down"):
            raise ValueError(resample)
        if num_classes and norm != "batchnorm":
            # labels enter only through the norms: any other norm would ignore them
            raise ValueError(f"a conditional block needs norm='batchnorm', not {norm!r}")
        self.num_classes = num_classes
        mid = c_out if resample == "up" else c_in
        self.norm1 = class_norm_layer(norm, c_in, num_classes)
        self.act1 = act()
        self.up = Upsample() if resample == "up" else nn.Identity()
        self.conv1 = conv(c_in, mid, 3, bias=conv1_bias)
        self.norm2 = class_norm_layer(norm, mid, num_classes)
        self.act2 = act()
        self.conv2 = conv(mid, c_out, 3)
        self.down = MeanPool() if resample == "down" else nn.Identity()
        self.shortcut: nn.Module
        if c_in == c_out and resample is None:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                Upsample() if resample == "up" else nn.Identity(),
                MeanPool() if resample == "down" else nn.Identity(),
                conv(c_in, c_out, 1, init="glorot"),
            )

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        if self.num_classes:
            if labels is None:
                raise ValueError("a conditional ResidualBlock needs the class labels")
            h = self.conv1(self.up(self.act1(self.norm1(x, labels))))
            h = self.down(self.conv2(self.act2(self.norm2(h, labels))))
        else:  # the unconditional path, unchanged
            h = self.conv1(self.up(self.act1(self.norm1(x))))
            h = self.down(self.conv2(self.act2(self.norm2(h))))
        return self.shortcut(x) + h


class OptimizedDownBlock(nn.Module):
    """The CIFAR critic's first block (official ``OptimizedResBlockDisc1``).

    ``MeanPool(conv1x1(x)) + MeanPool(conv3x3(act(conv3x3(x))))``: no pre-activation
    on raw pixels and no normalisation. ``(N, c_in, H, W) → (N, c_out, H/2, W/2)``.
    """

    def __init__(self, c_in: int, c_out: int, act: ActFactory) -> None:
        super().__init__()
        self.conv1 = conv(c_in, c_out, 3)
        self.act = act()
        self.conv2 = conv(c_out, c_out, 3)
        self.pool = MeanPool()
        self.shortcut = nn.Sequential(MeanPool(), conv(c_in, c_out, 1, init="glorot"))

    def forward(self, x: Tensor) -> Tensor:
        return self.shortcut(x) + self.pool(self.conv2(self.act(self.conv1(x))))


# ---------------------------------------------------------------------------- checks


def check_image_shape(
    sample_shape: tuple[int, ...], allowed_sizes: tuple[int, ...], arch: str
) -> tuple[int, int]:
    """``(C, H, W)`` with ``H == W`` in ``allowed_sizes`` → ``(C, H)``, else ConfigError."""
    allowed = " | ".join(str(s) for s in allowed_sizes)
    if len(sample_shape) != 3:
        raise ConfigError(
            "dataset",
            f"samples of shape {tuple(sample_shape)}",
            "images (C, H, W)",
            f"the {arch} architecture needs an image data set: add dataset=mnist, cifar10, "
            "celeba, lsun or image_folder (the image presets leave the data set to you), or "
            "use critic=mlp generator=mlp for point data",
        )
    c, h, w = sample_shape
    if c < 1:
        raise ConfigError("dataset.channels", c, "an integer ≥ 1")
    if h != w or h not in allowed_sizes:
        raise ConfigError(
            "dataset.image_size",
            h if h == w else f"{h}x{w}",
            allowed,
            f"the {arch} architecture supports square images of these sizes",
        )
    return c, h


def check_dim(group: str, dim: Any) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ConfigError(f"{group}.dim", dim, "an integer ≥ 1")
    return dim


def check_z_dim(z_dim: Any) -> int:
    if isinstance(z_dim, bool) or not isinstance(z_dim, int) or z_dim < 1:
        raise ConfigError("generator.z_dim", z_dim, "an integer ≥ 1", "the paper uses 128")
    return z_dim


def critic_norm(norm: str, auto: str) -> str:
    """Validate ``critic.norm``; ``auto`` becomes the architecture's default ``auto``."""
    if norm not in CRITIC_NORMS:
        raise ConfigError("critic.norm", norm, " | ".join(CRITIC_NORMS))
    return auto if norm == "auto" else norm


def generator_norm(norm: str) -> str:
    """Validate ``generator.norm`` (batch norm is fine in G: the penalty is on D only)."""
    if norm not in GENERATOR_NORMS:
        raise ConfigError("generator.norm", norm, " | ".join(GENERATOR_NORMS))
    return norm


class ImageNetArgs(NamedTuple):
    """What an image critic or generator builder reads from its config group, checked."""

    channels: int
    size: int
    dim: int
    norm: str
    init: str
    act: ActFactory
    z_dim: int  # the generator's latent size; 0 for a critic
    out: type[nn.Module] = nn.Tanh  # the generator's output activation
    gated: bool = False  # activation: gated (act makes a GatedTanh, widths double)


def image_net_args(
    group: str,
    cfg: Any,
    sample_shape: tuple[int, ...],
    sizes: tuple[int, ...],
    arch: str,
    norm_auto: Callable[[int], str] | None = None,
    gated_ok: bool = False,
) -> ImageNetArgs:
    """Check ``critic.*`` or ``generator.*`` for an image architecture, in one fixed order.

    ``norm_auto(size)`` is what ``critic.norm=auto`` means for this architecture at
    that image size (critics only). The activation name is checked here, before any
    layer is built, and ``act`` makes a fresh module of it per use site.
    ``gated_ok``: the architecture accepts ``activation: gated`` (:class:`GatedTanh`).
    """
    c, size = check_image_shape(sample_shape, sizes, arch)
    dim = check_dim(group, cfg.dim)
    if group == "critic":
        z_dim = 0
        norm = critic_norm(cfg.norm, auto=norm_auto(size) if norm_auto else "none")
    else:
        z_dim = check_z_dim(cfg.z_dim)
        norm = generator_norm(cfg.norm)
    init = check_init(group, getattr(cfg, "init", "tflib"))
    act_name = cfg.activation
    gated = act_name == GATED
    act: ActFactory
    if gated and not gated_ok:
        raise ConfigError(
            f"{group}.activation",
            act_name,
            f"one of {sorted(ACTIVATIONS)}",
            f"the gated nonlinearity needs layers of doubled width, which the {arch} "
            f"architecture does not have; use {group}=dcgan",
        )
    if gated:
        act = GatedTanh
    else:
        activation(group, act_name)
        act = lambda: activation(group, act_name)  # noqa: E731
    out = image_output(cfg) if group == "generator" else nn.Tanh
    return ImageNetArgs(c, size, dim, norm, init, act, z_dim, out, gated)


def log2_stages(size: int) -> int:
    """Number of 2× resampling stages between 4×4 and ``size``×``size``."""
    return int(math.log2(size // 4))
