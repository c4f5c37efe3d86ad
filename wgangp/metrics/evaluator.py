"""Sample-quality evaluation during training and on demand (``eval.*`` keys).

:class:`Evaluator` draws ``eval.num_samples`` samples from a generator (fixed latents,
eval mode, no grad, in batches) and computes the configured metrics of
:mod:`wgangp.metrics` against real data:

* points: a fixed real sample of the same size (and a second one for the
  real-vs-real Wasserstein reference); mode metrics use the data set's known modes;
* images: real feature statistics from :func:`~wgangp.metrics.load_or_compute_real_stats`,
  computed once per (data set, resolution, split, sample count, extractor) and cached
  under ``eval.stats_cache``;
* stacked MNIST (``stacked_mnist_modes``, ``stacked_mnist_kl``): the mode histogram of
  the samples read by the MNIST classifier, trained once on the data set's MNIST and
  cached under ``eval.stats_cache`` (:mod:`wgangp.metrics.mnist_classifier`); each comes
  with ``_real``, the same of as many real stacked images (computed once per run);
* ``critic_loss`` (any data but text): the critic's loss, as its update computes it, on
  held-out real data and the generator's samples, beside ``critic_loss_train``, the same
  on training data (:meth:`Evaluator.critic_losses`);
* text: the character n-gram counts of every training line, computed once per run;
  the samples are the argmax symbols of the generator's output. Each ``jsN`` comes with
  ``jsN_real``, the official script's "validation set JSD": as many training lines (at
  most half the set) against the n-grams of the other lines, the value a generator as
  good as the data would get at that sample size.

When the Inception weights cannot be had (offline, no ``eval.inception_weights``), one
warning line says how to provide them and the image metrics are dropped for the rest
of the run; training goes on.

:meth:`Evaluator.evaluate` is what training calls: it returns an :class:`Evaluation`, the
values and whether ``eval.keep_best``'s metric improved; the training loop records them
(TensorBoard ``metrics/<name>``, ``run_dir/metrics.jsonl``) and keeps ``best.pt``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from wgangp.data.base import DataSource
from wgangp.data.image_folder import folder_fingerprint
from wgangp.data.pixels import as_signed, pixel_range
from wgangp.data.text import is_text
from wgangp.errors import ConfigError, MetricUnavailable
from wgangp.metrics import (
    CRITIC_METRICS,
    IMAGE_METRICS,
    FeatureExtractor,
    InceptionExtractor,
    RealStats,
    StatsKey,
    compute_metrics,
    extract_features,
    image_metrics,
    is_better,
    load_or_compute_real_stats,
    reference_ngrams,
    text_metrics,
)
from wgangp.metrics.critic_loss import CriticLossSettings, measure_critic_batch
from wgangp.metrics.mnist_classifier import load_or_train_classifier
from wgangp.metrics.selection import default_metrics, resolve_metrics
from wgangp.metrics.stacked_mnist import (
    DEFAULT_STACKED_SAMPLES,
    STACKED_METRICS,
    mode_histogram,
    stacked_scores,
)
from wgangp.metrics.text import NgramCounts
from wgangp.models.sampling import sampling_mode

log = logging.getLogger(__name__)

DEFAULT_POINT_SAMPLES = 2500  # PacGAN / VEEGAN evaluate 2500 samples
DEFAULT_IMAGE_SAMPLES = 10000
DEFAULT_TEXT_SAMPLES = 640  # gan_language.py: 10 batches of 64 per evaluation
METRICS_FILE = "metrics.jsonl"


def make_extractor(eval_cfg: Any, device: torch.device) -> FeatureExtractor:
    """The Inception feature extractor of ``eval_cfg`` (MetricUnavailable when absent)."""
    return InceptionExtractor(
        eval_cfg.inception_weights, device=device, allow_download=bool(eval_cfg.download)
    )


def dataset_id(ds: Any) -> str:
    """A data set's name for the real-statistics cache. An ``image_folder`` adds a hash
    of its content (:func:`~wgangp.data.image_folder.folder_fingerprint`: file list,
    sizes, modification times), so an edited folder gets fresh statistics and a moved
    one keeps its own."""
    name = str(ds.name)
    root = ds.get("root") if hasattr(ds, "get") else getattr(ds, "root", None)
    if name == "image_folder" and root:
        folder = Path(str(root)).expanduser()
        if folder.is_dir():
            name += "-" + folder_fingerprint(folder)[:16]
    crop = ds.get("crop", "center") if hasattr(ds, "get") else "center"
    channels = ds.get("channels", 3) if hasattr(ds, "get") else 3
    return f"{name}-{crop}-c{channels}"


@torch.no_grad()
def generate_batches(
    generator: nn.Module,
    n: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    bn: str = "running",
) -> Iterator[Tensor]:
    """``n`` samples of ``generator`` from fixed latents, batch by batch, in sampling
    mode (:func:`wgangp.models.sampling.sampling_mode`, ``bn``). A class-conditional
    generator gets the classes ``0 … K−1`` in turn: each class ``n/K`` times."""
    g = torch.Generator().manual_seed(seed)
    z_dim = generator.z_dim  # type: ignore[attr-defined]
    k = int(getattr(generator, "num_classes", 0))
    with sampling_mode(generator, bn):
        for lo in range(0, n, batch_size):
            z = torch.randn(min(batch_size, n - lo), z_dim, generator=g).to(device)
            if not k:
                yield generator(z).float()
                continue
            labels = (lo + torch.arange(len(z), device=device)) % k
            yield generator(z, labels).float()


@dataclass(frozen=True)
class Evaluation:
    """One evaluation's outcome: ``values`` by metric name and the ``seconds`` it took;
    for ``eval.keep_best``'s metric (``best_metric``; None when not measured) whether
    its value beats the best so far in the metric's direction (``is_new_best``,
    :func:`wgangp.metrics.is_better`), and the best value so far, this one included
    (``best_value``; None while there is none)."""

    values: dict[str, float]
    seconds: float
    best_metric: str | None = None
    is_new_best: bool = False
    best_value: float | None = None


class Evaluator:
    """Computes ``eval.metrics`` of a generator's samples against a data set."""

    def __init__(
        self,
        eval_cfg: Any,
        dataset_cfg: Any,
        data: DataSource,
        device: torch.device,
        extractor: FeatureExtractor | None = None,
    ) -> None:
        self.cfg = eval_cfg
        self.dataset_cfg = dataset_cfg
        self.data = data
        self.device = device
        self.is_points = len(data.sample_shape) == 1
        self.pixels = pixel_range(dataset_cfg)
        self.names = resolve_metrics(
            None if eval_cfg.metrics is None else list(eval_cfg.metrics), data
        )
        if eval_cfg.keep_best is not None and eval_cfg.keep_best not in self.names:
            raise ConfigError(
                "eval.keep_best", eval_cfg.keep_best, "one of the metrics: " + ", ".join(self.names)
            )
        self.is_text = is_text(data.sample_shape)
        # the metrics of samples alone, and whether the critic's loss is measured too
        self.sample_names = [n for n in self.names if n not in CRITIC_METRICS]
        self.measures_critic = len(self.sample_names) < len(self.names)
        default_n = (
            DEFAULT_POINT_SAMPLES
            if self.is_points
            else (DEFAULT_TEXT_SAMPLES if self.is_text else DEFAULT_IMAGE_SAMPLES)
        )
        if getattr(data, "mnist_digits", None) is not None:
            default_n = DEFAULT_STACKED_SAMPLES
        self.num_samples = int(eval_cfg.num_samples or default_n)
        self.extractor = extractor
        self.unavailable: str | None = None  # why the image metrics were dropped
        self._real_points: tuple[Tensor, Tensor] | None = None
        self._real_stats: RealStats | None = None
        self._ngrams: dict[int, NgramCounts] | None = None
        self._floor: dict[str, float] | None = None
        self._cpu_lines: Tensor | None = None
        self._split_source: DataSource | None = None
        # stacked MNIST: the digit classifier, trained (or refused) before training starts
        self.classifier: nn.Module | None = None
        self._stacked_real: dict[str, float] | None = None
        if any(n in STACKED_METRICS for n in self.names):
            self.classifier, _ = load_or_train_classifier(
                data.mnist_digits,
                eval_cfg.stats_cache,
                device,
                float(eval_cfg.get("mnist_classifier_min_accuracy", 0.95)),
            )
        # critic_loss: where the held-out reals come from, found (or refused) up front
        self.heldout: DataSource | None = self._heldout_source() if self.measures_critic else None

    # ---------------------------------------------------------------- real data
    def to_data_units(self, points: Tensor) -> Tensor:
        """Points from the networks' coordinates to the data's (the metrics' units)."""
        st = self.data.standardization
        return points if st is None else st.inverse(points.double()).float()

    def real_points(self) -> tuple[Tensor, Tensor]:
        """Two independent fixed real samples of ``num_samples`` points (CPU), in the
        data's units."""
        if self._real_points is None:
            g = torch.Generator().manual_seed(self.cfg.seed + 1)
            n = self.num_samples
            self._real_points = (
                self.to_data_units(self.data.sample(n, generator=g).float().cpu()),
                self.to_data_units(self.data.sample(n, generator=g).float().cpu()),
            )
        return self._real_points

    def _lines(self) -> Tensor:
        """Every training line as symbol indices on the CPU (text; copied once)."""
        if self._cpu_lines is None:
            self._cpu_lines = self.data.data.cpu()  # type: ignore[attr-defined]
        return self._cpu_lines

    def reference_ngrams(self) -> dict[int, NgramCounts]:
        """The n-gram counts of every training line (text), for the orders asked."""
        if self._ngrams is None:
            lines = self._lines()
            orders = sorted({int(n.removeprefix("js")) for n in self.names})
            tick = time.perf_counter()
            self._ngrams = reference_ngrams(lines, self.data.sample_shape[0], orders)
            log.info(
                "n-gram statistics (orders %s) of %d training lines: %.1fs",
                ", ".join(map(str, orders)),
                lines.shape[0],
                time.perf_counter() - tick,
            )
        return self._ngrams

    def real_floor(self) -> dict[str, float]:
        """``jsN_real``: the official script's "validation set JSD", ``num_samples``
        training lines (at most half of them), drawn without replacement, against the
        n-grams of the other lines. What a generator as good as the data would score at
        this sample size; computed once."""
        if self._floor is None:
            lines = self._lines()
            n_held = min(self.num_samples, lines.shape[0] // 2)
            g = torch.Generator().manual_seed(self.cfg.seed + 1)
            held = lines[torch.randperm(lines.shape[0], generator=g)[:n_held]]
            v = self.data.sample_shape[0]
            rest = {
                n: counts.without(NgramCounts.from_sequences(held, n, v))
                for n, counts in self.reference_ngrams().items()
            }
            self._floor = text_metrics(held, rest, self.names)
        return self._floor

    def _other_split(self) -> bool:
        return self.cfg.split is not None and self.cfg.split != self.dataset_cfg.get("split")

    def _real_source(self) -> DataSource:
        if not self._other_split():
            return self.data
        if self._split_source is None:
            from wgangp.data import build_data

            # the whole split: dataset.subset picks training samples, not held-out ones
            # (keys its kind has: a toy or text set has neither; wgangp/config/schema_data.py)
            other = {"split": self.cfg.split, "subset": None}
            ds = OmegaConf.merge(
                self.dataset_cfg, {k: v for k, v in other.items() if k in self.dataset_cfg}
            )
            # only sample() is used, never a training batch: batch size 1 fits any set
            self._split_source = build_data(ds, 1, self.device, self.cfg.seed)
        return self._split_source

    def _heldout_source(self) -> DataSource:
        """critic_loss's real data: ``eval.split`` when it differs from the training
        split, else what training never reads (:meth:`DataSource.unseen`: a toy
        distribution's fresh draws, the rest of the split after ``dataset.subset``); a
        whole stored split is refused before training (a held-out loss of training data
        says nothing)."""
        if self._other_split():
            return self._real_source()
        unseen = self.data.unseen()
        if unseen is not None:
            return unseen
        if self.is_points:  # a points file: one set, nothing held out
            raise ConfigError(
                "eval.metrics",
                list(self.names),
                "sample metrics for a points file",
                "critic_loss needs real data the critic never trained on: a points file "
                "has no other split (the toy distributions draw it afresh)",
            )
        raise ConfigError(
            "eval.split",
            self.cfg.split,
            f"a split other than dataset.split={self.dataset_cfg.get('split')} with "
            "eval.metrics containing critic_loss",
            "the critic's held-out loss needs real data it never trained on: e.g. "
            "eval.split=test (mnist, fashion_mnist, cifar10, celeba), dev (mnist_pkl), or "
            "train on dataset.subset=N and it is measured on the rest of the split",
        )

    def stats_key(self, extractor: FeatureExtractor) -> StatsKey:
        ds = self.dataset_cfg
        name = dataset_id(ds)
        if ds.get("subset") is not None and not self._other_split():
            name += f"-subset{ds.subset}"  # the training subset's statistics, not the split's
        return StatsKey(
            dataset=name,
            resolution=int(ds.get("image_size", self.data.sample_shape[-1])),
            split=str(self.cfg.split or ds.get("split") or "all"),
            num_samples=self.num_samples,
            extractor=extractor.name,
        )

    def real_stats(self, extractor: FeatureExtractor) -> RealStats:
        if self._real_stats is None:
            self._real_stats = load_or_compute_real_stats(
                self.stats_key(extractor),
                extractor,
                self._real_images,
                cache_dir=self.cfg.stats_cache,
                batch_size=self.cfg.batch_size,
            )
        return self._real_stats

    def _real_images(self) -> Iterator[Tensor]:
        """``num_samples`` real images in ``[-1, 1]``, batch by batch (``eval.seed``)."""
        src = self._real_source()
        g = torch.Generator().manual_seed(self.cfg.seed + 1)
        for lo in range(0, self.num_samples, self.cfg.batch_size):
            n = min(self.cfg.batch_size, self.num_samples - lo)
            yield as_signed(src.sample(n, generator=g), self.pixels)

    def stacked_values(self, generator: nn.Module) -> dict[str, float]:
        """The stacked-MNIST metrics of ``generator``'s samples, and ``_real``: the same
        of as many real stacked images (what a perfect generator would score)."""
        assert self.classifier is not None
        if self._stacked_real is None:
            real = stacked_scores(mode_histogram(self._real_images(), self.classifier))
            self._stacked_real = {f"{k}_real": v for k, v in real.items()}
        out = stacked_scores(mode_histogram(self._fakes(generator), self.classifier))
        return {k: out[k] for k in self.names if k in out} | {
            f"{k}_real": self._stacked_real[f"{k}_real"] for k in self.names if k in out
        }

    # ---------------------------------------------------------------- metrics
    def _get_extractor(self) -> FeatureExtractor | None:
        if self.extractor is None and self.unavailable is None:
            try:
                self.extractor = make_extractor(self.cfg, self.device)
            except MetricUnavailable as e:
                self.unavailable = str(e)
                log.warning(
                    "image metrics %s unavailable, training continues without them: %s",
                    "/".join(n for n in self.names if n in IMAGE_METRICS),
                    e,
                )
        return self.extractor

    @property
    def needs_extractor(self) -> bool:
        """Whether the metrics read features of a network (the image metrics)."""
        return any(n in IMAGE_METRICS for n in self.names)

    @property
    def active_names(self) -> list[str]:
        """The sample metrics still computed (image metrics drop out when unavailable)."""
        if self.unavailable is not None:
            return [n for n in self.sample_names if n not in IMAGE_METRICS]
        return list(self.sample_names)

    def _fakes(self, generator: nn.Module) -> Iterator[Tensor]:
        """The evaluation's samples of ``generator``: fixed latents, eval.bn's mode."""
        c = self.cfg
        batches = generate_batches(
            generator, self.num_samples, c.batch_size, c.seed, self.device, c.get("bn", "running")
        )
        return (as_signed(x, self.pixels) for x in batches)  # image metrics read [-1, 1]

    def __call__(self, generator: nn.Module) -> dict[str, float]:
        """The metrics of ``generator``'s samples; ``{}`` when none can be computed."""
        if not self.sample_names:
            return {}
        if self.is_text:
            fake = torch.cat([x.argmax(dim=1).cpu() for x in self._fakes(generator)])
            reference = self.reference_ngrams()
            out = text_metrics(fake, reference, self.names)
            out.update({f"{k}_real": v for k, v in self.real_floor().items()})
            return out
        if self.is_points:
            fake = self.to_data_units(torch.cat(list(self._fakes(generator))).cpu())
            real, real_ref = self.real_points()
            return compute_metrics(
                self.sample_names,
                fake,
                real,
                real_ref=real_ref,
                modes=None if self.data.modes is None else self.data.modes.cpu(),
                mode_std=self.data.mode_std,
                seed=self.cfg.seed,
            )
        out = self.stacked_values(generator) if self.classifier is not None else {}
        names = [n for n in self.active_names if n in IMAGE_METRICS]
        if not names:
            return out
        extractor = self._get_extractor()
        if extractor is None:
            return out
        fake_feats = extract_features(
            extractor,
            self._fakes(generator),
        )
        real = self.real_stats(extractor) if any(n != "is" for n in names) else None
        out.update(
            image_metrics(
                names,
                fake_feats,
                real,
                kid_subset_size=min(1000, self.num_samples),
                seed=self.cfg.seed,
            )
        )
        return out

    def critic_losses(
        self,
        loss_fn: Callable[[Tensor, Tensor, torch.Generator], Tensor],
        generator: nn.Module,
        batch_size: int,
    ) -> dict[str, float]:
        """``critic_loss``: the critic's loss on held-out reals and fakes, the official
        scripts' "dev disc cost" (the paper's Figure 4b: a gap to the same loss on
        training data shows the critic overfitting); ``critic_loss_train``: the same on
        training reals and the same fakes.

        ``loss_fn(real, fake, rng)`` is the critic update's loss of one batch, measured
        without updating (:func:`wgangp.metrics.critic_loss.measure_critic_batch`; ``rng``
        draws the penalty's ε). Each is the mean over ``num_samples // batch_size`` batches of
        the training batch size (at least one), fakes from fixed latents with each
        batch's own statistics (as in training), reals drawn with ``eval.seed``.
        """
        assert self.heldout is not None
        n_batches = max(1, self.num_samples // batch_size)
        sources = {"critic_loss": self.heldout, "critic_loss_train": self.data}
        # each source its own draws (reals, then ε), the same sequence for both
        rngs = {name: torch.Generator().manual_seed(self.cfg.seed + 2) for name in sources}
        totals = {
            name: torch.zeros((), dtype=torch.float64, device=self.device) for name in sources
        }
        fakes = generate_batches(
            generator, n_batches * batch_size, batch_size, self.cfg.seed, self.device, "batch"
        )
        for fake in fakes:  # generated once, measured against both
            for name, source in sources.items():
                real = source.sample(fake.shape[0], generator=rngs[name]).to(self.device)
                totals[name] += loss_fn(real, fake, rngs[name]).double()
        return {name: float(t) / n_batches for name, t in totals.items()}  # the host syncs

    def evaluate(
        self,
        generator: nn.Module,
        *,
        critic_loss: Callable[[Tensor, Tensor, torch.Generator], Tensor] | None = None,
        training_generator: nn.Module | None = None,
        batch_size: int = 0,
        best_value: float | None = None,
    ) -> Evaluation:
        """The metrics of ``generator``'s samples, plus ``critic_loss`` (when asked) with
        ``critic_loss`` and ``training_generator`` (:meth:`critic_losses`, batches of
        ``batch_size``); ``is_new_best`` when ``eval.keep_best``'s value beats
        ``best_value`` (None: nothing yet) in its direction."""
        tick = time.perf_counter()
        values = self(generator)
        if self.measures_critic:
            assert critic_loss is not None and training_generator is not None
            values.update(self.critic_losses(critic_loss, training_generator, batch_size))
        seconds = time.perf_counter() - tick
        name = self.cfg.keep_best
        if name is None or name not in values:
            return Evaluation(values, seconds)
        if is_better(name, values[name], best_value):
            return Evaluation(values, seconds, name, True, float(values[name]))
        return Evaluation(values, seconds, name, False, best_value)


__all__ = [
    "DEFAULT_IMAGE_SAMPLES",
    "DEFAULT_POINT_SAMPLES",
    "CriticLossSettings",
    "METRICS_FILE",
    "Evaluation",
    "Evaluator",
    "default_metrics",
    "generate_batches",
    "make_extractor",
    "measure_critic_batch",
    "resolve_metrics",
]
