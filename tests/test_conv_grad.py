"""The penalty's convolutions with the weight-gradient kernel in the double backward
(wgangp/fast/conv_grad.py) against PyTorch's own conv2d: same values, same first and second
derivatives to float rounding, fewer FLOPs, nothing computed that is not asked for."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from scripts.benchtools.kernels import KernelRecorder
from tests.conftest import compose_cfg
from tests.test_images_e2e import make_folder
from wgangp.core import losses
from wgangp.fast.conv_grad import penalty_conv2d, with_native_conv_grads
from wgangp.fast.masks import with_detached_relu_masks
from wgangp.models.dcgan import DCGANCritic
from wgangp.models.resnet import CifarResNetCritic
from wgangp.train.trainer import Trainer

aten = torch.ops.aten
TOL = {"atol": 1e-5, "rtol": 1e-5}


def assert_close_at_scale(a: torch.Tensor, ref: torch.Tensor) -> None:
    """Equal to fp32 rounding of a sum: the error of a sum is eps·Σ|terms|, so near-zero
    entries of a large tensor (cancellations) get an absolute tolerance of 1e-6 of its
    largest entry, about 16 ulps (the weight term of the double backward reaches ~500 in
    these tests; oneDNN may pick another summation order for the same shapes from one
    process to the next)."""
    torch.testing.assert_close(a, ref, rtol=1e-5, atol=1e-6 * float(ref.abs().max()))


def _second_order(conv, x, w, b, v):
    """y = conv(x, w, b); (y, ∂⟨v, y⟩/∂x, and ∂‖∂⟨v, y⟩/∂x‖²/∂(w, b)), as the penalty uses them."""
    y = conv(x, w, b)
    (gx,) = torch.autograd.grad((y * v).sum(), x, create_graph=True)
    gw, gb = torch.autograd.grad(gx.square().sum(), (w, b), allow_unused=True)
    return y, gx, gw, gb


@pytest.mark.parametrize(
    "kw,k,c_in,groups",
    [
        ({"stride": 2, "padding": 2}, 5, 4, 1),  # the DCGAN critic's layers
        ({"stride": 2, "padding": 1}, 4, 4, 1),  # Radford et al.'s
        ({"padding": 1}, 3, 4, 1),  # the ResNet critic's
        ({}, 1, 4, 1),  # 1×1 shortcuts
        ({"stride": (2, 1), "padding": (1, 0), "dilation": 2}, 3, 4, 1),
        ({"padding": 1, "groups": 2}, 3, 4, 2),
        ({"stride": 3}, 3, 3, 1),  # stride that does not divide the size
    ],
)
def test_penalty_conv2d_matches_conv2d_to_second_order(kw, k, c_in, groups):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, c_in, 11, 10, generator=g, requires_grad=True)
    w = torch.randn(6, c_in // groups, k, k, generator=g, requires_grad=True)
    b = torch.randn(6, generator=g, requires_grad=True)
    kw = {**kw, "groups": groups}
    v = torch.randn_like(torch.nn.functional.conv2d(x, w, b, **kw), requires_grad=False)
    ref = _second_order(lambda x, w, b: torch.nn.functional.conv2d(x, w, b, **kw), x, w, b, v)
    ours = _second_order(lambda x, w, b: penalty_conv2d(x, w, b, **kw), x, w, b, v)
    torch.testing.assert_close(ours[0], ref[0], atol=0, rtol=0)  # the same forward kernel
    torch.testing.assert_close(ours[1], ref[1], atol=0, rtol=0)  # and input gradient
    assert_close_at_scale(ours[2], ref[2])
    # ∂g_x/∂b = 0 for a convolution alone: the bias gets no gradient from the penalty
    assert ours[3] is None and ref[3] is None


def test_first_order_parameter_gradients_come_when_the_output_feeds_the_loss():
    """y = conv(x) used directly in a loss (a normalisation or smooth activation between
    convolutions makes the double backward reach it): ∂w and ∂b are the usual ones."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 8, 8, generator=g, requires_grad=True)
    conv = nn.Conv2d(3, 5, 3, 2, 1)
    ref = torch.autograd.grad(conv(x).tanh().sum(), (x, conv.weight, conv.bias))
    out = with_native_conv_grads(conv)(x).tanh().sum()
    ours = torch.autograd.grad(out, (x, conv.weight, conv.bias))
    for a, r in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, r, **TOL)


