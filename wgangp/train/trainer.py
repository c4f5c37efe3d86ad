"""The WGAN-GP training loop (Gulrajani et al. 2017, Algorithm 1).

One *step* is ``n_critic`` critic updates, each on a fresh real batch and fresh fakes,
followed by one generator update. The math lives in :mod:`wgangp.core.losses`; this module
owns the state (networks, optimizers, RNGs, data position), its checkpointing, and the
run directory's logs and pictures.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from wgangp.core import algorithm, losses
from wgangp.core import step as step_lib
from wgangp.core.optim import TFRMSprop, linear_decay
from wgangp.data import build_data
from wgangp.data.pixels import as_signed, pixel_range
from wgangp.data.text import Vocabulary, as_markdown, write_lines
from wgangp.errors import CheckpointError, ConfigError, Interrupted, UserError
from wgangp.fast import layout, subpixel
from wgangp.fast.conv_grad import with_native_conv_grads
from wgangp.fast.cuda_graph import GraphedIteration
from wgangp.fast.host_memory import keep_freed_host_memory
from wgangp.io.checkpoint import CheckpointManager
from wgangp.io.plots import image_grid, layer_grad_figure, save_figure, scatter_figure
from wgangp.io.tblog import EventLog, EventLogError
from wgangp.metrics import diagnostics
from wgangp.metrics import evaluator as evaluate
from wgangp.models import build_critic, build_generator
from wgangp.models.mlp import count_parameters
from wgangp.models.sampling import ema_started, has_batchnorm, sampling_mode
from wgangp.train import distributed
from wgangp.train.step import NonFiniteStep, UpdateExecutor, resolve_nan_check

log = logging.getLogger(__name__)


class NonFiniteError(UserError):
    """A loss or gradient became NaN/Inf; the bad update was not applied."""


#: devices with a fused (single-kernel) Adam in PyTorch
_FUSED_ADAM_DEVICES = ("cpu", "cuda", "mps", "xpu")


def _adam_impl(device: torch.device, graphed: bool = False) -> dict[str, bool]:
    """Adam's implementation flags: fused where PyTorch has it, else foreach.

    Fused: one kernel for every parameter (on 2 CPU cores a toy_quality step at batch
    256 took 21.8 ms instead of foreach's 24.3 ms), and it can skip an update on the
    device (``found_inf``), which the sync-free non-finite check and GradScaler rely on.
    ``graphed`` (speed.cuda_graph): capturable, i.e. its step count stays on the device.
    """
    fused = device.type in _FUSED_ADAM_DEVICES
    return {"fused": fused, "foreach": not fused, "capturable": graphed}


def _adam_lr(lr: Any, device: torch.device, graphed: bool) -> float | Tensor:  # noqa: ANN401
    """The learning rate as Adam should hold it: under a CUDA graph a device tensor
    (the graph reads it, linear decay writes into it), else a float."""
    value = float(lr)
    return torch.tensor(value, device=device) if graphed else value


def _optimizer(
    name: str, params: Any, node: Any, device: torch.device, graphed: bool
) -> torch.optim.Optimizer:
    """``optim.name``'s optimizer: Adam (the paper's), or TF1's RMSProp (the weight-
    clipping baseline's, wgangp/core/optim.py)."""
    if name == "rmsprop":
        return TFRMSprop(params, lr=float(node.lr))
    return _adam(params, node, device, graphed)


def _adam(params: Any, node: Any, device: torch.device, graphed: bool) -> torch.optim.Adam:
    return torch.optim.Adam(
        params,
        lr=_adam_lr(node.lr, device, graphed),
        betas=tuple(node.betas),
        **_adam_impl(device, graphed),
    )


def conditional_classes(cfg: DictConfig, data: Any) -> int:  # noqa: ANN401
    """The classes a class-conditional run (``conditional.enabled``) is trained on: the
    data set's, or 0 when the run is unconditional."""
    if not cfg.conditional.enabled:
        return 0
    if not data.num_classes:
        why = data.label_problem or f"dataset={cfg.dataset.name} has none"
        raise ConfigError(
            "conditional.enabled",
            True,
            "false for a data set without class labels",
            f"{why}; or train unconditionally (conditional.enabled=false)",
        )
    return int(data.num_classes)


