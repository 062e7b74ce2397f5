"""Memory and time of preparing data as it grows: ``python bench/scaling.py [--sizes 1,10,100,1000] [--docs FILE]``.

Each row is one DataModule's ``prepare_data`` in a process of its own, into an empty cache
(first) and again from that cache (cached): wall time, the process's peak RSS (``wait4``) and
the peak above what the imports alone cost. The novel rows read synthetic corpora made of the
book's body repeated to each size; IMDb reads the real archive (its 50k labelled reviews, and
all 100k with the unlabelled ones); news reads the real subset repeated 16 times (215k records,
the size of the full Kaggle file). The last line fits prepare time against size.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmark import _subprocess_json  # the sibling tool's process runner (this folder is on sys.path)

from rnnlab.data.imdb import IMDBDataModule
from rnnlab.data.news import NewsDataModule
from rnnlab.data.novel import NovelDataModule
from rnnlab.data.sources import resolve_data_dir
from rnnlab.io import atomic_write_text
from rnnlab.runs.provenance import cpu_description

BOOK = ("THE MYSTERIOUS ISLAND", "End of the Project Gutenberg")


def book_body(data_dir: Path) -> str:
    text = (data_dir / "novel" / "1268-0.txt").read_text(encoding="utf-8-sig")
    return text[text.find(BOOK[0]) : text.find(BOOK[1])]


def write_corpus(body: str, megabytes: float, path: Path) -> Path:
    """The body repeated until the file reaches ``megabytes`` (written piece by piece)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    piece, target = body.encode("utf-8"), int(megabytes * 1e6)
    with open(path, "wb") as out:
        written = 0
        while written < target:
            out.write(piece[: target - written])
            written += min(len(piece), target - written)
    return path


def write_news(source: Path, copies: int, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = source.read_bytes()
    with open(path, "wb") as out:
        for _ in range(copies):
            out.write(lines)
    return path


def datamodule(kind: str, data_dir: Path, cache_dir: Path, file: str | None):
    if kind == "novel":
        return NovelDataModule(
            data_dir=str(data_dir), cache_dir=str(cache_dir), filename=file, start_marker=None, end_marker=None
        )
    if kind == "news":
        return NewsDataModule(path=file, cache_dir=str(cache_dir))
    return IMDBDataModule(data_dir=str(data_dir), cache_dir=str(cache_dir), unlabelled=kind == "imdb-unlabelled")


def worker(kind: str, data_dir: Path, cache_dir: Path, file: str | None) -> dict[str, Any]:
    imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    dm = datamodule(kind, data_dir, cache_dir, file)
    dm.prepare_data()
    return {"prepare_s": time.perf_counter() - start, "imports_rss_mb": imports, "vocab": dm.vocab_size}


def measure(kind: str, label: str, megabytes: float, data_dir: Path, file: str | None, work: Path) -> dict[str, Any]:
    cache = work / f"cache-{label}"
    row: dict[str, Any] = {"input": label, "megabytes": megabytes}
    for phase in ("first", "cached"):
        cmd = [sys.executable, __file__, "--worker", kind, "--data-dir", str(data_dir), "--cache", str(cache)]
        result = _subprocess_json([*cmd, *(["--file", file] if file else [])])
        row[phase] = {**result, "above_imports_mb": result["peak_rss_mb"] - result["imports_rss_mb"]}
        print(f"[{label}] {phase}: {result['prepare_s']:.1f} s, peak {result['peak_rss_mb']:.0f} MB", file=sys.stderr)
    return row


def slope(rows: list[dict[str, Any]]) -> tuple[float, float]:
    """Least-squares line of first-prepare seconds against megabytes: (s per 100 MB, intercept)."""
    xs = [r["megabytes"] for r in rows]
    ys = [r["first"]["prepare_s"] for r in rows]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    k = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    return 100 * k, my - k * mx


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| input | size | first: prepare / peak RSS (above imports) | cached: prepare / peak RSS (above imports) |",
        "|---|---:|---:|---:|",
    ]
    for r in rows:
        cells = [
            f"{r[p]['prepare_s']:.1f} s / {r[p]['peak_rss_mb']:,.0f} MB (+{r[p]['above_imports_mb']:,.0f})"
            for p in ("first", "cached")
        ]
        lines.append(f"| {r['input']} | {r['megabytes']:,.0f} MB | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,10,100,1000", help="novel corpus sizes in MB")
    parser.add_argument("--data-dir", type=Path, default=None, help="data folder (default: $RNNLAB_DATA_DIR or data/)")
    parser.add_argument(
        "--work", type=Path, default=None, help="folder for the corpora and caches (default: a temp one)"
    )
    parser.add_argument("--docs", type=Path, default=None, help="write the Markdown table (dated) here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--file", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    data_dir = resolve_data_dir(args.data_dir)
    if args.worker:
        print(json.dumps(worker(args.worker, data_dir, args.cache, args.file)))
        return 0
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        body = book_body(data_dir)
        novel = []
        for size in [float(s) for s in args.sizes.split(",")]:
            path = write_corpus(body, size, work / "data" / "novel" / f"book-{size:g}MB.txt")
            novel.append(measure("novel", f"novel, book body to {size:g} MB", size, work / "data", path.name, work))
        news_file = sorted((data_dir / "news").glob("News_Category_Dataset*.json"))[0]
        news = write_news(news_file, 16, work / "news16.json")
        others = [
            measure("imdb", "IMDb, 50k labelled reviews", 84, data_dir, None, work),
            measure("imdb-unlabelled", "IMDb + 50k unlabelled", 84, data_dir, None, work),
            measure("news", "news subset ×16 (215k records)", news.stat().st_size / 1e6, data_dir, str(news), work),
        ]
    per_100, intercept = slope(novel) if len(novel) > 1 else (float("nan"), float("nan"))
    text = (
        f"{table(novel + others)}\n\nNovel first prepare: {per_100:.1f} s per 100 MB "
        f"(least squares over {len(novel)} sizes, intercept {intercept:.1f} s)."
    )
    print(text)
    if args.docs:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        cpu = cpu_description()["model"]
        atomic_write_text(
            args.docs, f"Measured {stamp} on {cpu}: `python bench/scaling.py --sizes {args.sizes}`\n\n{text}\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
