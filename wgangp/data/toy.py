"""The paper's toy distributions, sampled on the fly or as one fixed set, and point
sets from files.

Scales follow the official ``gan_toy.py``: the 8-Gaussian ring has centres at radius 2
and std 0.02, the 25-Gaussian grid spacing 2 and std 0.05, each divided by the same
constant as the official script (√2 and 2√2), and the Swiss roll is sklearn's
``make_swiss_roll(noise=0.25)`` projected on (x, z) and divided by 7.5.

Every source draws in the networks' coordinates and carries the
:class:`~wgangp.data.standardize.Standardization` back to the data's units; its
``modes`` and ``mode_std`` are in the data's units (:mod:`wgangp.data.standardize`).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from wgangp.data.base import DataSource, TensorSource
from wgangp.data.standardize import (
    Standardization,
    configured,
    plain_value,
    standardization_mode,
)
from wgangp.errors import ConfigError, DataError
from wgangp.io.paths import expand_path


def ring_modes(k: int = 8, radius: float = 2.0) -> Tensor:
    angles = torch.arange(k, dtype=torch.float64) * (2 * math.pi / k)
    return torch.stack([torch.cos(angles), torch.sin(angles)], dim=1).float() * radius


def grid_modes(side: int = 5, spacing: float = 2.0) -> Tensor:
    r = (torch.arange(side, dtype=torch.float32) - (side - 1) / 2) * spacing
    xx, yy = torch.meshgrid(r, r, indexing="ij")
    return torch.stack([xx.flatten(), yy.flatten()], dim=1)


class _Generated(DataSource):
    """Data sampled on the fly from ``self.rng`` (seeded with ``self.seed``)."""

    seed: int
    rng: torch.Generator
    batch_size: int

    def next_batch(self) -> Tensor:
        return self.sample(self.batch_size)

    def unseen(self) -> DataSource:
        """Every draw is fresh: an evaluation's own draws are held out."""
        return self

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.set_state(state["rng"])

    def shard(self, rank: int, world_size: int) -> None:
        """Each rank samples its own ``batch_size`` points from its own seed."""
        from wgangp.data.image_source import rank_seed

        del world_size
        self.rng.manual_seed(rank_seed(self.seed, rank))


class MixtureOfGaussians(_Generated):
    """Isotropic Gaussians of equal weight around fixed centres, sampled on the device.

    ``centres`` and ``std`` are in the networks' coordinates; ``modes`` and ``mode_std``
    are the same in the data's units, through ``standardization`` (global: one scale).
    """

    def __init__(
        self,
        centres: Tensor,
        std: float,
        batch_size: int,
        device: torch.device,
        seed: int,
        standardization: Standardization | None = None,
    ) -> None:
        self.centres = centres.to(device)
        self.centre_std = std
        st = standardization or Standardization.identity(centres.shape[1])
        self.standardization = st
        self.modes = st.inverse(self.centres)
        self.mode_std = std if st.is_identity else std * float(st.scale[0])
        self.sample_shape = (centres.shape[1],)
        self.batch_size = batch_size
        self.device = device
        self.seed = seed
        self.rng = torch.Generator(device=device).manual_seed(seed)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        g = generator if generator is not None else self.rng
        dev = g.device
        k = torch.randint(0, self.centres.shape[0], (n,), generator=g, device=dev)
        noise = torch.randn(n, self.centres.shape[1], generator=g, device=dev)
        return (self.centres.to(dev)[k] + self.centre_std * noise).to(self.device)

    def use_standardization(self, st: Standardization) -> None:
        """Draw in ``st``'s coordinates (a checkpoint's), the modes staying where they are."""
        self.centres = st.forward(self.modes.double()).float() if not st.is_identity else self.modes
        self.centre_std = self.mode_std / float(st.scale[0])
        self.standardization = st


class SwissRoll(_Generated):
    """sklearn's Swiss roll, 2-D projection, as in the official toy script."""

    def __init__(self, batch_size: int, device: torch.device, seed: int, noise: float = 0.25):
        self.sample_shape = (2,)
        self.batch_size = batch_size
        self.device = device
        self.noise = noise
        self.seed = seed
        self.rng = torch.Generator(device=device).manual_seed(seed)
        self.standardization = Standardization.identity(2, "global")

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        g = generator if generator is not None else self.rng
        dev = g.device
        t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=g, device=dev))
        xy = torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=1)
        xy = xy + self.noise * torch.randn(n, 2, generator=g, device=dev)
        return (xy / 7.5).to(self.device)


