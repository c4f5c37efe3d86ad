r"""Weight initialisation of every model (``critic.init`` / ``generator.init``).

The official code (``tflib/ops/{linear,conv2d,deconv2d}.py``) draws every weight from
a *uniform* distribution :math:`U(-\sigma\sqrt3, \sigma\sqrt3)` (standard deviation
:math:`\sigma`) and sets every bias to zero. :math:`\sigma` depends on the layer type
and on a per-layer choice between "he" and "glorot":

* convolution, kernel :math:`k`, stride :math:`s`:
  :math:`\text{fan}_\text{in} = C_\text{in} k^2`,
  :math:`\text{fan}_\text{out} = C_\text{out} k^2 / s^2` (1-D, ``tflib/ops/conv1d.py``:
  :math:`k` and :math:`s` in place of their squares);
* transposed convolution (always stride 2 there):
  :math:`\text{fan}_\text{in} = C_\text{in} k^2 / s^2`,
  :math:`\text{fan}_\text{out} = C_\text{out} k^2`;
* for both: he → :math:`\sigma = \sqrt{4 / (\text{fan}_\text{in} + \text{fan}_\text{out})}`,
  glorot → :math:`\sigma = \sqrt{2 / (\text{fan}_\text{in} + \text{fan}_\text{out})}`;
* linear: glorot (tflib's default, used by every image model) →
  :math:`\sigma = \sqrt{2 / (n_\text{in} + n_\text{out})}`; he → :math:`\sqrt{2 / n_\text{in}}`.

Convolutions default to he; the official models ask for glorot on the 1×1 residual
shortcuts and on a few input/output convolutions (each use site says which).
``init=dcgan`` reproduces ``gan_64x64.py``'s DCGAN pair, which overrides all of this
with :math:`\sigma = 0.02` (still uniform); ``init=pytorch`` keeps PyTorch's defaults.
Normalisation layers start at scale 1, offset 0 in every scheme.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from wgangp.errors import ConfigError

INIT_SCHEMES = ("tflib", "dcgan", "pytorch")

_INIT_ATTR = "_tflib_init"  # "he" | "glorot", read by init_weights


def tag(layer: nn.Module, kind: str) -> nn.Module:
    """Mark ``layer`` for he or glorot init under ``init=tflib`` (returns ``layer``)."""
    assert kind in ("he", "glorot")
    setattr(layer, _INIT_ATTR, kind)
    return layer


def tflib_std(layer: nn.Module) -> float:
    """The standard deviation tflib would give ``layer``'s weight (see module docstring)."""
    kind = getattr(layer, _INIT_ATTR, None)
    if isinstance(layer, nn.Linear):
        n_in, n_out = layer.in_features, layer.out_features
        return math.sqrt(2.0 / n_in) if kind == "he" else math.sqrt(2.0 / (n_in + n_out))
    if isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d)):
        k2 = math.prod(layer.kernel_size)  # k (1-D, tflib's Conv1D) or k² (2-D)
        s2 = math.prod(layer.stride)
        if isinstance(layer, nn.ConvTranspose2d):
            fan_in, fan_out = layer.in_channels * k2 / s2, layer.out_channels * k2
        else:
            fan_in, fan_out = layer.in_channels * k2, layer.out_channels * k2 / s2
        gain = 2.0 if kind == "glorot" else 4.0  # convs default to he
        return math.sqrt(gain / (fan_in + fan_out))
    raise TypeError(f"no tflib init for {type(layer).__name__}")


@torch.no_grad()
def init_weights(model: nn.Module, scheme: str) -> nn.Module:
    """Initialise every linear/conv layer of ``model`` with ``scheme`` (in place)."""
    if scheme == "pytorch":
        return model
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d)):
            std = 0.02 if scheme == "dcgan" else tflib_std(m)
            bound = std * math.sqrt(3.0)  # U(-a, a) has std a/√3
            m.weight.uniform_(-bound, bound)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d)) and m.affine:
            m.weight.fill_(1.0)
            m.bias.zero_()
    return model


def check_init(group: str, scheme: str) -> str:
    if scheme not in INIT_SCHEMES:
        raise ConfigError(f"{group}.init", scheme, " | ".join(INIT_SCHEMES))
    return scheme
