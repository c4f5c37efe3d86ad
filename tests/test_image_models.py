"""Image architectures: shapes, per-sample critics, a WGAN-GP step, refusals, init."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from tests.conftest import compose_cfg
from wgangp.config.schema import CriticConfig, GeneratorConfig
from wgangp.config.validate import validate
from wgangp.core.losses import critic_loss, generator_loss, gradient_penalty
from wgangp.errors import ConfigError
from wgangp.models import CRITICS, GENERATORS, build_critic, build_generator, count_parameters
from wgangp.models.blocks import LayerNorm2d, OptimizedDownBlock, ResidualBlock
from wgangp.models.init import tflib_std
from wgangp.models.resnet import (
    CifarResNetCritic,
    CifarResNetGenerator,
    LargeResNetCritic,
    LargeResNetGenerator,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SIZES = {"dcgan": (16, 28, 32, 64, 128), "resnet": (16, 32, 64, 128), "mlp": (16, 32, 64, 128)}
CONV_NORMS = ("none", "layernorm", "instancenorm", "auto")


def critic_cfg(name: str, dim: int = 8, norm: str | None = None, **kw: Any) -> Any:
    """The YAML of ``name`` merged on the schema (mlp: the schema), then overrides."""
    node = OmegaConf.structured(CriticConfig)
    path = CONFIGS / "critic" / f"{name}.yaml"
    node = OmegaConf.merge(node, OmegaConf.load(path)) if path.exists() else node
    node.name = name
    node.dim = dim
    if norm is not None:
        node.norm = norm
    for k, v in kw.items():
        node[k] = v
    return node


def generator_cfg(name: str, dim: int = 8, z_dim: int = 16, **kw: Any) -> Any:
    node = OmegaConf.structured(GeneratorConfig)
    path = CONFIGS / "generator" / f"{name}.yaml"
    node = OmegaConf.merge(node, OmegaConf.load(path)) if path.exists() else node
    node.name, node.dim, node.z_dim = name, dim, z_dim
    for k, v in kw.items():
        node[k] = v
    return node


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Any:
    # These models are tiny: intra-op threads only add synchronisation, which on a
    # busy 2-core machine made the double-backward steps ~50× slower.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_names_registered() -> None:
    assert {"mlp", "dcgan", "resnet"} <= set(CRITICS)
    assert {"mlp", "dcgan", "resnet"} <= set(GENERATORS)


def test_yaml_defaults() -> None:
    assert critic_cfg("dcgan", dim=64).norm == "none"
    assert critic_cfg("resnet", dim=64).norm == "auto"
    for name in ("dcgan", "resnet"):
        g = OmegaConf.merge(
            OmegaConf.structured(GeneratorConfig),
            OmegaConf.load(CONFIGS / "generator" / f"{name}.yaml"),
        )
        assert g.z_dim == 128 and g.norm == "batchnorm" and g.init == "tflib"


# ------------------------------------------------------------------ shapes


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(
    "arch,size", [(a, s) for a, sizes in SIZES.items() for s in sizes], ids=lambda v: str(v)
)
def test_shapes_and_range(arch: str, size: int, channels: int) -> None:
    shape = (channels, size, size)
    g = build_generator(generator_cfg(arch), shape)
    d = build_critic(critic_cfg(arch), shape)
    assert g.z_dim == 16
    with torch.no_grad():
        x = g(torch.randn(3, 16))
        assert x.shape == (3, *shape)
        assert x.min() >= -1 and x.max() <= 1
        assert d(x).shape == (3,)


# ------------------------------------------------------------------ per-sample critics


def _coupling_cases() -> list[tuple[str, int, str]]:
    cases = [(a, s, n) for a in ("dcgan", "resnet") for s in (32, 64) for n in CONV_NORMS]
    cases += [("resnet", 16, "auto"), ("resnet", 128, "auto")]
    cases += [("mlp", 16, n) for n in ("none", "layernorm")]
    return cases


@pytest.mark.parametrize("arch,size,norm", _coupling_cases(), ids=lambda v: str(v))
def test_critic_has_no_cross_sample_coupling(arch: str, size: int, norm: str) -> None:
    shape = (3, size, size)
    d = build_critic(critic_cfg(arch, norm=norm), shape)
    d.train()  # the mode the penalty is computed in
    n = 3
    x = torch.randn(n, *shape, requires_grad=True)
    out = d(x)
    for i in range(n):
        (g,) = torch.autograd.grad(out[i], x, retain_graph=True)
        others = [j for j in range(n) if j != i]
        assert torch.all(g[others] == 0), f"D(x_{i}) depends on other samples"
        assert g[i].abs().sum() > 0

    # The penalty of sample 0 is a function of (real_0, fake_0, eps_0) only.
    real, fake = torch.randn(n, *shape), torch.randn(n, *shape)
    eps = torch.rand(n, 1, 1, 1)
    norm_a = gradient_penalty(d, real, fake, eps=eps).grad_norm
    real2, fake2 = real.clone(), fake.clone()
    real2[1:] = torch.randn(n - 1, *shape) * 3
    fake2[1:] = torch.randn(n - 1, *shape) * 3
    norm_b = gradient_penalty(d, real2, fake2, eps=eps).grad_norm
    assert torch.allclose(norm_a[0], norm_b[0], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(norm_a[1:], norm_b[1:])
    # and equals the norm of the critic applied to that sample alone
    alone = gradient_penalty(d, real[:1], fake[:1], eps=eps[:1]).grad_norm
    assert torch.allclose(norm_a[0], alone[0], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ a training step


@pytest.mark.parametrize(
    "arch,size",
    [("dcgan", 32), ("dcgan", 64), ("resnet", 32), ("resnet", 64), ("mlp", 32)],
    ids=lambda v: str(v),
)
def test_wgan_gp_step_updates_parameters(arch: str, size: int) -> None:
    shape = (3, size, size)
    g = build_generator(generator_cfg(arch), shape)
    d = build_critic(critic_cfg(arch), shape)
    opt_d = torch.optim.Adam(d.parameters(), lr=1e-4, betas=(0.0, 0.9))
    opt_g = torch.optim.Adam(g.parameters(), lr=1e-4, betas=(0.0, 0.9))
    real = torch.rand(4, *shape) * 2 - 1

    before_d = [p.detach().clone() for p in d.parameters()]
    fake = g(torch.randn(4, g.z_dim)).detach()
    gp = gradient_penalty(d, real, fake)
    loss_d = critic_loss(d(real), d(fake), gp.penalty, 10.0)
    opt_d.zero_grad()
    loss_d.backward()
    grads = [p.grad for p in d.parameters()]
    assert all(gr is not None and torch.isfinite(gr).all() for gr in grads)
    opt_d.step()
    assert any(not torch.equal(a, b) for a, b in zip(before_d, d.parameters(), strict=True))

    before_g = [p.detach().clone() for p in g.parameters()]
    loss_g = generator_loss(d(g(torch.randn(4, g.z_dim))))
    opt_g.zero_grad()
    d.zero_grad()
    loss_g.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in g.parameters())
    opt_g.step()
    changed = [not torch.equal(a, b) for a, b in zip(before_g, g.parameters(), strict=True)]
    assert all(changed), "every generator parameter should move after one Adam step"
    assert torch.isfinite(loss_d) and torch.isfinite(loss_g)


# ------------------------------------------------------------------ refusals

BATCHNORM_MESSAGE = (
    "invalid value for critic.norm: 'batchnorm' (allowed: none | layernorm | instancenorm | "
    "auto with loss.name=wgan-gp); batch norm couples the samples of a batch, so the "
    "critic's gradient at one interpolate depends on the others and the per-sample penalty "
    "no longer constrains a 1-Lipschitz function (Gulrajani et al. 2017, §4); use layernorm "
    "(batch norm is for the baselines: loss=wgan|dcgan|lsgan)"
)


@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
@pytest.mark.parametrize("size", [32, 64])
def test_a_batchnorm_critic_sits_where_layernorm_does(arch: str, size: int) -> None:
    """critic.norm=batchnorm (the official baseline modes' critics): a BatchNorm2d at
    each place layer norm takes, refused with the penalty before any model is built."""
    bn = build_critic(critic_cfg(arch, norm="batchnorm"), (3, size, size))
    ln = build_critic(critic_cfg(arch, norm="layernorm"), (3, size, size))
    bns = [n for n, m in bn.named_modules() if isinstance(m, nn.BatchNorm2d)]
    lns = [n for n, m in ln.named_modules() if isinstance(m, LayerNorm2d)]
    assert bns == lns and len(bns) >= 2
    with pytest.raises(ConfigError) as e:
        validate(compose_cfg(f"critic={arch}", "critic.norm=batchnorm"))
    assert str(e.value) == BATCHNORM_MESSAGE
    assert e.value.key == "critic.norm"
    validate(compose_cfg(f"critic={arch}", "critic.norm=batchnorm", "loss=dcgan"))


@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
@pytest.mark.parametrize("shape", [(3, 8, 8), (3, 256, 256), (3, 48, 48), (3, 32, 64)])
def test_bad_resolution_refused(arch: str, shape: tuple[int, int, int]) -> None:
    for build, cfg in ((build_critic, critic_cfg(arch)), (build_generator, generator_cfg(arch))):
        with pytest.raises(ConfigError) as e:
            build(cfg, shape)
        assert e.value.key == "dataset.image_size"
        allowed = "16 | 28 | 32 | 64 | 128" if arch == "dcgan" else "16 | 32 | 64 | 128"
        assert f"allowed: {allowed}" in str(e.value)


@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
def test_non_image_and_bad_values_refused(arch: str) -> None:
    with pytest.raises(ConfigError, match="images") as e:
        build_critic(critic_cfg(arch), (2,))
    assert "add dataset=mnist, cifar10, celeba, lsun or image_folder" in str(e.value)
    with pytest.raises(ConfigError) as e:
        build_critic(critic_cfg(arch), (0, 32, 32))
    assert e.value.key == "dataset.channels"
    with pytest.raises(ConfigError) as e:
        build_critic(critic_cfg(arch, norm="groupnorm"), (3, 32, 32))
    assert e.value.key == "critic.norm"
    with pytest.raises(ConfigError) as e:
        build_critic(critic_cfg(arch, init="xavier"), (3, 32, 32))
    assert e.value.key == "critic.init"
    with pytest.raises(ConfigError) as e:
        build_generator(generator_cfg(arch, norm="spectral"), (3, 32, 32))
    assert e.value.key == "generator.norm"
    with pytest.raises(ConfigError) as e:
        build_generator(generator_cfg(arch, dim=0), (3, 32, 32))
    assert e.value.key == "generator.dim"


# ------------------------------------------------------------------ resnet variants


def _has(model: nn.Module, cls: type) -> bool:
    return any(isinstance(m, cls) for m in model.modules())


def test_resnet_variant_by_resolution() -> None:
    d32 = build_critic(critic_cfg("resnet"), (3, 32, 32))
    d64 = build_critic(critic_cfg("resnet"), (3, 64, 64))
    assert isinstance(d32, CifarResNetCritic) and isinstance(d64, LargeResNetCritic)
    assert isinstance(build_critic(critic_cfg("resnet"), (3, 16, 16)), CifarResNetCritic)
    assert isinstance(build_critic(critic_cfg("resnet"), (3, 128, 128)), LargeResNetCritic)
    # norm=auto: none at 32 (gan_cifar_resnet.py), layer norm at 64 (gan_64x64.py)
    assert not _has(d32, LayerNorm2d) and _has(d32, OptimizedDownBlock)
    assert _has(d64, LayerNorm2d) and not _has(d64, OptimizedDownBlock)
    # forcing a norm overrides auto
    assert not _has(build_critic(critic_cfg("resnet", norm="none"), (3, 64, 64)), LayerNorm2d)
    assert _has(build_critic(critic_cfg("resnet", norm="layernorm"), (3, 32, 32)), LayerNorm2d)
    inorm = build_critic(critic_cfg("resnet", norm="instancenorm"), (3, 64, 64))
    assert _has(inorm, nn.InstanceNorm2d) and not _has(inorm, LayerNorm2d)
    # the CIFAR critic keeps a constant width, the 64×64 one widens to 8·dim
    widths32 = {b.conv2.out_channels for b in d32.modules() if isinstance(b, ResidualBlock)}
    widths64 = {b.conv2.out_channels for b in d64.modules() if isinstance(b, ResidualBlock)}
    assert widths32 == {8} and widths64 == {16, 32, 64}
    g32 = build_generator(generator_cfg("resnet"), (3, 32, 32))
    g64 = build_generator(generator_cfg("resnet"), (3, 64, 64))
    assert isinstance(g32, CifarResNetGenerator) and isinstance(g64, LargeResNetGenerator)
    assert _has(g32, nn.BatchNorm2d) and _has(g64, nn.BatchNorm2d)


def test_dcgan_critic_norm_options() -> None:
    assert not _has(build_critic(critic_cfg("dcgan"), (3, 64, 64)), nn.GroupNorm)
    ln = build_critic(critic_cfg("dcgan", norm="layernorm"), (3, 64, 64))
    # on every conv but the first, like gan_64x64.py's DCGANDiscriminator
    assert sum(isinstance(m, LayerNorm2d) for m in ln.modules()) == 3
    assert not _has(build_critic(critic_cfg("dcgan", norm="auto"), (3, 64, 64)), nn.GroupNorm)


def test_layernorm_matches_official_definition() -> None:
    ln = LayerNorm2d(4)
    with torch.no_grad():
        ln.weight.uniform_()
        ln.bias.uniform_()
    x = torch.randn(2, 4, 5, 5)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    var = x.var(dim=(1, 2, 3), unbiased=False, keepdim=True)
    ref = (x - mean) / torch.sqrt(var + 1e-5) * ln.weight.view(1, -1, 1, 1) + ln.bias.view(
        1, -1, 1, 1
    )
    assert torch.allclose(ln(x), ref, atol=1e-5)


# ------------------------------------------------------------------ init


def _check_uniform(w: torch.Tensor, std: float) -> None:
    bound = std * math.sqrt(3)
    assert w.abs().max() <= bound * (1 + 1e-6)
    assert w.std().item() == pytest.approx(std, rel=0.03)


def test_tflib_init_dcgan() -> None:
    d = build_critic(critic_cfg("dcgan", dim=64), (3, 64, 64))
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    # second conv: 64 → 128, 5×5, stride 2: fan_in = 64·25, fan_out = 128·25/4 (he)
    c = convs[1]
    assert (c.in_channels, c.out_channels, c.stride) == (64, 128, (2, 2))
    expected = math.sqrt(4.0 / (64 * 25 + 128 * 25 / 4))
    assert tflib_std(c) == pytest.approx(expected)
    _check_uniform(c.weight, expected)
    assert torch.all(c.bias == 0)
    lin = d.output  # glorot: sqrt(2 / (fan_in + fan_out))
    assert tflib_std(lin) == pytest.approx(math.sqrt(2.0 / (4 * 4 * 512 + 1)))
    _check_uniform(lin.weight, tflib_std(lin))

    g = build_generator(generator_cfg("dcgan", dim=64, z_dim=128), (3, 64, 64))
    deconvs = [m for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    t = deconvs[0]  # 512 → 256, 5×5 stride 2: fan_in = 512·25/4, fan_out = 256·25
    expected = math.sqrt(4.0 / (512 * 25 / 4 + 256 * 25))
    assert tflib_std(t) == pytest.approx(expected)
    _check_uniform(t.weight, expected)
    _check_uniform(g.input.weight, math.sqrt(2.0 / (128 + 4 * 4 * 512)))


def test_tflib_init_resnet_he_and_glorot() -> None:
    d = build_critic(critic_cfg("resnet", dim=64), (3, 64, 64))
    block = d.blocks[1]  # 128 → 256, down
    he = math.sqrt(4.0 / (128 * 9 + 128 * 9))  # conv1 128 → 128, 3×3, stride 1
    _check_uniform(block.conv1.weight, he)
    assert block.conv1.bias is None  # gan_64x64.py: no bias before the norm
    shortcut = block.shortcut[-1]  # 1×1 128 → 256, glorot
    _check_uniform(shortcut.weight, math.sqrt(2.0 / (128 + 256)))
    assert tflib_std(d.input) == pytest.approx(math.sqrt(2.0 / (3 * 9 + 64 * 9)))
    ln = next(m for m in d.modules() if isinstance(m, LayerNorm2d))
    assert torch.all(ln.weight == 1) and torch.all(ln.bias == 0)


def test_dcgan_and_pytorch_init_schemes() -> None:
    d = build_critic(critic_cfg("dcgan", dim=32, init="dcgan"), (3, 64, 64))
    for m in d.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.numel() > 50_000:
            _check_uniform(m.weight, 0.02)
    torch.manual_seed(0)
    a = build_critic(critic_cfg("dcgan", dim=8, init="pytorch"), (3, 32, 32))
    torch.manual_seed(0)
    b = nn.Conv2d(3, 8, 5, stride=2, padding=2)
    assert torch.equal(a.body[0].weight, b.weight)  # PyTorch's own init left in place


def test_tflib_init_mlp_like_gan_toy() -> None:
    """gan_toy.py: ReLULayer = Linear(initialization='he'), std √(2/n_in); the output
    Linear has tflib's default, glorot, std √(2/(n_in + n_out)); biases zero."""
    d = build_critic(critic_cfg("mlp", dim=512), (2,))
    g = build_generator(generator_cfg("mlp", dim=512, z_dim=2), (2,))
    for net, n_out in ((d, 1), (g, 2)):
        lins = [m for m in net.modules() if isinstance(m, nn.Linear)]
        assert [(m.in_features, m.out_features) for m in lins] == [
            (2, 512),
            (512, 512),
            (512, 512),
            (512, n_out),
        ]
        for m in lins[:-1]:
            assert tflib_std(m) == pytest.approx(math.sqrt(2.0 / m.in_features))
            _check_uniform(m.weight, tflib_std(m))
        out = lins[-1]
        assert tflib_std(out) == pytest.approx(math.sqrt(2.0 / (512 + n_out)))
        assert out.weight.abs().max() <= math.sqrt(6.0 / (512 + n_out))
        assert all(torch.all(m.bias == 0) for m in lins)
    # the first layer's bound is √(6/2) ≈ 1.73, where PyTorch's default gives 1/√2
    assert d.net[0].weight.abs().max() > 1.5
    torch.manual_seed(0)
    p = build_critic(critic_cfg("mlp", dim=16, init="pytorch"), (2,))
    torch.manual_seed(0)
    assert torch.equal(p.net[0].weight, nn.Linear(2, 16).weight)
    with pytest.raises(ConfigError, match="generator.init"):
        build_generator(generator_cfg("mlp", dim=16, init="xavier"), (2,))


# ------------------------------------------------------------------ paper sizes


@pytest.mark.parametrize(
    "arch,size,dim,n_critic,n_generator",
    [
        ("dcgan", 64, 64, 4_314_753, 5_364_739),  # gan_64x64.py DCGAN
        ("dcgan", 32, 128, 4_114_689, 5_164_547),  # gan_cifar.py (BN2d, not BN1d, on z)
        ("resnet", 32, 128, 1_053_825, 1_204_483),  # gan_cifar_resnet.py
        ("resnet", 64, 64, 7_491_841, 8_540_483),  # gan_64x64.py Good{Generator,Discriminator}
    ],
)
def test_parameter_counts_at_paper_settings(
    arch: str, size: int, dim: int, n_critic: int, n_generator: int
) -> None:
    shape = (3, size, size)
    d = build_critic(critic_cfg(arch, dim=dim, init="pytorch"), shape)
    g = build_generator(generator_cfg(arch, dim=dim, z_dim=128, init="pytorch"), shape)
    assert count_parameters(d) == n_critic
    assert count_parameters(g) == n_generator


# ------------------------------------------------------------------ sampling mode


def test_sampling_mode_running_or_batch_statistics() -> None:
    """running: eval mode; batch: the batch's own statistics, as tflib samples, with the
    running statistics untouched and the training flag restored."""
    import copy

    from wgangp.models.sampling import sampling_mode

    g = build_generator(generator_cfg("dcgan", dim=8, z_dim=16), (3, 32, 32))
    with torch.no_grad():
        for _ in range(3):  # running statistics away from their initial values
            g(torch.randn(32, 16))
    buffers = {k: v.clone() for k, v in g.state_dict().items() if "running" in k or "num_b" in k}
    z = torch.randn(16, 16)
    with torch.no_grad():
        ref_eval = copy.deepcopy(g).eval()(z)
        ref_train = copy.deepcopy(g).train()(z)
        with sampling_mode(g, "running") as s:
            assert s is g and not g.training
            assert torch.equal(g(z), ref_eval)
        assert g.training
        with sampling_mode(g, "batch"):
            assert not g.training
            out = g(z)
            half = g(z[:8])
        assert torch.equal(out, ref_train)
        assert not torch.allclose(out[:8], half, atol=1e-4)  # depends on the batch
    assert g.training
    after = {k: v for k, v in g.state_dict().items() if k in buffers}
    assert all(torch.equal(buffers[k], after[k]) for k in buffers)
    with pytest.raises(ConfigError) as e, sampling_mode(g, "train"):
        pass
    assert str(e.value).startswith("invalid value for bn: 'train' (allowed: running | batch)")


# ------------------------------------------------------------ generator.input_norm


def test_dcgan_input_norm_feature_is_gan_cifar_batchnorm1d() -> None:
    """generator.input_norm=feature normalises the linear layer's flat 4·4·C output per
    feature over the batch (tflib Batchnorm with axes [0], ε = 1e-5) before the reshape;
    channel (default) normalises per channel over (N, 4, 4) after it."""
    z = torch.randn(16, 16)
    for mode, stat_dims in (("feature", (0,)), ("channel", (0, 2, 3))):
        g = build_generator(generator_cfg("dcgan", input_norm=mode), (3, 32, 32)).train()
        seen: list[Tensor] = []
        handle = g.input_act[0].register_forward_hook(lambda m, i, o, out=seen: out.append(o))
        g(z)
        handle.remove()
        h = seen[0]
        assert h.shape == ((16, 4 * 4 * 32) if mode == "feature" else (16, 32, 4, 4))
        torch.testing.assert_close(
            h.mean(stat_dims), torch.zeros_like(h.mean(stat_dims)), atol=1e-5, rtol=0
        )
        torch.testing.assert_close(
            h.var(stat_dims, unbiased=False), torch.ones_like(h.mean(stat_dims)), atol=1e-3, rtol=0
        )
    # the whole forward against the formula written out with fresh affine parameters
    g = build_generator(generator_cfg("dcgan", input_norm="feature"), (3, 32, 32)).train()
    bn = g.input_act[0]
    assert isinstance(bn, nn.BatchNorm1d) and bn.num_features == 4 * 4 * 32
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
        lin = g.input(z)
        mean, var = lin.mean(0), lin.var(0, unbiased=False)
        h = torch.relu((lin - mean) / torch.sqrt(var + 1e-5) * bn.weight + bn.bias)
        want = g.body(h.view(16, 32, 4, 4))
        torch.testing.assert_close(g(z), want, atol=1e-6, rtol=1e-5)


def test_dcgan_input_norm_refusals() -> None:
    with pytest.raises(ConfigError) as e:
        build_generator(generator_cfg("dcgan", input_norm="features"), (3, 32, 32))
    assert e.value.key == "generator.input_norm"
    assert "allowed: channel | feature" in str(e.value)
    with pytest.raises(ConfigError) as e:
        build_generator(generator_cfg("dcgan", input_norm="feature", norm="layernorm"), (3, 32, 32))
    assert e.value.key == "generator.input_norm"
    assert "generator.norm=layernorm" in str(e.value)
    for arch in ("resnet", "mlp"):
        with pytest.raises(ConfigError) as e:
            build_generator(generator_cfg(arch, input_norm="feature"), (3, 32, 32))
        assert e.value.key == "generator.input_norm"
        assert f"generator.name={arch}" in str(e.value)
    # without a norm there is nothing to place: feature is accepted and changes nothing
    g = build_generator(generator_cfg("dcgan", input_norm="feature", norm="none"), (3, 32, 32))
    assert isinstance(g.input_act[0], nn.Identity)


# ------------------------------------------------------------ gan_mnist.py: 28 px, sigmoid


def test_dcgan_28px_is_gan_mnist_topology() -> None:
    """28×28: the generator goes 4 → 8, crops the top-left 7×7 after the first stage's
    ReLU, then 14 → 28; the critic 28 → 14 → 7 → 4 (TF 'SAME' with pad 2 at 7)."""
    g = build_generator(generator_cfg("dcgan", norm="none"), (1, 28, 28))
    d = build_critic(critic_cfg("dcgan"), (1, 28, 28))
    seen: list[tuple[int, ...]] = []
    for m in list(g.body) + list(d.body):
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) or type(m).__name__ == "Crop":
            m.register_forward_hook(lambda m, i, o, out=seen: out.append(tuple(o.shape[2:])))
    x = g(torch.randn(2, 16))
    assert x.shape == (2, 1, 28, 28)
    d(x)
    assert seen == [(8, 8), (7, 7), (14, 14), (28, 28), (14, 14), (7, 7), (4, 4)]
    # the crop keeps rows/columns 0..6 of the 8×8 map: the same as slicing by hand
    h = g.input_act(g.input(torch.randn(2, 16)).view(2, 4 * 8, 4, 4))
    up = g.body[2](g.body[1](g.body[0](h)))
    torch.testing.assert_close(g.body[3](up), up[:, :, :7, :7])


def test_generator_output_sigmoid_and_refusals() -> None:
    z = torch.randn(64, 16)
    for arch, size in (("dcgan", 28), ("dcgan", 32), ("resnet", 32), ("mlp", 16)):
        g = build_generator(generator_cfg(arch, output="sigmoid"), (1, size, size))
        with torch.no_grad():
            x = g(z)
        assert x.min() >= 0 and x.max() <= 1 and x.min() < 0.5 < x.max()
        assert isinstance(list(g.modules())[-1], nn.Sigmoid)
    with pytest.raises(ConfigError) as e:
        build_generator(generator_cfg("dcgan", output="softmax"), (3, 32, 32))
    assert e.value.key == "generator.output" and "allowed: tanh | sigmoid" in str(e.value)
    with pytest.raises(ConfigError) as e:
        build_generator(generator_cfg("mlp", output="sigmoid"), (2,))
    assert e.value.key == "generator.output" and "points data" in str(e.value)
