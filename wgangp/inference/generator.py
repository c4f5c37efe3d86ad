"""A trained generator as a module to sample from (``wgangp.load_generator``, ``wgangp.sample``).

A checkpoint holds the generator's weights, the EMA generator's when the run kept one,
and the config that built them. :func:`load_generator` rebuilds the network and wraps
it in :class:`Generator`, which carries what a consumer needs to use it without wgangp's
configs: the latent size, the shape of one sample, the classes, the data kind and, for
images, the pixel range. ``Generator(z, labels)`` maps latents to samples in the data's
scale: points in the data's own units (the run trained in standardized coordinates,
:mod:`wgangp.data.standardize`, and the module maps back), images in the run's pixel
range (``[-1, 1]`` or ``[0, 1]``), text as symbol indices (the argmax at each position).

``wgangp-sample`` uses these same functions, so a seed gives the same samples here and
in its files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from wgangp.data.pixels import pixel_range as dataset_pixel_range
from wgangp.data.standardize import Standardization, StandardizedInput
from wgangp.errors import ConfigError
from wgangp.io.checkpoint import load_checkpoint, resolve_checkpoint_path
from wgangp.models import build_critic, build_generator
from wgangp.models.sampling import ema_started, sampling_mode

#: the kinds of data a run learns (``Generator.kind``)
KINDS = ("points", "image", "text")


def data_kind(sample_shape: tuple[int, ...], has_vocab: bool) -> str:
    """``text`` for a run with a vocabulary, ``image`` for ``(C, H, W)`` samples,
    ``points`` otherwise (``(D,)`` vectors)."""
    if has_vocab:
        return "text"
    return "image" if len(sample_shape) == 3 else "points"


class Generator(nn.Module):
    """A trained generator and what a consumer needs to sample it.

    ``forward(z, labels=None)`` maps latents ``z`` of shape ``(N, z_dim)`` (and, for a
    class-conditional run, classes ``labels`` of shape ``(N,)``; None: ``i mod K`` for
    row ``i``) to ``(N, *output_shape)`` samples in the data's scale: points in the
    data's units (``mean + scale · network(z)``), images in :attr:`pixel_range`, text
    as the index of the most likely symbol at each position (``argmax`` over the
    network's ``(N, V, L)`` distributions). Batch norms follow the module's mode;
    :func:`sample` samples in the run's ``eval.bn``.

    Attributes: ``network`` (the generator itself; its state dict has the checkpoint's
    keys), ``z_dim``, ``sample_shape`` (one network output, the checkpoint's: ``(D,)``,
    ``(C, H, W)`` or ``(V, L)``), ``output_shape`` (one sample of ``forward``),
    ``num_classes`` (0: unconditional), ``kind`` (points | image | text),
    ``pixel_range`` (images: ``(-1.0, 1.0)`` or ``(0.0, 1.0)``; None otherwise),
    ``symbols`` (text: the vocabulary, ``unk`` first; None otherwise),
    ``standardization`` (points: the map between the data's units and the network's
    coordinates, a :class:`~wgangp.data.standardize.Standardization`; the identity
    for a run from before standardization; None otherwise), ``bn`` (the
    run's ``eval.bn``), ``ema`` (whether these are the EMA weights), ``step`` and
    ``config`` (the run's resolved config, a plain dict).

    Example::

        gen = wgangp.load_generator("outputs/2024-01-01/12-00-00")
        z = torch.randn(16, gen.z_dim)
        with torch.no_grad():
            images = gen(z)  # (16, C, H, W) in gen.pixel_range
    """

    def __init__(
        self,
        network: nn.Module,
        *,
        sample_shape: tuple[int, ...],
        num_classes: int,
        config: dict[str, Any],
        symbols: tuple[str, ...] | None = None,
        ema: bool = False,
        step: int = 0,
        standardize: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.network = network
        self.z_dim = int(network.z_dim)
        self.sample_shape = tuple(int(s) for s in sample_shape)
        self.num_classes = int(num_classes)
        self.kind = data_kind(self.sample_shape, symbols is not None)
        self.output_shape = self.sample_shape[1:] if self.kind == "text" else self.sample_shape
        dataset = config.get("dataset") or {}
        self.pixel_range = dataset_pixel_range(dataset) if self.kind == "image" else None
        self.symbols = symbols
        self.standardization = (
            Standardization.from_state(standardize, self.sample_shape[0])
            if self.kind == "points"
            else None
        )
        st = self.standardization
        # buffers, so .to(device) moves them and TorchScript / ONNX exports carry them
        mean, scale = (None, None) if st is None else (st.mean.float(), st.scale.float())
        self.register_buffer("data_mean", mean, persistent=False)
        self.register_buffer("data_scale", scale, persistent=False)
        self.bn = str((config.get("eval") or {}).get("bn", "running"))
        self.ema, self.step, self.config = ema, int(step), config

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        out = self.network(z, labels) if self.num_classes else self.network(z)
        if self.kind == "text":
            return out.argmax(dim=1)
        if self.data_scale is not None and not self.standardization.is_identity:
            return out * self.data_scale + self.data_mean
        return out


def as_device(device: str | torch.device) -> torch.device:
    """``device`` as a :class:`torch.device`; a ConfigError naming ``device`` if it is none."""
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(
            "device", device, "a torch device: cpu, cuda, cuda:1, mps", None
        ) from None


def load_with_checkpoint(
    checkpoint: str | Path, ema: bool | None = None, device: str | torch.device = "cpu"
) -> tuple[Generator, dict[str, Any]]:
    """:func:`load_generator`, also returning the checkpoint dict it came from."""
    ckpt_path = resolve_checkpoint_path(checkpoint)
    ckpt = load_checkpoint(ckpt_path, map_location="cpu")
    cfg = OmegaConf.create(ckpt["config"])
    num_classes = int(ckpt.get("num_classes") or 0)
    net = build_generator(cfg.generator, tuple(ckpt["sample_shape"]), num_classes)
    has_ema = ckpt.get("ema") is not None
    if ema and not has_ema:
        raise ConfigError(
            "ema", True, "false for this checkpoint", f"{ckpt_path} was trained without an EMA"
        )
    # an EMA that has not started (step < trainer.ema.start) holds the initial weights
    started = has_ema and ema_started(ckpt["ema"].get("n_averaged", 1))
    if ema and not started:
        start = cfg.trainer.ema.start
        raise ConfigError(
            "ema",
            True,
            "false for this checkpoint",
            f"its EMA has not started: step {ckpt['step']} < trainer.ema.start={start}, so "
            "it holds the initial weights; the default samples the generator",
        )
    use_ema = bool(started and ema is not False)
    if use_ema:
        prefix = "module."
        net.load_state_dict(
            {k[len(prefix) :]: v for k, v in ckpt["ema"].items() if k.startswith(prefix)}
        )
    else:
        net.load_state_dict(ckpt["generator"])
    vocab = ckpt.get("vocab")
    gen = Generator(
        net,
        sample_shape=tuple(ckpt["sample_shape"]),
        num_classes=num_classes,
        config=ckpt["config"],
        symbols=tuple(vocab["symbols"]) if vocab else None,
        ema=use_ema,
        step=int(ckpt["step"]),
        standardize=ckpt.get("standardize"),
    )
    return gen.to(as_device(device)).eval(), ckpt


def load_generator(
    checkpoint: str | Path, ema: bool | None = None, device: str | torch.device = "cpu"
) -> Generator:
    """The generator of a run, as a :class:`Generator` on ``device`` in eval mode.

    ``checkpoint``: a run directory (its ``checkpoints/last.pt``) or a checkpoint file;
    a missing, corrupt or foreign one raises :class:`wgangp.errors.CheckpointError`.
    ``ema``: None takes the EMA weights when the checkpoint has an EMA that has started
    averaging (``step ≥ trainer.ema.start``), else the generator's; True insists on the
    EMA and False on the generator (a ConfigError when there is no started EMA).

    Example::

        import wgangp
        gen = wgangp.load_generator("outputs/2024-01-01/12-00-00")
        print(gen.kind, gen.z_dim, gen.output_shape, gen.pixel_range)
    """
    return load_with_checkpoint(checkpoint, ema, device)[0]


def load_critic(checkpoint: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The critic of a run on ``device``, in eval mode.

    ``critic(x)`` scores ``(N, *sample_shape)`` data in the data's scale (points in
    the data's units: a points critic is wrapped in
    :class:`~wgangp.data.standardize.StandardizedInput`, which standardizes them as in
    training; images in the run's pixel range, text as one-hot ``(N, V, L)``)
    with ``(N,)`` linear scores, higher for data the critic takes as real; an AC-GAN
    critic (``num_classes > 0``) also gives class logits:
    ``scores, logits = critic(x, with_logits=True)``.

    Example::

        critic = wgangp.load_critic("outputs/2024-01-01/12-00-00")
        with torch.no_grad():
            scores = critic(real_batch)
    """
    ckpt = load_checkpoint(resolve_checkpoint_path(checkpoint), map_location="cpu")
    cfg = OmegaConf.create(ckpt["config"])
    num_classes = int(ckpt.get("num_classes") or 0)
    critic = build_critic(cfg.critic, tuple(ckpt["sample_shape"]), num_classes)
    critic.load_state_dict(ckpt["critic"])
    shape = tuple(ckpt["sample_shape"])
    if data_kind(shape, bool(ckpt.get("vocab"))) == "points":
        st = Standardization.from_state(ckpt.get("standardize"), shape[0])
        if not st.is_identity:
            critic = StandardizedInput(critic, st)
    return critic.to(as_device(device)).eval()


def latents(n: int, z_dim: int, seed: int, device: torch.device | str = "cpu") -> Tensor:
    """``n`` Gaussian latents drawn on the CPU from ``seed`` (the same on every device)."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(n, z_dim, generator=g).to(device)


def slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation between latents ``a`` and ``b`` (rows) at fractions ``t``."""
    an, bn = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.acos((an * bn).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


def interpolation_latents(
    strips: int, steps: int, z_dim: int, seed: int, device: torch.device | str = "cpu"
) -> Tensor:
    """``strips × steps`` latents, strip by strip: ``steps`` points of the spherical
    interpolation between two Gaussian latents drawn from ``seed``."""
    g = torch.Generator().manual_seed(int(seed))
    a = torch.randn(strips, 1, z_dim, generator=g)
    b = torch.randn(strips, 1, z_dim, generator=g)
    t = torch.linspace(0, 1, steps).view(1, -1, 1)
    return slerp(a, b, t).reshape(-1, z_dim).to(device)


def class_labels(
    num_classes: int,
    n: int,
    label: int | Tensor | None = None,
    *,
    per: int = 1,
    key: str = "labels",
    device: torch.device | str = "cpu",
) -> Tensor | None:
    """The classes of ``n`` samples of a ``num_classes``-class generator (None when it is
    unconditional): ``label`` for all (an int) or each (an ``(n,)`` tensor), or with
    ``label=None`` the classes ``0..K−1`` in turn, each for ``per`` samples in a row.
    A label an unconditional or a K-class generator cannot take is a ConfigError
    naming ``key``."""
    if not num_classes:
        if label is not None:
            raise ConfigError(
                key,
                label if isinstance(label, int) else "a tensor",
                "null for this checkpoint",
                "its run was not class-conditional (conditional.enabled=false)",
            )
        return None
    if label is None:
        return (torch.arange(n, device=device) // per) % num_classes
    if isinstance(label, Tensor):
        if label.shape != (n,) or label.is_floating_point() or label.is_complex():
            raise ConfigError(
                key,
                f"a {label.dtype} tensor of shape {tuple(label.shape)}",
                f"an integer tensor of shape ({n},) (one class per sample), an int or None",
            )
        if len(label) and not (int(label.min()) >= 0 and int(label.max()) < num_classes):
            raise ConfigError(key, label.tolist(), f"classes 0..{num_classes - 1}")
        return label.to(device=device, dtype=torch.int64)
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < num_classes:
        raise ConfigError(key, label, f"a class 0..{num_classes - 1}")
    return torch.full((n,), int(label), dtype=torch.int64, device=device)


@torch.no_grad()
def generate(gen: nn.Module, z: Tensor, batch_size: int, labels: Tensor | None = None) -> Tensor:
    """``gen`` on the latents ``z`` (and class ``labels``), ``batch_size`` at a time,
    as float (indices stay integers) on the CPU."""
    parts = range(0, len(z), batch_size)

    def run(i: int) -> Tensor:
        part = z[i : i + batch_size]
        out = gen(part) if labels is None else gen(part, labels[i : i + batch_size])
        return out.cpu() if not out.is_floating_point() else out.float().cpu()

    return torch.cat([run(i) for i in parts])


def generate_samples(
    gen: Generator, z: Tensor, labels: Tensor | None, batch_size: int, bn: str | None = None
) -> Tensor:
    """``gen``'s samples of the latents ``z`` (and ``labels``) in the data's scale, its
    batch norms as ``bn`` says (None: the run's ``eval.bn``; see
    :func:`wgangp.models.sampling.sampling_mode`), ``batch_size`` at a time."""
    with sampling_mode(gen, bn or gen.bn):  # it refuses a mode other than running | batch
        return generate(gen, z, batch_size, labels)


def sample(
    generator: Generator,
    n: int,
    labels: int | Tensor | None = None,
    seed: int = 0,
    batch_size: int = 256,
    bn: str | None = None,
) -> Tensor:
    """``n`` samples of ``generator`` in the data's scale, on the CPU.

    Points: ``(n, D)`` in the data's coordinates; images: ``(n, C, H, W)`` floats in
    ``generator.pixel_range``; text: ``(n, L)`` int64 symbol indices into
    ``generator.symbols``. The latents are ``torch.randn(n, z_dim)`` from a CPU
    generator seeded with ``seed``, so ``seed`` gives the samples ``wgangp-sample``
    writes with ``seed=`` (``.npz`` images hold them quantised to 8 bits). ``labels``
    (class-conditional runs): None for the classes ``0..K−1`` in turn, an int for one
    class, or an ``(n,)`` tensor. ``bn``: ``running`` or ``batch`` batch-norm statistics
    (None: the run's ``eval.bn``, as ``wgangp-sample``); with ``batch`` a sample
    depends on its ``batch_size`` batch.

    Example::

        gen = wgangp.load_generator("outputs/2024-01-01/12-00-00")
        x = wgangp.sample(gen, 64, seed=1)  # the same 64 samples on every call
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError("n", n, "an integer ≥ 1")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError("batch_size", batch_size, "an integer ≥ 1")
    device = next(generator.parameters()).device
    z = latents(n, generator.z_dim, seed, device)
    classes = class_labels(generator.num_classes, n, labels, device=device)
    return generate_samples(generator, z, classes, batch_size, bn)


__all__ = [
    "KINDS",
    "Generator",
    "class_labels",
    "data_kind",
    "generate",
    "generate_samples",
    "interpolation_latents",
    "latents",
    "load_critic",
    "load_generator",
    "load_with_checkpoint",
    "sample",
    "slerp",
]
