"""One object the trainer writes to, handing each record to every chosen tracker.

:class:`RunLog` takes ``SummaryWriter``'s calls (``add_scalar``, ``add_image``,
``add_figure``, ...), as the trainer always made them: the TensorBoard log gets them
unchanged, the other trackers their own form (scalars gathered per step and sent at
each ``flush``, pictures as uint8 arrays).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from wgangp.io.tblog import EventLog
from wgangp.io.trackers.base import Scalar, Tracker
from wgangp.io.trackers.hparams import hparams_summaries


def as_picture(image: Any, dataformats: str = "CHW") -> np.ndarray:  # noqa: ANN401
    """A ``SummaryWriter.add_image`` image (float in [0, 1] or uint8) as uint8 ``(H, W)``
    or ``(H, W, C)``."""
    t = torch.as_tensor(np.asarray(image.detach().cpu() if torch.is_tensor(image) else image))
    if dataformats == "CHW":
        t = t.permute(1, 2, 0)
    if t.dtype != torch.uint8:
        t = (t.float() * 255).clamp(0, 255).round().to(torch.uint8)  # tensorboard's scaling
    return t.squeeze(-1).numpy() if t.shape[-1] == 1 else t.numpy()


class RunLog:
    """The event log (``events``, None without ``logger=tensorboard``) and ``trackers``."""

    def __init__(
        self, events: EventLog | None, trackers: list[Tracker], hparams: bool = False
    ) -> None:
        self.events, self.trackers, self.hparams = events, trackers, hparams
        self.params: dict[str, Scalar] = {}
        self._pending: dict[int, dict[str, float]] = {}
        self._closed = False

    def log_params(self, params: dict[str, Scalar]) -> None:
        self.params = dict(params)
        for t in self.trackers:
            t.log_params(self.params)

    def add_scalar(self, tag: str, value: Any, step: int) -> None:  # noqa: ANN401
        if self.events is not None:
            self.events.add_scalar(tag, value, step)
        if self.trackers:
            self._pending.setdefault(step, {})[tag] = float(value)

    def add_image(self, tag: str, image: Any, step: int, dataformats: str = "CHW") -> None:  # noqa: ANN401
        if self.events is not None:
            self.events.add_image(tag, image, step, dataformats=dataformats)
        if self.trackers:
            picture = as_picture(image, dataformats)
            for t in self.trackers:
                t.log_image(tag, picture, step)

    def add_figure(self, tag: str, figure: Any, step: int, close: bool = True) -> None:  # noqa: ANN401
        if not self.trackers:  # TensorBoard alone: exactly its own call
            if self.events is not None:
                self.events.add_figure(tag, figure, step, close=close)
            return
        from torch.utils.tensorboard._utils import figure_to_image

        # rendered once for all (SummaryWriter.add_figure is this add_image)
        self.add_image(tag, figure_to_image(figure, close=close), step)

    def add_text(self, tag: str, text: str, step: int) -> None:
        if self.events is not None:
            self.events.add_text(tag, text, step)
        for t in self.trackers:
            t.log_text(tag, text, step)

    def add_histogram(self, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401
        if self.events is not None:  # TensorBoard only
            self.events.add_histogram(*args, **kwargs)

    def flush(self) -> None:
        """Send the gathered scalars to the trackers, write the event log's queue."""
        pending, self._pending = self._pending, {}
        for step in sorted(pending):
            for t in self.trackers:
                t.log_scalars(pending[step], step)
        if self.events is not None:
            self.events.flush()

    def log_final(self, metrics: dict[str, float], step: int) -> None:
        """The run's final ``metrics``: TensorBoard's HParams entry (``logger.tensorboard
        .hparams``) with the config values, and each tracker's final record."""
        self.flush()
        if self.events is not None and self.hparams and self.params:
            for summary in hparams_summaries(self.params, metrics):
                self.events.add_summary(summary, step)
        for t in self.trackers:
            t.log_final(metrics, step)

    def close(self) -> None:
        """Flush and close everything; the first error, once every one is closed."""
        if self._closed:
            return
        self._closed = True
        first: BaseException | None = None
        try:
            self.flush()
        except Exception as e:
            first = e
        for t in self.trackers:
            try:
                t.close() if first is None else t.discard()
            except Exception as e:
                first = first or e
        if self.events is not None:
            try:
                self.events.close() if first is None else self.events.discard()
            except Exception as e:
                first = first or e
        if first is not None:
            raise first

    def discard(self) -> None:
        """Close without raising: another error is being reported."""
        if self._closed:
            return
        self._closed = True
        for t in self.trackers:
            t.discard()
        if self.events is not None:
            self.events.discard()


__all__ = ["RunLog", "as_picture"]
