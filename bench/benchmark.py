"""Side-by-side throughput: ``python bench/benchmark.py [--only news,novel,imdb] [--out FILE] [--docs FILE]``.

The tutorials' own loops (``seed_reference.py`` beside this file) against rnnlab's
training path on the same model and hyper-parameters, measured in the same sitting.

Every measurement runs in its own subprocess (the reference script, rnnlab under
``lightning.Trainer``, rnnlab in a bare PyTorch loop), so each has a clean process,
its own peak memory figure, and the same thread count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from rnnlab.builders import build_datamodule, build_model, build_trainer
from rnnlab.data.batching import IGNORE_INDEX, Batch
from rnnlab.data.sources import resolve_data_dir
from rnnlab.io import atomic_write_json, atomic_write_text
from rnnlab.runs.provenance import cpu_description

# the tutorials' own loops, kept beside this tool so a clone reproduces docs/benchmarks.md
DEFAULT_REFERENCE = Path(__file__).with_name("seed_reference.py")


@dataclass(frozen=True)
class Workload:
    dataset: str  # news | novel | imdb
    label: str
    experiment: str
    unit: str
    reference_key: str
    reference_args: tuple[str, ...]
    default_steps: int
    goal: float
    overrides: tuple[str, ...] = ()

    def reference_data(self, data_dir: Path) -> Path:
        if self.dataset == "news":
            found = sorted((data_dir / "news").glob("News_Category_Dataset*.json"))
            return found[0] if found else data_dir / "news" / "News_Category_Dataset_v3.json"
        if self.dataset == "novel":
            return data_dir / "novel" / "1268-0.txt"
        return data_dir / "imdb" / "aclImdb_v1.tar.gz"


WORKLOADS = {
    "news": Workload(
        "news",
        "news GRU 64/512 batch 16",
        "news_gru",
        "target tokens/s",
        "target_tokens_per_s",
        ("news", "--cell", "gru"),
        23,
        12.0,
    ),
    "novel": Workload(
        "novel", "novel LSTM 256/512 batch 64×40", "novel_lstm", "chars/s", "chars_per_s", ("novel",), 30, 2.0
    ),
    "novel-bf16": Workload(
        "novel",
        "novel LSTM 256/512 batch 64×40, bf16-mixed",
        "novel_lstm",
        "chars/s",
        "chars_per_s",
        ("novel",),
        30,
        2.0,
        ("trainer.precision=bf16-mixed",),
    ),
    "imdb": Workload("imdb", "imdb LSTM 20/64 batch 32", "imdb_lstm", "reviews/s", "reviews_per_s", ("imdb",), 60, 3.0),
}
OVERHEAD_GOAL_PCT = 5.0


def batch_units(dataset: str, batch: Batch) -> int:
    """What the throughput counts: reviews for IMDb, predicted targets for the language models."""
    if dataset == "imdb":
        return len(batch)
    return int((batch.targets != IGNORE_INDEX).sum())


class _Throughput(pl.Callback):
    """Units per second over the optimizer steps after ``warmup``."""

    def __init__(self, dataset: str, warmup: int):
        self.dataset, self.warmup = dataset, warmup
        self.units, self.start, self.end, self.steps, self.seen = 0, None, None, 0, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        self.seen += 1  # across epochs (batch_idx restarts at 0 every epoch)
        if self.seen == self.warmup:
            self.start = now
        elif self.seen > self.warmup:
            self.units += batch_units(self.dataset, batch)
            self.steps += 1
            self.end = now


def scoped_overrides(overrides: list[str] | tuple[str, ...], key: str, workload: Workload) -> list[str]:
    """``data.x=1`` applies to every workload; ``imdb:data.x=1`` only to that workload (or dataset)."""
    kept = []
    for override in overrides:
        scope, sep, rest = override.partition(":")
        if sep and "=" not in scope:
            if scope in (key, workload.dataset):
                kept.append(rest)
        else:
            kept.append(override)
    return kept


def compose_benchmark_config(
    workload: Workload,
    data_dir: Path,
    cache_dir: Path,
    output_dir: Path,
    steps: int,
    overrides: list[str] | tuple[str, ...] = (),
) -> DictConfig:
    with initialize_config_module(config_module="rnnlab.conf", version_base="1.3"):
        return compose(
            "train",
            overrides=[
                f"experiment={workload.experiment}",
                f"paths.data_dir={data_dir}",
                f"paths.cache_dir={cache_dir}",
                f"paths.output_dir={output_dir}",
                "callbacks=none",
                "~logger",
                "trainer.accelerator=cpu",
                "trainer.max_epochs=-1",
                f"trainer.max_steps={steps}",
                "trainer.limit_val_batches=0",
                "trainer.num_sanity_val_steps=0",
                "trainer.enable_progress_bar=false",
                "trainer.enable_model_summary=false",
                "trainer.enable_checkpointing=false",
                "trainer.val_check_interval=1.0",
                *overrides,
            ],
        )


def measure_prepare(cfg: DictConfig) -> dict[str, float]:
    """First ``prepare_data`` (read, tokenise, cache) into an empty cache, then a cached reload."""
    first = build_datamodule(cfg)
    reload = build_datamodule(cfg)
    return {"prepare_first_s": first.prepare_seconds, "prepare_cached_s": reload.prepare_seconds}


def run_worker(
    name: str, mode: str, data_dir: Path, steps: int, warmup: int, overrides: list[str] | tuple[str, ...] = ()
) -> dict[str, Any]:
    workload = WORKLOADS[name]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_benchmark_config(
            workload,
            data_dir,
            Path(tmp) / "cache",
            Path(tmp) / "run",
            steps,
            [*workload.overrides, *scoped_overrides(overrides, name, workload)],
        )
        pl.seed_everything(cfg.seed, workers=True)
        result: dict[str, Any] = {"workload": name, "mode": mode, **measure_prepare(cfg)}
        datamodule = build_datamodule(cfg)
        model = build_model(cfg, datamodule)
        if mode == "trainer":
            meter = _Throughput(workload.dataset, warmup)
            trainer = build_trainer(cfg, callbacks=[meter], logger=False)
            trainer.fit(model, datamodule=datamodule)
            units, seconds, timed = meter.units, meter.end - meter.start, meter.steps
        else:  # the same settings the Trainer applies, so only Lightning's own overhead differs
            torch.use_deterministic_algorithms(bool(cfg.trainer.deterministic))
            precision = str(cfg.trainer.get("precision") or "32-true")
            units, seconds, timed = _bare_loop(workload.dataset, model, datamodule, steps, warmup, precision)
    result.update(
        {
            "units": units,
            "seconds": seconds,
            "steps_timed": timed,
            "per_s": units / seconds,
            "threads": torch.get_num_threads(),
        }
    )
    return result


def _bare_loop(
    name: str, model, datamodule, steps: int, warmup: int, precision: str = "32-true"
) -> tuple[int, float, int]:
    """The same module and loader without Lightning: what the Trainer's overhead is measured against.

    ``bf16-mixed`` runs the forward pass under CPU autocast, as Lightning's mixed precision does.
    """
    if precision not in ("32-true", "32", "bf16-mixed"):
        raise ValueError(f"the bare loop runs 32-true or bf16-mixed, not trainer.precision={precision}")
    datamodule.setup("fit")
    model.train()
    optimizer = model.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    units, start, end, timed = 0, None, None, 0
    batches = _endless(datamodule.train_dataloader())
    for step in range(steps):
        batch = next(batches)
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
            loss = model.training_step(batch, step)
        loss.backward()
        optimizer.step()
        now = time.perf_counter()
        if step == warmup - 1:
            start = now
        elif step >= warmup:
            units += batch_units(name, batch)
            timed += 1
            end = now
    return units, end - start, timed


def _endless(loader):
    """Epoch after epoch, as the Trainer runs until ``max_steps``."""
    epoch = 0
    while True:
        if hasattr(loader.batch_sampler, "set_epoch"):
            loader.batch_sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def _subprocess_json(cmd: list[str]) -> dict[str, Any]:
    """Run ``cmd``, parse the JSON of its last stdout line, add the child's own peak RSS."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)  # reaps this child alone: its own rusage
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stderr[-3000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["peak_rss_mb"] = usage.ru_maxrss / 1024
    return result


def _timing_args(steps: int, warmup: int, threads: int) -> list[str]:
    """The same step count, warm-up and threads for the reference and for rnnlab's workers."""
    return ["--steps", str(steps), "--warmup", str(warmup), "--threads", str(threads)]


def run_reference(
    reference: Path, workload: Workload, data_dir: Path, steps: int, warmup: int, threads: int
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(reference),
        *workload.reference_args,
        "--data",
        str(workload.reference_data(data_dir)),
        *_timing_args(steps, warmup, threads),
    ]
    start = time.perf_counter()
    result = _subprocess_json(cmd)
    result["per_s"] = result[workload.reference_key]
    result["wall_s"] = time.perf_counter() - start
    return result


def run_rnnlab(
    mode: str,
    key: str,
    workload: Workload,
    data_dir: Path,
    steps: int,
    warmup: int,
    threads: int,
    overrides: list[str] | tuple[str, ...] = (),
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        key,
        "--mode",
        mode,
        "--data-dir",
        str(data_dir),
        *_timing_args(steps, warmup, threads),
        *(f"--override={o}" for o in overrides),
    ]
    return _subprocess_json(cmd)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| workload | unit | reference | rnnlab (Trainer) | ratio | goal | rnnlab bare loop | Lightning overhead "
        "| prepare first / cached | peak RSS |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        w = WORKLOADS[r["workload"]]
        overhead = (r["bare_per_s"] / r["rnnlab_per_s"] - 1) * 100
        lines.append(
            f"| {w.label} | {w.unit} | {r['reference_per_s']:,.0f} | {r['rnnlab_per_s']:,.0f} | "
            f"{r['ratio']:.1f}× | ≥ {w.goal:g}× | {r['bare_per_s']:,.0f} | {overhead:+.1f} % (goal ≤ "
            f"{OVERHEAD_GOAL_PCT:g} %) | {r['prepare_first_s']:.1f} s / {r['prepare_cached_s']:.2f} s | "
            f"{r['rnnlab_peak_rss_mb']:,.0f} MB (ref {r['reference_peak_rss_mb']:,.0f} MB) |"
        )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": cpu_description()["model"],  # the CPU's name: platform.processor() is often just the arch
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": _cpu_count(),
    }


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE, help="seed_reference.py to compare to")
    parser.add_argument("--data-dir", type=Path, default=None, help="data folder (default: $RNNLAB_DATA_DIR or data/)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default: per workload)")
    parser.add_argument("--warmup", type=int, default=3, help="steps left out of the timing")
    parser.add_argument("--threads", type=int, default=2, help="torch threads, the same for every run")
    parser.add_argument("--only", default="news,novel,novel-bf16,imdb", help="comma-separated workloads")
    parser.add_argument("--out", type=Path, default=None, help="write every figure as JSON here")
    parser.add_argument("--docs", type=Path, default=None, help="write the Markdown table (dated) here")
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        help="extra Hydra override for rnnlab's runs, e.g. data.val_size=100 (repeatable)",
    )
    parser.add_argument("--worker", choices=sorted(WORKLOADS), help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=["trainer", "bare"], default="trainer", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data_dir = resolve_data_dir(args.data_dir)

    if args.worker:
        steps = args.steps or WORKLOADS[args.worker].default_steps
        print(json.dumps(run_worker(args.worker, args.mode, data_dir, steps, args.warmup, args.override)))
        return 0

    if not args.reference.is_file():
        print(f"error: reference loop not found: {args.reference} (pass --reference PATH)", file=sys.stderr)
        return 2
    rows = []
    for name in [n.strip() for n in args.only.split(",") if n.strip()]:
        if name not in WORKLOADS:
            print(f"error: unknown workload {name!r}; choose from {', '.join(WORKLOADS)}", file=sys.stderr)
            return 2
        workload = WORKLOADS[name]
        steps = args.steps or workload.default_steps
        print(f"[{name}] reference ...", file=sys.stderr, flush=True)
        ref = run_reference(args.reference, workload, data_dir, steps, args.warmup, args.threads)
        print(f"[{name}] rnnlab (Trainer) ...", file=sys.stderr, flush=True)
        ours = run_rnnlab("trainer", name, workload, data_dir, steps, args.warmup, args.threads, args.override)
        print(f"[{name}] rnnlab (bare loop) ...", file=sys.stderr, flush=True)
        bare = run_rnnlab("bare", name, workload, data_dir, steps, args.warmup, args.threads, args.override)
        rows.append(
            {
                "workload": name,
                "unit": workload.unit,
                "steps": steps,
                "warmup": args.warmup,
                "reference_per_s": ref["per_s"],
                "rnnlab_per_s": ours["per_s"],
                "bare_per_s": bare["per_s"],
                "ratio": ours["per_s"] / ref["per_s"],
                "goal": workload.goal,
                "prepare_first_s": ours["prepare_first_s"],
                "prepare_cached_s": ours["prepare_cached_s"],
                "rnnlab_peak_rss_mb": ours["peak_rss_mb"],
                "reference_peak_rss_mb": ref["peak_rss_mb"],
                "reference": ref,
                "rnnlab": ours,
                "bare": bare,
            }
        )
    table = markdown_table(rows)
    print(table)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = " ".join(["python", "bench/benchmark.py", *(argv if argv is not None else sys.argv[1:])])
    if args.out:
        atomic_write_json(
            args.out, {"date": stamp, "command": command, "machine": machine(), "threads": args.threads, "rows": rows}
        )
    if args.docs:
        atomic_write_text(
            args.docs,
            f"# Benchmarks\n\nMeasured {stamp} on {machine()['processor']}, "
            f"{args.threads} torch threads, torch {torch.__version__}.\n\n"
            f"Command: `{command}`\n\n{table}\n",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
