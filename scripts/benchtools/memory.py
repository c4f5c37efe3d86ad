"""Live-tensor accounting on any device, for the benchmark and the memory tests.

CUDA has ``torch.cuda.max_memory_allocated``; the CPU allocator keeps no such count.
:class:`LiveBytes` is a dispatch mode that records every storage created while it is
active and forgets it when the storage is freed, so ``peak`` is the most memory held at
once by tensors made inside the block (activations, saved tensors, the penalty's
``create_graph`` graph, gradients) and ``live`` what is still held at the end.
"""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class LiveBytes(TorchDispatchMode):
    """Bytes of storages created inside the ``with`` block and not yet freed."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: set[int] = set()

    def _free(self, key: int, n: int) -> None:
        self._seen.discard(key)
        self.live -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            st = t.untyped_storage()
            key = st.data_ptr()
            if key == 0 or key in self._seen:
                continue
            n = st.nbytes()
            self._seen.add(key)
            self.live += n
            self.peak = max(self.peak, self.live)
            weakref.finalize(st, self._free, key, n)
        return out


def state_bytes(*objs: torch.nn.Module | torch.optim.Optimizer) -> int:
    """Bytes of the parameters, buffers and optimizer states of ``objs``."""
    total = 0
    for o in objs:
        if isinstance(o, torch.nn.Module):
            total += sum(t.nbytes for t in (*o.parameters(), *o.buffers()))
        else:
            for st in o.state.values():
                total += sum(v.nbytes for v in st.values() if isinstance(v, torch.Tensor))
    return total


__all__ = ["LiveBytes", "state_bytes"]
