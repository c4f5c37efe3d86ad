"""The paper's Figure 2 presets (``gan_64x64.py``'s ``GeneratorAndDiscriminator()``).

For each ``experiment=fig2_*``: the composed constants, the exact trainable parameter
counts of both networks at the official size (hand-counted from the official code,
arithmetic in the comments), shapes and finite outputs at 64×64, a critic without
cross-sample coupling, the initialisation where it differs from the default, and one
WGAN-GP training step at tiny widths. Plus the new pieces: the gated nonlinearity,
the constant-width generator, and the 101-layer bottleneck ResNets.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from tests.conftest import compose_cfg
from tests.test_image_data import small_preset_trainer, write_image_folder
from wgangp.errors import ConfigError
from wgangp.models import build_critic, build_generator, count_parameters
from wgangp.models.blocks import GatedTanh, LayerNorm2d
from wgangp.models.resnet101 import (
    BottleneckBlock,
    DepthToSpace,
    ResNet101Critic,
    ResNet101Generator,
    StridedPointwiseConv,
    SubpixelConv,
)

SHAPE = (3, 64, 64)
TINY = ("critic.dim=8", "generator.dim=8")

# Per preset: the official (generator, discriminator) pair, the keys that set the pair
# apart from dcgan64_paper's, and the trainable parameter counts (critic, generator) of
# the official models at DIM = 64. Hand counts (5×5 kernels: ·25; "LN"/"BN": scale and
# offset, 2 per channel):
#
# DCGANDiscriminator (shared by rows 2, 3, 6):
#   convs 3·64·25+64 + 64·128·25+128 + 128·256·25+256 + 256·512·25+512 = 4_306_560
#   LN 2·(128+256+512) = 1_792, linear 8192+1 = 8_193              → 4_316_545
#   bn=False (row 4): 4_316_545 − 1_792                            → 4_314_753
# DCGANGenerator: linear 128·8192+8192 = 1_056_768, BN 2·(512+256+128+64) = 1_920,
#   deconvs 512·256·25+256 + 256·128·25+128 + 128·64·25+64 + 64·3·25+3 = 4_306_051
#                                                                  → 5_364_739
#   bn=False (row 4): 5_364_739 − 1_920                            → 5_362_819
# WGANPaper_CrippledDCGANGenerator (row 2): linear 128·1024+1024 = 132_096,
#   3 × deconv 64·64·25+64 = 3·102_464, deconv 64·3·25+3 = 4_803   → 444_291
# FCGenerator (row 3): 128·512+512 + 3·(512·512+512) + 512·12288+12288
#   = 66_048 + 787_968 + 6_303_744                                 → 7_157_760
# MultiplicativeDCGANDiscriminator (row 5; every conv and norm on doubled channels):
#   convs 3·128·25+128 + 64·256·25+256 + 128·512·25+512 + 256·1024·25+1024 = 8_613_120,
#   LN 2·(256+512+1024) = 3_584, linear 8192+1 = 8_193 (reads the gated 8·64·4·4)
#                                                                  → 8_624_897
# MultiplicativeDCGANGenerator (row 5): linear 128·16384+16384 = 2_113_536,
#   BN 2·(1024+512+256+128) = 3_840, deconvs 512·512·25+512 + 256·256·25+256
#   + 128·128·25+128 + 64·3·25+3 = 8_607_299                       → 10_724_675
# ResnetDiscriminator / ResnetGenerator (row 7): see RESNET101_COUNTS below.
PRESETS: dict[str, dict[str, Any]] = {
    "fig2_no_bn_constant_g": {
        "pair": ("WGANPaper_CrippledDCGANGenerator", "DCGANDiscriminator"),
        "keys": {
            "critic.name": "dcgan",
            "critic.activation": "leaky_relu",
            "critic.norm": "layernorm",
            "critic.init": "dcgan",
            "generator.name": "dcgan_constant",
            "generator.activation": "relu",
            "generator.norm": "none",
            "generator.init": "tflib",
        },
        "counts": (4_316_545, 444_291),
    },
    "fig2_mlp_g": {
        "pair": ("FCGenerator", "DCGANDiscriminator"),
        "keys": {
            "critic.name": "dcgan",
            "critic.activation": "leaky_relu",
            "critic.norm": "layernorm",
            "critic.init": "dcgan",
            "generator.name": "mlp",
            "generator.dim": 512,  # FC_DIM, for this row instead of DIM
            "generator.depth": 4,
            "generator.activation": "relu",
            "generator.init": "tflib",
        },
        "counts": (4_316_545, 7_157_760),
    },
    "fig2_no_norm": {
        "pair": ("DCGANGenerator(bn=False)", "DCGANDiscriminator(bn=False)"),
        "keys": {
            "critic.name": "dcgan",
            "critic.activation": "leaky_relu",
            "critic.norm": "none",
            "critic.init": "dcgan",
            "generator.name": "dcgan",
            "generator.activation": "relu",
            "generator.norm": "none",
            "generator.init": "dcgan",
        },
        "counts": (4_314_753, 5_362_819),
    },
    "fig2_gated": {
        "pair": ("MultiplicativeDCGANGenerator", "MultiplicativeDCGANDiscriminator"),
        "keys": {
            "critic.name": "dcgan",
            "critic.activation": "gated",
            "critic.norm": "layernorm",
            "critic.init": "tflib",  # no set_weights_stdev(0.02) in these functions
            "generator.name": "dcgan",
            "generator.activation": "gated",
            "generator.norm": "batchnorm",
            "generator.init": "tflib",
        },
        "counts": (8_624_897, 10_724_675),
    },
    "fig2_tanh": {
        "pair": ("DCGANGenerator(nonlinearity=tanh)", "DCGANDiscriminator(nonlinearity=tanh)"),
        "keys": {
            "critic.name": "dcgan",
            "critic.activation": "tanh",
            "critic.norm": "layernorm",
            "critic.init": "dcgan",
            "generator.name": "dcgan",
            "generator.activation": "tanh",
            "generator.norm": "batchnorm",
            "generator.init": "dcgan",
        },
        "counts": (4_316_545, 5_364_739),
    },
    "fig2_resnet101": {
        "pair": ("ResnetGenerator", "ResnetDiscriminator"),
        "keys": {
            "critic.name": "resnet101",
            "critic.activation": "relu",
            "critic.norm": "layernorm",
            "critic.init": "tflib",
            "generator.name": "resnet101",
            "generator.activation": "relu",
            "generator.norm": "batchnorm",
            "generator.init": "tflib",
        },
        "counts": (7_618_801, 9_189_587),
    },
}


def _bottleneck(c_in: int, c_out: int, resample: str | None) -> int:
    """Trainable parameters of one official ``BottleneckResidualBlock`` (norm: 2·c_out)."""
    mid_in, mid_out = c_in // 2, c_out // 2
    n = c_in * mid_in + mid_in  # Conv1 1×1, bias
    n += 9 * mid_in * mid_out + mid_out  # Conv1B 3×3, bias
    n += mid_out * c_out  # Conv2 1×1, no bias
    n += 2 * c_out  # Normalize
    if resample == "up":
        n += c_in * 4 * c_out + 4 * c_out  # SubpixelConv2D 1×1 to 4·c_out, bias
    elif resample == "down":
        n += c_in * c_out + c_out  # stride-2 1×1 conv, bias
    return n


def _resnet101_counts(dim: int = 64) -> tuple[int, int]:
    d = dim
    # ResnetDiscriminator: In 1×1 3→d/2 (+bias), 5 blocks d/2, Down1 d/2→d, 6 × d,
    # Down2 d→2d, 6 × 2d, Down3 2d→4d, 6 × 4d, Down4 4d→8d, 6 × 8d, linear 8d·16 → 1
    critic = 3 * (d // 2) + d // 2
    critic += 5 * _bottleneck(d // 2, d // 2, None) + _bottleneck(d // 2, d, "down")
    for c in (d, 2 * d, 4 * d):
        critic += 6 * _bottleneck(c, c, None) + _bottleneck(c, 2 * c, "down")
    critic += 6 * _bottleneck(8 * d, 8 * d, None) + 8 * d * 16 + 1
    # ResnetGenerator: Input 128 → 8d·16 (+bias), 6 × 8d, Up1 8d→4d, 6 × 4d, Up2,
    # 6 × 2d, Up3, 6 × d, Up4 d→d/2, 5 × d/2, Out 1×1 d/2→3 (+bias)
    gen = 128 * 8 * d * 16 + 8 * d * 16
    for c in (8 * d, 4 * d, 2 * d, d):
        gen += 6 * _bottleneck(c, c, None) + _bottleneck(c, c // 2, "up")
    gen += 5 * _bottleneck(d // 2, d // 2, None) + (d // 2) * 3 + 3
    return critic, gen


def test_resnet101_hand_count() -> None:
    # blocks (c_in, c_out): (32, 32) 3_424, (32, 64, down) 9_456, (64, 64) 13_504,
    # (64, 128, down) 37_344, (128, 128) 53_632, (128, 256, down) 148_416,
    # (256, 256) 213_760, (256, 512, down) 591_744, (512, 512) 853_504;
    # up: (512, 256) 984_960, (256, 128) 246_720, (128, 64) 61_920, (64, 32) 15_600.
    # D: 128 + 5·3_424 + 9_456 + 6·13_504 + 37_344 + 6·53_632 + 148_416 + 6·213_760
    #    + 591_744 + 6·853_504 + 8_193 = 7_618_801
    # G: 1_056_768 + 6·853_504 + 984_960 + 6·213_760 + 246_720 + 6·53_632 + 61_920
    #    + 6·13_504 + 15_600 + 5·3_424 + 99 = 9_189_587
    # (512, 512): 512·256+256 + 9·256·256+256 + 256·512 + 2·512
    assert _bottleneck(512, 512, None) == 853_504
    # (512, 256, up): 512·256+256 + 9·256·128+128 + 128·256 + 2·256 + 512·1024+1024
    assert _bottleneck(512, 256, "up") == 984_960
    # (32, 64, down): 32·16+16 + 9·16·32+32 + 32·64 + 2·64 + 32·64+64
    assert _bottleneck(32, 64, "down") == 9_456
    assert _resnet101_counts() == PRESETS["fig2_resnet101"]["counts"]


def test_gated_hand_count() -> None:
    # the critic's layer norms normalise the doubled channels: 2·(256 + 512 + 1024)
    convs = 3 * 128 * 25 + 128 + 64 * 256 * 25 + 256 + 128 * 512 * 25 + 512
    convs += 256 * 1024 * 25 + 1024
    assert convs + 2 * (256 + 512 + 1024) + 8192 + 1 == 8_624_897
    gen = 128 * 16384 + 16384 + 2 * (1024 + 512 + 256 + 128)
    gen += 512 * 512 * 25 + 512 + 256 * 256 * 25 + 256 + 128 * 128 * 25 + 128 + 64 * 3 * 25 + 3
    assert gen == 10_724_675


def _nets(preset: str, *overrides: str) -> tuple[nn.Module, nn.Module]:
    cfg = compose_cfg(f"experiment={preset}", "dataset=lsun", *overrides)
    return build_critic(cfg.critic, SHAPE), build_generator(cfg.generator, SHAPE)


# ------------------------------------------------------------------ presets


@pytest.mark.parametrize("data", ["lsun", "image_folder"])
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_constants(preset: str, data: str) -> None:
    """gan_64x64.py's constants (DIM, BATCH_SIZE, CRITIC_ITERS, ITERS, LAMBDA, the
    wgan-gp Adam) and the row's pair, with whichever 64-px set it is combined."""
    cfg = compose_cfg(f"experiment={preset}", f"dataset={data}")
    official = {
        "dataset.name": data,
        "dataset.image_size": 64,
        "dataset.dequantize": False,
        "critic.dim": 64,  # DIM
        "generator.dim": 64,
        "generator.z_dim": 128,  # tf.random_normal([n_samples, 128])
        "generator.input_norm": "channel",
        "generator.output": "tanh",
        "trainer.batch_size": 64,  # BATCH_SIZE
        "trainer.gen_batch_size": None,
        "trainer.n_critic": 5,  # CRITIC_ITERS
        "trainer.steps": 200_000,  # ITERS
        "optim.critic.lr": 1e-4,  # AdamOptimizer(learning_rate=1e-4, beta1=0., beta2=0.9)
        "optim.generator.lr": 1e-4,
        "optim.lr_decay": "none",
        "gp.lambda": 10.0,  # LAMBDA
        **PRESETS[preset]["keys"],
    }
    assert {k: OmegaConf.select(cfg, k) for k in official} == official
    assert list(cfg.optim.critic.betas) == [0.0, 0.9] == list(cfg.optim.generator.betas)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_parameter_counts(preset: str) -> None:
    """Both networks at the official size hold exactly the official model's parameters."""
    critic, generator = _nets(preset)
    assert (count_parameters(critic), count_parameters(generator)) == PRESETS[preset]["counts"]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_shapes_finite_and_per_sample_critic(preset: str) -> None:
    """At tiny widths: G maps (N, 128) to finite (N, 3, 64, 64) in [-1, 1], D to (N,)
    finite scores, and D(x_i)'s gradient is zero on every other sample (train mode, as
    in the penalty: no batch statistics in the critic)."""
    torch.manual_seed(0)
    critic, generator = _nets(preset, *TINY)
    critic.train()
    with torch.no_grad():
        x = generator(torch.randn(3, 128))
    assert x.shape == (3, *SHAPE) and torch.isfinite(x).all()
    assert x.min() >= -1 and x.max() <= 1
    x.requires_grad_(True)
    out = critic(x)
    assert out.shape == (3,) and torch.isfinite(out).all()
    for i in range(3):
        (g,) = torch.autograd.grad(out[i], x, retain_graph=True)
        assert torch.all(g[[j for j in range(3) if j != i]] == 0), f"D(x_{i}) sees other samples"
        assert g[i].abs().sum() > 0


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_one_training_step(preset: str, tmp_path: Path) -> None:
    """One WGAN-GP iteration (2 critic updates, 1 generator update) at width 8 on a
    64-px image folder: finite losses, and both networks' parameters move."""
    write_image_folder(tmp_path)
    tr = small_preset_trainer(preset, tmp_path, "dataset=image_folder")
    assert tr.draw_inputs().reals[0].shape == (4, *SHAPE)
    before_d = [p.detach().clone() for p in tr.critic.parameters()]
    before_g = [p.detach().clone() for p in tr.generator.parameters()]
    stats = tr.train_step()
    assert all(torch.isfinite(v).all() for v in stats.values())
    moved_d = [not torch.equal(a, b) for a, b in zip(before_d, tr.critic.parameters(), strict=True)]
    moved_g = [
        not torch.equal(a, b) for a, b in zip(before_g, tr.generator.parameters(), strict=True)
    ]
    assert any(moved_d) and any(moved_g)


