"""How a generator runs when it samples (pictures, metrics, ``wgangp-sample``).

``bn="running"`` (the default, PyTorch's convention): eval mode, so batch norm uses the
running statistics gathered in training and a sample does not depend on the others in
its batch. ``bn="batch"``: batch norm normalises with each sampling batch's own
statistics, as the official code does at sampling time (tflib's ``Batchnorm`` with
``fused=True`` always takes the batch statistics), so Inception scores compare with the
paper's like for like; the samples then depend on the batch (size and company).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import Tensor, nn

from wgangp.errors import ConfigError

BN_MODES = ("running", "batch")


def check_bn_mode(key: str, bn: str) -> str:
    if bn not in BN_MODES:
        raise ConfigError(
            key,
            bn,
            " | ".join(BN_MODES),
            "running: batch norm with the training's running statistics; batch: with each "
            "sampling batch's statistics (the official code's)",
        )
    return bn


def ema_started(n_averaged: Tensor | int) -> bool:
    """Whether an EMA generator (``AveragedModel``, its ``n_averaged``) has averaged a
    step: before ``trainer.ema.start`` it holds the initial weights, not a model to
    sample."""
    return int(n_averaged) > 0


def has_batchnorm(module: nn.Module) -> bool:
    """Whether any layer of ``module`` normalises by batch statistics (batch norm, its
    synchronised and class-conditional forms)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


@contextmanager
def sampling_mode(generator: nn.Module, bn: str = "running") -> Iterator[nn.Module]:
    """``generator`` in eval mode for sampling; with ``bn="batch"`` its batch norms use
    batch statistics, and their running statistics are left exactly as they were
    (PyTorch takes the batch's statistics, and updates nothing, when a batch norm has
    no running buffers)."""
    check_bn_mode("bn", bn)
    was_training = generator.training
    generator.eval()
    hidden = []
    if bn == "batch":
        for m in generator.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                hidden.append((m, m.running_mean, m.running_var))
                m.running_mean, m.running_var = None, None
    try:
        yield generator
    finally:
        for m, mean, var in hidden:
            m.running_mean, m.running_var = mean, var
        generator.train(was_training)


__all__ = ["BN_MODES", "check_bn_mode", "has_batchnorm", "sampling_mode"]
