"""Published results: python scripts/results.py list | run ROW | add RUN_DIR --row ROW | render [--check]"""

import sys

from rnnlab.cli.results import main

if __name__ == "__main__":
    sys.exit(main())
