"""``python -m qaa.experiments.report OUT``: rebuild OUT/results.md and the plots from OUT/results.json."""
import sys

from . import main

sys.exit(main())
