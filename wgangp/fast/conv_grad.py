r"""2-D convolutions for the penalty's forward, with a cheaper double backward.

The penalty differentiates :math:`g = \nabla_{\hat x} D(\hat x)` with respect to the
critic's weights. For a convolution :math:`y = w \star x + b` the first backward
computes the input gradient :math:`g_x = \mathrm{dgrad}(g_y, w)`, and the double
backward needs, for an incoming :math:`\bar g_x`,

* :math:`\partial/\partial g_y = w \star \bar g_x` (a forward convolution), and
* :math:`\partial/\partial w = \mathrm{wgrad}(\bar g_x, g_y)`: the weight gradient of a
  convolution whose input is :math:`\bar g_x` and whose output gradient is :math:`g_y`.

PyTorch's generic double backward (``_convolution_double_backward``) computes the
second term as a convolution of the transposed input with the transposed output
gradient, dilated by the stride; for a strided layer that convolution produces a
larger output that is then narrowed (5×5 stride 2: 6×6 computed, 44 % more FLOPs),
and its transposed operands and result are copied. Here the same term is one call of
the backend's own weight-gradient kernel (``convolution_backward`` with only the
weight requested), as in ordinary training. Same math, different summation order:
the gradients agree with PyTorch's to float rounding (tests/test_conv_grad.py, 1e-5),
not bitwise.

The contract. :class:`_PenaltyConv2d`'s backward tells its passes apart by the grad mode
the autograd engine sets for a backward (on exactly when ``create_graph=True``):

* a pass with ``create_graph=True`` (the penalty's :math:`\nabla_{\hat x} D`): the input
  gets its gradient as the differentiable input gradient :class:`_ConvInputGrad`, which
  holds the edge to the weight that the double backward follows. The weight and bias get
  a gradient here only if the engine will use it (another ``create_graph=True`` backward
  through the critic that asks for parameter gradients, such as
  ``loss.backward(create_graph=True)``): it is then computed with autograd's own
  differentiable formulas, so it and its derivatives equal plain autograd's. The penalty
  asks for the input's gradient only, and pays for nothing else.
* a first-order pass (the final backward): the engine reaches this node only when the
  double backward reaches the forward graph itself (a normalisation layer or a smooth
  activation between convolutions), and there the ordinary first-order input, weight
  and bias gradients are part of the answer. With rectifiers whose masks are detached
  and no normalisation (the DCGAN critic) it is never reached.

The input and the weight are saved with ``save_for_backward``: changing either in place
between the forward and a backward (an optimizer step in between) raises autograd's
in-place error instead of differentiating against the new values. The double backward
is once-differentiable: a third derivative raises autograd's error for that
(``autograd.grad`` reports the weight as unused in the graph).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.overrides import TorchFunctionMode

from wgangp.fast.torch_args import arg, pair

aten = torch.ops.aten

# (stride, padding, dilation, groups) as ATen takes them
_Params = tuple[list[int], list[int], list[int], int]


def _input_grad(gy: Tensor, x: Tensor, w: Tensor, p: _Params) -> Tensor:
    stride, padding, dilation, groups = p
    gx, _, _ = aten.convolution_backward(
        gy, x, w, None, stride, padding, dilation, False, [0, 0], groups, [True, False, False]
    )
    return gx


def _weight_grad(gy: Tensor, x: Tensor, w: Tensor, p: _Params) -> Tensor:
    stride, padding, dilation, groups = p
    _, gw, _ = aten.convolution_backward(
        gy, x, w, None, stride, padding, dilation, False, [0, 0], groups, [False, True, False]
    )
    return gw


def _conv(x: Tensor, w: Tensor, b: Tensor | None, p: _Params) -> Tensor:
    stride, padding, dilation, groups = p
    return aten.convolution(x, w, b, stride, padding, dilation, False, [0, 0], groups)


class _ConvInputGrad(torch.autograd.Function):
    """``g_x = dgrad(g_y, w)`` (``x`` supplies the shape), differentiable in ``g_y`` and ``w``:
    the backward of an incoming ``ḡ_x`` is ``(w ⋆ ḡ_x, wgrad(ḡ_x, g_y))``."""

    @staticmethod
    def forward(ctx: Any, gy: Tensor, w: Tensor, x: Tensor, p: _Params) -> Tensor:  # noqa: ANN401
        ctx.save_for_backward(gy, w)
        ctx.p = p
        ctx.set_materialize_grads(False)
        return _input_grad(gy, x, w, p)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, ggx: Tensor | None) -> tuple[Tensor | None, ...]:  # noqa: ANN401
        if ggx is None:
            return None, None, None, None
        gy, w = ctx.saved_tensors
        ggy = _conv(ggx, w, None, ctx.p) if ctx.needs_input_grad[0] else None
        gw = _weight_grad(gy, ggx, w, ctx.p) if ctx.needs_input_grad[1] else None
        return ggy, gw, None, None


def _engine_will_use(node: Any) -> bool:  # noqa: ANN401
    """Whether the running backward will use a gradient sent along the edge to ``node``
    (the autograd node of one of a Function's inputs; None: the input needs none).

    ``loss.backward()`` uses every edge; ``autograd.grad(out, inputs)`` only those on a
    path to ``inputs``. The engine refuses the question for a leaf that
    ``autograd.grad`` asked for by name, and that refusal means it is wanted.
    """
    if node is None:
        return False
    try:
        return bool(torch._C._will_engine_execute_node(node))
    except RuntimeError:
        return True


class _PenaltyConv2d(torch.autograd.Function):
    """``w ⋆ x + b``. In a ``create_graph=True`` pass its backward gives ``x`` its gradient
    through :class:`_ConvInputGrad`, so that the double backward reaches ``w``, and gives
    ``w`` and ``b`` theirs only where the engine will use them; in a first-order pass it
    gives the usual three gradients (the module docstring states the contract)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, w: Tensor, b: Tensor | None, p: _Params) -> Tensor:  # noqa: ANN401
        ctx.p, ctx.has_bias = p, b is not None
        ctx.save_for_backward(x, w)
        ctx.set_materialize_grads(False)
        return _conv(x, w.detach(), None if b is None else b.detach(), p)

    @staticmethod
    def backward(ctx: Any, gy: Tensor | None) -> tuple[Tensor | None, ...]:  # noqa: ANN401
        if gy is None:
            return None, None, None, None
        x, w = ctx.saved_tensors
        p = ctx.p
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled():  # create_graph=True: the penalty's ∇x̂ D, or another
            gx = _ConvInputGrad.apply(gy, w, x.detach(), p) if need_x else None
            edges = ctx.next_functions
            gw = gb = None
            if need_w and _engine_will_use(edges[1][0]):
                # recorded by autograd (grad mode is on): differentiable in gy and x
                gw = _weight_grad(gy, x, w, p)
            if ctx.has_bias and need_b and _engine_will_use(edges[2][0]):
                gb = gy.sum(dim=(0, 2, 3))
            return gx, gw, gb, None
        gx = _input_grad(gy, x, w, p) if need_x else None
        gw = _weight_grad(gy, x, w, p) if need_w else None
        gb = gy.sum(dim=(0, 2, 3)) if ctx.has_bias and need_b else None
        return gx, gw, gb, None


