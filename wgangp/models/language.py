r"""The official character-level language model (``gan_language.py``): 1-D residual nets.

Samples are one-hot ``(V, L)`` tensors: V symbols (channels) by L positions
(:mod:`wgangp.data.text`). Both networks are stacks of ``depth`` residual blocks at a
constant width ``dim`` and length L (paper: 5 blocks, dim 512, L 32):

.. math::
    \mathrm{block}(h) = h + 0.3 \cdot c_2(\mathrm{relu}(c_1(\mathrm{relu}(h))))

with :math:`c_1, c_2` 1-D convolutions of width 5, stride 1 and padding 2 (TensorFlow's
SAME, which is symmetric at stride 1), and no normalisation.

* generator: :math:`z \in \mathbb{R}^{128}` → linear to ``dim·L`` → ``(dim, L)`` → blocks
  → 1×1 convolution to V channels → softmax over the V symbols at each position. Its
  samples are continuous points of the probability simplex; the critic compares them
  with the real one-hot vectors directly (§5 of the paper), and text is their argmax.
* critic: 1×1 convolution V → ``dim`` → blocks → flatten (channel-major, as the
  official reshape of the NCW map) → linear to one score.

Initialisation under ``init=tflib`` (the default) is the official one: every
convolution he-uniform with ``fan_in = C_in·k``, ``fan_out = C_out·k``
(``tflib/ops/conv1d.py``), both linear layers glorot-uniform, biases zero.

Parameters (dim 512, L 32, V symbols): critic ``512V + 13 129 217``, generator
``513V + 15 225 856``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from wgangp.errors import ConfigError
from wgangp.models.init import check_init, init_weights, tag
from wgangp.models.registry import register_critic, register_generator

RESIDUAL_SCALE = 0.3  # the official ResBlock's output scale


class ResBlock1d(nn.Module):
    """``h + 0.3·conv(relu(conv(relu(h))))`` with width-5 convolutions (same length)."""

    def __init__(self, dim: int, kernel_size: int = 5) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.conv1 = tag(nn.Conv1d(dim, dim, kernel_size, padding=pad), "he")
        self.conv2 = tag(nn.Conv1d(dim, dim, kernel_size, padding=pad), "he")
        self.act = nn.ReLU()

    def forward(self, h: Tensor) -> Tensor:
        return h + RESIDUAL_SCALE * self.conv2(self.act(self.conv1(self.act(h))))


def _text_shape(group: str, name: str, sample_shape: tuple[int, ...]) -> tuple[int, int]:
    if len(sample_shape) != 2:
        raise ConfigError(
            f"{group}.name",
            name,
            "an architecture for this data set's samples",
            f"{group}={name} models text (one-hot sequences, dataset=billion_word); for "
            f"points use {group}=mlp, for images {group}=dcgan or resnet",
        )
    return int(sample_shape[0]), int(sample_shape[1])


def _check(group: str, cfg: Any) -> None:  # noqa: ANN401
    if getattr(cfg, "norm", "none") not in ("none", "auto"):
        raise ConfigError(
            f"{group}.norm",
            cfg.norm,
            f"none with {group}=language",
            "the official language networks have no normalisation layers",
        )
    if getattr(cfg, "activation", "relu") != "relu":
        raise ConfigError(
            f"{group}.activation",
            cfg.activation,
            f"relu with {group}=language",
            "the official residual blocks use ReLU",
        )
    for key in ("dim", "depth"):
        value = getattr(cfg, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{group}.{key}", value, "an integer ≥ 1")


class LanguageGenerator(nn.Module):
    """``(N, z_dim)`` noise → ``(N, V, L)`` per-position distributions over V symbols."""

    def __init__(self, vocab: int, seq_len: int, dim: int = 512, depth: int = 5, z_dim: int = 128):
        super().__init__()
        self.z_dim, self.dim, self.seq_len = z_dim, dim, seq_len
        self.input = tag(nn.Linear(z_dim, seq_len * dim), "glorot")
        self.blocks = nn.Sequential(*(ResBlock1d(dim) for _ in range(depth)))
        self.output = tag(nn.Conv1d(dim, vocab, 1), "he")

    def forward(self, z: Tensor) -> Tensor:
        h = self.input(z).view(-1, self.dim, self.seq_len)
        return torch.softmax(self.output(self.blocks(h)), dim=1)


class LanguageCritic(nn.Module):
    """``(N, V, L)`` one-hot or soft sequences → ``(N,)`` scores."""

    def __init__(self, vocab: int, seq_len: int, dim: int = 512, depth: int = 5) -> None:
        super().__init__()
        self.input = tag(nn.Conv1d(vocab, dim, 1), "he")
        self.blocks = nn.Sequential(*(ResBlock1d(dim) for _ in range(depth)))
        self.output = tag(nn.Linear(seq_len * dim, 1), "glorot")

    def forward(self, x: Tensor) -> Tensor:
        return self.output(self.blocks(self.input(x)).flatten(1)).squeeze(1)


@register_critic("language")
def build_language_critic(cfg: Any, sample_shape: tuple[int, ...]) -> nn.Module:
    vocab, seq_len = _text_shape("critic", cfg.name, sample_shape)
    _check("critic", cfg)
    model = LanguageCritic(vocab, seq_len, cfg.dim, cfg.depth)
    return init_weights(model, check_init("critic.init", cfg.init))


@register_generator("language")
def build_language_generator(cfg: Any, sample_shape: tuple[int, ...]) -> nn.Module:
    vocab, seq_len = _text_shape("generator", cfg.name, sample_shape)
    _check("generator", cfg)
    model = LanguageGenerator(vocab, seq_len, cfg.dim, cfg.depth, cfg.z_dim)
    return init_weights(model, check_init("generator.init", cfg.init))
