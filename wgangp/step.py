"""Building blocks of the fast training step; the math stays in :mod:`wgangp.losses`.

* :func:`critic_scores` scores real and fake samples in one critic forward (valid
  because WGAN-GP critics have no cross-sample coupling: batch norm is refused).
* :func:`with_detached_relu_masks` wraps a critic so that, inside the penalty's
  forward, ReLU/LeakyReLU are computed as ``x * mask(x).detach()``. The value and the
  first derivative are unchanged; the derivative of the mask is 0 almost everywhere,
  which PyTorch's own double backward of ``leaky_relu_backward`` also uses — but it
  materialises those zeros and backpropagates them through the whole forward graph of
  ``D(x̂)`` (one full weight+input backward pass that only adds zeros). With the mask
  detached that pass is never built: the penalty's gradients are unchanged (bitwise
  in fp32, see tests/test_speed.py) and the double backward costs ~half the FLOPs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor
from torch.overrides import TorchFunctionMode


def critic_scores(
    critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor, fuse: bool
) -> tuple[Tensor, Tensor]:
    """``(D(real), D(fake))``; with ``fuse`` from one forward of the concatenated batch."""
    if not fuse:
        return critic(real), critic(fake)
    both = torch.cat([real, fake.to(real.dtype)])
    if real.dim() == 4 and real.is_contiguous(memory_format=torch.channels_last):
        both = both.contiguous(memory_format=torch.channels_last)
    scores = critic(both)
    return scores[: real.shape[0]], scores[real.shape[0] :]


def _mask(x: Tensor, slope: float) -> Tensor:
    # 0-dim tensors of x's dtype keep the product in x's dtype (bf16 under autocast)
    with torch.no_grad():
        return torch.where(x > 0, x.new_ones(()), x.new_full((), slope))


def _arg(args: tuple, kwargs: dict, i: int, name: str, default: Any) -> Any:
    return args[i] if len(args) > i else kwargs.get(name, default)


class _DetachedReluMasks(TorchFunctionMode):
    """Inside this mode, relu/leaky_relu compute ``x * mask`` with a constant mask."""

    _RELU = {F.relu, torch.relu, Tensor.relu}
    _RELU_ = {torch.relu_, Tensor.relu_}
    _LEAKY = {F.leaky_relu}

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        if func in self._RELU or func in self._RELU_:
            x = args[0]
            inplace = func in self._RELU_ or bool(_arg(args, kwargs, 1, "inplace", False))
            return _masked(x, 0.0, inplace)
        if func in self._LEAKY:
            x = args[0]
            slope = float(_arg(args, kwargs, 1, "negative_slope", 0.01))
            return _masked(x, slope, bool(_arg(args, kwargs, 2, "inplace", False)))
        return func(*args, **kwargs)


def _masked(x: Tensor, slope: float, inplace: bool) -> Tensor:
    m = _mask(x, slope)
    return x.mul_(m) if inplace else x * m


def with_detached_relu_masks(critic: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """``critic`` evaluated with ReLU/LeakyReLU masks detached (see the module docstring)."""

    def forward(x: Tensor) -> Tensor:
        with _DetachedReluMasks():
            return critic(x)

    return forward


__all__ = ["critic_scores", "with_detached_relu_masks"]
