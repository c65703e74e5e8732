"""``python -m tests.benchmarks``: run the benchmark suite (see ``run.py``)."""

from __future__ import annotations

import sys

from tests.benchmarks.run import main

sys.exit(main())
