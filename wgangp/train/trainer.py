"""The WGAN-GP training loop (Gulrajani et al. 2017, Algorithm 1).

One *step* is ``n_critic`` critic updates, each on a fresh real batch and fresh fakes,
followed by one generator update. The math lives in :mod:`wgangp.core.losses`; this module
owns the run's networks, optimizers and random streams, the step, and :meth:`Trainer.fit`,
the loop over the phases of each step. The phases' work lives beside it: the logs and
evaluation records in :mod:`~wgangp.train.records`, pictures in
:mod:`~wgangp.train.artifacts`, checkpoints in :mod:`~wgangp.train.state`, non-finite
updates, signals and an unwritable log in :mod:`~wgangp.train.guards`.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor
from torch.optim.swa_utils import AveragedModel

from wgangp.core import algorithm
from wgangp.core import step as step_lib
from wgangp.data import build_data
from wgangp.data.text import Vocabulary
from wgangp.errors import ConfigError, Interrupted
from wgangp.fast import layout
from wgangp.fast.conv_grad import with_native_conv_grads
from wgangp.fast.cuda_graph import GraphedIteration
from wgangp.fast.host_memory import keep_freed_host_memory
from wgangp.fast.masks import with_detached_relu_masks
from wgangp.io.checkpoint import CheckpointManager
from wgangp.io.tblog import EventLogError
from wgangp.io.trackers.base import TrackerError
from wgangp.metrics import evaluator as evaluate
from wgangp.models import build_critic, build_generator
from wgangp.models.sampling import has_batchnorm
from wgangp.train import artifacts, build, distributed, guards, optimizers, records, state
from wgangp.train.guards import NonFiniteError
from wgangp.train.networks import StepNetworks
from wgangp.train.preemption import requeue_if_submitit
from wgangp.train.step import NonFiniteStep, UpdateExecutor, resolve_nan_check

log = logging.getLogger(__name__)


class Trainer(StepNetworks):
    """Holds everything about a run and trains it; ``fit()`` runs to ``trainer.steps``."""

    def __init__(self, cfg: DictConfig, run_dir: str | Path, device: torch.device) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.device = device
        t = cfg.trainer
        # torchrun: this rank's place; rank 0 of 1 in a single process
        self.dist = distributed.info()
        torch.manual_seed(t.seed)  # weight init (the same on every rank)
        self.data = build_data(cfg.dataset, t.batch_size, device, t.seed)
        st = self.data.standardization
        if st is not None and not st.is_identity:
            log.info("the networks see standardized points: %s", st.describe())
        # conditional.enabled: the data set's classes (AC-GAN), else 0
        self.num_classes = build.conditional_classes(cfg, self.data)
        # what the step reads, read once
        self.hot = step_lib.StepSettings.from_cfg(cfg, self.num_classes)
        if self.dist.enabled:
            self.data.shard(self.dist.rank, self.dist.world_size)
        shape = self.data.sample_shape
        self.critic = build_critic(cfg.critic, shape, self.num_classes).to(device)
        if has_batchnorm(self.critic):
            if self.hot.penalty:  # validate refuses it too; this also covers custom critics
                raise ConfigError(
                    "critic.norm",
                    "batchnorm",
                    "no batch norm in the critic with loss.name=wgan-gp",
                    "the per-sample penalty needs a per-sample critic: use layernorm",
                )
            # each batch normalised by its own statistics (the official code's two calls)
            self.hot = dataclasses.replace(self.hot, fuse_real_fake=False)
        self.generator = build_generator(cfg.generator, shape, self.num_classes).to(device)
        # the layout before DDP: its gradient buckets take the parameters' strides
        self.memory_format = build.agreed_memory_format(
            cfg.speed.channels_last, device, shape, self.dist
        )
        layout.use_memory_format(self.memory_format, self.critic, self.generator)
        # the modules the training steps call: DDP wrappers under torchrun, else the
        # modules themselves; self.critic/self.generator stay the plain modules
        # (checkpoints, EMA, pictures). See wgangp.train.distributed for the GP pattern.
        self.critic_ddp = distributed.wrap(self.critic, device)
        self.generator_ddp = distributed.wrap(self.generator, device, sync_bn=t.sync_bn)
        if isinstance(self.generator_ddp, torch.nn.parallel.DistributedDataParallel):
            self.generator = self.generator_ddp.module  # SyncBatchNorm may have replaced layers
        # --- speed (the speed group, configs/speed/; scripts/bench.py measures it)
        sp = cfg.speed
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = bool(sp.cudnn_benchmark)
        keep_freed_host_memory(device, bool(sp.keep_freed_memory))
        # autocast, GradScaler, the non-finite check and the optimizer step of an update
        self.updates = UpdateExecutor(
            device,
            t.precision,
            resolve_nan_check(sp.nan_check, device, cfg.optim.name),
            graphed=bool(sp.cuda_graph),
            dist=self.dist,
        )
        self.scaler = self.updates.scaler
        self.deferred_nan_check = self.updates.deferred
        opt = cfg.optim.name
        self.opt_c = optimizers.make_optimizer(
            opt, self.critic.parameters(), cfg.optim.critic, device, sp.cuda_graph
        )
        self.opt_g = optimizers.make_optimizer(
            opt, self.generator.parameters(), cfg.optim.generator, device, sp.cuda_graph
        )
        # loss=wgan: the weights clipped after every critic update
        self.clipped = list(self.critic.parameters()) if self.hot.clip else []
        if self.dist.enabled:
            # DDP: every critic call of the critic step goes through the wrapper and one
            # backward follows (proven equal to one process in tests/test_distributed.py);
            # the generator step uses the plain, frozen critic
            self.critic_fwd: Any = self.critic_ddp
            self.generator_fwd: Any = self.generator_ddp
            self.penalty_critic: Any = self.critic_ddp
            self.critic_frozen_fwd: Any = self.critic
        else:
            # forwards without the penalty may be compiled; the penalty's double backward
            # always uses the eager critic (inductor refuses double backward, pytorch#181581)
            self.critic_fwd = torch.compile(self.critic) if sp.compile else self.critic
            self.generator_fwd = torch.compile(self.generator) if sp.compile else self.generator
            self.penalty_critic = self.critic
            if sp.detach_relu_masks:
                self.penalty_critic = with_detached_relu_masks(self.penalty_critic)
            if sp.native_conv_grads:
                self.penalty_critic = with_native_conv_grads(self.penalty_critic)
            self.critic_frozen_fwd = self.critic_fwd
        # the latest penalty's statistics (the lazy penalty logs them between penalties)
        self.penalty_stats: dict[str, Tensor] = {}
        self.ema: AveragedModel | None = None
        if t.ema.decay is not None:
            self.ema = state.new_ema(self.generator, t.ema.decay)
        # one RNG for latents and interpolation weights, on the device (no host sync)
        self.rng = torch.Generator(device=device).manual_seed(
            distributed.rank_seed(t.seed + 1, self.dist.rank)
        )
        # samples of fixed latents, drawn apart from the training stream (bitwise resume)
        self.pictures = artifacts.Pictures(
            cfg, self.data, self.num_classes, self.generator.z_dim, self.run_dir, device
        )
        self.vocab: Vocabulary | None = self.pictures.vocab  # text: checkpoints keep it
        self.step = 0
        self._saved_step: int | None = None  # the step of this process's last checkpoint
        self.nan_skips = 0
        self.train_seconds = 0.0  # wall time of fit() up to the last log, over resumes
        self.history: list[dict[str, Any]] = []
        self.overrides: list[str] = []
        self.ckpts = CheckpointManager(self.run_dir, t.keep_checkpoints)
        self.ckpts.remove_stale_temporaries()  # left by a process killed mid-write
        # sample-quality metrics (eval.every > 0), best value of eval.keep_best so far
        self.evaluator = (
            evaluate.Evaluator(cfg.eval, cfg.dataset, self.data, device)
            if cfg.eval.every and self.dist.is_main  # rank 0 evaluates, writes, keeps best
            else None
        )
        self.best: dict[str, Any] | None = None
        # speed.cuda_graph: train_step replays one captured iteration (wgangp/fast/cuda_graph.py)
        self.graphed = (
            GraphedIteration(device, self.draw_inputs, self.iteration, self.updates)
            if sp.cuda_graph
            else None
        )
        build.log_summary(cfg, self.data, self.critic, self.generator, self.dist)

    @property
    def global_batch_size(self) -> int:
        """Samples per critic update over all ranks: per-rank batch × world size."""
        return int(self.cfg.trainer.batch_size) * self.dist.world_size

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
        """One critic update on L_D = E[D(x̃)] − E[D(x)] + λ·GP
        (:func:`wgangp.core.algorithm.critic_update`).

        ``penalty=False`` leaves the penalty out (the lazy penalty's in-between steps);
        ``lam_scale`` multiplies λ (k for a penalty taken every k-th step); ``eps``: the
        interpolation weights (drawn here if not given). ``labels`` (class-conditional):
        the real batch's classes, which ``fake`` was generated with; the loss gains
        ``conditional.acgan_scale`` · CE(class logits of ``real``, ``labels``).
        """
        return algorithm.critic_update(
            self, self.hot, real, fake, penalty=penalty, lam_scale=lam_scale, eps=eps, labels=labels
        )

    def generator_step(
        self, z: Tensor | None = None, labels: Tensor | None = None
    ) -> dict[str, Tensor]:
        """One generator update on L_G = −E[D(G(z))] (``z`` drawn here if not given;
        :func:`wgangp.core.algorithm.generator_update`).

        Class-conditional: G(z, ``labels``) (uniform classes drawn here if not given),
        and L_G gains ``conditional.acgan_scale_g`` · CE(class logits, ``labels``).
        """
        if z is None:
            z = self.noise(self.hot.gen_batch_size)
        if labels is None and self.hot.num_classes:
            labels = self.class_labels(z.shape[0])
        return algorithm.generator_update(self, self.hot, z, labels)

    def measured_critic_loss(self, real: Tensor, fake: Tensor, rng: torch.Generator) -> Tensor:
        """The critic update's loss of one batch, measured without updating anything
        (eval's ``critic_loss``): the method's loss with the penalty at interpolates of
        ε drawn from ``rng`` (a CPU generator), with no AC-GAN term. D(x) and D(x̃) are
        scored apart, a batch-norm critic normalising each by its own statistics
        without touching its running ones; the plain critic, on this process alone."""
        real, fake = self.to_layout(real), self.to_layout(fake.to(real.dtype))
        with self.updates.autocast():
            return evaluate.measure_critic_batch(
                self.critic,
                real,
                fake,
                rng,
                evaluate.CriticLossSettings(
                    self.hot.objective,
                    self.hot.gp_lambda,
                    self.hot.gp_target,
                    self.hot.gp_one_sided,
                ),
                output_scale=self.updates.loss_scale(),  # fp16: as in the update
            )

    def _nonfinite(self, loss: Tensor, opt: torch.optim.Optimizer) -> Tensor:
        """1 if the loss or a gradient is NaN or ±Inf, else 0 (UpdateExecutor.nonfinite)."""
        return self.updates.nonfinite(loss, opt)

    def iteration(self, inputs: step_lib.IterationInputs) -> dict[str, Tensor]:
        """Algorithm 1 (:func:`wgangp.core.algorithm.algorithm_1`) on pre-drawn ``inputs``:
        n_critic critic updates and one generator update.

        No random draw, data read or host sync happens in here (with
        ``speed.nan_check=iteration``), which is what lets ``speed.cuda_graph``
        capture it whole (wgangp/fast/cuda_graph.py).
        """
        self.updates.start_iteration()
        return algorithm.algorithm_1(inputs, self, self.hot)

    def train_step(self) -> dict[str, Tensor]:
        """n_critic critic updates (fresh real batch, fresh fakes each), then one G update."""
        if self.graphed is not None:
            stats = self.graphed.step()  # the same iteration, replayed from a CUDA graph
        else:
            stats = self.iteration(self.draw_inputs())
        if self.deferred_nan_check:
            self.updates.check_pending()
        if self.ema is not None and self.step >= self.hot.ema_start:
            self.ema.update_parameters(self.generator)
        return stats

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict[str, float]:
        """Train to ``trainer.steps``: each step one training step (:meth:`train_step`),
        then the phases due at it: log, evaluate, diagnose, sample, checkpoint, stop on
        a signal. Returns the last logged values and metrics."""
        t, ev_every, diag_every = self.cfg.trainer, self.cfg.eval.every, self.cfg.diagnostics.every
        start_step, last, main = self.step, {}, self.dist.is_main
        writer: Any = records.NullWriter()
        bar = records.progress_bar(t.steps, self.step, t.progress and main)
        with guards.StopSignals() as signals:
            try:
                writer = records.open_run_log(self.run_dir, self.step, main, self.cfg)
                if self.step == 0 and main:  # the real data's picture, at the run's start
                    self.pictures.real(writer)
                    writer.flush()
                means = records.StepMeans(self.device)  # the first log's time starts here
                clock = guards.CheckpointClock(t.ckpt_every_minutes)
                while self.step < t.steps:
                    stats = self._next_step()
                    if stats is None:  # a non-finite update, skipped (trainer.nan_policy)
                        continue
                    self.step += 1
                    bar.update(1)
                    means.add(stats)
                    if self.step % t.log_every == 0 or self.step == t.steps:
                        last, self.train_seconds = means.take(
                            self.train_seconds, self.global_batch_size
                        )
                        self._log(writer, last)
                        bar.set_postfix(records.bar_postfix(last))
                    if self.evaluator and self.step % ev_every == 0:
                        last.update(self.evaluate(writer))
                    if diag_every and self.step % diag_every == 0 and main:
                        last.update(self.diagnose(writer))
                    if t.sample_every and self.step % t.sample_every == 0:
                        self.write_samples(writer)
                    self._checkpoint_phase(signals, clock)
                last.update(self._finish(writer, last))
            except (EventLogError, TrackerError) as e:
                raise self._event_log_failed(e, start_step) from None
            finally:
                bar.close()
                writer.discard()  # closed by _finish, unless an error is on its way
        return last

    def _checkpoint_phase(self, signals: guards.StopSignals, clock: guards.CheckpointClock) -> None:
        """One checkpoint when the step (``trainer.ckpt_every``), the wall clock
        (``trainer.ckpt_every_minutes``) or a stop signal asks for it, every rank
        agreeing; after a signal, :class:`Interrupted` (a submitit job warned with
        SIGUSR1/SIGUSR2 is requeued first, see :mod:`~wgangp.train.preemption`)."""
        every = self.cfg.trainer.ckpt_every
        on_time, stop = guards.agreed(
            (clock.due(), signals.received is not None), self.dist.enabled, self.device
        )
        if not ((every and self.step % every == 0) or on_time or stop):
            return
        saved = self.save()
        clock.restart()
        if not stop:
            return
        signum = signals.received or signal.SIGTERM  # another rank's signal: as SIGTERM
        if signum in guards.REQUEUE_SIGNALS and self.dist.is_main:
            requeue_if_submitit(signum, signals, self.step, saved)
        raise Interrupted(signum, saved)

    def _next_step(self) -> dict[str, Tensor] | None:
        """The step's learning rate, then one training step; None when it was not
        applied (a non-finite update that ``trainer.nan_policy=skip`` lets pass)."""
        if self.cfg.optim.lr_decay == "linear":
            self._decay_lr()
        try:
            return self.train_step()
        except NonFiniteStep as bad:
            t = self.cfg.trainer
            last = self.ckpts.dir / "last.pt"
            self.nan_skips = guards.skip_or_stop(
                bad, self.step, self.nan_skips, t.nan_policy, t.max_nan_skips, last
            )
            return None

    def _finish(self, writer: Any, last: dict[str, float]) -> dict[str, float]:  # noqa: ANN401
        """The end of the run: the final state evaluated and diagnosed unless that was
        done at this step (a resume at the last step, which logged nothing (``last``
        empty), evaluates again: fit returns its metrics), its samples, the final values
        to the trackers (TensorBoard's HParams entry), the final checkpoint."""
        out: dict[str, float] = {}
        if self.evaluator and (self.step % self.cfg.eval.every or not last):
            out.update(self.evaluate(writer))
        diag_every = self.cfg.diagnostics.every
        if diag_every and self.dist.is_main and self.step % diag_every:
            out.update(self.diagnose(writer))
        self.write_samples(writer)
        if self.dist.is_main:
            writer.log_final(records.final_values({**last, **out}), self.step)
        writer.flush()  # before the final checkpoint: a failure is reported like others
        self.save()
        writer.close()
        return out

    def _decay_lr(self) -> None:
        """Linear decay to 0 at ``trainer.steps`` (a function of the step: resume-safe)."""
        optimizers.decay_linearly(
            self.opt_c, self.opt_g, self.cfg.optim, self.step, self.cfg.trainer.steps
        )

    def _log(self, writer: Any, values: dict[str, float]) -> None:  # noqa: ANN401
        lrs = {
            "critic": self.opt_c.param_groups[0]["lr"],
            "generator": self.opt_g.param_groups[0]["lr"],
        }
        records.write_step_log(writer, self.step, values, lrs)

    def evaluate(self, writer: Any) -> dict[str, float]:  # noqa: ANN401
        """The evaluate phase (rank 0): ``eval.metrics`` of the sampling generator
        (``critic_loss``: against the training one), recorded; a new best
        ``eval.keep_best`` value becomes the run's ``best`` and ``checkpoints/best.pt``."""
        assert self.evaluator is not None
        result = self.evaluator.evaluate(
            self.sampling_generator(),
            critic_loss=self.measured_critic_loss,
            training_generator=self.generator,
            batch_size=self.hot.batch_size,
            best_value=self.best["value"] if self.best else None,
        )
        return records.write_evaluation(result, self.step, self.run_dir, writer, self._keep_best)

    def _keep_best(self, best: dict[str, Any]) -> Path:
        self.best = best
        return self.ckpts.save_best(self.state_dict())

    # ------------------------------------------------------------------ pictures
    def diagnostic_batch(self) -> tuple[Tensor, Tensor]:
        t = self.cfg.trainer
        return artifacts.diagnostic_batch(
            self.data, self.generator, int(t.batch_size), int(t.seed), self.device
        )

    def diagnose(self, writer: Any) -> dict[str, float]:  # noqa: ANN401
        """The diagnose phase: ``diagnostics`` at this step (artifacts.write_diagnostics)."""
        return artifacts.write_diagnostics(
            writer,
            self.step,
            self.cfg.diagnostics,
            critic=self.critic,
            generator=self.generator,
            batch=self.diagnostic_batch() if self.cfg.diagnostics.layer_grads else None,
            objective=self.hot.objective,
            clipped=self.clipped,
            clip=self.hot.clip,
        )

    def sampling_generator(self) -> torch.nn.Module:
        return artifacts.sampling_generator(self.generator, self.ema)

    def write_samples(self, writer: Any) -> None:  # noqa: ANN401
        """The sample phase (rank 0): the fixed latents' samples at this step."""
        if self.dist.is_main:
            self.pictures.samples(self.sampling_generator(), self.critic, self.step, writer)

    @property
    def fixed_z(self) -> Tensor:
        return self.pictures.fixed_z

    @property
    def grid_columns(self) -> int:
        return self.pictures.columns

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return state.state_dict(self)

    def load_state_dict(self, ckpt: dict[str, Any], path: Path | str = "checkpoint") -> None:
        state.load_state_dict(self, ckpt, path)
        graphed = self.graphed is not None
        for opt in (self.opt_c, self.opt_g):
            state.use_implementation(
                opt,
                optimizers.adam_impl(self.device, graphed),
                lambda lr: optimizers.adam_lr(lr, self.device, graphed),
            )
        if self.graphed is not None:  # the optimizer-state tensors it points at are new
            self.graphed.reset()

    def save(self) -> Path:
        """Write a checkpoint (rank 0). Under torchrun every rank must call it: the
        ranks' random streams are gathered into it (``ranks``), so that a resume with
        the same world size continues every rank's stream exactly."""
        ranks = distributed.gather_objects(state.rank_state(self)) if self.dist.enabled else None
        if not self.dist.is_main:
            return self.ckpts.dir / "last.pt"
        ckpt = state.state_dict(self, ranks)
        path = self.ckpts.save(ckpt, self.step, step_file=bool(self.cfg.trainer.ckpt_every))
        self._saved_step = self.step
        return path

    def _event_log_failed(
        self, error: EventLogError | TrackerError, start_step: int
    ) -> EventLogError | TrackerError:
        return guards.event_log_failure(
            error,
            step=self.step,
            start_step=start_step,
            steps=self.cfg.trainer.steps,
            saved_step=self._saved_step,
            distributed_run=self.dist.enabled,
            run_dir=self.run_dir,
            last=self.ckpts.dir / "last.pt",
            save=self.save,
        )


__all__ = ["Interrupted", "NonFiniteError", "Trainer"]
