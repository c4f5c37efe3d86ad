"""The time a step spends in its compute-bound kernels, measured by replaying them alone.

:class:`KernelRecorder` is a ``TorchDispatchMode`` that records every convolution and
matrix multiply (forward, backward and the double backward's, as dispatched to ATen)
with the shapes, strides and settings it ran with. :func:`replay_ms` then runs each
distinct call again, alone, on fresh random tensors laid out the same way, and sums the
best of several runs of each (the best, not the median: on a shared machine the noise
only ever adds time, and a ceiling should be optimistic). The sum is what one step would
cost if everything but those kernels (the elementwise ops, the optimizer, Python, the
autograd engine) took no time; the benchmark's ``ref_ms_per_iter / kernel_ms`` is
therefore the speed-up no rearrangement of the same kernels beats on that machine.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

aten = torch.ops.aten

#: the compute-bound ATen ops: what a convolution or linear layer dispatches to
HEAVY_OPS = frozenset(
    {
        aten.convolution.default,
        aten._convolution.default,  # the double backward calls it directly
        aten.convolution_backward.default,
        aten.mm.default,
        aten.addmm.default,
        aten.bmm.default,
        aten.baddbmm.default,
    }
)


class _TensorSpec(tuple):
    """(shape, stride, dtype, device) of a recorded tensor argument."""

    def make(self) -> torch.Tensor:
        shape, stride, dtype, device = self
        # storage for any layout, broadcast (stride-0) views included
        n = 1 + sum((s - 1) * st for s, st in zip(shape, stride, strict=True)) if all(shape) else 0
        flat = torch.empty(n, dtype=dtype, device=device)
        flat = flat.normal_() if dtype.is_floating_point else flat.zero_()
        return flat.as_strided(shape, stride)


def _spec(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return _TensorSpec((tuple(x.shape), tuple(x.stride()), x.dtype, x.device))
    return x


def _hashable(x: Any) -> Any:
    # lists (int[], bool[] arguments) become tuples: ATen accepts both
    if isinstance(x, (tuple, list)) and not isinstance(x, _TensorSpec):
        return tuple(_hashable(v) for v in x)
    return x


class KernelRecorder(TorchDispatchMode):
    """Counts every :data:`HEAVY_OPS` call made inside it, keyed by op and argument layout."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[tuple[Any, ...]] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        if func in HEAVY_OPS:
            spec = tree_map(_spec, (args, kwargs))
            self.calls[(func, _hashable(spec[0]), tuple(sorted(spec[1].items())))] += 1
        return func(*args, **kwargs)


#: operators that run no kernel although their schema does not say "view"
_NO_KERNEL = frozenset({"_unsafe_view", "empty", "empty_strided", "new_empty", "empty_like"})


class OpCounter(TorchDispatchMode):
    """Counts the ATen operators that do work (a kernel launch each on CUDA), leaving out
    views and aliases (``detach``, ``view``, ``t``...), which only make a new header, and
    bare allocations (``empty``).

    Why: at the paper's batch sizes an eager CUDA iteration is bound by launching its
    kernels, not by their arithmetic, and this count is the same on every machine.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        if not func.is_view and func.namespace != "profiler" and func._opname not in _NO_KERNEL:
            self.ops[func.__name__] += 1
        return func(*args, **(kwargs or {}))


def count_ops(fn: Callable[[], Any]) -> int:
    """The number of working ATen operators ``fn()`` dispatches (see :class:`OpCounter`)."""
    with OpCounter() as counter:
        fn()
    return sum(counter.ops.values())


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def replay_ms(calls: Counter[tuple[Any, ...]], repeats: int = 5) -> float:
    """Milliseconds the recorded calls take when each runs alone (best of ``repeats``).

    The repeats go round-robin over all calls, so a passing slowdown of a shared machine
    lands on one sample of many calls instead of on every sample of one call.
    """
    prepared = []
    for (func, args, kwargs), count in calls.items():
        real_args = [a.make() if isinstance(a, _TensorSpec) else a for a in args]
        real_kwargs = {k: (v.make() if isinstance(v, _TensorSpec) else v) for k, v in kwargs}
        devices = [a.device for a in real_args if isinstance(a, torch.Tensor)]
        device = devices[0] if devices else torch.device("cpu")
        prepared.append((func, real_args, real_kwargs, device, count))
    best = [float("inf")] * len(prepared)
    with torch.no_grad():
        for func, real_args, real_kwargs, _, _ in prepared:
            func(*real_args, **real_kwargs)  # warm-up: kernel selection, caches
        for _ in range(repeats):
            for i, (func, real_args, real_kwargs, device, _) in enumerate(prepared):
                synchronize(device)
                t0 = time.perf_counter()
                func(*real_args, **real_kwargs)
                synchronize(device)
                best[i] = min(best[i], time.perf_counter() - t0)
    return sum(b * 1000.0 * p[-1] for b, p in zip(best, prepared, strict=True))


def kernel_ms(fn: Callable[[], Any], repeats: int = 5) -> tuple[float, int]:
    """``(milliseconds, number of calls)`` of ``fn``'s heavy kernels, replayed alone."""
    with KernelRecorder() as rec:
        fn()
    return replay_ms(rec.calls, repeats), sum(rec.calls.values())


__all__ = [
    "HEAVY_OPS",
    "KernelRecorder",
    "OpCounter",
    "count_ops",
    "kernel_ms",
    "replay_ms",
    "synchronize",
]