class FixedToySet(TensorSource):
    """One set of ``n`` points drawn once from a toy distribution, then read in order.

    ``gan_toy.py`` builds its 25 Gaussians this way: 100000 points, exactly
    100000/25 around each centre, shuffled once, then cut into consecutive batches over
    and over (the last incomplete batch dropped, no reshuffle). Mixtures are balanced
    likewise (``n/K`` per mode); the Swiss roll draws ``n`` points. The set is drawn on
    the CPU from ``seed``, so it is the same on any device and again after a resume.
    """

    def __init__(
        self, source: MixtureOfGaussians | SwissRoll, n: int, batch_size: int, seed: int
    ) -> None:
        g = torch.Generator().manual_seed(seed)
        if isinstance(source, MixtureOfGaussians):
            centres = source.centres.cpu()
            k = torch.arange(centres.shape[0]).repeat(n // centres.shape[0])
            noise = torch.randn(n, centres.shape[1], generator=g)
            points = centres[k] + source.centre_std * noise
            self.modes, self.mode_std = source.modes, source.mode_std
        else:
            points = source.sample(n, generator=g).cpu()
        device = source.device
        super().__init__(points.to(device), batch_size, seed, "the fixed set", reshuffle=False)
        self.distribution = source
        self.standardization = source.standardization

    def use_standardization(self, st: Standardization) -> None:
        """The same points in ``st``'s coordinates (a checkpoint's)."""
        in_data_units = self.standardization.inverse(self.data.double())
        self.data = st.forward(in_data_units).float()
        self.standardization = st
        self.distribution.use_standardization(st)

    def unseen(self) -> DataSource:
        """Fresh draws from the distribution the fixed set was drawn from."""
        return self.distribution


def fixed_set(cfg: Any, source: MixtureOfGaussians | SwissRoll, batch_size: int, seed: int) -> Any:
    """``source`` itself, or the fixed set of ``dataset.fixed_points`` drawn from it."""
    n = cfg.get("fixed_points")
    if n is None:
        return source
    k = source.modes.shape[0] if isinstance(source, MixtureOfGaussians) else 1
    if isinstance(n, bool) or not isinstance(n, int) or n < max(k, batch_size) or n % k:
        need = f"a multiple of the {k} modes, " if k > 1 else ""
        raise ConfigError(
            "dataset.fixed_points",
            n,
            f"null, or {need}at least trainer.batch_size={batch_size} and {k}",
            "gan_toy.py's 25 Gaussians: dataset.fixed_points=100000",
        )
    return FixedToySet(source, n, batch_size, seed)


def load_points(path: str | Path) -> Tensor:
    """An N×D float array from ``.npy`` or ``.csv`` (comma separated, optional header)."""
    p = expand_path(path)
    if not p.is_file():
        raise DataError(
            f"dataset.path={str(path)!r}: no such file; give the path of a .npy or .csv "
            "file holding an N×D array of points"
        )
    try:
        if p.suffix == ".npy":
            arr = np.load(p, allow_pickle=False)
        elif p.suffix in (".csv", ".txt"):
            with open(p, newline="") as f:
                rows = [r for r in csv.reader(f) if r]
            try:
                float(rows[0][0])
            except (ValueError, IndexError):
                rows = rows[1:]  # header line
            arr = np.array(rows, dtype=np.float64)
        else:
            raise DataError(
                f"dataset.path={str(path)!r}: unsupported file type {p.suffix!r} "
                "(allowed: .npy, .csv)"
            )
    except DataError:
        raise
    except Exception as e:  # malformed file: report it, never a traceback
        raise DataError(f"dataset.path={str(path)!r}: cannot read an N×D array: {e}") from e
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(
            f"dataset.path={str(path)!r}: expected an N×D array of points, got shape {arr.shape}"
        )
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise DataError(
            f"dataset.path={str(path)!r}: expected an N×D array of real numbers, got dtype "
            f"{arr.dtype}; save the points as floats"
        )
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise DataError(f"dataset.path={str(path)!r}: {bad} rows hold NaN or Inf; clean the file")
    return torch.from_numpy(arr.astype(np.float32))


class PointsFile(TensorSource):
    """Points from a file, held standardized (``dataset.standardize``), with optional
    known modes, in the file's units, for the mode metrics."""

    def __init__(self, cfg: Any, batch_size: int, device: torch.device, seed: int) -> None:
        if not cfg.path:
            raise ConfigError(
                "dataset.path", cfg.path, "a .npy or .csv file", "e.g. dataset.path=points.npy"
            )
        self.raw = load_points(cfg.path)
        self.standardization = configured(cfg, self.raw)
        data = self._standardized(self.standardization).to(device)
        super().__init__(data, batch_size, seed, name=str(cfg.path))
        if cfg.modes is not None:
            allowed = f"a list of K points of dimension {self.sample_shape[0]}, e.g. [[0,0],[1,1]]"
            raw = plain_value(cfg.modes)
            try:
                arr = np.asarray(raw, dtype=np.float32)
            except (TypeError, ValueError):  # words, ragged rows: not K points of D numbers
                raise ConfigError("dataset.modes", raw, allowed) from None
            if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] != self.sample_shape[0]:
                raise ConfigError("dataset.modes", raw, allowed)
            if not np.isfinite(arr).all():
                raise ConfigError("dataset.modes", raw, allowed + " (finite numbers)")
            self.modes = torch.from_numpy(arr).to(device)
            if cfg.mode_std is None or not math.isfinite(cfg.mode_std) or cfg.mode_std <= 0:
                raise ConfigError(
                    "dataset.mode_std", cfg.mode_std, "a positive float when dataset.modes is set"
                )
            self.mode_std = float(cfg.mode_std)

    def _standardized(self, st: Standardization) -> Tensor:
        return st.forward(self.raw.double()).float() if not st.is_identity else self.raw

    def use_standardization(self, st: Standardization) -> None:
        """Train in ``st``'s coordinates (a checkpoint's, when the file's statistics moved)."""
        self.standardization = st
        self.data = self._standardized(st).to(self.data.device)


