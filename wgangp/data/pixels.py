"""The value range image pixels are trained in (``dataset.pixel_range``).

Every official image script but one scales 8-bit pixels to ``[-1, 1]``
(``2·(x/255 − 0.5)``) and ends its generator in tanh; ``gan_mnist.py`` trains on
MNIST in ``[0, 1]`` with a sigmoid generator. The range is not cosmetic: the penalty
asks for unit gradient norm *in data space*, and halving the data's scale halves
every slope, so a ``[0, 1]`` run is a different experiment from a ``[-1, 1]`` one.

Everything that shows or measures images (sample grids, ``wgangp-sample``, FID/IS/KID)
works in ``[-1, 1]``; :func:`as_signed` maps a batch there from the run's range.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from wgangp.errors import ConfigError

SIGNED = (-1.0, 1.0)  # x/127.5 − 1, tanh generators (the default)
UNIT = (0.0, 1.0)  # x/255, sigmoid generators (gan_mnist.py)
PIXEL_RANGES = (SIGNED, UNIT)


def pixel_range(dataset_cfg: Any) -> tuple[float, float]:
    """``dataset.pixel_range`` as a checked tuple; absent (older configs): [-1, 1]."""
    value = dataset_cfg.get("pixel_range") if hasattr(dataset_cfg, "get") else None
    if value is None:
        return SIGNED
    try:
        pair = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        pair = ()
    if pair not in PIXEL_RANGES:
        raise ConfigError(
            "dataset.pixel_range",
            value if isinstance(value, (str, int, float)) else list(value),
            "[-1,1] (x/127.5 − 1, tanh generators) | [0,1] (x/255, gan_mnist.py)",
            "e.g. dataset.pixel_range=[0,1]",
        )
    return pair  # type: ignore[return-value]


def as_signed(images: Tensor, pixels: tuple[float, float]) -> Tensor:
    """Images in ``pixels`` mapped to ``[-1, 1]`` (unchanged when already there)."""
    if pixels == SIGNED:
        return images
    return images * 2.0 - 1.0


__all__ = ["PIXEL_RANGES", "SIGNED", "UNIT", "as_signed", "pixel_range"]
