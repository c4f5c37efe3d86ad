"""``wgangp-sweep-report DIR``: a finished sweep as one table and one plot.

Every job directory under ``DIR`` (a directory holding ``checkpoints/last.pt``, as each
``wgangp-train -m`` job leaves, whatever the launcher or sweeper) gives one row:

* the overrides that vary between jobs (the checkpoint's own override list),
* the final and best value of the metric (``--metric``, default the runs'
  ``optimized_metric``) and the step of the best, read from the job's TensorBoard
  events, plus the final gradient penalty,
* the steps reached, the median ``perf/steps_per_sec`` and the training time
  (``train_s``: the run's logged ``perf/train_s``, pauses between resumes left out).

Writes ``sweep_report.md``, ``sweep_report.csv`` and ``sweep_report.png`` (the metric
against the step, or with ``--x time`` against the training time, one curve per job)
into ``DIR`` (or ``--out``), and prints the
Markdown table. Where the jobs drew pictures, ``sweep_samples.png`` puts each job's last
one on a sheet; a sweep over two keys makes it a table (the first key's values down,
the second's across: ``-m experiment=fig2_... loss=dcgan,lsgan,wgan,wgan_gp`` lays out
the paper's Figure 2). Where the jobs logged ``diagnostics.layer_grads``,
``sweep_layer_grads.png`` draws each job's last layer-gradient profile (``-m loss=wgan
loss.clip=0.1,0.01,0.001 diagnostics.every=N`` gives the paper's Figure 1b). For an
Optuna sweep the best trial (``optimization_results.yaml``) is listed under the table.
``tensorboard --logdir DIR`` shows the same runs side by side.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wgangp.errors import CheckpointError, ConfigError, UserError
from wgangp.io.checkpoint import load_checkpoint
from wgangp.metrics.diagnostics import LAYER_GRAD_PREFIX

_NUM = re.compile(r"^(\d+)_?")


@dataclass
class Job:
    """One sweep job: where it is, its overrides, and its logged scalars."""

    path: Path
    name: str
    overrides: list[str]
    step: int
    config: dict[str, Any]
    scalars: dict[str, list[tuple[int, float]]] = field(default_factory=dict)


def find_jobs(root: Path) -> list[Path]:
    """Job directories under ``root``, in job-number order."""
    found = {p.parent.parent for p in root.rglob("checkpoints/last.pt")}

    def key(p: Path) -> tuple[int, str]:
        m = _NUM.match(p.name)
        return (int(m.group(1)) if m else 1 << 30, str(p))

    return sorted(found, key=key)


def read_scalars(tb_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of a TensorBoard directory: ``{tag: [(step, value), ...]}``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not tb_dir.is_dir():
        return {}
    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def load_job(path: Path, root: Path) -> Job:
    ck = load_checkpoint(path / "checkpoints" / "last.pt")
    return Job(
        path=path,
        name=str(path.relative_to(root)) if path != root else path.name,
        overrides=[str(o) for o in ck.get("overrides", [])],
        step=int(ck.get("step", 0)),
        config=dict(ck.get("config", {})),
        scalars=read_scalars(path / "tb"),
    )


def varying_overrides(jobs: list[Job]) -> list[list[str]]:
    """Each job's overrides whose key's value is not the same in every job."""

    def as_dict(job: Job) -> dict[str, str]:
        return dict(o.split("=", 1) if "=" in o else (o, "") for o in job.overrides)

    dicts = [as_dict(j) for j in jobs]
    keys = sorted({k for d in dicts for k in d})
    vary = [k for k in keys if len({d.get(k) for d in dicts}) > 1] if len(jobs) > 1 else keys
    return [[f"{k}={d[k]}" for k in vary if k in d] for d in dicts]


def training_seconds(job: Job) -> list[tuple[int, float]]:
    """``(step, seconds of training up to it)``: the run's ``perf/train_s`` (the wall
    time of training over all its resumes, the pauses between them left out); empty
    for runs of wgangp versions that did not log it."""
    return [(s, t) for s, t in job.scalars.get("perf/train_s", []) if math.isfinite(t)]


def seconds_at(clock: list[tuple[int, float]], step: int) -> float | None:
    """Training seconds at ``step``, linear between the clock's points (from (0, 0));
    None past its last point."""
    if not clock or step > clock[-1][0]:
        return None
    steps, times = zip(*clock, strict=True)
    return float(np.interp(step, (0, *steps), (0.0, *times)))


def summarise(jobs: list[Job], metric: str, mode: str) -> list[dict[str, Any]]:
    """One row per job (see the module docstring)."""
    rows = []
    for job, vary in zip(jobs, varying_overrides(jobs), strict=True):
        series = job.scalars.get(metric, [])
        finite = [(s, v) for s, v in series if math.isfinite(v)]
        pick = min if mode == "min" else max
        best = pick(finite, key=lambda sv: sv[1]) if finite else (None, None)
        speeds = [v for _, v in job.scalars.get("perf/steps_per_sec", [])]
        gp = job.scalars.get("gp", [])
        m = _NUM.match(job.path.name)
        rows.append(
            {
                "job": m.group(1) if m else job.name,
                "overrides": " ".join(vary),
                "steps": job.step,
                f"final_{metric}": series[-1][1] if series else None,
                f"best_{metric}": best[1],
                "best_step": best[0],
                "final_gp": gp[-1][1] if gp else None,
                "steps_per_sec": statistics.median(speeds) if speeds else None,
                "train_s": clock[-1][1] if (clock := training_seconds(job)) else None,
                "all_overrides": " ".join(job.overrides),
                "dir": job.name,
            }
        )
    return rows


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "\\|")


def markdown(rows: list[dict[str, Any]], title: str, extra: str = "") -> str:
    cols = [c for c in rows[0] if c not in ("all_overrides", "dir")] if rows else []
    lines = [f"# Sweep report: {title}", ""]
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "|".join("---" for _ in cols) + "|")
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r[c]) for c in cols) + " |")
    if extra:
        lines += ["", extra]
    return "\n".join(lines) + "\n"


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["job"])
        w.writeheader()
        w.writerows(rows)


#: --x time: the unit of the axis for the longest job's training time
_TIME_UNITS = ((7200.0, 3600.0, "hours"), (120.0, 60.0, "minutes"), (0.0, 1.0, "seconds"))


def plot(
    jobs: list[Job], rows: list[dict[str, Any]], metric: str, path: Path, x: str = "step"
) -> None:
    """The metric against the step (``x="time"``: the training time of
    :func:`training_seconds`), one curve per job, labelled by its varying overrides."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = []
    for job, row in zip(jobs, rows, strict=True):
        series = job.scalars.get(metric, [])
        if x == "time":
            clock = training_seconds(job)
            series = [(t, v) for s, v in series if (t := seconds_at(clock, s)) is not None]
        if series:
            curves.append((series, row["overrides"] or job.name))
    xlabel, scale = "step", 1.0
    if x == "time":
        longest = max((c[-1][0] for c, _ in curves), default=0.0)
        _, scale, unit = next(u for u in _TIME_UNITS if longest >= u[0])
        xlabel = f"training time ({unit})"
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for series, label in curves:
        xs, values = zip(*series, strict=True)
        xs = [v / scale for v in xs]
        ax.plot(xs, values, marker="o" if len(xs) < 20 else None, ms=3, label=label[:60])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def latest_picture(job: Job) -> Path | None:
    """The job's last sample picture (``samples/step_*.png``); None if it drew none
    (text runs write ``.txt`` samples)."""
    found = sorted(job.path.glob("samples/step_*.png"))  # zero-padded steps sort in order
    return found[-1] if found else None


