"""trainer.subpixel_convs: few-channel strided transposed convolutions as one stride-1
convolution and a pixel shuffle (wgangp/fast/subpixel.py). Same values and gradients as
PyTorch's transposed convolution (fp64: to 1e-10; fp32: to rounding), used exactly
where it applies, and wired into the generator and the penalty's input gradient."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from tests.conftest import compose_cfg
from tests.test_images_e2e import make_folder, tiny_rgb
from wgangp.config.validate import validate
from wgangp.core import losses
from wgangp.core.step import with_detached_relu_masks
from wgangp.errors import ConfigError
from wgangp.fast import subpixel
from wgangp.fast.conv_grad import with_native_conv_grads
from wgangp.models.dcgan import DCGANCritic
from wgangp.train.trainer import Trainer

aten = torch.ops.aten


class _ConvCalls(TorchDispatchMode):
    """Records (transposed, weight shape) of every ATen convolution, and pixel shuffles."""

    def __init__(self) -> None:
        super().__init__()
        self.convs: list[tuple[bool, tuple[int, ...]]] = []
        self.shuffles = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        if func is aten.convolution.default:
            self.convs.append((bool(args[6]), tuple(args[1].shape)))
        elif func is aten.convolution_backward.default:
            self.convs.append((bool(args[7]), tuple(args[2].shape)))
        elif func is aten.pixel_shuffle.default:
            self.shuffles += 1
        return func(*args, **(kwargs or {}))


# (kernel, stride, padding, output_padding): the DCGAN layers (5, 2, 2, 1), Radford et
# al.'s (4, 2, 1, 0), kernels smaller than the stride, padding ≥ kernel, stride 3,
# and per-axis padding
CASES = [
    (k, s, p, op)
    for k, s, p, op in itertools.product([1, 2, 3, 4, 5, 6], [2, 3], [0, 1, 2, 5], [0, 1, 2])
    if op < s
] + [((5, 4), 2, (2, 1), (1, 0)), ((3, 6), 3, (0, 4), (2, 1))]


@pytest.mark.parametrize("k,s,p,op", CASES)
def test_equals_conv_transpose2d(k, s, p, op):
    g = torch.Generator().manual_seed(0)
    kh, kw = (k, k) if isinstance(k, int) else k
    x = torch.randn(2, 5, 4, 7, generator=g, dtype=torch.float64)
    w = torch.randn(5, 3, kh, kw, generator=g, dtype=torch.float64)
    b = torch.randn(3, generator=g, dtype=torch.float64)
    try:
        ref = F.conv_transpose2d(x, w, b, stride=s, padding=p, output_padding=op)
    except RuntimeError:  # padding that leaves no output: PyTorch refuses, nothing to compare
        pytest.skip("no output")
    out = subpixel.conv_transpose2d_subpixel(x, w, b, s, p, ref.shape[2:])
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=0)


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_fp32_equals_to_rounding_and_keeps_the_memory_format(channels, fmt):
    """The DCGAN generator's output layer at its real size (64 → 1–4 channels, 16 → 32 px)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 64, 16, 16, generator=g).contiguous(memory_format=fmt)
    w = torch.randn(64, channels, 5, 5, generator=g).contiguous(memory_format=fmt)
    b = torch.randn(channels, generator=g)
    ref = F.conv_transpose2d(x, w, b, stride=2, padding=2, output_padding=1)
    out = subpixel.conv_transpose2d_subpixel(x, w, b, 2, 2, (32, 32))
    torch.testing.assert_close(out, ref, atol=1e-5 * float(ref.abs().max()), rtol=1e-5)
    assert out.is_contiguous(memory_format=fmt)


def test_gradients_by_gradcheck_and_against_conv_transpose2d():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, generator=g, dtype=torch.float64, requires_grad=True)
    size = F.conv_transpose2d(x, w, b, stride=2, padding=2, output_padding=1).shape[2:]
    fn = lambda x, w, b: subpixel.conv_transpose2d_subpixel(x, w, b, 2, 2, size)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b))
    v = torch.randn(2, 2, *size, generator=g, dtype=torch.float64)
    ours = torch.autograd.grad((fn(x, w, b) * v).sum(), (x, w, b))
    ref = F.conv_transpose2d(x, w, b, stride=2, padding=2, output_padding=1)
    for a, r in zip(ours, torch.autograd.grad((ref * v).sum(), (x, w, b)), strict=True):
        torch.testing.assert_close(a, r, atol=1e-10, rtol=0)


