"""What a run shows of itself besides numbers: the fixed-latent samples
(``samples/step_N.png|txt``), the real data's picture at step 0 (``samples/real.*``) and
the critic diagnostics (``diagnostics.*``), written to the run directory and TensorBoard;
and which generator they are taken from (the EMA one once it has averaged a step)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from wgangp.core import losses
from wgangp.data.pixels import as_signed, pixel_range
from wgangp.data.standardize import StandardizedInput
from wgangp.data.text import Vocabulary, as_markdown, write_lines
from wgangp.io.plots import image_grid, layer_grad_figure, save_figure, scatter_figure
from wgangp.metrics import diagnostics
from wgangp.models.sampling import ema_started, sampling_mode

#: seeds of the picture streams, offsets from trainer.seed: apart from the training
#: stream, so that taking pictures changes no trained number (bitwise resume)
FIXED_LATENTS_SEED = 2
DIAGNOSTIC_REAL_SEED, DIAGNOSTIC_LATENTS_SEED = 3, 4


class WithEma(Protocol):
    generator: nn.Module
    ema: AveragedModel | None


def sampling_generator(generator: nn.Module, ema: AveragedModel | None) -> nn.Module:
    """The EMA generator once it has averaged a step, else ``generator``: before
    ``trainer.ema.start`` the EMA still holds the initial weights, and pictures or
    metrics of it would show an untrained network."""
    if ema is not None and ema_started(ema.n_averaged):
        return ema.module
    return generator


def evaluated_generator(run: WithEma) -> nn.Module:
    """The generator a run's pictures and metrics are taken from (:func:`sampling_generator`)."""
    return sampling_generator(run.generator, run.ema)


def fixed_latents(
    num_classes: int, sample_shape: tuple[int, ...], z_dim: int, seed: int, device: torch.device
) -> tuple[Tensor, int]:
    """The latents of every sample picture, and the picture grid's columns.

    Fixed, so that pictures are comparable over time; points: 1024 of them, images: an
    8×8 grid; class-conditional with up to 16 classes: 10 rows of one sample per class
    (the generator's default labels are i mod K, so each column is one class), past
    that an 8×8 grid of the classes 0..63 in turn.
    """
    per_class = 0 < num_classes <= 16
    columns = num_classes if per_class else 8
    n = 1024 if len(sample_shape) == 1 else (10 * num_classes if per_class else 64)
    z = torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed + FIXED_LATENTS_SEED))
    return z.to(device), columns


class Pictures:
    """A run's sample pictures and what they are drawn with: the fixed latents
    (:func:`fixed_latents`), the grid's ``columns``, the data's pixel range (pictures
    show [-1, 1]) and, for text, its vocabulary. Files go to ``run_dir/samples``."""

    def __init__(
        self,
        cfg: Any,  # noqa: ANN401 - the run's config
        data: Any,  # noqa: ANN401 - the DataSource
        num_classes: int,
        z_dim: int,
        run_dir: Path,
        device: torch.device,
    ) -> None:
        self.fixed_z, self.columns = fixed_latents(
            num_classes, data.sample_shape, z_dim, cfg.trainer.seed, device
        )
        self.bn = cfg.eval.get("bn", "running")  # the generator's batch norms: eval.bn
        self.pixels = pixel_range(cfg.dataset)
        self.vocab: Vocabulary | None = getattr(data, "vocab", None)  # text: index → symbol
        self.data, self.dir, self.device = data, run_dir / "samples", device

    @torch.no_grad()
    def samples(self, generator: nn.Module, critic: nn.Module, step: int, writer: Any) -> None:  # noqa: ANN401
        """``generator``'s samples of the fixed latents at ``step``, as
        ``samples/step_NNNNNNN`` and TensorBoard's ``samples``: text one decoded line per
        sample, points a scatter over real points and ``critic``'s contours, images a
        grid with one class per column (class-conditional)."""
        with sampling_mode(generator, self.bn) as g:
            fake = g(self.fixed_z).float()
        name = f"step_{step:07d}"
        if self.vocab is not None:  # text: one decoded sample per line
            texts = self.vocab.decode_batch(fake)
            write_lines(self.dir / f"{name}.txt", texts)
            writer.add_text("samples", as_markdown(texts), step)
        elif fake.dim() == 2:
            n = fake.shape[0]
            real = self.data.sample(n, generator=torch.Generator(self.device).manual_seed(0))
            st = self.data.standardization
            if st is not None and not st.is_identity:  # the picture in the data's units
                fake, real = st.inverse(fake), st.inverse(real)
                critic = StandardizedInput(critic, st)
            fig = scatter_figure(fake, real, critic, title=f"step {step}")
            save_figure(fig, self.dir / f"{name}.png")
            writer.add_figure("samples", fig, step, close=True)
        else:
            fake = as_signed(fake, self.pixels)
            grid = image_grid(fake, nrow=self.columns)
            image_grid(fake, path=self.dir / f"{name}.png", nrow=self.columns)
            writer.add_image("samples", grid, step)

    def real(self, writer: Any) -> None:  # noqa: ANN401
        """64 real samples as ``samples/real.png|txt`` and TensorBoard's ``real`` (points:
        none, each sample picture shows real points)."""
        real = self.data.sample(64, generator=torch.Generator(self.device).manual_seed(0))
        if self.vocab is not None:
            texts = self.vocab.decode_batch(real)
            write_lines(self.dir / "real.txt", texts)
            writer.add_text("real", as_markdown(texts), 0)
        elif real.dim() == 4:
            real = as_signed(real, self.pixels)
            writer.add_image("real", image_grid(real, path=self.dir / "real.png"), 0)


