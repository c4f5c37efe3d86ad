"""A trained generator in a file other programs load: TorchScript, ONNX or safetensors.

Each export writes the generator alone (the EMA weights when the run has a started
EMA, as :func:`wgangp.load_generator` chooses) and beside it ``<file>.json``, what a
consumer needs to use it (:func:`metadata`): the latent size, the input and output
shapes, the pixel range, the data kind, the classes, the wgangp version and the run's
config.

* ``torchscript``: ``torch.jit.trace`` of :class:`~wgangp.inference.generator.Generator`,
  ``z`` (and ``labels``) to samples in the data's scale; ``torch.jit.load`` runs it
  without wgangp.
* ``onnx``: the same function through ``torch.onnx.export`` (the TorchScript-based
  exporter, opset 17) with a dynamic batch axis; checked by ``onnx.checker`` and run
  once through onnxruntime against PyTorch before the file is kept.
* ``safetensors``: the generator network's state dict (tensors only, the checkpoint's
  keys); :func:`load_safetensors` builds the network from the JSON's config and loads it.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import json
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from wgangp.errors import CheckpointError, ConfigError
from wgangp.inference.generator import Generator, as_device, class_labels, latents
from wgangp.io.paths import expand_path
from wgangp.models import build_generator
from wgangp.models.sampling import check_bn_mode, has_batchnorm

FORMATS = ("torchscript", "onnx", "safetensors")
#: what each format needs beyond wgangp's own dependencies (the ``export`` extra)
NEEDS = {"torchscript": (), "onnx": ("onnx", "onnxruntime"), "safetensors": ("safetensors",)}
EXTRA = "pip install 'wgangp[export]'"
#: the JSON beside an exported file says this, so a reader knows what it holds
METADATA_FORMAT = "wgangp-generator"
ONNX_OPSET = 17
#: how far onnxruntime may stray from PyTorch on the check batch (float32 kernels differ)
ONNX_TOLERANCE = 1e-4


def wgangp_version() -> str:
    """The installed wgangp's version (``0+unknown`` when run from a source tree)."""
    try:
        return version("wgangp")
    except PackageNotFoundError:
        return "0+unknown"


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ConfigError(
            "format",
            fmt,
            " | ".join(FORMATS),
            "torchscript: torch.jit.load runs it; onnx: onnxruntime and other ONNX "
            "runtimes; safetensors: the weights for the model built from the JSON's config",
        )
    return fmt


def require(fmt: str) -> list[ModuleType]:
    """The modules ``fmt`` needs, imported; a missing one is a ConfigError naming the
    extra that installs it."""
    modules = []
    for name in NEEDS[check_format(fmt)]:
        try:
            modules.append(importlib.import_module(name))
        except ImportError:
            raise ConfigError(
                "format",
                fmt,
                "torchscript, or onnx and safetensors with the export extra installed",
                f"format={fmt} needs the package {name}, which is not installed: {EXTRA}",
            ) from None
    return modules


def metadata_path(out: str | Path) -> Path:
    """Where the JSON of an export to ``out`` goes: ``<out>.json``."""
    out = expand_path(out)
    return out.with_name(out.name + ".json")


def metadata(gen: Generator, fmt: str, bn: str) -> dict[str, Any]:
    """What a consumer of ``gen`` exported as ``fmt`` needs, as JSON-ready values.

    ``inputs``: ``z`` ``(N, z_dim)`` float32, and for a class-conditional run ``labels``
    ``(N,)`` int64 in ``0..num_classes−1``; ``output_shape``: one sample of the exported
    function (``(D,)`` points, ``(C, H, W)`` images in ``pixel_range``, ``(L,)`` symbol
    indices for text); ``sample_shape``: one output of the network itself (what
    ``build_generator`` takes; safetensors files hold that network's weights).
    """
    inputs = [{"name": "z", "shape": ["N", gen.z_dim], "dtype": "float32"}]
    if gen.num_classes:
        inputs.append({"name": "labels", "shape": ["N"], "dtype": "int64"})
    out_dtype = "int64" if gen.kind == "text" else "float32"
    return {
        "format": METADATA_FORMAT,
        "file_format": fmt,
        "wgangp_version": wgangp_version(),
        "kind": gen.kind,
        "z_dim": gen.z_dim,
        "inputs": inputs,
        "output": {"name": "samples", "shape": ["N", *gen.output_shape], "dtype": out_dtype},
        "output_shape": list(gen.output_shape),
        "sample_shape": list(gen.sample_shape),
        "num_classes": gen.num_classes,
        "pixel_range": list(gen.pixel_range) if gen.pixel_range is not None else None,
        "symbols": list(gen.symbols) if gen.symbols is not None else None,
        # points: output = mean + scale · network(z), the data's units (built into the
        # torchscript and onnx files; a safetensors consumer applies it)
        "standardize": (
            gen.standardization.state_dict() if gen.standardization is not None else None
        ),
        "bn": bn,
        "ema": gen.ema,
        "step": gen.step,
        "config": gen.config,
    }


def frozen_for_export(gen: Generator, bn: str) -> Generator:
    """A copy of ``gen`` in eval mode that samples as ``bn`` says: with ``batch`` its
    batch norms lose their running statistics, so they normalise by each batch's own."""
    frozen = copy.deepcopy(gen).eval()
    if bn == "batch":
        for m in frozen.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean, m.running_var = None, None
    for p in frozen.parameters():
        p.requires_grad_(False)
    return frozen


