"""Critic and generator architectures, built by name from the ``critic``/``generator`` configs."""

from wgangp.models import mlp  # noqa: F401  (registers "mlp")
from wgangp.models.registry import CRITICS, GENERATORS, build_critic, build_generator

__all__ = ["CRITICS", "GENERATORS", "build_critic", "build_generator"]
