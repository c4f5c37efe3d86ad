r"""RMSProp as TensorFlow 1 computes it, for the weight-clipping WGAN baseline.

The official scripts train ``MODE = 'wgan'`` with ``tf.train.RMSPropOptimizer(5e-5)``
(Arjovsky et al.'s choice for weight clipping). TF1's RMSProp differs from
``torch.optim.RMSprop``'s defaults in three ways that matter early in training: its
mean square starts at 1 (PyTorch: 0, which makes the first step :math:`\pm\eta/\sqrt{1-\rho}`
whatever the gradient), it decays with :math:`\rho = 0.9` (PyTorch: 0.99), and its
ε = 1e-10 sits inside the square root:

.. math::
    m_t = \rho\, m_{t-1} + (1 - \rho)\, g_t^2, \quad m_0 = 1, \qquad
    \theta_t = \theta_{t-1} - \eta\, \frac{g_t}{\sqrt{m_t + \epsilon}}.

(TF1 ``momentum = 0``, ``centered = False``, the defaults the scripts use.)

Also :func:`linear_decay`, the factor of ``optim.lr_decay=linear``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer


def linear_decay(step: int, steps: int) -> float:
    r"""``optim.lr_decay=linear``: the learning rate's factor at ``step``,
    :math:`\max(0, 1 - \text{step} / \text{steps})`, 0 at ``trainer.steps``. A function of
    the step (no scheduler state), so a resume continues it."""
    return max(0.0, 1.0 - step / max(steps, 1))


class TFRMSprop(Optimizer):
    """TF1's ``RMSPropOptimizer(lr, decay=0.9, momentum=0, epsilon=1e-10)``."""

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        decay: float = 0.9,
        eps: float = 1e-10,
    ) -> None:
        if not lr > 0 or not 0 <= decay < 1 or not eps >= 0:
            raise ValueError(f"invalid lr={lr}, decay={decay} or eps={eps}")
        super().__init__(params, {"lr": lr, "decay": decay, "eps": eps})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # noqa: ANN401
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            for p in params:
                if not self.state[p]:
                    self.state[p]["ms"] = torch.ones_like(p, memory_format=torch.preserve_format)
            ms = [self.state[p]["ms"] for p in params]
            rho = group["decay"]
            # m ← ρ·m + (1 − ρ)·g²
            torch._foreach_mul_(ms, rho)
            torch._foreach_addcmul_(ms, grads, grads, value=1 - rho)
            # θ ← θ − η·g / √(m + ε)
            denom = torch._foreach_add(ms, group["eps"])
            torch._foreach_sqrt_(denom)
            torch._foreach_addcdiv_(params, grads, denom, value=-group["lr"])
        return loss
