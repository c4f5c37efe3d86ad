"""``wgangp-export``: a run's generator as a file other programs load.

    wgangp-export checkpoint=PATH format=torchscript|onnx|safetensors out=PATH
                  [ema=true|false] [bn=running|batch] [device=cpu]

``checkpoint`` is a run directory (its ``checkpoints/last.pt``) or a checkpoint file.
The generator alone is written to ``out`` (the EMA weights when the run has a started
EMA; ``ema=false`` takes the generator's), and ``<out>.json`` beside it says what a
consumer needs: the latent size, the input and output shapes, the pixel range, the
data kind, the classes, the wgangp version and the run's config.

* ``torchscript``: ``torch.jit.load(out)(z[, labels])`` gives samples in the data's
  scale (points, images in the run's pixel range, text as symbol indices);
* ``onnx``: the same function for onnxruntime, the batch axis dynamic (``bn=running``);
* ``safetensors``: the network's weights only, for ``wgangp.load_safetensors(out)``.

``bn``: the batch-norm statistics the exported function uses (default: the run's
``eval.bn``). ONNX and safetensors need the ``export`` extra:
``pip install 'wgangp[export]'``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wgangp.cli.sample import check_output, key_value_args, written
from wgangp.config.validate import resolve_device
from wgangp.errors import ConfigError, UserError
from wgangp.inference.export import check_format, export_generator, metadata_path, require
from wgangp.inference.generator import load_generator
from wgangp.models.sampling import check_bn_mode

USAGE = (
    "wgangp-export checkpoint=RUN_DIR_OR_FILE format=torchscript|onnx|safetensors "
    "out=FILE [ema=true|false] [bn=running|batch] [device=cpu]"
)


@dataclass
class ExportConfig:
    checkpoint: str | None = None
    format: str | None = None
    out: str | None = None
    ema: bool | None = None  # None: the EMA generator when the checkpoint has a started one
    bn: str | None = None  # running | batch; None: the run's eval.bn
    device: str = "cpu"  # where the export traces; the files run anywhere


def parse_args(argv: list[str]) -> Any:  # noqa: ANN401
    """``key=value`` arguments checked against :class:`ExportConfig`, before any work."""
    cfg = key_value_args(ExportConfig, argv, USAGE)
    if not cfg.checkpoint:
        raise ConfigError("checkpoint", None, "a run directory or a checkpoint file", USAGE)
    if not cfg.format:
        raise ConfigError("format", None, "torchscript | onnx | safetensors", USAGE)
    check_format(cfg.format)
    if not cfg.out:
        raise ConfigError("out", None, "a file path", USAGE)
    if cfg.bn is not None:
        check_bn_mode("bn", cfg.bn)
    check_output("out", cfg.out)
    return cfg


def export(argv: list[str]) -> list[Path]:
    """Run ``wgangp-export ARGV``; returns the files written."""
    cfg = parse_args(argv)
    require(cfg.format)  # a missing extra is reported before the checkpoint loads
    check_output("out", metadata_path(cfg.out))
    gen = load_generator(cfg.checkpoint, cfg.ema, resolve_device(cfg.device))
    return export_generator(gen, cfg.format, cfg.out, cfg.bn)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    try:
        files = export(argv)
    except UserError as e:
        # resolve_device names the training key; this command's option is device=
        message = str(e).replace("trainer.device", "device")
        print(f"wgangp-export: error: {message}", file=sys.stderr)
        sys.exit(e.exit_code)
    print(written(files))


if __name__ == "__main__":
    main()
