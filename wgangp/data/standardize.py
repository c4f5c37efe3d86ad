"""Points data trained in standardized coordinates, shown in the data's own units.

A toy recipe's λ, the penalty's target gradient norm of 1 and its learning rates all
act in the units of the data, so a recipe tuned on one scale degrades on another. The
networks therefore see ``y = (x − μ) / s`` and every sample a user sees is mapped back,
``x = μ + s · y``:

* ``global`` (the default): ``μ`` the mean of each coordinate and one scale
  ``s = sqrt(mean_d Var(x_d))``, the RMS distance from the mean per coordinate. The
  geometry is kept, and distances (the Wasserstein distance among them) are divided by
  ``s``;
* ``per_dim``: ``s_d`` the std of each coordinate, for data whose axes are in
  different units;
* a scale of 0 (a constant coordinate) is taken as 1;
* ``none``: the identity.

The built-in toy distributions are drawn in standardized coordinates already: the
official script divides the 8-Gaussian ring (radius 2) by √2 and the 25-Gaussian grid
(spacing 2) by 2√2, which gives their centres unit variance per coordinate. Their
transform is the identity at the default ``dataset.scale`` (so their published numbers
stand bitwise) and a division by ``scale / 2`` otherwise. The Swiss roll's transform is
the identity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from wgangp.errors import ConfigError

#: the values of ``dataset.standardize``
MODES = ("global", "per_dim", "none")


class Standardization:
    """The affine map ``y = (x − mean) / scale`` between data units and the networks'.

    ``mean`` and ``scale`` are ``(D,)`` float64 tensors (``scale`` > 0, one value
    repeated for ``global``). :meth:`forward` goes to the networks' coordinates,
    :meth:`inverse` back to the data's; the identity returns its input unchanged.
    """

    def __init__(self, mode: str, mean: Sequence[float], scale: Sequence[float]) -> None:
        self.mode = mode
        self.mean = torch.as_tensor(list(mean), dtype=torch.float64)
        self.scale = torch.as_tensor(list(scale), dtype=torch.float64)
        self.is_identity = bool((self.mean == 0).all() and (self.scale == 1).all())

    @classmethod
    def identity(cls, dim: int, mode: str = "none") -> Standardization:
        return cls(mode, [0.0] * dim, [1.0] * dim)

    @classmethod
    def of(cls, points: Tensor, mode: str) -> Standardization:
        """The ``mode`` standardization of an ``(N, D)`` set of points."""
        x = points.detach().to(device="cpu", dtype=torch.float64)
        d = x.shape[1]
        if mode == "none":
            return cls.identity(d)
        mean = x.mean(dim=0)
        var = x.var(dim=0, unbiased=False)
        scale = var.mean().sqrt().expand(d) if mode == "global" else var.sqrt()
        # a constant coordinate keeps its units (scikit-learn's StandardScaler does too)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        return cls(mode, mean.tolist(), scale.tolist())

    def _like(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return self.mean.to(t.device, t.dtype), self.scale.to(t.device, t.dtype)

    def forward(self, x: Tensor) -> Tensor:
        """Data units → the networks' coordinates."""
        if self.is_identity:
            return x
        mean, scale = self._like(x)
        return (x - mean) / scale

    def inverse(self, y: Tensor) -> Tensor:
        """The networks' coordinates → data units."""
        if self.is_identity:
            return y
        mean, scale = self._like(y)
        return y * scale + mean

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint stores: ``{"mode", "mean", "scale"}`` as plain lists."""
        return {"mode": self.mode, "mean": self.mean.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_state(cls, state: dict[str, Any] | None, dim: int) -> Standardization:
        """A checkpoint's transform; the identity for a checkpoint without one (runs
        from before standardization trained in data units)."""
        if not state:
            return cls.identity(dim)
        return cls(str(state["mode"]), state["mean"], state["scale"])

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Standardization)
            and torch.equal(self.mean, other.mean)
            and torch.equal(self.scale, other.scale)
        )

    def __repr__(self) -> str:
        mean, scale = self.mean.tolist(), self.scale.tolist()
        return f"Standardization({self.mode}, mean={mean}, scale={scale})"

    def describe(self) -> str:
        """One line for the log: ``x ↦ (x − μ) / s`` with the numbers."""
        if self.is_identity:
            return "identity"
        mean = ", ".join(f"{v:.4g}" for v in self.mean.tolist())
        scales = self.scale.unique()
        scale = (
            f"{float(scales[0]):.4g}"
            if len(scales) == 1
            else "[" + ", ".join(f"{v:.4g}" for v in self.scale.tolist()) + "]"
        )
        return f"(x − [{mean}]) / {scale}"


def adopt_saved(data: Any, state: dict[str, Any] | None) -> Standardization | None:  # noqa: ANN401
    """Give ``data`` (a points source) the transform a checkpoint stored (``state``;
    None: a run from before standardization, in data units) when its own differs,
    so the networks see the coordinates they learned. Returns the one it replaced, or
    None when nothing changed. A source that cannot change its transform (a built-in
    distribution) raises :class:`ValueError`."""
    st = getattr(data, "standardization", None)
    if st is None:
        return None
    saved = Standardization.from_state(state, st.mean.numel())
    if saved == st:
        return None
    if not hasattr(data, "use_standardization"):
        raise ValueError(
            f"trained with the transform {saved.describe()}, this data set's is {st.describe()}"
        )
    data.use_standardization(saved)
    return st


class StandardizedInput(nn.Module):
    """A network of the standardized coordinates (a critic) that takes points in the
    data's units: ``forward(x, ...) = network((x − mean) / scale, ...)``."""

    def __init__(self, network: nn.Module, standardization: Standardization) -> None:
        super().__init__()
        self.network = network
        self.standardization = standardization

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401
        return self.network(self.standardization.forward(x), *args, **kwargs)


