"""scripts/bench.py runs (quick mode, MLP only) and writes the documented JSON keys."""

from __future__ import annotations

import importlib.util
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO

KEYS = {
    "config",
    "device",
    "precision",
    "ms_per_iter",
    "ref_ms_per_iter",
    "speedup",
    "gp_step_ratio",
    "peak_mem_mb",
    "flops_fraction",
    "kernel_ms",
    "ref_kernel_ms",
    "ceiling_speedup",
    "ops_per_iter",
    "ref_ops_per_iter",
    "minor_faults_per_iter",
    "ref_minor_faults_per_iter",
    "keep_freed_memory",
    "memory_format",
    "machine",
}


def run_script(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python scripts/NAME ARGS`` in ``cwd``; fails the test on a non-zero exit."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / name), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def test_bench_quick_mlp_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_script(
        "bench.py",
        "--quick",
        "--configs",
        "mlp",
        "--devices",
        "cpu",
        "--threads",
        "1",
        "--set",
        "critic.dim=64",
        "--set",
        "generator.dim=64",
        "--json",
        str(out),
        cwd=tmp_path,
    )
    rows = json.loads(out.read_text())
    assert len(rows) == 1 and set(rows[0]) >= KEYS
    row = rows[0]
    assert row["config"] == "mlp" and row["device"] == "cpu" and row["precision"] == "fp32"
    assert row["ms_per_iter"] > 0 and row["speedup"] > 0 and row["peak_mem_mb"] > 0
    assert 0 < row["flops_fraction"] < 2
    assert row["kernel_ms"] > 0 and row["ref_kernel_ms"] > 0
    assert row["ceiling_speedup"] == pytest.approx(row["ref_ms_per_iter"] / row["kernel_ms"])
    pairs = zip(row["ref_ms_samples"], row["ms_samples"], strict=True)
    assert row["paired_speedup"] == pytest.approx(statistics.median(r / o for r, o in pairs))
    assert row["loss_rel_diff"] < 1e-4  # same losses as the textbook loop
    # fused Adam, one critic forward for real and fake, no .item() per update
    assert 0 < row["ops_per_iter"] < row["ref_ops_per_iter"]
    assert row["minor_faults_per_iter"] >= 0 and row["ref_minor_faults_per_iter"] >= 0
    assert row["keep_freed_memory"] is True
    assert row["memory_format"] == "contiguous"  # points: no layout to choose
    assert row["machine"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert row["machine"]["torch"] == torch.__version__
    assert "speedup" in proc.stdout


def test_bench_ab_times_variants_and_the_textbook_interleaved(tmp_path):
    out = tmp_path / "ab.json"
    proc = run_script(
        "bench_ab.py",
        "--config",
        "mlp",
        "--variant",
        "speed.fuse_real_fake=false critic.dim=64 generator.dim=64",
        "--variant",
        "speed.fuse_real_fake=true critic.dim=64 generator.dim=64",
        "--repeats",
        "3",
        "--iters",
        "1",
        "--warmup",
        "1",
        "--threads",
        "1",
        "--json",
        str(out),
        cwd=tmp_path,
    )
    rows = json.loads(out.read_text())
    assert [r["variant"] for r in rows] == [
        "speed.fuse_real_fake=false critic.dim=64 generator.dim=64",
        "speed.fuse_real_fake=true critic.dim=64 generator.dim=64",
        "textbook",
    ]
    for r in rows:
        assert len(r["ms_samples"]) == 3 and r["min_ms"] == min(r["ms_samples"]) > 0
        assert r["ms_per_iter"] == sorted(r["ms_samples"])[1]
        assert r["machine"]["torch"] == torch.__version__
    textbook = rows[-1]
    assert textbook["speedup"] == 1.0 and textbook["paired_speedup"] == 1.0
    fused = rows[1]
    assert fused["speedup"] == pytest.approx(textbook["ms_per_iter"] / fused["ms_per_iter"])
    assert "paired" in proc.stdout and "textbook" in proc.stdout


def _bench_module(monkeypatch):
    """scripts/bench.py imported (its dataclasses need it in sys.modules while loading)."""
    spec = importlib.util.spec_from_file_location("wgangp_bench", REPO / "scripts" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_bench_keeps_measuring_after_a_failed_row_and_writes_json_as_it_goes(
    tmp_path, monkeypatch, capsys
):
    """In a CUDA check's fixed time slot one failing row (say, a graph capture) must not
    cost the others: it is reported as an error row, the rest are measured, the JSON is
    rewritten after every row, the rows come in the order asked for, and the exit code is 1."""
    bench = _bench_module(monkeypatch)
    real_run_one = bench.run_one
    on_disk: list[list[str]] = []  # the JSON's rows as each row starts

    def run_one(bc, device, precision, args, peaks, cuda_graph=False):
        on_disk.append([r["config"] for r in json.loads(out.read_text())] if out.exists() else [])
        if bc.name == "dcgan32":
            raise RuntimeError("operation not permitted when stream is capturing")
        return real_run_one(bc, device, precision, args, peaks, cuda_graph=cuda_graph)

    monkeypatch.setattr(bench, "run_one", run_one)
    out = tmp_path / "bench.json"
    argv = ["--quick", "--configs", "dcgan32,mlp", "--devices", "cpu", "--threads", "1"]
    argv += ["--set", "critic.dim=16", "--set", "generator.dim=16", "--json", str(out)]
    assert bench.main(argv) == 1
    rows = json.loads(out.read_text())
    assert [r["config"] for r in rows] == ["dcgan32", "mlp"]
    assert on_disk == [[], ["dcgan32"]]  # the error row was written before mlp ran
    assert rows[0] == {
        "config": "dcgan32",
        "device": "cpu",
        "precision": "fp32",
        "cuda_graph": False,
        "error": "RuntimeError: operation not permitted when stream is capturing",
    }
    assert set(rows[1]) >= KEYS and rows[1]["speedup"] > 0
    printed = capsys.readouterr()
    assert "failed: dcgan32 cpu fp32: RuntimeError: operation not permitted" in printed.out
    assert "speedup" in printed.out  # the table of the rows that ran


def test_bench_ab_reports_a_variant_that_cannot_run_and_times_the_rest(tmp_path):
    """A variant that fails to build (here speed.cuda_graph on the CPU) is an error row
    and exit code 1; the other variants and the textbook are still timed."""
    out = tmp_path / "ab.json"
    good = "speed.fuse_real_fake=true critic.dim=32 generator.dim=32"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "bench_ab.py"),
            "--config",
            "mlp",
            "--variant",
            "speed.cuda_graph=true",
            "--variant",
            good,
            "--repeats",
            "2",
            "--iters",
            "1",
            "--warmup",
            "0",
            "--threads",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr
    rows = {r["variant"]: r for r in json.loads(out.read_text())}
    assert set(rows) == {good, "textbook", "speed.cuda_graph=true"}
    assert rows[good]["ms_per_iter"] > 0 and rows["textbook"]["ms_per_iter"] > 0
    assert rows["speed.cuda_graph=true"]["error"] == (
        "ConfigError: invalid value for speed.cuda_graph: True (allowed: false on cpu); "
        "CUDA graphs need a CUDA device (trainer.device=cuda)"
    )
    assert "failed: speed.cuda_graph=true: ConfigError" in proc.stdout


def test_every_bench_config_runs_the_paper_constants(monkeypatch):
    """The configurations start from the toy data set (whose default is recipe=toy):
    the benchmark pins the paper's constants, so its FLOPs and ratios stay comparable
    with every earlier run (n_critic 5, λ 10, Adam 1e-4, no EMA, no decay)."""
    bench = _bench_module(monkeypatch)
    for bc in bench.CONFIGS:
        cfg = bench.compose_cfg(bc.overrides)
        t, o = cfg.trainer, cfg.optim
        assert (t.n_critic, cfg.gp["lambda"], o.critic.lr, o.lr_decay) == (5, 10.0, 1e-4, "none")
        assert t.ema.decay is None and cfg.eval.every == 0, bc.name
        assert t.batch_size == (256 if bc.name == "mlp" else 64), bc.name
