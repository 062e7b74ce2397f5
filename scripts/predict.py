"""Classify new text: python scripts/predict.py ckpt_path=PATH text="..." (or input=FILE [output=CSV])"""

import sys

from rnnlab.cli.predict import main

if __name__ == "__main__":
    sys.exit(main())