# ------------------------------------------------------------------ initialisation


def _official_std(layer: nn.Module, kind: str) -> float:
    """tflib's weight std (tflib/ops/{linear,conv2d,deconv2d}.py), from the formulas."""
    if isinstance(layer, nn.Linear):
        n_in, n_out = layer.in_features, layer.out_features
        return math.sqrt(2 / n_in) if kind == "he" else math.sqrt(2 / (n_in + n_out))
    k2, s2 = layer.kernel_size[0] ** 2, layer.stride[0] ** 2
    if isinstance(layer, nn.ConvTranspose2d):  # Deconv2D: stride 2 always
        fan_in, fan_out = layer.in_channels * k2 / 4, layer.out_channels * k2
    else:
        fan_in, fan_out = layer.in_channels * k2, layer.out_channels * k2 / s2
    return math.sqrt((4 if kind == "he" else 2) / (fan_in + fan_out))


def _check_uniform(w: Tensor, std: float, what: str) -> None:
    assert w.abs().max().item() <= std * math.sqrt(3) * (1 + 1e-6), what
    if w.numel() >= 4000:  # enough draws for the sample std to be within 5 %
        assert abs(w.std().item() / std - 1) < 0.05, (what, w.std().item(), std)


def _weighted(model: nn.Module) -> list[tuple[str, nn.Module]]:
    kinds = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)
    return [(n, m) for n, m in model.named_modules() if isinstance(m, kinds)]


