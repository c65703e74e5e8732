"""CPU per job as instructions counted, not seconds timed: issue 13's ratios without the noise.

    python -m tests.benchmarks.instructions [--jobs 1000,3000] [--clients batchsubmit,bare,duties]
        [--parts]

On the shared 2-core VMs these benchmarks run on, a client's CPU-seconds per job move by 20-30%
from one run to the next, as much as the gap issue 13 is about. Valgrind's ``callgrind`` counts
the user-space instructions a process executes (``Ir``), which do not depend on what else the
machine is doing: the same run counted twice agrees to about 0.1%. Each client runs twice
under it against the minimal server, with ``--jobs`` A and B jobs, and its cost per job is
``(Ir(B) - Ir(A)) / (B - A)``: start-up, imports and the first connections cancel out.

What it does not see: the kernel's part (system calls, the journal's fdatasync: a run's
``sys`` CPU, about a tenth of the total here, and alike for every client) and how well the
instructions use the CPU's caches. Under valgrind a client runs ~50 times slower, so rules that
go by the clock fire more often per job than they do at full speed; the one that matters is
the journal's ``FRESH`` (an intent older than it is rewritten when its create is sent), which
batchsubmit runs with here set so high that it never fires, as at full speed (a batch of
intents is sent within milliseconds of being journalled). The results file's flush each second
and the progress line are left as they are: they cost less than 0.1% of a job under valgrind.

``--parts`` adds where batchsubmit's instructions go, each part counted the same way: the
checking pass over the listing, the second pass, building the specs (beside the bare loop's own
body building), two end-to-end runs with one duty patched out (the journal's writes and
syncs; the results file's writes): what that run saves is that duty's price, and the VAS
client's own work per call (``client_loop.py``: ``VasClient.create`` against the bare loop's
``session.post``, the same bodies, both on uvloop).

The clients are the network benchmark's (``run.py``): ``batchsubmit submit`` end to end, the
bare signing loop and the duty floor, each a process of its own, two of them at a time (one per
CPU; the server's work does not count). Needs ``valgrind`` on the PATH; takes 2 to 3 minutes.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.benchmarks import workload
from tests.benchmarks.run import CONCURRENCY, PYTHON, ROOT, Server, client_env

CLIENTS = ("batchsubmit", "bare", "duties")

# batchsubmit under valgrind: FRESH out of the way (see the module's docstring), then the CLI.
_BATCHSUBMIT = (
    "import sys; import batchsubmit.journal as j; j.FRESH = float('inf'); {patch}"
    "from batchsubmit.__main__ import main; sys.argv[0] = 'batchsubmit'; main()"
)
# End-to-end runs with one duty patched out, for --parts: what each saves is its price.
_WITHOUT = {
    "batchsubmit-no-journal": (
        "j.Journal.intend = lambda self, intents: None; "
        "j.Journal.sending = lambda self, source, name: None; "
        "exec('async def _commit(self): pass', vars(j)); j.Journal.commit = j._commit; "
    ),
    "batchsubmit-no-rows": (
        "import batchsubmit.results as r; r.ResultsWriter.write = lambda self, outcome: None; "
    ),
}
# In-process parts, for --parts: {jobs} is the run's size, {work} the work directory.
_SETUP = (
    "import sys; from pathlib import Path; from batchsubmit.manifest import load_manifest; "
    "from batchsubmit.runner import count_work; from batchsubmit.sources import ExpandStats, "
    "iter_objects; from batchsubmit.jobs import SpecBuilder; from tests.benchmarks import "
    "workload; m = load_manifest(Path('{work}/manifest-{jobs}.toml')); "
    "warn = lambda message: None; "
)
_PARTS = {
    "checking pass": "count_work(m, None, (), warn)",
    "both passes": (
        "s = count_work(m, None, (), warn); "
        "refs = list(iter_objects(m, ExpandStats(), warn, s.repeats))"
    ),
    "both passes + specs": (
        "s = count_work(m, None, (), warn); "
        "refs = list(iter_objects(m, ExpandStats(), warn, s.repeats)); "
        "build = SpecBuilder(m.service, m.job).build; specs = [build(r) for r in refs]"
    ),
    "bare loop's bodies": "bodies = [workload.body(i) for i in range({jobs})]",
    "nothing": "pass",
}
# batchsubmit's VAS client against the bare loop's session.post, bodies built first (--parts)
_CLIENT_LOOPS = {"client: VasClient.create": "vas", "client: session.post": "post"}
_COLLECTED = re.compile(rb"Collected : (\d+)")


def _command(client: str, jobs: int, url: str, work: Path) -> list[str]:
    listing = work / f"listing-{jobs}.txt"
    if client == "bare":
        return [PYTHON, "-m", "tests.benchmarks.bare_client", url, "--jobs", str(jobs)]
    if client == "duties":
        return [
            *(PYTHON, "-m", "tests.benchmarks.duty_client", url, "--jobs", str(jobs)),
            *("--listing", str(listing)),
        ]
    if client in _CLIENT_LOOPS:
        return [
            *(PYTHON, "-m", "tests.benchmarks.client_loop", url, "--jobs", str(jobs)),
            *("--client", _CLIENT_LOOPS[client]),
        ]
    if client in _PARTS:
        return [PYTHON, "-c", (_SETUP + _PARTS[client]).format(jobs=jobs, work=work)]
    manifest = work / f"manifest-{jobs}.toml"
    results = work / f"results-{client}-{jobs}.csv"
    program = _BATCHSUBMIT.format(patch=_WITHOUT.get(client, ""))
    return [
        *(PYTHON, "-c", program, "submit", str(manifest), "--endpoint", url),
        *("--rate", "0", "--concurrency", str(CONCURRENCY), "--results", str(results), "-q"),
    ]


def count(command: Sequence[str], work: Path, tag: str) -> int:
    """The instructions ``command`` executed in user space (callgrind's ``Ir``)."""
    out = work / f"callgrind-{tag}.out"
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *command],
        cwd=ROOT,
        env=client_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    out.unlink(missing_ok=True)
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        tail = done.stderr.decode(errors="replace")[-800:]
        raise RuntimeError(f"{tag}: exit {done.returncode}; stderr ends: {tail}")
    return int(found.group(1))


