"""TensorBoard's HParams entry of a run: its config values and final metrics, written
into the run's own event file so that the HParams dashboard pairs them with the run's
scalars (``SummaryWriter.add_hparams`` would write them into a sub-run of their own)."""

from __future__ import annotations

from typing import Any

from wgangp.io.trackers.base import Scalar


def hparams_summaries(params: dict[str, Scalar], metrics: dict[str, float]) -> list[Any]:
    """The HParams plugin's three summaries (the experiment, the run's start and its
    end, in TensorBoard's protos): ``params`` the
    hyper-parameters; ``metrics`` the scalar tags whose last values the dashboard shows."""
    from torch.utils.tensorboard.summary import hparams

    return list(hparams(dict(params), dict(metrics)))


__all__ = ["hparams_summaries"]
