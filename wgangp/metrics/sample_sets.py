"""Images to score that no checkpoint made: a folder, an ``.npz`` array, reference files.

* :func:`folder_batches`: every image under a folder (found as ``image_folder`` finds
  them), decoded with PIL to 8-bit RGB at its own size, in batches of equal size; a file
  that does not decode is an error, not a skip (a score of fewer samples than asked
  would pass silently).
* :func:`load_npz_samples`: the array ``samples`` of an ``.npz``, ``N×C×H×W`` or
  ``N×H×W×C`` (C = 1 or 3), uint8 in [0, 255] or float in the data's pixel range.
* :func:`save_reference` / :func:`load_reference`: the ``mu`` / ``sigma`` ``.npz`` of
  TTUR and pytorch-fid (float64 mean and covariance of the 2048-d pool features).
* :class:`CleanResize`: clean-fid's resize, PIL bicubic to 299×299 per image, in front
  of any extractor; without it the network resizes (:data:`RESIZES`).
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from wgangp.data.image_folder import find_images
from wgangp.data.pixels import SIGNED
from wgangp.errors import ConfigError, DataError
from wgangp.metrics.features import FeatureExtractor, to_uint8

#: ``resize=`` values: how images reach the network's 299×299 input
RESIZES = {
    "legacy_tensorflow": "TF1-compatible bilinear to 299x299 inside the network "
    "(TTUR, torch-fidelity; published FIDs)",
    "clean": "PIL bicubic to 299x299 per image, rounded to 8 bits (clean-fid)",
}
INCEPTION_SIZE = 299
#: how far float samples may stray outside their pixel range (round-off of a tanh)
RANGE_SLACK = 1e-3


def folder_batches(
    key: str, root: Path, batch_size: int, limit: int | None = None
) -> Iterator[Tensor]:
    """The images under ``root`` as uint8 ``(n, 3, H, W)`` batches of at most
    ``batch_size``, in sorted path order, a new batch wherever the size changes; the
    first ``limit`` images (all when None). A file PIL cannot decode is a
    :class:`DataError` naming ``key``, the file and PIL's reason."""
    if not root.is_dir():
        raise ConfigError(key, str(root), "a folder of images or an .npz file", "check the path")
    paths = find_images(root)[:limit]
    if not paths:
        raise ConfigError(
            key, str(root), "a folder holding .png/.jpg/... images (sub-folders allowed)"
        )
    batch: list[np.ndarray] = []
    for path in paths:
        try:
            with Image.open(path) as img:
                pixels = np.asarray(img.convert("RGB"))
        except Exception as e:  # any decoding failure: say which file and why
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise DataError(
                f"{key}={str(root)!r}: cannot decode {path} ({reason}); remove or replace it"
            ) from None
        if batch and (pixels.shape != batch[0].shape or len(batch) == batch_size):
            yield torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).contiguous()
            batch = []
        batch.append(pixels)
    yield torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).contiguous()


def load_npz_samples(key: str, path: Path, pixels: tuple[float, float] = SIGNED) -> Tensor:
    """The array ``samples`` of ``path`` as ``(N, C, H, W)``: uint8 as stored, float
    mapped from ``pixels`` to [-1, 1]. ``N×C×H×W`` is read when the second axis is 1 or
    3, else ``N×H×W×C`` when the last is. Anything else is a :class:`ConfigError`."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "samples" not in archive.files:
                raise ConfigError(
                    key,
                    str(path),
                    "an .npz with the array 'samples'",
                    f"it holds {sorted(archive.files)}; save with np.savez(path, samples=x)",
                )
            x = archive["samples"]
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise ConfigError(key, str(path), "a readable .npz file", str(e).splitlines()[0]) from None
    shape = "x".join(map(str, x.shape))
    if x.ndim == 4 and x.shape[1] in (1, 3):
        images = torch.from_numpy(x)
    elif x.ndim == 4 and x.shape[3] in (1, 3):
        images = torch.from_numpy(x).permute(0, 3, 1, 2)
    else:
        raise ConfigError(
            key,
            str(path),
            "samples of shape NxCxHxW or NxHxWxC with C = 1 or 3",
            f"its samples are {shape}",
        )
    if images.dtype == torch.uint8:
        return images.contiguous()
    if not images.is_floating_point():
        raise ConfigError(
            key, str(path), "uint8 samples in [0, 255] or float samples", f"its are {x.dtype}"
        )
    lo, hi = pixels
    seen = (float(images.min()), float(images.max()))
    if seen[0] < lo - RANGE_SLACK or seen[1] > hi + RANGE_SLACK:
        raise ConfigError(
            key,
            str(path),
            f"float samples in the data's pixel range [{lo:g}, {hi:g}]",
            f"its values span [{seen[0]:.4g}, {seen[1]:.4g}]; store uint8 in [0, 255]",
        )
    images = images.float()
    return images if pixels == SIGNED else images * 2.0 - 1.0


def save_reference(path: Path, mu: Tensor, sigma: Tensor) -> None:
    """Write ``mu`` (D,) and ``sigma`` (D, D) as float64 arrays to the ``.npz`` ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:  # a file object: np.savez adds no second suffix
        np.savez(f, mu=mu.double().numpy(), sigma=sigma.double().numpy())


def load_reference(key: str, path: Path) -> tuple[Tensor, Tensor]:
    """``(mu, sigma)`` float64 from a TTUR / pytorch-fid ``.npz`` (arrays ``mu``, ``sigma``)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in ("mu", "sigma") if k not in archive.files]
            if missing:
                raise ConfigError(
                    key,
                    str(path),
                    "an .npz of reference statistics with the arrays 'mu' and 'sigma'",
                    f"it holds {sorted(archive.files)}; write one with save_ref=PATH",
                )
            mu, sigma = archive["mu"], archive["sigma"]
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise ConfigError(key, str(path), "a readable .npz file", str(e).splitlines()[0]) from None
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ConfigError(
            key,
            str(path),
            "mu of shape D and sigma of shape DxD",
            f"its mu is {mu.shape} and sigma {sigma.shape}",
        )
    return torch.from_numpy(mu).double(), torch.from_numpy(sigma).double()


class CleanResize:
    """``extractor`` fed images resized as clean-fid does: each channel of the 8-bit
    image resized in float with PIL's bicubic filter to ``size``×``size``, then rounded
    and clipped to 8 bits (the network takes uint8). Its ``name`` tells the
    real-statistics cache apart from the network's own resize."""

    def __init__(self, extractor: FeatureExtractor, size: int | None = None) -> None:
        self.extractor = extractor
        self.size = size or INCEPTION_SIZE
        self.name = f"{extractor.name}-clean{size}"

    def resize(self, images: Tensor) -> Tensor:
        """uint8 ``(N, 3, size, size)`` of ``images`` (uint8, or float in [-1, 1])."""
        x = to_uint8(images).cpu().numpy().astype(np.float32)
        out = np.empty((x.shape[0], 3, self.size, self.size), np.float32)
        for i in range(x.shape[0]):
            for c in range(3):
                channel = Image.fromarray(x[i, c])  # float32: mode "F"
                out[i, c] = np.asarray(
                    channel.resize((self.size, self.size), resample=Image.Resampling.BICUBIC)
                )
        return torch.from_numpy(np.clip(np.rint(out), 0, 255).astype(np.uint8))

    def __call__(self, images: Tensor) -> Any:  # noqa: ANN401
        return self.extractor(self.resize(images))


__all__ = [
    "INCEPTION_SIZE",
    "RESIZES",
    "CleanResize",
    "folder_batches",
    "load_npz_samples",
    "load_reference",
    "save_reference",
]
