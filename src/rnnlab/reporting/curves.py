"""Learning curves read back from the TensorBoard event files of a sweep's jobs."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from rnnlab.io import atomic_write  # noqa: E402
from rnnlab.runs.folder import job_id  # noqa: E402


def read_scalars(tensorboard_dir: Path, tag: str) -> dict[int, float]:
    """``{step: value}`` of one scalar tag over every event file of a run."""
    values: dict[int, float] = {}
    for events in sorted(tensorboard_dir.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        if tag in accumulator.Tags().get("scalars", []):
            values.update({e.step: e.value for e in accumulator.Scalars(tag)})
    return values


def job_label(row: pd.Series | None, override_keys: list[str]) -> str:
    """The overrides that name a configuration (not the seed; a job that does not set a key shows none)."""
    if row is None:
        return "all"
    parts = [f"{k}={row[k]}" for k in override_keys if k != "seed" and k in row and pd.notna(row[k])]
    return ", ".join(parts) or "all"


def line_styles(count: int) -> list[tuple[str, str]]:
    """A (colour, dash) pair per line: past the ten colours of the cycle the dash changes, so a
    twelve-run report never draws two lines alike."""
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    dashes = ["-", "--", ":", "-."]
    return [(colours[i % len(colours)], dashes[(i // len(colours)) % len(dashes)]) for i in range(count)]


def plot_curves(sweep_dir: Path, jobs: list[Path], frame: pd.DataFrame, override_keys: list[str], tag: str) -> Path:
    """One line per configuration (overrides but the seed): mean over seeds, ± std band."""
    by_job = {str(row["job"]): row for _, row in frame.iterrows()}
    series: dict[str, list[dict[int, float]]] = {}
    for job in jobs:
        row = by_job.get(job_id(job))
        label = job_label(row, override_keys)
        curve = read_scalars(job / "tensorboard", tag)
        if curve:
            series.setdefault(label, []).append(curve)
    fig, ax = plt.subplots(figsize=(8, 5))
    for (label, curves), (colour, dash) in zip(sorted(series.items()), line_styles(len(series)), strict=True):
        steps = sorted(set.intersection(*(set(c) for c in curves)))
        if not steps:
            continue
        values = np.array([[c[s] for s in steps] for c in curves])
        mean, std = values.mean(0), values.std(0)
        ax.plot(steps, mean, dash, color=colour, marker="o", markersize=3, label=f"{label} (n={len(curves)})")
        if len(curves) > 1:
            ax.fill_between(steps, mean - std, mean + std, color=colour, alpha=0.2)
    ax.set_xlabel("step")
    ax.set_ylabel(tag)
    ax.set_title(f"{tag} — {sweep_dir.name}")
    ax.grid(alpha=0.3)
    if series:
        # below the axes: long override labels must not cover the curves
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.12), frameon=False)
    else:
        ax.text(0.5, 0.5, f"no '{tag}' scalars found", ha="center", transform=ax.transAxes)
    path = sweep_dir / "curves.png"
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png"))
    plt.close(fig)
    return path