def measure(clients: Sequence[str], sizes: tuple[int, int]) -> dict[str, float]:
    """Instructions per job of each client, from a run of each size."""
    with tempfile.TemporaryDirectory(prefix="batchsubmit-ir-") as directory:
        work = Path(directory)
        for jobs in sizes:
            workload.write_listing(work / f"listing-{jobs}.txt", jobs)
            workload.write_manifest(work / f"manifest-{jobs}.toml", work / f"listing-{jobs}.txt")
        server = Server("minimal", 0.0)
        try:
            runs = [(client, jobs) for client in clients for jobs in sizes]
            with ThreadPoolExecutor(max_workers=max(1, min(2, os.cpu_count() or 1))) as pool:
                counted = dict(
                    zip(
                        runs,
                        pool.map(
                            lambda run: count(
                                _command(run[0], run[1], server.url, work),
                                work,
                                f"{run[0]}-{run[1]}",
                            ),
                            runs,
                        ),
                        strict=True,
                    )
                )
        finally:
            server.close()
    small, large = sizes
    return {c: (counted[c, large] - counted[c, small]) / (large - small) for c in clients}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", default="1000,3000", help="the two run sizes, A,B (A < B)")
    parser.add_argument("--clients", default=",".join(CLIENTS), help="of: " + ", ".join(CLIENTS))
    parser.add_argument("--parts", action="store_true", help="also where batchsubmit's go")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: nothing measured", file=sys.stderr)
        return 2
    small, large = (int(n) for n in args.jobs.split(","))
    clients = [c for c in args.clients.split(",") if c]
    if unknown := set(clients) - set(CLIENTS):
        parser.error(f"unknown clients: {', '.join(sorted(unknown))}")
    if not 0 < small < large:
        parser.error("--jobs: two sizes A,B with 0 < A < B")
    runs = clients + ([*_WITHOUT, *_PARTS, *_CLIENT_LOOPS] if args.parts else [])
    per_job = measure(runs, (small, large))
    print(f"Instructions per job (callgrind Ir, runs of {small:,} and {large:,} jobs, 0 ms):")
    base = per_job.get("bare")
    for client in clients:
        ratio = f"  {per_job[client] / base:.3f}x the bare loop" if base else ""
        print(f"  {client:12s} {per_job[client] / 1000:8.1f} k{ratio}")
    if args.parts:
        print("Where batchsubmit's go (k instructions per job):")
        for line, value in _budget(per_job):
            print(f"  {line:58s} {value / 1000:7.1f}")
    return 0


def _budget(per_job: dict[str, float]) -> list[tuple[str, float]]:
    """batchsubmit's instructions per job, part by part, from the --parts runs."""
    nothing = per_job["nothing"]
    checking = per_job["checking pass"] - nothing
    second = per_job["both passes"] - per_job["checking pass"]
    specs = per_job["both passes + specs"] - per_job["both passes"]
    bodies = per_job["bare loop's bodies"] - nothing
    lines = [
        ("the checking pass before the first call", checking),
        ("the second pass over the listing", second),
        ("building the specs (name, body)", specs),
        ("  (the bare loop's own body building, for comparison)", bodies),
    ]
    client = per_job["client: VasClient.create"] - per_job["client: session.post"]
    total = per_job.get("batchsubmit")
    if total is not None:
        journal = total - per_job["batchsubmit-no-journal"]
        rows = total - per_job["batchsubmit-no-rows"]
        lines += [
            ("the journal (intents written, synced)", journal),
            ("the results rows (written)", rows),
        ]
        if "bare" in per_job:
            rest = total - per_job["bare"] - checking - second - (specs - bodies) - journal - rows
            lines.append(("the rest: engine, gate, client's checks, answers, counts", rest))
            lines.append(("  of which the VAS client's own (over session.post)", client))
            lines.append(("in all, beyond the bare loop", total - per_job["bare"]))
    return lines


if __name__ == "__main__":
    sys.exit(main())
