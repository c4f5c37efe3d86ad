"""trainer.keep_freed_memory: freed host blocks are reused without page faults (glibc).

Each case runs in its own interpreter, because the malloc settings are process-wide and
cannot be undone. The measure is the one the setting exists for: a 64 MiB tensor made,
written and freed over and over costs one minor fault per 4 KiB page every time with
glibc's defaults (the block is mmapped and unmapped each time), and none once the
heap keeps what was freed (after a warm-up of a few cycles: glibc's aligned
allocations need a slightly larger free block than they leave, so the heap first grows
by a few blocks) and the resident size stops growing.
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

# Prints the minor faults per make-write-free cycle of a 64 MiB tensor, after `setup`.
SCRIPT = """
import resource, torch
{setup}
def cycle():
    t = torch.empty({numel}, dtype=torch.float32)
    t.fill_(1.0)
    del t
for _ in range(8):  # warm-up: the heap grows until freed blocks fit the next request
    cycle()
use = lambda: resource.getrusage(resource.RUSAGE_SELF)
f0, rss0 = use().ru_minflt, use().ru_maxrss
for _ in range(16):
    cycle()
print((use().ru_minflt - f0) / 16, (use().ru_maxrss - rss0) / 1024)
"""

TRAINER = """
import tempfile
from hydra import compose, initialize_config_dir
from wgangp.config import register_configs
from wgangp.train import config_dir, register_resolvers
from wgangp.trainer import Trainer
register_configs(); register_resolvers()
with initialize_config_dir(str(config_dir()), version_base="1.3"):
    cfg = compose("config", overrides=["trainer.device=cpu", "critic.dim=8",
        "generator.dim=8", "trainer.keep_freed_memory={on}"])
Trainer(cfg, tempfile.mkdtemp(), torch.device("cpu"))
"""


def faults_and_growth(setup: str) -> tuple[float, float]:
    """Minor faults per cycle and MiB of peak RSS growth, over 16 cycles after a warm-up."""
    code = SCRIPT.format(setup=textwrap.dedent(setup), numel=MIB * 2**20 // 4)
    env = {**os.environ, "PYTHONPATH": pythonpath(REPO), "OMP_NUM_THREADS": "1"}
    for k in ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_"):
        env.pop(k, None)  # glibc's defaults, whatever the caller's shell set
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    faults, growth = proc.stdout.strip().splitlines()[-1].split()
    return float(faults), float(growth)


@pytest.mark.parametrize(
    ("setup", "kept"),
    [
        ("", False),
        (
            "from wgangp.host_memory import keep_freed_host_memory\n"
            "assert keep_freed_host_memory() and keep_freed_host_memory()",
            True,
        ),
        (TRAINER.format(on="true"), True),
        (TRAINER.format(on="false"), False),
    ],
    ids=["glibc-default", "function", "trainer-default", "trainer-off"],
)
def test_freed_block_is_reused_without_page_faults(setup, kept):
    faults, growth = faults_and_growth(setup)
    if kept:
        assert faults < 0.01 * PAGES, faults
    else:  # every page of the block faults again on each cycle
        assert faults > 0.9 * PAGES, faults
    assert growth < MIB / 2, growth  # what is kept is reused: no growth after the warm-up