def _toy_float(cfg: Any, key: str, default: float, positive: bool) -> float:
    """``dataset.<key>`` (or ``default`` when unset), checked: finite and > 0 (or ≥ 0).

    The Gaussians' ``noise`` is the std of each mode, which the mode metrics need > 0
    (a sample is high quality within 3 std of its centre); the Swiss roll's may be 0.
    """
    value = cfg.get(key)
    if value is None:
        return default
    ok = math.isfinite(value) and (value > 0 if positive else value >= 0)
    if not ok:
        raise ConfigError(
            f"dataset.{key}",
            value,
            f"a finite number {'> 0' if positive else '≥ 0'} for {cfg.name}",
            f"e.g. dataset.{key}={default} (the default), or drop the override",
        )
    return float(value)


def builtin_standardization_mode(cfg: Any) -> str:  # noqa: ANN401
    """``dataset.standardize`` of a built-in distribution, whose transform is known:
    given statistics are refused (they are for points files)."""
    mode = standardization_mode(cfg)
    for key in ("standardize_mean", "standardize_scale"):
        if cfg.get(key) is not None:
            value = cfg.get(key)
            raise ConfigError(
                f"dataset.{key}",
                plain_value(value),
                f"null for {cfg.name}",
                f"{cfg.name} is drawn in standardized coordinates (dataset.scale/2 is its "
                "scale); given statistics are for dataset=points",
            )
    return mode


def build_toy(cfg: Any, batch_size: int, device: torch.device, seed: int) -> DataSource:
    name = cfg.name
    if cfg.get("dequantize", False):
        raise ConfigError(
            "dataset.dequantize",
            True,
            "false for points data",
            f"{name} is not quantized (dequantize adds U[0, 1/128) noise to 8-bit images); "
            "drop dataset.dequantize=true",
        )
    if list(cfg.get("pixel_range") or [-1.0, 1.0]) != [-1.0, 1.0]:
        raise ConfigError(
            "dataset.pixel_range",
            list(cfg.pixel_range),
            "[-1,1] (the default) for points data",
            f"{name} has no pixels; drop dataset.pixel_range",
        )
    if name == "points":
        if cfg.get("fixed_points") is not None:
            raise ConfigError(
                "dataset.fixed_points",
                cfg.fixed_points,
                "null for dataset=points",
                "a points file already is a fixed set; drop dataset.fixed_points",
            )
        return PointsFile(cfg, batch_size, device, seed)
    mode = builtin_standardization_mode(cfg)
    source: MixtureOfGaussians | SwissRoll
    if name in ("gaussians8", "gaussians25"):
        scale = _toy_float(cfg, "scale", 2.0, positive=True)
        std = _toy_float(cfg, "noise", 0.02 if name == "gaussians8" else 0.05, positive=True)
        # drawn at the official scale (unit variance per coordinate); dataset.scale moves
        # the data's units only, unless dataset.standardize=none trains in them
        s = 1.0 if mode == "none" else scale / 2.0
        centres, divisor = (
            (ring_modes(8, scale / s), 1.414)
            if name == "gaussians8"
            else (grid_modes(5, scale / s), 2.828)
        )
        st = Standardization(mode, [0.0, 0.0], [s, s])
        source = MixtureOfGaussians(
            centres / divisor, std / s / divisor, batch_size, device, seed, st
        )
    elif name == "swissroll":
        noise = _toy_float(cfg, "noise", 0.25, positive=False)
        source = SwissRoll(batch_size, device, seed, noise)
    else:
        raise KeyError(name)
    return fixed_set(cfg, source, batch_size, seed)


TOY_DATASETS = ("gaussians8", "gaussians25", "swissroll", "points")