def sheet_layout(vary: list[list[str]]) -> tuple[list[tuple[int, int]], list[str], list[str]]:
    """Where each job's picture goes: ``(cells, row titles, column titles)``.

    With exactly two varying keys, set in every job and no pair twice, a table: the
    first key's values down, the second's across, in the order the jobs bring them.
    Otherwise the jobs in order, ⌈√n⌉ to a row, with no titles (each cell has its own).
    """
    pairs = [dict(o.split("=", 1) for o in v) for v in vary]
    keys = list(dict.fromkeys(k for p in pairs for k in p))
    if len(keys) == 2 and all(len(p) == 2 for p in pairs):
        cells = [(p[keys[0]], p[keys[1]]) for p in pairs]
        if len(set(cells)) == len(cells):
            down = list(dict.fromkeys(r for r, _ in cells))
            across = list(dict.fromkeys(c for _, c in cells))
            where = [(down.index(r), across.index(c)) for r, c in cells]
            return where, [f"{keys[0]}={r}" for r in down], [f"{keys[1]}={c}" for c in across]
    ncols = max(1, math.ceil(math.sqrt(len(vary))))
    return [divmod(i, ncols) for i in range(len(vary))], [], []


def sample_sheet(jobs: list[Job], path: Path) -> bool:
    """Each job's last sample picture on one sheet (:func:`sheet_layout`); False, and
    nothing written, if no job drew one."""
    pictures = [latest_picture(j) for j in jobs]
    if not any(pictures):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    vary = varying_overrides(jobs)
    where, down, across = sheet_layout(vary)
    nrows = 1 + max(r for r, _ in where)
    ncols = 1 + max(c for _, c in where)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3 * ncols, 3 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for job, pic, labels, (r, c) in zip(jobs, pictures, vary, where, strict=True):
        ax = axes[r][c]
        if pic is None:
            ax.text(0.5, 0.5, "no samples", ha="center", va="center", fontsize=8)
        else:
            with Image.open(pic) as im:
                ax.imshow(im.convert("RGB"))
        if not down:  # no table: each cell says which job it is
            ax.set_title(" ".join(labels)[:50] or job.name[:50], fontsize=7)
    for r, title in enumerate(down):
        axes[r][0].text(-0.05, 0.5, title, transform=axes[r][0].transAxes, rotation=90,
                        ha="right", va="center", fontsize=8)  # fmt: skip
    for c, title in enumerate(across):
        axes[0][c].set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def layer_grad_profile(job: Job) -> list[float]:
    """The job's last ``layer_grad/*`` values (``diagnostics.layer_grads``), layer 1
    first; empty if it logged none."""
    tags = sorted(t for t in job.scalars if t.startswith(LAYER_GRAD_PREFIX))
    return [job.scalars[t][-1][1] for t in tags]


