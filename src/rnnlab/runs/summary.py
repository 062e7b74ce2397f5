"""The last lines of a run: where its folder is, what it scored, how to look at it or resume it.

After minutes or hours of logs, a person needs four facts at the bottom of the terminal: the
run folder, the best checkpoint, the headline figures and the TensorBoard command; for a run that
failed, the error and the command that continues it.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from rnnlab.runs.folder import read_metrics

HEADLINE = ("acc", "auroc", "loss", "ppl", "bpt")  # in this order, those a run has


def headline(metrics: dict[str, Any], split: str) -> str:
    shown = [
        f"{split}/{k} {metrics[f'{split}/{k}']:.4f}" for k in HEADLINE if isinstance(metrics.get(f"{split}/{k}"), float)
    ]
    return " · ".join(shown)


def protocols(metrics: dict[str, Any], split: str) -> str:
    """The held-out loss under each evaluation protocol the run measured, each named (nats/token)."""
    shown = []
    if isinstance(full := metrics.get(f"{split}/loss_full_context"), float):
        shown.append(f"full context (state carried) {full:.4f}")
    prefix = f"{split}/loss_window"
    for key in sorted(k for k in metrics if k.startswith(prefix) and k[len(prefix) :].isdigit()):
        if isinstance(metrics[key], float):
            shown.append(f"{key[len(prefix) :]}-token windows from a zero state {metrics[key]:.4f}")
    return " · ".join(shown)


def resume_command(argv: list[str], folder_override: str) -> str:
    """The command that made the run, told to continue it in its own folder."""
    kept = [a for a in argv[1:] if not a.startswith(("hydra.run.dir=", "hydra.sweep.dir=", "resume="))]
    return " ".join(shlex.quote(a) for a in ["python", argv[0], *kept, "resume=true", folder_override])


def summary_lines(output_dir: Path, logdir: Path, monitor: str, argv: list[str], folder_override: str) -> list[str]:
    metrics = read_metrics(output_dir) or {}
    if not metrics:  # refused before anything was built (the error is the line above): nothing to resume
        return [f"run not started:  {output_dir}"]
    status = metrics.get("status", "unknown")
    lines = [f"run {status}:  {output_dir}"]
    if status in ("completed", "pruned"):
        best = metrics.get("best_checkpoint")
        score = metrics.get("best_score")
        if best:
            lines.append(
                f"best checkpoint:  {best}" + (f"  ({monitor} {score:.4f})" if isinstance(score, float) else "")
            )
        for split in ("test", "val"):
            if text := headline(metrics, split):
                lines.append(f"{split}:  {text}")
                if by_protocol := protocols(metrics, split):
                    lines.append(f"{split} loss by protocol:  {by_protocol}")
                break
        lines.append(f"tensorboard:  tensorboard --logdir {logdir}")
    else:
        lines.append(f"error:  {metrics.get('error', 'see the log above')}")
        lines.append(f"resume:  {resume_command(argv, folder_override)}")
    return lines