def test_init_no_bn_constant_g() -> None:
    """Row 2: the crippled G keeps tflib's default init (he transposed convs, glorot
    linear), the DCGAN critic is uniform with std 0.02."""
    torch.manual_seed(0)
    critic, generator = _nets("fig2_no_bn_constant_g")
    for name, layer in _weighted(generator):
        kind = "glorot" if isinstance(layer, nn.Linear) else "he"
        _check_uniform(layer.weight, _official_std(layer, kind), f"G.{name}")
        assert torch.all(layer.bias == 0)
    # e.g. Generator.2: Deconv2D 64 → 64, 5×5: fan_in 64·25/4, fan_out 64·25
    assert _official_std(generator.body[0], "he") == math.sqrt(4 / (400 + 1600))
    for name, layer in _weighted(critic):
        _check_uniform(layer.weight, 0.02, f"D.{name}")


def test_init_mlp_g() -> None:
    """Row 3: FCGenerator's ReLULayers are he (√(2/n_in)), its output glorot."""
    torch.manual_seed(0)
    _, generator = _nets("fig2_mlp_g")
    layers = _weighted(generator)
    assert [(m.in_features, m.out_features) for _, m in layers] == [
        (128, 512),
        (512, 512),
        (512, 512),
        (512, 512),
        (512, 64 * 64 * 3),
    ]
    for i, (name, layer) in enumerate(layers):
        kind = "he" if i < 4 else "glorot"
        _check_uniform(layer.weight, _official_std(layer, kind), name)


