"""``wgangp-eval samples=…``: image metrics of any sample set against a reference.

The samples are a folder of images or an ``.npz`` (:mod:`wgangp.metrics.sample_sets`);
the reference is a data set (``dataset=NAME`` with its ``dataset.*`` keys, its images
as training sees them), another folder, or a ``mu``/``sigma`` ``.npz`` (TTUR,
pytorch-fid). ``save_ref=PATH`` writes the reference's statistics in that format.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from wgangp.config.compose import compose_config, config_dir, group_options
from wgangp.config.schema import EvalConfig
from wgangp.config.validate import resolve_device
from wgangp.data import build_data
from wgangp.data.image_folder import find_images, folder_fingerprint
from wgangp.data.pixels import SIGNED, pixel_range
from wgangp.errors import ConfigError
from wgangp.io.paths import expand_path
from wgangp.metrics import IMAGE_METRICS, FeatureExtractor, RealStats, StatsKey, sample_sets
from wgangp.metrics import evaluator as evaluate
from wgangp.metrics.evaluator import Evaluator
from wgangp.metrics.features import extract_features
from wgangp.metrics.images import image_metrics
from wgangp.metrics.real_stats import load_or_compute_real_stats

#: the metrics a mu/sigma reference allows (the others need the real features)
STATISTICS_METRICS = ("fid", "is")


@dataclass
class SampleScores:
    """What ``wgangp-eval samples=`` measured: the values, how many samples, which
    reference and resize; ``saved`` is the ``save_ref`` file written (or None)."""

    values: dict[str, float]
    num_samples: int
    reference: str
    resize: str
    saved: Path | None = None


def resize_line(resize: str) -> str:
    """The result's line saying how images reach the network."""
    return f"resize: {resize} ({sample_sets.RESIZES[resize]})"


def check_sample_args(args: Any, dataset_keys: list[str]) -> list[str]:  # noqa: ANN401
    """The metrics to compute; a :class:`ConfigError` for arguments that do not fit
    together (checked before any image is read)."""
    if args.resize not in sample_sets.RESIZES:
        raise ConfigError("resize", args.resize, " | ".join(sample_sets.RESIZES))
    given = [k for k in ("samples", "ref", "save_ref") if args[k]] + (
        ["dataset"] if dataset_keys else []
    )
    if args.checkpoint:
        if given:
            raise ConfigError(
                given[0],
                args[given[0]] if given[0] != "dataset" else dataset_keys[0],
                "a checkpoint's own data set (checkpoint=… scores a checkpoint)",
                "drop checkpoint= to score a folder or .npz of samples",
            )
        return []
    if not args.samples and not args.save_ref:
        raise ConfigError(
            "samples",
            None,
            "a folder of images or an .npz (or checkpoint=RUN, or save_ref=PATH alone)",
            "e.g. wgangp-eval samples=samples.npz ref=cifar10_train.npz",
        )
    if bool(args.ref) == bool(dataset_keys):
        raise ConfigError(
            "ref",
            args.ref,
            "exactly one reference: ref=FOLDER_OR_NPZ or dataset=NAME [dataset.KEY=…]",
            "e.g. ref=real_images/ or dataset=cifar10 dataset.root=~/data",
        )
    if dataset_keys and not any(k.startswith("dataset=") for k in dataset_keys):
        raise ConfigError("dataset", None, "a data set name with its dataset.* keys")
    for key in ("samples", "ref"):
        path = args[key]
        if path and not expand_path(path).is_dir() and not str(path).endswith(".npz"):
            raise ConfigError(key, path, "a folder of images or an .npz file", "check the path")
        if path and not expand_path(path).exists():
            raise ConfigError(key, path, "an existing folder or .npz file", "no such file")
    ref_is_file = bool(args.ref) and str(args.ref).endswith(".npz")
    if args.ref and ref_is_file and args.save_ref:
        raise ConfigError(
            "save_ref", args.save_ref, "a data set or folder reference to summarise", "it is one"
        )
    if args.save_ref and not str(args.save_ref).endswith(".npz"):
        raise ConfigError("save_ref", args.save_ref, "a path ending in .npz")
    names = [n.strip() for n in (args.metrics or "fid").split(",") if n.strip()]
    allowed = STATISTICS_METRICS if ref_is_file else IMAGE_METRICS
    if not names or any(n not in allowed for n in names):
        why = "against a mu/sigma .npz reference: " if ref_is_file else ""
        raise ConfigError(
            "metrics", args.metrics, why + "a comma-separated list of: " + ", ".join(allowed)
        )
    return names


def sample_eval_config(args: Any, names: list[str]) -> Any:  # noqa: ANN401
    """``eval.*`` settings for the reference: the defaults with the command line on top."""
    cfg = OmegaConf.structured(EvalConfig)
    cfg.metrics = [n for n in names if n != "is"] or ["fid"]
    for key in ("num_samples", "inception_weights", "stats_cache", "split"):
        if args[key] is not None:
            cfg[key] = args[key]
    cfg.seed = args.seed
    return cfg


