"""``wgangp-sample``: export what a run learned.

    wgangp-sample checkpoint=PATH n=N out=PATH [seed=0] [ema=true|false]
                  [batch_size=256] [device=auto] [interpolate=K] [steps=8]
                  [bn=running|batch] [label=CLASS]

``checkpoint`` is a run directory (its ``checkpoints/last.pt``) or a checkpoint file.
``out`` decides the format:

* ``*.png``: one picture — an image grid, or for points a scatter over real data;
* ``*.npz``: the array ``samples`` — ``N×D`` points in the data's coordinates, or
  ``N×C×H×W`` images as uint8 in [0, 255] (the data's own pixel scale);
* anything else: a directory of individual PNGs (``000000.png`` …); for points, the
  ``samples.npz`` and ``scatter.png``.

A text run (``dataset=billion_word``) writes ``*.txt``, one decoded sample per line
(the argmax symbol at each position), or ``*.npz`` with ``samples`` (``N×L`` symbol
indices) and ``vocab`` (the symbols, ``unk`` first); a directory gets both.

For 2-D points every output also writes the scatter picture. ``interpolate=K`` writes
``K`` latent interpolation strips of ``steps`` images (spherical interpolation between
two Gaussian latents) instead of ``n`` independent samples. ``bn``: how the
generator's batch norms normalise — ``running`` statistics (eval mode) or each batch's
own, as the official code samples (default: the run's ``eval.bn``).

A class-conditional run (``conditional.enabled=true``) generates the classes
``0, 1, …, K−1`` in turn, so a ``.png`` grid has one class per column (an
interpolation strip keeps one class); ``label=CLASS`` makes every sample that class.
Its ``.npz`` also holds the array ``labels``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import Tensor

from wgangp.config.validate import resolve_device
from wgangp.data.pixels import as_signed
from wgangp.data.text import Vocabulary, write_lines
from wgangp.errors import ConfigError, UserError
from wgangp.inference.generator import (
    class_labels,
    generate_samples,
    interpolation_latents,
    load_with_checkpoint,
)
from wgangp.inference.generator import latents as inference_latents
from wgangp.io.paths import expand_path, unwritable_reason
from wgangp.io.plots import image_grid, save_figure, scatter_figure
from wgangp.models.sampling import check_bn_mode


@dataclass
class SampleConfig:
    checkpoint: str | None = None
    n: int = 64
    out: str | None = None
    seed: int = 0
    ema: bool | None = None  # None: the EMA generator when the checkpoint has a started one
    batch_size: int = 256
    device: str = "auto"
    interpolate: int = 0
    steps: int = 8
    bn: str | None = None  # running | batch; None: the run's eval.bn (running by default)
    label: int | None = None  # class-conditional runs: one class for all; None: 0..K-1 in turn


def key_value_args(schema: type, argv: list[str], usage: str) -> Any:  # noqa: ANN401
    """``key=value`` arguments merged onto the dataclass ``schema``: a non-``key=value``
    argument, an unknown key or a wrong type is one ConfigError line with ``usage``."""
    bad = [a for a in argv if "=" not in a]
    if bad:
        raise ConfigError(bad[0].split("=")[0], bad[0], "key=value arguments", f"usage: {usage}")
    try:
        return OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.from_dotlist(argv))
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", "") or "argument"
        raise ConfigError(key, str(e).splitlines()[0], f"see: {usage}") from None


def parse_args(argv: list[str]) -> Any:
    """``key=value`` arguments checked against :class:`SampleConfig`."""
    cfg = key_value_args(SampleConfig, argv, USAGE)
    if not cfg.checkpoint:
        raise ConfigError("checkpoint", None, "a run directory or a checkpoint file", USAGE)
    if not cfg.out:
        raise ConfigError("out", None, "a .png or .npz file, or a directory", USAGE)
    if cfg.n < 1:
        raise ConfigError("n", cfg.n, "an integer ≥ 1")
    if cfg.batch_size < 1:
        raise ConfigError("batch_size", cfg.batch_size, "an integer ≥ 1")
    if cfg.interpolate < 0 or cfg.steps < 2:
        raise ConfigError(
            "interpolate/steps", (cfg.interpolate, cfg.steps), "interpolate ≥ 0, steps ≥ 2"
        )
    suffix = expand_path(cfg.out).suffix
    if suffix not in ("", ".png", ".npz", ".txt"):
        raise ConfigError(
            "out", cfg.out, "a .png, .npz or .txt (text runs) file, or a directory (no suffix)"
        )
    check_output("out", cfg.out, directory=not suffix)
    return cfg


def check_output(key: str, path: str | Path, directory: bool = False) -> Path:
    """``path`` as an output (a file, or a ``directory``), checked before any work.

    ConfigError naming ``key`` when it cannot be written: an existing directory where
    a file is wanted (or a file where a directory is), a parent that is a file, or a
    place this process cannot create files in (:func:`wgangp.io.paths.unwritable_reason`).
    """
    p = Path(os.path.abspath(expand_path(path)))
    what = "a directory" if directory else "a file"
    if directory and p.exists() and not p.is_dir():
        reason: str | None = f"{p} is a file, not a directory"
    elif not directory and p.is_dir():
        reason = f"{p} is a directory"
    else:
        reason = unwritable_reason(p if directory else p.parent)  # probes with a file
    if reason:
        raise ConfigError(
            key,
            str(path),
            f"{what} path that can be created and written",
            f"{reason}; choose another {key}=PATH",
        )
    return p


USAGE = (
    "wgangp-sample checkpoint=RUN_DIR_OR_FILE n=N out=FILE.png|FILE.npz|FILE.txt|DIR "
    "[seed=0] [ema=true|false] [batch_size=256] [device=auto] [interpolate=K] [steps=8] "
    "[bn=running|batch] [label=CLASS]"
)


def sample_labels(cfg: Any, num_classes: int, n: int, device: torch.device) -> Tensor | None:  # noqa: ANN401
    """The classes of ``n`` samples of a class-conditional generator (None otherwise):
    ``label`` for all, or ``0..K−1`` in turn (per interpolation strip)."""
    per = cfg.steps if cfg.interpolate else 1  # an interpolation strip keeps one class
    return class_labels(num_classes, n, cfg.label, per=per, key="label", device=device)


def latents(cfg: Any, z_dim: int, device: torch.device) -> Tensor:  # noqa: ANN401
    """The ``n`` latents of ``seed``, or the interpolation strips' (``interpolate=K``)."""
    if cfg.interpolate:
        return interpolation_latents(cfg.interpolate, cfg.steps, z_dim, cfg.seed, device)
    return inference_latents(cfg.n, z_dim, cfg.seed, device)


