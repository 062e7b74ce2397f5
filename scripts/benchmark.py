"""Throughput against the tutorials' loops: python scripts/benchmark.py [--only news,novel,imdb] [--out FILE]"""

import sys

from rnnlab.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
