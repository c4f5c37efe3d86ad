"""Class-conditional (AC-GAN) ResNets: conditional batch norm, the class head, the
official model's sizes, and the registry's refusals (``gan_cifar_resnet.py`` with
``CONDITIONAL = ACGAN = True``)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

# the seed and one-thread fixtures are autouse: imported, they apply here too
from tests.test_image_models import _one_thread, _seed, critic_cfg, generator_cfg  # noqa: F401
from wgangp.errors import ConfigError
from wgangp.fast.cuda_graph import CaptureCheck
from wgangp.models import build_critic, build_generator, count_parameters
from wgangp.models.blocks import ConditionalBatchNorm2d, ResidualBlock
from wgangp.models.init import init_weights
from wgangp.models.resnet import (
    CifarResNetCritic,
    CifarResNetGenerator,
    LargeResNetCritic,
    LargeResNetGenerator,
)
from wgangp.models.sampling import sampling_mode

K = 10  # CIFAR-10's classes
Z = 16  # small latent for the behaviour tests


def _randomise_tables(model: nn.Module) -> None:
    """Give every conditional norm distinct per-class scales and offsets (as training
    would), so that the label visibly matters."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, ConditionalBatchNorm2d):
                m.scale.weight.uniform_(0.5, 1.5)
                m.offset.weight.normal_()


def _cond_generator(size: int = 32, num_classes: int = K, **kw: Any) -> nn.Module:
    return build_generator(
        generator_cfg("resnet", dim=8, z_dim=Z, **kw), (3, size, size), num_classes
    )


def _cond_critic(size: int = 32, num_classes: int = K) -> nn.Module:
    return build_critic(critic_cfg("resnet", dim=8), (3, size, size), num_classes)


# ------------------------------------------------------------ ConditionalBatchNorm2d


def _hand_cbn(x: Tensor, labels: Tensor, scale: Tensor, offset: Tensor) -> Tensor:
    """tflib cond_batchnorm: moments over (N, H, W), biased variance, ε = 1e-5, then the
    per-sample affine looked up from the label."""
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = ((x - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)
    x_hat = (x - mean) / torch.sqrt(var + 1e-5)
    return x_hat * scale[labels][:, :, None, None] + offset[labels][:, :, None, None]


def test_cbn_is_batch_norm_then_per_class_affine() -> None:
    cbn = ConditionalBatchNorm2d(3, 4)
    with torch.no_grad():
        cbn.scale.weight.copy_(
            torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 4.0], [2.0, 2.0, 2.0], [0.1, 0.2, 0.3]])
        )
        cbn.offset.weight.copy_(
            torch.tensor([[0.0, 1.0, -1.0], [3.0, 0.0, 0.5], [-2.0, 0.0, 0.0], [9.0, 8.0, 7.0]])
        )
    x = torch.randn(5, 3, 4, 4) * 3 + 2
    labels = torch.tensor([0, 1, 3, 1, 2])
    out = cbn(x, labels)
    ref = _hand_cbn(x, labels, cbn.scale.weight.detach(), cbn.offset.weight.detach())
    assert torch.allclose(out, ref, atol=1e-5)
    # the same thing through PyTorch's functional batch norm with batch statistics
    fb = F.batch_norm(x, None, None, training=True, eps=1e-5)
    assert torch.allclose(
        out,
        fb * cbn.scale.weight[labels, :, None, None] + cbn.offset.weight[labels, :, None, None],
        atol=1e-6,
    )
    # one entry by hand, real numbers: sample 2 (class 3), channel 1, pixel (0, 0)
    c = x[:, 1]
    expected = 0.2 * (c[2, 0, 0] - c.mean()) / torch.sqrt(c.var(unbiased=False) + 1e-5) + 8.0
    assert out[2, 1, 0, 0].item() == pytest.approx(expected.item(), abs=1e-5)
    # the tables get gradients (they are learnt)
    out.square().sum().backward()
    assert cbn.scale.weight.grad is not None and cbn.scale.weight.grad[3].abs().sum() > 0
    assert torch.all(cbn.offset.weight.grad[[0, 1, 2, 3]].abs().sum(1) > 0)


