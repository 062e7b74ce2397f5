"""Learning curves read back from the TensorBoard event files of a sweep's jobs."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from rnnlab.io import atomic_write  # noqa: E402
from rnnlab.runs.folder import job_id, short_value  # noqa: E402


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
    """The overrides that tell a configuration apart (not the seed; a path shown by its file name)."""
    if row is None:
        return "all"
    parts = [f"{k}={short_value(row[k])}" for k in override_keys if k != "seed" and k in row and pd.notna(row[k])]
    return ", ".join(parts) or "all"


def line_styles(count: int) -> list[tuple[str, str]]:
    """A (colour, dash) pair per line: past the ten colours of the cycle the dash changes, so a
    twelve-run report never draws two lines alike."""
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    dashes = ["-", "--", ":", "-."]
    return [(colours[i % len(colours)], dashes[(i // len(colours)) % len(dashes)]) for i in range(count)]


def companion(tag: str) -> str | None:
    """The other split's tag of the same metric: ``val/acc`` ↔ ``train/acc``."""
    split, _, name = tag.partition("/")
    return {"val": f"train/{name}", "train": f"val/{name}"}.get(split)


def curve_file(sweep_dir: Path, tag: str) -> Path:
    """One file per metric, so a report asked for several never overwrites one with another."""
    name = re.sub(r"[^\w.-]", "-", tag.partition("/")[2] if tag.startswith(("val/", "train/")) else tag)
    return sweep_dir / f"curves-{name}.png"


def _mean_curve(curves: list[dict[int, float]]) -> tuple[list[int], np.ndarray, np.ndarray] | None:
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    if not steps:
        return None
    values = np.array([[c[s] for s in steps] for c in curves])
    return steps, values.mean(0), values.std(0)


def plot_curves(sweep_dir: Path, jobs: list[Path], frame: pd.DataFrame, override_keys: list[str], tag: str) -> Path:
    """One colour per configuration (overrides but the seed), mean over seeds ± std band; the
    validation curve solid, the training curve of the same metric thin and faint beside it."""
    by_job = {str(row["job"]): row for _, row in frame.iterrows()}
    tags = [t for t in (tag, companion(tag)) if t]
    series: dict[str, dict[str, list[dict[int, float]]]] = {}
    for job in jobs:
        label = job_label(by_job.get(job_id(job)), override_keys)
        for t in tags:
            curve = read_scalars(job / "tensorboard", t)
            if curve:
                series.setdefault(label, {}).setdefault(t, []).append(curve)
    fig, ax = plt.subplots(figsize=(8, 5))
    for (label, by_tag), (colour, dash) in zip(sorted(series.items()), line_styles(len(series)), strict=True):
        for t, curves in sorted(by_tag.items(), key=lambda item: item[0] != tag):
            found = _mean_curve(curves)
            if found is None:
                continue
            steps, mean, std = found
            main = t == tag
            style = {"marker": "o", "markersize": 3} if main else {"linewidth": 0.8, "alpha": 0.6}
            ax.plot(steps, mean, dash, color=colour, label=f"{label} · {t} (n={len(curves)})", **style)
            if len(curves) > 1:
                ax.fill_between(steps, mean - std, mean + std, color=colour, alpha=0.2 if main else 0.08)
    ax.set_xlabel("step")
    ax.set_ylabel(tag.partition("/")[2] or tag)
    ax.set_title(f"{' and '.join(tags)} — {sweep_dir.name}")
    ax.grid(alpha=0.3)
    if series:
        # below the axes: long override labels must not cover the curves
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.12), frameon=False)
    else:
        ax.text(0.5, 0.5, f"no '{tag}' scalars found", ha="center", transform=ax.transAxes)
    return save_figure(fig, curve_file(sweep_dir, tag))


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """A figure as a PNG, written atomically, then closed."""
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png"))
    plt.close(fig)
    return path