def test_init_gated_is_tflib_not_002() -> None:
    """Row 5: neither Multiplicative function calls set_weights_stdev(0.02): he convs and
    transposed convs, glorot linears, in both networks."""
    torch.manual_seed(0)
    for model in _nets("fig2_gated"):
        for name, layer in _weighted(model):
            kind = "glorot" if isinstance(layer, nn.Linear) else "he"
            _check_uniform(layer.weight, _official_std(layer, kind), name)


@pytest.mark.parametrize("preset", ["fig2_no_norm", "fig2_tanh"])
def test_init_dcgan_rows_are_002(preset: str) -> None:
    torch.manual_seed(0)
    for model in _nets(preset):
        for name, layer in _weighted(model):
            _check_uniform(layer.weight, 0.02, name)
            if layer.bias is not None:
                assert torch.all(layer.bias == 0)


def test_init_resnet101() -> None:
    """Row 7: glorot (he_init=False) for the shortcuts, D's input conv, G's output conv
    and both linears; he for every conv inside the blocks; zero biases; norms at 1, 0."""
    torch.manual_seed(0)
    for model in _nets("fig2_resnet101"):
        n_glorot = 0
        for name, layer in _weighted(model):
            glorot = "shortcut" in name or name in ("input", "output")
            n_glorot += glorot
            _check_uniform(layer.weight, _official_std(layer, "glorot" if glorot else "he"), name)
            if layer.bias is not None:
                assert torch.all(layer.bias == 0)
        assert n_glorot == 6  # 4 shortcuts + input + output
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, LayerNorm2d)):
                assert torch.all(m.weight == 1) and torch.all(m.bias == 0)


