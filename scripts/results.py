"""Published results from run folders: python scripts/results.py add RUN_DIR --table T --row NAME | render [--check]"""

import sys

from rnnlab.cli.results import main

if __name__ == "__main__":
    sys.exit(main())
