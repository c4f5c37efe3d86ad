"""Soak (slow, on demand: ``make test-slow``): a long toy run on CPU keeps memory and
throughput flat and still learns the 8 Gaussians.

``WGANGP_SOAK_STEPS`` shortens it (default 20,000 steps) to check the test itself.
"""

from __future__ import annotations

import os
import resource
import time

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
    chunk = max(STEPS // 20, 1)
    cfg = compose_cfg("trainer.progress=false", "trainer.log_every=100",
                      "trainer.sample_every=0", f"trainer.ckpt_every={chunk}",
                      "critic.dim=128", "generator.dim=128")
    tr = Trainer(cfg, tmp_path / "run", torch.device("cpu"))
    rss, rate = [], []
    for end in range(chunk, STEPS + 1, chunk):
        tr.cfg.trainer.steps = end
        t0 = time.perf_counter()
        tr.fit()
        rate.append(chunk / (time.perf_counter() - t0))
        rss.append(rss_mib())
    warm_rss, warm_rate = rss[len(rss) // 4:], rate[len(rate) // 4:]
    # memory: no growth after warm-up beyond allocator noise
    assert max(warm_rss) - min(warm_rss) < 64, rss
    # throughput: the last quarter within 35% of the warm median (shared CPUs are noisy)
    med = sorted(warm_rate)[len(warm_rate) // 2]
    tail = warm_rate[-max(len(warm_rate) // 4, 1):]
    assert min(tail) > 0.65 * med, rate
    # still good at the end: generated points sit on the 8 modes
    with torch.no_grad():
        fake = tr.generator(tr.noise(2000))
    dist = torch.cdist(fake, tr.data.modes).min(dim=1).values
    covered = torch.cdist(tr.data.modes, fake).min(dim=1).values
    if STEPS >= 10000:
        assert (dist < 0.1).float().mean() > 0.8, dist.median()
        assert (covered < 0.1).all(), covered
    assert torch.isfinite(fake).all()