def test_backward_runs_in_grad_mode_exactly_when_create_graph():
    """What _PenaltyConv2d tells its two passes apart by: the engine runs a backward
    in grad mode exactly when ``create_graph=True``."""
    seen = []

    class Probe(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            seen.append(torch.is_grad_enabled())
            return g

    x = torch.randn(3, requires_grad=True)
    torch.autograd.grad(Probe.apply(x).sum(), x, create_graph=True)
    torch.autograd.grad(Probe.apply(x).sum(), x)
    Probe.apply(x).sum().backward()
    assert seen == [True, False, False]


def _critics() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    leaky = lambda: nn.LeakyReLU(0.2)  # noqa: E731
    return {
        "dcgan": DCGANCritic(3, 32, 16, "none", leaky),
        "dcgan layernorm": DCGANCritic(3, 32, 16, "layernorm", leaky),
        "dcgan elu": DCGANCritic(3, 32, 16, "none", nn.ELU),
        "resnet": CifarResNetCritic(3, 32, 16, "none", nn.ReLU),
        "resnet layernorm": CifarResNetCritic(3, 32, 16, "layernorm", nn.ReLU),
        "reflect padding": nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1, padding_mode="reflect"),
            nn.LeakyReLU(0.2),
            nn.Conv2d(8, 8, 3, padding="same"),  # string padding: PyTorch's own conv2d
            nn.Flatten(),
            nn.Linear(8 * 16 * 16, 1),
        ),
    }


def _penalty(critic: nn.Module, fwd, n: int = 6) -> tuple[torch.Tensor, list[torch.Tensor], int]:
    g = torch.Generator().manual_seed(2)
    real = torch.randn(n, 3, 32, 32, generator=g)
    fake = torch.randn(n, 3, 32, 32, generator=g)
    eps = torch.rand(n, 1, 1, 1, generator=g)
    critic.zero_grad(set_to_none=True)
    gp = losses.gradient_penalty(fwd, real, fake, eps=eps)
    with FlopCounterMode(display=False) as fc:
        gp.penalty.backward()
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in critic.parameters()]
    return gp.penalty.detach(), grads, fc.get_total_flops()


@pytest.mark.parametrize("name", list(_critics()))
@pytest.mark.parametrize("masks", [False, True], ids=["conv only", "with detached masks"])
def test_penalty_gradients_equal_plain_autograd(name, masks):
    critic = _critics()[name]
    fwd = with_detached_relu_masks(critic) if masks else critic
    p_ref, ref, _ = _penalty(critic, critic)
    p, ours, _ = _penalty(critic, with_native_conv_grads(fwd))
    torch.testing.assert_close(p, p_ref, atol=0, rtol=0)  # the forward is the same
    assert any(x.abs().sum() > 0 for x in ours)  # the penalty's graph is there
    for a, r in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, r, **TOL)


def test_double_backward_uses_the_weight_gradient_kernel_and_fewer_flops():
    """DCGAN critic (5×5, stride 2): each conv's weight gradient is one
    ``convolution_backward`` asking for the weight only, every convolution runs with a
    layer's own weight, and the enlarged-then-narrowed convolution of PyTorch's formula
    (44 % more FLOPs for those terms) is gone."""
    critic = _critics()["dcgan"]
    masked = with_detached_relu_masks(critic)
    *_, flops_before = _penalty(critic, masked)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 3, 32, 32, generator=g)
    with KernelRecorder() as rec:  # the penalty's forward, input gradient and double backward
        gp = losses.gradient_penalty(with_native_conv_grads(masked), x, x.flip(0))
        gp.penalty.backward()
    *_, flops_after = _penalty(critic, with_native_conv_grads(masked))
    convs = [m for m in critic.modules() if isinstance(m, nn.Conv2d)]
    weight_shapes = {tuple(m.weight.shape) for m in convs}
    wgrads, dgrads, others = [], [], []
    for (func, args, _), n in rec.calls.items():
        if func is aten.convolution_backward.default:
            mask = list(args[-1])
            assert mask in ([False, True, False], [True, False, False]), mask
            (wgrads if mask[1] else dgrads).extend([tuple(args[2][0])] * n)
        elif func in (aten.convolution.default, aten._convolution.default):
            others += [tuple(args[1][0])] * n
    assert sorted(wgrads) == sorted(weight_shapes)  # one weight gradient per layer
    assert sorted(dgrads) == sorted(weight_shapes)  # one input gradient per layer
    assert sorted(others) == sorted(2 * list(weight_shapes))  # forward and tangent
    assert flops_after < 0.85 * flops_before, (flops_after, flops_before)


