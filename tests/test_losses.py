"""The gradient penalty and losses against cases with known answers."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats
from torch import nn

from wgangp.core import losses


class Linear(nn.Module):
    """D(x) = w·vec(x): ∇D = w everywhere, so ‖∇D‖ = ‖w‖ exactly."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1) * self.w.flatten()).sum(1)


class HalfSquare(nn.Module):
    """D(x) = a·‖x‖²/2: ∇D(x̂) = a·x̂, so ‖∇D‖ = |a|·‖x̂‖."""

    def __init__(self, a: float) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.a * x.flatten(1).pow(2).sum(1)


@pytest.mark.parametrize("shape", [(16, 2), (8, 3, 4, 4), (4, 5, 3)])
def test_linear_critic_norm_is_norm_of_w(shape):
    torch.manual_seed(0)
    w = torch.randn(shape[1:], dtype=torch.float64)
    critic = Linear(w).double()
    real, fake = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
    res = losses.gradient_penalty(critic, real, fake)
    expected = w.norm().item()
    # float64 in, float64 out (the norm is taken in fp32 at least, never narrower)
    assert torch.allclose(res.grad_norm, torch.full((shape[0],), expected, dtype=torch.float64))
    assert res.penalty.item() == pytest.approx((expected - 1) ** 2, rel=1e-6)


def test_linear_critic_penalty_gradient_matches_analytic():
    # d/dw (‖w‖ − 1)² = 2(‖w‖ − 1) w/‖w‖
    w = torch.tensor([3.0, 4.0])
    critic = Linear(w)
    res = losses.gradient_penalty(critic, torch.randn(8, 2), torch.randn(8, 2))
    res.penalty.backward()
    assert res.penalty.item() == pytest.approx(16.0)
    assert torch.allclose(critic.w.grad, 2 * (5 - 1) * w / 5)


def test_interpolate_is_the_convex_combination_exact_at_both_ends():
    torch.manual_seed(3)
    real, fake = torch.randn(6, 3, 4, 4), torch.randn(6, 3, 4, 4)
    eps = torch.tensor([0.0, 1.0, 0.25, 0.5, 0.75, 0.999]).view(6, 1, 1, 1)
    x_hat = losses.interpolate(real, fake, eps)
    assert torch.equal(x_hat[0], fake[0]) and torch.equal(x_hat[1], real[1])
    assert torch.allclose(x_hat, eps * real + (1 - eps) * fake, atol=1e-6)
    with pytest.raises(ValueError, match=r"real \(6, 3, 4, 4\) and fake \(6, 3\) differ"):
        losses.interpolate(real, fake[:, :, 0, 0], eps)


def test_quadratic_critic_uses_the_interpolate():
    torch.manual_seed(1)
    real, fake = torch.randn(32, 3), torch.randn(32, 3)
    eps = losses.interpolation_weights(32, 2)
    critic = HalfSquare(2.0)
    res = losses.gradient_penalty(critic, real, fake, eps=eps)
    x_hat = eps * real + (1 - eps) * fake
    assert torch.allclose(res.grad_norm, 2.0 * x_hat.norm(dim=1), atol=1e-6)
    assert res.penalty.item() == pytest.approx(
        ((2.0 * x_hat.norm(dim=1) - 1) ** 2).mean().item(), rel=1e-5
    )
    # and the penalty's gradient w.r.t. a: d/da mean((|a|‖x̂‖ − 1)²) = mean(2(a‖x̂‖ − 1)‖x̂‖)
    res.penalty.backward()
    n = x_hat.norm(dim=1)
    assert critic.a.grad.item() == pytest.approx((2 * (2.0 * n - 1) * n).mean().item(), rel=1e-5)


def test_eps_is_per_sample_and_broadcast_over_all_other_dims():
    torch.manual_seed(2)
    seen = {}

    def spy(x):
        seen["x"] = x.detach()
        return x.flatten(1).sum(1)

    real = torch.ones(64, 3, 4, 4)
    fake = torch.zeros(64, 3, 4, 4)
    losses.gradient_penalty(spy, real, fake)
    x_hat = seen["x"]  # = ε_i everywhere in sample i
    per_sample = x_hat.flatten(1)
    assert torch.equal(per_sample, per_sample[:, :1].expand_as(per_sample)), (
        "ε varies within a sample"
    )
    assert per_sample[:, 0].unique().numel() == 64, "ε shared across samples"


def test_eps_is_uniform_on_0_1():
    g = torch.Generator().manual_seed(3)
    eps = losses.interpolation_weights(20000, 4, generator=g)
    assert eps.shape == (20000, 1, 1, 1)
    assert eps.min() >= 0.0 and eps.max() <= 1.0
    assert stats.kstest(eps.flatten().numpy(), "uniform").pvalue > 1e-3


def test_one_sided_ignores_small_norms():
    small = Linear(torch.tensor([0.3, 0.4]))  # ‖w‖ = 0.5 < 1
    big = Linear(torch.tensor([3.0, 4.0]))  # ‖w‖ = 5
    x = torch.randn(8, 2)
    assert losses.gradient_penalty(small, x, x.flip(0), one_sided=True).penalty.item() == 0.0
    assert losses.gradient_penalty(small, x, x.flip(0)).penalty.item() == pytest.approx(0.25)
    assert losses.gradient_penalty(
        big, x, x.flip(0), one_sided=True
    ).penalty.item() == pytest.approx(16.0)


