"""The run's optimizers: Adam (fused where PyTorch has it) or TF1's RMSProp, and the
linear learning-rate decay applied to both."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from wgangp.core.optim import TFRMSprop, linear_decay

#: devices with a fused (single-kernel) Adam in PyTorch
FUSED_ADAM_DEVICES = ("cpu", "cuda", "mps", "xpu")


def adam_impl(device: torch.device, graphed: bool = False) -> dict[str, bool]:
    """Adam's implementation flags: fused where PyTorch has it, else foreach.

    Fused: one kernel for every parameter (on 2 CPU cores a toy_quality step at batch
    256 took 21.8 ms instead of foreach's 24.3 ms), and it can skip an update on the
    device (``found_inf``), which the sync-free non-finite check and GradScaler rely on.
    ``graphed`` (speed.cuda_graph): capturable, i.e. its step count stays on the device.
    """
    fused = device.type in FUSED_ADAM_DEVICES
    return {"fused": fused, "foreach": not fused, "capturable": graphed}


def adam_lr(lr: Any, device: torch.device, graphed: bool) -> float | Tensor:  # noqa: ANN401
    """The learning rate as Adam should hold it: under a CUDA graph a device tensor
    (the graph reads it, linear decay writes into it), else a float."""
    value = float(lr)
    return torch.tensor(value, device=device) if graphed else value


def make_optimizer(
    name: str, params: Any, node: Any, device: torch.device, graphed: bool
) -> torch.optim.Optimizer:
    """``optim.name``'s optimizer: Adam (the paper's), or TF1's RMSProp (the weight-
    clipping baseline's, wgangp/core/optim.py)."""
    if name == "rmsprop":
        return TFRMSprop(params, lr=float(node.lr))
    return adam(params, node, device, graphed)


def adam(params: Any, node: Any, device: torch.device, graphed: bool) -> torch.optim.Adam:
    return torch.optim.Adam(
        params,
        lr=adam_lr(node.lr, device, graphed),
        betas=tuple(node.betas),
        **adam_impl(device, graphed),
    )


def decay_linearly(
    opt_c: torch.optim.Optimizer,
    opt_g: torch.optim.Optimizer,
    optim_cfg: Any,
    step: int,
    steps: int,
) -> None:  # noqa: ANN401
    """Both learning rates at ``linear_decay(step, steps)`` of ``optim.{critic,generator}.lr``
    (a function of the step, so a resume continues the schedule)."""
    frac = linear_decay(step, steps)
    for opt, node in ((opt_c, optim_cfg.critic), (opt_g, optim_cfg.generator)):
        for group in opt.param_groups:
            if isinstance(group["lr"], Tensor):  # read by a CUDA graph: in place
                group["lr"].fill_(node.lr * frac)
            else:
                group["lr"] = node.lr * frac