# ------------------------------------------------------------------ gated nonlinearity


def test_gate_is_pixelcnn_gated_nonlinearity() -> None:
    x = torch.randn(2, 6, 3, 3)
    expected = torch.sigmoid(x[:, [0, 2, 4]]) * torch.tanh(x[:, [1, 3, 5]])
    torch.testing.assert_close(GatedTanh()(x), expected)


def test_gated_layers_double_width_norm_before_gate() -> None:
    """MultiplicativeDCGAN*: each layer feeding a gate has 2× the channels, the norm
    (over all of them) comes before the gate, none on the critic's first conv."""
    critic, generator = _nets("fig2_gated", *TINY)
    d = 8
    kinds = [type(m).__name__ for m in critic.body]
    assert kinds == ["Conv2d", "GatedTanh"] + ["Conv2d", "LayerNorm2d", "GatedTanh"] * 3
    convs = [m for m in critic.body if isinstance(m, nn.Conv2d)]
    assert [(m.in_channels, m.out_channels) for m in convs] == [
        (3, 2 * d),
        (d, 4 * d),
        (2 * d, 8 * d),
        (4 * d, 16 * d),
    ]
    lns = [m.num_channels for m in critic.body if isinstance(m, LayerNorm2d)]
    assert lns == [4 * d, 8 * d, 16 * d]
    assert critic.output.in_features == 8 * d * 16
    assert generator.input.out_features == 4 * 4 * 8 * d * 2
    assert isinstance(generator.input_act[0], nn.BatchNorm2d)
    assert generator.input_act[0].num_features == 16 * d
    assert isinstance(generator.input_act[1], GatedTanh)
    kinds = [type(m).__name__ for m in generator.body]
    assert kinds == ["ConvTranspose2d", "BatchNorm2d", "GatedTanh"] * 3 + [
        "ConvTranspose2d",
        "Tanh",
    ]
    ups = [m for m in generator.body if isinstance(m, nn.ConvTranspose2d)]
    assert [(m.in_channels, m.out_channels) for m in ups] == [
        (8 * d, 8 * d),
        (4 * d, 4 * d),
        (2 * d, 2 * d),
        (d, 3),
    ]