def penalty_conv2d(
    x: Tensor,
    w: Tensor,
    b: Tensor | None = None,
    stride: Any = 1,  # noqa: ANN401
    padding: Any = 0,  # noqa: ANN401
    dilation: Any = 1,  # noqa: ANN401
    groups: int = 1,
) -> Tensor:
    """``F.conv2d`` with the double backward described in the module docstring.

    Under autocast the operands are cast first, as autocast would for ``conv2d``
    (recorded casts, so gradients flow back in the parameters' dtype).
    """
    p: _Params = (pair(stride), pair(padding), pair(dilation), groups)
    dev = x.device.type
    if torch.is_autocast_enabled(dev):
        dt = torch.get_autocast_dtype(dev)
        x, w = x.to(dt), w.to(dt)
        b = None if b is None else b.to(dt)
    with torch.autocast(dev, enabled=False):
        return _PenaltyConv2d.apply(x, w, b, p)


class _NativeConvGrads(TorchFunctionMode):
    """Inside this mode ``F.conv2d`` with numeric padding runs :func:`penalty_conv2d`."""

    _CONV2D = {F.conv2d, torch.conv2d}

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        if func in self._CONV2D and torch.is_grad_enabled():
            x = arg(args, kwargs, 0, "input", None)
            padding = arg(args, kwargs, 4, "padding", 0)
            if not isinstance(padding, str) and x.dim() == 4 and x.requires_grad:
                return penalty_conv2d(
                    x,
                    arg(args, kwargs, 1, "weight", None),
                    arg(args, kwargs, 2, "bias", None),
                    arg(args, kwargs, 3, "stride", 1),
                    padding,
                    arg(args, kwargs, 5, "dilation", 1),
                    int(arg(args, kwargs, 6, "groups", 1)),
                )
        return func(*args, **kwargs)


def with_native_conv_grads(critic: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """``critic`` with its 2-D convolutions run by :func:`penalty_conv2d`."""

    def forward(x: Tensor, **kwargs: Any) -> Tensor:  # noqa: ANN401
        with _NativeConvGrads():
            return critic(x, **kwargs)  # kwargs: with_logits (class-conditional critics)

    return forward


__all__ = ["penalty_conv2d", "with_native_conv_grads"]