def test_bf16_autocast_penalty_is_finite_close_and_keeps_fp32_gradients():
    critic = _critics()["dcgan"]
    fwd = with_native_conv_grads(with_detached_relu_masks(critic))
    p32, g32, _ = _penalty(critic, fwd)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        p16, g16, _ = _penalty(critic, fwd)
    assert torch.isfinite(p16)
    assert abs(float(p16) - float(p32)) <= 0.05 * float(p32) + 1e-3
    for a, r in zip(g16, g32, strict=True):
        assert a.dtype == torch.float32 and torch.isfinite(a).all()
        assert (a - r).norm() <= 0.1 * r.norm() + 1e-6


def test_no_grad_and_inputs_without_grad_fall_through_to_conv2d():
    conv = nn.Conv2d(3, 4, 3)
    x = torch.randn(2, 3, 6, 6)
    fwd = with_native_conv_grads(conv)
    with torch.no_grad():
        assert fwd(x).grad_fn is None
    y = fwd(x)  # the input needs no gradient: no penalty here, PyTorch's conv2d
    assert type(y.grad_fn).__name__ == "ConvolutionBackward0"
    torch.testing.assert_close(y, conv(x), atol=0, rtol=0)


@pytest.mark.parametrize(
    "norm,extra,tol",
    [
        ("none", [], TOL),
        ("layernorm", [], TOL),
        ("none", ["speed.channels_last=true"], TOL),
        # bf16: the two paths round differently (measured: ≤ 0.3 % of each gradient's norm)
        ("layernorm", ["trainer.precision=bf16"], 1e-2),
    ],
    ids=["none", "layernorm", "channels_last", "bf16"],
)
def test_trainer_critic_step_same_gradients_with_and_without(
    tmp_path: Path, norm: str, extra: list[str], tol: dict | float
):
    data = make_folder(tmp_path / "images", n=32)
    trainers = []
    for native in ("true", "false"):
        cfg = compose_cfg(
            "trainer.device=cpu",
            "dataset=image_folder",
            f"dataset.root={data}",
            "dataset.image_size=16",
            "dataset.channels=1",
            "dataset.num_workers=0",
            f"critic.norm={norm}",
            "critic.dim=8",
            "generator.dim=8",
            "trainer.batch_size=8",
            "trainer.progress=false",
            f"speed.native_conv_grads={native}",
            *extra,
        )
        torch.manual_seed(0)
        trainers.append(Trainer(cfg, tmp_path / f"run-{native}", torch.device("cpu")))
    a, b = trainers
    real = a.data.next_batch()
    with torch.no_grad():
        fake = a.generator(a.noise(8))
    b.rng.set_state(a.rng.get_state())
    grads = []
    for t in (a, b):
        t.critic_step(real, fake)
        grads.append([p.grad.clone() for p in t.critic.parameters()])
    for x, y in zip(*grads, strict=True):
        assert x.dtype == torch.float32
        if isinstance(tol, float):
            assert (x - y).norm() <= tol * y.norm(), ((x - y).norm(), y.norm())
        else:
            torch.testing.assert_close(x, y, **tol)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ["dcgan", "resnet layernorm"])