def test_gated_generator_gates_channels_after_the_reshape() -> None:
    """G's first gate pairs channels 2k and 2k+1 of the (16·dim, 4, 4) map (also with a
    per-feature first norm), like output[:, ::2] after tf.reshape."""
    for input_norm in ("channel", "feature"):
        _, g = _nets("fig2_gated", *TINY, f"generator.input_norm={input_norm}")
        g.eval()
        seen: list[Tensor] = []
        g.body[0].register_forward_hook(lambda m, i, o, s=seen: s.append(i[0]))
        z = torch.randn(2, 128)
        with torch.no_grad():
            g(z)
            h = g.input(z)
            norm = g.input_act[0]
            h = (
                norm(h).view(2, 128, 4, 4)
                if input_norm == "feature"
                else norm(h.view(2, 128, 4, 4))
            )
        torch.testing.assert_close(seen[0], torch.sigmoid(h[:, ::2]) * torch.tanh(h[:, 1::2]))


def test_gated_refused_where_widths_do_not_double() -> None:
    with pytest.raises(ConfigError) as e:
        compose_and_build("critic.name=resnet101", "critic.activation=gated")
    assert e.value.key == "critic.activation"
    assert "use critic=dcgan" in str(e.value)
    with pytest.raises(ConfigError) as e:
        compose_and_build("generator=mlp", "generator.activation=gated")
    assert e.value.key == "generator.activation"


def compose_and_build(*overrides: str) -> tuple[nn.Module, nn.Module]:
    cfg = compose_cfg("experiment=fig2_resnet101", "dataset=lsun", *TINY, *overrides)
    return build_critic(cfg.critic, SHAPE), build_generator(cfg.generator, SHAPE)


# ------------------------------------------------------------------ constant width


