"""Throughput against the tutorials' loops: python scripts/benchmark.py [--only news,novel,imdb] [--out FILE]

The tool itself is a developer tool outside the installed package: bench/benchmark.py."""

import runpy
from pathlib import Path

if __name__ == "__main__":
    runpy.run_path(str(Path(__file__).resolve().parents[1] / "bench" / "benchmark.py"), run_name="__main__")
