"""``python -m dystream_ros.eval.mouth_reader train|eval``."""

import sys

from .training import main

if __name__ == "__main__":
    sys.exit(main())
