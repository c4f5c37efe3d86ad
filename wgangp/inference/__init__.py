"""Use a trained run from Python: load its generator or critic, sample, export.

Everything here is also importable from the top-level package (``import wgangp``):

* :func:`load_generator` — a run directory or checkpoint file → :class:`Generator`, an
  ``nn.Module`` mapping latents (and classes) to samples in the data's scale, with the
  attributes a consumer needs (``z_dim``, ``output_shape``, ``num_classes``,
  ``pixel_range``, ``kind``, ``config``);
* :func:`sample` — ``n`` seeded samples, the ones ``wgangp-sample seed=…`` writes;
* :func:`load_critic` — the critic, to score data;
* :func:`export_generator` — TorchScript, ONNX or safetensors, with a JSON of what the
  file holds (also on the command line: ``wgangp-export``); :func:`load_safetensors`
  reads a safetensors export back.

Example (any unconditional points or image run made by ``wgangp-train``)::

    import torch
    import wgangp

    run = "outputs/2024-01-01/12-00-00"  # a run directory or a checkpoint file
    gen = wgangp.load_generator(run)  # the EMA weights when the run kept an EMA
    x = wgangp.sample(gen, 64, seed=0)  # (64, *gen.output_shape), on the CPU
    critic = wgangp.load_critic(run)
    with torch.no_grad():
        scores = critic(x)  # (64,): points and images go in as sampled
    wgangp.export_generator(gen, "torchscript", "generator.pt")  # + generator.pt.json
    scripted = torch.jit.load("generator.pt")
    assert scripted(torch.randn(8, gen.z_dim)).shape[1:] == gen.output_shape
"""

from wgangp.inference.export import FORMATS, export_generator, load_safetensors
from wgangp.inference.generator import Generator, load_critic, load_generator, sample

__all__ = [
    "FORMATS",
    "Generator",
    "export_generator",
    "load_critic",
    "load_generator",
    "load_safetensors",
    "sample",
]
