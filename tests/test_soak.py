"""Soak (slow, on demand: ``make test-slow``): a long toy run on CPU keeps memory and
throughput flat and still learns the 8 Gaussians.

``WGANGP_SOAK_STEPS`` shortens it (default 20,000 steps) to check the test itself.
"""

from __future__ import annotations

import os
import resource

import pytest
import torch

from tests.conftest import compose_cfg
from wgangp.trainer import Trainer

STEPS = int(os.environ.get("WGANGP_SOAK_STEPS", "20000"))


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


@pytest.mark.slow
def test_long_toy_run_has_flat_memory_and_throughput_and_learns(tmp_path, monkeypatch):
    monkeypatch.setattr(Trainer, "write_samples", lambda self, writer: None)
    log_every = max(STEPS // 100, 1)
    cfg = compose_cfg(
        "trainer.progress=false",
        f"trainer.log_every={log_every}",
        "trainer.sample_every=0",
        f"trainer.ckpt_every={max(STEPS // 4, 1)}",
        f"trainer.steps={STEPS}",
        "critic.dim=128",
        "generator.dim=128",
    )
    tr = Trainer(cfg, tmp_path / "run", torch.device("cpu"))
    samples: list[tuple[float, float]] = []  # (RSS MiB, steps/s) at each log
    real_log = Trainer._log

    def sampling_log(self, writer, values):  # type: ignore[no-untyped-def]
        samples.append((rss_mib(), values["perf/steps_per_sec"]))
        real_log(self, writer, values)

    monkeypatch.setattr(Trainer, "_log", sampling_log)
    tr.fit()
    n = len(samples)
    rss = [r for r, _ in samples[n // 4 :]]
    early = sorted(v for _, v in samples[n // 4 : n // 2])
    late = sorted(v for _, v in samples[3 * n // 4 :])
    # memory: no growth after warm-up beyond allocator noise
    assert max(rss) - min(rss) < 64, rss
    # throughput: the last quarter's median within 40% of the second quarter's
    # (medians: robust to checkpoint writes and to other jobs on shared CPUs)
    assert late[len(late) // 2] > 0.6 * early[len(early) // 2], (early, late)
    # still good at the end: generated points sit on the 8 modes, every mode covered
    with torch.no_grad():
        fake = tr.generator(tr.noise(2000))
    assert torch.isfinite(fake).all()
    if STEPS >= 10000:
        dist = torch.cdist(fake, tr.data.modes).min(dim=1).values
        covered = torch.cdist(tr.data.modes, fake).min(dim=1).values
        assert (dist < 0.1).float().mean() > 0.8, dist.median()
        assert (covered < 0.1).all(), covered