def _numbers(key: str, value: Any, dim: int, allow_scalar: bool) -> list[float]:  # noqa: ANN401
    """``dataset.<key>`` (a plain value) as ``dim`` finite numbers (a scalar repeated
    when allowed)."""
    allowed = f"a list of {dim} numbers" + (" or one number" if allow_scalar else "")
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if is_number and allow_scalar:
        value = [value] * dim
    if (
        not isinstance(value, list)
        or len(value) != dim
        or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value)
    ):
        raise ConfigError(f"dataset.{key}", value, allowed)
    if not all(math.isfinite(v) for v in value):
        raise ConfigError(f"dataset.{key}", value, allowed + " (finite)")
    return [float(v) for v in value]


def standardization_mode(cfg: Any) -> str:  # noqa: ANN401
    """``dataset.standardize``, checked."""
    mode = cfg.get("standardize", "global")
    if mode not in MODES:
        raise ConfigError(
            "dataset.standardize",
            mode,
            " | ".join(MODES),
            "global: one scale about the mean (the default); per_dim: each coordinate's "
            "own std; none: train in the data's units",
        )
    return str(mode)


def configured(cfg: Any, points: Tensor) -> Standardization:  # noqa: ANN401
    """A points file's transform: ``dataset.standardize`` of ``points``, or the given
    ``dataset.standardize_mean`` / ``dataset.standardize_scale``."""
    mode = standardization_mode(cfg)
    dim = points.shape[1]
    given_mean, given_scale = cfg.get("standardize_mean"), cfg.get("standardize_scale")
    if mode == "none":
        for key, value in (("standardize_mean", given_mean), ("standardize_scale", given_scale)):
            if value is not None:
                raise ConfigError(
                    f"dataset.{key}",
                    plain_value(value),
                    "null with dataset.standardize=none",
                    "drop it, or choose dataset.standardize=global or per_dim",
                )
        return Standardization.identity(dim)
    computed = Standardization.of(points, mode)
    mean = computed.mean.tolist()
    scale = computed.scale.tolist()
    if given_mean is not None:
        mean = _numbers("standardize_mean", plain_value(given_mean), dim, allow_scalar=False)
    if given_scale is not None:
        scale = _numbers(
            "standardize_scale", plain_value(given_scale), dim, allow_scalar=mode == "global"
        )
        if mode == "global" and len(set(scale)) > 1:
            raise ConfigError(
                "dataset.standardize_scale",
                scale,
                "one number with dataset.standardize=global",
                "give one scale, or use dataset.standardize=per_dim for one per coordinate",
            )
    if not all(s > 0 for s in scale):
        raise ConfigError(
            "dataset.standardize_scale",
            plain_value(given_scale),
            "numbers > 0",
            "the data's spread in its units, or null to compute it from the points",
        )
    return Standardization(mode, mean, scale)


def plain_value(value: Any) -> Any:  # noqa: ANN401
    """A config value as plain Python (lists for OmegaConf lists), for messages and checks."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


__all__ = [
    "MODES",
    "Standardization",
    "StandardizedInput",
    "adopt_saved",
    "configured",
    "plain_value",
    "standardization_mode",
]