def test_cbn_affine_per_sample_statistics_shared() -> None:
    cbn = ConditionalBatchNorm2d(2, 3)
    _randomise_tables(cbn)
    x = torch.randn(4, 2, 3, 3)
    x[1] = x[0]  # two identical samples ...
    same = cbn(x, torch.tensor([2, 2, 0, 1]))
    diff = cbn(x, torch.tensor([2, 1, 0, 1]))
    assert torch.equal(same[0], same[1])  # ... with the same label: the same output
    assert (diff[0] - diff[1]).abs().max() > 0.1  # ... with different labels: not
    assert torch.equal(same[0], diff[0])  # a label only changes its own sample's affine
    # statistics are the batch's: changing sample 3 changes sample 0's output
    x2 = x.clone()
    x2[3] = x2[3] * 5 + 1
    moved = cbn(x2, torch.tensor([2, 2, 0, 1]))
    assert (moved[0] - same[0]).abs().max() > 1e-2


def test_cbn_running_statistics_train_and_eval() -> None:
    cbn = ConditionalBatchNorm2d(3, 2)
    _randomise_tables(cbn)
    x = torch.randn(6, 3, 4, 4) * 2 + 1
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    train_out = cbn(x, labels)
    # momentum 0.1 from (0, 1): running = 0.9·init + 0.1·batch (unbiased variance)
    mean = x.mean(dim=(0, 2, 3))
    var = x.var(dim=(0, 2, 3), unbiased=True)
    assert torch.allclose(cbn.bn.running_mean, 0.1 * mean, atol=1e-6)
    assert torch.allclose(cbn.bn.running_var, 0.9 + 0.1 * var, atol=1e-5)
    assert int(cbn.bn.num_batches_tracked) == 1
    cbn.eval()
    eval_out = cbn(x, labels)
    rm, rv = cbn.bn.running_mean, cbn.bn.running_var
    x_hat = (x - rm[None, :, None, None]) / torch.sqrt(rv[None, :, None, None] + 1e-5)
    s, o = cbn.scale.weight[labels], cbn.offset.weight[labels]
    assert torch.allclose(eval_out, x_hat * s[:, :, None, None] + o[:, :, None, None], atol=1e-5)
    assert not torch.allclose(eval_out, train_out, atol=1e-2)
    assert int(cbn.bn.num_batches_tracked) == 1  # eval mode updates nothing


def test_cbn_at_init_is_plain_batchnorm() -> None:
    cbn = ConditionalBatchNorm2d(4, 3)
    assert torch.equal(cbn.scale.weight, torch.ones(3, 4))
    assert torch.equal(cbn.offset.weight, torch.zeros(3, 4))
    bn = nn.BatchNorm2d(4, affine=False)
    x = torch.randn(5, 4, 3, 3)
    assert torch.equal(cbn(x, torch.tensor([0, 1, 2, 2, 1])), bn(x))
    # the normaliser is a real BatchNorm2d child: SyncBatchNorm conversion reaches it
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(cbn))
    assert isinstance(synced.bn, nn.SyncBatchNorm) and not synced.bn.affine
    # and init_weights leaves the tables alone (it would otherwise re-draw or reset them)
    _randomise_tables(cbn)
    before = {k: v.clone() for k, v in cbn.state_dict().items()}
    for scheme in ("tflib", "dcgan"):
        init_weights(cbn, scheme)
    assert all(torch.equal(before[k], v) for k, v in cbn.state_dict().items())


# ------------------------------------------------------------ the official model's size


