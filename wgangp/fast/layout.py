"""The memory format of image models: ``speed.channels_last = auto | true | false``.

Which layout is faster depends on the convolution kernels the machine runs, not on
the model. On the CPU, PyTorch's convolutions are oneDNN's, and oneDNN has two kinds:

* AVX-512 kernels: channels-last (NHWC) is much faster. Measured on a 2-core AVX-512
  Xeon (``scripts/bench.py`` and interleaved A/Bs of our step, 2026-11-25): DCGAN 32×32
  1029 → 956 ms per generator iteration, the width-64 reference DCGAN 747 → 662 ms,
  ResNet 32×32 3144 → 2399 ms. The NCHW input gradient of a 5×5 stride-2 layer takes
  twice as long as the NHWC one there (19.5 vs 10.7 ms at batch 128), and the result
  is copied back to NCHW on top.
* AVX2 kernels: NCHW is as fast or faster. The same machine with oneDNN held to AVX2
  (``ONEDNN_MAX_CPU_ISA=AVX2``) ran DCGAN 32×32 at 1537 ms in NCHW and 1578 ms in NHWC,
  and an earlier 2-core machine measured channels-last at 0.99× for the critic update.

So ``auto`` picks channels-last on a CPU whose kernels are AVX-512 ones
(:func:`cpu_prefers_channels_last`) and NCHW on other CPUs. On CUDA ``auto`` keeps
NCHW: not measured here yet (set ``true`` to try cuDNN's NHWC kernels).

Layouts change float rounding only (different kernels sum in different orders); a
resumed run recomputes the layout, and :func:`match_param_layouts` puts optimizer
state saved under another layout into the parameters' layout.
"""

from __future__ import annotations

import os

import torch

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
    "cpu_prefers_channels_last",
    "match_param_layouts",
    "normalize_setting",
    "resolve_memory_format",
]
