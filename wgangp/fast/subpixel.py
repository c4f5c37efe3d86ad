r"""Strided transposed convolutions with few output channels, as a sub-pixel convolution.

``trainer.subpixel_convs = auto | true | false``. A DCGAN step runs two transposed
convolutions whose output has the image's 1–4 channels: the generator's last layer,
and the input gradient of the critic's first layer, inside the penalty and in the
generator step (the gradient of a convolution with respect to its input *is* a
transposed convolution). oneDNN
vectorises over output channels, so with 3 of them its kernels run at ~30 GFLOP/s on
the 2-core AVX-512 host where the other layers of the same step reach 140–230
(``docs/speed.md``).

The same map is a stride-1 convolution followed by a pixel shuffle (the "sub-pixel
convolution" of Shi et al. 2016). Along one spatial axis, with stride :math:`s`,
kernel :math:`K` and padding :math:`p`, output row :math:`i = s m + r` (phase
:math:`r \in [0, s)`) of :math:`y = x \star^\top w` is

.. math::  y[s m + r] = \sum_e w[r + p - s e]\; x[m + e],
           \qquad e_{\min} = \lceil (p - K + 1)/s \rceil \le e \le \lfloor (s - 1 + p)/s \rfloor,

taps outside :math:`[0, K)` being zero. For each phase that is a stride-1 correlation of
:math:`x` with :math:`T = e_{\max} - e_{\min} + 1` taps, so all :math:`s^2` phases of a
2-D layer are one convolution with :math:`C_{out} s^2` output channels (12 for RGB at
stride 2) and a :math:`T \times T` kernel gathered from :math:`w`, and
``pixel_shuffle`` interleaves the phases. It does more arithmetic (a 5×5 stride-2 layer:
9 taps per phase where the transposed convolution averages 6.25) on a shape the
kernels handle well: 2–2.5× faster for 1–4 output channels on that host, slower from 8
on (``MAX_OUT_CHANNELS``). The result equals ``F.conv_transpose2d`` up to float
rounding (a different summation order; ``tests/test_subpixel.py``), and autograd
differentiates it like any convolution.

``auto`` turns it on on the CPU only: cuDNN has not been measured with it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor
from torch.overrides import TorchFunctionMode

from wgangp.core.step import _arg, _pair
from wgangp.fast.layout import is_channels_last

SETTINGS = ("auto", "true", "false")

#: transposed convolutions with at most this many output channels are rewritten
MAX_OUT_CHANNELS = 4


def normalize_setting(value: object) -> str:
    """``trainer.subpixel_convs`` as one of :data:`SETTINGS` (booleans arrive as
    ``True``/``False`` from the command line); anything else is returned as given."""
    return str(value).lower() if str(value).lower() in SETTINGS else str(value)


def resolve(setting: object, device: torch.device) -> bool:
    """Whether the setting turns the rewrite on for ``device`` (``auto``: the CPU)."""
    setting = normalize_setting(setting)
    if setting not in SETTINGS:
        raise ValueError(f"trainer.subpixel_convs={setting!r}: expected one of {SETTINGS}")
    return device.type == "cpu" if setting == "auto" else setting == "true"


def applies(
    out_channels: int,
    stride: int | Sequence[int],
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> bool:
    """Whether a transposed convolution of this shape is rewritten: few output channels,
    the same stride > 1 on both axes (``pixel_shuffle`` is square), no dilation, no
    groups."""
    sh, sw = _pair(stride)
    return (
        out_channels <= MAX_OUT_CHANNELS
        and sh == sw > 1
        and _pair(dilation) == [1, 1]
        and groups == 1
    )


@functools.lru_cache(maxsize=64)
def _taps(kernel: int, stride: int, padding: int) -> tuple[tuple[int, ...], tuple[bool, ...], int]:
    """Per phase ``r`` and tap ``t``: the kernel index ``r + p − s·e`` (``e = t + e_min``),
    whether it lies inside the kernel, and ``e_min``; flattened over ``(r, t)``."""
    e_min = math.ceil((padding - kernel + 1) / stride)
    e_max = (stride - 1 + padding) // stride
    index, inside = [], []
    for r in range(stride):
        for e in range(e_min, e_max + 1):
            k = r + padding - stride * e
            index.append(k if 0 <= k < kernel else 0)
            inside.append(0 <= k < kernel)
    return tuple(index), tuple(inside), e_min


@functools.lru_cache(maxsize=64)
def _gather(
    kernel: tuple[int, int], stride: int, padding: tuple[int, int], device: torch.device
) -> tuple[Tensor, Tensor, tuple[int, int], tuple[int, int]]:
    """Index into the flattened kernel for every (phase, tap) of both axes, whether it lies
    inside the kernel, ``e_min`` and the taps per phase ``T`` per axis; made once per
    shape and device, so a step builds no tensor from host data (nothing to copy inside a
    CUDA-graph capture)."""
    kh, kw = kernel
    ih, okh, eh = _taps(kh, stride, padding[0])
    iw, okw, ew = _taps(kw, stride, padding[1])
    index = torch.tensor(ih).view(-1, 1) * kw + torch.tensor(iw)
    inside = torch.tensor(okh).view(-1, 1) & torch.tensor(okw)
    taps = (len(ih) // stride, len(iw) // stride)
    return index.flatten().to(device), inside.flatten().to(device), (eh, ew), taps


def _phase_weight(w: Tensor, stride: int, padding: tuple[int, int]) -> tuple[Tensor, int, int]:
    """The ``(C_out·s², C_in, T_h, T_w)`` stride-1 kernel of all phases (channel
    ``c·s² + r_h·s + r_w``, ``pixel_shuffle``'s order) and ``e_min`` per axis."""
    c_in, c_out, kh, kw = w.shape
    s = stride
    index, inside, (eh, ew), (th, tw) = _gather((kh, kw), s, padding, w.device)
    taps = w.reshape(c_in, c_out, kh * kw)[:, :, index]
    taps = taps * inside  # taps past the kernel's edge are zero
    taps = taps.view(c_in, c_out, s, th, s, tw).permute(1, 2, 4, 0, 3, 5)
    return taps.reshape(c_out * s * s, c_in, th, tw), eh, ew


def conv_transpose2d_subpixel(
    x: Tensor,
    w: Tensor,
    bias: Tensor | None,
    stride: int | Sequence[int],
    padding: int | Sequence[int],
    output_size: Sequence[int],
) -> Tensor:
    """``F.conv_transpose2d(x, w, bias, stride, padding)`` with output ``(H, W) =
    output_size``, computed as one stride-1 convolution and ``pixel_shuffle``.

    ``w`` has the transposed convolution's shape ``(C_in, C_out, K_h, K_w)``: for the input
    gradient of ``conv2d(·, w)`` pass that convolution's weight as it is. The output takes
    ``x``'s memory format.
    """
    s = _pair(stride)[0]
    pad = tuple(_pair(padding))  # a cache key of _gather
    out_h, out_w = int(output_size[0]), int(output_size[1])
    weight, eh, ew = _phase_weight(w, s, pad)
    if is_channels_last(x):
        weight = weight.contiguous(memory_format=torch.channels_last)
    th, tw = weight.shape[2:]
    # rows m = 0..M−1 of each phase read x[m + e], e_min ≤ e ≤ e_min + T − 1: pad x by
    # −e_min in front and what the last row needs behind, symmetrically (conv2d's own
    # padding, no copy of x), and drop the extra rows of the output
    m_h, m_w = -(-out_h // s), -(-out_w // s)
    front = (-eh, -ew)
    back = (m_h + th - 1 + eh - x.shape[2], m_w + tw - 1 + ew - x.shape[3])
    pad_h, pad_w = max(front[0], back[0], 0), max(front[1], back[1], 0)
    b = None if bias is None else bias.repeat_interleave(s * s)
    y = F.conv2d(x, weight, b, padding=(pad_h, pad_w))
    oh, ow = pad_h - front[0], pad_w - front[1]
    y = F.pixel_shuffle(y[:, :, oh : oh + m_h, ow : ow + m_w], s)
    return y[:, :, :out_h, :out_w]


class _SubpixelTransposedConvs(TorchFunctionMode):
    """Inside this mode ``F.conv_transpose2d`` calls that :func:`applies` to run
    :func:`conv_transpose2d_subpixel`; the others run as they are."""

    _CONV_T = {F.conv_transpose2d, torch.conv_transpose2d}

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        if func in self._CONV_T:
            # F.conv_transpose2d(input, weight, bias, stride, padding, output_padding,
            # groups, dilation)
            x, w = _arg(args, kwargs, 0, "input", None), _arg(args, kwargs, 1, "weight", None)
            stride = _pair(_arg(args, kwargs, 3, "stride", 1))
            groups = int(_arg(args, kwargs, 6, "groups", 1))
            dilation = _arg(args, kwargs, 7, "dilation", 1)
            if x.dim() == 4 and applies(w.shape[1] * groups, stride, dilation, groups):
                padding = _pair(_arg(args, kwargs, 4, "padding", 0))
                out_pad = _pair(_arg(args, kwargs, 5, "output_padding", 0))
                size = [
                    (x.shape[2 + i] - 1) * stride[i] - 2 * padding[i] + w.shape[2 + i] + out_pad[i]
                    for i in range(2)
                ]
                bias = _arg(args, kwargs, 2, "bias", None)
                return conv_transpose2d_subpixel(x, w, bias, stride, padding, size)
        return func(*args, **kwargs)


def with_subpixel_convs(module: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """``module`` with its few-channel strided transposed convolutions rewritten."""

    def forward(*args: Any, **kwargs: Any) -> Tensor:  # noqa: ANN401
        with _SubpixelTransposedConvs():
            return module(*args, **kwargs)

    return forward


__all__ = [
    "MAX_OUT_CHANNELS",
    "SETTINGS",
    "applies",
    "conv_transpose2d_subpixel",
    "normalize_setting",
    "resolve",
    "with_subpixel_convs",
]