def test_parameter_counts_of_official_conditional_cifar_model() -> None:
    """gan_cifar_resnet.py, CONDITIONAL = ACGAN = True: DIM_G = DIM_D = 128, z 128,
    32×32×3, 10 classes. Counted from the script's layers (weights + biases)."""
    dim, z, c, k = 128, 128, 3, 10
    conv3 = dim * dim * 9 + dim  # 3×3 dim → dim, bias
    short = dim * dim + dim  # 1×1 dim → dim shortcut, bias
    cond_bn = 2 * k * dim  # cond_batchnorm: offset and scale tables, n_labels × C each
    expected_g = (
        (z * 4 * 4 * dim + 4 * 4 * dim)  # Generator.Input: Linear 128 → 2048      264,192
        + 3 * (short + 2 * conv3 + 2 * cond_bn)  # Generator.1-3 (up): Shortcut, Conv1,
        # Conv2, N1, N2 (conditional)                                   3 × 316,800
        + 2 * dim  # Generator.OutputN: plain batch norm (no labels), scale + offset  256
        + (dim * c * 9 + c)  # Generator.Output: 3×3 conv 128 → 3              3,459
    )
    expected_d = (
        (c * dim + dim)
        + (c * dim * 9 + dim)
        + conv3  # Discriminator.1 (optimised):
        # Shortcut 1×1, Conv1 3 → 128, Conv2 128 → 128                       151,680
        + (short + 2 * conv3)  # Discriminator.2 (down)                           311,680
        + 2 * (2 * conv3)  # Discriminator.3, .4: identity shortcut, no norm      590,336
        + (dim + 1)  # Discriminator.Output: Linear 128 → 1                        129
        + (dim * k + k)  # Discriminator.ACGANOutput: Linear 128 → 10            1,290
    )
    assert (expected_g, expected_d) == (1_218_307, 1_055_115)
    shape = (c, 32, 32)
    g = build_generator(generator_cfg("resnet", dim=dim, z_dim=z, init="pytorch"), shape, k)
    d = build_critic(critic_cfg("resnet", dim=dim, init="pytorch"), shape, k)
    assert count_parameters(g) == expected_g
    assert count_parameters(d) == expected_d
    # six conditional norms and one plain (affine) batch norm, as in the script
    assert sum(isinstance(m, ConditionalBatchNorm2d) for m in g.modules()) == 6
    plain = [m for m in g.modules() if isinstance(m, nn.BatchNorm2d) and m.affine]
    assert len(plain) == 1 and plain[0] is g.output[0]
    # the unconditional pair drops exactly the tables (+ 6·2·128, − 6·2·k·128) and the head
    g0 = build_generator(generator_cfg("resnet", dim=dim, z_dim=z, init="pytorch"), shape)
    d0 = build_critic(critic_cfg("resnet", dim=dim, init="pytorch"), shape)
    assert count_parameters(g0) == expected_g - 6 * cond_bn + 6 * 2 * dim == 1_204_483
    assert count_parameters(d0) == expected_d - (dim * k + k) == 1_053_825


# ------------------------------------------------------------ generator


@pytest.mark.parametrize("size", [32, 64])
def test_generator_default_labels_are_balanced(size: int) -> None:
    g = _cond_generator(size, num_classes=4)
    _randomise_tables(g)
    z = torch.randn(10, Z)
    with torch.no_grad():
        default = g(z)
        explicit = g(z, torch.arange(10) % 4)  # 0 1 2 3 0 1 2 3 0 1
        other = g(z, (torch.arange(10) + 1) % 4)
    assert default.shape == (10, 3, size, size)
    assert torch.equal(default, explicit)
    assert (default - other).abs().amax(dim=(1, 2, 3)).min() > 1e-3  # every image moves
    # no random numbers drawn: the global generator's state is untouched
    state = torch.get_rng_state()
    with torch.no_grad():
        g(z)
    assert torch.equal(state, torch.get_rng_state())


def test_generator_labels_change_images_and_init_is_unconditional() -> None:
    z = torch.randn(6, Z)
    torch.manual_seed(1)
    g = _cond_generator()
    torch.manual_seed(1)
    g0 = build_generator(generator_cfg("resnet", dim=8, z_dim=Z), (3, 32, 32))
    assert g.num_classes == K and g0.num_classes == 0
    with torch.no_grad():
        # at init (scales 1, offsets 0) the conditional model is the unconditional one
        assert torch.equal(g(z, torch.tensor([0, 3, 9, 9, 1, 2])), g0(z))
        _randomise_tables(g)
        a = g(z, torch.zeros(6, dtype=torch.long))
        b = g(z, torch.full((6,), 7))
    assert (a - b).abs().max() > 0.05
    assert a.min() >= -1 and a.max() <= 1


def test_generator_label_errors() -> None:
    g0 = build_generator(generator_cfg("resnet", dim=8, z_dim=Z), (3, 32, 32))
    with pytest.raises(ValueError, match="unconditional"):
        g0(torch.randn(2, Z), torch.tensor([0, 1]))
    g = _cond_generator()
    with pytest.raises(ValueError, match="labels of shape"):
        g(torch.randn(3, Z), torch.tensor([0, 1]))
    block = g.blocks[0]
    assert isinstance(block, ResidualBlock)
    with pytest.raises(ValueError, match="needs the class labels"):
        block(torch.randn(2, 8, 4, 4))
    with pytest.raises(ValueError, match="batchnorm"):
        ResidualBlock(8, 8, "up", "none", nn.ReLU, num_classes=3)


