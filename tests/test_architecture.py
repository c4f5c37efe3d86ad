"""The layers of wgangp/ and their one-way dependencies (pyproject.toml's import-linter
contracts, run by ``make lint``): they hold on the tree, a planted violation is caught,
and no module imports itself back through others (type-only imports included)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

from tests.conftest import REPO


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    exe = Path(sys.executable).with_name("lint-imports")
    return subprocess.run(
        [str(exe), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_contracts_hold_on_the_tree():
    proc = lint_imports(REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Contracts: 2 kept, 0 broken." in proc.stdout


@pytest.mark.parametrize(
    ("module", "planted", "message"),
    [
        (
            "core/losses.py",
            "import wgangp.train.trainer",
            "wgangp.core is not allowed to import wgangp.train",
        ),
        (
            "models/mlp.py",
            "import wgangp.fast.conv_grad",
            "wgangp.models is not allowed to import wgangp.fast",
        ),
        ("core/optim.py", "import numpy", "wgangp.core.optim -> numpy"),
    ],
)
def test_a_planted_violation_breaks_a_contract(tmp_path, module, planted, message):
    shutil.copytree(REPO / "wgangp", tmp_path / "wgangp", ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    path = tmp_path / "wgangp" / module
    path.write_text(path.read_text() + f"\n{planted}  # noqa: E402, F401\n")
    proc = lint_imports(tmp_path)
    assert proc.returncode == 1, proc.stdout
    assert message in proc.stdout, proc.stdout


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return cycles


def test_no_import_cycles_type_only_imports_included():
    graph = grimp.build_graph("wgangp")  # grimp counts imports under TYPE_CHECKING too
    assert import_cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle(tmp_path, monkeypatch):
    pkg = tmp_path / "cyc"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text(
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    import cyc.b\n"
    )
    (pkg / "b.py").write_text("import cyc.a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_cycles(grimp.build_graph("cyc")) == [["cyc.a", "cyc.b"]]