def diagnostic_batch(
    data: Any,  # noqa: ANN401 - the DataSource
    generator: nn.Module,
    batch_size: int,
    seed: int,
    device: torch.device,
) -> tuple[Tensor, Tensor]:
    """The fixed (real, fake) batch of ``diagnostics``: ``batch_size`` real samples and
    fakes of the training generator (batch norm on the batch's statistics, as in
    training, its running statistics untouched), each from its own seed, so the training
    stream is the same with diagnostics on or off."""
    real = data.sample(
        batch_size, generator=torch.Generator(device).manual_seed(seed + DIAGNOSTIC_REAL_SEED)
    )
    z = torch.randn(
        batch_size,
        generator.z_dim,  # type: ignore[arg-type]
        generator=torch.Generator().manual_seed(seed + DIAGNOSTIC_LATENTS_SEED),
    ).to(device)
    with torch.no_grad(), sampling_mode(generator, "batch") as g:
        fake = g(z).float()
    return real.float(), fake


def write_diagnostics(
    writer: Any,  # noqa: ANN401
    step: int,
    settings: Any,  # noqa: ANN401 - the diagnostics config node
    *,
    critic: nn.Module,
    generator: nn.Module,
    batch: tuple[Tensor, Tensor] | None,
    objective: str,
    clipped: list[Tensor],
    clip: float,
) -> dict[str, float]:
    """``diagnostics`` at ``step`` (wgangp/metrics/diagnostics.py): the critic loss's
    gradient norm at each layer's input on ``batch`` (:func:`diagnostic_batch`; scalars
    and one profile picture),
    the weights' histograms and, with weight clipping (``clipped``), the fraction of
    weights at ±``clip``. Returns the scalars."""
    out: dict[str, float] = {}
    if settings.layer_grads:
        assert batch is not None
        loss_fn = losses.unpenalised_critic_loss(objective)
        res = diagnostics.layer_grad_norms(critic, *batch, loss_fn)
        norms = res.norms.tolist()
        out.update(zip(diagnostics.layer_tags(res.names), norms, strict=True))
        # the profile at this step as one picture (the scalars give each layer's history)
        fig = layer_grad_figure({f"step {step}": norms}, "critic loss gradient")
        writer.add_figure("diagnostics/layer_grads", fig, step, close=True)
    if settings.histograms:
        for who, model in (("critic", critic), ("generator", generator)):
            for name, w in diagnostics.weight_tensors(model):
                writer.add_histogram(f"weights/{who}/{name}", w.float().cpu(), step)
        if clipped:  # loss=wgan
            out["weights/critic_at_clip"] = diagnostics.fraction_at_clip(clipped, clip)
    for k, v in out.items():
        writer.add_scalar(k, v, step)
    writer.flush()
    return out


__all__ = [
    "Pictures",
    "WithEma",
    "diagnostic_batch",
    "evaluated_generator",
    "fixed_latents",
    "sampling_generator",
    "write_diagnostics",
]