@pytest.mark.parametrize(
    "out_channels,stride,dilation,groups,expected",
    [
        (3, 2, 1, 1, True),
        (1, (3, 3), 1, 1, True),
        (4, 2, 1, 1, True),
        (5, 2, 1, 1, False),  # from 8 channels on the sub-pixel form is slower (measured)
        (3, 1, 1, 1, False),  # stride 1: no phases to split
        (3, (2, 1), 1, 1, False),  # pixel_shuffle is square
        (3, 2, 2, 1, False),
        (4, 2, 1, 2, False),
    ],
)
def test_applies(out_channels, stride, dilation, groups, expected):
    assert subpixel.applies(out_channels, stride, dilation, groups) is expected


def test_mode_rewrites_exactly_the_layers_that_apply():
    torch.manual_seed(0)
    gen = nn.Sequential(
        nn.ConvTranspose2d(8, 8, 5, 2, 2, output_padding=1),  # 8 outputs: kept
        nn.ReLU(),
        nn.ConvTranspose2d(8, 3, 4, 2, 1),  # 3 outputs, stride 2: rewritten
        nn.ConvTranspose2d(3, 3, 3, 1, 1),  # stride 1: kept
    )
    z = torch.randn(2, 8, 4, 4)
    with _ConvCalls() as calls:
        out = subpixel.with_subpixel_convs(gen)(z)
    assert calls.convs == [(True, (8, 8, 5, 5)), (False, (12, 8, 3, 3)), (True, (3, 3, 3, 3))]
    assert calls.shuffles == 1
    torch.testing.assert_close(out, gen(z), atol=1e-5, rtol=1e-5)
    # keyword arguments reach it too
    x, w = torch.randn(2, 8, 4, 4), gen[2].weight
    with subpixel._SubpixelTransposedConvs():
        kw = F.conv_transpose2d(x, weight=w, stride=2, padding=1)
    torch.testing.assert_close(kw, F.conv_transpose2d(x, w, stride=2, padding=1), **TOL32)


TOL32 = {"atol": 1e-5, "rtol": 1e-5}


@pytest.mark.parametrize(
    "setting,device,expected",
    [
        ("auto", "cpu", True),
        ("auto", "cuda", False),  # not measured with cuDNN
        ("true", "cuda", True),
        (True, "cpu", True),  # a bool from the command line
        ("false", "cpu", False),
        ("False", "cpu", False),
    ],
)
def test_resolve(setting, device, expected):
    assert subpixel.resolve(setting, torch.device(device)) is expected


def test_bad_setting_is_a_config_error():
    with pytest.raises(ConfigError) as e:
        validate(compose_cfg("trainer.subpixel_convs=sometimes"))
    assert str(e.value) == (
        "invalid value for trainer.subpixel_convs: 'sometimes' (allowed: auto | true | false); "
        "auto uses the sub-pixel form of few-channel transposed convolutions on the CPU"
    )


def test_penalty_input_gradient_uses_it_and_gradients_equal_plain_autograd():
    """The critic's first layer (3 → 16 channels, 5×5 stride 2): its input gradient in the
    penalty runs in the sub-pixel form, and the penalty and its weight gradients are
    PyTorch's to float rounding."""
    torch.manual_seed(0)
    critic = DCGANCritic(3, 32, 16, "none", lambda: nn.LeakyReLU(0.2))
    g = torch.Generator().manual_seed(2)
    real, fake = torch.randn(2, 6, 3, 32, 32, generator=g)
    eps = torch.rand(6, 1, 1, 1, generator=g)
    results = []
    for fwd in (critic, with_native_conv_grads(with_detached_relu_masks(critic), subpixel=True)):
        critic.zero_grad(set_to_none=True)
        with _ConvCalls() as calls:
            gp = losses.gradient_penalty(fwd, real, fake, eps=eps)
        gp.penalty.backward()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in critic.parameters()]
        results.append((gp.penalty.detach(), grads, calls))
    (p_ref, ref, ref_calls), (p, ours, calls) = results
    first = tuple(critic.body[0].weight.shape)
    assert first == (16, 3, 5, 5)
    assert (False, first) in ref_calls.convs  # PyTorch: the input gradient by conv backward
    assert ref_calls.shuffles == 0
    assert calls.shuffles == 1 and (False, (12, 16, 3, 3)) in calls.convs
    torch.testing.assert_close(p, p_ref, rtol=1e-5, atol=0)
    for a, r in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, r, atol=1e-5 * float(r.abs().max()), rtol=1e-5)


