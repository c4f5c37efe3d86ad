"""Multi-layer perceptrons: the official toy script's networks (3×512 ReLU).

Initialised like ``gan_toy.py`` under ``init=tflib`` (the default): each hidden layer
he-uniform, U(±√(6/n_in)), the output layer glorot-uniform, U(±√(6/(n_in + n_out))),
biases zero (:mod:`wgangp.models.init`).

They also work on images by flattening (critic) and reshaping a tanh output
(generator), the "MLP" baseline of the paper's Figure/Table on architectures.
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor, nn

from wgangp.errors import ConfigError
from wgangp.models.init import check_init, init_weights, tag
from wgangp.models.registry import register_critic, register_generator

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
}


# an image generator's last layer: tanh for data in [-1, 1], sigmoid for [0, 1]
# (gan_mnist.py); see wgangp/data/pixels.py
OUTPUTS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


def image_output(cfg: Any) -> type[nn.Module]:
    """The checked ``generator.output`` of an image generator (absent: tanh)."""
    name = getattr(cfg, "output", "tanh")
    if name not in OUTPUTS:
        raise ConfigError(
            "generator.output",
            name,
            " | ".join(OUTPUTS),
            "tanh for dataset.pixel_range=[-1,1] (the default), sigmoid for [0,1]",
        )
    return OUTPUTS[name]


def activation(group: str, name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ConfigError(f"{group}.activation", name, f"one of {sorted(ACTIVATIONS)}")
    if name == "leaky_relu":
        return nn.LeakyReLU(0.2)
    return ACTIVATIONS[name]()


MLP_CRITIC_NORMS = ("none", "layernorm", "batchnorm")


def mlp(
    in_dim: int, out_dim: int, width: int, depth: int, act: Any, norm: str = "none"
) -> nn.Sequential:
    """``depth`` hidden layers of ``width`` units, then a linear output layer."""
    layers: list[nn.Module] = []
    d = in_dim
    for _ in range(depth):
        layers.append(tag(nn.Linear(d, width), "he"))  # the toy script's ReLULayer
        if norm == "layernorm":
            layers.append(nn.LayerNorm(width))
        elif norm == "batchnorm":
            layers.append(nn.BatchNorm1d(width))
        layers.append(act())
        d = width
    layers.append(nn.Linear(d, out_dim))  # untagged: glorot, tflib's default
    return nn.Sequential(*layers)


class MLPCritic(nn.Module):
    """D: R^{sample_shape} → R, a linear scalar per sample (flattens its input)."""

    def __init__(self, sample_shape: tuple[int, ...], dim: int, depth: int, act: Any, norm: str):
        super().__init__()
        self.sample_shape = sample_shape
        self.net = mlp(math.prod(sample_shape), 1, dim, depth, act, norm)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1)).squeeze(1)


class MLPGenerator(nn.Module):
    """G: N(0, I_{z_dim}) → R^{sample_shape}; for images a tanh (or ``out``) output."""

    def __init__(
        self,
        sample_shape: tuple[int, ...],
        z_dim: int,
        dim: int,
        depth: int,
        act: Any,
        out: type[nn.Module] = nn.Tanh,
    ):
        super().__init__()
        self.sample_shape = sample_shape
        self.z_dim = z_dim
        self.net = mlp(z_dim, math.prod(sample_shape), dim, depth, act)
        self.out_act: nn.Module = out() if len(sample_shape) == 3 else nn.Identity()

    def forward(self, z: Tensor) -> Tensor:
        return self.out_act(self.net(z)).view(z.shape[0], *self.sample_shape)


def _check_width_depth(group: str, cfg: Any) -> None:
    if cfg.dim < 1:
        raise ConfigError(f"{group}.dim", cfg.dim, "an integer ≥ 1")
    if cfg.depth < 0:
        raise ConfigError(f"{group}.depth", cfg.depth, "an integer ≥ 0")


@register_critic("mlp")
def build_mlp_critic(cfg: Any, sample_shape: tuple[int, ...]) -> nn.Module:
    _check_width_depth("critic", cfg)
    norm = cfg.norm
    if norm not in MLP_CRITIC_NORMS:
        # batchnorm: the baselines' only (loss=wgan|dcgan|lsgan; wgangp.config.validate checks)
        raise ConfigError("critic.norm", norm, " | ".join(MLP_CRITIC_NORMS))
    act_name = cfg.activation
    activation("critic", act_name)  # validate
    init = check_init("critic", getattr(cfg, "init", "tflib"))
    act = lambda: activation("critic", act_name)  # noqa: E731
    return init_weights(MLPCritic(sample_shape, cfg.dim, cfg.depth, act, norm), init)


@register_generator("mlp")
def build_mlp_generator(cfg: Any, sample_shape: tuple[int, ...]) -> nn.Module:
    _check_width_depth("generator", cfg)
    if cfg.z_dim < 1:
        raise ConfigError("generator.z_dim", cfg.z_dim, "an integer ≥ 1")
    act_name = cfg.activation
    activation("generator", act_name)
    init = check_init("generator", getattr(cfg, "init", "tflib"))
    out = image_output(cfg)
    if len(sample_shape) != 3 and out is not nn.Tanh:
        raise ConfigError(
            "generator.output",
            cfg.output,
            "tanh (the default) for points data",
            "a points generator ends in a linear layer; drop generator.output",
        )
    model = MLPGenerator(
        sample_shape, cfg.z_dim, cfg.dim, cfg.depth, lambda: activation("generator", act_name), out
    )
    return init_weights(model, init)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["MLPCritic", "MLPGenerator", "count_parameters"]
