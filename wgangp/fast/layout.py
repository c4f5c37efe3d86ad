"""The memory format of image models: ``speed.channels_last = auto | true | false``.

Which layout is faster depends on the convolution kernels the machine runs, not on
the model. On the CPU, PyTorch's convolutions are oneDNN's: its AVX-512 kernels are much
faster on channels-last (NHWC) maps, its AVX2 kernels are as fast or faster on NCHW
ones (the measurements are in docs/performance.md). So ``auto`` picks channels-last on a CPU
whose kernels are AVX-512 ones (:func:`cpu_prefers_channels_last`) and NCHW on other
CPUs and on CUDA (set ``true`` to try cuDNN's NHWC kernels).

The models are written in plain layers; :func:`use_memory_format` puts built models in
the chosen format and, for channels-last, swaps the few layers where a reshape between
a flat vector and a 4-D map would copy the map into the other layout on every call
(:func:`convert_for_channels_last`). The parameters and state-dict keys stay the same.

Layouts change float rounding only (different kernels sum in different orders); a
resumed run recomputes the layout, and :func:`match_param_layouts` puts optimizer
state saved under another layout into the parameters' layout.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

SETTINGS = ("auto", "true", "false")

# oneDNN's ISA cap (https://uxlfoundation.github.io/oneDNN/dev_guide_cpu_dispatcher_control.html):
# values that keep it off AVX-512 kernels
_BELOW_AVX512 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2")


def normalize_setting(value: object) -> str:
    """``speed.channels_last`` as one of :data:`SETTINGS` (booleans arrive as
    ``True``/``False`` from the command line); anything else is returned as given."""
    return str(value).lower() if str(value).lower() in SETTINGS else str(value)


def cpu_prefers_channels_last() -> bool:
    """Whether this CPU's convolution kernels are oneDNN's AVX-512 ones.

    ATen's dispatch level (``torch.backends.cpu.get_cpu_capability``, which honours
    ``ATEN_CPU_CAPABILITY``) must be AVX-512 and oneDNN must not be capped below it
    (``ONEDNN_MAX_CPU_ISA`` or its old name ``DNNL_MAX_CPU_ISA``).
    """
    if torch.backends.cpu.get_cpu_capability() != "AVX512":
        return False
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or ""
    return cap.upper() not in _BELOW_AVX512


def resolve_memory_format(
    setting: object, device: torch.device, sample_shape: tuple[int, ...]
) -> torch.memory_format:
    """The memory format for a model of ``sample_shape`` samples on ``device``.

    Only image models (samples ``(C, H, W)``) have a layout to choose.
    """
    if len(sample_shape) != 3:
        return torch.contiguous_format
    setting = normalize_setting(setting)
    if setting not in SETTINGS:
        raise ValueError(f"speed.channels_last={setting!r}: expected one of {SETTINGS}")
    if setting == "auto":
        use = device.type == "cpu" and cpu_prefers_channels_last()
    else:
        use = setting == "true"
    return torch.channels_last if use else torch.contiguous_format


def is_channels_last(t: torch.Tensor) -> bool:
    """Whether ``t`` is a 4-D tensor laid out NHWC and not also NCHW-contiguous (a map
    whose H·W or C is 1 is both, and then either layout reads it as it lies)."""
    return (
        t.dim() == 4
        and t.is_contiguous(memory_format=torch.channels_last)
        and not t.is_contiguous()
    )


class MapLinear(nn.Linear):
    """``nn.Linear`` on a feature map's (C, H, W) features, flattened channel-major,
    in whichever memory layout the map lies.

    ``linear(x.flatten(1))`` copies a channels-last map into NCHW order, and its gradient
    comes back NCHW, so the rectifier before it runs its backward on two layouts at once
    (a strided kernel, much slower than the same op on one layout). A channels-last map
    is read here as it lies, as (N, H·W·C), against the weight's columns permuted to
    (H, W, C) order: the same function (its sum runs in another order, equal to float
    rounding) with the same parameters and state dict. Any other input is flattened as
    ``nn.Linear`` would see it after ``flatten(1)``.
    """

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        if not is_channels_last(x):
            return super().forward(x.flatten(1))
        n, c, h, w = x.shape
        weight = self.weight.view(-1, c, h, w).permute(0, 2, 3, 1)
        features = x.permute(0, 2, 3, 1).reshape(n, h * w * c)
        return F.linear(features, weight.reshape(self.out_features, -1), self.bias)


class MapFlatten(nn.Flatten):
    """``nn.Flatten`` that hands a channels-last map on as it lies, for a
    :class:`MapLinear` to read; any other input is flattened."""

    def forward(self, x: Tensor) -> Tensor:
        return x if is_channels_last(x) else super().forward(x)


class ChannelsLastUnflatten(nn.Unflatten):
    """``nn.Unflatten`` into a 4-D map laid out channels-last.

    A linear layer's output reshaped to a map is NCHW; a channels-last model's next
    convolution would reorder it on every call, and the norm and activation between
    them would run on the other layout. Copying the small map once is cheaper.
    """

    def forward(self, x: Tensor) -> Tensor:
        h = super().forward(x)
        return h.contiguous(memory_format=torch.channels_last) if h.dim() == 4 else h


def _flattens_a_map(flatten: nn.Flatten) -> bool:
    return flatten.start_dim == 1 and flatten.end_dim == -1


def convert_for_channels_last(model: nn.Module) -> nn.Module:
    """``model`` (changed in place and returned) with the layers that reshape between flat
    vectors and 4-D maps made layout-aware, for a model in channels-last format.

    * In a module with an ``nn.Flatten()`` child (all but the batch dimension), that
      flatten becomes a :class:`MapFlatten` and every ``nn.Linear`` child a
      :class:`MapLinear`: the critics' heads read the final map as it lies (every linear
      child of such a module must read the flattened map or a flat vector, which
      :class:`MapLinear` treats as ``nn.Linear`` does).
    * An ``nn.Unflatten`` into (C, H, W) becomes a :class:`ChannelsLastUnflatten`: the
      generator's reshaped linear output takes the convolutions' layout.

    Each layer keeps its object, parameters, hooks and attributes (only its class
    changes, to a subclass that adds a forward and no state), so state dicts, parameter
    lists and optimizers are unaffected. Idempotent.
    """
    for module in list(model.modules()):
        children = list(module.named_children())
        flattens = [c for _, c in children if type(c) is nn.Flatten and _flattens_a_map(c)]
        if flattens:
            for _, child in children:
                if child in flattens:
                    child.__class__ = MapFlatten
                elif type(child) is nn.Linear:
                    child.__class__ = MapLinear
        for _, child in children:
            if type(child) is nn.Unflatten and len(child.unflattened_size) == 3:
                child.__class__ = ChannelsLastUnflatten
    return model


def use_memory_format(memory_format: torch.memory_format, *models: nn.Module) -> None:
    """Put ``models`` in ``memory_format`` (their 4-D parameters and buffers); for
    channels-last also :func:`convert_for_channels_last` them."""
    for model in models:
        model.to(memory_format=memory_format)
        if memory_format == torch.channels_last:
            convert_for_channels_last(model)


def match_param_layouts(opt: torch.optim.Optimizer) -> int:
    """Give each optimizer state tensor its parameter's layout; returns how many moved.

    A checkpoint written under one memory format and loaded under the other leaves
    Adam's moments in the old strides, and fused Adam then pairs elements by memory
    position, not by index: the update is silently wrong (``torch.optim.Adam(fused=True)``
    on the CPU, torch 2.14: one step at lr 1e-4 was off by up to 1.6e-4 against a mean
    step of 6.4e-5; foreach and for-loop Adam were right). Copying them into the
    parameter's layout keeps every value where it belongs.
    """
    moved = 0
    for group in opt.param_groups:
        for p in group["params"]:
            state = opt.state.get(p, {})
            for key, value in state.items():
                if (
                    isinstance(value, torch.Tensor)
                    and value.shape == p.shape
                    and value.stride() != p.stride()
                ):
                    state[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)
                    moved += 1
    return moved


__all__ = [
    "SETTINGS",
    "ChannelsLastUnflatten",
    "MapFlatten",
    "MapLinear",
    "convert_for_channels_last",
    "cpu_prefers_channels_last",
    "is_channels_last",
    "match_param_layouts",
    "normalize_setting",
    "resolve_memory_format",
    "use_memory_format",
]
