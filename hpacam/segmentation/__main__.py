"""`python -m hpacam.segmentation`: the folder-segmentation command (`hpacam.segmentation.cli`)."""

import sys

from hpacam.segmentation.cli import main

if __name__ == "__main__":
    sys.exit(main())
