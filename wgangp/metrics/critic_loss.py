"""``critic_loss``: the critic update's loss measured on a batch without updating anything
(the official scripts' "dev disc cost", the paper's Figure 4b), for evaluation during
training and for ``wgangp-eval``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from wgangp.core import losses
from wgangp.models.sampling import sampling_mode


@dataclass(frozen=True)
class CriticLossSettings:
    """What ``critic_loss`` reads of a run's config: the loss and the penalty's settings."""

    loss: str = "wgan-gp"
    lam: float = 10.0
    target: float = 1.0
    one_sided: bool = False

    @classmethod
    def from_cfg(cls, cfg: Any) -> CriticLossSettings:  # noqa: ANN401
        gp = cfg.gp
        return cls(
            str(cfg.get("loss", {}).get("name", "wgan-gp")),  # runs from before loss=
            float(gp["lambda"]),
            float(gp.target),
            bool(gp.one_sided),
        )


def measure_critic_batch(
    critic: nn.Module,
    real: Tensor,
    fake: Tensor,
    rng: torch.Generator,
    settings: CriticLossSettings,
    output_scale: Tensor | None = None,
) -> Tensor:
    """One batch of ``critic_loss`` (:func:`wgangp.core.losses.measured_critic_loss`): ε drawn
    from ``rng`` (a CPU generator, drawn whatever the loss, so every loss reads the same
    reals), the critic's batch norms on each batch's statistics with their running ones
    untouched, no parameter gradient."""
    eps = losses.interpolation_weights(real.shape[0], real.dim(), generator=rng)
    critic.requires_grad_(False)  # the penalty's ∇x̂ only: no parameter graph
    try:
        with sampling_mode(critic, "batch"):
            return losses.measured_critic_loss(
                critic,
                real,
                fake.to(real.dtype),
                loss=settings.loss,
                lam=settings.lam,
                target=settings.target,
                one_sided=settings.one_sided,
                eps=eps.to(real.device),
                output_scale=output_scale,
            )
    finally:
        critic.requires_grad_(True)


__all__ = ["CriticLossSettings", "measure_critic_batch"]
