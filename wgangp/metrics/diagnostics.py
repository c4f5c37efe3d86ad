"""Critic health: the gradient norm at each layer and the weights' distribution.

The paper's Figure 1b shows why weight clipping is hard to tune: the norm of the
critic loss's gradient with respect to successive layers' activations explodes
(c = 0.1) or vanishes (c = 0.01, 0.001) through a 12-layer ReLU critic, while with the
gradient penalty it stays level; and clipping piles the weights up at ±c. These are the
two measurements behind that figure, as pure functions; with ``diagnostics.every``
training records them in TensorBoard.

Layer k is the k-th call of a weight layer (``Linear``, ``Conv1d/2d``,
``ConvTranspose1d/2d``) in the critic's forward, and its activation is that call's
input: layer 1's is the sample itself, the last one's the input of the output layer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch
from torch import Tensor, nn

from wgangp.core import losses
from wgangp.models.sampling import sampling_mode

#: the layers whose inputs count as "activations" (one per weight layer call)
WEIGHT_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
)

#: critic loss of (D(x), D(x̃)) → scalar, without any penalty
ScoreLossFn = Callable[[Tensor, Tensor], Tensor]


#: TensorBoard tags of the layer gradients: ``layer_grad/<k>_<module name>``
LAYER_GRAD_PREFIX = "layer_grad/"


def layer_tags(names: list[str]) -> list[str]:
    """The tag of each layer, k from 1, zero-padded alike so that the tags sort in
    layer order (``layer_grad/001_...`` past 99 layers)."""
    width = max(2, len(str(len(names))))
    return [f"{LAYER_GRAD_PREFIX}{k:0{width}d}_{n}" for k, n in enumerate(names, 1)]


class LayerGradNorms(NamedTuple):
    """``norms[k]``: ‖∂L/∂a_k‖₂ over the whole batch (real and fake), for the input
    a_k of the k-th weight-layer call, named ``names[k]`` (its module's name); fp64."""

    names: list[str]
    norms: Tensor


@contextmanager
def _captured_inputs(model: nn.Module) -> Iterator[list[tuple[str, Tensor]]]:
    """The inputs of ``model``'s weight layers, in call order, while in the block."""
    seen: list[tuple[str, Tensor]] = []
    hooks = [
        m.register_forward_pre_hook(lambda _m, args, name=name: seen.append((name, args[0])))
        for name, m in model.named_modules()
        if isinstance(m, WEIGHT_LAYERS)
    ]
    try:
        yield seen
    finally:
        for h in hooks:
            h.remove()


def layer_grad_norms(
    critic: nn.Module, real: Tensor, fake: Tensor, loss: ScoreLossFn = losses.wasserstein_loss
) -> LayerGradNorms:
    r"""‖∂L/∂a_k‖₂ for each layer k of ``critic`` (the paper's Figure 1b, left), with
    :math:`L = \text{loss}(D(x), D(\tilde x))` on this batch, the critic loss without
    its penalty (``wgan``: :math:`\mathbb{E}[D(\tilde x)] - \mathbb{E}[D(x)]`).

    The norm is over both batches' activations of the layer together. For the
    Wasserstein loss it is :math:`\sqrt{2/N}` times the root mean square over the 2N
    samples of :math:`\|\partial D(x_i)/\partial a_{k,i}\|`; at layer 1 that per-sample
    norm is what the penalty pulls to 1.

    Real and fake go through the critic apart, in fp32 (fp64 inputs: fp64), a batch
    norm normalising each by its own statistics as in the update, its running ones
    untouched (:func:`~wgangp.models.sampling.sampling_mode`, as ``critic_loss``
    measures); no parameter gradient is computed or touched.
    """
    real, fake = (losses.at_least_fp32(x.detach()).requires_grad_(True) for x in (real, fake))
    with sampling_mode(critic, "batch"), torch.enable_grad():
        with _captured_inputs(critic) as seen:
            d_real = critic(real)
            n_real = len(seen)
            d_fake = critic(fake)
            value = loss(d_real, d_fake)
        if len(seen) != 2 * n_real:
            raise ValueError(
                f"the critic called its weight layers {n_real} times on the real batch and "
                f"{len(seen) - n_real} on the fake one: layers cannot be paired"
            )
        grads = torch.autograd.grad(value, [a for _, a in seen], allow_unused=True)
    norms = []
    for k in range(n_real):
        # squares summed in fp64: a vanishing gradient's entries (1e-24 at c = 0.001)
        # square to below fp32's range; a layer the loss does not reach counts as zero
        sq = [g.detach().double().pow(2).sum() for g in grads[k::n_real] if g is not None]
        norms.append(torch.stack(sq).sum().sqrt() if sq else torch.zeros((), dtype=torch.float64))
    names = [name for name, _ in seen[:n_real]]
    return LayerGradNorms(names, torch.stack(norms).detach())


def weight_tensors(model: nn.Module) -> list[tuple[str, Tensor]]:
    """``model``'s weight matrices and kernels (parameters of 2 or more dimensions: not
    biases, nor the gains and shifts of norm layers), by name."""
    return [(n, p.detach()) for n, p in model.named_parameters() if p.dim() >= 2]


def fraction_at_clip(params: list[Tensor], clip: float) -> float:
    """The fraction of the entries of ``params`` at the clipping bound, |w| = ``clip``
    (weight clipping leaves a clipped weight exactly there; the paper's Figure 1b, right,
    shows clipping piling weights up at ±c)."""
    total = sum(p.numel() for p in params)
    if total == 0:
        return 0.0
    at = sum(int((p.detach().abs() >= clip).sum()) for p in params)
    return at / total
