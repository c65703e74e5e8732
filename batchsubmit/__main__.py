"""``python -m batchsubmit`` is the ``batchsubmit`` command."""

from .cli import main

raise SystemExit(main())
