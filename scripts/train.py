"""Train (then test the best checkpoint): ``python scripts/train.py [experiment=NAME] [key=value ...]``."""

import sys

from rnnlab.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
