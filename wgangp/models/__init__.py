"""Critic and generator architectures, built by name from the ``critic``/``generator`` configs.

Registered names: ``mlp`` (points, or flattened images), ``dcgan`` and ``resnet``
(images; the paper's convolutional models, see :mod:`wgangp.models.dcgan` and
:mod:`wgangp.models.resnet`).
"""

from wgangp.models import dcgan, mlp, resnet  # noqa: F401  (importing registers the names)
from wgangp.models.mlp import count_parameters
from wgangp.models.registry import CRITICS, GENERATORS, build_critic, build_generator

__all__ = ["CRITICS", "GENERATORS", "build_critic", "build_generator", "count_parameters"]
