"""How a trainer runs the forwards and updates of Algorithm 1
(:class:`wgangp.core.algorithm.Networks`), and draws each iteration's random inputs.

:class:`StepNetworks` is a base of :class:`wgangp.train.trainer.Trainer`, which sets
the attributes it reads (networks and their forward wrappers, optimizers, the update
executor, the step settings ``hot``, the data, the random stream ``rng``, the memory
format and the step).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor

from wgangp.core import losses
from wgangp.core import step as step_lib

#: the critic's logged values by their names in a non-finite-loss message
_TERMS = {"wasserstein": "W estimate", "d_real": "mean D(x)", "d_fake": "mean D(x̃)"}


class StepNetworks:
    """The algorithm's :class:`~wgangp.core.algorithm.Networks`, over a trainer's state."""

    def precision(self) -> Any:  # noqa: ANN401
        return self.updates.autocast()

    def to_layout(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=self.memory_format) if x.dim() == 4 else x

    def generate(self, z: Tensor, labels: Tensor | None) -> Tensor:
        """Fakes for a critic update: G(z) (class-conditional: G(z, labels)), no graph,
        in fp32 at least (bf16 under autocast is widened, fp64 models stay fp64)."""
        with torch.no_grad(), self.updates.autocast():
            fake = self.generator_fwd(z) if labels is None else self.generator_fwd(z, labels)
        return losses.at_least_fp32(fake)

    def critic_scores(
        self, real: Tensor, fake: Tensor, labels: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """D(real), D(fake) (one forward with ``speed.fuse_real_fake``) and their logits."""
        fuse = self.hot.fuse_real_fake
        if labels is None:
            return (*step_lib.critic_scores(self.critic_fwd, real, fake, fuse), None, None)
        return step_lib.critic_scores_and_logits(self.critic_fwd, real, fake, fuse)

    def output_scale(self) -> Tensor | None:
        return self.updates.loss_scale()

    @contextlib.contextmanager
    def critic_frozen(self) -> Any:  # noqa: ANN401
        # the critic's parameters need no gradient in the generator update: skip them
        self.critic.requires_grad_(False)
        try:
            yield
        finally:
            self.critic.requires_grad_(True)

    def generator_scores(self, z: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor | None]:
        # under DDP the plain critic: its frozen parameters are no reducer's business
        if labels is None:
            return self.critic_frozen_fwd(self.to_layout(self.generator_fwd(z))), None
        fake = self.to_layout(self.generator_fwd(z, labels))
        return self.critic_frozen_fwd(fake, with_logits=True)

    def update(self, who: str, loss: Tensor, shown: dict[str, Tensor]) -> None:
        """Backward and optimizer step of the critic or the generator (UpdateExecutor)."""
        opt = self.opt_c if who == "critic" else self.opt_g
        terms = {f"{who} loss": loss.detach()}
        terms.update({_TERMS[k]: v for k, v in shown.items() if k in _TERMS})
        if "gp" in shown:
            terms["GP"] = shown["gp"]
        # fp16: a penalty that overflowed under loss scaling is GradScaler's to skip
        # (it lowers the scale); a genuine NaN still shows in the forward terms
        check = None
        if self.scaler is not None and who == "critic":
            check = next(iter(shown.values()))
        self.updates.apply(loss, opt, who, terms, check=check)

    def noise(self, n: int) -> Tensor:
        return torch.randn(n, self.generator.z_dim, generator=self.rng, device=self.device)

    def class_labels(self, n: int) -> Tensor:
        """``n`` classes uniform over the data set's (the generator update's labels)."""
        return torch.randint(0, self.num_classes, (n,), generator=self.rng, device=self.device)

    def draw_inputs(self) -> step_lib.IterationInputs:
        """Everything random that one generator iteration consumes, drawn in the order
        the iteration uses it (real batch, latents, ε per critic update; the generator
        update's latents last), so that drawing first changes no number."""
        t = self.hot
        every = t.gp_every
        reals: list[Tensor] = []
        fake_z: list[Tensor] = []
        eps: list[Tensor | None] = []
        labels: list[Tensor] | None = [] if t.num_classes else None
        for i in range(t.n_critic):
            if labels is None:
                real = self.data.next_batch()
            else:
                real, y = self.data.next_labeled_batch()
                labels.append(y)
            reals.append(real)
            if not t.batch_fakes:
                fake_z.append(self.noise(t.batch_size))
            elif i == 0:  # all n_critic batches from one generator forward
                fake_z.append(self.noise(t.batch_size * t.n_critic))
            # lazy penalty: on every k-th critic update (counted over the whole run)
            if t.penalty and (self.step * t.n_critic + i) % every == 0:
                eps.append(
                    losses.interpolation_weights(
                        real.shape[0],
                        real.dim(),
                        device=real.device,
                        dtype=real.dtype,
                        generator=self.rng,
                    )
                )
            else:
                eps.append(None)
        gen_z = self.noise(t.gen_batch_size)
        gen_labels = self.class_labels(t.gen_batch_size) if t.num_classes else None
        return step_lib.IterationInputs(reals, fake_z, eps, gen_z, labels, gen_labels)
