r"""The paper's DCGAN pair (official ``gan_cifar.py`` and ``gan_64x64.py`` "DCGAN").

For an ``S×S`` image there are :math:`n = \log_2(S/4)` resampling stages (2 at 16,
3 at 32 as in ``gan_cifar.py``, 4 at 64 as in ``gan_64x64.py``, 5 at 128). 28×28 is
``gan_mnist.py``'s: 3 stages as at 32, the generator's 8×8 map cropped to its top-left
7×7 after the first stage (4 → 8 → 7 → 14 → 28), the critic 28 → 14 → 7 → 4. The width
at a feature map of side :math:`r` is ``dim · S/(2r)``, so the 4×4 end carries
``dim · 2^(n-1)`` channels (``4·dim`` at 32, ``8·dim`` at 64) and the ``S/2`` end
carries ``dim``.

Generator, ``(N, z_dim) → (N, C, S, S)``::

    linear z → 4·4·dim·2^(n-1), reshape to (dim·2^(n-1), 4, 4), norm, ReLU
    (n-1) × [5×5 stride-2 transposed conv halving channels, doubling H×W, norm, ReLU]
    5×5 stride-2 transposed conv dim → C (S/2 → S), tanh (generator.output=sigmoid:
    sigmoid, for data in [0, 1] as gan_mnist.py)

Critic, ``(N, C, S, S) → (N,)``::

    5×5 stride-2 conv C → dim (S → S/2), LeakyReLU(0.2)
    (n-1) × [5×5 stride-2 conv doubling channels, halving H×W, norm, LeakyReLU(0.2)]
    flatten dim·2^(n-1)·4·4 → linear → 1 (no sigmoid: a Wasserstein critic)

Critic norm: ``gan_cifar.py`` drops the critic's batch norm in WGAN-GP mode (the
default here, ``norm: none``); ``gan_64x64.py`` swaps it for layer norm over (C, H, W)
(``critic.norm=layernorm``). Either way the norm is on every conv but the first.
The official scripts' baseline modes keep batch norm there (``critic.norm=batchnorm``,
allowed with ``loss=wgan|dcgan|lsgan`` only).
The generator keeps batch norm (the penalty only involves the critic). The linear
layer's output is normalised per channel after the reshape, as in ``gan_64x64.py``
(``generator.input_norm=channel``, the default); ``gan_cifar.py`` normalises it per
feature before the reshape, a ``BatchNorm1d`` over all ``4·4·C`` outputs with their own
scale and offset (``generator.input_norm=feature``, 16 384 parameters at ``dim`` 128
instead of 1 024).

Padding: a 5×5 stride-2 conv with padding 2 (and a transposed one with padding 2,
output padding 1) maps even ``H`` exactly to ``H/2`` (``2H``), like TensorFlow's
'SAME'; TensorFlow pads (1, 2) instead of (2, 2) for the forward conv, a one-pixel
shift that makes no difference to what the network can express.

Init: ``init=tflib`` (default) is the CIFAR script's (He-style for every conv and
transposed conv, Glorot for the linears; formulas in :mod:`wgangp.models.init`);
``init=dcgan`` is the 64×64 script's uniform with standard deviation 0.02.

Variants of ``gan_64x64.py``'s Figure 2 (the paper's "many architectures"):

* ``activation: gated`` (``MultiplicativeDCGANGenerator`` /
  ``MultiplicativeDCGANDiscriminator``): every activation is
  :class:`~wgangp.models.blocks.GatedTanh`, ``sigmoid(x[:, ::2]) · tanh(x[:, 1::2])``,
  which halves the channels, so every layer that feeds one (the generator's linear
  layer and all transposed convs but the last; every critic conv) has *twice* the
  output channels listed above, and each norm sits between that layer and the gate,
  over all ``2C`` channels. The same layers as above carry a norm (none on the critic's
  first conv). The official pair keeps tflib's default init (``init=tflib``; neither
  function calls ``set_weights_stdev(0.02)``).
* ``generator=dcgan_constant`` (``WGANPaper_CrippledDCGANGenerator``, from the WGAN
  paper): ``dim`` channels everywhere instead of ``dim·2^k``::

      linear z → 4·4·dim, reshape to (dim, 4, 4), [norm], ReLU
      (n-1) × [5×5 stride-2 transposed conv dim → dim, [norm], ReLU]
      5×5 stride-2 transposed conv dim → C, tanh

  The official one has no batch norm (``generator.norm=none``) and tflib's default
  init (``init=tflib``).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from wgangp.errors import ConfigError
from wgangp.models.blocks import (
    ActFactory,
    check_with_logits,
    class_norm_layer,
    generator_labels,
    image_net_args,
    log2_stages,
    norm_layer,
    run_blocks,
)
from wgangp.models.init import init_weights, tag
from wgangp.models.registry import register_critic, register_generator

SIZES = (16, 28, 32, 64, 128)
MNIST_SIZE = 28  # gan_mnist.py: 4 → 8, cropped to 7, → 14 → 28 (critic: 28 → 14 → 7 → 4)
KERNEL = 5  # every DCGAN conv in the official code is 5×5
INPUT_NORMS = ("channel", "feature")


def _down(c_in: int, c_out: int) -> nn.Conv2d:
    """5×5 stride-2 conv: (N, c_in, H, W) → (N, c_out, H/2, W/2)."""
    return tag(nn.Conv2d(c_in, c_out, KERNEL, stride=2, padding=2), "he")  # type: ignore[return-value]


def _up(c_in: int, c_out: int) -> nn.ConvTranspose2d:
    """5×5 stride-2 transposed conv: (N, c_in, H, W) → (N, c_out, 2H, 2W)."""
    layer = nn.ConvTranspose2d(c_in, c_out, KERNEL, stride=2, padding=2, output_padding=1)
    return tag(layer, "he")  # type: ignore[return-value]


def stages(size: int) -> int:
    """Stride-2 stages between 4×4 and ``size``: log2(size/4); 3 at 28 (as at 32)."""
    return 3 if size == MNIST_SIZE else log2_stages(size)


class Crop(nn.Module):
    """The top-left ``size × size`` of a feature map (TensorFlow's ``x[:, :, :7, :7]``)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: Tensor) -> Tensor:
        return x[:, :, : self.size, : self.size]


class DCGANGenerator(nn.Module):
    """G: N(0, I_{z_dim}) → [-1, 1]^{C×S×S}. See the module docstring for the layers.

    ``gated``: ``act`` is the channel-halving gate, every layer before one has twice
    the channels. ``constant_width``: ``dim`` channels at every stage (the WGAN paper's
    crippled generator) instead of halving from ``dim·2^(n-1)``.
    """

    def __init__(
        self,
        channels: int,
        size: int,
        dim: int,
        z_dim: int,
        norm: str,
        act: ActFactory,
        input_norm: str = "channel",
        out: type[nn.Module] = nn.Tanh,
        *,
        gated: bool = False,
        constant_width: bool = False,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        self.sample_shape = (channels, size, size)
        self.z_dim, self.num_classes = z_dim, num_classes
        n = stages(size)
        m = 2 if gated else 1  # channels into an activation per channel out of it
        c = dim if constant_width else dim * 2 ** (n - 1)
        self.input = tag(nn.Linear(z_dim, 4 * 4 * c * m), "glorot")
        self.unflatten = nn.Unflatten(1, (c * m, 4, 4))
        # per feature: normalise the flat (N, 4·4·c·m) output before the reshape
        self.norm_per_feature = input_norm == "feature" and norm != "none"
        first_norm = (
            nn.BatchNorm1d(4 * 4 * c * m)
            if self.norm_per_feature
            else class_norm_layer(norm, c * m, num_classes)
        )
        self.input_act = nn.Sequential(first_norm, act())
        layers: list[nn.Module] = []
        for i in range(n - 1):
            c_next = c if constant_width else c // 2
            layers += [_up(c, c_next * m), class_norm_layer(norm, c_next * m, num_classes), act()]
            if i == 0 and size == MNIST_SIZE:
                layers.append(Crop(7))  # output[:, :, :7, :7], after the ReLU as there
            c = c_next
        layers += [_up(c, channels), out()]
        self.body = nn.Sequential(*layers)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        labels = generator_labels(self.num_classes, z, labels)
        norm, act = self.input_act
        h = self.input(z)
        if self.norm_per_feature:  # on the flat features, before the reshape
            h = norm(h)
        h = self.unflatten(h)
        if not self.norm_per_feature:  # per channel, after it
            h = norm(h) if labels is None else norm(h, labels)
        # the activation after the reshape: a gate pairs channels, not flat features
        return run_blocks(self.body, act(h), labels)


class DCGANCritic(nn.Module):
    """D: R^{C×S×S} → R, one linear score per sample (no sigmoid; batch norm only for
    the baselines without a penalty, ``loss=wgan|dcgan|lsgan``).

    ``gated``: ``act`` is the channel-halving gate and every conv has twice the
    channels (``MultiplicativeDCGANDiscriminator``); the linear layer still reads
    ``dim·2^(n-1)·4·4`` features.
    """

    def __init__(
        self,
        channels: int,
        size: int,
        dim: int,
        norm: str,
        act: ActFactory,
        *,
        gated: bool = False,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        self.sample_shape = (channels, size, size)
        self.num_classes = num_classes
        n = stages(size)
        m = 2 if gated else 1
        layers: list[nn.Module] = [_down(channels, dim * m), act()]
        c = dim
        for _ in range(n - 1):
            layers += [_down(c, 2 * c * m), norm_layer(norm, 2 * c * m), act()]
            c *= 2
        self.body = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        self.output = tag(nn.Linear(4 * 4 * c, 1), "glorot")
        if num_classes:  # an AC-GAN class head on the features the score reads
            self.acgan = tag(nn.Linear(4 * 4 * c, num_classes), "glorot")

    def forward(self, x: Tensor, with_logits: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Score ``(N,)``; with ``with_logits`` also the class logits ``(N, K)``."""
        check_with_logits(self, with_logits)
        h = self.flatten(self.body(x))  # (N, C·4·4), channel-major
        score = self.output(h).squeeze(1)
        return (score, self.acgan(h)) if with_logits else score


@register_critic("dcgan", conditional=True)
def build_dcgan_critic(cfg: Any, sample_shape: tuple[int, ...], num_classes: int = 0) -> nn.Module:
    a = image_net_args("critic", cfg, sample_shape, SIZES, "dcgan", gated_ok=True)
    model = DCGANCritic(
        a.channels, a.size, a.dim, a.norm, a.act, gated=a.gated, num_classes=num_classes
    )
    return init_weights(model, a.init)


@register_generator("dcgan", conditional=True)
def build_dcgan_generator(
    cfg: Any, sample_shape: tuple[int, ...], num_classes: int = 0
) -> nn.Module:
    return _build_generator(cfg, sample_shape, "dcgan", False, num_classes)


@register_generator("dcgan_constant", conditional=True)
def build_dcgan_constant_generator(
    cfg: Any, sample_shape: tuple[int, ...], num_classes: int = 0
) -> nn.Module:
    """``WGANPaper_CrippledDCGANGenerator``: the DCGAN generator at constant width ``dim``."""
    return _build_generator(cfg, sample_shape, "dcgan_constant", True, num_classes)


def _build_generator(
    cfg: Any, sample_shape: tuple[int, ...], arch: str, constant_width: bool, num_classes: int
) -> nn.Module:
    a = image_net_args("generator", cfg, sample_shape, SIZES, arch, gated_ok=True)
    input_norm = getattr(cfg, "input_norm", "channel")
    if input_norm not in INPUT_NORMS:
        raise ConfigError(
            "generator.input_norm",
            input_norm,
            " | ".join(INPUT_NORMS),
            "channel: per channel after the reshape (gan_64x64.py); "
            "feature: BatchNorm1d over the linear output (gan_cifar.py)",
        )
    if input_norm == "feature" and a.norm not in ("batchnorm", "none"):
        raise ConfigError(
            "generator.input_norm",
            input_norm,
            f"channel with generator.norm={a.norm} (feature is a per-feature batch norm)",
            "use generator.norm=batchnorm, or generator.input_norm=channel",
        )
    model = DCGANGenerator(
        a.channels,
        a.size,
        a.dim,
        a.z_dim,
        a.norm,
        a.act,
        input_norm,
        a.out,
        gated=a.gated,
        constant_width=constant_width,
        num_classes=num_classes,
    )
    return init_weights(model, a.init)


__all__ = [
    "DCGANCritic",
    "DCGANGenerator",
    "build_dcgan_constant_generator",
    "build_dcgan_critic",
    "build_dcgan_generator",
]
