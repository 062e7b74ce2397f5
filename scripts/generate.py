"""Continue a prompt: ``python scripts/generate.py ckpt_path=PATH prompt="The island" max_new_tokens=200``."""

import sys

from rnnlab.cli.generate import main

if __name__ == "__main__":
    sys.exit(main())
