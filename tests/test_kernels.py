"""scripts/benchtools/kernels.py: which kernels a step records, and that the replay runs
exactly those."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch import nn

from scripts.benchtools.kernels import (
    KernelRecorder,
    OpCounter,
    _TensorSpec,
    count_ops,
    kernel_ms,
    replay_ms,
)
from wgangp.core import losses

aten = torch.ops.aten


def _ops(rec: KernelRecorder) -> Counter[str]:
    out: Counter[str] = Counter()
    for (func, _, _), n in rec.calls.items():
        out[str(func)] += n
    return out


def test_records_forward_and_backward_of_a_conv_with_their_layout():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 8, 8)
    with KernelRecorder() as rec:
        conv(x).sum().backward()
    assert _ops(rec) == {"aten.convolution.default": 1, "aten.convolution_backward.default": 1}
    (fwd,) = [k for k in rec.calls if k[0] is aten.convolution.default]
    assert fwd[1][0] == ((2, 3, 8, 8), (192, 64, 8, 1), torch.float32, torch.device("cpu"))
    (bwd,) = [k for k in rec.calls if k[0] is aten.convolution_backward.default]
    # the input needs no gradient: only weight and bias gradients are asked for
    assert bwd[1][-1] == (False, True, True)


def test_records_the_double_backward_of_the_penalty():
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Conv2d(1, 4, 3), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(36, 1))
    real, fake = torch.randn(3, 1, 5, 5), torch.randn(3, 1, 5, 5)
    with KernelRecorder() as first_order:
        losses.gradient_penalty(critic, real, fake)
    with KernelRecorder() as full:
        losses.gradient_penalty(critic, real, fake).penalty.backward()
    first, both = _ops(first_order), _ops(full)
    # forward: one convolution and one addmm; input gradient: one convolution_backward
    # and one mm; the double backward adds convolutions and matrix multiplies of its own
    assert first == {
        "aten.convolution.default": 1,
        "aten.addmm.default": 1,
        "aten.convolution_backward.default": 1,
        "aten.mm.default": 1,
    }
    assert both["aten.convolution.default"] > first["aten.convolution.default"]
    assert sum(both.values()) > sum(first.values())


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.randn(2, 3, 4, 5),
        lambda: torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last),
        lambda: torch.randn(2, 1).expand(2, 7),  # the gradient of a mean: stride 0
        lambda: torch.randn(6, 4).t(),
    ],
)
def test_replay_tensors_have_the_recorded_layout(make):
    x = make()
    spec = _TensorSpec((tuple(x.shape), tuple(x.stride()), x.dtype, x.device))
    y = spec.make()
    assert y.shape == x.shape and y.stride() == x.stride() and y.dtype == x.dtype
    assert torch.isfinite(y).all()


def test_replay_runs_each_distinct_call_once_plus_repeats():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3)
    x = torch.randn(2, 3, 8, 8)
    with KernelRecorder() as rec:
        for _ in range(3):  # three identical forwards: one entry counted 3 times
            conv(x)
    assert list(rec.calls.values()) == [3]
    with KernelRecorder() as replayed:
        ms = replay_ms(rec.calls, repeats=4)
    assert list(replayed.calls.values()) == [1 + 4]  # warm-up + repeats, not × count
    assert next(iter(replayed.calls)) == next(iter(rec.calls))  # the same op and layout
    assert ms > 0


def test_kernel_ms_counts_the_calls_of_a_function():
    lin = nn.Linear(8, 8)
    x = torch.randn(4, 8, requires_grad=True)
    ms, n = kernel_ms(lambda: lin(x).sum().backward(), repeats=2)
    # forward addmm, then mm for the input gradient and mm for the weight gradient
    assert n == 3 and ms > 0


def test_count_ops_counts_work_not_views_or_allocations():
    x = torch.randn(4, 3, requires_grad=True)

    def fn() -> None:
        x.grad = None  # (a second backward would add into it: one more op)
        y = (x * 2).t().contiguous().view(-1)  # mul, clone; t and view are views
        torch.empty(5)  # an allocation: no kernel
        y.detach().sum()  # sum
        (x * x).sum().backward()  # mul, sum; backward: ones_like, expand (a view), 2 mul, add

    with OpCounter() as c:
        fn()
    assert dict(c.ops) == {
        "mul.Tensor": 4,
        "clone.default": 1,
        "sum.default": 2,
        "ones_like.default": 1,
        "add.Tensor": 1,
    }
    assert count_ops(fn) == 9