def compose_dataset(dataset_keys: list[str]) -> Any:  # noqa: ANN401
    """The run config of ``dataset=NAME dataset.KEY=…`` (its data set's defaults)."""
    name = next(k for k in dataset_keys if k.startswith("dataset=")).split("=", 1)[1]
    options = group_options(config_dir(), "dataset")
    if name not in options:
        raise ConfigError("dataset", name, "one of: " + ", ".join(options))
    try:
        return compose_config(dataset_keys)
    except Exception as e:  # Hydra's composition errors: a misspelt dataset.* key
        raise ConfigError(
            "dataset", " ".join(dataset_keys), "the keys of its data set", str(e).splitlines()[0]
        ) from None


def make_extractor(args: Any, ev_cfg: Any, device: torch.device) -> FeatureExtractor:  # noqa: ANN401
    """The feature network, behind clean-fid's resize with ``resize=clean``."""
    extractor = evaluate.make_extractor(ev_cfg, device)
    return sample_sets.CleanResize(extractor) if args.resize == "clean" else extractor


def folder_stats(
    key: str,
    root: Path,
    extractor: FeatureExtractor,
    ev_cfg: Any,  # noqa: ANN401
) -> RealStats:
    """A folder's statistics, cached under ``stats_cache`` by its content."""
    count = len(find_images(root)) if root.is_dir() else 0
    if ev_cfg.num_samples is not None:
        count = min(count, int(ev_cfg.num_samples))
    if count < 2:
        raise ConfigError(key, str(root), "a folder of at least 2 images")
    stats_key = StatsKey(
        dataset=f"folder-{folder_fingerprint(root)[:16]}",
        resolution=0,  # each image at its own size
        split="all",
        num_samples=count,
        extractor=extractor.name,
    )
    return load_or_compute_real_stats(
        stats_key,
        extractor,
        lambda: sample_sets.folder_batches(key, root, ev_cfg.batch_size, count),
        cache_dir=ev_cfg.stats_cache,
        batch_size=ev_cfg.batch_size,
    )


def evaluate_samples(args: Any, dataset_keys: list[str]) -> SampleScores:  # noqa: ANN401
    """Score ``args.samples`` against the reference, and/or write ``args.save_ref``."""
    names = check_sample_args(args, dataset_keys)
    device = resolve_device(args.device)
    ev_cfg = sample_eval_config(args, names)
    pixels = SIGNED
    data_source = run_cfg = None
    if dataset_keys:  # the data set first: a wrong key is found before any image is read
        run_cfg = compose_dataset(dataset_keys)
        data_source = build_data(run_cfg.dataset, 1, device, seed=int(run_cfg.trainer.seed))
        if len(data_source.sample_shape) != 3:
            raise ConfigError("dataset", str(run_cfg.dataset.name), "an image data set")
        pixels = pixel_range(run_cfg.dataset)
    extractor = make_extractor(args, ev_cfg, device)
    values: dict[str, float] = {}
    n = 0
    if args.samples:
        path = expand_path(args.samples)
        limit = args.num_samples
        if path.is_dir():
            batches: Any = sample_sets.folder_batches("samples", path, ev_cfg.batch_size, limit)
        else:
            batches = sample_sets.load_npz_samples("samples", path, pixels)[:limit]
        fake = extract_features(extractor, batches, batch_size=ev_cfg.batch_size)
        n = int(fake["pool"].shape[0])
    if dataset_keys:
        assert run_cfg is not None and data_source is not None
        evaluator = Evaluator(ev_cfg, run_cfg.dataset, data_source, device, extractor)
        stats = evaluator.real_stats(extractor)
        label = f"dataset={run_cfg.dataset.name} ({evaluator.stats_key(extractor).filename()})"
    elif str(args.ref).endswith(".npz"):
        mu, sigma = sample_sets.load_reference("ref", expand_path(args.ref))
        stats = RealStats(mu=mu, sigma=sigma, features=torch.empty(0, mu.shape[0]))
        label = f"{args.ref} (mu/sigma)"
    else:
        stats = folder_stats("ref", expand_path(args.ref), extractor, ev_cfg)
        label = f"{args.ref} ({stats.features.shape[0]} images)"
    if args.samples:
        if stats.mu.shape[0] != fake["pool"].shape[1]:
            raise ConfigError(
                "ref",
                args.ref,
                f"statistics of {fake['pool'].shape[1]}-d features (the network's pool)",
                f"its mu has {stats.mu.shape[0]}",
            )
        values = image_metrics(
            names, fake, stats, kid_subset_size=min(1000, n), seed=int(args.seed)
        )
    saved = None
    if args.save_ref:
        saved = expand_path(args.save_ref)
        sample_sets.save_reference(saved, stats.mu, stats.sigma)
    return SampleScores(values, n, label, args.resize, saved)


__all__ = [
    "STATISTICS_METRICS",
    "SampleScores",
    "check_sample_args",
    "evaluate_samples",
    "resize_line",
]
