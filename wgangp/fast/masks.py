"""Masked rectifiers for the penalty's forward: the same values and gradients, a cheaper
double backward.

:func:`with_detached_relu_masks` wraps a critic so that, inside the penalty's forward,
ReLU/LeakyReLU are computed as ``x * mask(x).detach()``. The value and the first
derivative are unchanged; the derivative of the mask is 0 almost everywhere, which
PyTorch's own double backward of ``leaky_relu_backward`` also uses — but it
materialises those zeros and backpropagates them through the whole forward graph of
``D(x̂)`` (one full weight+input backward pass that only adds zeros). With the mask
detached that pass is never built: the penalty's gradients are unchanged (bitwise in
fp32, see tests/test_speed.py) and the double backward costs about half the FLOPs.

``avg_pool2d`` gets the same treatment: its backward reads the input only for its
shape, yet PyTorch's double backward sends a zero gradient back through the input's
graph; inside the wrapper the pooling's backward sees a detached input instead (the
ResNet critics' mean pools, without which the saving above mostly vanishes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor
from torch.overrides import TorchFunctionMode

from wgangp.fast.torch_args import arg, pair


class _RectifierMaskOnly(torch.autograd.Function):
    """ReLU (``slope == 0``) or LeakyReLU whose backward treats the mask as a constant.

    Forward: ATen's own ``relu``/``leaky_relu`` (one pass; in place when asked). Backward:
    ``threshold_backward``/``leaky_relu_backward`` of the incoming gradient against the
    *detached* output, i.e. ``g · mask`` — the same kernels and values as PyTorch's own
    backward, but recorded with no edge to the forward graph, so the double backward
    skips the mask's zero derivative. ``slope ≥ 0`` keeps the output's sign equal to the
    input's, which is what lets the output stand in for the input.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, slope: float, inplace: bool) -> Tensor:  # noqa: ANN401
        if inplace:
            ctx.mark_dirty(x)
            y = torch.relu_(x) if slope == 0 else torch._C._nn.leaky_relu_(x, slope)
        else:
            y = torch.relu(x) if slope == 0 else torch._C._nn.leaky_relu(x, slope)
        ctx.slope = slope
        ctx.set_materialize_grads(False)  # an undefined gradient stays undefined
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor | None) -> tuple[Tensor | None, None, None]:  # noqa: ANN401
        if grad is None:
            return None, None, None
        (y,) = ctx.saved_tensors
        y = y.detach()
        if ctx.slope == 0:
            return torch.ops.aten.threshold_backward(grad, y, 0), None, None
        return torch.ops.aten.leaky_relu_backward(grad, y, ctx.slope, True), None, None


def _rectifier(x: Tensor, slope: float, inplace: bool) -> Tensor:
    if slope < 0:  # the output's sign no longer tells the mask: keep an explicit one
        with torch.no_grad():
            m = torch.where(x > 0, x.new_ones(()), x.new_full((), slope))
        return x.mul_(m) if inplace else x * m
    return _RectifierMaskOnly.apply(x, slope, inplace)


class _AvgPool2dShapeOnly(torch.autograd.Function):
    """``avg_pool2d`` whose backward depends on the input's shape only.

    Same forward and first derivative as ``F.avg_pool2d`` (the same ATen kernels); the
    backward ``avg_pool2d_backward(g, x.detach(), ...)`` is linear in ``g`` and records
    no edge to ``x``, so a double backward never propagates the (zero) derivative with
    respect to ``x`` into the graph that produced it.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, *args: Any) -> Tensor:  # noqa: ANN401
        ctx.x, ctx.args = x.detach(), args
        # an undefined incoming gradient (the double backward's edge into the forward
        # graph carries none) must stay undefined, not become a tensor of zeros
        ctx.set_materialize_grads(False)
        return torch.ops.aten.avg_pool2d(x, *args)

    @staticmethod
    def backward(ctx: Any, grad: Tensor | None) -> tuple[Tensor | None, ...]:  # noqa: ANN401
        if grad is None:
            return (None,) * (1 + len(ctx.args))
        dx = torch.ops.aten.avg_pool2d_backward(grad, ctx.x, *ctx.args)
        return (dx,) + (None,) * len(ctx.args)


def _avg_pool2d(args: tuple, kwargs: dict) -> Tensor:
    x = args[0]
    kernel = pair(arg(args, kwargs, 1, "kernel_size", None))
    stride = arg(args, kwargs, 2, "stride", None)
    stride = kernel if stride is None or stride == [] else pair(stride)
    return _AvgPool2dShapeOnly.apply(
        x,
        kernel,
        stride,
        pair(arg(args, kwargs, 3, "padding", 0)),
        bool(arg(args, kwargs, 4, "ceil_mode", False)),
        bool(arg(args, kwargs, 5, "count_include_pad", True)),
        arg(args, kwargs, 6, "divisor_override", None),
    )


class _DetachedReluMasks(TorchFunctionMode):
    """Inside this mode, relu/leaky_relu treat their mask as a constant
    (:class:`_RectifierMaskOnly`) and ``avg_pool2d``'s backward does not depend on its
    input (:class:`_AvgPool2dShapeOnly`)."""

    _RELU = {F.relu, torch.relu, Tensor.relu}
    _RELU_ = {torch.relu_, Tensor.relu_}
    _LEAKY = {F.leaky_relu, torch._C._nn.leaky_relu}
    _LEAKY_ = {F.leaky_relu_, torch._C._nn.leaky_relu_}

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        if not torch.is_grad_enabled():
            return func(*args, **kwargs)
        if func in self._RELU or func in self._RELU_:
            inplace = func in self._RELU_ or bool(arg(args, kwargs, 1, "inplace", False))
            return _rectifier(args[0], 0.0, inplace)
        if func in self._LEAKY or func in self._LEAKY_:
            slope = float(arg(args, kwargs, 1, "negative_slope", 0.01))
            inplace = func in self._LEAKY_ or bool(arg(args, kwargs, 2, "inplace", False))
            return _rectifier(args[0], slope, inplace)
        if func is F.avg_pool2d:
            return _avg_pool2d(args, kwargs)
        return func(*args, **kwargs)


def with_detached_relu_masks(critic: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """``critic`` evaluated with ReLU/LeakyReLU masks detached and average pooling's
    backward independent of its input (see the module docstring)."""

    def forward(x: Tensor) -> Tensor:
        with _DetachedReluMasks():
            return critic(x)

    return forward


__all__ = ["with_detached_relu_masks"]
