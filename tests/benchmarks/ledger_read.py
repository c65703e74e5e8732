"""Read a results ledger with :func:`batchsubmit.results.read_ledger`, and say how long it took.

    python -m tests.benchmarks.ledger_read RESULTS.csv SERVICE_URL

Prints one JSON line: seconds, rows read, sources done, warnings. Run as its own process so
that the parent can take its peak RSS.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import orjson

from batchsubmit.results import format_for, read_ledger


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("service_url")
    args = parser.parse_args()
    warnings: list[str] = []
    started = time.perf_counter()
    ledger = read_ledger(
        args.results, format_for(args.results, None), args.service_url, warnings.append
    )
    elapsed = time.perf_counter() - started
    report = {
        "elapsed": elapsed,
        "rows": ledger.rows,
        "done": len(ledger.done),
        "other_services": ledger.other_services,
        "warnings": len(warnings),
    }
    sys.stdout.write(orjson.dumps(report).decode() + "\n")


if __name__ == "__main__":
    main()
