r"""The WGAN-GP objective as pure functions (Gulrajani et al. 2017, Algorithm 1).

With critic :math:`D`, real samples :math:`x \sim P_r` and generated samples
:math:`\tilde x = G(z) \sim P_g`:

.. math::

    L_D = \mathbb{E}[D(\tilde x)] - \mathbb{E}[D(x)]
          + \lambda\,\mathbb{E}_{\hat x}\big[(\lVert\nabla_{\hat x} D(\hat x)\rVert_2 - 1)^2\big],
    \qquad \hat x = \epsilon x + (1-\epsilon)\tilde x,\ \epsilon \sim U[0, 1]

    L_G = -\mathbb{E}[D(G(z))]

:math:`\epsilon` is drawn once per sample and broadcast over every non-batch
dimension; the gradient norm is taken per sample over every non-batch dimension.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

# sqrt has an infinite derivative at 0 (and ‖g‖ = g/‖g‖ is 0/0 there). Clamping the
# squared norm at the smallest normal float keeps the forward value ≈ 0 (1e-19) and
# makes the backward exactly 0 for a zero gradient instead of NaN.
_TINY = torch.finfo(torch.float32).tiny


def interpolation_weights(
    batch_size: int,
    ndim: int,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    generator: torch.Generator | None = None,
) -> Tensor:
    """ε ~ U[0, 1], one per sample, shaped ``(N, 1, ..., 1)`` to broadcast over the rest."""
    shape = (batch_size,) + (1,) * (ndim - 1)
    return torch.rand(shape, device=device, dtype=dtype, generator=generator)


def interpolate(real: Tensor, fake: Tensor, eps: Tensor) -> Tensor:
    """x̂ = ε·x + (1 − ε)·x̃ (``eps`` broadcasts per sample).

    One ``lerp`` kernel (x̃ + ε(x − x̃), computed from the nearer end), exact at ε = 0
    and ε = 1.
    """
    if real.shape != fake.shape:
        raise ValueError(f"real {tuple(real.shape)} and fake {tuple(fake.shape)} differ in shape")
    return torch.lerp(fake, real, eps.to(real.dtype))


def per_sample_norm(grad: Tensor) -> Tensor:
    """‖g_i‖₂ over all non-batch dims, in fp32, finite gradient at g = 0."""
    sq = grad.float().pow(2).flatten(1).sum(dim=1)
    return sq.clamp_min(_TINY).sqrt()


def penalty_from_norm(norm: Tensor, target: float = 1.0, one_sided: bool = False) -> Tensor:
    """E[(‖g‖ − target)²], or E[max(0, ‖g‖ − target)²] when one-sided."""
    dev = norm - target
    if one_sided:
        dev = dev.clamp_min(0.0)
    return dev.pow(2).mean()


class _NormPenalty(torch.autograd.Function):
    r"""(P, n) = (E[(n_i − t)²], n) with n_i = ‖g_i‖₂ (``one_sided``: (n_i − t)⁺), and the
    backward written out: ∂P/∂g_i = (2/N)·d_i·g_i/n_i with d_i the deviation, 0 at g_i = 0.
    The norm is taken of g_i/m_i with m_i a power of two at max|g_i| (exact scaling), so
    tiny or huge gradients neither underflow nor overflow in its squares.

    Why: autograd's backward of the composed ops (square, sum, clamp, sqrt, subtract,
    square, mean) is ~18 small kernels per critic update and this one is 5. The
    penalty's own backward is first order: it feeds the double backward, and nothing
    differentiates it again (its result carries no graph: a third-order derivative
    through it is not supported). Gradients equal the composed ops' to float rounding
    (tests/test_losses.py).
    """

    @staticmethod
    def forward(ctx, grad: Tensor, target: float, one_sided: bool) -> tuple[Tensor, Tensor]:  # noqa: ANN001
        # fp32 at least (bf16/fp16 gradients under autocast), fp64 kept
        wide = torch.float64 if grad.dtype == torch.float64 else torch.float32
        flat = grad.flatten(1)
        scale = _power_of_two_scale(flat, wide)
        # ‖g‖ = m·‖g/m‖ with m a power of two at max|g|: dividing by m rounds nothing
        # (the same norm bit for bit), and entries ≲ 1e-23 no longer square to 0 in
        # fp32 (a zero norm with g ≠ 0, whose backward divided by the clamp)
        unit_norm = torch.linalg.vector_norm(flat / scale, dim=1, dtype=wide)
        scale = scale.squeeze(1)
        norm = unit_norm * scale
        dev = norm - target
        if one_sided:
            dev = dev.clamp_min(0.0)
        ctx.save_for_backward(grad, unit_norm, scale, dev)
        ctx.mark_non_differentiable(norm)
        ctx.set_materialize_grads(False)  # no zeros made for the norms' (absent) gradient
        return dev.pow(2).mean(), norm

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, d_penalty: Tensor | None, _d_norm: None) -> tuple[Tensor | None, None, None]:  # noqa: ANN001
        if d_penalty is None:
            return None, None, None
        grad, unit_norm, scale, dev = ctx.saved_tensors
        # d_i/n_i = d_i/‖g_i/m_i‖/m_i, the same float as d_i/n_i (m_i is a power of two).
        # ‖g_i/m_i‖ ≥ 1/2 unless g_i = 0, where the floor keeps the quotient finite and
        # g_i = 0 makes the product 0
        coef = dev * (d_penalty * (2.0 / dev.numel())) / unit_norm.clamp_min(0.5) / scale
        coef = coef.view(-1, *(1,) * (grad.dim() - 1))
        return (grad.to(coef.dtype) * coef).to(grad.dtype), None, None


def _power_of_two_scale(flat: Tensor, dtype: torch.dtype) -> Tensor:
    """m_i = 2^e_i with max_j |g_ij| = f·2^e_i, f ∈ [½, 1) (1 where g_i = 0), shape (N, 1)."""
    peak = torch.linalg.vector_norm(flat, ord=float("inf"), dim=1, keepdim=True, dtype=dtype)
    fraction, _ = torch.frexp(peak)
    # peak / f is exactly 2^e (a quotient of floats that is representable)
    return torch.where(peak > 0, peak / fraction, torch.ones_like(peak))


def penalty_from_grad(
    grad: Tensor, target: float = 1.0, one_sided: bool = False
) -> tuple[Tensor, Tensor]:
    """(E[(‖g_i‖₂ − target)²], ‖g_i‖₂): the penalty on the per-sample norms of ``grad``
    (over all non-batch dims, in fp32 or wider) and the norms (not differentiable).

    The values of ``penalty_from_norm(per_sample_norm(grad))`` to float rounding (the
    norm of g_i = 0 is 0 here, 1e-19 there), with a fused
    backward (:class:`_NormPenalty`); its gradient at g_i = 0 is 0, not NaN.
    """
    return _NormPenalty.apply(grad, float(target), bool(one_sided))


class PenaltyResult(NamedTuple):
    penalty: Tensor  # scalar, not yet multiplied by λ
    grad_norm: Tensor  # (N,) per-sample ‖∇D(x̂)‖₂, not differentiable (a statistic)
    critic_out: Tensor  # D(x̂), (N,) or (N, 1)


def gradient_penalty(
    critic: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    *,
    target: float = 1.0,
    one_sided: bool = False,
    eps: Tensor | None = None,
    generator: torch.Generator | None = None,
    output_scale: Tensor | float | None = None,
) -> PenaltyResult:
    r"""Gradient penalty of ``critic`` at random interpolates of ``real`` and ``fake``.

    Args:
        critic: maps a batch ``(N, ...)`` to scores ``(N,)`` or ``(N, 1)``.
        real, fake: batches of equal shape; ``fake`` should be detached from G.
        target: the norm the penalty pulls towards (1 in the paper).
        one_sided: penalise only norms above ``target``.
        eps: interpolation weights ``(N, 1, ..., 1)``; drawn from U[0, 1] if None.
        generator: RNG for ``eps``.
        output_scale: multiply the outputs before differentiating and divide the
            gradients after (fp16 loss scaling, PyTorch's AMP "gradient penalty"
            recipe) so small gradients do not underflow; the result is unchanged.

    Returns:
        :class:`PenaltyResult` with the mean penalty (differentiable w.r.t. the
        critic's parameters through ``create_graph=True``), the per-sample norms and
        :math:`D(\hat x)`.
    """
    if eps is None:
        eps = interpolation_weights(
            real.shape[0], real.dim(), device=real.device, dtype=real.dtype, generator=generator
        )
    # x̂ must be a non-leaf requiring grad: the penalty differentiates D with respect
    # to its input, and x̂ itself must not carry gradient back into G or the data.
    # (A view of a fresh leaf: FlopCounterMode cannot count autograd.grad w.r.t. a
    # leaf, pytorch#131753.)
    base = interpolate(real.detach(), fake.detach(), eps).requires_grad_(True)
    x_hat = base.view_as(base)
    out = critic(x_hat)
    scaled = out if output_scale is None else out * output_scale
    # samples are independent, so one backward with a ones seed gives every ∂D(x̂_i)/∂x̂_i
    # (as ∂ΣD/∂x̂ would, without the sum's kernel)
    (grad,) = torch.autograd.grad(
        outputs=scaled,
        inputs=x_hat,
        grad_outputs=torch.ones_like(scaled),
        create_graph=True,
    )
    if output_scale is not None:
        grad = grad / output_scale
    penalty, norm = penalty_from_grad(grad, target, one_sided)
    return PenaltyResult(penalty, norm, out)


def wasserstein_estimate(d_real: Tensor, d_fake: Tensor) -> Tensor:
    """E[D(x)] − E[D(x̃)]: the critic's estimate of W(P_r, P_g), in fp32 at least."""
    return at_least_fp32(d_real).mean() - at_least_fp32(d_fake).mean()


def critic_loss(
    d_real: Tensor,
    d_fake: Tensor,
    penalty: Tensor,
    lam: float,
    *,
    estimate: Tensor | None = None,
) -> Tensor:
    """L_D = E[D(x̃)] − E[D(x)] + λ·penalty, computed as λ·penalty − W.

    ``estimate``: W = :func:`wasserstein_estimate` ``(d_real, d_fake)`` if the caller
    already has it (not detached), so that the two means are not computed twice.
    Bitwise the same either way: x̃ − x and −(x − x̃) are the same float.
    """
    w = wasserstein_estimate(d_real, d_fake) if estimate is None else estimate
    return lam * penalty - w


def generator_loss(d_fake: Tensor) -> Tensor:
    """L_G = −E[D(G(z))], in fp32 at least."""
    return -at_least_fp32(d_fake).mean()


# ---------------------------------------------------------------- the baselines
# The official image scripts' other modes (MODE = 'dcgan' in gan_cifar.py, gan_mnist.py
# and gan_64x64.py; 'lsgan' in gan_64x64.py), the objectives the paper compares WGAN-GP with (§5.2,
# Figure 2). Their critic is a classifier or regressor of real against fake: no
# Lipschitz constraint, one critic update per generator update (loss=dcgan|lsgan).


def _real_label(d: Tensor) -> Tensor:
    return torch.ones_like(d)


def dcgan_critic_loss(d_real: Tensor, d_fake: Tensor) -> Tensor:
    r"""The standard GAN discriminator loss on logits, halved as the official code:
    :math:`\tfrac12\big(\mathrm{BCE}(\sigma(D(x)), 1) + \mathrm{BCE}(\sigma(D(\tilde x)), 0)\big)
    = \tfrac12\big(\mathbb{E}[\log(1 + e^{-D(x)})] + \mathbb{E}[\log(1 + e^{D(\tilde x)})]\big)`
    (sigmoid cross-entropy on the logits, in fp32 at least)."""
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    real, fake = at_least_fp32(d_real), at_least_fp32(d_fake)
    return 0.5 * (bce(real, _real_label(real)) + bce(fake, torch.zeros_like(fake)))


def dcgan_generator_loss(d_fake: Tensor) -> Tensor:
    r"""The non-saturating generator loss :math:`\mathrm{BCE}(\sigma(D(G(z))), 1) =
    \mathbb{E}[\log(1 + e^{-D(G(z))})]` (the official ``gen_cost`` in ``dcgan`` mode)."""
    fake = at_least_fp32(d_fake)
    return torch.nn.functional.binary_cross_entropy_with_logits(fake, _real_label(fake))


def lsgan_critic_loss(d_real: Tensor, d_fake: Tensor) -> Tensor:
    r"""Least squares (Mao et al. 2017, a = 0, b = c = 1), halved as the official code:
    :math:`\tfrac12\big(\mathbb{E}[(D(x) - 1)^2] + \mathbb{E}[D(\tilde x)^2]\big)`."""
    real, fake = at_least_fp32(d_real), at_least_fp32(d_fake)
    return 0.5 * ((real - 1).pow(2).mean() + fake.pow(2).mean())


def lsgan_generator_loss(d_fake: Tensor) -> Tensor:
    r""":math:`\mathbb{E}[(D(G(z)) - 1)^2]` (the official ``gen_cost`` in ``lsgan`` mode)."""
    return (at_least_fp32(d_fake) - 1).pow(2).mean()


class ScoreLoss(NamedTuple):
    """A baseline objective: the critic's loss of (D(x), D(x̃)), the generator's of D(G(z)),
    and how the critic's raw outputs are shown in the logs (``dcgan``: as probabilities)."""

    critic: Callable[[Tensor, Tensor], Tensor]
    generator: Callable[[Tensor], Tensor]
    shown: Callable[[Tensor], Tensor]


#: loss.name → the baseline objective (the Wasserstein ones, wgan-gp and wgan, are above)
SCORE_LOSSES: dict[str, ScoreLoss] = {
    "dcgan": ScoreLoss(dcgan_critic_loss, dcgan_generator_loss, torch.sigmoid),
    "lsgan": ScoreLoss(lsgan_critic_loss, lsgan_generator_loss, lambda d: d),
}


def wasserstein_loss(d_real: Tensor, d_fake: Tensor) -> Tensor:
    """E[D(x̃)] − E[D(x)], the critic loss of ``wgan-gp`` and ``wgan`` without the penalty
    (−:func:`wasserstein_estimate`, the same float), in fp32, or in fp64 for fp64 scores
    (a measurement rounds no further)."""
    return at_least_fp32(d_fake).mean() - at_least_fp32(d_real).mean()


def at_least_fp32(x: Tensor) -> Tensor:
    """``x`` in fp32, or as it is if fp64 (bf16/fp16 scores are averaged in fp32)."""
    # a comparison of dtypes, not torch.promote_types: that is an operator, which a
    # CUDA-graph capture check would see as a host read
    return x if x.dtype == torch.float64 else x.float()


def unpenalised_critic_loss(loss: str) -> Callable[[Tensor, Tensor], Tensor]:
    """``loss.name``'s critic loss of (D(x), D(x̃)) without any penalty: a baseline's
    (:data:`SCORE_LOSSES`), else :func:`wasserstein_loss`."""
    return SCORE_LOSSES[loss].critic if loss in SCORE_LOSSES else wasserstein_loss


def measured_critic_loss(
    critic: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    *,
    loss: str = "wgan-gp",
    lam: float = 10.0,
    target: float = 1.0,
    one_sided: bool = False,
    eps: Tensor | None = None,
    output_scale: Tensor | float | None = None,
) -> Tensor:
    """The critic update's loss of one batch, as a measurement (detached): ``loss``'s
    (``loss.name``) E[D(x̃)] − E[D(x)], plus λ·GP at the interpolates of ``eps`` for
    ``wgan-gp``, or a baseline's (:data:`SCORE_LOSSES`). D(x) and D(x̃) come from two
    calls (a batch-norm critic normalises each batch by itself, as in its update).
    Evaluation's ``critic_loss`` on held-out data (wgangp/metrics/evaluator.py)."""
    d_real, d_fake = critic(real), critic(fake)
    value = unpenalised_critic_loss(loss)(d_real, d_fake)
    if loss == "wgan-gp":
        gp = gradient_penalty(
            critic,
            real,
            fake,
            target=target,
            one_sided=one_sided,
            eps=eps,
            output_scale=output_scale,
        )
        value = value + lam * gp.penalty
    return value.detach()


def class_loss(logits: Tensor, labels: Tensor) -> Tensor:
    r"""The AC-GAN term (Odena et al. 2017): mean cross-entropy
    :math:`-\mathbb{E}[\log \mathrm{softmax}(\ell)_y]` of class ``logits`` ``(N, K)``
    against integer ``labels`` ``(N,)``, in fp32 at least (``gan_cifar_resnet.py``'s
    ``sparse_softmax_cross_entropy_with_logits``, averaged)."""
    return torch.nn.functional.cross_entropy(at_least_fp32(logits), labels)


def class_accuracy(logits: Tensor, labels: Tensor) -> Tensor:
    """The fraction of samples whose largest logit is their label (logged, not trained)."""
    return (logits.detach().argmax(dim=1) == labels).float().mean()
