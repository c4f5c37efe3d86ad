"""The trackers' run ids, kept in ``run_dir/trackers.json`` so that a resumed run
continues the same MLflow run and the same W&B run."""

from __future__ import annotations

import json
from pathlib import Path

FILE = "trackers.json"


def load_id(run_dir: Path, name: str) -> str | None:
    try:
        return json.loads((run_dir / FILE).read_text()).get(name)
    except (OSError, ValueError, AttributeError):  # none yet, or unreadable: a new run
        return None


def save_id(run_dir: Path, name: str, run_id: str) -> None:
    path = run_dir / FILE
    try:
        ids = json.loads(path.read_text())
    except (OSError, ValueError):
        ids = {}
    ids[name] = run_id
    path.write_text(json.dumps(ids, indent=1) + "\n")


__all__ = ["FILE", "load_id", "save_id"]
