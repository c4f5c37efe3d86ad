"""The WGAN-GP training loop (Gulrajani et al. 2017, Algorithm 1).

One *step* is ``n_critic`` critic updates, each on a fresh real batch and fresh fakes,
followed by one generator update. The math lives in :mod:`wgangp.losses`; this module
owns the state (networks, optimizers, RNGs, data position), its checkpointing, and the
run directory's logs and pictures.
"""

from __future__ import annotations

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
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from wgangp import evaluate, losses
from wgangp.checkpoint import CheckpointManager
from wgangp.data import build_data
from wgangp.errors import CheckpointError, UserError
from wgangp.models import build_critic, build_generator
from wgangp.models.mlp import count_parameters
from wgangp.plots import image_grid, save_figure, scatter_figure

log = logging.getLogger(__name__)


class Interrupted(Exception):  # noqa: N818 - a signal, not an error
    """SIGINT/SIGTERM arrived; a checkpoint was written. ``exit_code`` = 128 + signal."""

    def __init__(self, signum: int, checkpoint: Path | None) -> None:
        self.signum, self.checkpoint = signum, checkpoint
        self.exit_code = 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name}; checkpoint: {checkpoint}")


class NonFiniteError(UserError):
    """A loss or gradient became NaN/Inf; the bad update was not applied."""


def _adam(params: Any, node: Any, device: torch.device) -> torch.optim.Adam:
    # foreach kernels: one launch for all parameters, the fast path on CPU and CUDA
    return torch.optim.Adam(params, lr=node.lr, betas=tuple(node.betas), foreach=True)


