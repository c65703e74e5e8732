"""batchsubmit's benchmark suite (issue 6): throughput, CPU and memory, side by side in one run.

    .venv/bin/python -m tests.benchmarks [--quick] [--jobs N] [--repeats R] [--json PATH]

(from the project root; ``--help`` lists every option)

Network: each client runs as its own process against one local server process (per scenario),
so that a client's CPU and peak RSS are its own (``os.wait4``) and the server's are not in them:

- ``batchsubmit``: ``batchsubmit submit`` end to end (manifest, listing expansion, signing,
  the pool, the journal and the results file), ``--rate 0 --concurrency 64``;
- ``bare``: an asyncio loop that signs and POSTs with one aiohttp session (the ceiling);
- ``sdk``: Huawei's ``huaweicloudsdkvas`` from 64 threads, pool sized to the threads;
- ``sdk-default``: the same with the SDK's default HTTP config (10 pooled connections).

jobs/s is measured by the server (creates answered 201, first to last arrival), the same way
for every client; wall time is the whole process, start-up included. Each figure is the median
of ``--repeats`` runs, the clients interleaved. A run is valid only if every create was
answered 201 and the client agrees; an invalid run is reported as such.

Memory: ``batchsubmit expand`` and ``submit --dry-run`` over generated listings (100,000 and
1,000,000 entries), ``read_ledger`` over a results ledger of as many rows, and a dry run with
that ledger present: wall time and peak RSS of each process.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from tests.benchmarks import workload

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PYTHON = sys.executable
CONCURRENCY = 64
DEFAULT_SCENARIOS = "0:minimal,0:emulator,50:minimal,50:emulator"
CHILD_TIMEOUT = 300.0

CLIENTS: dict[str, str] = {
    "batchsubmit": "batchsubmit submit (end to end)",
    "bare": "bare aiohttp loop + signing",
    "duties": "bare loop + journal, rows, checking pass",
    "sdk": "official SDK, 64 threads, pool 64",
    "sdk-default": "official SDK, 64 threads, default pool (10)",
}
# With --pin: the CPUs servers and clients may run on (none: wherever the kernel puts them).
AFFINITY: dict[str, set[int]] = {}
TARGETS = {
    "vs_bare": 0.9,  # end to end jobs/s over the bare loop's, 0 ms (issue 13; issue 6: 0.7)
    "cpu_vs_bare": 1.1,  # end to end CPU per job over the bare loop's, 0 ms, net of start-up
    "vs_sdk": 5.0,  # end to end jobs/s over the SDK's, 0 ms
    "of_ideal": 0.85,  # end to end jobs/s over in-flight / latency, 50 ms
    "cpu_per_k": 0.6,  # CPU-seconds per 1,000 jobs end to end
    "expand_rss_mb": 150.0,  # peak RSS of expand over 1,000,000 entries
}


# -- one child process, measured ----------------------------------------------------------------


@dataclass
class Child:
    """A finished child process: exit code, wall seconds, CPU seconds, peak RSS."""

    code: int
    wall: float
    cpu: float
    rss_mb: float
    stdout: str
    stderr: str


def run_child(
    command: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    capture: bool = True,
    timeout: float = CHILD_TIMEOUT,
) -> Child:
    """Run ``command`` to its end; its own rusage comes from ``wait4`` (no other process's)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        client_cpus = AFFINITY.get("client")
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            preexec_fn=(lambda: os.sched_setaffinity(0, client_cpus)) if client_cpus else None,
            stdin=subprocess.DEVNULL,
            stdout=out if capture else subprocess.DEVNULL,
            stderr=err,
        )
        watchdog = threading.Timer(timeout, process.kill)
        watchdog.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            watchdog.cancel()
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Child(
            code=process.returncode,
            wall=wall,
            cpu=usage.ru_utime + usage.ru_stime,
            rss_mb=usage.ru_maxrss / 1024,  # kilobytes on Linux
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
        )


def _tail(text: str, lines: int = 5) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])


# -- the server process ---------------------------------------------------------------------------