def test_constant_width_generator_layers() -> None:
    """WGANPaper_CrippledDCGANGenerator: linear → 4·4·dim, ReLU, 3 × [deconv dim → dim,
    ReLU], deconv dim → 3, tanh; no norm anywhere."""
    _, g = _nets("fig2_no_bn_constant_g", *TINY)
    assert (g.input.in_features, g.input.out_features) == (128, 4 * 4 * 8)
    assert isinstance(g.input_act[0], nn.Identity) and isinstance(g.input_act[1], nn.ReLU)
    kinds = [type(m).__name__ for m in g.body]
    assert kinds == ["ConvTranspose2d", "Identity", "ReLU"] * 3 + ["ConvTranspose2d", "Tanh"]
    ups = [(m.in_channels, m.out_channels) for m in g.body if isinstance(m, nn.ConvTranspose2d)]
    assert ups == [(8, 8), (8, 8), (8, 8), (8, 3)]
    with pytest.raises(ConfigError) as e:  # gan_cifar.py's per-feature BN is dcgan's only
        _nets("fig2_no_bn_constant_g", *TINY, "generator.input_norm=feature")
    assert e.value.key == "generator.input_norm"


# ------------------------------------------------------------------ 101-layer ResNets


def test_resnet101_has_101_layers() -> None:
    """33 bottleneck blocks of 3 convs + the input and output layer = 101 weight layers
    on the main path in each network; the 4 resampling blocks add a 1×1 shortcut conv
    each (not counted, as in He et al.'s ResNet-101)."""
    critic, generator = _nets("fig2_resnet101", *TINY)
    for model in (critic, generator):
        blocks = [m for m in model.modules() if isinstance(m, BottleneckBlock)]
        assert len(blocks) == 33
        layers = _weighted(model)
        shortcuts = [n for n, _ in layers if "shortcut" in n]
        assert len(layers) == 105 and len(shortcuts) == 4
        assert len(layers) - len(shortcuts) == 101
        # no bias on each block's last 1×1 conv (a norm follows it), bias elsewhere
        assert all(b.conv2.bias is None for b in blocks)
        assert all(m.bias is not None for n, m in layers if not n.endswith("conv2"))
    assert [
        type(b.shortcut) for b in generator.blocks if not isinstance(b.shortcut, nn.Identity)
    ] == [SubpixelConv] * 4
    downs = [b.shortcut for b in critic.blocks if not isinstance(b.shortcut, nn.Identity)]
    assert all(isinstance(s, nn.Conv2d) and s.kernel_size == (1, 1) for s in downs)
    assert all(s.stride == (2, 2) for s in downs) and len(downs) == 4


