"""speed.keep_freed_memory: freed host blocks are reused without page faults (glibc).

Each case runs in its own interpreter, because the malloc settings are process-wide and
cannot be undone. The measure is the one the setting exists for: a 64 MiB tensor made,
written and freed over and over costs one minor fault per 4 KiB page every time with
glibc's defaults (the block is mmapped and unmapped each time), and none once the
heap keeps what was freed and the resident size stops growing.

The heap needs a warm-up first: glibc's aligned allocations need a slightly larger free
block than they leave, and the small allocations made beside the block split what was
freed, so the heap grows by one block on a few early cycles. How many depends on the
address layout and on Python's hash seed (3 to 6 cycles in 120 runs here, 9 or more
once in CI), so the warm-up is not a fixed count: it ends after SETTLED cycles in a row
without faults, and must end within WARMUP_MAX cycles (the heap's growth is bounded).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO, pythonpath

MIB = 64
PAGES = MIB * 2**20 // 4096

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
    reason="glibc only",
)

SETTLED = 4
WARMUP_MAX = 64
MEASURED = 16

# Prints the warm-up length, then the minor faults per make-write-free cycle of a
# 64 MiB tensor and the MiB of peak RSS growth over MEASURED cycles, after `setup`.
SCRIPT = """
import resource, torch
{setup}
def cycle():
    t = torch.empty({numel}, dtype=torch.float32)
    t.fill_(1.0)
    del t
use = lambda: resource.getrusage(resource.RUSAGE_SELF)
warmup = quiet = 0
while quiet < {settled} and warmup < {warmup_max}:
    f0 = use().ru_minflt
    cycle()
    warmup += 1
    quiet = quiet + 1 if use().ru_minflt - f0 < {pages} // 100 else 0
f0, rss0 = use().ru_minflt, use().ru_maxrss
for _ in range({measured}):
    cycle()
print(warmup, (use().ru_minflt - f0) / {measured}, (use().ru_maxrss - rss0) / 1024)
"""

TRAINER = """
import tempfile
from hydra import compose, initialize_config_dir
from wgangp.config.schema import register_configs
from wgangp.config.compose import config_dir, register_resolvers
from wgangp.train.trainer import Trainer
register_configs(); register_resolvers()
with initialize_config_dir(str(config_dir()), version_base="1.3"):
    cfg = compose("config", overrides=["trainer.device=cpu", "critic.dim=8",
        "generator.dim=8", "speed.keep_freed_memory={on}"])
Trainer(cfg, tempfile.mkdtemp(), torch.device("cpu"))
"""


def faults_and_growth(setup: str) -> tuple[int, float, float]:
    """Warm-up cycles, then minor faults per cycle and MiB of peak RSS growth after it."""
    code = SCRIPT.format(
        setup=textwrap.dedent(setup),
        numel=MIB * 2**20 // 4,
        pages=PAGES,
        settled=SETTLED,
        warmup_max=WARMUP_MAX,
        measured=MEASURED,
    )
    env = {**os.environ, "PYTHONPATH": pythonpath(REPO), "OMP_NUM_THREADS": "1"}
    for k in ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_"):
        env.pop(k, None)  # glibc's defaults, whatever the caller's shell set
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    warmup, faults, growth = proc.stdout.strip().splitlines()[-1].split()
    return int(warmup), float(faults), float(growth)


@pytest.mark.parametrize(
    ("setup", "kept"),
    [
        ("", False),
        (
            "from wgangp.fast.host_memory import keep_freed_host_memory\n"
            "assert keep_freed_host_memory('cpu', True) and keep_freed_host_memory('cpu', True)",
            True,
        ),
        (  # a CUDA run's activations are the caching allocator's: the host is left alone
            "from wgangp.fast.host_memory import keep_freed_host_memory\n"
            "assert not keep_freed_host_memory(torch.device('cuda'), True)",
            False,
        ),
        (
            "from wgangp.fast.host_memory import keep_freed_host_memory\n"
            "assert not keep_freed_host_memory('cpu', False)",
            False,
        ),
        (TRAINER.format(on="true"), True),
        (TRAINER.format(on="false"), False),
    ],
    ids=["glibc-default", "function", "cuda-device", "disabled", "trainer-default", "trainer-off"],
)
def test_freed_block_is_reused_without_page_faults(setup, kept):
    warmup, faults, growth = faults_and_growth(setup)
    if kept:
        assert warmup < WARMUP_MAX, "the heap never settled"
        assert faults < 0.01 * PAGES, (warmup, faults)
    else:  # every page of the block faults again on each cycle: it never settles
        assert warmup == WARMUP_MAX, warmup
        assert faults > 0.9 * PAGES, faults
    assert growth < MIB / 2, growth  # what is kept is reused: no growth after the warm-up


def test_applying_it_logs_one_line_that_says_what_and_why():
    """One INFO line the first time it is applied, none for a second call or another
    device; in a fresh interpreter (the setting is process-wide)."""
    code = textwrap.dedent(
        """
        import logging, torch
        from wgangp.fast.host_memory import keep_freed_host_memory
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
        keep_freed_host_memory(torch.device("cuda"), True)
        keep_freed_host_memory("cpu", False)
        keep_freed_host_memory("cpu", True)
        keep_freed_host_memory("cpu", True)
        """
    )
    env = {**os.environ, "PYTHONPATH": pythonpath(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [
        "INFO host memory: freed blocks stay in the process (glibc mallopt M_MMAP_MAX=0, "
        "M_TRIM_THRESHOLD=max), so each CPU step reuses pages instead of page-faulting them "
        "in again; resident memory stays at the peak"
    ]
