"""Test metrics of a checkpoint: ``python scripts/eval.py ckpt_path=PATH``."""

import sys

from rnnlab.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