def test_resnet101_stage_plan() -> None:
    """Width and side of every block's output: G 8d@4 (×6), 4d@8 (Up1 + 6), 2d@16,
    d@32, d/2@64 (Up4 + 5); D the reverse with 5 blocks at 64 and 6 at each other side."""
    d = 8
    critic, generator = _nets("fig2_resnet101", *TINY)
    for model, x, plan in (
        (
            generator,
            torch.randn(2, 128),
            [(8 * d, 4)] * 6
            + [(4 * d, 8)] * 7
            + [(2 * d, 16)] * 7
            + [(d, 32)] * 7
            + [(d // 2, 64)] * 6,
        ),
        (
            critic,
            torch.randn(2, *SHAPE),
            [(d // 2, 64)] * 5
            + [(d, 32)] * 7
            + [(2 * d, 16)] * 7
            + [(4 * d, 8)] * 7
            + [(8 * d, 4)] * 7,
        ),
    ):
        seen: list[tuple[int, int]] = []
        for b in model.blocks:
            b.register_forward_hook(lambda m, i, o, s=seen: s.append((o.shape[1], o.shape[2])))
        with torch.no_grad():
            model(x)
        assert seen == plan


def test_resnet101_scalings() -> None:
    """G's output is tanh(conv(x) / 5), D's score linear(x) / 5, and a block adds 0.3 ×
    its normalised residual branch to the shortcut."""
    torch.manual_seed(0)
    critic, generator = _nets("fig2_resnet101", *TINY)
    pre: list[Tensor] = []
    generator.output.register_forward_hook(lambda m, i, o: pre.append(o))
    lin: list[Tensor] = []
    critic.output.register_forward_hook(lambda m, i, o: lin.append(o))
    with torch.no_grad():
        x = generator(torch.randn(2, 128))
        torch.testing.assert_close(x, torch.tanh(pre[0] / 5))
        torch.testing.assert_close(critic(x), lin[0].squeeze(1) / 5)
    block = critic.blocks[0]
    branch: list[Tensor] = []
    block.norm.register_forward_hook(lambda m, i, o: branch.append(o))
    h = torch.randn(2, 4, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(block(h), h + 0.3 * branch[0])
    assert isinstance(block.norm, LayerNorm2d)
    assert all(isinstance(b.norm, nn.BatchNorm2d) for b in generator.blocks)


def test_depth_to_space_is_tensorflows() -> None:
    """out[n, c, 2h+i, 2w+j] = x[n, (2i+j)·C + c, h, w] (tf.depth_to_space on NHWC)."""
    n, c, h, w = 2, 3, 2, 3
    x = torch.randn(n, 4 * c, h, w)
    y = DepthToSpace()(x)
    assert y.shape == (n, c, 2 * h, 2 * w)
    for i in range(2):
        for j in range(2):
            torch.testing.assert_close(
                y[:, :, i::2, j::2], x[:, (2 * i + j) * c : (2 * i + j + 1) * c]
            )
    s = SubpixelConv(5, 3)
    assert s[0].kernel_size == (1, 1) and s[0].out_channels == 12
    assert s(torch.randn(1, 5, 4, 4)).shape == (1, 3, 8, 8)


def test_strided_pointwise_conv_is_a_stride_2_conv() -> None:
    """The 'down' shortcut: the same map as a 1×1 stride-2 conv (TensorFlow pads nothing
    there), with tflib's stride-2 glorot std √(2 / (c_in + c_out/4))."""
    torch.manual_seed(0)
    layer = StridedPointwiseConv(32, 64)
    x = torch.randn(2, 32, 16, 16)
    expected = nn.functional.conv2d(x, layer.weight, layer.bias, stride=2)
    torch.testing.assert_close(layer(x), expected)
    critic, _ = _nets("fig2_resnet101")
    down1 = critic.blocks[5].shortcut  # Discriminator.Down1.Shortcut: 32 → 64
    assert isinstance(down1, StridedPointwiseConv) and down1.in_channels == 32
    _check_uniform(down1.weight, math.sqrt(2 / (32 + 64 / 4)), "Down1.Shortcut")


def test_resnet101_penalty_in_channels_last() -> None:
    """The penalty's double backward through the tiny critic in channels-last memory
    (speed.channels_last): PyTorch's CPU backward of a strided 1×1 conv with 4–16
    channels at 64×64 corrupts the heap there, which StridedPointwiseConv avoids."""
    torch.manual_seed(0)
    critic, _ = _nets("fig2_resnet101", *TINY)
    critic = critic.to(memory_format=torch.channels_last)
    x = torch.randn(2, *SHAPE).to(memory_format=torch.channels_last).requires_grad_(True)
    (g,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    ((g.flatten(1).norm(dim=1) - 1) ** 2).mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in critic.parameters() if p.grad is not None)


def test_resnet101_refusals() -> None:
    with pytest.raises(ConfigError) as e:
        compose_and_build("critic.dim=6")
    assert e.value.key == "critic.dim" and "a multiple of 4" in str(e.value)
    with pytest.raises(ConfigError) as e:
        compose_and_build("critic.norm=groupnorm")
    assert e.value.key == "critic.norm"
    cfg = compose_cfg("experiment=fig2_resnet101", "dataset=lsun", *TINY)
    with pytest.raises(ConfigError) as e:
        build_generator(cfg.generator, (3, 32, 32))
    assert e.value.key == "dataset.image_size" and "allowed: 64" in str(e.value)
    cfg.critic.norm = "auto"
    assert isinstance(build_critic(cfg.critic, SHAPE), ResNet101Critic)
    assert isinstance(build_generator(cfg.generator, SHAPE), ResNet101Generator)
    auto = build_critic(cfg.critic, SHAPE)
    assert isinstance(auto.blocks[0].norm, LayerNorm2d)  # auto: the official layer norm
