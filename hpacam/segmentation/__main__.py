"""`python -m hpacam.segmentation` is the same command as `python -m hpacam.segment`."""

import sys

from hpacam.segment import main

if __name__ == "__main__":
    sys.exit(main())
