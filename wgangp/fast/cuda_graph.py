"""``speed.cuda_graph``: the whole generator iteration captured once and replayed.

Why: at the paper's batch sizes a CUDA WGAN-GP iteration is thousands of small kernels
(n_critic critic updates, each with a double backward, then a generator update), and
the eager loop is bound by launching them: on an H100 the ``dcgan32`` iteration took
37 ms for 210 GFLOP (README, Speed). Replaying a captured graph launches them all at once.

Why the numbers do not change: the iteration (:func:`wgangp.core.algorithm.algorithm_1`)
draws no random number, reads no data and makes no host sync. Each iteration's inputs
(real batches, latents, interpolation weights) are drawn eagerly beforehand from the
same generators in the same order as an eager step, then copied into the static tensors
the graph reads. Parameters, optimizer moments and batch-norm buffers are updated in
place by the replayed kernels, so checkpoints, pictures and the EMA see them as usual.
tests/test_cuda_graph.py checks the draw-first split bitwise, and graph against eager
training on CUDA. Opt-in: docs/performance.md says where it pays.

How (PyTorch's CUDA-graph notes, "whole-network capture"):

* The first :data:`WARMUP` iterations run eagerly on a side stream: cuDNN's algorithm
  search, the optimizers' state and the autograd engine's device threads are set up
  outside the capture. The next iteration is captured, then replayed at once (a capture
  only records).
* The optimizers are fused Adam with ``capturable=True`` and a device-tensor learning
  rate, which linear decay writes into (a Python float would be frozen into the graph).
* autocast runs without its weight-cast cache (a cast cached outside the capture would
  be read as stale memory inside it).
* Non-finite checks use the device flag of ``speed.nan_check=iteration``: the flag and
  the loss terms the graph wrote are handed back to their owner (:class:`DeferredCheck`)
  after each replay, to be read once.
* Loading a checkpoint replaces the optimizer-state tensors the graph points at: the
  graph is dropped and captured again after a new warm-up.

What cannot be captured is refused before training (wgangp/config/validate.py): a CPU device,
torchrun, fp16 (GradScaler's scale lives on the host), ``speed.compile``, the lazy
penalty (``gp.every > 1``: a different graph per phase), ``speed.nan_check=step``.
What a model does inside the iteration is checked on the last warm-up iteration
(:class:`CaptureCheck`): a host sync, a random draw, a shape that depends on values or
a copy between devices there stops the run with the operator's name, instead of CUDA's
"operation not permitted when stream is capturing" (or, for a random draw, replays
that silently reuse one draw's numbers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from wgangp.errors import ConfigError

if TYPE_CHECKING:
    from wgangp.core.step import IterationInputs

#: eager iterations before the capture (the PyTorch notes use 3 for whole networks)
WARMUP = 3

T = TypeVar("T")


def on_side_stream(fn: Callable[[], T], device: torch.device) -> T:
    """``fn()`` eagerly on a fresh side stream, ordered after and before the current one
    (how warm-up runs must happen before a capture)."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        out = fn()
    torch.cuda.current_stream(device).wait_stream(side)
    return out


def capture(fn: Callable[[], T], device: torch.device) -> tuple[torch.cuda.CUDAGraph, T]:
    """``fn`` recorded (not run) as a CUDA graph; returns the graph and what ``fn``
    returned, whose tensors the graph's replays overwrite."""
    graph = torch.cuda.CUDAGraph()
    torch.cuda.synchronize(device)
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out


#: operators that return a Python value from a tensor's metadata, not its data: no sync
_METADATA = frozenset(
    {
        "is_same_size",
        "_has_compatible_shallow_copy_type",
        "is_pinned",
        "is_coalesced",
        "is_contiguous",
        "is_complex",
        "is_floating_point",
        "is_nonoverlapping_and_dense",
        "sym_size",
        "sym_stride",
        "sym_numel",
        "sym_storage_offset",
        "dim",
        "size",
        "stride",
        "numel",
        "_nnz",
    }
)

#: operators whose output size depends on the values (CUDA computes it, the host reads it)
_VALUE_SHAPED = frozenset(
    {
        "nonzero",
        "masked_select",
        "_unique",
        "_unique2",
        "unique_dim",
        "unique_consecutive",
        "bincount",
        "argwhere",
    }
)


def _uncapturable(func: Any, args: tuple, kwargs: dict, out: Any, device: torch.device) -> str:
    """Why ``func`` cannot be in a captured iteration on ``device`` ('' if it can)."""
    name = func.overloadpacket.__name__
    if isinstance(out, (bool, int, float, complex)) and name not in _METADATA:
        return "a host sync (a tensor read as a Python number: .item(), bool(), float())"
    if name in _VALUE_SHAPED or (name == "repeat_interleave" and "output_size" not in kwargs):
        return "an output whose size depends on the values (a host sync)"
    if name in ("index", "index_put", "index_put_") and any(
        isinstance(i, Tensor) and i.dtype in (torch.bool, torch.uint8)
        for i in tree_leaves(args[1:2])
    ):
        return "indexing with a boolean mask (a nonzero, a host sync)"
    if torch.Tag.nondeterministic_seeded in func.tags:
        return "a random draw (draw it in Trainer.draw_inputs, outside the graph)"
    for x in tree_leaves((args, kwargs, out)):
        # a 0-dim CPU tensor is a kernel argument, not a copy
        if isinstance(x, Tensor) and not _on(x, device) and not (x.dim() == 0 and x.is_cpu):
            return f"a tensor on {x.device}, not {device} (a copy between host and device)"
    return ""


