"""Known-answer tests of wgangp.metrics (no download, CPU, a few seconds)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch
from torch import nn

from wgangp.data.toy import MixtureOfGaussians, grid_modes, ring_modes
from wgangp.errors import ConfigError, MetricUnavailable
from wgangp.metrics import (
    METRIC_DIRECTION,
    METRIC_NAMES,
    FeatureExtractor,
    InceptionExtractor,
    RealStats,
    StatsKey,
    compute_metrics,
    extract_features,
    feature_statistics,
    fid_from_features,
    frechet_distance,
    high_quality_fraction,
    inception_score_from_logits,
    is_better,
    kid_from_features,
    load_or_compute_real_stats,
    mode_counts,
    modes_captured,
    points_metrics,
    precision_recall_from_features,
    real_stats_path,
    reverse_kl,
    sliced_wasserstein,
    to_uint8,
    wasserstein_distance,
    wasserstein_exact,
    wasserstein_with_reference,
)
from wgangp.metrics.points import sliced_constant

STD = 0.02


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors on a 2-core machine: intra-op threads only add contention."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def ring() -> torch.Tensor:
    return ring_modes(8, 2.0)


# --------------------------------------------------------------------------- modes


def test_all_samples_in_one_mode(ring: torch.Tensor) -> None:
    fake = ring[3] + 0.5 * STD * torch.randn(500, 2, generator=gen())
    m = points_metrics(fake, fake, ring, STD)
    assert m["modes_captured"] == 1
    assert m["high_quality"] == 1.0
    assert m["reverse_kl"] == pytest.approx(math.log(8), abs=1e-8)
    assert mode_counts(fake, ring, STD).tolist() == [0, 0, 0, 500, 0, 0, 0, 0]


def test_even_coverage_has_zero_reverse_kl(ring: torch.Tensor) -> None:
    fake = ring.repeat(50, 1) + 0.5 * STD * torch.randn(400, 2, generator=gen())
    assert modes_captured(fake, ring, STD) == 8
    assert high_quality_fraction(fake, ring, STD) == 1.0
    assert reverse_kl(fake, ring, STD) == pytest.approx(0.0, abs=1e-9)


def test_real_mixture_samples_score_well() -> None:
    modes = grid_modes(5, 2.0)
    src = MixtureOfGaussians(modes, 0.05, 64, torch.device("cpu"), seed=1)
    fake, real = src.sample(1000, gen(1)), src.sample(2000, gen(2))
    m = points_metrics(fake, real, modes, 0.05)
    assert m["modes_captured"] == 25
    assert m["high_quality"] > 0.97  # 2-D Gaussian mass within 3σ: 1 - exp(-4.5) ≈ 0.989
    assert m["reverse_kl"] < 0.02
    # same distribution: W at the level of the real-vs-real sampling noise (mode weights)
    assert m["wasserstein"] < 2 * m["wasserstein_real"]
    collapsed = points_metrics(modes[12] + 0 * fake, real, modes, 0.05)
    assert collapsed["wasserstein"] > 5 * collapsed["wasserstein_real"]
    assert collapsed["reverse_kl"] == pytest.approx(math.log(25), abs=1e-8)


def test_far_samples_are_low_quality_and_capture_nothing(ring: torch.Tensor) -> None:
    fake = ring + 10.0
    m = points_metrics(fake, ring, ring, STD)
    assert m["high_quality"] == 0.0
    assert m["modes_captured"] == 0
    assert m["reverse_kl"] == math.inf  # no high-quality sample: undefined, worst


def test_three_sigma_boundary_and_min_count(ring: torch.Tensor) -> None:
    d = torch.tensor([1.0, 0.0])
    fake = torch.stack(
        [ring[0] + 2.9 * STD * d, ring[0] + 3.1 * STD * d, ring[1], ring[1], ring[2]]
    )
    assert mode_counts(fake, ring, STD).tolist()[:3] == [1, 2, 1]
    assert high_quality_fraction(fake, ring, STD) == pytest.approx(4 / 5)
    assert modes_captured(fake, ring, STD) == 3
    assert modes_captured(fake, ring, STD, min_count=2) == 1
    assert modes_captured(fake, ring, STD, n_std=1.0) == 2  # 2.9σ no longer counts


# --------------------------------------------------------------------------- Wasserstein


def test_exact_w1_of_a_set_with_itself_is_zero_and_translation_is_shift() -> None:
    x = torch.randn(300, 2, generator=gen())
    assert wasserstein_exact(x, x) == 0.0
    assert wasserstein_exact(x[torch.randperm(300, generator=gen(1))], x) == 0.0
    delta = torch.tensor([3.0, 4.0])
    assert wasserstein_exact(x, x + delta) == pytest.approx(5.0, rel=1e-6)
    # normalised sliced W1 is exact for translations up to Monte Carlo over directions
    assert sliced_wasserstein(x, x + delta) == pytest.approx(5.0, rel=0.04)
    assert sliced_wasserstein(x, x) == 0.0


def test_sliced_constant() -> None:
    assert sliced_constant(1) == pytest.approx(1.0)
    assert sliced_constant(2) == pytest.approx(2 / math.pi)
    assert sliced_constant(3) == pytest.approx(0.5)


def test_exact_and_sliced_agree_on_2d_gaussians() -> None:
    x = torch.randn(700, 2, generator=gen(1))
    y = torch.randn(700, 2, generator=gen(2)) * 1.3 + torch.tensor([2.0, -1.0])
    exact = wasserstein_exact(x, y)
    sliced = sliced_wasserstein(x, y, n_projections=1024)
    assert exact == pytest.approx(sliced, rel=0.08)
    assert exact > 2.0  # at least the mean shift ‖(2, -1)‖ ≈ 2.24 by Jensen


def test_sliced_1d_unequal_sizes_matches_scipy() -> None:
    x = torch.randn(301, 1, generator=gen(1))
    y = torch.rand(177, 1, generator=gen(2)) * 3
    ref = scipy.stats.wasserstein_distance(x[:, 0].numpy(), y[:, 0].numpy())
    assert sliced_wasserstein(x, y, n_projections=4) == pytest.approx(ref, rel=1e-9)


def test_wasserstein_distance_picks_exact_or_sliced_by_n() -> None:
    x = torch.randn(120, 2, generator=gen(1))
    y = torch.randn(150, 2, generator=gen(2)) + 1
    assert wasserstein_distance(x, y, exact_max_n=200) == wasserstein_exact(x, y[:120])
    assert wasserstein_distance(x, y, exact_max_n=100, seed=3) == sliced_wasserstein(
        x, y[:120], seed=3
    )
    assert sliced_wasserstein(x, y, seed=3) == sliced_wasserstein(x, y, seed=3)  # seeded


def test_wasserstein_reference_scale() -> None:
    src = MixtureOfGaussians(ring_modes(), STD, 64, torch.device("cpu"), seed=0)
    real = src.sample(1000, gen(1))
    fake = real[:, [1, 0]] * 0.5  # a shrunk, mirrored ring: clearly worse
    w, w_real = wasserstein_with_reference(fake, real)  # real split into halves
    assert w_real < 0.2 < w
    w2, w2_real = wasserstein_with_reference(fake, real, src.sample(1000, gen(2)))
    assert w2_real < 0.2 < w2


# --------------------------------------------------------------------------- FID


def test_frechet_closed_form_from_statistics() -> None:
    f64 = {"dtype": torch.float64}
    mu1, mu2 = torch.tensor([0.0, 1.0, -2.0], **f64), torch.tensor([1.0, 1.0, 0.5], **f64)
    v1, v2 = torch.tensor([1.0, 4.0, 0.25], **f64), torch.tensor([2.0, 1.0, 0.25], **f64)
    expected = float(((mu1 - mu2) ** 2).sum() + (v1 + v2 - 2 * (v1 * v2).sqrt()).sum())
    got = frechet_distance(mu1, torch.diag(v1), mu2, torch.diag(v2))
    assert got == pytest.approx(expected, rel=1e-10)
    assert frechet_distance(mu1, torch.diag(v1), mu1, torch.diag(v1)) == pytest.approx(
        0.0, abs=1e-10
    )


def test_frechet_closed_form_from_samples() -> None:
    g = gen(5)
    n = 200_000
    mu1, mu2 = torch.tensor([0.0, 0.5, 1.0, 0.0]), torch.tensor([1.0, 0.5, 0.0, -1.0])
    s1, s2 = torch.tensor([1.0, 2.0, 0.5, 1.0]), torch.tensor([0.5, 2.0, 1.0, 3.0])
    a = mu1 + s1 * torch.randn(n, 4, generator=g, dtype=torch.float64)
    b = mu2 + s2 * torch.randn(n, 4, generator=g, dtype=torch.float64)
    v1, v2 = s1**2, s2**2
    expected = float(((mu1 - mu2) ** 2).sum() + (v1 + v2 - 2 * (v1 * v2).sqrt()).sum())
    assert fid_from_features(a, b) == pytest.approx(expected, rel=0.02)


def test_fid_identical_sets_is_zero_and_singular_covariance_is_finite() -> None:
    f = torch.randn(500, 16, generator=gen())
    assert fid_from_features(f, f) == pytest.approx(0.0, abs=1e-6)
    # fewer samples than dimensions: rank-deficient covariances
    a, b = torch.randn(20, 64, generator=gen(1)), torch.randn(20, 64, generator=gen(2)) + 1
    v = fid_from_features(a, b)
    assert math.isfinite(v) and v > 0


def test_fid_matches_torch_fidelity() -> None:
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    a = torch.randn(400, 32, generator=gen(1)).double()
    b = (torch.randn(400, 32, generator=gen(2)) * 1.2 + 0.3).double()
    ref = fid_statistics_to_metric(
        fid_features_to_statistics(a), fid_features_to_statistics(b), verbose=False
    )["frechet_inception_distance"]
    assert fid_from_features(a, b) == pytest.approx(ref, rel=1e-7)
    mu, sigma = feature_statistics(a)
    np.testing.assert_allclose(sigma.numpy(), np.cov(a.numpy(), rowvar=False), rtol=1e-10)
    np.testing.assert_allclose(mu.numpy(), a.numpy().mean(0), rtol=1e-10)


# --------------------------------------------------------------------------- KID, IS, PR


def test_kid_identical_near_zero_and_matches_torch_fidelity() -> None:
    from torch_fidelity.metric_kid import kid_features_to_metric

    a = torch.randn(600, 32, generator=gen(1))
    b = torch.randn(600, 32, generator=gen(2)) + 0.5
    same, same_std = kid_from_features(a, a, subset_size=200, n_subsets=20)
    diff, _ = kid_from_features(a, b, subset_size=200, n_subsets=20)
    assert diff > 0.1
    assert abs(same) < 0.05 * diff and same_std < 0.05 * diff
    ref = kid_features_to_metric(
        a, b, kid_subsets=20, kid_subset_size=200, rng_seed=7, verbose=False
    )
    mean, std = kid_from_features(a, b, subset_size=200, n_subsets=20, seed=7)
    assert mean == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-6)
    assert std == pytest.approx(ref["kernel_inception_distance_std"], rel=1e-5)


def test_kid_subset_size_capped_by_n() -> None:
    a, b = torch.randn(50, 8, generator=gen(1)), torch.randn(40, 8, generator=gen(2)) + 2
    mean, std = kid_from_features(a, b)  # default subset 1000 > N: capped at 40
    assert mean > 0 and math.isfinite(std)


def test_inception_score_known_answers() -> None:
    mean, std = inception_score_from_logits(torch.zeros(100, 1008))
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)
    k = 10
    confident = 100.0 * torch.eye(k)[torch.arange(1000) % k]  # one-hot, evenly spread
    mean, std = inception_score_from_logits(confident, splits=10)
    assert mean == pytest.approx(k, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)
    collapsed = 100.0 * torch.eye(k)[torch.zeros(1000, dtype=torch.long)]
    assert inception_score_from_logits(collapsed)[0] == pytest.approx(1.0, abs=1e-9)


def test_inception_score_matches_torch_fidelity() -> None:
    from torch_fidelity.metric_isc import isc_features_to_metric

    logits = torch.randn(1000, 50, generator=gen(3)) * 3
    ref = isc_features_to_metric(logits, splits=10, shuffle=False)
    mean, std = inception_score_from_logits(logits, splits=10)
    assert mean == pytest.approx(ref["inception_score_mean"], rel=1e-10)
    assert std == pytest.approx(ref["inception_score_std"], rel=1e-8)


def test_precision_recall_known_answers() -> None:
    real = torch.randn(300, 16, generator=gen(1))
    assert precision_recall_from_features(real, real) == (1.0, 1.0)
    assert precision_recall_from_features(real + 100.0, real) == (0.0, 0.0)
    # fakes covering only half of the real set: precise but half the recall, roughly
    half = real[real[:, 0] > 0]
    p, r = precision_recall_from_features(half, real)
    assert p == 1.0 and 0.3 < r < 0.8


def test_precision_recall_matches_torch_fidelity() -> None:
    from torch_fidelity.metric_prc import calculate_precision_recall_full

    fake = torch.randn(250, 8, generator=gen(1)).double() * 1.3 + 0.4
    real = torch.randn(300, 8, generator=gen(2)).double()
    ref = calculate_precision_recall_full(fake, real, neighborhood=3)
    assert precision_recall_from_features(fake, real, k=3, chunk=64) == pytest.approx(ref)


# --------------------------------------------------------------------------- extractors


class TinyExtractor(nn.Module):
    """A fixed random conv net: 64-d pooled features and 10 logits, counts its calls."""

    name = "tiny-test-net"

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1234)
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(64, 10)
        self.calls = 0
        self.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        self.calls += 1
        x = to_uint8(images).float() / 127.5 - 1
        pool = self.body(x)
        return {"pool": pool, "logits": self.head(pool)}


def images(n: int, seed: int, shift: float = 0.0, channels: int = 3) -> torch.Tensor:
    g = gen(seed)
    base = torch.linspace(-0.8, 0.8, 16).view(1, 1, 1, 16).expand(n, channels, 16, 16)
    noise = 0.2 * torch.randn(n, channels, 16, 16, generator=g)
    return (base + noise + shift).clamp(-1, 1)


def test_to_uint8() -> None:
    x = torch.tensor([-1.0, -2.0, 0.0, 1.0, 5.0, 0.5]).view(1, 1, 1, 6)
    u = to_uint8(x)
    assert u.dtype == torch.uint8 and u.shape == (1, 3, 1, 6)
    assert u[0, 0, 0].tolist() == [0, 0, 128, 255, 255, 191]
    assert torch.equal(u[0, 0], u[0, 2])
    raw = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    assert torch.equal(to_uint8(raw), raw)
    with pytest.raises(ValueError, match="channels"):
        to_uint8(torch.zeros(1, 2, 4, 4))


def test_end_to_end_image_metrics_with_stand_in_extractor() -> None:
    ext = TinyExtractor()
    assert isinstance(ext, FeatureExtractor)
    real, real2, fake = images(200, 1), images(200, 2), images(200, 3, shift=0.4)
    names = ["fid", "kid", "is", "precision", "recall"]
    kw = {"extractor": ext, "batch_size": 64, "kid_subset_size": 100, "kid_subsets": 10}
    same = compute_metrics(names, real, real, **kw)
    assert set(same) == {*names, "kid_std", "is_std"}
    assert same["fid"] == pytest.approx(0.0, abs=1e-5)
    assert same["precision"] == 1.0 and same["recall"] == 1.0
    near = compute_metrics(names, real2, real, **kw)
    far = compute_metrics(names, fake, real, **kw)
    assert 0 < near["fid"] < far["fid"]
    assert near["kid"] < far["kid"]
    assert abs(same["kid"]) < 0.1 * far["kid"]
    assert far["precision"] < near["precision"]
    assert 1.0 <= far["is"] <= 10.0
    # cached statistics, or real features, give the same numbers as real images
    feats = extract_features(ext, real, batch_size=64)
    stats = RealStats.from_features(feats["pool"])
    assert compute_metrics(names, fake, stats, **kw) == pytest.approx(far)
    assert compute_metrics(names, fake, feats, **kw) == pytest.approx(far)
    # grayscale images go through as three repeated channels
    gray = compute_metrics(["fid"], images(100, 4, channels=1), real, **kw)
    assert math.isfinite(gray["fid"])
    # IS needs no real data
    assert compute_metrics(["is"], fake, None, extractor=ext)["is"] == pytest.approx(far["is"])


def test_real_stats_cached_once_and_reused(tmp_path) -> None:
    ext = TinyExtractor()
    key = StatsKey("cifar10", 16, "train", 150, ext.name)
    loads = []

    def load_images() -> torch.Tensor:
        loads.append(1)
        return images(300, 1)  # more than num_samples: cut to 150

    s1 = load_or_compute_real_stats(key, ext, load_images, cache_dir=tmp_path, batch_size=50)
    assert ext.calls == 3 and len(loads) == 1
    path = real_stats_path(key, tmp_path)
    assert path.is_file() and [p.name for p in tmp_path.iterdir()] == [path.name]
    assert s1.features.shape == (150, 64)
    s2 = load_or_compute_real_stats(key, ext, load_images, cache_dir=tmp_path, batch_size=50)
    assert ext.calls == 3 and len(loads) == 1  # neither the data nor the network touched
    assert torch.equal(s1.mu, s2.mu) and torch.equal(s1.sigma, s2.sigma)
    assert torch.equal(s1.features, s2.features)
    assert s2.mu.dtype == torch.float64
    assert set(torch.load(path, weights_only=True)) >= {"mu", "sigma", "features", "key"}
    # another key is another file; a corrupt file is recomputed and rewritten
    key2 = StatsKey("cifar10", 16, "test", 150, ext.name)
    load_or_compute_real_stats(key2, ext, load_images, cache_dir=tmp_path, batch_size=50)
    assert ext.calls == 6 and len(loads) == 2
    path.write_bytes(b"not a torch file")
    s3 = load_or_compute_real_stats(key, ext, load_images, cache_dir=tmp_path, batch_size=50)
    assert ext.calls == 9 and torch.equal(s3.mu, s1.mu)
    assert torch.load(path, weights_only=True)["key"]["split"] == "train"


def test_inception_extractor_without_weights_offline(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def no_network(*args, **kwargs):
        raise AssertionError("attempted a download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    with pytest.raises(MetricUnavailable) as e:
        InceptionExtractor()
    msg = str(e.value)
    assert "\n" not in msg
    assert "eval.inception_weights=PATH" in msg and "network" in msg
    assert str(tmp_path) in msg
    with pytest.raises(MetricUnavailable, match="no such file"):
        InceptionExtractor(tmp_path / "missing.pth")


def test_inception_extractor_download_failure_and_bad_file(tmp_path, monkeypatch) -> None:
    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(MetricUnavailable, match="could not download"):
        InceptionExtractor(cache_dir=tmp_path, allow_download=True)
    bad = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    bad.write_bytes(b"garbage")
    with pytest.raises(MetricUnavailable, match="cannot load"):
        InceptionExtractor(cache_dir=tmp_path)  # found in the cache dir, then refused


def test_inception_extractor_runs_with_local_weights(tmp_path, monkeypatch) -> None:
    """Random weights with the real layout (torchvision's Inception3 keys, as in
    pytorch-fid's file): found in the cache dir, loaded, run on grayscale floats."""
    import torchvision

    def no_network(*args, **kwargs):
        raise AssertionError("attempted a download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    net = torchvision.models.inception_v3(
        weights=None, aux_logits=False, init_weights=False, num_classes=1008
    )
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(net.state_dict(), path)
    ext = InceptionExtractor(cache_dir=tmp_path)
    assert ext.weights_path == path and isinstance(ext, FeatureExtractor)
    feats = ext(images(2, 0, channels=1))
    assert feats["pool"].shape == (2, 2048) and feats["logits"].shape == (2, 1008)
    assert torch.isfinite(feats["pool"]).all() and torch.isfinite(feats["logits"]).all()


# --------------------------------------------------------------------------- dispatch


def test_unknown_metric_name_is_a_config_error(ring: torch.Tensor) -> None:
    with pytest.raises(ConfigError) as e:
        compute_metrics(["fid", "fdi"], torch.zeros(4, 2), torch.zeros(4, 2))
    assert "fdi" in str(e.value)
    for name in METRIC_NAMES:
        assert name in str(e.value)


def test_metrics_that_do_not_fit_the_data(ring: torch.Tensor) -> None:
    pts = torch.randn(64, 2, generator=gen())
    with pytest.raises(ConfigError, match="known modes"):
        compute_metrics(["modes_captured"], pts, pts)
    with pytest.raises(ConfigError, match="for image data"):
        compute_metrics(["wasserstein"], images(8, 0), images(8, 1))
    with pytest.raises(ConfigError, match="for point data"):
        compute_metrics(["fid"], pts, pts, extractor=TinyExtractor())
    out = compute_metrics(
        ["modes_captured", "high_quality", "reverse_kl", "wasserstein"],
        pts,
        pts,
        modes=ring,
        mode_std=STD,
    )
    assert set(out) == {
        "modes_captured",
        "high_quality",
        "reverse_kl",
        "wasserstein",
        "wasserstein_real",
    }
    assert out == pytest.approx(points_metrics(pts, pts, ring, STD))


def test_metric_direction_and_is_better() -> None:
    assert set(METRIC_DIRECTION) == set(METRIC_NAMES)
    assert set(METRIC_DIRECTION.values()) == {"min", "max"}
    assert METRIC_DIRECTION["fid"] == "min" and METRIC_DIRECTION["is"] == "max"
    assert is_better("fid", 10.0, None) and is_better("fid", 9.0, 10.0)
    assert not is_better("fid", 11.0, 10.0)
    assert is_better("modes_captured", 8.0, 7.0) and not is_better("recall", 0.1, 0.2)
    assert not is_better("reverse_kl", float("nan"), 1.0)
    assert is_better("reverse_kl", 1.0, math.inf)
    with pytest.raises(ConfigError):
        is_better("bogus", 1.0, 0.0)


def test_evaluator_reads_unit_range_runs_in_8_bit(tmp_path: Path) -> None:
    """A [0, 1] run (dataset.pixel_range=[0,1]) and a [-1, 1] run of the same data with
    matching generators (u against 2u − 1) get the same FID and IS: the evaluator maps
    both the fakes and the reals to [-1, 1] before the 8-bit conversion."""
    from tests.conftest import compose_cfg
    from tests.test_image_data import write_mnist
    from wgangp.data import build_data
    from wgangp.metrics.evaluator import Evaluator

    write_mnist(tmp_path / "data", n_train=16)

    class Unit(nn.Module):
        z_dim = 4

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(z.sum(1)).view(-1, 1, 1, 1).expand(-1, 1, 28, 28)

    class Signed(Unit):
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return super().forward(z) * 2 - 1

    out = []
    for pixels, gen_cls in (("[0,1]", Unit), ("[-1,1]", Signed)):
        cfg = compose_cfg(
            "dataset=mnist",
            f"dataset.root={tmp_path / 'data'}",
            "dataset.image_size=28",
            f"dataset.pixel_range={pixels}",
            "eval.metrics=[fid,is]",
            "eval.num_samples=16",
            "eval.batch_size=8",
            f"eval.stats_cache={tmp_path / gen_cls.__name__}",
        )
        data = build_data(cfg.dataset, 4, torch.device("cpu"), 0)
        ev = Evaluator(cfg.eval, cfg.dataset, data, torch.device("cpu"), TinyExtractor())
        out.append(ev(gen_cls()))
    assert out[0] == pytest.approx(out[1], rel=1e-6)
    assert out[0]["fid"] > 0
