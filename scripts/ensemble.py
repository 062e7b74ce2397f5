"""Averaged probabilities of classifiers: ``python scripts/ensemble.py 'ckpt_paths=[A.ckpt,B.ckpt]'``."""

import sys

from rnnlab.cli.ensemble import main

if __name__ == "__main__":
    sys.exit(main())
