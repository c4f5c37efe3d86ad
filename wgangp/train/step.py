"""The trainer's update executor: autocast, GradScaler, the non-finite check and the
optimizer step of each update that :mod:`wgangp.core.algorithm` asks for.

A NaN/Inf never reaches the weights (or Adam's moments). With ``speed.nan_check=step``
the host checks each update (free on the CPU, one sync per update on CUDA); with
``iteration`` a device flag makes the fused optimizer skip the update and the host looks
once per generator iteration (:meth:`UpdateExecutor.check_pending`), which is what lets
a CUDA graph hold the whole iteration.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from wgangp.train import distributed

#: a deferred check's state: the updates' (who, checked value, loss terms) and the flag
PendingState = tuple[list[tuple[str, Tensor, dict[str, Tensor]]], Tensor]


class NonFiniteStep(Exception):  # noqa: N818 - internal control flow
    """A critic/generator update whose loss (``cause="loss"``) or gradient was NaN/Inf.

    ``terms``: the loss terms of that update by name (critic loss, W estimate, GP, or
    generator loss), as floats, for the message.
    """

    def __init__(
        self, who: str, value: float, terms: dict[str, float] | None = None, cause: str = "loss"
    ) -> None:
        self.who, self.value, self.terms, self.cause = who, value, dict(terms or {}), cause
        super().__init__(f"non-finite {who} {cause} (loss {value})")


def resolve_nan_check(setting: str, device: torch.device, optimizer: str) -> str:
    """``speed.nan_check``: ``auto`` is ``iteration`` on CUDA with Adam (the deferred
    check skips updates through fused Adam's found_inf), else ``step``."""
    if setting != "auto":
        return setting
    return "iteration" if device.type == "cuda" and optimizer == "adam" else "step"


class UpdateExecutor:
    """Applies updates: ``loss.backward()`` then ``opt.step()`` only if the loss and
    every gradient are finite, under ``trainer.precision``'s autocast and loss scaling.

    ``graphed`` (``speed.cuda_graph``): autocast runs without its weight-cast cache (a
    cast cached outside a capture is stale memory inside it).
    """

    def __init__(
        self,
        device: torch.device,
        precision: str,
        nan_check: str,
        *,
        graphed: bool = False,
        dist: distributed.DistInfo | None = None,
    ) -> None:
        self.device = device
        self.dist_enabled = bool(dist is not None and dist.enabled)
        self.graphed = graphed
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        # fp16: GradScaler with the AMP "gradient penalty" recipe. The penalty's double
        # backward overflows fp16 at the default 2^16 scale; 2^10 starts in range.
        self.scaler = (
            torch.amp.GradScaler(device.type, init_scale=2.0**10) if precision == "fp16" else None
        )
        self.deferred = nan_check == "iteration"
        # deferred check flag, 1.0 once an update of the iteration was non-finite: float,
        # since fused Adam's found_inf is one (skip the step where it is exactly 1)
        self.bad = torch.zeros((), device=device)
        self.unit = torch.ones(1, device=device)  # nonfinite's inv_scale
        self.pending: list[tuple[str, Tensor, dict[str, Tensor]]] = []

    def autocast(self) -> Any:  # noqa: ANN401
        return torch.autocast(
            self.device.type,
            dtype=self.autocast_dtype or torch.float32,
            enabled=self.autocast_dtype is not None,
            cache_enabled=not self.graphed,
        )

    def loss_scale(self) -> Tensor | None:
        """fp16: GradScaler's current scale as a device tensor (no host sync)."""
        if self.scaler is None:
            return None
        return self.scaler.scale(torch.ones((), device=self.device))

    def start_iteration(self) -> None:
        """A generator iteration begins: no update of it is pending or flagged yet."""
        self.pending = []
        self.bad = torch.zeros_like(self.bad)

    def snapshot(self) -> PendingState:
        """The deferred check's state (what a captured iteration wrote)."""
        return list(self.pending), self.bad

    def restore(self, state: PendingState) -> None:
        """Take ``state`` (a replayed graph's flag and loss terms) for the next check."""
        pending, bad = state
        self.pending, self.bad = list(pending), bad

    def nonfinite(self, loss: Tensor, opt: torch.optim.Optimizer) -> Tensor:
        """A 0-dim device float: 1 if the loss or a gradient is NaN or ±Inf, else 0 (no
        host sync).

        With fp16 loss scaling an overflowing gradient is GradScaler's business (it
        skips that step and lowers the scale), so only the loss is checked then.
        """
        # x·0 is 0 for every finite x and NaN for ±Inf and NaN
        found = (loss.detach().float() * 0 != 0).float().reshape(1)
        if self.scaler is None:
            by_dtype: dict[torch.dtype, list[Tensor]] = {}
            for g in opt.param_groups:
                for p in g["params"]:
                    if p.grad is not None:
                        by_dtype.setdefault(p.grad.dtype, []).append(p.grad)
            for grads in by_dtype.values():
                # GradScaler's own test, element by element, "unscaling" by exactly 1
                # (x·1 is x bitwise): no overflow of a sum, and 5× faster on the CPU
                # than one norm per tensor (~5 ms of a dcgan32 iteration)
                torch._amp_foreach_non_finite_check_and_unscale_(grads, found, self.unit)
        return found.squeeze(0)

    def apply(
        self,
        loss: Tensor,
        opt: torch.optim.Optimizer,
        who: str,
        terms: dict[str, Tensor] | None = None,
        check: Tensor | None = None,
    ) -> None:
        """Backward, then ``opt.step()`` only if the loss and every gradient are finite.

        ``check``: the value tested instead of ``loss`` (fp16: the forward terms).
        ``speed.nan_check=step`` raises :class:`NonFiniteStep` with the loss ``terms``
        at once; ``iteration`` flags the update on the device (:meth:`check_pending`).
        """
        opt.zero_grad(set_to_none=True)
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()
        if check is None:
            check = loss
        if not self.deferred:
            bad = bool(self.nonfinite(check, opt))
            if self.dist_enabled:  # every rank skips, or none: the replicas stay equal
                bad = distributed.any_true(bad, self.device)
            if bad:
                cause = "loss" if not torch.isfinite(check) else "gradient"
                opt.zero_grad(set_to_none=True)
                values = {k: float(v) for k, v in (terms or {}).items()}
                raise NonFiniteStep(who, float(loss.detach()), values, cause)
            self.opt_step(opt)
            return
        # sync-free: a device flag, set by this or an earlier update of this iteration,
        # makes the fused optimizer skip the update on the device (found_inf); the host
        # looks once per generator iteration (check_pending)
        self.bad = torch.maximum(self.bad, self.nonfinite(check, opt))
        self.pending.append((who, check.detach().float(), dict(terms or {})))
        if self.scaler is not None:
            # GradScaler skips steps whose gradients are non-finite: poison one
            params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
            if params:
                g0 = params[0].grad
                g0.add_(torch.where(self.bad > 0, float("nan"), 0.0).to(g0.dtype))
            self.opt_step(opt)
        else:
            opt.found_inf = self.bad  # type: ignore[attr-defined]
            try:
                opt.step()
            finally:
                del opt.found_inf  # type: ignore[attr-defined]

    def opt_step(self, opt: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            opt.step()
        else:
            self.scaler.step(opt)
            self.scaler.update()

    def check_pending(self) -> None:
        """Deferred check: one host sync per generator iteration; raise on the first bad update."""
        pending, self.pending = self.pending, []
        if not pending:
            return
        bad_flag = bool(self.bad)
        if self.dist_enabled:
            bad_flag = distributed.any_true(bad_flag, self.device)
        self.bad = torch.zeros_like(self.bad)
        if not bad_flag:
            return
        values = torch.stack([v for _, v, _ in pending]).cpu()
        nonfinite = (~torch.isfinite(values)).nonzero()
        # a finite loss with a non-finite gradient: blame the first update of the iteration
        i = int(nonfinite[0]) if len(nonfinite) else 0
        who, _, terms = pending[i]
        raise NonFiniteStep(
            who,
            float(values[i]),
            {k: float(v) for k, v in terms.items()},
            "loss" if len(nonfinite) else "gradient",
        )


__all__ = ["NonFiniteStep", "PendingState", "UpdateExecutor", "resolve_nan_check"]
