"""Image features for the image metrics: the extractor protocol and the Inception network.

A :class:`FeatureExtractor` maps images to ``"pool"`` features (FID, KID,
precision/recall) and ``"logits"`` (Inception Score); :func:`extract_features` runs
one over a tensor or an iterable of batches. The standard extractor is
:class:`InceptionExtractor` (torch-fidelity's bit-exact port of the TF Inception v3
of 2015-12-05 used by the original FID/IS/KID code); its weights are looked up
locally by :func:`find_inception_weights`. :func:`quantize` and :func:`to_uint8` turn
generator output into the uint8 pixels a PNG of it holds.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from wgangp.errors import MetricUnavailable

#: file names of the TF Inception weights converted to PyTorch: torch-fidelity's
#: download name first, then pytorch-fid's (same TF graph; its torchvision-style
#: parameter names load strictly into torch-fidelity's network)
INCEPTION_WEIGHTS_FILES = (
    "weights-inception-2015-12-05-6726825d.pth",
    "pt_inception-2015-12-05-6726825d.pth",
)

Features = dict[str, Tensor]
"""Extracted features: ``"pool"`` ``(N, D)`` (2048 for Inception), ``"logits"`` ``(N, C)``."""


@runtime_checkable
class FeatureExtractor(Protocol):
    """Maps images to features for the image metrics.

    Called with a batch ``(N, C, H, W)`` of either uint8 images in [0, 255] or float
    images in [-1, 1] (the generator's range), C = 1 or 3; returns a mapping with
    ``"pool"`` ``(N, D)`` features (FID, KID, precision/recall) and ``"logits"``
    ``(N, n_classes)`` class logits (Inception Score), or the tuple ``(pool, logits)``.
    ``name`` identifies the network and its weights; it is part of the real-statistics
    cache key, so two extractors with the same name must produce the same features.
    """

    name: str

    def __call__(self, images: Tensor) -> Mapping[str, Tensor] | tuple[Tensor, Tensor]: ...


def quantize(images: Tensor) -> Tensor:
    """Float images in [-1, 1] (clamped) as uint8 by ``floor((x + 1)/2 · 255 + 0.5)``,
    the rounding of ``torchvision.utils.save_image``: the bytes a PNG of them holds.
    uint8 input passes through."""
    if images.dtype == torch.uint8:
        return images
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5 + 0.5).floor().to(torch.uint8)


def to_uint8(images: Tensor) -> Tensor:
    """Images as uint8 ``(N, 3, H, W)`` in [0, 255], the input torch-fidelity expects.

    Float input is read as [-1, 1] and rounded by :func:`quantize`, so features match
    those of the same images saved as PNG. One channel is repeated to three.
    """
    if images.ndim != 4:
        raise ValueError(f"expected images (N, C, H, W), got shape {tuple(images.shape)}")
    x = quantize(images)
    c = x.shape[1]
    if c == 1:
        x = x.expand(-1, 3, -1, -1)
    elif c != 3:
        raise ValueError(f"expected 1 or 3 channels, got {c}")
    return x.contiguous()


def _as_features(out: Mapping[str, Tensor] | Sequence[Tensor]) -> Features:
    if isinstance(out, Mapping):
        pool, logits = out.get("pool"), out.get("logits")
    else:
        pool, logits = out[0], (out[1] if len(out) > 1 else None)
    if pool is None:
        raise ValueError("feature extractor returned no 'pool' features")
    feats = {"pool": pool.detach().float().cpu().flatten(1)}
    if logits is not None:
        feats["logits"] = logits.detach().float().cpu().flatten(1)
    return feats


@torch.no_grad()
def extract_features(
    extractor: FeatureExtractor | Callable[[Tensor], Any],
    images: Tensor | Iterable[Tensor],
    batch_size: int = 100,
    limit: int | None = None,
) -> Features:
    """Run ``extractor`` over ``images`` (one tensor, or an iterable of batches).

    A single tensor is cut into batches of ``batch_size``; iterables are consumed until
    ``limit`` samples are gathered (all of them when ``limit`` is None). Returns float32
    CPU features, ``{"pool": (N, D), "logits": (N, C)}`` (``logits`` when provided).
    """
    batches: Iterable[Tensor] = images.split(batch_size) if isinstance(images, Tensor) else images
    parts: dict[str, list[Tensor]] = {}
    n = 0
    for batch in batches:
        if limit is not None and n >= limit:
            break
        if limit is not None:
            batch = batch[: limit - n]
        feats = _as_features(extractor(batch))
        for k, v in feats.items():
            parts.setdefault(k, []).append(v)
        n += batch.shape[0]
    if n == 0:
        raise ValueError("no images to extract features from")
    return {k: torch.cat(v) for k, v in parts.items()}


def inception_cache_dir() -> Path:
    """Where torch hub and torch-fidelity keep weights: ``$TORCH_HOME/hub/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_inception_weights(
    weights_path: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path | None:
    """The weights file to use, or None when there is none locally.

    An explicit ``weights_path`` must exist (else :class:`MetricUnavailable`); without
    it, ``cache_dir`` (default :func:`inception_cache_dir`) is searched for the names in
    :data:`INCEPTION_WEIGHTS_FILES`. Never touches the network.
    """
    if weights_path is not None:
        p = Path(weights_path).expanduser()
        if not p.is_file():
            raise MetricUnavailable(
                f"eval.inception_weights={str(weights_path)!r}: no such file; give the path of "
                f"{INCEPTION_WEIGHTS_FILES[0]} (torch-fidelity's Inception v3 weights)"
            )
        return p
    d = Path(cache_dir).expanduser() if cache_dir is not None else inception_cache_dir()
    for name in INCEPTION_WEIGHTS_FILES:
        if (d / name).is_file():
            return d / name
    return None


class InceptionExtractor:
    """torch-fidelity's ``FeatureExtractorInceptionV3`` as a :class:`FeatureExtractor`.

    Returns the 2048-d pool features (``"pool"``) and the 1008 logits without the fc
    bias (``"logits"``, torch-fidelity's ``logits_unbiased``), which is what the
    original Inception Score code feeds to the softmax. Images are resized to 299×299
    inside the network with TF1-compatible bilinear interpolation.

    Weights: ``weights_path`` if given, else the torch hub cache (``cache_dir``, default
    ``$TORCH_HOME/hub/checkpoints``). When they are absent, :class:`MetricUnavailable`
    is raised at once unless ``allow_download=True``, in which case they are fetched
    into the cache dir (a network failure also gives :class:`MetricUnavailable`).
    """

    name = "inception-v3-tf-2015-12-05"

    def __init__(
        self,
        weights_path: str | os.PathLike[str] | None = None,
        *,
        device: str | torch.device = "cpu",
        cache_dir: str | os.PathLike[str] | None = None,
        allow_download: bool = False,
    ) -> None:
        path = find_inception_weights(weights_path, cache_dir)
        target_dir = (
            Path(cache_dir).expanduser() if cache_dir is not None else inception_cache_dir()
        )
        if path is None:
            if not allow_download:
                raise MetricUnavailable(
                    f"Inception weights for FID/KID/IS/precision/recall not found in {target_dir}; "
                    f"pass eval.inception_weights=PATH to {INCEPTION_WEIGHTS_FILES[0]}, or run "
                    "once with network access to download it there"
                )
            path = self._download(target_dir)
        try:
            from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        except ImportError as e:
            raise MetricUnavailable(
                f"image metrics need torch-fidelity ({e}); install it with "
                "`pip install 'wgangp[metrics]'`"
            ) from e
        try:
            model = FeatureExtractorInceptionV3(
                "inception-v3-compat",
                ["2048", "logits_unbiased"],
                feature_extractor_weights_path=str(path),
            )
        except Exception as e:  # corrupt or foreign file: say which, no traceback
            raise MetricUnavailable(
                f"cannot load Inception weights from {path} ({type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}); pass eval.inception_weights=PATH "
                f"to a valid {INCEPTION_WEIGHTS_FILES[0]}"
            ) from e
        self.weights_path = path
        self.device = torch.device(device)
        self.model = model.to(self.device)

    @staticmethod
    def _download(target_dir: Path) -> Path:
        from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

        target_dir.mkdir(parents=True, exist_ok=True)
        dst = target_dir / INCEPTION_WEIGHTS_FILES[0]
        try:
            torch.hub.download_url_to_file(URL_INCEPTION_V3, str(dst), progress=False)
        except Exception as e:
            raise MetricUnavailable(
                f"could not download the Inception weights from {URL_INCEPTION_V3} ({e}); "
                f"pass eval.inception_weights=PATH to {INCEPTION_WEIGHTS_FILES[0]}"
            ) from e
        return dst

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Features:
        pool, logits = self.model(to_uint8(images).to(self.device))
        return {"pool": pool, "logits": logits}


__all__ = [
    "INCEPTION_WEIGHTS_FILES",
    "FeatureExtractor",
    "Features",
    "InceptionExtractor",
    "extract_features",
    "find_inception_weights",
    "inception_cache_dir",
    "quantize",
    "to_uint8",
]