def test_conditional_generator_state_and_sampling_modes() -> None:
    g = _cond_generator()
    g0 = build_generator(generator_cfg("resnet", dim=8, z_dim=Z), (3, 32, 32))
    keys, keys0 = set(g.state_dict()), set(g0.state_dict())
    # the trunk keeps its keys; each block norm trades weight/bias for bn.* + tables
    assert {k for k in keys0 if ".norm" not in k} == {k for k in keys if ".norm" not in k}
    assert "blocks.0.norm1.scale.weight" in keys and "blocks.2.norm2.bn.running_mean" in keys
    _randomise_tables(g)
    with torch.no_grad():
        for _ in range(3):
            g(torch.randn(32, Z))
    z = torch.randn(8, Z)
    buffers = {k: v.clone() for k, v in g.state_dict().items() if "running" in k}
    with torch.no_grad():
        ref_eval = copy.deepcopy(g).eval()(z)
        ref_train = copy.deepcopy(g).train()(z)
        with sampling_mode(g, "running"):
            assert torch.equal(g(z), ref_eval)
        with sampling_mode(g, "batch"):
            assert torch.equal(g(z), ref_train)
    assert not torch.allclose(ref_eval, ref_train, atol=1e-3)
    assert all(torch.equal(v, g.state_dict()[k]) for k, v in buffers.items())


# ------------------------------------------------------------ critic


@pytest.mark.parametrize("size,cls", [(32, CifarResNetCritic), (64, LargeResNetCritic)])
def test_critic_class_head(size: int, cls: type) -> None:
    d = _cond_critic(size)
    assert isinstance(d, cls) and d.num_classes == K
    x = torch.randn(5, 3, size, size)
    with torch.no_grad():
        score = d(x)
        score2, logits = d(x, with_logits=True)
        assert score.shape == (5,) and logits.shape == (5, K)
        assert torch.equal(score, score2)
        # both heads read the same features: pooled (CIFAR) or flattened (64×64)
        if cls is CifarResNetCritic:
            feats = d.act(d.blocks(x)).mean(dim=(2, 3))
        else:
            feats = d.blocks(d.input(x)).flatten(1)
        assert torch.equal(logits, d.acgan(feats))
        assert torch.equal(score, d.output(feats).squeeze(1))
        assert logits.std() > 0
        d.acgan.weight.zero_()
        d.acgan.bias.copy_(torch.arange(K, dtype=torch.float))
        assert torch.equal(
            d(x, with_logits=True)[1], torch.arange(K, dtype=torch.float).expand(5, K)
        )
    # glorot like the WGAN output: U(±√(6/(n_in + K)))
    d2 = _cond_critic(size)
    bound = (6.0 / (d2.acgan.in_features + K)) ** 0.5
    assert d2.acgan.weight.abs().max() <= bound and d2.acgan.weight.abs().max() > 0.9 * bound
    assert torch.all(d2.acgan.bias == 0)


def test_unconditional_critic_unchanged() -> None:
    d0 = build_critic(critic_cfg("resnet", dim=8), (3, 32, 32))
    d = _cond_critic()
    assert d0.num_classes == 0 and not hasattr(d0, "acgan")
    # the conditional critic is the unconditional one plus the head: an unconditional
    # checkpoint loads into its trunk, and then the scores agree bit for bit
    missing, unexpected = d.load_state_dict(d0.state_dict(), strict=False)
    assert sorted(missing) == ["acgan.bias", "acgan.weight"] and unexpected == []
    x = torch.randn(3, 3, 32, 32)
    assert torch.equal(d0(x), d(x))
    assert torch.equal(d0(x), d(x, with_logits=True)[0])
    with pytest.raises(ValueError, match="unconditional critic"):
        d0(x, with_logits=True)


def test_conditional_critic_penalty_path() -> None:
    """critic(x) under create_graph=True, as the gradient penalty uses it."""
    d = _cond_critic()
    x = torch.randn(4, 3, 32, 32, requires_grad=True)
    (grad,) = torch.autograd.grad(d(x).sum(), x, create_graph=True)
    penalty = ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
    penalty.backward()
    assert grad.shape == x.shape and grad.abs().sum() > 0
    conv = d.blocks[1].conv1.weight
    assert conv.grad is not None and torch.isfinite(conv.grad).all() and conv.grad.abs().sum() > 0
    assert d.acgan.weight.grad is None  # the class head is not on the penalty's path


def test_conditional_iteration_is_capturable() -> None:
    """G(z) with default labels, the critic's class head and the backward pass: no host
    sync, random draw or host copy (they run inside CUDA-graph capture)."""
    g, d = _cond_generator(), _cond_critic()
    z = torch.randn(6, Z)  # drawn outside, as the trainer does (a draw would be flagged)
    with CaptureCheck(torch.device("cpu")) as check:
        x = g(z)
        score, logits = d(x, with_logits=True)
        (score.mean() + F.cross_entropy(logits, torch.arange(6) % K)).backward()
    assert check.found == {}
    assert g.blocks[0].norm1.scale.weight.grad is not None


