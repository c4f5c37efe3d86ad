r"""Algorithm 1 of Gulrajani et al. (2017), the loop the trainer runs.

One generator iteration with critic :math:`D_w`, generator :math:`G_\theta`, batch size
:math:`m`, penalty weight :math:`\lambda`:

.. code-block:: text

    for t = 1, ..., n_critic:
        x ~ P_r,  z ~ p(z),  ε ~ U[0, 1]
        x̃ ← G_θ(z)
        x̂ ← εx + (1 − ε)x̃
        L ← D_w(x̃) − D_w(x) + λ(‖∇_x̂ D_w(x̂)‖₂ − 1)²
        w ← Adam(∇_w (1/m) Σ L)
    z ~ p(z)
    θ ← Adam(∇_θ (1/m) Σ −D_w(G_θ(z)))

:func:`algorithm_1` is that loop; :func:`critic_update` and :func:`generator_update`
are its two updates. The random draws (x, z, ε) come in drawn beforehand
(:class:`~wgangp.core.step.IterationInputs`), so the loop itself draws nothing.
The networks, their optimizers and how fast they run belong to the layer above,
which hands them in as a :class:`Networks`: this module imports torch only.

The variants the paper compares with are small helpers the updates call: the
baselines' objectives (``loss=wgan|dcgan|lsgan``, :func:`critic_objective`,
:func:`generator_objective`, :func:`clip_weights`), the AC-GAN terms of the
class-conditional model (:func:`acgan_critic_terms`) and the lazy penalty
(:func:`lazy_penalty_weight`).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol

import torch
from torch import Tensor

from wgangp.core import losses
from wgangp.core.step import IterationInputs, StepSettings


class Networks(Protocol):
    """What Algorithm 1 needs from the layer that owns the networks and optimizers.

    The implementation chooses how each forward runs (fused real+fake scoring,
    detached rectifier masks in the penalty's critic, compiled modules, a memory
    format, autocast, a loss scale) without changing what it computes.
    """

    #: the latest penalty's statistics ("gp", "grad_norm"), kept between updates
    penalty_stats: dict[str, Tensor]
    #: the critic's parameters that ``loss=wgan`` clips (empty otherwise)
    clipped: list[Tensor]
    #: the generator of ε when a caller leaves it to the update
    rng: torch.Generator | None

    def precision(self) -> AbstractContextManager[Any]:
        """The region the forwards run in (autocast)."""

    def to_layout(self, x: Tensor) -> Tensor:
        """``x`` in the networks' memory format."""

    def generate(self, z: Tensor, labels: Tensor | None) -> Tensor:
        """x̃ = G(z) (class-conditional: G(z, y)) without a graph, in fp32 at least."""

    def critic_scores(
        self, real: Tensor, fake: Tensor, labels: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """(D(x), D(x̃), class logits of x, class logits of x̃); logits None if unconditional."""

    def penalty_critic(self, x: Tensor) -> Tensor:
        """D(x̂) as the penalty differentiates it."""

    def output_scale(self) -> Tensor | None:
        """fp16 loss scaling: the scale of the penalty's inner backward (None: none)."""

    def critic_frozen(self) -> AbstractContextManager[Any]:
        """The region where the critic's parameters take no gradient."""

    def generator_scores(self, z: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """(D(G(z)), class logits of G(z)) with G's graph."""

    def update(self, who: str, loss: Tensor, shown: dict[str, Tensor]) -> None:
        """Backward of ``loss`` and one optimizer step of ``who`` (critic | generator);
        ``shown``: the loss's terms, for a message if it is not finite."""

    def critic_step(
        self,
        real: Tensor,
        fake: Tensor,
        *,
        penalty: bool = True,
        lam_scale: float = 1.0,
        eps: Tensor | None = None,
        labels: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """One critic update: :func:`critic_update` of these networks."""

    def generator_step(self, z: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        """One generator update: :func:`generator_update` of these networks."""


def algorithm_1(inputs: IterationInputs, nets: Networks, s: StepSettings) -> dict[str, Tensor]:
    """One generator iteration of Algorithm 1 on pre-drawn ``inputs``: ``s.n_critic``
    critic updates, each on its real batch x, fakes x̃ = G(z) and weights ε (None: the
    lazy penalty skips this update's penalty), then one generator update on −D(G(z)).
    Returns the last critic update's statistics and the generator update's.

    ``nets.critic_step`` and ``nets.generator_step`` are :func:`critic_update` and
    :func:`generator_update` of ``nets`` (a hook where the caller records or wraps an
    update)."""
    fakes = fakes_of_one_forward(inputs, nets, s) if s.batch_fakes else None
    stats: dict[str, Tensor] = {}
    for t, (x, eps) in enumerate(zip(inputs.reals, inputs.eps, strict=True)):
        # class-conditional: the fakes take the real batch's labels (as the official code)
        y = None if inputs.real_labels is None else inputs.real_labels[t]
        x_tilde = fakes[t] if fakes is not None else nets.generate(inputs.fake_z[t], y)
        # L = D(x̃) − D(x) + λ(‖∇D(x̂)‖₂ − 1)², x̂ = εx + (1 − ε)x̃: critic_update
        stats = nets.critic_step(
            x, x_tilde, penalty=eps is not None, lam_scale=s.gp_every, eps=eps, labels=y
        )
    # L_G = −D(G(z)): generator_update
    stats.update(nets.generator_step(inputs.gen_z, inputs.gen_labels))
    return stats


def critic_update(
    nets: Networks,
    s: StepSettings,
    x: Tensor,
    x_tilde: Tensor,
    *,
    penalty: bool = True,
    lam_scale: float = 1.0,
    eps: Tensor | None = None,
    labels: Tensor | None = None,
) -> dict[str, Tensor]:
    r"""One critic update on L = E[D(x̃)] − E[D(x)] + λ·E[(‖∇D(x̂)‖₂ − 1)²] at
    x̂ = εx + (1 − ε)x̃ (ε drawn from ``nets.rng`` if None; ``penalty=False``: no
    penalty term; ``lam_scale``: λ's factor, :func:`lazy_penalty_weight`). A baseline
    replaces E[D(x̃)] − E[D(x)] and takes no penalty; ``labels`` add the AC-GAN term."""
    x, x_tilde = nets.to_layout(x), nets.to_layout(x_tilde)
    gp = None
    with nets.precision():
        d_x, d_x_tilde, logits_x, logits_x_tilde = nets.critic_scores(x, x_tilde, labels)
        if penalty and s.penalty:
            gp = losses.gradient_penalty(
                nets.penalty_critic,
                x,
                x_tilde,
                target=s.gp_target,
                one_sided=s.gp_one_sided,
                eps=eps,
                generator=nets.rng,
                output_scale=nets.output_scale(),
            )
        acgan = acgan_critic_terms(logits_x, logits_x_tilde, labels)
    loss, shown = critic_objective(d_x, d_x_tilde, s)
    if gp is not None:
        loss = lazy_penalty_weight(s, lam_scale) * gp.penalty + loss
        nets.penalty_stats = {"gp": gp.penalty.detach(), "grad_norm": gp.grad_norm.mean()}
    if acgan:
        loss = loss + s.acgan_scale * acgan["acgan/critic"]
        acgan["acgan/critic"] = acgan["acgan/critic"].detach()
    nets.update("critic", loss, {**shown, **nets.penalty_stats})
    if s.clip:
        clip_weights(nets.clipped, s.clip)
    # the latest penalty's statistics (lazy penalty: from an earlier update)
    return {"loss/critic": loss.detach(), **shown, **nets.penalty_stats, **acgan}


def generator_update(
    nets: Networks, s: StepSettings, z: Tensor, labels: Tensor | None = None
) -> dict[str, Tensor]:
    """One generator update on L_G = −E[D(G(z))] (a baseline's L_G for loss=dcgan|lsgan),
    class-conditional: + ``acgan_scale_g``·CE(class logits of G(z, y), y)."""
    stats: dict[str, Tensor] = {}
    with nets.critic_frozen():
        with nets.precision():
            d_fake, logits = nets.generator_scores(z, labels)
            loss = generator_objective(d_fake, s)
            if logits is not None and labels is not None:
                ce = losses.class_loss(logits, labels)
                loss = loss + s.acgan_scale_g * ce
                stats["acgan/generator"] = ce.detach()
        nets.update("generator", loss, {})
    return {"loss/generator": loss.detach(), **stats}


def critic_objective(d_x: Tensor, d_x_tilde: Tensor, s: StepSettings) -> tuple[Tensor, dict]:
    """The critic's loss before any penalty and what the logs show of it:
    E[D(x̃)] − E[D(x)] with W = E[D(x)] − E[D(x̃)] (``wasserstein``), or for
    loss=dcgan|lsgan the baseline's loss and mean outputs (``d_real``, ``d_fake``;
    dcgan: as probabilities)."""
    score = losses.SCORE_LOSSES.get(s.objective)
    if score is None:
        w = losses.wasserstein_estimate(d_x, d_x_tilde)
        # −W, the same float as E[D(x̃)] − E[D(x)] (a − b = −(b − a) in IEEE arithmetic)
        return -w, {"wasserstein": w.detach()}
    shown = {
        "d_real": score.shown(d_x.detach().float()).mean(),
        "d_fake": score.shown(d_x_tilde.detach().float()).mean(),
    }
    return score.critic(d_x, d_x_tilde), shown


def generator_objective(d_fake: Tensor, s: StepSettings) -> Tensor:
    """L_G of D(G(z)): −E[D(G(z))], or the baseline's (loss=dcgan|lsgan)."""
    score = losses.SCORE_LOSSES.get(s.objective)
    return losses.generator_loss(d_fake) if score is None else score.generator(d_fake)


def lazy_penalty_weight(s: StepSettings, lam_scale: float) -> float:
    """λ·k for a penalty taken on every k-th critic update only (``gp.every`` = k;
    StyleGAN2's lazy regularisation): the penalty's expected weight stays λ."""
    return s.gp_lambda * lam_scale


def acgan_critic_terms(
    logits_x: Tensor | None, logits_x_tilde: Tensor | None, labels: Tensor | None
) -> dict[str, Tensor]:
    """The AC-GAN critic term CE(class logits of x, y) (``acgan/critic``, Odena et al.
    2017) and both accuracies (logged); empty for an unconditional critic."""
    if labels is None or logits_x is None or logits_x_tilde is None:
        return {}
    return {
        "acgan/critic": losses.class_loss(logits_x, labels),
        "acgan/real_acc": losses.class_accuracy(logits_x, labels),
        "acgan/fake_acc": losses.class_accuracy(logits_x_tilde, labels),
    }


def clip_weights(params: list[Tensor], c: float) -> None:
    """loss=wgan (Arjovsky et al. 2017): w ← clip(w, −c, c) after each critic update."""
    with torch.no_grad():
        torch._foreach_clamp_min_(params, -c)
        torch._foreach_clamp_max_(params, c)


def fakes_of_one_forward(inputs: IterationInputs, nets: Networks, s: StepSettings) -> list:
    """``speed.batch_fakes``: the n_critic fake batches from one generator forward of
    ``inputs.fake_z[0]`` (all batches' latents), split in order."""
    labels = None if inputs.real_labels is None else torch.cat(inputs.real_labels)
    return list(nets.generate(inputs.fake_z[0], labels).chunk(s.n_critic))


__all__ = [
    "Networks",
    "acgan_critic_terms",
    "algorithm_1",
    "clip_weights",
    "critic_objective",
    "critic_update",
    "generator_objective",
    "generator_update",
    "lazy_penalty_weight",
]
