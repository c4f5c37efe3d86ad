"""The gradient penalty and losses against cases with known answers."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats
from torch import nn

from wgangp import losses


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
    assert torch.allclose(res.grad_norm, torch.full((shape[0],), expected, dtype=torch.float32))
    assert res.penalty.item() == pytest.approx((expected - 1) ** 2, rel=1e-6)


def test_linear_critic_penalty_gradient_matches_analytic():
    # d/dw (‖w‖ − 1)² = 2(‖w‖ − 1) w/‖w‖
    w = torch.tensor([3.0, 4.0])
    critic = Linear(w)
    res = losses.gradient_penalty(critic, torch.randn(8, 2), torch.randn(8, 2))
    res.penalty.backward()
    assert res.penalty.item() == pytest.approx(16.0)
    assert torch.allclose(critic.w.grad, 2 * (5 - 1) * w / 5)


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


def test_critic_and_generator_losses():
    d_real, d_fake = torch.tensor([1.0, 3.0]), torch.tensor([-1.0, 0.0])
    assert losses.wasserstein_estimate(d_real, d_fake).item() == pytest.approx(2.5)
    assert losses.critic_loss(d_real, d_fake, torch.tensor(0.5), 10.0).item() == pytest.approx(2.5)
    assert losses.generator_loss(d_fake).item() == pytest.approx(0.5)
    assert not math.isnan(losses.penalty_from_norm(torch.zeros(3)).item())
