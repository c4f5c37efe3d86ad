"""Critic and generator architectures, built by name from the ``critic``/``generator`` configs.

Registered names: ``mlp`` (points, or flattened images), ``dcgan`` and ``resnet``
(images; the paper's convolutional models, see :mod:`wgangp.models.dcgan` and
:mod:`wgangp.models.resnet`), and for the paper's Figure 2 the generator
``dcgan_constant`` (:mod:`wgangp.models.dcgan`) and ``resnet101``, both networks
(:mod:`wgangp.models.resnet101`); ``language``, both networks, for text
(:mod:`wgangp.models.language`, the official character-level model).
"""

# importing registers the names
from wgangp.models import dcgan, language, mlp, resnet, resnet101  # noqa: F401
from wgangp.models.mlp import count_parameters
from wgangp.models.registry import CRITICS, GENERATORS, build_critic, build_generator

__all__ = ["CRITICS", "GENERATORS", "build_critic", "build_generator", "count_parameters"]