# ------------------------------------------------------------ registry


@pytest.mark.parametrize("name", ["mlp", "resnet101"])
def test_registry_refuses_unconditional_architectures(name: str) -> None:
    shape = (3, 32, 32)
    with pytest.raises(ConfigError) as e:
        build_critic(critic_cfg(name), shape, K)
    assert e.value.key == "conditional.enabled" and e.value.value is True
    assert f"critic.name={name}" in str(e.value) and "conditional.enabled=false" in str(e.value)
    with pytest.raises(ConfigError) as e:
        build_generator(generator_cfg(name), shape, K)
    assert e.value.key == "conditional.enabled"
    assert f"generator.name={name}" in str(e.value)
    # unconditional, the same architecture builds as before (0 is the default)
    if name != "resnet101":
        assert build_critic(critic_cfg(name), shape, 0)(torch.randn(2, *shape)).shape == (2,)


def test_registry_refuses_conditional_generator_without_batchnorm() -> None:
    with pytest.raises(ConfigError) as e:
        _cond_generator(norm="none")
    assert e.value.key == "generator.norm" and e.value.value == "none"
    assert "generator.norm=batchnorm" in str(e.value)
    with pytest.raises(ConfigError, match="generator.norm"):
        _cond_generator(size=64, norm="layernorm")
    with pytest.raises(ValueError, match="num_classes"):
        build_critic(critic_cfg("resnet", dim=8), (3, 32, 32), -1)
    # the resnet classes per resolution, conditional
    assert isinstance(_cond_generator(32), CifarResNetGenerator)
    assert isinstance(_cond_generator(64), LargeResNetGenerator)


# ------------------------------------------------------------ the DCGAN pair


def _dcgan_pair(size: int, num_classes: int, **kw: Any) -> tuple[nn.Module, nn.Module]:
    shape = (1 if size == 28 else 3, size, size)
    g = build_generator(generator_cfg("dcgan", norm="batchnorm", **kw), shape, num_classes)
    d = build_critic(critic_cfg("dcgan"), shape, num_classes)
    return g, d


@pytest.mark.parametrize("size", [28, 32])
def test_conditional_dcgan_pair(size: int) -> None:
    """Conditional batch norm at every generator norm (the linear output's and each
    stage's), an AC-GAN head on the critic's flattened features; the parameter counts
    differ from the unconditional pair by exactly those tables and that head."""
    g, d = _dcgan_pair(size, K)
    g0, d0 = _dcgan_pair(size, 0)
    cbn = [m for m in g.modules() if isinstance(m, ConditionalBatchNorm2d)]
    bn = [m for m in g0.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(cbn) == len(bn) == 3  # 4×4, 8×8 (7×7 at 28) and 16×16 (14×14)
    widths = [m.bn.num_features for m in cbn]
    # each BatchNorm2d's 2C affine parameters become 2·K·C table entries
    assert count_parameters(g) - count_parameters(g0) == sum(2 * (K - 1) * c for c in widths)
    features = d.output.in_features  # 4·4·4·dim
    assert count_parameters(d) - count_parameters(d0) == features * K + K
    z = torch.randn(2 * K, Z)
    x = g(z)
    assert x.shape == (2 * K, *g.sample_shape)
    assert torch.equal(x, g(z, torch.arange(2 * K) % K))  # labels None: i mod K
    with torch.no_grad():  # a non-trivial table: the class changes the image
        cbn[0].scale.weight.uniform_(0.5, 1.5)
    same_z = z[:1].repeat(2, 1)
    two = g(same_z, torch.tensor([0, 1]))
    assert not torch.equal(two[0], two[1])
    score, logits = d(x, with_logits=True)
    assert torch.equal(score, d(x)) and logits.shape == (2 * K, K)
    with torch.no_grad():
        d.acgan.weight.zero_()
    assert torch.equal(d(x, with_logits=True)[1], d.acgan.bias.expand(2 * K, K))


def test_conditional_dcgan_generator_needs_channel_batch_norm() -> None:
    for kw, key in (
        ({"norm": "none"}, "generator.norm"),
        ({"norm": "batchnorm", "input_norm": "feature"}, "generator.input_norm"),
    ):
        with pytest.raises(ConfigError) as e:
            build_generator(generator_cfg("dcgan", **kw), (3, 32, 32), K)
        assert e.value.key == key and "conditional.enabled=false" in str(e.value)