def test_no_nan_when_the_gradient_is_zero():
    critic = Linear(torch.zeros(2))  # ∇D = 0: ‖g‖ has no derivative at 0
    res = losses.gradient_penalty(critic, torch.randn(8, 2), torch.randn(8, 2))
    res.penalty.backward()
    assert res.penalty.item() == pytest.approx(1.0)
    assert torch.isfinite(critic.w.grad).all()
    assert torch.equal(critic.w.grad, torch.zeros(2))


def test_penalty_does_not_reach_the_generator_or_the_data():
    fake = torch.randn(8, 2, requires_grad=True)
    real = torch.randn(8, 2, requires_grad=True)
    critic = Linear(torch.tensor([3.0, 4.0]))
    losses.gradient_penalty(critic, real, fake).penalty.backward()
    assert fake.grad is None and real.grad is None
    assert critic.w.grad is not None


def test_output_scale_leaves_the_penalty_unchanged():
    critic = Linear(torch.tensor([3.0, 4.0]))
    x, y = torch.randn(8, 2), torch.randn(8, 2)
    eps = losses.interpolation_weights(8, 2)
    a = losses.gradient_penalty(critic, x, y, eps=eps).penalty
    b = losses.gradient_penalty(critic, x, y, eps=eps, output_scale=torch.tensor(1024.0)).penalty
    assert a.item() == pytest.approx(b.item(), rel=1e-6)


@pytest.mark.parametrize("target,one_sided", [(1.0, False), (0.5, False), (1.0, True)])
def test_fused_norm_penalty_gradient_is_the_analytic_one(target, one_sided):
    """penalty_from_grad's written-out backward against finite differences (float64)."""
    torch.manual_seed(0)
    g = (torch.randn(5, 3, 4, 4, dtype=torch.float64) * 0.3).requires_grad_(True)
    g.data[1] *= 10  # norms on both sides of the target (one-sided: some clamped)
    fn = lambda x: losses.penalty_from_grad(x, target, one_sided)[0]  # noqa: E731
    assert torch.autograd.gradcheck(fn, (g,))


@pytest.mark.parametrize("one_sided", [False, True])
def test_fused_norm_penalty_matches_the_composed_ops(one_sided):
    """The same penalty, norms and gradient as penalty_from_norm(per_sample_norm(g)),
    to float rounding, in fp32; a zero gradient row gets exactly 0, not NaN."""
    torch.manual_seed(1)
    g = torch.randn(64, 3, 8, 8) * 0.2
    g[3] = 0.0
    a, b = g.clone().requires_grad_(True), g.clone().requires_grad_(True)
    penalty, norm = losses.penalty_from_grad(a, 1.0, one_sided)
    composed_norm = losses.per_sample_norm(b)
    composed = losses.penalty_from_norm(composed_norm, 1.0, one_sided)
    assert torch.allclose(penalty, composed, rtol=1e-6)
    assert torch.allclose(norm, composed_norm, rtol=1e-6, atol=1e-18)
    assert norm[3] == 0 and not norm.requires_grad
    (ga,), (gb,) = torch.autograd.grad(penalty, a), torch.autograd.grad(composed, b)
    assert torch.allclose(ga, gb, rtol=1e-5, atol=1e-9)
    assert torch.equal(ga[3], torch.zeros_like(ga[3]))


def test_fused_norm_penalty_computes_in_fp32_at_least_and_returns_the_gradient_dtype():
    for dtype, wide in ((torch.bfloat16, torch.float32), (torch.float64, torch.float64)):
        g = torch.randn(4, 2, 3, 3, dtype=dtype, requires_grad=True)
        penalty, norm = losses.penalty_from_grad(g)
        assert penalty.dtype == norm.dtype == wide
        (gg,) = torch.autograd.grad(penalty, g, create_graph=True)
        assert gg.dtype == dtype
        assert not gg.requires_grad  # first order only: no graph through its backward


def test_critic_loss_through_the_estimate_is_bitwise_the_textbook_formula():
    """λ·GP − W (the trainer's, sharing W's two means) against E[D(x̃)] − E[D(x)] + λ·GP:
    the same float and the same gradients, bit for bit."""
    torch.manual_seed(0)
    for n, lam in ((64, 10.0), (7, 0.1), (256, 0.0)):
        d_real, d_fake, gp = (torch.randn(s, requires_grad=True) for s in (n, n, ()))
        textbook = d_fake.mean() - d_real.mean() + lam * gp
        w = losses.wasserstein_estimate(d_real, d_fake)
        ours = losses.critic_loss(d_real, d_fake, gp, lam, estimate=w)
        assert torch.equal(ours, textbook)
        assert torch.equal(losses.critic_loss(d_real, d_fake, gp, lam), textbook)
        for a, b in zip(
            torch.autograd.grad(ours, (d_real, d_fake, gp)),
            torch.autograd.grad(textbook, (d_real, d_fake, gp)),
            strict=True,
        ):
            assert torch.equal(a, b)


def test_critic_and_generator_losses():
    d_real, d_fake = torch.tensor([1.0, 3.0]), torch.tensor([-1.0, 0.0])
    assert losses.wasserstein_estimate(d_real, d_fake).item() == pytest.approx(2.5)
    assert losses.critic_loss(d_real, d_fake, torch.tensor(0.5), 10.0).item() == pytest.approx(2.5)
    assert losses.generator_loss(d_fake).item() == pytest.approx(0.5)
    assert not math.isnan(losses.penalty_from_norm(torch.zeros(3)).item())
