"""Checkpoints: bitwise resume, SIGTERM, and refusing what doesn't fit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, TINY, cli, compose_cfg, pythonpath
from wgangp.checkpoint import load_checkpoint
from wgangp.errors import CheckpointError
from wgangp.trainer import Trainer


def run_dir(root: Path) -> Path:
    (d,) = [p for p in (root / "outputs").glob("*/*") if p.is_dir()]
    return d


def assert_same_state(a: dict, b: dict) -> None:
    for key in ("critic", "generator"):
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), f"{key}.{k} differs"
    for key in ("opt_critic", "opt_generator"):
        for pid, st in a[key]["state"].items():
            for k, v in st.items():
                assert torch.equal(v, b[key]["state"][pid][k]), f"{key}[{pid}].{k} differs"
    assert torch.equal(a["rng"]["noise"], b["rng"]["noise"])


def test_training_2n_equals_n_then_resume_to_2n_bitwise(tmp_path):
    common = [*TINY, "trainer.ckpt_every=5", "trainer.sample_every=0"]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cli(*common, "trainer.steps=16", cwd=tmp_path / "a", check=True)
    cli(*common, "trainer.steps=8", cwd=tmp_path / "b", check=True)
    b = run_dir(tmp_path / "b")
    proc = cli(f"resume={b}", "trainer.steps=16", cwd=tmp_path / "b", check=True)
    # in place: still one run directory, and the change was accepted and recorded
    assert run_dir(tmp_path / "b") == b
    assert (
        "config changes accepted: trainer.steps 8→16" in proc.stderr + (b / "train.log").read_text()
    )
    assert list((b / ".hydra").glob("resume_*/overrides.yaml"))
    full = load_checkpoint(run_dir(tmp_path / "a") / "checkpoints" / "last.pt")
    resumed = load_checkpoint(b / "checkpoints" / "last.pt")
    assert full["step"] == resumed["step"] == 16
    assert_same_state(full, resumed)
    assert resumed["history"] == [{"step": 8, "changes": {"trainer.steps": [8, 16]}}]
    # the resumed run kept its own overrides (dims 32), not the defaults
    assert resumed["config"]["critic"]["dim"] == 32


def test_resume_from_a_checkpoint_file_in_place(tmp_path):
    cli(*TINY, "trainer.steps=4", "trainer.ckpt_every=2", cwd=tmp_path, check=True)
    d = run_dir(tmp_path)
    cli(f"resume={d}/checkpoints/step_0000002.pt", "trainer.steps=6", cwd=tmp_path, check=True)
    assert load_checkpoint(d / "checkpoints" / "last.pt")["step"] == 6


def test_resume_with_another_architecture_is_refused_listing_keys(tmp_path):
    cli(*TINY, "trainer.steps=2", cwd=tmp_path, check=True)
    d = run_dir(tmp_path)
    before = (d / "checkpoints" / "last.pt").read_bytes()
    proc = cli(f"resume={d}", "critic.dim=64", "critic.depth=2", cwd=tmp_path)
    assert proc.returncode == 2
    assert "cannot resume with a different architecture" in proc.stderr
    assert "critic.depth: 3 → 2" in proc.stderr and "critic.dim: 32 → 64" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (d / "checkpoints" / "last.pt").read_bytes() == before


def test_state_dict_mismatch_lists_the_differing_parameters():
    small = Trainer(compose_cfg(*TINY), "/tmp/unused-run", torch.device("cpu"))
    big = Trainer(compose_cfg(*TINY, "critic.dim=48"), "/tmp/unused-run", torch.device("cpu"))
    with pytest.raises(CheckpointError) as e:
        big.load_state_dict(small.state_dict(), "x.pt")
    msg = str(e.value)
    assert msg.startswith("checkpoint x.pt: its networks differ from the configured ones")
    assert "critic.net.0.weight: checkpoint (32, 2) vs configured (48, 2)" in msg


def test_sigterm_saves_a_checkpoint_and_exits_143(tmp_path):
    env = {**os.environ, "PYTHONPATH": pythonpath(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wgangp.train",
            *TINY,
            "trainer.steps=100000",
            "trainer.log_every=1",
            "trainer.ckpt_every=0",
            "trainer.sample_every=0",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    log = None
    while time.time() < deadline:
        logs = list(tmp_path.glob("outputs/*/*/train.log"))
        if logs and "step 3 |" in logs[0].read_text():
            log = logs[0]
            break
        time.sleep(0.2)
    assert log is not None, "training did not start"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    ck = load_checkpoint(log.parent / "checkpoints" / "last.pt")
    assert ck["step"] >= 3
    assert "SIGTERM" in out + err and "Traceback" not in out + err
