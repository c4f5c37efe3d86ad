"""Security: checkpoints never run code, configs are never evaluated, files follow the
user's umask."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import torch

from tests.conftest import REPO, TINY, cli, pythonpath

PACKAGE = REPO / "wgangp"


class Payload:
    """Pickles to a call that would create the file ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_with_code_is_refused_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save(
        {"format": "wgangp-checkpoint", "version": 1, "x": Payload(marker)},
        run / "checkpoints" / "last.pt",
    )
    proc = cli(*TINY, f"resume={run}", cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"checkpoint {run}/checkpoints/last.pt: refused by the safe loader" in proc.stderr
    assert not marker.exists(), "the pickle's code ran"


def test_no_unsafe_loading_or_evaluation_in_the_package():
    bad = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        for n, line in enumerate(text.splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(
                r"(?<![\w.])(eval|exec)\(|pickle\.loads?\(|yaml\.load\(|"
                r"allow_pickle=True|\bmarshal\.|__import__\(",
                code,
            ):
                bad.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
        for m in re.finditer(r"torch\.load\(([^)]*)\)", text):
            if "weights_only=True" not in m.group(1):
                bad.append(f"{path.relative_to(REPO)}: torch.load without weights_only=True")
    assert not bad, "\n".join(bad)


def test_run_files_follow_the_umask_and_stay_in_the_run_directory(tmp_path):
    code = (
        "import os, runpy, sys; os.umask(0o027); sys.argv = ['wgangp-train', *sys.argv[1:]]; "
        "runpy.run_module('wgangp.cli.train', run_name='__main__')"
    )
    import subprocess
    import sys

    before = set(tmp_path.iterdir())
    env = {**os.environ, "PYTHONPATH": pythonpath(REPO)}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            *TINY,
            "trainer.steps=2",
            "trainer.ckpt_every=1",
            f"hydra.run.dir={tmp_path}/run",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert set(tmp_path.iterdir()) - before == {tmp_path / "run"}  # nothing written beside it
    files = [p for p in (tmp_path / "run").rglob("*")]
    assert any(p.name == "last.pt" for p in files)
    for p in files:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert not mode & 0o007, f"{p} is world-accessible: {oct(mode)}"