def to_uint8(images: Tensor) -> np.ndarray:
    """The bytes a PNG of these [-1, 1] images holds (the rounding of the grids too)."""
    from wgangp.metrics.features import quantize

    return quantize(images).numpy()


def write(
    samples: Tensor, out: Path, ckpt: dict, cfg: Any, labels: Tensor | None = None
) -> list[Path]:
    """Write ``samples`` (of classes ``labels``, class-conditional runs) to ``out`` in the
    format its name asks for; returns the files."""
    written: list[Path] = []
    check_format(out, ckpt)
    if ckpt.get("vocab"):
        return _write_text(
            samples, out, Vocabulary(tuple(ckpt["vocab"]["symbols"]), ckpt["vocab"]["unit"])
        )
    is_points = samples.dim() == 2
    num_classes = int(ckpt.get("num_classes") or 0)
    balanced = num_classes and cfg.label is None  # one class per column
    nrow = cfg.steps if cfg.interpolate else (num_classes if balanced else 8)
    if out.suffix == ".npz":
        out.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"samples": samples.numpy() if is_points else to_uint8(samples)}
        if labels is not None:
            arrays["labels"] = labels.cpu().numpy()
        np.savez(out, **arrays)  # type: ignore[arg-type]
        written.append(out)
    elif out.suffix == ".png":
        if is_points:
            written += _scatter(samples, out, ckpt)
        else:
            image_grid(samples, path=out, nrow=nrow)
            written.append(out)
    elif out.suffix:
        raise ConfigError("out", str(out), "a .png or .npz file, or a directory (no suffix)")
    else:
        out.mkdir(parents=True, exist_ok=True)
        if is_points:
            np.savez(out / "samples.npz", samples=samples.numpy())
            written.append(out / "samples.npz")
            written += _scatter(samples, out / "scatter.png", ckpt)
        else:
            from PIL import Image

            for i, img in enumerate(to_uint8(samples)):
                arr = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
                p = out / f"{i:06d}.png"
                Image.fromarray(arr).save(p)
                written.append(p)
    if is_points and out.suffix == ".npz":
        written += _scatter(samples, out.with_suffix(".png"), ckpt)
    return written


