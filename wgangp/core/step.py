"""Building blocks of the fast training step; the math stays in :mod:`wgangp.core.losses`.

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
  ``avg_pool2d`` gets the same treatment: its backward reads the input only for its
  shape, yet PyTorch's double backward sends a zero gradient back through the input's
  graph; inside the wrapper the pooling's backward sees a detached input instead (the
  ResNet critics' mean pools: without it the saving above was 5 % instead of ~30 %).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor
from torch.overrides import TorchFunctionMode


@dataclass(frozen=True)
class StepSettings:
    """The settings the training step reads, resolved once from the config.

    Why: an OmegaConf attribute read costs microseconds of Python (node lookup,
    interpolation and missing-value checks), and the step made ~90 of them per generator
    iteration. That is noise on a CPU but a few per cent of an eager CUDA iteration,
    which is bound by Python and kernel launches at the paper's batch sizes.
    """

    batch_size: int
    gen_batch_size: int  # the generator update's (trainer.gen_batch_size, or batch_size)
    n_critic: int
    batch_fakes: bool
    fuse_real_fake: bool
    gp_lambda: float
    gp_target: float
    gp_one_sided: bool
    gp_every: int
    cuda_graph: bool
    ema_start: int
    num_classes: int  # class-conditional (conditional.enabled): the data's classes, else 0
    acgan_scale: float
    acgan_scale_g: float
    objective: str  # loss.name: wgan-gp | wgan | dcgan | lsgan
    penalty: bool  # loss.name=wgan-gp; the baselines take no penalty
    clip: float  # loss.name=wgan: critic weights clipped to ±clip after each update; 0: off

    @classmethod
    def from_cfg(cls, cfg: Any, num_classes: int = 0) -> StepSettings:  # noqa: ANN401
        t, gp, cond, speed = cfg.trainer, cfg.gp, cfg.conditional, cfg.speed
        return cls(
            batch_size=int(t.batch_size),
            gen_batch_size=int(t.gen_batch_size or t.batch_size),
            n_critic=int(t.n_critic),
            batch_fakes=bool(speed.batch_fakes),
            fuse_real_fake=bool(speed.fuse_real_fake),
            gp_lambda=float(gp["lambda"]),
            gp_target=float(gp.target),
            gp_one_sided=bool(gp.one_sided),
            gp_every=int(gp.every),
            cuda_graph=bool(speed.cuda_graph),
            ema_start=int(t.ema.start),
            num_classes=num_classes,
            acgan_scale=float(cond.acgan_scale),
            acgan_scale_g=float(cond.acgan_scale_g),
            objective=str(cfg.loss.name),
            penalty=cfg.loss.name == "wgan-gp",
            clip=float(cfg.loss.clip) if cfg.loss.name == "wgan" else 0.0,
        )


@dataclass
class IterationInputs:
    """What one generator iteration consumes, drawn before it runs
    (by the trainer, before :func:`wgangp.core.algorithm.algorithm_1` runs).

    ``reals``: the n_critic real batches; ``fake_z``: latents of the fakes, one tensor
    per critic update or one for all of them (``speed.batch_fakes``); ``eps``: the
    interpolation weights per critic update, None where the lazy penalty skips it;
    ``gen_z``: the generator update's latents. Class-conditional runs also carry
    ``real_labels`` (one per real batch; the fakes of that critic update share them)
    and ``gen_labels`` (the generator update's, uniform over the classes).
    """

    reals: list[Tensor]
    fake_z: list[Tensor]
    eps: list[Tensor | None]
    gen_z: Tensor
    real_labels: list[Tensor] | None = None
    gen_labels: Tensor | None = None

    def tensors(self) -> list[Tensor]:
        """Every tensor, in a fixed order (for copying into static buffers)."""
        labels = [
            *(self.real_labels or []),
            *([] if self.gen_labels is None else [self.gen_labels]),
        ]
        return [
            *self.reals,
            *self.fake_z,
            *(e for e in self.eps if e is not None),
            self.gen_z,
            *labels,
        ]

    def clone(self) -> IterationInputs:
        return IterationInputs(
            [r.clone() for r in self.reals],
            [z.clone() for z in self.fake_z],
            [None if e is None else e.clone() for e in self.eps],
            self.gen_z.clone(),
            None if self.real_labels is None else [y.clone() for y in self.real_labels],
            None if self.gen_labels is None else self.gen_labels.clone(),
        )


def _real_and_fake(real: Tensor, fake: Tensor) -> Tensor:
    """One batch of ``real`` then ``fake``, in ``real``'s dtype and memory format."""
    both = torch.cat([real, fake.to(real.dtype)])
    if real.dim() == 4 and real.is_contiguous(memory_format=torch.channels_last):
        both = both.contiguous(memory_format=torch.channels_last)
    return both


def critic_scores(
    critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor, fuse: bool
) -> tuple[Tensor, Tensor]:
    """``(D(real), D(fake))``; with ``fuse`` from one forward of the concatenated batch."""
    if not fuse:
        return critic(real), critic(fake)
    scores = critic(_real_and_fake(real, fake))
    # unbind, not two slices: its backward is one stack instead of two zero-filled
    # slice_backward buffers and their sum (launches count in an eager CUDA step)
    d_real, d_fake = scores.unflatten(0, (2, real.shape[0])).unbind(0)
    return d_real, d_fake


def critic_scores_and_logits(
    critic: Callable[..., tuple[Tensor, Tensor]], real: Tensor, fake: Tensor, fuse: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A class-conditional critic's ``(D(real), D(fake), logits(real), logits(fake))``,
    with ``fuse`` from one forward of the concatenated batch (:func:`critic_scores`)."""
    if not fuse:
        (s_real, l_real), (s_fake, l_fake) = (
            critic(real, with_logits=True),
            critic(fake, with_logits=True),
        )
        return s_real, s_fake, l_real, l_fake
    scores, logits = critic(_real_and_fake(real, fake), with_logits=True)
    n = real.shape[0]
    s_real, s_fake = scores.unflatten(0, (2, n)).unbind(0)
    l_real, l_fake = logits.unflatten(0, (2, n)).unbind(0)
    return s_real, s_fake, l_real, l_fake


def _arg(args: tuple, kwargs: dict, i: int, name: str, default: Any) -> Any:
    return args[i] if len(args) > i else kwargs.get(name, default)


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
    kernel = _pair(_arg(args, kwargs, 1, "kernel_size", None))
    stride = _arg(args, kwargs, 2, "stride", None)
    stride = kernel if stride is None or stride == [] else _pair(stride)
    return _AvgPool2dShapeOnly.apply(
        x,
        kernel,
        stride,
        _pair(_arg(args, kwargs, 3, "padding", 0)),
        bool(_arg(args, kwargs, 4, "ceil_mode", False)),
        bool(_arg(args, kwargs, 5, "count_include_pad", True)),
        _arg(args, kwargs, 6, "divisor_override", None),
    )


def _pair(v: Any) -> list[int]:  # noqa: ANN401
    return [int(v), int(v)] if isinstance(v, int) else [int(i) for i in v]


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
            inplace = func in self._RELU_ or bool(_arg(args, kwargs, 1, "inplace", False))
            return _rectifier(args[0], 0.0, inplace)
        if func in self._LEAKY or func in self._LEAKY_:
            slope = float(_arg(args, kwargs, 1, "negative_slope", 0.01))
            inplace = func in self._LEAKY_ or bool(_arg(args, kwargs, 2, "inplace", False))
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


__all__ = [
    "IterationInputs",
    "StepSettings",
    "critic_scores",
    "critic_scores_and_logits",
    "with_detached_relu_masks",
]
