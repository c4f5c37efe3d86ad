"""What every experiment tracker takes: parameters, scalars, pictures, text, final metrics."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from wgangp.errors import UserError

Scalar = str | int | float | bool


class TrackerError(UserError):
    """A tracker cannot record the run (unreachable server, unwritable store, ...)."""

    def __init__(
        self, name: str, where: str, error: BaseException, message: str | None = None
    ) -> None:
        self.name, self.where, self.error = name, where, error
        self.reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        super().__init__(message or f"cannot log to {name} at {where} ({self.reason})")


class Tracker:
    """One tracker's run; every method may raise :class:`TrackerError`."""

    name = "tracker"

    def log_params(self, params: dict[str, Scalar]) -> None:
        """The composed config, flattened (:func:`flatten`)."""

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        """Scalars of one step."""

    def log_image(self, tag: str, image: np.ndarray, step: int) -> None:
        """A picture, ``(H, W)`` or ``(H, W, 3|4)`` uint8."""

    def log_text(self, tag: str, text: str, step: int) -> None:
        """Markdown text (text data's samples)."""

    def log_final(self, metrics: dict[str, float], step: int) -> None:
        """The run's final metrics at its last step."""

    def close(self) -> None:
        """The run ended normally."""

    def discard(self) -> None:
        """The run ends with an error; never raises."""


def flatten(tree: Any, prefix: str = "") -> dict[str, Scalar]:  # noqa: ANN401
    """A nested dict as ``{"gp.lambda": 10.0, ...}``: leaves of type str, int, float and
    bool as they are; lists as JSON text; null as ``"null"`` (trackers take no None)."""
    out: dict[str, Scalar] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        elif isinstance(value, (str, int, float, bool)):
            out[name] = value
        else:  # lists and None: one readable string
            out[name] = json.dumps(value)
    return out


__all__ = ["Scalar", "Tracker", "TrackerError", "flatten"]