def check_format(out: Path, ckpt: dict) -> None:
    """``out``'s format fits the checkpoint's data: ``.txt`` only for text runs,
    ``.png`` never for them (checked before any sample is generated)."""
    text = bool(ckpt.get("vocab"))
    if text and out.suffix == ".png":
        raise ConfigError(
            "out", str(out), "a .txt or .npz file, or a directory", "this is a text run"
        )
    if not text and out.suffix == ".txt":
        raise ConfigError(
            "out", str(out), "a .png or .npz file, or a directory", ".txt is for text runs"
        )


def _write_text(indices: Tensor, out: Path, vocab: Vocabulary) -> list[Path]:
    """A text run's samples (``(N, L)`` symbol indices) as lines and/or indices."""
    written: list[Path] = []
    if out.suffix in ("", ".txt"):
        written.append(
            write_lines(out / "samples.txt" if not out.suffix else out, vocab.decode_batch(indices))
        )
    if out.suffix in ("", ".npz"):
        path = out / "samples.npz" if not out.suffix else out
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, samples=indices.numpy().astype(np.int16), vocab=np.array(vocab.symbols))
        written.append(path)
    return written


def _scatter(samples: Tensor, path: Path, ckpt: dict) -> list[Path]:
    if samples.shape[1] < 2:
        return []
    real = _real_points(ckpt, len(samples))
    fig = scatter_figure(
        samples, real if real is not None else samples[:0], title=f"step {ckpt['step']}"
    )
    save_figure(fig, path)
    return [path]


def _real_points(ckpt: dict, n: int) -> Tensor | None:
    """Fresh real points for the scatter, when the data set can still be built here."""
    from wgangp.data import build_data

    try:
        cfg = OmegaConf.create(ckpt["config"])
        src = build_data(cfg.dataset, min(n, 256), torch.device("cpu"), seed=0)
        real = src.sample(n, generator=torch.Generator().manual_seed(0))
        st = src.standardization
        return real if st is None else st.inverse(real)  # in the data's units
    except (UserError, OSError):
        return None


def sample(argv: list[str]) -> list[Path]:
    cfg = parse_args(argv)
    if cfg.bn is not None:
        check_bn_mode("bn", cfg.bn)
    device = resolve_device(cfg.device)
    gen, ckpt = load_with_checkpoint(cfg.checkpoint, cfg.ema, device)
    check_format(Path(cfg.out).expanduser(), ckpt)
    z = latents(cfg, gen.z_dim, device)
    labels = sample_labels(cfg, gen.num_classes, len(z), device)
    samples = generate_samples(gen, z, labels, cfg.batch_size, cfg.bn)
    if gen.kind == "image":  # the files hold 8-bit pixels whatever the run's range
        samples = as_signed(samples, gen.pixel_range)
    return write(samples, Path(cfg.out).expanduser(), ckpt, cfg, labels)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    try:
        files = sample(argv)
    except UserError as e:
        # resolve_device names the training key; this command's option is device=
        message = str(e).replace("trainer.device", "device")
        print(f"wgangp-sample: error: {message}", file=sys.stderr)
        sys.exit(e.exit_code)
    print(written(files))


def written(files: list[Path]) -> str:
    """The line saying what was written: the files by name, or their folder past four
    (a directory of one file per sample)."""
    if len(files) <= 4:
        return "wrote " + ", ".join(str(p) for p in files)
    return f"wrote {len(files)} files into {files[0].parent}"


if __name__ == "__main__":
    main()