def test_cuda_penalty_gradients_equal_plain_autograd(name):
    """The same equality with cuDNN's kernels (TF32 off: fp32 against fp32)."""
    critic = _critics()[name].cuda()
    g = torch.Generator(device="cuda").manual_seed(2)
    real = torch.randn(6, 3, 32, 32, device="cuda", generator=g)
    fake = torch.randn(6, 3, 32, 32, device="cuda", generator=g)
    eps = torch.rand(6, 1, 1, 1, device="cuda", generator=g)
    grads = []
    with torch.backends.cudnn.flags(allow_tf32=False):
        for fwd in (critic, with_native_conv_grads(with_detached_relu_masks(critic))):
            critic.zero_grad(set_to_none=True)
            losses.gradient_penalty(fwd, real, fake, eps=eps).penalty.backward()
            grads.append(
                [p.grad if p.grad is not None else torch.zeros_like(p) for p in critic.parameters()]
            )
    for a, r in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(a, r, **TOL)


# ------------------------------------------------ the contract (module docstring)
def _param_grads_with_graph(fwd, critic: nn.Module, x: torch.Tensor, how: str):
    """First derivatives of ``D(x).square().sum()`` with respect to x and every parameter,
    built with ``create_graph=True``, then the gradient of their summed squares with
    respect to the parameters: a second-order use other than the penalty's."""
    params = list(critic.parameters())
    out = fwd(x).square().sum()
    if how == "autograd.grad":
        first = torch.autograd.grad(out, [x, *params], create_graph=True)
    else:  # loss.backward(create_graph=True): the gradients land in .grad
        critic.zero_grad(set_to_none=True)
        x.grad = None
        out.backward(create_graph=True)
        first = [x.grad, *(p.grad for p in params)]
    second = torch.autograd.grad(sum(g.square().sum() for g in first), params)
    for p in params:  # backward(create_graph=True) ties .grad to the graph: let it go
        p.grad = None
    return [g.detach() for g in first], list(second)


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
@pytest.mark.parametrize("how", ["autograd.grad", "backward"])
@pytest.mark.parametrize("name", ["dcgan", "resnet layernorm"])
def test_parameter_gradients_in_a_create_graph_pass_equal_plain_autograd(name, how):
    """A create_graph=True backward that asks for the parameters' gradients gets them, and
    their own derivatives, as plain autograd gives them (the penalty never asks)."""
    critic = _critics()[name].double()
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, 3, 32, 32, generator=g, dtype=torch.float64, requires_grad=True)
    ref_first, ref_second = _param_grads_with_graph(critic, critic, x, how)
    fwd = with_native_conv_grads(with_detached_relu_masks(critic))
    first, second = _param_grads_with_graph(fwd, critic, x, how)
    for a, r in zip([*first, *second], [*ref_first, *ref_second], strict=True):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10)
    assert float(second[0].abs().sum()) > 0  # the first layer's weight: a real second order


def test_the_penalty_pass_computes_no_parameter_gradient():
    """autograd.grad(D(x̂), x̂, create_graph=True) runs no weight-gradient kernel: the
    engine will not use one there."""
    conv = nn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    y = with_native_conv_grads(conv)(x)
    with KernelRecorder() as rec:
        torch.autograd.grad(y.square().sum(), x, create_graph=True)
    masks = [list(args[-1]) for (f, args, _) in rec.calls if f is aten.convolution_backward.default]
    assert masks == [[True, False, False]]


def test_an_in_place_change_of_the_weight_before_the_backward_raises():
    """The weight is saved with save_for_backward: an update between the forward and the
    backward is autograd's in-place error, not a gradient against the new weight."""
    conv = nn.Conv2d(3, 4, 3)
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    y = with_native_conv_grads(conv)(x)
    with torch.no_grad():
        conv.weight.add_(1.0)  # as an optimizer step would
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        torch.autograd.grad(y.sum(), x, create_graph=True)


def test_a_third_derivative_raises():
    """The double backward is once-differentiable: differentiating it again is autograd's
    error, not a silently wrong third derivative (autograd.grad calls the weight unused)."""
    conv = nn.Conv2d(3, 4, 3)
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    (gx,) = torch.autograd.grad(with_native_conv_grads(conv)(x).sum(), x, create_graph=True)
    (gw,) = torch.autograd.grad(gx.square().sum(), conv.weight, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        gw.square().sum().backward()
    with pytest.raises(RuntimeError, match="appears to not have been used in the graph"):
        torch.autograd.grad(gw.square().sum(), conv.weight)