def example_inputs(gen: Generator, n: int = 4, seed: int = 0) -> tuple[Tensor, ...]:
    """Inputs for tracing and checking: ``n`` latents of ``seed`` (and the classes
    ``0..K−1`` in turn)."""
    device = next(gen.parameters()).device
    z = latents(n, gen.z_dim, seed, device)
    labels = class_labels(gen.num_classes, n, device=device)
    return (z,) if labels is None else (z, labels)


@contextlib.contextmanager
def quiet_export() -> Any:
    """Tracing warns about Python checks it records as constants (the generators' shape
    checks on ``labels``) and the exporter about its own deprecation: nothing a user
    can act on."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def export_torchscript(gen: Generator, out: Path, bn: str) -> None:
    frozen = frozen_for_export(gen, bn)
    with quiet_export(), torch.no_grad():
        traced = torch.jit.trace(frozen, example_inputs(frozen))
    traced.save(str(out))


def export_onnx(gen: Generator, out: Path, bn: str) -> None:
    onnx, ort = require("onnx")
    frozen = frozen_for_export(gen, bn).cpu()
    inputs = example_inputs(frozen)
    names = ["z", "labels"][: len(inputs)]
    axes = {name: {0: "N"} for name in [*names, "samples"]}
    with quiet_export(), torch.no_grad():
        torch.onnx.export(
            frozen,
            inputs,
            str(out),
            input_names=names,
            output_names=["samples"],
            dynamic_axes=axes,
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    onnx.checker.check_model(str(out))
    # a check batch of another size than the traced one: the batch axis is dynamic
    check = example_inputs(frozen, n=3, seed=1)
    runtime = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = runtime.run(None, {k: v.numpy() for k, v in zip(names, check, strict=True)})[0]
    with torch.no_grad():
        want = frozen(*check)
    if got.shape != tuple(want.shape) or not torch.allclose(
        torch.from_numpy(got).to(want.dtype), want, rtol=0, atol=ONNX_TOLERANCE
    ):
        out.unlink(missing_ok=True)
        raise RuntimeError(f"the ONNX export of {out} does not reproduce the generator")


def export_safetensors(gen: Generator, out: Path) -> None:
    require("safetensors")
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in gen.network.state_dict().items()}
    save_file(state, str(out), metadata={"format": METADATA_FORMAT})


def export_generator(
    gen: Generator, fmt: str, out: str | Path, bn: str | None = None
) -> list[Path]:
    """Write ``gen`` to ``out`` as ``fmt`` (torchscript | onnx | safetensors) and its
    :func:`metadata` to ``<out>.json``; returns the two paths.

    ``bn``: the batch-norm statistics the exported function uses, ``running`` or
    ``batch`` (None: the run's ``eval.bn``, as :func:`wgangp.sample`); ONNX takes
    ``running`` only.

    Example::

        gen = wgangp.load_generator("outputs/2024-01-01/12-00-00")
        export_generator(gen, "onnx", "generator.onnx")  # and generator.onnx.json
    """
    check_format(fmt)
    bn = check_bn_mode("bn", bn or gen.bn)
    if fmt == "onnx" and bn == "batch" and has_batchnorm(gen):
        raise ConfigError(
            "bn",
            bn,
            "running with format=onnx",
            "ONNX's inference batch norm normalises with fixed statistics: export with "
            "bn=running, or use format=torchscript for each batch's own statistics",
        )
    require(fmt)
    out = expand_path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "torchscript":
        export_torchscript(gen, out, bn)
    elif fmt == "onnx":
        export_onnx(gen, out, bn)
    else:
        export_safetensors(gen, out)
    meta = metadata_path(out)
    meta.write_text(json.dumps(metadata(gen, fmt, bn), indent=2) + "\n")
    return [out, meta]


def load_safetensors(path: str | Path, device: str | torch.device = "cpu") -> Generator:
    """The :class:`Generator` of a safetensors export, rebuilt from ``<path>.json``.

    The network is built from the JSON's config (``build_generator``) and loads the
    file's tensors strictly, so it samples exactly as the checkpoint's generator.

    Example::

        gen = load_safetensors("generator.safetensors")
        images = wgangp.sample(gen, 16, seed=0)
    """
    require("safetensors")
    from safetensors.torch import load_file

    path = expand_path(path)
    meta_file = metadata_path(path)
    for p in (path, meta_file):
        if not p.is_file():
            raise CheckpointError(p, "no such file (a safetensors export writes both)")
    meta = json.loads(meta_file.read_text())
    if meta.get("format") != METADATA_FORMAT:
        raise CheckpointError(meta_file, f"not a wgangp export (no 'format: {METADATA_FORMAT}')")
    cfg = OmegaConf.create(meta["config"])
    net = build_generator(cfg.generator, tuple(meta["sample_shape"]), int(meta["num_classes"]))
    net.load_state_dict(load_file(str(path)))
    gen = Generator(
        net,
        sample_shape=tuple(meta["sample_shape"]),
        num_classes=int(meta["num_classes"]),
        config=meta["config"],
        symbols=tuple(meta["symbols"]) if meta.get("symbols") else None,
        ema=bool(meta.get("ema")),
        step=int(meta.get("step") or 0),
        standardize=meta.get("standardize"),
    )
    return gen.to(as_device(device)).eval()


__all__ = [
    "EXTRA",
    "FORMATS",
    "export_generator",
    "load_safetensors",
    "metadata",
    "metadata_path",
    "require",
]
