"""Aggregate a multirun folder: one row per job, best row marked, mean ± std over seeds.

Reads what every job leaves behind (``.hydra/overrides.yaml``, ``metrics.json``,
``config_resolved.yaml``), so failed and still-running jobs show up too.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from rnnlab.errors import RnnlabError
from rnnlab.io import atomic_write_text
from rnnlab.reporting.tables import markdown_table
from rnnlab.runs.folder import (
    RESOLVED_CONFIG,
    defining_overrides,
    job_dirs,
    job_id,
    override_key,
    read_metrics,
    read_overrides,
)
from rnnlab.runs.record import METRIC_PREFIXES
from rnnlab.training.tune import STUDY_FILE

SEED = "seed"


def parse_override(override: str) -> tuple[str, str]:
    return override_key(override), override.partition("=")[2]


def monitored(job: Path) -> tuple[str, str]:
    config = job / RESOLVED_CONFIG
    cfg = yaml.safe_load(config.read_text()) if config.is_file() else None
    if not isinstance(cfg, dict):
        return "val/loss", "min"
    return str(cfg.get("monitor", "val/loss")), str(cfg.get("monitor_mode", "min"))


def collect(sweep_dir: Path) -> tuple[pd.DataFrame, list[str], str, str]:
    """Rows, override columns, monitored metric and its mode."""
    jobs = job_dirs(sweep_dir)
    if not jobs:
        raise RnnlabError(f"{sweep_dir}: no job folders (with .hydra/) found; pass the folder of a multirun")
    rows, override_keys = [], []
    for job in jobs:
        row: dict[str, Any] = {"job": job_id(job)}
        for key, value in map(parse_override, defining_overrides(read_overrides(job) or [])):
            row[key] = value
            if key not in override_keys:
                override_keys.append(key)
        metrics = read_metrics(job) or {"status": "missing"}
        row["status"] = metrics.get("status", "unknown")
        row["best_score"] = metrics.get("best_score")
        row["wall_time_s"] = metrics.get("wall_time_s")
        row.update({k: v for k, v in metrics.items() if k.startswith(METRIC_PREFIXES)})
        if "error" in metrics:
            row["error"] = metrics["error"]
        rows.append(row)
    metric, mode = monitored(jobs[0])
    return pd.DataFrame(rows), override_keys, metric, mode


def mark_best(frame: pd.DataFrame, column: str, mode: str) -> pd.DataFrame:
    """★ on the completed job whose ``column`` is best in the direction of ``mode``."""
    frame = frame.copy()
    frame["best"] = ""
    done = frame[frame["status"] == "completed"]
    if column in frame and done[column].notna().any():
        values = done[column].astype(float)
        best = values.idxmax() if mode == "max" else values.idxmin()
        frame.loc[best, "best"] = "★"
    return frame


def seed_summary(frame: pd.DataFrame, override_keys: list[str]) -> pd.DataFrame | None:
    """Mean ± std of every metric over seeds, per configuration (the other overrides)."""
    if SEED not in override_keys:
        return None
    groups = [k for k in override_keys if k != SEED]
    done = frame[frame["status"] == "completed"]
    metrics = [c for c in done.columns if c.startswith(METRIC_PREFIXES) and not c.endswith("grad_norm")]
    if done.empty or not metrics:
        return None
    grouped = done.groupby(groups, dropna=False) if groups else done.assign(_all="all").groupby("_all")
    stats = grouped[metrics].agg(["mean", "std"])
    out = pd.DataFrame(index=stats.index)
    for metric in metrics:
        out[metric] = [_pm(m, s) for m, s in zip(stats[(metric, "mean")], stats[(metric, "std")], strict=True)]
    out["seeds"] = grouped.size()
    return out.reset_index()


def _pm(mean: float, std: float) -> str:
    return f"{mean:.4f} ± {0.0 if math.isnan(std) else std:.4f}"


def markdown(frame: pd.DataFrame) -> str:
    return markdown_table(list(frame.columns), frame.itertuples(index=False))


def write_report(sweep_dir: Path, metrics: list[str] | None = None) -> dict[str, Path]:
    """``summary.csv``, ``summary.md`` and one ``curves-<metric>.png`` per metric in ``sweep_dir``
    (default: the monitored one); for an Optuna search also its optimisation history and
    parameter importances.

    The best job (★) is the one whose best checkpoint scored best on the monitored metric: the
    value a search optimises, not the last epoch's.
    """
    from rnnlab.reporting.curves import plot_curves

    sweep_dir = Path(sweep_dir)
    frame, override_keys, monitored_metric, mode = collect(sweep_dir)
    metrics = list(metrics or [monitored_metric])
    frame = mark_best(frame, "best_score", mode)
    # overrides shared by every job are stated once, above the table
    fixed = {k: frame[k].iloc[0] for k in override_keys if k in frame and frame[k].nunique(dropna=False) == 1}
    varied = [k for k in override_keys if k not in fixed]
    metric_cols = sorted(c for c in frame.columns if c.startswith(METRIC_PREFIXES))
    ordered = ["job", *override_keys, "status", "best", "best_score", *metric_cols, "wall_time_s"]
    ordered += [c for c in frame.columns if c not in ordered]
    frame = frame[ordered]
    atomic_write_text(sweep_dir / "summary.csv", frame.to_csv(index=False))
    same = ", ".join(f"`{k}={v}`" for k, v in fixed.items()) or "nothing"
    parts = [
        f"# Sweep {sweep_dir}",
        "",
        f"{len(frame)} jobs; ★ marks the best `best_score` (the best checkpoint's `{monitored_metric}`, "
        f"{mode}). Same in every job: {same}.",
        "",
        markdown(frame.drop(columns=[*fixed, "error"], errors="ignore")),
    ]
    seeds = seed_summary(frame, varied)
    if seeds is not None:
        parts += ["", "## Mean ± std over seeds", "", markdown(seeds)]
    failed = frame[~frame["status"].isin(("completed", "pruned"))]
    if not failed.empty:
        parts += ["", "## Not completed", ""] + [
            f"- job {r.job}: {r.status} {getattr(r, 'error', '')}" for r in failed.itertuples()
        ]
    pruned = frame[frame["status"] == "pruned"]
    if not pruned.empty:
        parts += ["", f"Pruned by the study (stopped early): jobs {', '.join(map(str, pruned['job']))}."]
    atomic_write_text(sweep_dir / "summary.md", "\n".join(parts) + "\n")
    written = {"csv": sweep_dir / "summary.csv", "md": sweep_dir / "summary.md"}
    for metric in metrics:
        written[metric] = plot_curves(sweep_dir, job_dirs(sweep_dir), frame, varied, metric)
    written.update(study_pictures(sweep_dir))
    return written


def study_pictures(sweep_dir: Path) -> dict[str, Path]:
    """Optuna's optimisation history and parameter importances, when the folder is a search."""
    from rnnlab.reporting.curves import save_figure

    record = sweep_dir / STUDY_FILE
    if not record.is_file():
        return {}
    import json

    from rnnlab.training.tune import open_storage, optuna_module

    optuna = optuna_module()
    found = json.loads(record.read_text(encoding="utf-8"))
    study = optuna.load_study(study_name=found["study_name"], storage=open_storage(found["storage"]))
    pictures = {"optimization_history": optuna.visualization.matplotlib.plot_optimization_history}
    if sum(t.state.name == "COMPLETE" for t in study.trials) >= 2:  # importances need variation to explain
        pictures["param_importances"] = optuna.visualization.matplotlib.plot_param_importances
    return {name: save_figure(draw(study).figure, sweep_dir / f"{name}.png") for name, draw in pictures.items()}