class Server:
    """``server.py`` in its own process; ``reset`` and ``stats`` over its stdin and stdout."""

    def __init__(self, kind: str, latency: float) -> None:
        self.kind = kind
        self.latency = latency
        self._process = subprocess.Popen(
            [PYTHON, "-m", "tests.benchmarks.server", "--kind", kind, "--latency", str(latency)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        if "server" in AFFINITY:
            os.sched_setaffinity(self._process.pid, AFFINITY["server"])
        assert self._process.stdout is not None
        assert self._process.stdin is not None
        self._in: IO[bytes] = self._process.stdin
        self._out: IO[bytes] = self._process.stdout
        line = self._out.readline().decode().strip()
        if not line.startswith("http://"):
            self.close()
            raise RuntimeError(f"the {kind} server did not start (it printed {line!r})")
        self.url = line

    def _ask(self, command: str) -> dict[str, Any]:
        self._in.write(command.encode() + b"\n")
        self._in.flush()
        reply: dict[str, Any] = orjson.loads(self._out.readline())
        return reply

    def reset(self) -> None:
        self._ask("reset")

    def stats(self) -> dict[str, Any]:
        return self._ask("stats")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._in.close()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


# -- the network benchmark ----------------------------------------------------------------------


@dataclass
class Sample:
    """One client run against the server."""

    client: str
    server: str
    latency_ms: float
    jobs: int
    valid: bool
    problem: str
    rate: float  # jobs/s, measured by the server: creates from the first to the last arrival
    wall: float  # the whole process, start-up included
    cpu: float  # user + system seconds of the client process
    rss_mb: float
    server_cpu: float
    client_rate: float  # jobs/s by the client's own clock (batchsubmit: the pool's elapsed)
    note: str = ""  # e.g. the bare loop's signer

    @property
    def cpu_per_k(self) -> float:
        return self.cpu / self.jobs * 1000

    @property
    def server_busy(self) -> float:
        """The server's CPU over the span it saw creates arrive: ~100% means it was the limit."""
        span = (self.jobs - 1) / self.rate if self.rate > 0 else 0.0
        return self.server_cpu / span if span > 0 else 0.0


@dataclass
class Summary:
    """The medians of a client's samples in one scenario."""

    client: str
    server: str
    latency_ms: float
    jobs: int
    runs: int
    valid: bool
    problems: list[str]
    rate: float
    client_rate: float
    wall: float
    cpu: float
    cpu_per_k: float
    cpu_per_k_net: float | None  # start-up CPU taken out
    rss_mb: float
    server_busy: float
    rates: list[float] = field(default_factory=list)
    note: str = ""


class Workdir:
    """Listings and manifests for the network runs, and fresh results paths."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._manifests: dict[int, Path] = {}
        self._count = 0

    def manifest(self, jobs: int) -> Path:
        if jobs not in self._manifests:
            listing = self.root / f"listing-{jobs}.txt"
            workload.write_listing(listing, jobs)
            manifest = self.root / f"manifest-{jobs}.toml"
            workload.write_manifest(manifest, listing)
            self._manifests[jobs] = manifest
        return self._manifests[jobs]

    def listing(self, jobs: int) -> Path:
        """The listing :meth:`manifest` points to (the duty-floor client reads it too)."""
        return self.manifest(jobs).with_name(f"listing-{jobs}.txt")

    def fresh(self, stem: str) -> Path:
        self._count += 1
        return self.root / f"{stem}-{self._count}"


def client_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUAWEICLOUD_SDK_")}
    env.update(workload.sdk_env())
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run_batchsubmit(
    server: Server, jobs: int, work: Workdir
) -> tuple[Child, int, str, float, str]:
    manifest = work.manifest(jobs)
    results = work.fresh("results").with_suffix(".csv")
    summary = results.with_suffix(".summary.json")
    command = [
        *(PYTHON, "-m", "batchsubmit", "submit", str(manifest)),
        *("--endpoint", server.url, "--rate", "0", "--concurrency", str(CONCURRENCY)),
        *("--results", str(results), "--summary", str(summary)),
    ]
    child = run_child(command, env=client_env())
    created, problem, elapsed = 0, "", 0.0
    try:
        data = orjson.loads(summary.read_bytes())
        counts = data["counts"]
        created = counts["submitted"]
        elapsed = float(data["elapsed_seconds"])
        bad = {k: v for k, v in counts.items() if k != "submitted" and v}
        if bad:
            problem = f"batchsubmit counts {bad}"
        with results.open("rb") as handle:
            rows = sum(1 for _ in handle) - 1
        if rows != jobs:
            problem = problem or f"{rows} results rows, expected {jobs}"
    except (OSError, KeyError, ValueError) as exc:
        problem = f"no summary ({exc}); stderr: {_tail(child.stderr)}"
    for path in results.parent.glob(results.name + "*"):
        path.unlink()
    summary.unlink(missing_ok=True)
    return child, created, problem, elapsed, ""


def _run_script(
    script: str, extra: Sequence[str], server: Server, jobs: int
) -> tuple[Child, int, str, float, str]:
    command = [PYTHON, "-m", f"tests.benchmarks.{script}", server.url, "--jobs", str(jobs), *extra]
    child = run_child(command, env=client_env())
    try:
        report = orjson.loads(child.stdout.strip().splitlines()[-1])
    except (IndexError, orjson.JSONDecodeError):
        return child, 0, f"no report; stderr: {_tail(child.stderr)}", 0.0, ""
    problem = f"client errors {report['errors']}" if report["errors"] else ""
    note = f"signer: {report['signer']}" if "signer" in report else ""
    return child, int(report["created"]), problem, float(report["elapsed"]), note


def measure(client: str, server: Server, jobs: int, work: Workdir) -> Sample:
    """One run of ``client`` against ``server`` (reset first); invalid unless all were 201."""
    server.reset()
    if client == "batchsubmit":
        child, created, problem, elapsed, note = _run_batchsubmit(server, jobs, work)
    elif client == "bare":
        child, created, problem, elapsed, note = _run_script(
            "bare_client", ["--concurrency", str(CONCURRENCY)], server, jobs
        )
    elif client == "duties":
        listing = work.listing(jobs)
        child, created, problem, elapsed, note = _run_script(
            "duty_client",
            ["--concurrency", str(CONCURRENCY), "--listing", str(listing)],
            server,
            jobs,
        )
    else:
        pool = "default" if client == "sdk-default" else "threads"
        child, created, problem, elapsed, note = _run_script(
            "sdk_client", ["--threads", str(CONCURRENCY), "--pool", pool], server, jobs
        )
    stats = server.stats()
    first, last = stats["first"], stats["last"]
    rate = (stats["created"] - 1) / (last - first) if first is not None and last > first else 0.0
    problems = [problem] if problem else []
    if child.code != 0:
        problems.append(f"exit code {child.code}: {_tail(child.stderr)}")
    if stats["errors"]:
        problems.append(f"server answered errors: {stats['statuses']}")
    if stats["created"] != jobs or created != jobs:
        problems.append(f"server created {stats['created']}, client counted {created}, of {jobs}")
    return Sample(
        client=client,
        server=server.kind,
        latency_ms=server.latency * 1000,
        jobs=jobs,
        valid=not problems,
        problem="; ".join(problems),
        rate=rate,
        wall=child.wall,
        cpu=child.cpu,
        rss_mb=child.rss_mb,
        server_cpu=float(stats["cpu"]),
        client_rate=jobs / elapsed if elapsed > 0 else 0.0,
        note=note,
    )


def summarise(samples: list[Sample], startup: dict[str, Sample]) -> Summary:
    first = samples[0]
    cpu = statistics.median(s.cpu for s in samples)
    base = startup.get(first.client)
    net = None
    if base is not None and first.jobs > 1:
        net = (cpu - base.cpu) / (first.jobs - 1) * 1000
    return Summary(
        client=first.client,
        server=first.server,
        latency_ms=first.latency_ms,
        jobs=first.jobs,
        runs=len(samples),
        valid=all(s.valid for s in samples),
        problems=[s.problem for s in samples if s.problem],
        rate=statistics.median(s.rate for s in samples),
        client_rate=statistics.median(s.client_rate for s in samples),
        wall=statistics.median(s.wall for s in samples),
        cpu=cpu,
        cpu_per_k=statistics.median(s.cpu_per_k for s in samples),
        cpu_per_k_net=net,
        rss_mb=statistics.median(s.rss_mb for s in samples),
        server_busy=statistics.median(s.server_busy for s in samples),
        rates=[round(s.rate) for s in samples],
        note=first.note,
    )


@dataclass(frozen=True)
class Scenario:
    server: str
    latency: float  # seconds
    jobs: int
    sdk_jobs: int

    @property
    def title(self) -> str:
        return f"{self.latency * 1000:g} ms latency, {self.server} server"


def measure_startup(
    clients: Sequence[str], repeats: int, work: Workdir, progress: Callable[[str], None]
) -> dict[str, Sample]:
    """Each client creating a single job: what it costs to start, import and finish."""
    server = Server("minimal", 0.0)
    found: dict[str, list[Sample]] = {c: [] for c in clients}
    try:
        for _ in range(repeats):
            for client in clients:
                found[client].append(measure(client, server, 1, work))
    finally:
        server.close()
    medians: dict[str, Sample] = {}
    for client, samples in found.items():
        samples.sort(key=lambda s: s.cpu)
        medians[client] = samples[len(samples) // 2]
        progress(
            f"  start-up (1 job): {client:<12} {medians[client].cpu:5.2f} CPU s "
            f"{medians[client].wall:5.2f} s wall {medians[client].rss_mb:6.1f} MB"
        )
    return medians


def run_scenario(
    scenario: Scenario,
    clients: Sequence[str],
    repeats: int,
    work: Workdir,
    startup: dict[str, Sample],
    progress: Callable[[str], None],
) -> tuple[list[Summary], list[Sample]]:
    """Every client ``repeats`` times against one server process, in rotating order."""
    server = Server(scenario.server, scenario.latency)
    samples: dict[str, list[Sample]] = {c: [] for c in clients}
    try:
        # Warm the server and the page cache, so that the first client measured pays for neither.
        measure("bare", server, min(500, scenario.jobs), work)
        for rep in range(repeats):
            shift = rep % len(clients)
            for client in [*clients[shift:], *clients[:shift]]:
                jobs = scenario.sdk_jobs if client.startswith("sdk") else scenario.jobs
                sample = measure(client, server, jobs, work)
                samples[client].append(sample)
                flag = "" if sample.valid else f"  INVALID: {sample.problem}"
                progress(
                    f"  {scenario.title}, run {rep + 1}/{repeats}: {client:<12} "
                    f"{sample.rate:8.1f} jobs/s  {sample.cpu_per_k:5.2f} CPU s/1k  "
                    f"{sample.rss_mb:6.1f} MB{flag}"
                )
    finally:
        server.close()
    flat = [s for group in samples.values() for s in group]
    return [summarise(samples[c], startup) for c in clients], flat


# -- the memory benchmark -----------------------------------------------------------------------


@dataclass
class MemoryResult:
    what: str
    entries: int
    valid: bool
    problem: str
    wall: float
    cpu: float
    rss_mb: float
    seconds: float | None = None  # measured inside the process (read_ledger only)


_EXPANDED = re.compile(r"expanded (\d+) videos")
_DRY_RUN = re.compile(r"dry run: (\d+) jobs would be submitted, (\d+) already submitted")


def _memory_run(
    what: str, entries: int, command: Sequence[str], check: Callable[[Child], str]
) -> MemoryResult:
    child = run_child(command, env=client_env(), capture=what == "read_ledger")
    problem = f"exit code {child.code}: {_tail(child.stderr)}" if child.code else check(child)
    seconds = None
    if what == "read_ledger" and not child.code:
        seconds = float(orjson.loads(child.stdout)["elapsed"])
    return MemoryResult(
        what=what,
        entries=entries,
        valid=not problem,
        problem=problem,
        wall=child.wall,
        cpu=child.cpu,
        rss_mb=child.rss_mb,
        seconds=seconds,
    )


def _expect(pattern: re.Pattern[str], *values: int) -> Callable[[Child], str]:
    def check(child: Child) -> str:
        found = pattern.search(child.stderr)
        if not found or tuple(int(g) for g in found.groups()) != values:
            return f"expected {values} in the log: {_tail(child.stderr, 2)}"
        return ""

    return check


def _ledger_check(rows: int) -> Callable[[Child], str]:
    def check(child: Child) -> str:
        report = orjson.loads(child.stdout)
        if report["rows"] != rows or report["done"] != rows or report["warnings"]:
            return f"read_ledger read {report}, expected {rows} rows done"
        return ""

    return check


def run_memory(
    sizes: Sequence[int], root: Path, progress: Callable[[str], None]
) -> list[MemoryResult]:
    results: list[MemoryResult] = []

    def record(result: MemoryResult) -> None:
        results.append(result)
        flag = "" if result.valid else f"  INVALID: {result.problem}"
        progress(
            f"  memory: {result.what:<20} {result.entries:>9,} entries  {result.wall:6.1f} s  "
            f"{result.rss_mb:6.1f} MB{flag}"
        )

    baseline = run_child([PYTHON, "-c", "import batchsubmit.cli"], capture=False)
    record(
        MemoryResult(
            "import batchsubmit.cli",
            0,
            baseline.code == 0,
            "",
            baseline.wall,
            baseline.cpu,
            baseline.rss_mb,
        )
    )
    service_url = workload.tasks_url(workload.MANIFEST_ENDPOINT)
    batchsubmit = [PYTHON, "-m", "batchsubmit"]
    for size in sizes:
        listing = root / f"memory-listing-{size}.txt"
        manifest = root / f"memory-{size}.toml"
        ledger = root / f"memory-ledger-{size}.csv"
        workload.write_listing(listing, size)
        workload.write_manifest(manifest, listing)
        record(
            _memory_run(
                "expand", size, [*batchsubmit, "expand", str(manifest)], _expect(_EXPANDED, size)
            )
        )
        absent = root / f"absent-{size}.csv"
        record(
            _memory_run(
                "dry-run",
                size,
                [*batchsubmit, "submit", str(manifest), "--dry-run", "--results", str(absent)],
                _expect(_DRY_RUN, size, 0),
            )
        )
        workload.write_ledger(ledger, size, service_url)
        record(
            _memory_run(
                "read_ledger",
                size,
                [PYTHON, "-m", "tests.benchmarks.ledger_read", str(ledger), service_url],
                _ledger_check(size),
            )
        )
        record(
            _memory_run(
                "dry-run with ledger",
                size,
                [*batchsubmit, "submit", str(manifest), "--dry-run", "--results", str(ledger)],
                _expect(_DRY_RUN, 0, size),
            )
        )
        for path in (listing, manifest, ledger):
            path.unlink()
    return results


# -- rendering ----------------------------------------------------------------------------------


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


def render_startup(startup: dict[str, Sample]) -> list[str]:
    lines = [
        "Start-up: each client creating 1 job (interpreter, imports, one call, exit)",
        f"  {'client':<44} {'wall s':>7} {'CPU s':>7} {'RSS MB':>7}",
    ]
    for client, s in startup.items():
        mark = "" if s.valid else f"   INVALID: {s.problem}"
        lines.append(f"  {CLIENTS[client]:<44} {s.wall:7.2f} {s.cpu:7.2f} {s.rss_mb:7.1f}{mark}")
    return lines


def render_network(summaries: list[Summary], scenario: Scenario) -> list[str]:
    ideal = CONCURRENCY / scenario.latency if scenario.latency > 0 else None
    lines = [
        f"{scenario.title}: {CONCURRENCY} in flight, {scenario.jobs} jobs per run "
        f"(SDK: {scenario.sdk_jobs}), median of {summaries[0].runs}"
        + (f"; ideal {ideal:.0f} jobs/s" if ideal else ""),
        f"  {'client':<44} {'jobs/s':>7} {'wall s':>7} {'CPU s/1k':>9} {'(net)':>6} "
        f"{'RSS MB':>7} {'server CPU':>10}  jobs/s of each run",
    ]
    for s in summaries:
        mark = "" if s.valid else "   INVALID: " + "; ".join(s.problems)
        mark = f"  ({s.note}){mark}" if s.note else mark
        net = f"{s.cpu_per_k_net:6.3f}" if s.cpu_per_k_net is not None else f"{'-':>6}"
        lines.append(
            f"  {CLIENTS[s.client]:<44} {s.rate:7.0f} {s.wall:7.2f} {s.cpu_per_k:9.3f} {net} "
            f"{s.rss_mb:7.1f} {s.server_busy:10.0%}  {s.rates}{mark}"
        )
    by = {s.client: s for s in summaries}
    e2e = by.get("batchsubmit")
    if e2e is not None:
        for other in ("bare", "duties", "sdk", "sdk-default"):
            o = by.get(other)
            if o is None or not (o.rate and o.cpu_per_k and o.rss_mb):
                continue
            lines.append(
                f"  ratio batchsubmit / {other:<12} jobs/s {e2e.rate / o.rate:5.2f}   "
                f"CPU/1k {e2e.cpu_per_k / o.cpu_per_k:5.2f}   RSS {e2e.rss_mb / o.rss_mb:5.2f}"
                + _paired(e2e.rates, o.rates)
            )
        if ideal:
            lines.append(
                "  share of ideal        "
                + "   ".join(f"{c} {by[c].rate / ideal:.0%}" for c in by if by[c].rate)
            )
    return lines


def _paired(ours: list[float], theirs: list[float]) -> str:
    """The ratio within each round (the two runs were next to each other in time), to show
    how much of a ratio of medians is the machine's drift."""
    ratios = [a / b for a, b in zip(ours, theirs, strict=True) if b]
    if len(ratios) < 2:
        return ""
    shown = ", ".join(f"{r:.2f}" for r in ratios)
    return f"   per round [{shown}], median {statistics.median(ratios):.2f}"


@dataclass
class Check:
    name: str
    measured: str
    target: str
    ok: bool | None
    basis: str


def network_checks(summaries: list[Summary], scenario: Scenario) -> list[Check]:
    by = {s.client: s for s in summaries}
    e2e = by.get("batchsubmit")
    if e2e is None:
        return []
    where = scenario.title
    checks: list[Check] = []

    def valid(*names: str) -> bool:
        return all(by[n].valid for n in names)

    if scenario.latency == 0:
        # Against the bare loop on the minimal server only: the emulator caps the bare loop.
        if "bare" in by and scenario.server == "minimal":
            ratio = e2e.rate / by["bare"].rate if by["bare"].rate else 0.0
            checks.append(
                Check(
                    "end to end / bare loop, jobs/s",
                    f"{ratio:.2f} ({e2e.rate:.0f}/{by['bare'].rate:.0f})",
                    f">= {TARGETS['vs_bare']}",
                    ratio >= TARGETS["vs_bare"] if valid("batchsubmit", "bare") else None,
                    where,
                )
            )
            bare = by["bare"]
            if e2e.cpu_per_k_net is not None and bare.cpu_per_k_net:
                cpu_ratio = e2e.cpu_per_k_net / bare.cpu_per_k_net
                checks.append(
                    Check(
                        "end to end / bare loop, CPU per job (net)",
                        f"{cpu_ratio:.2f}x ({e2e.cpu_per_k_net:.3f}/{bare.cpu_per_k_net:.3f})",
                        f"<= {TARGETS['cpu_vs_bare']}x",
                        cpu_ratio <= TARGETS["cpu_vs_bare"]
                        if valid("batchsubmit", "bare")
                        else None,
                        f"{where}, CPU-s per 1,000 jobs net of start-up",
                    )
                )
            floor = by.get("duties")
            if floor is not None and bare.cpu_per_k_net and floor.cpu_per_k_net:
                # Not a target: how much of the CPU ratio the duties alone account for.
                checks.append(
                    Check(
                        "(reference) duty floor / bare loop, CPU per job (net)",
                        f"{floor.cpu_per_k_net / bare.cpu_per_k_net:.2f}x"
                        f" ({floor.cpu_per_k_net:.3f}/{bare.cpu_per_k_net:.3f})",
                        "-",
                        None,
                        f"{where}: journal, rows and a checking pass, written plainly",
                    )
                )
        for sdk in ("sdk", "sdk-default"):
            if sdk in by:
                ratio = e2e.rate / by[sdk].rate if by[sdk].rate else 0.0
                checks.append(
                    Check(
                        f"end to end / {sdk}, jobs/s",
                        f"{ratio:.2f} ({e2e.rate:.0f}/{by[sdk].rate:.0f})",
                        f">= {TARGETS['vs_sdk']}",
                        ratio >= TARGETS["vs_sdk"] if valid("batchsubmit", sdk) else None,
                        where,
                    )
                )
    else:
        ideal = CONCURRENCY / scenario.latency
        share = e2e.rate / ideal
        checks.append(
            Check(
                "end to end / ideal in-flight rate",
                f"{share:.1%} ({e2e.rate:.0f}/{ideal:.0f})",
                f">= {TARGETS['of_ideal']:.0%}",
                share >= TARGETS["of_ideal"] if e2e.valid else None,
                where,
            )
        )
        if "bare" in by:
            share = by["bare"].rate / ideal
            checks.append(
                Check(
                    "(reference) bare loop / ideal rate",
                    f"{share:.1%} ({by['bare'].rate:.0f}/{ideal:.0f})",
                    "-",
                    None,
                    where,
                )
            )
    net = f", {e2e.cpu_per_k_net:.3f} net" if e2e.cpu_per_k_net is not None else ""
    checks.append(
        Check(
            "end to end CPU-seconds per 1,000 jobs",
            f"{e2e.cpu_per_k:.3f}{net}",
            f"<= {TARGETS['cpu_per_k']}",
            e2e.cpu_per_k <= TARGETS["cpu_per_k"] if e2e.valid else None,
            f"{where}, {e2e.jobs} jobs, whole process",
        )
    )
    return checks


def render_memory(results: list[MemoryResult]) -> list[str]:
    lines = [
        "Memory: one process each, stdout to /dev/null",
        f"  {'what':<24} {'entries':>10} {'wall s':>8} {'CPU s':>7} {'peak RSS MB':>12}",
    ]
    for r in results:
        inside = f"   (read_ledger itself: {r.seconds:.2f} s)" if r.seconds is not None else ""
        mark = "" if r.valid else f"   INVALID: {r.problem}"
        lines.append(
            f"  {r.what:<24} {r.entries:>10,} {r.wall:8.2f} {r.cpu:7.2f} {r.rss_mb:12.1f}"
            f"{inside}{mark}"
        )
    return lines


def memory_checks(results: list[MemoryResult]) -> list[Check]:
    checks: list[Check] = []
    by = {(r.what, r.entries): r for r in results}
    sizes = sorted({r.entries for r in results if r.entries})
    largest = sizes[-1] if sizes else 0
    expand = by.get(("expand", 1_000_000))
    checks.append(
        Check(
            "expand over 1,000,000 entries: peak RSS MB",
            f"{expand.rss_mb:.1f}" if expand else "not run",
            f"< {TARGETS['expand_rss_mb']:g}",
            expand.rss_mb < TARGETS["expand_rss_mb"] if expand and expand.valid else None,
            "batchsubmit expand, stdout to /dev/null",
        )
    )
    if len(sizes) >= 2:
        small = sizes[0]
        for what in ("expand", "dry-run", "read_ledger", "dry-run with ledger"):
            a, b = by.get((what, small)), by.get((what, largest))
            if a is None or b is None:
                continue
            per_entry = (b.rss_mb - a.rss_mb) * 1024 * 1024 / (largest - small)
            flat = per_entry < 8  # bytes per entry: noise, not a structure per entry
            checks.append(
                Check(
                    f"{what}: RSS growth {small:,} -> {largest:,} entries",
                    f"+{b.rss_mb - a.rss_mb:.1f} MB ({per_entry:.0f} B/entry)",
                    "flat" if what in ("expand", "dry-run") else "-",
                    flat if what in ("expand", "dry-run") else None,
                    "peak RSS difference"
                    + (
                        "" if what in ("expand", "dry-run") else "; the ledger keeps a hash per row"
                    ),
                )
            )
    return checks


def render_checks(checks: list[Check]) -> list[str]:
    width = max((len(c.name) for c in checks), default=10)
    lines = ["Targets"]
    for c in checks:
        lines.append(
            f"  {_verdict(c.ok):<4}  {c.name:<{width}}  {c.measured:>24}  target {c.target:<6}"
            f"  [{c.basis}]"
        )
    return lines


# -- entry point --------------------------------------------------------------------------------


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="batchsubmit's benchmarks: throughput, CPU and memory, side by side."
    )
    parser.add_argument("--quick", action="store_true", help="fewer jobs, one run, small listings")
    parser.add_argument("--jobs", type=int, help="jobs per run at 0 ms (default 4000)")
    parser.add_argument("--slow-jobs", type=int, help="jobs per run with latency (default 10000)")
    parser.add_argument(
        "--sdk-jobs", type=int, help="jobs per SDK run (default: a quarter: it is slower)"
    )
    parser.add_argument("--repeats", type=int, help="runs per figure, median taken (default 3)")
    parser.add_argument(
        "--clients",
        default="batchsubmit,bare,duties,sdk,sdk-default",
        help="comma-separated, of: " + ", ".join(CLIENTS),
    )
    parser.add_argument(
        "--scenarios",
        default=DEFAULT_SCENARIOS,
        help="comma-separated latency_ms:server pairs, server 'minimal' or 'emulator' "
        f"(default {DEFAULT_SCENARIOS})",
    )
    parser.add_argument(
        "--memory-sizes", help="listing sizes for the memory benchmark (default 100000,1000000)"
    )
    parser.add_argument("--skip-network", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument(
        "--skip-pool", action="store_true", help="skip the in-process pool overhead benchmark"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="PATH",
        help="also run batchsubmit once at 0 ms under cProfile, stats to PATH",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="run servers on the last CPU and clients on the others: steadier figures on a "
        "shared machine (the client cannot spill onto the server's CPU, nor the server onto its)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every figure as JSON")
    args = parser.parse_args(argv)
    unknown = set(args.clients.split(",")) - CLIENTS.keys()
    if unknown:
        parser.error(f"unknown clients: {', '.join(sorted(unknown))}")
    return args


def _scenarios(args: argparse.Namespace) -> list[Scenario]:
    jobs = args.jobs or (1000 if args.quick else 4000)
    slow_jobs = args.slow_jobs or (1500 if args.quick else 10_000)
    found = []
    for item in args.scenarios.split(","):
        latency_ms, _, server = item.partition(":")
        latency = float(latency_ms) / 1000
        n = jobs if latency == 0 else slow_jobs
        found.append(Scenario(server or "emulator", latency, n, args.sdk_jobs or max(n // 4, 1)))
    return found


def _profile(path: Path, jobs: int, work: Workdir, say: Callable[[str], None]) -> None:
    """batchsubmit once under cProfile at 0 ms (minimal server); the top functions to stderr."""
    import pstats

    server = Server("minimal", 0.0)
    try:
        results = work.fresh("profiled").with_suffix(".csv")
        command = [
            *(PYTHON, "-m", "cProfile", "-o", str(path)),
            *("-m", "batchsubmit", "submit", str(work.manifest(jobs)), "--endpoint", server.url),
            *("--rate", "0", "--concurrency", str(CONCURRENCY), "--results", str(results)),
        ]
        child = run_child(command, env=client_env())
        say(f"cProfile of batchsubmit submit, {jobs} jobs at 0 ms (exit {child.code}), by tottime:")
        stats = pstats.Stats(str(path), stream=sys.stderr)
        stats.sort_stats("tottime").print_stats(30)
    finally:
        server.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    cpus = sorted(os.sched_getaffinity(0))
    if args.pin and len(cpus) >= 2:
        AFFINITY.update(server={cpus[-1]}, client=set(cpus[:-1]))
    repeats = args.repeats or (1 if args.quick else 3)
    clients = args.clients.split(",")
    sizes = (
        [int(s) for s in args.memory_sizes.split(",")]
        if args.memory_sizes
        else ([20_000, 100_000] if args.quick else [100_000, 1_000_000])
    )
    started = time.perf_counter()

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    report: list[str] = []
    checks: list[Check] = []
    revision = _revision()
    pinned = f", servers pinned to CPU {cpus[-1]}" if AFFINITY else ""
    report.append(
        f"batchsubmit {revision}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
        f"{pinned}, event loop {_event_loop()}\n"
    )
    data: dict[str, Any] = {
        "revision": revision,
        "python": sys.version,
        "cpus": os.cpu_count(),
        "repeats": repeats,
    }
    with _workspace() as root:
        work = Workdir(root)
        if not args.skip_network:
            problem = check_bodies(root)
            if problem:
                say(f"the clients do not send the same bodies: {problem}")
                return 2
            say("bodies checked: batchsubmit, the bare loop and the SDK send the same creates")
            startup = measure_startup(clients, repeats, work, say)
            report += [*render_startup(startup), ""]
            data["startup"] = {c: asdict(s) for c, s in startup.items()}
            data["network"] = []
            for scenario in _scenarios(args):
                summaries, samples = run_scenario(scenario, clients, repeats, work, startup, say)
                report += [*render_network(summaries, scenario), ""]
                checks += network_checks(summaries, scenario)
                data["network"].append(
                    {
                        "scenario": asdict(scenario),
                        "summaries": [asdict(s) for s in summaries],
                        "samples": [asdict(s) | {"cpu_per_k": s.cpu_per_k} for s in samples],
                    }
                )
        if not args.skip_pool:
            pool_lines, pool_data = run_pool_overhead(args.quick, say)
            report += [*pool_lines, ""]
            data["pool_overhead"] = pool_data
        if args.profile:
            _profile(args.profile, args.jobs or 4000, work, say)
        if not args.skip_memory:
            memory = run_memory(sizes, root, say)
            report += [*render_memory(memory), ""]
            checks += memory_checks(memory)
            data["memory"] = [asdict(m) for m in memory]
    report += render_checks(checks)
    elapsed = time.perf_counter() - started
    report.append(f"\n(benchmark took {elapsed:.0f} s on {os.cpu_count()} CPUs)")
    print("\n".join(report))
    data["checks"] = [asdict(c) for c in checks]
    data["elapsed"] = elapsed
    if args.json:
        args.json.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
    invalid = any(not s["valid"] for n in data.get("network", []) for s in n["summaries"])
    invalid |= any(not s["valid"] for s in data.get("startup", {}).values())
    invalid |= any(not m["valid"] for m in data.get("memory", []))
    return 2 if invalid else 0


def _event_loop() -> str:
    """The event loop ``batchsubmit`` runs on here (uvloop if the ``fast`` extra is installed)."""
    from batchsubmit.engine.loop import loop_name

    return loop_name()


def _revision() -> str:
    """The commit measured, and whether batchsubmit/ had changes not yet committed."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "batchsubmit"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "(no git)"
    return f"{head or '(no commit)'}{' + uncommitted changes in batchsubmit/' if dirty else ''}"


def run_pool_overhead(quick: bool, say: Callable[[str], None]) -> tuple[list[str], Any]:
    """``pool_overhead.py`` in its own process; its failure (an interface changed) is reported."""
    jobs, repeats = ("5000", "2") if quick else ("10000", "3")
    command = [PYTHON, "-m", "tests.benchmarks.pool_overhead", "--jobs", jobs, "--repeats", repeats]
    say("  pool overhead, in process ...")
    child = run_child([*command, "--json"], env=client_env())
    if child.code:
        return [f"Pool overhead: not measured ({_tail(child.stderr, 2)})"], None
    from tests.benchmarks.pool_overhead import render

    report = orjson.loads(child.stdout)
    return render(report).splitlines(), report


@contextlib.contextmanager
def _workspace() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="batchsubmit-bench-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def check_bodies(root: Path) -> str:
    """Whether batchsubmit (via ``expand``), the bare loop and the SDK build the same bodies."""
    count = 5
    listing, manifest = root / "check-listing.txt", root / "check.toml"
    workload.write_listing(listing, count)
    workload.write_manifest(manifest, listing)
    child = run_child([PYTHON, "-m", "batchsubmit", "expand", str(manifest)], env=client_env())
    if child.code:
        return f"batchsubmit expand failed: {_tail(child.stderr)}"
    expanded = [orjson.loads(line)["body"] for line in child.stdout.splitlines()]
    code = (
        "import orjson\n"
        "from tests.benchmarks import sdk_client\n"
        "from huaweicloudsdkcore.utils.http_utils import sanitize_for_serialization\n"
        f"print(orjson.dumps([sanitize_for_serialization(sdk_client.request_for(i).body)"
        f" for i in range({count})]).decode())\n"
    )
    sdk = run_child([PYTHON, "-c", code], env=client_env())
    if sdk.code:
        return f"the SDK's request could not be built: {_tail(sdk.stderr)}"
    sdk_bodies = orjson.loads(sdk.stdout)
    for i in range(count):
        bare = workload.body(i)
        if orjson.dumps(expanded[i]) != bare:
            return f"job {i}: batchsubmit {expanded[i]} != bare {bare!r}"
        if sdk_bodies[i] != orjson.loads(bare):
            return f"job {i}: SDK {sdk_bodies[i]} != {bare!r}"
    return ""


if __name__ == "__main__":
    sys.exit(main())
