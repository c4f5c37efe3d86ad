"""WGAN-GP (Gulrajani et al. 2017): train with ``wgangp-train``, use a run from Python.

The Python API (:mod:`wgangp.inference`), loaded on first use so that ``import wgangp``
and the command-line tools start without importing PyTorch early::

    import wgangp

    gen = wgangp.load_generator("outputs/2024-01-01/12-00-00")
    images = wgangp.sample(gen, 16, seed=0)  # (16, C, H, W) in gen.pixel_range

``load_generator``, ``sample``, ``load_critic``, ``export_generator``,
``load_safetensors`` and the :class:`~wgangp.inference.generator.Generator` class.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wgangp.inference import (
        Generator,
        export_generator,
        load_critic,
        load_generator,
        load_safetensors,
        sample,
    )

#: the public API and the module each name comes from
API = {
    "Generator": "wgangp.inference.generator",
    "load_generator": "wgangp.inference.generator",
    "load_critic": "wgangp.inference.generator",
    "sample": "wgangp.inference.generator",
    "export_generator": "wgangp.inference.export",
    "load_safetensors": "wgangp.inference.export",
}


def __getattr__(name: str) -> Any:  # noqa: ANN401
    # PEP 562: the API's modules import torch, which the CLIs load later, on purpose
    if name in API:
        return getattr(importlib.import_module(API[name]), name)
    raise AttributeError(f"module 'wgangp' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *API])


__all__ = [
    "Generator",
    "export_generator",
    "load_critic",
    "load_generator",
    "load_safetensors",
    "sample",
]
