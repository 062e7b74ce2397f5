"""Training throughput and peak memory of every recurrent cell, side by side.

Each cell is one layer as the encoder builds it, without its paper's block around it
(``block=plain``), on random ``[B, T, E]`` inputs: training tokens/s (forward + backward + Adam step)
and the peak resident memory above what the process held before its first step, at the LSTM's
hidden size and at the LSTM's parameter count, with ratios to ``nn.LSTM`` in the same sitting.

Every row runs in its own subprocess (clean allocator, its own peak, the same thread count); this
module imports the model package only, so a worker starts in the time it takes to import torch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from rnnlab.io import atomic_write_json, atomic_write_text
from rnnlab.models.cells import CELLS
from rnnlab.models.encoder import EncoderSettings
from rnnlab.runs.provenance import cpu_description

CELL_NAMES = ("rnn", "gru", "lstm", "elman", "mingru", "minlstm", "lru", "mamba", "mlstm")
SIZINGS = ("equal hidden", "equal parameters")
MAX_HIDDEN = 16384  # a one-layer minGRU reading E = 64 needs ~9,000 units for an LSTM-512 count


def cell_stack(cell: str, embed: int, hidden: int) -> torch.nn.Module:
    """One layer of ``cell`` as the encoder builds it, without its paper's block around it."""
    settings = EncoderSettings(cell=cell, embed_dim=embed, hidden_size=hidden, block="plain")
    return CELLS[cell].build(embed, hidden, 1, 0.0, settings.scan_options())


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def parameters_at(cell: str, embed: int, hidden: int) -> int:
    with torch.device("meta"), torch.random.fork_rng(devices=[]):  # shapes only: no memory, no time
        return parameter_count(cell_stack(cell, embed, hidden))


def hidden_at_parameters(cell: str, embed: int, target: int) -> int:
    """The hidden size (a multiple of 8) whose one-layer ``cell`` has the parameter count nearest ``target``.

    A bisection: every cell's parameter count grows with its hidden size.
    """
    low, high = 1, MAX_HIDDEN // 8  # in units of 8
    while low < high:
        middle = (low + high) // 2
        if parameters_at(cell, embed, 8 * middle) < target:
            low = middle + 1
        else:
            high = middle
    candidates = {8 * max(low - 1, 1), 8 * low}
    return min(sorted(candidates), key=lambda h: abs(parameters_at(cell, embed, h) - target))


def run_worker(cell: str, batch: int, steps_t: int, embed: int, hidden: int, steps: int, warmup: int) -> dict:
    """Tokens/s of forward + backward + Adam on random inputs; peak RSS above what the process held before."""
    torch.manual_seed(0)
    stack = cell_stack(cell, embed, hidden)
    optimizer = torch.optim.Adam(stack.parameters())
    x = torch.randn(batch, steps_t, embed)
    before = _rss_mb()
    start = time.perf_counter()
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        optimizer.zero_grad()
        outputs, _ = stack(x)
        outputs.float().square().mean().backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "cell": cell,
        "hidden": hidden,
        "parameters": parameter_count(stack),
        "seq": steps_t,
        "batch": batch,
        "tokens_per_s": steps * batch * steps_t / seconds,
        "peak_above_start_mb": max(peak - before, 0.0),
        "threads": torch.get_num_threads(),
    }


def _rss_mb() -> float:
    """This process's resident memory now (Linux ``/proc``; the peak so far elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_in_subprocess(cell: str, shape: tuple[int, int, int, int], steps: int, warmup: int, threads: int) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        f"--worker={cell}",
        f"--shape={','.join(str(v) for v in shape)}",
        f"--steps={steps}",
        f"--warmup={warmup}",
        f"--threads={threads}",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cell_rows(
    cells: list[str], seqs: list[int], batch: int, embed: int, hidden: int, steps: int, warmup: int, threads: int
) -> list[dict]:
    """Every cell at each length, at ``hidden`` and at the LSTM's parameter count, each in its own process."""
    target = parameters_at("lstm", embed, hidden)
    sizes = {cell: {SIZINGS[0]: hidden, SIZINGS[1]: hidden_at_parameters(cell, embed, target)} for cell in cells}
    rows = []
    for steps_t in seqs:
        for sizing in SIZINGS:
            for cell in cells:
                size = sizes[cell][sizing]
                print(f"[cells] {cell} T={steps_t} H={size} ...", file=sys.stderr, flush=True)
                row = measure_in_subprocess(cell, (batch, steps_t, embed, size), steps, warmup, threads)
                rows.append({**row, "sizing": sizing})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)  # a sitting cut short keeps its rows
    return rows


def cell_table(rows: list[dict]) -> str:
    lstm = {(r["seq"], r["sizing"]): r for r in rows if r["cell"] == "lstm"}
    lines = [
        "| T | sizing | cell | hidden | parameters | tokens/s | × LSTM | peak memory above start |",
        "|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        base = lstm.get((r["seq"], r["sizing"]))
        ratio = f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}×" if base else "—"
        lines.append(
            f"| {r['seq']} | {r['sizing']} | {r['cell']} | {r['hidden']} | {r['parameters']:,} | "
            f"{r['tokens_per_s']:,.0f} | {ratio} | {r['peak_above_start_mb']:,.0f} MB |"
        )
    return "\n".join(lines)


def machine(threads: int) -> dict[str, Any]:
    return {
        "processor": cpu_description()["model"],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "threads": threads,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(CELL_NAMES), help="comma-separated cells")
    parser.add_argument("--seq", default="40,256,1024", help="sequence lengths T")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--embed", type=int, default=64, help="input size E")
    parser.add_argument("--hidden", type=int, default=512, help="the LSTM's hidden size (the other sizing's target)")
    parser.add_argument("--steps", type=int, default=5, help="timed optimizer steps per row")
    parser.add_argument("--warmup", type=int, default=2, help="steps left out of the timing")
    parser.add_argument("--threads", type=int, default=2, help="torch threads, the same for every row")
    parser.add_argument("--out", type=Path, default=None, help="write every figure as JSON here")
    parser.add_argument("--docs", type=Path, default=None, help="write the Markdown table (dated) here")
    parser.add_argument("--worker", choices=CELL_NAMES, help=argparse.SUPPRESS)
    parser.add_argument("--shape", default="", help=argparse.SUPPRESS)  # B,T,E,H
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.worker:
        batch, steps_t, embed, hidden = (int(v) for v in args.shape.split(","))
        print(json.dumps(run_worker(args.worker, batch, steps_t, embed, hidden, args.steps, args.warmup)))
        return 0
    cells = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = [c for c in cells if c not in CELL_NAMES]
    if unknown:
        print(f"error: --only names unknown cell {unknown[0]!r}; choose from {', '.join(CELL_NAMES)}", file=sys.stderr)
        return 2
    seqs = [int(t) for t in args.seq.split(",")]
    rows = cell_rows(cells, seqs, args.batch, args.embed, args.hidden, args.steps, args.warmup, args.threads)
    table = cell_table(rows)
    print(table)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = " ".join(["python", "bench/cells.py", *(argv if argv is not None else sys.argv[1:])])
    if args.out:
        atomic_write_json(args.out, {"date": stamp, "command": command, "machine": machine(args.threads), "rows": rows})
    if args.docs:
        atomic_write_text(
            args.docs,
            f"Measured {stamp} on {machine(args.threads)['processor']}, {args.threads} torch threads, torch "
            f"{torch.__version__}.\nCommand: `{command}`\n\n{table}\n",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