#: the critic's logged values by their names in a non-finite-loss message
_TERMS = {"wasserstein": "W estimate", "d_real": "mean D(x)", "d_fake": "mean D(x̃)"}


class Trainer:
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
        self.pixels = pixel_range(cfg.dataset)  # samples are shown and saved in [-1, 1]
        # conditional.enabled: the data set's classes (AC-GAN), else 0
        self.num_classes = conditional_classes(cfg, self.data)
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
        self.memory_format = self._resolve_memory_format(shape)
        self.critic.to(memory_format=self.memory_format)
        self.generator.to(memory_format=self.memory_format)
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
        if sp.keep_freed_memory:
            keep_freed_host_memory()
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
        self.opt_c = _optimizer(
            opt, self.critic.parameters(), cfg.optim.critic, device, sp.cuda_graph
        )
        self.opt_g = _optimizer(
            opt, self.generator.parameters(), cfg.optim.generator, device, sp.cuda_graph
        )
        # loss=wgan: the weights clipped after every critic update
        self.clipped = list(self.critic.parameters()) if self.hot.clip else []
        # trainer.subpixel_convs: few-channel transposed convolutions (wgangp/fast/subpixel.py)
        use_subpixel = subpixel.resolve(t.subpixel_convs, device)
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
                self.penalty_critic = step_lib.with_detached_relu_masks(self.penalty_critic)
            if sp.native_conv_grads:
                self.penalty_critic = with_native_conv_grads(self.penalty_critic, use_subpixel)
            self.critic_frozen_fwd = self.critic_fwd
            if use_subpixel and sp.native_conv_grads and not sp.compile:
                # the generator step's backward through the frozen critic: the first
                # layer's input gradient is the same few-channel transposed convolution
                # (the other layers run the kernels autograd would: conv_grad.py)
                self.critic_frozen_fwd = with_native_conv_grads(self.critic, subpixel=True)
        if use_subpixel and not sp.compile:
            # the generator's output layer (a compiled generator keeps its own kernels)
            self.generator_fwd = subpixel.with_subpixel_convs(self.generator_fwd)
        # the latest penalty's statistics (the lazy penalty logs them between penalties)
        self.penalty_stats: dict[str, Tensor] = {}
        self.ema: AveragedModel | None = None
        if t.ema.decay is not None:
            self.ema = AveragedModel(
                self.generator, multi_avg_fn=get_ema_multi_avg_fn(t.ema.decay), use_buffers=True
            )
        # one RNG for latents and interpolation weights, on the device (no host sync)
        self.rng = torch.Generator(device=device).manual_seed(
            distributed.rank_seed(t.seed + 1, self.dist.rank)
        )
        # fixed latents make pictures comparable over time; their own RNG keeps
        # picture-taking from shifting the training stream (bitwise resume)
        # class-conditional: 10 rows of one sample per class (the generator's default
        # labels are i mod K, so each column of a K-wide grid is one class); past 16
        # classes such a grid is too wide: 8×8 samples of the classes 0..63 in turn
        per_class = 0 < self.num_classes <= 16
        self.grid_columns = self.num_classes if per_class else 8
        n_fixed = 1024 if len(shape) == 1 else (10 * self.num_classes if per_class else 64)
        # text (dataset=billion_word): index → symbol, for the sample files
        self.vocab: Vocabulary | None = getattr(self.data, "vocab", None)
        self.fixed_z = torch.randn(
            n_fixed, self.generator.z_dim, generator=torch.Generator().manual_seed(t.seed + 2)
        ).to(device)
        self.step = 0
        self._saved_step: int | None = None  # the step of this process's last checkpoint
        self.nan_skips = 0
        self.train_seconds = 0.0  # wall time of fit() up to the last log, over resumes
        self.history: list[dict[str, Any]] = []
        self.overrides: list[str] = []
        self.ckpts = CheckpointManager(self.run_dir, t.keep_checkpoints)
        self.ckpts.remove_stale_temporaries()  # left by a process killed mid-write
        self._stop_signal: int | None = None
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
        log.info(
            "data %s | critic %s: %d params | generator %s: %d params",
            self.data.describe(),
            cfg.critic.name,
            count_parameters(self.critic),
            cfg.generator.name,
            count_parameters(self.generator),
        )
        log.info(
            "effective batch size %d (%d per rank × %d ranks)",
            self.global_batch_size,
            t.batch_size,
            self.dist.world_size,
        )

    def _resolve_memory_format(self, shape: tuple[int, ...]) -> torch.memory_format:
        """speed.channels_last for this machine (wgangp/fast/layout.py). Under torchrun
        every rank takes rank 0's choice: DDP refuses replicas whose parameters'
        strides differ, which ``auto`` could give on a mixed cluster."""
        setting = self.cfg.speed.channels_last
        fmt = layout.resolve_memory_format(setting, self.device, shape)
        if self.dist.enabled and layout.normalize_setting(setting) == "auto":
            nhwc = distributed.broadcast_object(fmt == torch.channels_last)
            fmt = torch.channels_last if nhwc else torch.contiguous_format
        if len(shape) == 3:
            log.info("memory format: %s (speed.channels_last=%s)", fmt, setting)
        return fmt

    @property
    def global_batch_size(self) -> int:
        """Samples per critic update over all ranks: per-rank batch × world size."""
        return int(self.cfg.trainer.batch_size) * self.dist.world_size

    # ------------------------------------------------------------------ the method
    # Algorithm 1 itself is wgangp/core/algorithm.py; the methods below are how this
    # trainer runs its forwards and updates (the algorithm's Networks)

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
        t = self.cfg.trainer
        main = self.dist.is_main  # rank 0 alone writes logs, pictures and checkpoints
        start_step = self.step
        writer: Any = _NullWriter()
        try:
            if main:
                writer = EventLog(self.run_dir / "tb", purge_step=self.step or None)
            if self.step == 0 and main:
                self._write_real(writer)
                writer.flush()
        except EventLogError as e:
            writer.discard()
            raise self._event_log_failed(e, start_step) from None
        sums: dict[str, Tensor] = defaultdict(lambda: torch.zeros((), device=self.device))
        count, last = 0, {}
        tick = time.perf_counter()
        bar = tqdm(
            total=t.steps,
            initial=self.step,
            disable=not (t.progress and main),
            dynamic_ncols=True,
            desc="wgangp",
        )
        handlers = self._install_signal_handlers()
        diag_every = self.cfg.diagnostics.every
        try:
            while self.step < t.steps:
                if self.cfg.optim.lr_decay == "linear":
                    self._decay_lr()
                try:
                    stats = self.train_step()
                except NonFiniteStep as bad:
                    self._handle_nonfinite(bad)
                    continue
                self.step += 1
                bar.update(1)
                for k, v in stats.items():
                    sums[k] += v
                count += 1
                if self.step % t.log_every == 0 or self.step == t.steps:
                    now = time.perf_counter()
                    means = distributed.mean_over_ranks(dict(sums))  # averaged over ranks
                    last = {k: float(v) / count for k, v in means.items()}  # the one host sync
                    last["perf/steps_per_sec"] = count / max(now - tick, 1e-9)
                    # the run's time so far, resumes included and the pauses between
                    # them not (what the paper's Figure 3, right, plots quality against)
                    self.train_seconds += now - tick
                    last["perf/train_s"] = self.train_seconds
                    last["perf/global_batch_size"] = float(self.global_batch_size)
                    self._log(writer, last)
                    shown = [k for k in ("wasserstein", "gp", "d_real", "d_fake") if k in last]
                    bar.set_postfix({k: f"{last[k]:.3g}" for k in shown})
                    sums.clear()
                    count, tick = 0, now
                if self.evaluator and self.step % self.cfg.eval.every == 0:
                    last.update(evaluate.record(self, writer))
                if diag_every and self.step % diag_every == 0 and main:
                    last.update(self.diagnose(writer))
                if t.sample_every and self.step % t.sample_every == 0:
                    self.write_samples(writer)
                if t.ckpt_every and self.step % t.ckpt_every == 0:
                    self.save()
                stop = self._stop_signal is not None
                if self.dist.enabled:  # stop together, at the same step, or hang
                    stop = distributed.any_true(stop, self.device)
                if stop:
                    path = self.save()
                    raise Interrupted(self._stop_signal or signal.SIGTERM, path)
            if self.evaluator and (self.step % self.cfg.eval.every or not last):
                last.update(evaluate.record(self, writer))
            if diag_every and main and self.step % diag_every:  # the final state, too
                last.update(self.diagnose(writer))
            self.write_samples(writer)
            writer.flush()  # before the final checkpoint: a failure is reported like others
            self.save()
            writer.close()
        except EventLogError as e:
            raise self._event_log_failed(e, start_step) from None
        finally:
            self._restore_signal_handlers(handlers)
            bar.close()
            writer.discard()  # closed above, unless another error is on its way
        return last

    def _decay_lr(self) -> None:
        """Linear decay to 0 at ``trainer.steps`` (a function of the step: resume-safe)."""
        frac = linear_decay(self.step, self.cfg.trainer.steps)
        o = self.cfg.optim
        for opt, node in ((self.opt_c, o.critic), (self.opt_g, o.generator)):
            for group in opt.param_groups:
                if isinstance(group["lr"], Tensor):  # read by a CUDA graph: in place
                    group["lr"].fill_(node.lr * frac)
                else:
                    group["lr"] = node.lr * frac

    def _log(self, writer: EventLog, values: dict[str, float]) -> None:
        for k, v in values.items():
            writer.add_scalar(k, v, self.step)
        writer.add_scalar("lr/critic", self.opt_c.param_groups[0]["lr"], self.step)
        writer.add_scalar("lr/generator", self.opt_g.param_groups[0]["lr"], self.step)
        writer.flush()  # written now: a full disk stops the run at this step, not later
        log.info(
            "step %d | %s", self.step, " ".join(f"{k}={v:.4g}" for k, v in sorted(values.items()))
        )

    # ------------------------------------------------------------------ diagnostics
    def diagnostic_batch(self) -> tuple[Tensor, Tensor]:
        """The fixed (real, fake) batch of ``diagnostics``: ``trainer.batch_size`` real
        samples and fakes of the training generator (batch norm on the batch's
        statistics, as in training, its running statistics untouched), each from its
        own seed, so the training stream is the same with diagnostics on or off."""
        n, seed = int(self.cfg.trainer.batch_size), int(self.cfg.trainer.seed)
        real = self.data.sample(n, generator=torch.Generator(self.device).manual_seed(seed + 3))
        z = torch.randn(
            n, self.generator.z_dim, generator=torch.Generator().manual_seed(seed + 4)
        ).to(self.device)
        with torch.no_grad(), sampling_mode(self.generator, "batch") as g:
            fake = g(z).float()
        return real.float(), fake

    def diagnose(self, writer: EventLog | _NullWriter) -> dict[str, float]:
        """``diagnostics``: the critic loss's gradient norm at each layer's input and the
        weights' histograms, written to TensorBoard at this step (wgangp/metrics/diagnostics.py).
        Returns the scalars."""
        d = self.cfg.diagnostics
        out: dict[str, float] = {}
        if d.layer_grads:
            loss_fn = losses.unpenalised_critic_loss(self.hot.objective)
            res = diagnostics.layer_grad_norms(self.critic, *self.diagnostic_batch(), loss_fn)
            norms = res.norms.tolist()
            out.update(zip(diagnostics.layer_tags(res.names), norms, strict=True))
            # the profile at this step as one picture (the scalars give each layer's history)
            fig = layer_grad_figure({f"step {self.step}": norms}, "critic loss gradient")
            writer.add_figure("diagnostics/layer_grads", fig, self.step, close=True)
        if d.histograms:
            for who, model in (("critic", self.critic), ("generator", self.generator)):
                for name, w in diagnostics.weight_tensors(model):
                    writer.add_histogram(f"weights/{who}/{name}", w.float().cpu(), self.step)
            if self.clipped:  # loss=wgan
                out["weights/critic_at_clip"] = diagnostics.fraction_at_clip(
                    self.clipped, self.hot.clip
                )
        for k, v in out.items():
            writer.add_scalar(k, v, self.step)
        writer.flush()
        return out

    # ------------------------------------------------------------------ pictures
    def sampling_generator(self) -> torch.nn.Module:
        """The EMA generator once it has averaged a step, else the generator: before
        ``trainer.ema.start`` the EMA still holds the initial weights, and pictures or
        metrics of it would show an untrained network."""
        if self.ema is not None and ema_started(self.ema.n_averaged):
            return self.ema.module
        return self.generator

    @torch.no_grad()
    def write_samples(self, writer: EventLog) -> None:
        if not self.dist.is_main:
            return
        with sampling_mode(self.sampling_generator(), self.cfg.eval.get("bn", "running")) as g:
            fake = g(self.fixed_z).float()
        out = self.run_dir / "samples"
        if self.vocab is not None:  # text: one decoded sample per line
            texts = self.vocab.decode_batch(fake)
            write_lines(out / f"step_{self.step:07d}.txt", texts)
            writer.add_text("samples", as_markdown(texts), self.step)
        elif fake.dim() == 2:
            n = fake.shape[0]
            real = self.data.sample(n, generator=torch.Generator(self.device).manual_seed(0))
            fig = scatter_figure(fake, real, self.critic, title=f"step {self.step}")
            save_figure(fig, out / f"step_{self.step:07d}.png")
            writer.add_figure("samples", fig, self.step, close=True)
        else:
            fake = as_signed(fake, self.pixels)
            nrow = self.grid_columns  # class-conditional: one class per column
            grid = image_grid(fake, nrow=nrow)
            image_grid(fake, path=out / f"step_{self.step:07d}.png", nrow=nrow)
            writer.add_image("samples", grid, self.step)

    def _write_real(self, writer: EventLog) -> None:
        real = self.data.sample(64, generator=torch.Generator(self.device).manual_seed(0))
        if self.vocab is not None:
            texts = self.vocab.decode_batch(real)
            write_lines(self.run_dir / "samples" / "real.txt", texts)
            writer.add_text("real", as_markdown(texts), 0)
        elif real.dim() == 4:
            real = as_signed(real, self.pixels)
            writer.add_image(
                "real", image_grid(real, path=self.run_dir / "samples" / "real.png"), 0
            )

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state(), "noise": self.rng.get_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "step": self.step,
            "critic": self.critic.state_dict(),
            "generator": self.generator.state_dict(),
            "opt_critic": self.opt_c.state_dict(),
            "opt_generator": self.opt_g.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": rng,
            "data": self.data.state_dict(),
            "nan_skips": self.nan_skips,
            "train_seconds": self.train_seconds,
            "sample_shape": list(self.data.sample_shape),
            "num_classes": self.num_classes,  # class-conditional: the generator's classes
            # text: how wgangp-sample decodes the generator's output without the data
            "vocab": None if self.vocab is None else dataclasses.asdict(self.vocab),
            "config": OmegaConf.to_container(self.cfg, resolve=True),
            "overrides": list(self.overrides),
            "history": list(self.history),
            "best": self.best,
        }

    def load_state_dict(self, ckpt: dict[str, Any], path: Path | str = "checkpoint") -> None:
        _check_same_architecture(ckpt, self, path)
        self.critic.load_state_dict(ckpt["critic"])
        self.generator.load_state_dict(ckpt["generator"])
        self.opt_c.load_state_dict(ckpt["opt_critic"])
        self.opt_g.load_state_dict(ckpt["opt_generator"])
        # saved under the other memory format (speed.channels_last, or auto on
        # another machine): fused Adam would pair the moments with the wrong elements
        for opt in (self.opt_c, self.opt_g):
            layout.match_param_layouts(opt)
        # a saved param group carries the implementation it was saved with (e.g. foreach
        # from an older checkpoint or another device); this device's choice wins, or
        # the deferred check's found_inf would meet an optimizer that cannot take it
        graphed = self.graphed is not None
        for opt in (self.opt_c, self.opt_g):
            for group in opt.param_groups:
                group.update(_adam_impl(self.device, graphed))
                group["lr"] = _adam_lr(group["lr"], self.device, graphed)
            # fused Adam (capturable included) keeps the step count on the parameter's
            # device (a foreach checkpoint kept it on the host)
            if opt.param_groups[0]["fused"]:
                for param, st in opt.state.items():
                    if "step" in st:
                        st["step"] = torch.as_tensor(
                            st["step"], dtype=torch.float32, device=param.device
                        )
        if self.ema is not None and ckpt.get("ema") is not None:
            self.ema.load_state_dict(ckpt["ema"])
        elif self.ema is not None:
            log.warning("%s has no EMA state; the EMA starts from the current generator", path)
            self.ema = AveragedModel(
                self.generator,
                multi_avg_fn=get_ema_multi_avg_fn(self.cfg.trainer.ema.decay),
                use_buffers=True,
            )
        rng = ckpt["rng"]
        torch.set_rng_state(rng["torch"])
        self.rng.set_state(rng["noise"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.data.load_state_dict(ckpt["data"])
        self.step = int(ckpt["step"])
        if self.dist.enabled:
            self._load_rank_state(ckpt.get("ranks"), path)
        self.nan_skips = int(ckpt.get("nan_skips", 0))
        self.train_seconds = float(ckpt.get("train_seconds", 0.0))  # older checkpoints: 0
        self.history = list(ckpt.get("history", []))
        self.best = ckpt.get("best")
        if self.graphed is not None:  # the optimizer-state tensors it points at are new
            self.graphed.reset()

    def save(self) -> Path:
        """Write a checkpoint (rank 0). Under torchrun every rank must call it: the
        ranks' random streams are gathered into it (``ranks``), so that a resume with
        the same world size continues every rank's stream exactly."""
        ranks = None
        if self.dist.enabled:
            ranks = distributed.gather_objects(self._rank_state())
        if not self.dist.is_main:
            return self.ckpts.dir / "last.pt"
        state = self.state_dict()
        if ranks is not None:
            state["ranks"] = ranks
        path = self.ckpts.save(state, self.step, step_file=bool(self.cfg.trainer.ckpt_every))
        self._saved_step = self.step
        return path

    def _rank_state(self) -> dict[str, Any]:
        return {
            "noise": self.rng.get_state(),
            "torch": torch.get_rng_state(),
            "data": self.data.state_dict(),
        }

    def _load_rank_state(self, ranks: list[dict[str, Any]] | None, path: Any) -> None:
        """Every rank loads the same checkpoint, then takes its own random streams."""
        rank, world = self.dist.rank, self.dist.world_size
        if ranks is not None and len(ranks) == world:
            mine = ranks[rank]
            self.rng.set_state(mine["noise"])
            torch.set_rng_state(mine["torch"])
            self.data.load_state_dict(mine["data"])
            return
        had = len(ranks) if ranks is not None else 1
        if rank == 0:
            log.warning(
                "%s was written by %d process(es), this run has %d: ranks > 0 start fresh "
                "random streams (data position and weights are resumed)",
                path,
                had,
                world,
            )
        if rank > 0:
            seed = self.cfg.trainer.seed + self.step
            self.rng.manual_seed(distributed.rank_seed(seed + 1, rank))
            self.data.shard(rank, world)  # reseeds generated data for this rank

    # ------------------------------------------------------------------ faults
    def _handle_nonfinite(self, bad: NonFiniteStep) -> None:
        t = self.cfg.trainer
        last = self.ckpts.dir / "last.pt"
        where = f"last good checkpoint: {last}" if last.exists() else "no checkpoint written yet"
        terms = ", ".join(f"{k}={v:.4g}" for k, v in bad.terms.items()) or f"loss={bad.value}"
        msg = (
            f"non-finite {bad.who} {bad.cause} at step {self.step + 1} ({terms}); "
            f"the update was not applied; {where}"
        )
        if t.nan_policy == "skip" and self.nan_skips < t.max_nan_skips:
            self.nan_skips += 1
            log.warning("%s — skipping (%d/%d)", msg, self.nan_skips, t.max_nan_skips)
            return
        if t.nan_policy == "skip":  # the allowance is used up
            fix = (
                f"{self.nan_skips} such steps were skipped already "
                f"(trainer.max_nan_skips={t.max_nan_skips}); lower the learning rate, or "
                "raise trainer.max_nan_skips"
            )
        else:
            fix = "lower the learning rate or set trainer.nan_policy=skip to skip such steps"
        raise NonFiniteError(f"{msg}; {fix}")

    def _event_log_failed(self, error: EventLogError, start_step: int) -> EventLogError:
        """The error to stop with when the TensorBoard log cannot be written.

        A checkpoint of the current step is saved first when this process trained since
        its last one (as on SIGINT), so that a log-only problem costs no training; when
        that save fails too (a full disk), the previous checkpoint is intact (atomic
        writes) and the message says so.
        """
        msg = (
            f"cannot write the TensorBoard log {error.log_dir} at step {self.step} ({error.reason})"
        )
        if start_step < self.step < self.cfg.trainer.steps:
            msg += "; training stopped"
        last = self.ckpts.dir / "last.pt"
        fix = f"; free disk space or fix the permissions of {self.run_dir}"
        # under torchrun a save gathers every rank's state: rank 0 cannot save alone
        if self.step not in (start_step, self._saved_step) and not self.dist.enabled:
            try:
                msg += f"; checkpoint of step {self.step} saved: {self.save()}{fix}"
            except CheckpointError as e:  # the disk is full for checkpoints too
                msg += f"; {e}"  # ends with its own fix
        elif last.is_file():
            msg += f"; last good checkpoint: {last}{fix}"
        else:
            msg += f"; no checkpoint was written{fix}"
        if last.is_file():
            msg += f", then continue with resume={self.run_dir}"
        return EventLogError(error.log_dir, error.error, msg)

    def _install_signal_handlers(self) -> dict[int, Any]:
        def request_stop(signum: int, frame: Any) -> None:
            if self._stop_signal is not None:  # second signal: stop now
                raise KeyboardInterrupt
            self._stop_signal = signum
            log.warning(
                "%s received: saving a checkpoint after this step", signal.Signals(signum).name
            )

        old: dict[int, Any] = {}
        for s in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread (some launchers)
                old[s] = signal.signal(s, request_stop)
        return old

    @staticmethod
    def _restore_signal_handlers(old: dict[int, Any]) -> None:
        for s, h in old.items():
            signal.signal(s, h)


class _NullWriter:
    """Stands in for the SummaryWriter on ranks > 0, which write nothing."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def _check_same_architecture(ckpt: dict[str, Any], trainer: Trainer, path: Any) -> None:
    """Refuse a checkpoint whose networks differ, listing the differing parameter keys."""
    problems: list[str] = []
    for name, module in (("critic", trainer.critic), ("generator", trainer.generator)):
        have = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in ckpt[name].items()}
        for k in sorted(set(have) | set(got)):
            if k not in got:
                problems.append(f"{name}.{k}: missing in checkpoint")
            elif k not in have:
                problems.append(f"{name}.{k}: not in the configured model")
            elif have[k] != got[k]:
                problems.append(f"{name}.{k}: checkpoint {got[k]} vs configured {have[k]}")
    vocab = ckpt.get("vocab")
    if vocab and trainer.vocab is not None and tuple(vocab["symbols"]) != trainer.vocab.symbols:
        # text: the same index must mean the same symbol, or the networks' inputs and
        # outputs change meaning
        old, new = tuple(vocab["symbols"]), trainer.vocab.symbols
        same = zip(old, new, strict=False)
        at = next((i for i, (a, b) in enumerate(same) if a != b), min(len(old), len(new)))
        raise CheckpointError(
            path,
            f"its vocabulary ({len(old)} symbols, {vocab['unit']}s) differs from this data "
            f"set's ({len(new)}, {trainer.vocab.unit}s) from index {at} on; resume with the "
            f"data it was trained on (dataset.root, .max_examples, .max_vocab, .unit)",
        )
    if problems:
        shown = "; ".join(problems[:12]) + (
            f"; … {len(problems) - 12} more" if len(problems) > 12 else ""
        )
        raise CheckpointError(
            path, f"its networks differ from the configured ones ({len(problems)} keys): {shown}"
        )


__all__ = ["Interrupted", "NonFiniteError", "Trainer"]
