"""Structured configs: the schema of every user-facing key.

Hydra composes the YAML files under ``configs/`` on top of these dataclasses, so a
wrong type (``gp.lambda=abc``) or an unknown key (``trainer.stepz=5``) is refused by
OmegaConf before any work starts. Semantic checks that a type cannot express
(``λ ≥ 0``, ``0 ≤ β < 1``, CUDA present, ...) live in :mod:`wgangp.config.validate`.

Groups mirror the code: ``dataset`` → :mod:`wgangp.data` (one schema per kind of
data: :mod:`wgangp.config.schema_data`), ``critic``/``generator`` →
:mod:`wgangp.models`, ``optim``, ``gp`` → :mod:`wgangp.core.losses`, ``trainer`` →
:mod:`wgangp.train.trainer`, ``speed`` → :mod:`wgangp.fast`, ``eval`` →
:mod:`wgangp.metrics.evaluator`, ``diagnostics`` → :mod:`wgangp.metrics.diagnostics`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from wgangp.config.schema_data import DataConfig, register_data_configs


@dataclass
class CriticConfig:
    """Critic network. ``name`` picks an architecture from :mod:`wgangp.models`."""

    name: str = MISSING
    dim: int = 512
    depth: int = 3
    # relu | leaky_relu | elu | gelu | tanh | silu; dcgan also gated: sigmoid(even
    # channels)·tanh(odd channels) after layers of doubled width (gan_64x64.py)
    activation: str = "relu"
    # none | layernorm | instancenorm | auto (conv critics: the architecture's default
    # for the image size) | batchnorm (loss=wgan|dcgan|lsgan only: it breaks the
    # per-sample penalty)
    norm: str = "none"
    # weight init: tflib (the official code's) | dcgan (U, std 0.02) | pytorch
    init: str = "tflib"


@dataclass
class GeneratorConfig:
    """Generator network; ``z_dim`` is the size of the Gaussian latent."""

    name: str = MISSING
    dim: int = 512
    depth: int = 3
    activation: str = "relu"  # as critic.activation (gated: dcgan and dcgan_constant)
    norm: str = "none"  # conv generators: batchnorm | none | layernorm | instancenorm
    z_dim: int = 2
    init: str = "tflib"  # as critic.init
    # dcgan only: how the linear layer's 4·4·C output is normalised. channel: per
    # channel after the reshape (gan_64x64.py); feature: per feature before it, a
    # BatchNorm1d over 4·4·C (gan_cifar.py's Batchnorm(..., [0], ...))
    input_norm: str = "channel"
    # image generators' last layer: tanh (data in [-1, 1]) | sigmoid (dataset.pixel_range
    # [0, 1], gan_mnist.py)
    output: str = "tanh"


@dataclass
class AdamConfig:
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.0, 0.9])


@dataclass
class OptimConfig:
    # adam (the paper's) | rmsprop (TF1's RMSProp, wgangp/core/optim.py: the weight-clipping
    # baseline's, loss=wgan); betas are Adam's and unused by rmsprop
    name: str = "adam"
    critic: AdamConfig = field(default_factory=AdamConfig)
    generator: AdamConfig = field(default_factory=AdamConfig)
    # none | linear: both learning rates fall linearly to 0 at trainer.steps (the
    # paper's CIFAR ResNet); a function of the step, so resume needs no extra state
    lr_decay: str = "none"


@dataclass
class LossConfig:
    """The objective: ``wgan-gp`` (the paper's: the Wasserstein loss with the gradient
    penalty, ``gp.*``), ``wgan`` (weight clipping to ±``clip`` after every critic update,
    Arjovsky et al. 2017), or the standard GAN (``dcgan``) or least-squares GAN
    (``lsgan``) objective: the official scripts' ``MODE`` baselines (``loss=<name>``,
    wgangp/core/losses.py)."""

    name: str = "wgan-gp"
    clip: float = 0.01


@dataclass
class GPConfig:
    """Gradient penalty λ·E[(‖∇D(x̂)‖₂ − target)²] (one-sided: max(0, ·)²).

    The λ field is named ``lambda`` in the config, a Python keyword; the class is
    declared with ``lambda_`` and renamed below so users type ``gp.lambda=10``.
    """

    lambda_: float = 10.0
    target: float = 1.0
    one_sided: bool = False
    # lazy penalty (StyleGAN2-style): the penalty on every k-th critic update only,
    # with λ scaled by k so its expected weight is unchanged. 1 = every update (paper).
    every: int = 1


def _rename_field(cls: type, old: str, new: str) -> None:
    # OmegaConf reads dataclasses.fields() and the annotations, never the
    # constructor, so renaming both is enough for a key that is not an identifier.
    fields = cls.__dataclass_fields__  # type: ignore[attr-defined]
    f = fields.pop(old)
    f.name = new
    fields[new] = f
    cls.__annotations__[new] = cls.__annotations__.pop(old)
    # instances (default_factory) are read with getattr(obj, new)
    setattr(cls, new, property(lambda self: getattr(self, old)))


_rename_field(GPConfig, "lambda_", "lambda")


@dataclass
class EMAConfig:
    """Exponential moving average of the generator (``decay`` null: off)."""

    decay: float | None = None
    start: int = 0


@dataclass
class TrainerConfig:
    n_critic: int = 5
    batch_size: int = 256
    # the generator update's batch (null: batch_size); gan_cifar_resnet.py uses 2 × 64
    gen_batch_size: int | None = None
    steps: int = 2000  # generator updates
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0
    log_every: int = 50
    sample_every: int = 500
    ckpt_every: int = 500
    # a checkpoint also once this many minutes of wall time passed since the last one
    # (0: off), so a kill -9 or a node failure loses at most that much on any preset;
    # 30 bounds the loss of an image run (5000 steps between step checkpoints: hours)
    # for the price of one save per half hour, and a toy run ends before it fires
    ckpt_every_minutes: float = 30.0
    keep_checkpoints: int = 3
    precision: str = "fp32"  # fp32 | bf16 | fp16
    progress: bool = True
    nan_policy: str = "stop"  # stop | skip
    max_nan_skips: int = 10
    ema: EMAConfig = field(default_factory=EMAConfig)
    # torchrun: BatchNorm layers of the generator → SyncBatchNorm (CUDA only)
    sync_bn: bool = False


@dataclass
class SpeedConfig:
    """How fast the step runs, never what it computes (``speed=default | off``).

    Every switch keeps the method's numbers to float rounding (``batch_fakes`` changes
    the order the fakes' latents are drawn in); ``speed=off`` is the textbook path:
    separate critic forwards of real, fake and interpolates, autograd's own double
    backward, NCHW, eager kernels, a non-finite check after every update and no
    process-wide memory tuning. scripts/bench.py measures each switch.
    """

    # D(real) and D(fake) from one critic forward (changes float rounding only)
    # (a critic with batch norm, loss=wgan|dcgan|lsgan, always scores them apart: each
    # batch is normalised by its own statistics, as the official code)
    fuse_real_fake: bool = True
    # all n_critic fake batches from one generator forward (changes the noise order,
    # and batch-norm statistics of the generator: opt-in)
    batch_fakes: bool = False
    # NHWC memory format for image models: auto = on CPUs with AVX-512 convolution
    # kernels, where it is faster (wgangp/fast/layout.py); true | false to force
    channels_last: str = "auto"
    # torch.compile the generator and the critic's non-penalty path (the penalty's
    # double backward always runs eagerly: inductor does not support it)
    compile: bool = False
    cudnn_benchmark: bool = True  # CUDA only
    # CUDA: capture one whole generator iteration as a CUDA graph after a short eager
    # warm-up and replay it (wgangp/fast/cuda_graph.py): the eager step's kernels on the
    # same inputs, launched at once; opt-in (see docs/performance.md)
    cuda_graph: bool = False
    # glibc: keep freed host memory mapped instead of unmapping it, so each step does not
    # page-fault its activations back in (wgangp/fast/host_memory.py); process-wide
    keep_freed_memory: bool = True
    # when non-finite losses are detected: step = host check after every update (a sync
    # per update on CUDA); iteration = device-side flag, updates after a non-finite loss
    # skipped on the device (fused Adam's found_inf), one host check per generator
    # iteration; auto = step on CPU, iteration on CUDA
    nan_check: str = "auto"
    # ReLU/LeakyReLU masks detached in the penalty's forward: identical gradients,
    # ~half the double backward's FLOPs (wgangp/core/step.py explains why)
    detach_relu_masks: bool = True
    # 2-D convolutions in the penalty's forward get a double backward that uses the
    # backend's weight-gradient kernel (wgangp/fast/conv_grad.py): equal to float rounding
    native_conv_grads: bool = True


@dataclass
class EvalConfig:
    """Sample-quality metrics during training (:mod:`wgangp.metrics.evaluator`).

    ``every`` 0 turns evaluation off. ``metrics`` null picks defaults by data type:
    points with known modes → modes_captured, high_quality, reverse_kl, wasserstein;
    other points → wasserstein; images → fid, kid, is; stacked_mnist →
    stacked_mnist_modes, stacked_mnist_kl; ``critic_loss`` (opt-in) is the
    critic's loss on held-out data (``split``). ``keep_best`` names one of the
    metrics: the best value so far is kept as ``checkpoints/best.pt`` and is what the
    Hydra task returns (for sweepers).
    """

    every: int = 0  # generator steps between evaluations (and one at the end); 0: off
    # null: 2500 for points (PacGAN's), 10000 for images, 26000 for stacked_mnist (PacGAN's)
    num_samples: int | None = None
    metrics: list[str] | None = None
    keep_best: str | None = None
    # image metrics: Inception weights file (null: the torch hub cache, downloaded once)
    inception_weights: str | None = None
    download: bool = True  # fetch missing Inception weights into the cache (needs network)
    # cached real-data feature statistics, and the stacked-MNIST digit classifier
    stats_cache: str = "~/.cache/wgangp/stats"
    # stacked_mnist metrics: refused when the digit classifier's MNIST test accuracy is lower
    mnist_classifier_min_accuracy: float = 0.95
    split: str | None = None  # real data to compare with (null: dataset.split)
    batch_size: int = 500  # generation / feature extraction batch
    seed: int = 0  # latents and real samples of every evaluation
    # generator batch norm when sampling (metrics, pictures): running (eval mode) | batch
    # (each batch's statistics, as the official code samples; wgangp/models/sampling.py)
    bn: str = "running"


@dataclass
class ConditionalConfig:
    """Class-conditional training as ``gan_cifar_resnet.py`` (CONDITIONAL, ACGAN): the
    paper's Table 3 "supervised" CIFAR-10 model.

    The generator takes a class label (conditional batch norm in its residual blocks),
    the critic gains a class head (AC-GAN, Odena et al. 2017). Critic loss
    ``E[D(x̃)] − E[D(x)] + λ·GP + acgan_scale·CE(real logits, real labels)``; the fakes
    of a critic update use the real batch's labels. Generator loss
    ``−E[D(G(z, y))] + acgan_scale_g·CE(logits of G(z, y), y)`` with ``y`` uniform over
    the classes. The penalty is on the score alone. Needs a labelled data set
    (mnist, fashion_mnist, cifar10, or an image_folder of class sub-folders) and the
    ``resnet`` or ``dcgan`` networks with a batch-norm generator.
    """

    enabled: bool = False
    acgan_scale: float = 1.0  # ACGAN_SCALE
    acgan_scale_g: float = 0.1  # ACGAN_SCALE_G


@dataclass
class DiagnosticsConfig:
    """The critic's health in TensorBoard (:mod:`wgangp.metrics.diagnostics`), every ``every``
    generator steps and at the end (0: off), on a fixed batch (its own seeds: the
    training stream is untouched). ``layer_grads``: ‖∂L/∂a_k‖₂ of the critic loss
    without its penalty at each weight layer's input (``layer_grad/<k>_<module>``, and
    the profile as the picture ``diagnostics/layer_grads``; the paper's Figure 1b,
    left). ``histograms``: the critic's and generator's weights (``weights/...``;
    Figure 1b, right), and with ``loss=wgan`` the fraction at the clipping bound."""

    every: int = 0
    layer_grads: bool = True
    histograms: bool = True


@dataclass
class TensorBoardLoggerConfig:
    """``logger=tensorboard``: the event log in ``run_dir/tb``."""

    # the HParams dashboard's entry at the end of the run: every config value and the
    # final metrics, so that a sweep's runs compare side by side
    hparams: bool = True


@dataclass
class MlflowLoggerConfig:
    """``logger=mlflow`` (``pip install 'wgangp[mlflow]'``)."""

    # null: a file store in the run directory (run_dir/mlruns); else a path, a file://
    # or sqlite:/// URI, or a tracking server's http(s) URL
    tracking_uri: str | None = None
    experiment: str = "wgangp"  # created when missing


@dataclass
class WandbLoggerConfig:
    """``logger=wandb`` (``pip install 'wgangp[wandb]'``)."""

    # offline (run_dir/wandb, no network; upload later with wandb sync) | online | disabled
    mode: str = "offline"
    project: str = "wgangp"  # the W&B project the run goes into
    entity: str | None = None  # a team or user (online); null: the account's default


@dataclass
class LoggerConfig:
    """Where a run is recorded: each chosen tracker fills its key, the others stay null
    (``logger=[tensorboard,mlflow]`` chooses two; wgangp/io/trackers/)."""

    tensorboard: TensorBoardLoggerConfig | None = None  # run_dir/tb (the default)
    mlflow: MlflowLoggerConfig | None = None  # an MLflow run (a file store by default)
    wandb: WandbLoggerConfig | None = None  # a W&B run (offline by default)


@dataclass
class Config:
    # the kind's own schema (wgangp/config/schema_data.py) replaces this base once a
    # data set is chosen
    dataset: DataConfig = field(default_factory=DataConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    gp: GPConfig = field(default_factory=GPConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    conditional: ConditionalConfig = field(default_factory=ConditionalConfig)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    # a run directory, a checkpoint file, or "auto" (latest checkpoint of this run dir)
    resume: str | None = None
    # the logged value the Hydra task returns (what an Optuna sweep optimises)
    optimized_metric: str = "wasserstein"


def register_configs() -> None:
    """Put the schemas in Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="wgangp_schema", node=Config)
    register_data_configs()


def schema_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every leaf key of the schema, dotted (``trainer.n_critic``, ...)."""
    out: list[str] = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        sub = f.type if isinstance(f.type, type) else None
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default):
            out.extend(schema_keys(type(default), key + "."))
        elif sub is not None and dataclasses.is_dataclass(sub):
            out.extend(schema_keys(sub, key + "."))
        else:
            out.append(key)
    return out
