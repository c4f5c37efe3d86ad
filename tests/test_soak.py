"""Soak (slow, on demand: ``make test-slow``): a long toy run on CPU keeps memory and
throughput flat and still scores well on the quality metrics at the end.

It runs the quality benchmark's recipe (``experiment=toy_quality``, 8 Gaussians) at
batch 256 instead of its 512 (20,000 steps at 512 would take ~25 min on 2 cores) for
20,000 generator steps: the learning-rate decay stretches over the longer run, so the
end point should be as good as the benchmark's (measured: 98.5 %, in 11.5 min).

``WGANGP_SOAK_STEPS`` shortens it (default 20,000 steps) to check the test itself.
"""

from __future__ import annotations

import os
import resource

import pytest
import torch

from tests.conftest import compose_cfg
from wgangp.metrics.points import high_quality_fraction, modes_captured
from wgangp.train.artifacts import evaluated_generator
from wgangp.train.trainer import Trainer

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
        "experiment=toy_quality",
        "dataset=gaussians8",
        "trainer.batch_size=256",
        f"trainer.ema.start={STEPS // 2}",
        "eval.every=0",
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
    # still good at the end: the benchmark's metrics on 2500 samples of the EMA generator
    gen = evaluated_generator(tr)
    with torch.no_grad():
        fake = gen(tr.noise(2500))
    assert torch.isfinite(fake).all()
    if STEPS >= 10000:
        modes, std = tr.data.modes, tr.data.mode_std
        captured = modes_captured(fake, modes, std)
        hq = high_quality_fraction(fake, modes, std)
        print(f"soak: {STEPS} steps, modes {captured}/8, high quality {100 * hq:.1f}%")
        assert captured == 8
        assert hq > 0.9, hq