def layer_grad_plot(jobs: list[Job], path: Path) -> bool:
    """Each job's last layer-gradient profile in one plot (the paper's Figure 1b from a
    sweep over ``loss.clip``); False, and nothing written, if no job logged one."""
    profiles = {}
    for job, vary in zip(jobs, varying_overrides(jobs), strict=True):
        norms = layer_grad_profile(job)
        if norms:
            profiles[" ".join(vary) or job.name] = norms
    if not profiles:
        return False
    import matplotlib.pyplot as plt

    from wgangp.io.plots import layer_grad_figure

    fig = layer_grad_figure(profiles, "the critic loss's gradient at each layer, last logged")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def optuna_summary(root: Path) -> str:
    """The best trial of an Optuna sweep (``optimization_results.yaml``), as Markdown."""
    found = sorted(root.rglob("optimization_results.yaml"))
    if not found:
        return ""
    from omegaconf import OmegaConf

    res = OmegaConf.to_container(OmegaConf.load(found[0]))
    assert isinstance(res, dict)
    best = res.get("best_params", {})
    params = ", ".join(f"`{k}={v}`" for k, v in best.items())
    return f"Optuna best value: {res.get('best_value')} with {params}"


def report(
    root: Path,
    metric: str | None = None,
    mode: str = "min",
    out: Path | None = None,
    x: str = "step",
) -> tuple[list[dict[str, Any]], dict[str, Path]]:
    """Build the report of the sweep under ``root``; returns its rows and the files written."""
    root = Path(root)
    if out is not None:  # before reading every job, not after
        from wgangp.cli.sample import check_output

        check_output("--out", out, directory=True)
    jobs = []
    for p in find_jobs(root):
        try:
            jobs.append(load_job(p, root))
        except CheckpointError as e:
            print(f"wgangp-sweep-report: skipping {p}: {e}", file=sys.stderr)
    if not jobs:
        raise FileNotFoundError(f"{root}: no job directories (with checkpoints/last.pt) found")
    logged = sorted({tag for job in jobs for tag in job.scalars})
    given = metric is not None
    metric = metric or str(jobs[0].config.get("optimized_metric") or "wasserstein")
    if metric not in logged:  # a table of dashes would say nothing
        raise ConfigError(
            "--metric",
            metric if given else f"{metric} (the runs' optimized_metric)",
            "a TensorBoard tag the jobs logged: " + (", ".join(logged) or "none logged"),
            "pick one of them with --metric TAG",
        )
    if x == "time" and not any(training_seconds(job) for job in jobs):
        raise ConfigError(
            "--x",
            "time",
            "step for these jobs: none logged its training time (perf/train_s)",
            "runs of wgangp before perf/train_s have no clock to plot against; use --x step",
        )
    rows = summarise(jobs, metric, mode)
    out = Path(out) if out is not None else root
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "md": out / "sweep_report.md",
        "csv": out / "sweep_report.csv",
        "png": out / "sweep_report.png",
    }
    files["md"].write_text(markdown(rows, str(root), optuna_summary(root)))
    write_csv(rows, files["csv"])
    plot(jobs, rows, metric, files["png"], x)
    if sample_sheet(jobs, out / "sweep_samples.png"):
        files["samples"] = out / "sweep_samples.png"
    if layer_grad_plot(jobs, out / "sweep_layer_grads.png"):
        files["layer_grads"] = out / "sweep_layer_grads.png"
    return rows, files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="wgangp-sweep-report",
        description="Gather a finished wgangp-train -m sweep into one table and a plot.",
    )
    parser.add_argument("dir", type=Path, help="the sweep directory (multirun/<date>/<time>)")
    parser.add_argument(
        "--metric",
        default=None,
        help="TensorBoard tag to report (default: the runs' optimized_metric)",
    )
    parser.add_argument(
        "--mode",
        choices=("min", "max"),
        default="min",
        help="whether lower (min) or higher (max) values are best",
    )
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: DIR)")
    parser.add_argument(
        "--x",
        choices=("step", "time"),
        default="step",
        help="the plot's axis: generator steps, or training time (the paper's Figure 3, "
        "right: methods with different costs per step compared at equal time)",
    )
    args = parser.parse_args(argv)
    if not args.dir.is_dir():
        print(f"wgangp-sweep-report: error: {args.dir}: no such directory", file=sys.stderr)
        return 2
    try:
        _, files = report(args.dir, args.metric, args.mode, args.out, args.x)
    except (FileNotFoundError, UserError) as e:
        print(f"wgangp-sweep-report: error: {e}", file=sys.stderr)
        return 2
    print(files["md"].read_text(), end="")
    print("\nwrote " + ", ".join(str(f) for f in files.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