class Trainer:
    """Holds everything about a run and trains it; ``fit()`` runs to ``trainer.steps``."""

    def __init__(self, cfg: DictConfig, run_dir: str | Path, device: torch.device) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.device = device
        t = cfg.trainer
        torch.manual_seed(t.seed)  # weight init
        self.data = build_data(cfg.dataset, t.batch_size, device, t.seed)
        shape = self.data.sample_shape
        self.critic = build_critic(cfg.critic, shape).to(device)
        self.generator = build_generator(cfg.generator, shape).to(device)
        self.opt_c = _adam(self.critic.parameters(), cfg.optim.critic, device)
        self.opt_g = _adam(self.generator.parameters(), cfg.optim.generator, device)
        self.ema: AveragedModel | None = None
        if t.ema.decay is not None:
            self.ema = AveragedModel(
                self.generator, multi_avg_fn=get_ema_multi_avg_fn(t.ema.decay), use_buffers=True
            )
        # one RNG for latents and interpolation weights, on the device (no host sync)
        self.rng = torch.Generator(device=device).manual_seed(t.seed + 1)
        # fixed latents make pictures comparable over time; their own RNG keeps
        # picture-taking from shifting the training stream (bitwise resume)
        n_fixed = 1024 if len(shape) == 1 else 64
        self.fixed_z = torch.randn(
            n_fixed, self.generator.z_dim, generator=torch.Generator().manual_seed(t.seed + 2)
        ).to(device)
        self.step = 0
        self.nan_skips = 0
        self.history: list[dict[str, Any]] = []
        self.overrides: list[str] = []
        self.ckpts = CheckpointManager(self.run_dir, t.keep_checkpoints)
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.precision)
        self._stop_signal: int | None = None
        # sample-quality metrics (eval.every > 0), best value of eval.keep_best so far
        self.evaluator = (
            evaluate.Evaluator(cfg.eval, cfg.dataset, self.data, device) if cfg.eval.every else None
        )
        self.best: dict[str, Any] | None = None
        log.info(
            "data %s | critic %s: %d params | generator %s: %d params",
            self.data.describe(),
            cfg.critic.name,
            count_parameters(self.critic),
            cfg.generator.name,
            count_parameters(self.generator),
        )

    # ------------------------------------------------------------------ the method
    def _autocast(self) -> Any:
        return torch.autocast(
            self.device.type, dtype=self.autocast_dtype or torch.float32,
            enabled=self.autocast_dtype is not None,
        )

    def noise(self, n: int) -> Tensor:
        return torch.randn(n, self.generator.z_dim, generator=self.rng, device=self.device)

    def critic_step(self, real: Tensor, fake: Tensor) -> dict[str, Tensor]:
        """One critic update on L_D = E[D(x̃)] − E[D(x)] + λ·GP."""
        gp_cfg = self.cfg.gp
        with self._autocast():
            d_real = self.critic(real)
            d_fake = self.critic(fake)
            gp = losses.gradient_penalty(
                self.critic, real, fake,
                target=gp_cfg.target, one_sided=gp_cfg.one_sided, generator=self.rng,
            )
        loss = losses.critic_loss(d_real, d_fake, gp.penalty, gp_cfg["lambda"])
        self._apply(loss, self.opt_c, "critic")
        return {
            "loss/critic": loss.detach(),
            "wasserstein": losses.wasserstein_estimate(d_real, d_fake).detach(),
            "gp": gp.penalty.detach(),
            "grad_norm": gp.grad_norm.detach().mean(),
        }

    def generator_step(self) -> dict[str, Tensor]:
        """One generator update on L_G = −E[D(G(z))]."""
        # the critic's parameters need no gradient here: skip computing them
        self.critic.requires_grad_(False)
        try:
            with self._autocast():
                fake = self.generator(self.noise(self.cfg.trainer.batch_size))
                loss = losses.generator_loss(self.critic(fake))
            self._apply(loss, self.opt_g, "generator")
        finally:
            self.critic.requires_grad_(True)
        if self.ema is not None and self.step >= self.cfg.trainer.ema.start:
            self.ema.update_parameters(self.generator)
        return {"loss/generator": loss.detach()}

    def _apply(self, loss: Tensor, opt: torch.optim.Optimizer, who: str) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        # Checked before the update so a NaN never reaches the weights. On CPU this
        # costs nothing; on CUDA it is one small sync per update.
        if not torch.isfinite(loss):
            opt.zero_grad(set_to_none=True)
            raise _NonFiniteStep(who, float(loss))
        opt.step()

    def train_step(self) -> dict[str, Tensor]:
        """n_critic critic updates (fresh real batch, fresh fakes each), then one G update."""
        t = self.cfg.trainer
        stats: dict[str, Tensor] = {}
        for _ in range(t.n_critic):
            real = self.data.next_batch()
            with torch.no_grad(), self._autocast():
                fake = self.generator(self.noise(t.batch_size)).float()
            stats = self.critic_step(real, fake)
        stats.update(self.generator_step())
        return stats

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict[str, float]:
        t = self.cfg.trainer
        writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.step or None)
        if self.step == 0:
            self._write_real(writer)
        sums: dict[str, Tensor] = defaultdict(lambda: torch.zeros((), device=self.device))
        count, last = 0, {}
        tick = time.perf_counter()
        bar = tqdm(
            total=t.steps, initial=self.step, disable=not t.progress, dynamic_ncols=True,
            desc="wgangp",
        )
        handlers = self._install_signal_handlers()
        try:
            while self.step < t.steps:
                if self.cfg.optim.lr_decay == "linear":
                    self._decay_lr()
                try:
                    stats = self.train_step()
                except _NonFiniteStep as bad:
                    self._handle_nonfinite(bad)
                    continue
                self.step += 1
                bar.update(1)
                for k, v in stats.items():
                    sums[k] += v
                count += 1
                if self.step % t.log_every == 0 or self.step == t.steps:
                    now = time.perf_counter()
                    last = {k: float(v) / count for k, v in sums.items()}  # the one host sync
                    last["perf/steps_per_sec"] = count / max(now - tick, 1e-9)
                    self._log(writer, last)
                    bar.set_postfix({k: f"{last[k]:.3g}" for k in ("wasserstein", "gp")})
                    sums.clear()
                    count, tick = 0, now
                if self.evaluator and self.step % self.cfg.eval.every == 0:
                    last.update(evaluate.record(self, writer))
                if t.sample_every and self.step % t.sample_every == 0:
                    self.write_samples(writer)
                if t.ckpt_every and self.step % t.ckpt_every == 0:
                    self.save()
                if self._stop_signal is not None:
                    path = self.save()
                    raise Interrupted(self._stop_signal, path)
            if self.evaluator and (self.step % self.cfg.eval.every or not last):
                last.update(evaluate.record(self, writer))
            self.write_samples(writer)
            self.save()
        finally:
            self._restore_signal_handlers(handlers)
            bar.close()
            writer.close()
        return last

    def _decay_lr(self) -> None:
        """Linear decay to 0 at ``trainer.steps`` (a function of the step: resume-safe)."""
        frac = max(0.0, 1.0 - self.step / max(self.cfg.trainer.steps, 1))
        o = self.cfg.optim
        for opt, node in ((self.opt_c, o.critic), (self.opt_g, o.generator)):
            for group in opt.param_groups:
                group["lr"] = node.lr * frac

    def _log(self, writer: SummaryWriter, values: dict[str, float]) -> None:
        for k, v in values.items():
            writer.add_scalar(k, v, self.step)
        writer.add_scalar("lr/critic", self.opt_c.param_groups[0]["lr"], self.step)
        writer.add_scalar("lr/generator", self.opt_g.param_groups[0]["lr"], self.step)
        log.info(
            "step %d | %s", self.step, " ".join(f"{k}={v:.4g}" for k, v in sorted(values.items()))
        )

    # ------------------------------------------------------------------ pictures
    def sampling_generator(self) -> torch.nn.Module:
        """The EMA generator when enabled, else the generator."""
        return self.ema.module if self.ema is not None else self.generator

    @torch.no_grad()
    def write_samples(self, writer: SummaryWriter) -> None:
        g = self.sampling_generator()
        was_training = g.training
        g.eval()
        fake = g(self.fixed_z).float()
        g.train(was_training)
        out = self.run_dir / "samples"
        if fake.dim() == 2:
            n = fake.shape[0]
            real = self.data.sample(n, generator=torch.Generator(self.device).manual_seed(0))
            fig = scatter_figure(fake, real, self.critic, title=f"step {self.step}")
            save_figure(fig, out / f"step_{self.step:07d}.png")
            writer.add_figure("samples", fig, self.step, close=True)
        else:
            grid = image_grid(fake)
            image_grid(fake, path=out / f"step_{self.step:07d}.png")
            writer.add_image("samples", grid, self.step)

    def _write_real(self, writer: SummaryWriter) -> None:
        real = self.data.sample(64, generator=torch.Generator(self.device).manual_seed(0))
        if real.dim() == 4:
            writer.add_image("real", image_grid(real, path=self.run_dir / "samples" / "real.png"), 0)

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
            "sample_shape": list(self.data.sample_shape),
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
        self.nan_skips = int(ckpt.get("nan_skips", 0))
        self.history = list(ckpt.get("history", []))
        self.best = ckpt.get("best")

    def save(self) -> Path:
        return self.ckpts.save(
            self.state_dict(), self.step, step_file=bool(self.cfg.trainer.ckpt_every)
        )

    # ------------------------------------------------------------------ faults
    def _handle_nonfinite(self, bad: _NonFiniteStep) -> None:
        t = self.cfg.trainer
        last = self.ckpts.dir / "last.pt"
        where = f"last good checkpoint: {last}" if last.exists() else "no checkpoint written yet"
        msg = (
            f"non-finite {bad.who} loss ({bad.value}) at step {self.step + 1}; "
            f"the update was not applied; {where}"
        )
        if t.nan_policy == "skip" and self.nan_skips < t.max_nan_skips:
            self.nan_skips += 1
            log.warning("%s — skipping (%d/%d)", msg, self.nan_skips, t.max_nan_skips)
            return
        raise NonFiniteError(
            msg + "; lower the learning rate or set trainer.nan_policy=skip to skip such steps"
        )

    def _install_signal_handlers(self) -> dict[int, Any]:
        def request_stop(signum: int, frame: Any) -> None:
            if self._stop_signal is not None:  # second signal: stop now
                raise KeyboardInterrupt
            self._stop_signal = signum
            log.warning("%s received: saving a checkpoint after this step", signal.Signals(signum).name)

        old: dict[int, Any] = {}
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                old[s] = signal.signal(s, request_stop)
            except ValueError:  # not the main thread (e.g. some launchers)
                pass
        return old

    @staticmethod
    def _restore_signal_handlers(old: dict[int, Any]) -> None:
        for s, h in old.items():
            signal.signal(s, h)


class _NonFiniteStep(Exception):  # noqa: N818 - internal control flow
    def __init__(self, who: str, value: float) -> None:
        self.who, self.value = who, value
        super().__init__(f"non-finite {who} loss {value}")


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
    if problems:
        shown = "; ".join(problems[:12]) + (f"; … {len(problems) - 12} more" if len(problems) > 12 else "")
        raise CheckpointError(
            path, f"its networks differ from the configured ones ({len(problems)} keys): {shown}"
        )


__all__ = ["Interrupted", "NonFiniteError", "Trainer"]