def _on(x: Tensor, device: torch.device) -> bool:
    """``x`` is on ``device`` ("cuda" means the current one: cuda:0 matches it)."""
    return x.device.type == device.type and device.index in (None, x.device.index)


class CaptureCheck(TorchDispatchMode):
    """Records every operator that a CUDA graph could not capture (or would replay
    wrongly): host syncs, value-dependent shapes, random draws, tensors on another device.

    ``found``: ``{operator: reason}`` in the order first seen. Runs the operators
    unchanged, so an iteration run under it is an ordinary iteration.
    """

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device = device
        self.found: dict[str, str] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if str(func) not in self.found:
            why = _uncapturable(func, args, kwargs, out, self.device)
            if why:
                self.found[str(func)] = why
        return out


def check_capturable(fn: Callable[[], T], device: torch.device) -> T:
    """``fn()`` under :class:`CaptureCheck`; a :class:`~wgangp.errors.ConfigError` on
    ``speed.cuda_graph`` naming each operator that cannot be captured."""
    with CaptureCheck(device) as check:
        out = fn()
    if check.found:
        ops = "; ".join(f"{op}: {why}" for op, why in check.found.items())
        raise ConfigError(
            "speed.cuda_graph",
            True,
            "an iteration with no host sync, random draw, value-dependent shape or "
            "host-device copy",
            f"the iteration runs {ops}; set speed.cuda_graph=false to train this model eagerly",
        )
    return out


class DeferredCheck(Protocol):
    """The owner of the deferred non-finite check's state (the device flag and the
    updates' loss terms), which a captured iteration writes into its own tensors."""

    def snapshot(self) -> Any:  # noqa: ANN401
        """The state as the iteration left it."""

    def restore(self, state: Any) -> None:  # noqa: ANN401
        """Take ``state`` as the state to check next."""


class GraphedIteration:
    """Replays ``iteration`` from a CUDA graph; :meth:`step` stands in for
    ``iteration(draw_inputs())``.

    ``draw_inputs``: every random draw and data read of one iteration, eagerly;
    ``iteration``: the iteration on those inputs (no draw, read or host sync);
    ``checks``: where the replay's non-finite flag and loss terms go.
    """

    def __init__(
        self,
        device: torch.device,
        draw_inputs: Callable[[], IterationInputs],
        iteration: Callable[[IterationInputs], dict[str, Tensor]],
        checks: DeferredCheck,
        warmup: int = WARMUP,
    ) -> None:
        if device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, not {device}")
        self.device = device
        self.draw_inputs, self.iteration, self.checks = draw_inputs, iteration, checks
        self.warmup = warmup
        self.captures = 0  # graphs captured so far (a resume captures again)
        self.replays = 0
        self.reset()

    def reset(self) -> None:
        """Forget the graph (the tensors it points at were replaced): warm up again."""
        self.graph: torch.cuda.CUDAGraph | None = None
        self.warmed = 0
        self.static: IterationInputs | None = None
        self.stats: dict[str, Tensor] = {}
        self.check_state: Any = None

    def step(self) -> dict[str, Tensor]:
        """One generator iteration: eager while warming up, then captured and replayed.

        Returns the iteration's statistics as fresh tensors (the graph's own outputs are
        overwritten by the next replay).
        """
        inputs = self.draw_inputs()
        if self.graph is None:
            if self.warmed < self.warmup:
                self.warmed += 1
                if self.warmed < self.warmup:
                    return on_side_stream(lambda: self.iteration(inputs), self.device)
                # the last one, set up as the capture will see it: check what it runs
                return on_side_stream(
                    lambda: check_capturable(lambda: self.iteration(inputs), self.device),
                    self.device,
                )
            self._capture(inputs)
        else:
            assert self.static is not None
            for dst, src in zip(self.static.tensors(), inputs.tensors(), strict=True):
                dst.copy_(src)
        assert self.graph is not None
        self.graph.replay()
        self.replays += 1
        # the device flag and loss terms the replay wrote, for the owner's one check
        self.checks.restore(self.check_state)
        return {k: v.clone() for k, v in self.stats.items()}

    def _capture(self, inputs: IterationInputs) -> None:
        # static inputs outside the graph's memory pool: this iteration's own values
        static = self.static = inputs.clone()
        self.graph, self.stats = capture(lambda: self.iteration(static), self.device)
        self.check_state = self.checks.snapshot()
        self.captures += 1


__all__ = [
    "WARMUP",
    "CaptureCheck",
    "DeferredCheck",
    "GraphedIteration",
    "capture",
    "check_capturable",
    "on_side_stream",
]