def _image_trainer(tmp_path: Path, setting: str) -> Trainer:
    data = make_folder(tmp_path / "images", n=32)
    cfg = compose_cfg("trainer.device=cpu", *tiny_rgb(data), f"trainer.subpixel_convs={setting}")
    validate(cfg)
    torch.manual_seed(0)
    return Trainer(cfg, tmp_path / f"run-{setting}", torch.device("cpu"))


def test_trainer_generator_and_critic_step_use_it_with_the_same_numbers(tmp_path):
    """auto on the CPU: the generator's output layer (8 → 3 channels) and the penalty's
    first-layer input gradient run in the sub-pixel form; fakes, losses and gradients
    equal the ``false`` step's to float rounding."""
    on, off = _image_trainer(tmp_path, "auto"), _image_trainer(tmp_path, "false")
    z = on.noise(8)
    with _ConvCalls() as calls:
        fake_on = on.generator_fwd(z)
    assert calls.shuffles == 1 and not any(t and s[1] == 3 for t, s in calls.convs)
    with _ConvCalls() as calls:
        fake_off = off.generator_fwd(z)
    assert calls.shuffles == 0
    torch.testing.assert_close(fake_on, fake_off, **TOL32)
    real = on.data.next_batch()
    off.rng.set_state(on.rng.get_state())
    grads = []
    for t in (on, off):
        with _ConvCalls() as calls:
            t.critic_step(real, fake_off.detach())
        grads.append([p.grad.clone() for p in t.critic.parameters()])
        assert calls.shuffles == (1 if t is on else 0)
    for a, r in zip(*grads, strict=True):
        torch.testing.assert_close(a, r, atol=1e-5 * float(r.abs().max()), rtol=1e-5)
    # the generator step: its output layer and, in the backward through the frozen
    # critic, that critic's first-layer input gradient; the same generator gradients
    off.generator.load_state_dict(on.generator.state_dict())
    off.critic.load_state_dict(on.critic.state_dict())
    z = on.noise(8)
    grads = []
    for t in (on, off):
        t.opt_g.zero_grad(set_to_none=True)
        with _ConvCalls() as calls:
            loss = losses.generator_loss(t.critic_frozen_fwd(t.generator_fwd(z)))
            loss.backward()
        assert calls.shuffles == (2 if t is on else 0)
        assert any(t and s[1] == 3 for t, s in calls.convs) == (t is off)
        assert all(p.grad is None for p in t.critic.parameters() if not p.requires_grad)
        grads.append([p.grad.clone() for p in t.generator.parameters()])
    # at the scale of the largest gradient: the batch norms' shift gradients are sums
    # that cancel to ~1e-7 here, where float rounding of their terms is ~1e-8
    scale = max(float(r.abs().max()) for r in grads[1])
    for a, r in zip(*grads, strict=True):
        torch.testing.assert_close(a, r, atol=1e-5 * scale, rtol=1e-5)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_equals_conv_transpose2d_and_is_graph_safe():
    """cuDNN, TF32 off: the generator's output layer at its real size, values and
    gradients; and once warmed up, a call makes no host-to-device copy (the tap index is
    cached per device), so it can sit inside a captured CUDA graph."""
    g = torch.Generator(device="cuda").manual_seed(3)
    x = torch.randn(8, 64, 16, 16, device="cuda", generator=g, requires_grad=True)
    w = torch.randn(64, 3, 5, 5, device="cuda", generator=g, requires_grad=True)
    b = torch.randn(3, device="cuda", generator=g, requires_grad=True)
    with torch.backends.cudnn.flags(allow_tf32=False):
        ref = F.conv_transpose2d(x, w, b, stride=2, padding=2, output_padding=1)
        out = subpixel.conv_transpose2d_subpixel(x, w, b, 2, 2, (32, 32))
        v = torch.randn_like(ref)
        ours = torch.autograd.grad((out * v).sum(), (x, w, b))
        theirs = torch.autograd.grad((ref * v).sum(), (x, w, b))
    torch.testing.assert_close(out, ref, **TOL32)
    for a, r in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, r, atol=1e-5 * float(r.abs().max()), rtol=1e-5)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.backends.cudnn.flags(allow_tf32=False):
        with torch.cuda.stream(stream):
            subpixel.conv_transpose2d_subpixel(x, w, b, 2, 2, (32, 32))  # warm-up
        torch.cuda.current_stream().wait_stream(stream)
        with torch.cuda.graph(graph):
            static = subpixel.conv_transpose2d_subpixel(x, w, b, 2, 2, (32, 32))
        graph.replay()
        torch.cuda.synchronize()
        torch.testing.assert_close(static, ref.detach(), **TOL32)
