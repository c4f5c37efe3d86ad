"""Shared helpers: run the real CLI in a subprocess, compose configs in-process."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wgangp.config.compose import compose_config

REPO = Path(__file__).resolve().parents[1]


def pythonpath(*first: Path) -> str:
    """``first`` ahead of whatever PYTHONPATH the tests run with."""
    rest = os.environ.get("PYTHONPATH", "")
    return os.pathsep.join([*(str(p) for p in first), *([rest] if rest else [])])


#: a tiny, fast toy run (seconds on 2 cores); CPU so results don't depend on the machine
TINY = [
    "trainer.device=cpu",
    "critic.dim=32",
    "generator.dim=32",
    "trainer.batch_size=64",
    "trainer.progress=false",
    "trainer.log_every=5",
]


def paper_recipe(args: tuple[str, ...] | list[str]) -> list[str]:
    """``args`` on the paper's constants (``recipe=paper``), as the tests were written:
    the toy data sets pick ``recipe=toy`` by default. Left alone when ``args`` name a
    recipe, an experiment (which brings its own) or a run to resume (whose checkpoint
    names its recipe)."""
    named = any(a.startswith(("recipe=", "~recipe", "experiment=", "resume=")) for a in args)
    return list(args) if named else [*args, "recipe=paper"]


def cli(*args: str, cwd: Path, timeout: float = 300, env: dict | None = None, check: bool = False):
    """``wgangp-train ARGS`` as a user runs it (``python -m wgangp.cli.train``), on the
    paper's constants unless ``ARGS`` pick a recipe (:func:`paper_recipe`); the bare
    default is :func:`cli_as_typed`'s."""
    return cli_as_typed(*paper_recipe(args), cwd=cwd, timeout=timeout, env=env, check=check)


def cli_as_typed(
    *args: str, cwd: Path, timeout: float = 300, env: dict | None = None, check: bool = False
):
    """``wgangp-train ARGS`` exactly as given."""
    # one thread: tiny runs gain nothing from two, and OpenMP threads spinning against
    # other processes on a busy 2-core machine can slow a run down tenfold
    full_env = {**os.environ, "PYTHONPATH": pythonpath(REPO), "OMP_NUM_THREADS": "1", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.run(
        [sys.executable, "-m", "wgangp.cli.train", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def compose_cfg(*overrides: str):
    """The composed config of ``overrides`` on the paper's constants (:func:`paper_recipe`)."""
    return compose_config(paper_recipe(overrides))


@pytest.fixture(autouse=True)
def _torch_threads():
    # one thread per test (see cli()); a test that needs both cores sets it itself
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def toy_trainer_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *base: str):
    """``make(*overrides)``: a tiny toy Trainer in ``tmp_path/run`` on ``base`` +
    ``overrides`` (the end-of-run picture skipped: speed). For ``make_trainer`` fixtures."""
    from wgangp.train.trainer import Trainer

    monkeypatch.setattr(Trainer, "write_samples", lambda self, writer: None)

    def make(*overrides: str) -> Trainer:
        return Trainer(compose_cfg(*base, *overrides), tmp_path / "run", torch.device("cpu"))

    return make


@contextlib.contextmanager
def serve_directory(directory: Path):
    """``directory`` over HTTP on 127.0.0.1 (a free port) for download tests; yields the
    base URL, shut down on exit."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(directory))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
