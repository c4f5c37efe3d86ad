"""Building blocks of the fast training step; the math stays in :mod:`wgangp.core.losses`.

* :func:`critic_scores` scores real and fake samples in one critic forward (valid
  because WGAN-GP critics have no cross-sample coupling: batch norm is refused).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class StepSettings:
    """The settings the training step reads, resolved once from the config.

    Why: an OmegaConf attribute read costs microseconds of Python (node lookup,
    interpolation and missing-value checks), and the step made ~90 of them per generator
    iteration. That is noise on a CPU but a few per cent of an eager CUDA iteration,
    which is bound by Python and kernel launches at the paper's batch sizes.
    """

    batch_size: int
    gen_batch_size: int  # the generator update's (trainer.gen_batch_size, or batch_size)
    n_critic: int
    batch_fakes: bool
    fuse_real_fake: bool
    gp_lambda: float
    gp_target: float
    gp_one_sided: bool
    gp_every: int
    cuda_graph: bool
    ema_start: int
    num_classes: int  # class-conditional (conditional.enabled): the data's classes, else 0
    acgan_scale: float
    acgan_scale_g: float
    objective: str  # loss.name: wgan-gp | wgan | dcgan | lsgan
    penalty: bool  # loss.name=wgan-gp; the baselines take no penalty
    clip: float  # loss.name=wgan: critic weights clipped to ±clip after each update; 0: off

    @classmethod
    def from_cfg(cls, cfg: Any, num_classes: int = 0) -> StepSettings:  # noqa: ANN401
        t, gp, cond, speed = cfg.trainer, cfg.gp, cfg.conditional, cfg.speed
        return cls(
            batch_size=int(t.batch_size),
            gen_batch_size=int(t.gen_batch_size or t.batch_size),
            n_critic=int(t.n_critic),
            batch_fakes=bool(speed.batch_fakes),
            fuse_real_fake=bool(speed.fuse_real_fake),
            gp_lambda=float(gp["lambda"]),
            gp_target=float(gp.target),
            gp_one_sided=bool(gp.one_sided),
            gp_every=int(gp.every),
            cuda_graph=bool(speed.cuda_graph),
            ema_start=int(t.ema.start),
            num_classes=num_classes,
            acgan_scale=float(cond.acgan_scale),
            acgan_scale_g=float(cond.acgan_scale_g),
            objective=str(cfg.loss.name),
            penalty=cfg.loss.name == "wgan-gp",
            clip=float(cfg.loss.clip) if cfg.loss.name == "wgan" else 0.0,
        )


@dataclass
class IterationInputs:
    """What one generator iteration consumes, drawn before it runs
    (by the trainer, before :func:`wgangp.core.algorithm.algorithm_1` runs).

    ``reals``: the n_critic real batches; ``fake_z``: latents of the fakes, one tensor
    per critic update or one for all of them (``speed.batch_fakes``); ``eps``: the
    interpolation weights per critic update, None where the lazy penalty skips it;
    ``gen_z``: the generator update's latents. Class-conditional runs also carry
    ``real_labels`` (one per real batch; the fakes of that critic update share them)
    and ``gen_labels`` (the generator update's, uniform over the classes).
    """

    reals: list[Tensor]
    fake_z: list[Tensor]
    eps: list[Tensor | None]
    gen_z: Tensor
    real_labels: list[Tensor] | None = None
    gen_labels: Tensor | None = None

    def tensors(self) -> list[Tensor]:
        """Every tensor, in a fixed order (for copying into static buffers)."""
        labels = [
            *(self.real_labels or []),
            *([] if self.gen_labels is None else [self.gen_labels]),
        ]
        return [
            *self.reals,
            *self.fake_z,
            *(e for e in self.eps if e is not None),
            self.gen_z,
            *labels,
        ]

    def clone(self) -> IterationInputs:
        return IterationInputs(
            [r.clone() for r in self.reals],
            [z.clone() for z in self.fake_z],
            [None if e is None else e.clone() for e in self.eps],
            self.gen_z.clone(),
            None if self.real_labels is None else [y.clone() for y in self.real_labels],
            None if self.gen_labels is None else self.gen_labels.clone(),
        )


def _real_and_fake(real: Tensor, fake: Tensor) -> Tensor:
    """One batch of ``real`` then ``fake``, in ``real``'s dtype and memory format."""
    both = torch.cat([real, fake.to(real.dtype)])
    if real.dim() == 4 and real.is_contiguous(memory_format=torch.channels_last):
        both = both.contiguous(memory_format=torch.channels_last)
    return both


def critic_scores(
    critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor, fuse: bool
) -> tuple[Tensor, Tensor]:
    """``(D(real), D(fake))``; with ``fuse`` from one forward of the concatenated batch."""
    if not fuse:
        return critic(real), critic(fake)
    scores = critic(_real_and_fake(real, fake))
    # unbind, not two slices: its backward is one stack instead of two zero-filled
    # slice_backward buffers and their sum (launches count in an eager CUDA step)
    d_real, d_fake = scores.unflatten(0, (2, real.shape[0])).unbind(0)
    return d_real, d_fake


def critic_scores_and_logits(
    critic: Callable[..., tuple[Tensor, Tensor]], real: Tensor, fake: Tensor, fuse: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A class-conditional critic's ``(D(real), D(fake), logits(real), logits(fake))``,
    with ``fuse`` from one forward of the concatenated batch (:func:`critic_scores`)."""
    if not fuse:
        (s_real, l_real), (s_fake, l_fake) = (
            critic(real, with_logits=True),
            critic(fake, with_logits=True),
        )
        return s_real, s_fake, l_real, l_fake
    scores, logits = critic(_real_and_fake(real, fake), with_logits=True)
    n = real.shape[0]
    s_real, s_fake = scores.unflatten(0, (2, n)).unbind(0)
    l_real, l_fake = logits.unflatten(0, (2, n)).unbind(0)
    return s_real, s_fake, l_real, l_fake


__all__ = [
    "IterationInputs",
    "StepSettings",
    "critic_scores",
    "critic_scores_and_logits",
]
