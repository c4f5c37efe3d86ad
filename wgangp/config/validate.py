"""Semantic checks of a composed config, run before any work starts.

OmegaConf already refuses wrong types and unknown keys; these checks cover what a type
cannot say. Each failure is a :class:`ConfigError` naming the key, the value and what is
allowed.
"""

from __future__ import annotations

import difflib
import logging
import math
import re
from typing import Any

import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from wgangp.config.compose import dataset_schema
from wgangp.config.legacy import MOVED_KEYS
from wgangp.config.schema_data import KIND_NAMES
from wgangp.config.torchrun import env_info
from wgangp.data.pixels import SIGNED, UNIT, pixel_range
from wgangp.data.standardize import standardization_mode
from wgangp.errors import ConfigError
from wgangp.fast import layout

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16")
NAN_POLICIES = ("stop", "skip")
NAN_CHECKS = ("auto", "step", "iteration")
CRITIC_NORMS = ("none", "layernorm", "instancenorm", "auto", "batchnorm")
BATCHNORM_FIX = (
    "batch norm couples the samples of a batch, so the critic's gradient at one "
    "interpolate depends on the others and the per-sample penalty no longer "
    "constrains a 1-Lipschitz function (Gulrajani et al. 2017, §4); use layernorm"
)
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def _finite(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(key, value, "a finite number")
    return float(value)


def _non_negative(key: str, value: Any, fix: str) -> None:
    if _finite(key, value) < 0:
        raise ConfigError(key, value, "a number ≥ 0", fix)


def _at_least(key: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(key, value, f"an integer ≥ {low}")


def resolve_device(spec: str) -> torch.device:
    """``auto|cpu|cuda|cuda:N`` → a device that exists here, or a ConfigError."""
    if not isinstance(spec, str) or not _DEVICE_RE.match(spec):
        raise ConfigError("trainer.device", spec, "auto | cpu | cuda | cuda:N")
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(
            "trainer.device",
            spec,
            "auto | cpu | cuda | cuda:N",
            "CUDA is not available on this machine; use trainer.device=cpu (or auto)",
        )
    dev = torch.device(spec)
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(
            "trainer.device",
            spec,
            f"cuda:0 … cuda:{torch.cuda.device_count() - 1} on this machine",
        )
    return dev


LR_DECAYS = ("none", "linear")


def validate_optim(cfg: Any) -> None:
    decay = cfg.optim.get("lr_decay", "none")
    if decay not in LR_DECAYS:
        raise ConfigError("optim.lr_decay", decay, " | ".join(LR_DECAYS))
    for who in ("critic", "generator"):
        node = cfg.optim[who]
        lr = _finite(f"optim.{who}.lr", node.lr)
        if lr <= 0:
            raise ConfigError(f"optim.{who}.lr", node.lr, "a number > 0", "e.g. 1e-4 (the paper's)")
        betas = node.betas
        if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__"):
            raise ConfigError(
                f"optim.{who}.betas", betas, "two numbers [β1, β2]", "e.g. [0.0, 0.9] (the paper's)"
            )
        betas = list(betas)
        if len(betas) != 2:
            raise ConfigError(
                f"optim.{who}.betas", betas, "two numbers [β1, β2]", "e.g. [0.0, 0.9] (the paper's)"
            )
        for i, b in enumerate(betas):
            if not 0.0 <= _finite(f"optim.{who}.betas", b) < 1.0:
                raise ConfigError(f"optim.{who}.betas[{i}]", b, "0 ≤ β < 1")


def validate_pixels(cfg: Any) -> None:
    """``dataset.pixel_range`` is one the loaders know, and the generator can reach it."""
    pixels = pixel_range(cfg.dataset)
    output = cfg.generator.get("output", "tanh")
    if output == "sigmoid" and pixels == SIGNED:
        raise ConfigError(
            "generator.output",
            output,
            "tanh with dataset.pixel_range=[-1,1] (the default)",
            "a sigmoid cannot produce the data's negative values: add "
            "dataset.pixel_range=[0,1], or use generator.output=tanh",
        )
    if output == "tanh" and pixels == UNIT:
        log.warning(
            "generator.output=tanh with dataset.pixel_range=[0,1]: the generator can also "
            "produce values below 0 that the data never has; gan_mnist.py uses "
            "generator.output=sigmoid"
        )


def validate_conditional(cfg: Any) -> None:
    """``conditional.enabled`` (AC-GAN): a labelled data set, networks with a conditional
    variant and a batch-norm generator (the labels enter through conditional batch norm),
    and non-negative loss weights."""
    cond = cfg.get("conditional")
    if cond is None or not cond.enabled:
        return
    from wgangp.data.images import LABELED  # torchvision stays unimported until needed

    if cfg.dataset.name not in LABELED:
        raise ConfigError(
            "conditional.enabled",
            True,
            f"false for dataset={cfg.dataset.name}, which has no class labels",
            "class-conditional training needs a labelled data set: dataset=mnist, "
            "mnist_pkl, fashion_mnist, cifar10, or image_folder with one sub-folder per class",
        )
    from wgangp.models import registry

    for group, capable in (
        ("critic", registry.CONDITIONAL_CRITICS),
        ("generator", registry.CONDITIONAL_GENERATORS),
    ):
        if cfg[group].name not in capable:
            raise ConfigError(
                f"{group}.name",
                cfg[group].name,
                f"{' | '.join(sorted(capable))} with conditional.enabled=true",
                "class-conditional training (AC-GAN) is built for the resnet and dcgan "
                f"networks: use {group}=resnet or {group}=dcgan, or conditional.enabled=false",
            )
    registry.check_conditional_generator(cfg.generator)
    for key in ("acgan_scale", "acgan_scale_g"):
        if _finite(f"conditional.{key}", cond[key]) < 0:
            raise ConfigError(
                f"conditional.{key}", cond[key], "a number ≥ 0", "the paper uses 1 and 0.1"
            )


def validate_subset(ds: Any) -> None:
    """``dataset.subset``: null, or a count ≥ 1 of a stored image set (its size is
    checked when the set is opened)."""
    from wgangp.data.images import OPENERS  # torchvision stays unimported until needed

    subset = ds.get("subset")
    if subset is None:
        return
    if ds.name not in (*OPENERS, "mnist_pkl"):
        raise ConfigError(
            "dataset.subset",
            subset,
            f"null for dataset={ds.name}",
            "a subset of a stored image set; a toy set's size is dataset.fixed_points, "
            "text's dataset.max_examples",
        )
    _at_least("dataset.subset", subset, 1)


def validate_text(cfg: Any) -> None:
    """Text data (``dataset=billion_word``) and the language networks go together; the
    text keys of ``dataset`` are checked before anything is read."""
    from wgangp.data.text import TEXT_DATASETS, validate_text_config

    text = cfg.dataset.name in TEXT_DATASETS
    if text:
        validate_text_config(cfg.dataset)
    for group in ("critic", "generator"):
        name = cfg[group].name
        if text and name != "language":
            raise ConfigError(
                f"{group}.name",
                name,
                f"language with dataset={cfg.dataset.name}",
                f"text samples are one-hot sequences, which only the official 1-D "
                f"residual networks take: use {group}=language",
            )
        if name == "language" and not text:
            raise ConfigError(
                f"{group}.name",
                name,
                f"language only with text data (dataset={' | '.join(TEXT_DATASETS)})",
                f"for dataset={cfg.dataset.name} use {group}=mlp (points) or "
                f"{group}=dcgan | resnet (images)",
            )


LOSSES = ("wgan-gp", "wgan", "dcgan", "lsgan")
OPTIMIZERS = ("adam", "rmsprop")


def validate_loss(cfg: Any) -> None:
    """``loss.*`` and ``optim.name``: a known method and optimizer, a positive clip, and
    no option that needs what the method lacks (a penalty, fused Adam)."""
    loss, optim = cfg.loss, cfg.optim
    if loss.name not in LOSSES:
        raise ConfigError(
            "loss.name",
            loss.name,
            " | ".join(LOSSES),
            "wgan-gp is the paper's method; loss=wgan, loss=dcgan and loss=lsgan pick the "
            "official scripts' baselines (weight clipping, the standard and the "
            "least-squares GAN)",
        )
    if optim.name not in OPTIMIZERS:
        raise ConfigError("optim.name", optim.name, " | ".join(OPTIMIZERS))
    if loss.name == "wgan" and _finite("loss.clip", loss.clip) <= 0:
        raise ConfigError("loss.clip", loss.clip, "a number > 0", "the official value is 0.01")
    if loss.name != "wgan-gp" and cfg.gp.every != 1:
        raise ConfigError(
            "gp.every",
            cfg.gp.every,
            f"1 with loss.name={loss.name}",
            "this objective takes no gradient penalty, so there is none to take lazily",
        )
    if optim.name != "adam" and cfg.speed.nan_check == "iteration":
        raise ConfigError(
            "speed.nan_check",
            "iteration",
            f"step (or auto) with optim.name={optim.name}",
            "the deferred check skips a bad update on the device through fused Adam",
        )


def check_resolvable(cfg: Any) -> None:
    """Every value present and every ``${...}`` interpolation resolvable, else ConfigError."""
    try:
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "config"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        try:
            value = OmegaConf.select(cfg, key, throw_on_resolution_failure=False) if key else None
        except OmegaConfBaseException:
            value = None
        raw = _raw_value(cfg, key)
        raise ConfigError(
            key,
            raw if raw is not None else value,
            "a value or an interpolation that resolves",
            first,
        ) from None


def _raw_value(cfg: Any, key: str) -> Any:
    node: Any = cfg
    try:
        for part in key.split("."):
            node = node._get_node(part)
        return node._value() if node is not None else None
    except Exception:  # best effort, for the message only
        return None


def _leaf_keys(node: Any, prefix: str = "") -> list[str]:
    out: list[str] = []
    for k in node:
        key = f"{prefix}{k}"
        child = node._get_node(k)
        if OmegaConf.is_dict(child):
            out.extend(_leaf_keys(child, key + "."))
        else:
            out.append(key)
    return out


def check_known_keys(cfg: Any) -> None:
    """Refuse keys the schema does not have (``+trainer.stepz=1`` would be ignored); the
    ``dataset`` keys are those of its data set's kind."""
    from wgangp.config.schema import schema_keys
    from wgangp.config.schema_data import data_keys

    kind = OmegaConf.get_type(cfg, "dataset") if "dataset" in cfg else None
    if kind not in KIND_NAMES and "dataset" in cfg:  # a plain config: its name's kind
        kind = dataset_schema(str(cfg.dataset.get("name")))
    dataset_keys = [f"dataset.{k}" for k in data_keys(kind)] if kind in KIND_NAMES else []
    known = set(schema_keys()) | set(dataset_keys)
    for key in _leaf_keys(cfg):
        if key in known or any(key.startswith(k + ".") for k in known):
            continue  # a known key, or inside a free-form one (dataset.modes)
        if key in MOVED_KEYS:  # +trainer.fuse_real_fake=...: say where it went
            value = OmegaConf.select(cfg, key, throw_on_resolution_failure=False)
            shown = str(value).lower() if isinstance(value, bool) else value
            raise ConfigError(
                key,
                value,
                "a key of the schema",
                f"{key} is now {MOVED_KEYS[key]}: write {MOVED_KEYS[key]}={shown}",
            )
        close = difflib.get_close_matches(key, sorted(known), n=1)
        raise ConfigError(
            key,
            OmegaConf.select(cfg, key, throw_on_resolution_failure=False),
            "a key of the schema (see wgangp/config/schema.py)",
            f"did you mean {close[0]}?" if close else "remove it",
        )


def validate_eval(cfg: Any) -> None:
    """``eval.*``: known metric names, ``keep_best`` one of them, sizes ≥ 1."""
    from wgangp.metrics import METRIC_NAMES, validate_metric_names

    e = cfg.get("eval")
    if e is None:
        return
    from wgangp.models.sampling import check_bn_mode

    check_bn_mode("eval.bn", e.get("bn", "running"))
    _at_least("eval.every", e.every, 0)
    if e.num_samples is not None:
        _at_least("eval.num_samples", e.num_samples, 2)
    _at_least("eval.batch_size", e.batch_size, 1)
    names = None
    if e.metrics is not None:
        names = validate_metric_names(list(e.metrics))
        if not names:
            raise ConfigError(
                "eval.metrics", [], "null (defaults) or a list of: " + ", ".join(METRIC_NAMES)
            )
    if e.keep_best is not None:
        if e.keep_best not in METRIC_NAMES:
            raise ConfigError(
                "eval.keep_best", e.keep_best, "null or one of " + ", ".join(METRIC_NAMES)
            )
        if names is not None and e.keep_best not in names:
            raise ConfigError(
                "eval.keep_best",
                e.keep_best,
                "one of eval.metrics: " + ", ".join(names),
                "add it to eval.metrics or pick another",
            )
        if not e.every:
            raise ConfigError(
                "eval.keep_best",
                e.keep_best,
                "null while eval.every=0",
                "turn evaluation on, e.g. eval.every=500",
            )


def validate_diagnostics(cfg: Any) -> None:
    """``diagnostics.every`` ≥ 0, and something to record when it is on."""
    d = cfg.get("diagnostics")
    if d is None:
        return
    _at_least("diagnostics.every", d.every, 0)
    if d.every and not (d.layer_grads or d.histograms):
        raise ConfigError(
            "diagnostics.every",
            d.every,
            "0 while diagnostics.layer_grads and diagnostics.histograms are both false",
            "turn one of them on, or diagnostics.every=0",
        )


WANDB_MODES = ("offline", "online", "disabled")


def validate_logger(cfg: Any) -> None:
    """The chosen trackers' packages are installed (one line naming the extra, before
    any work starts) and ``logger.wandb.mode`` is one wandb knows."""
    from wgangp.io.trackers import PACKAGES, missing_package

    chosen = cfg.get("logger") or {}
    for name in PACKAGES:
        if chosen.get(name) is None:
            continue
        package = missing_package(name)
        if package is not None:
            ready = " | ".join(n for n in PACKAGES if missing_package(n) is None)
            raise ConfigError(
                "logger",
                name,
                f"{ready}, or several: logger=[tensorboard,{name}]",
                f"the {package} package is not installed: pip install 'wgangp[{name}]'",
            )
    w = chosen.get("wandb")
    if w is not None and w.mode not in WANDB_MODES:
        raise ConfigError(
            "logger.wandb.mode", w.mode, " | ".join(WANDB_MODES), "offline needs no network"
        )


def validate(cfg: Any) -> torch.device:
    """Check ``cfg``; return the training device. Raises :class:`ConfigError`."""
    check_known_keys(cfg)
    check_resolvable(cfg)
    _non_negative("gp.lambda", cfg.gp["lambda"], "the paper uses 10")
    _non_negative("gp.target", cfg.gp.target, "the paper uses 1")
    _at_least("gp.every", cfg.gp.every, 1)
    validate_optim(cfg)
    validate_eval(cfg)
    validate_pixels(cfg)
    validate_conditional(cfg)
    validate_text(cfg)
    validate_loss(cfg)
    validate_subset(cfg.dataset)
    if "standardize" in cfg.dataset:
        standardization_mode(cfg.dataset)
    validate_diagnostics(cfg)
    validate_logger(cfg)
    t = cfg.trainer
    _at_least("trainer.n_critic", t.n_critic, 1)
    _at_least("trainer.batch_size", t.batch_size, 1)
    if t.gen_batch_size is not None:
        _at_least("trainer.gen_batch_size", t.gen_batch_size, 1)
    _at_least("trainer.steps", t.steps, 0)
    _at_least("trainer.log_every", t.log_every, 1)
    _at_least("trainer.sample_every", t.sample_every, 0)
    _at_least("trainer.ckpt_every", t.ckpt_every, 0)
    _non_negative("trainer.ckpt_every_minutes", t.ckpt_every_minutes, "0 is off, e.g. 30")
    _at_least("trainer.keep_checkpoints", t.keep_checkpoints, 0)
    _at_least("trainer.max_nan_skips", t.max_nan_skips, 0)
    if t.precision not in PRECISIONS:
        raise ConfigError("trainer.precision", t.precision, " | ".join(PRECISIONS))
    if t.nan_policy not in NAN_POLICIES:
        raise ConfigError("trainer.nan_policy", t.nan_policy, " | ".join(NAN_POLICIES))
    speed = cfg.speed
    if speed.nan_check not in NAN_CHECKS:
        raise ConfigError("speed.nan_check", speed.nan_check, " | ".join(NAN_CHECKS))
    if layout.normalize_setting(speed.channels_last) not in layout.SETTINGS:
        raise ConfigError(
            "speed.channels_last",
            speed.channels_last,
            " | ".join(layout.SETTINGS),
            "auto picks NHWC where the CPU's convolution kernels are faster with it",
        )
    _at_least("trainer.ema.start", t.ema.start, 0)
    if t.ema.decay is not None and not 0.0 < _finite("trainer.ema.decay", t.ema.decay) < 1.0:
        raise ConfigError(
            "trainer.ema.decay", t.ema.decay, "null (off) or 0 < decay < 1", "e.g. 0.999"
        )
    norm = cfg.critic.norm
    if norm not in CRITIC_NORMS:
        raise ConfigError("critic.norm", norm, " | ".join(n for n in CRITIC_NORMS))
    if norm == "batchnorm" and cfg.loss.name == "wgan-gp":
        raise ConfigError(
            "critic.norm",
            norm,
            " | ".join(n for n in CRITIC_NORMS if n != "batchnorm") + " with loss.name=wgan-gp",
            BATCHNORM_FIX + " (batch norm is for the baselines: loss=wgan|dcgan|lsgan)",
        )
    device = resolve_device(t.device)
    if t.precision in ("fp16",) and device.type != "cuda":
        raise ConfigError(
            "trainer.precision", t.precision, "fp32 | bf16 on CPU", "fp16 needs a CUDA device"
        )
    if speed.cuda_graph:
        validate_cuda_graph(cfg, device)
    return device


def validate_cuda_graph(cfg: Any, device: torch.device) -> None:
    """speed.cuda_graph=true: refuse what a captured iteration cannot hold
    (wgangp/fast/cuda_graph.py), naming the setting that conflicts and the way out."""
    t, speed = cfg.trainer, cfg.speed
    off = "or speed.cuda_graph=false"
    if device.type != "cuda":
        raise ConfigError(
            "speed.cuda_graph",
            True,
            f"false on {device.type}",
            "CUDA graphs need a CUDA device (trainer.device=cuda)",
        )
    conflicts = [
        (
            t.precision == "fp16",
            "trainer.precision=fp16",
            f"GradScaler adjusts its scale on the host; use trainer.precision=bf16 {off}",
        ),
        (
            bool(speed.compile),
            "speed.compile=true",
            f"choose one: speed.compile=false {off}",
        ),
        (
            cfg.gp.every != 1,
            f"gp.every={cfg.gp.every}",
            f"the lazy penalty changes the iteration from one step to the next; "
            f"use gp.every=1 {off}",
        ),
        (
            cfg.optim.name != "adam",
            f"optim.name={cfg.optim.name}",
            f"a captured iteration steps Adam (capturable); use optim.name=adam {off}",
        ),
        (
            speed.nan_check == "step",
            "speed.nan_check=step",
            f"a host check after every update cannot run inside a graph; "
            f"use speed.nan_check=iteration (or auto) {off}",
        ),
        (
            env_info().enabled,
            "torchrun (WORLD_SIZE > 1)",
            f"DDP's gradient all-reduce is not captured here; {off.removeprefix('or ')}",
        ),
    ]
    for bad, setting, fix in conflicts:
        if bad:
            raise ConfigError("speed.cuda_graph", True, f"false together with {setting}", fix)
