"""``python -m dystream_ros.eval.mouth_reader train|eval``."""

import sys

from .training import main

sys.exit(main())
