"""Chaos test of batchsubmit's core promises, as a nightly cron would exercise them.

    python -m tests.chaos.run_chaos --seeds 1 2 3 --iterations 50 [--workdir /tmp/chaos] [--keep]

Each iteration (seeded: ``seed`` and its number give every draw) starts the project's emulator
(``tests/chaos/observed_emulator.py``: ``batchsubmit emulator`` as the CLI runs it, plus an unsigned
``/_chaos/truth`` view and a judge of every DELETE against the follow record on disk) with
drawn faults, then plays one to three "nights" of submit / status --follow --collect / prune /
submit --make-room, as subprocesses, SIGKILLing or SIGTERMing them at random moments and
sometimes running two at once on the same results file; then runs them again to completion and
checks the invariants against the emulator's truth:

  * no video has two jobs (gone ones included);
  * after the clean final run every created job has its row, every video a submitted row;
  * no job is deleted before the follow record holds its final state (and its collected
    hosting result) -- judged by the emulator at the moment the DELETE arrives;
  * every exit code is one README defines; no traceback on stderr; the SK in no output or file.

Violations are printed as JSON lines (seed, iteration, what, the command log) and appended to
``WORKDIR/violations.jsonl``. Exit 1 if any.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers import write_manifest

HERE = Path(__file__).resolve().parent
PY = sys.executable
SK = "batchsubmit-emulator-throwaway-sk-not-a-secret"
AK = "BATCHSUBMITEMULATORAK0"
PROJECT = "0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e"
DEFINED = {0, 1, 2, 3, 4, 75, 130, 141, 143}
SUSPECT = {2}  # defined, but never expected here: a damaged results file, journal or record


def keys(start: int, count: int) -> list[str]:
    out = []
    for i in range(start, start + count):
        kind = i % 4
        if kind == 0:
            out.append(f"cams/gate {i % 7}/clip {i:05d}.mp4")
        elif kind == 1:
            out.append(f"cams/lobby/CLIP_{i:05d}.MP4")
        elif kind == 2:
            out.append(f"cams/entrée/vidéo-{i:05d} (copy).mov")
        else:
            out.append(f"cams/yard/{i:05d}#take,1.mkv")
    return out


def listing_text(all_keys: list[str]) -> str:
    lines = ["Start at 2026-11-27 02:00:01.123 +0800 CST", "Folder list:", "obs://in-bucket/cams/"]
    lines += ["", "Object list:"] + [f"obs://in-bucket/{k}" for k in all_keys]
    lines += ["", "Folder number is: 1", f"File number is: {len(all_keys)}", ""]
    return "\n".join(lines)


@dataclass
class Run:
    label: str
    argv: list[str]
    signal_plan: str
    rc: int | None = None
    seconds: float = 0.0
    stderr_tail: str = ""


@dataclass
class Iteration:
    seed: int
    number: int
    root: Path
    rng: random.Random
    url: str = ""
    emulator: subprocess.Popen[bytes] | None = None
    log: list[Run] = field(default_factory=list)
    violations: list[dict[str, Any]] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    notes: list[dict[str, Any]] = field(default_factory=list)
    summaries: int = 0
    jsonl: bool = False

    # -- set-up ------------------------------------------------------------------------------

    def start_emulator(self) -> None:
        r = self.rng
        self.jsonl = r.random() < 0.3
        lag = r.choice([0.0, 0.0, 0.1, 0.25])
        self.options["settle"] = 0.5 if lag else r.choice([0.0, 0.2, 0.5])
        faults = [
            "--lost", str(r.choice([0, 0, 0.05, 0.15, 0.3])),
            "--error-after-create", str(r.choice([0, 0, 0.05, 0.15])),
            "--p503", str(r.choice([0, 0, 0.05, 0.2])),
            "--slow", str(r.choice([0, 0, 0.05, 0.15])),
            "--slow-seconds", str(r.choice([0.3, 1.5, 3.0])),
            "--list-lag", str(lag),
            "--time-scale", str(r.choice([40, 80, 150])),
            "--p-failed", str(r.choice([0, 0, 0.1, 0.2])),
            "--p-vanish", str(r.choice([0, 0, 0.05, 0.1])),
            "--p-hosting-late", str(r.choice([0, 0.2, 0.5])),
            "--p-create-failed", str(r.choice([0, 0, 0.05])),
            "--p-start-failed", str(r.choice([0, 0, 0.05])),
            "--p-unknown-state", str(r.choice([0, 0, 0.2])),
            "--p-hosting-too-large", str(r.choice([0, 0, 0.1])),
            "--seed", str(r.randrange(1 << 30)),
        ]  # fmt: skip
        quota = r.choice([0, 0, 0, 1])
        self.options["hosting"] = r.random() < 0.5
        self.options["videos"] = r.randint(10, 50)
        if quota:
            # Tight enough that make-room must prune: below the night's total, above one batch.
            quota = max(6, int(self.options["videos"] * r.uniform(0.6, 1.2)))
        self.options["quota"] = quota
        faults += ["--quota", str(quota)]
        self.faults = faults
        env = dict(os.environ)
        env["CHAOS_FOLLOW"] = str(self.results.with_name(self.results.name + ".follow.jsonl"))
        env["CHAOS_COLLECT"] = str(self.collect)
        out = self.root / "emulator.out"
        self.emulator = subprocess.Popen(
            [PY, str(HERE / "observed_emulator.py"), "--port", "0", *faults],
            stdout=out.open("wb"),
            stderr=(self.root / "emulator.err").open("wb"),
            env=env,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            text = out.read_text() if out.exists() else ""
            for word in text.split():
                if word.startswith("http://127.0.0.1:"):
                    self.url = word
                    return
            time.sleep(0.05)
        raise RuntimeError("emulator did not start")

    def stop_emulator(self) -> None:
        if self.emulator is not None:
            self.emulator.send_signal(signal.SIGTERM)
            try:
                self.emulator.wait(10)
            except subprocess.TimeoutExpired:
                self.emulator.kill()
                self.emulator.wait()

    @property
    def results(self) -> Path:
        return self.root / ("night.results.jsonl" if self.jsonl else "night.results.csv")

    @property
    def collect(self) -> Path:
        return self.root / "collected"

    @property
    def manifest(self) -> Path:
        return self.root / "night.toml"

    def write_manifest(self) -> None:
        extra = "\n[job.body.output.hosting]\n" if self.options["hosting"] else ""
        write_manifest(self.root, [], name="night", extra=extra)
        self.listed: list[str] = []
        self.grow(self.options["videos"])

    def grow(self, count: int) -> None:
        self.listed += keys(len(self.listed), count)
        (self.root / "listing.txt").write_text(listing_text(self.listed), encoding="utf-8")

    def truth(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/_chaos/truth", timeout=10) as answer:
            doc: dict[str, Any] = json.loads(answer.read())
            return doc

    # -- commands -----------------------------------------------------------------------------

    def common(self) -> list[str]:
        rate = self.rng.choice(["0", "0", "20", "50"])  # paced runs last long enough to be hit
        return [
            "--endpoint",
            self.url,
            "--rate",
            rate,
            "--concurrency",
            str(self.rng.choice([4, 8, 16])),
        ]

    def submit_argv(self, *, final: bool = False) -> list[str]:
        r = self.rng
        argv = ["submit", str(self.manifest), "--results", str(self.results), *self.common()]
        argv += ["--settle", str(self.options["settle"]), "--lookups", "3", "--timeout", "1"]
        if self.options["quota"]:
            argv += ["--make-room", "--quota", str(self.options["quota"])]
        if not final and r.random() < 0.3:
            argv += [
                "--follow",
                "--interval",
                "0.2",
                "--deadline",
                "8s",
                "--collect",
                str(self.collect),
            ]
        if not final and r.random() < 0.2:
            argv += ["--max-jobs", str(r.randint(1, 10))]
        if r.random() < 0.3:
            argv.append("-q")
        self.summaries += 1
        argv += ["--summary", str(self.root / f"submit{self.summaries:03d}.summary.json")]
        return argv

    def status_argv(self, *, deadline: str = "6s") -> list[str]:
        argv = ["status", str(self.results), *self.common(), "--follow", "--interval", "0.2"]
        argv += ["--deadline", deadline]
        if deadline != "6s" or self.rng.random() < 0.7:  # the final run always collects
            argv += ["--collect", str(self.collect)]
        if self.rng.random() < 0.3:
            argv.append("-q")
        return argv

    def reconcile_argv(self) -> list[str]:
        return ["reconcile", str(self.results), *self.common()]

    def prune_argv(self) -> list[str]:
        argv = ["prune", str(self.results), *self.common(), "--older-than", "0"]
        if self.rng.random() < 0.3:
            argv += ["--keep", str(self.rng.randint(0, 5))]
        return argv

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HUAWEICLOUD_SDK_")}
        env.update(
            HUAWEICLOUD_SDK_AK=AK,
            HUAWEICLOUD_SDK_SK=SK,
            HUAWEICLOUD_SDK_PROJECT_ID=PROJECT,
            PYTHONUNBUFFERED="1",
        )
        return env

    def launch(
        self, label: str, argv: list[str], plan: str
    ) -> tuple[Run, subprocess.Popen[bytes], float]:
        run = Run(label, argv, plan)
        n = len(self.log)
        out = (self.root / f"cmd{n:03d}.out").open("wb")
        err = (self.root / f"cmd{n:03d}.err").open("wb")
        proc = subprocess.Popen(
            [PY, "-m", "batchsubmit", *argv], stdout=out, stderr=err, env=self.env(), cwd=self.root
        )
        run.stderr_tail = str(self.root / f"cmd{n:03d}.err")
        self.log.append(run)
        return run, proc, time.monotonic()

    def finish(self, run: Run, proc: subprocess.Popen[bytes], started: float) -> None:
        plan = run.signal_plan
        if plan != "none":
            kind, _, delay = plan.partition("@")
            deadline = started + float(delay)
            while time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.01)
            if proc.poll() is None:
                if kind == "KILL":
                    proc.send_signal(signal.SIGKILL)
                elif kind == "TERM":
                    proc.send_signal(signal.SIGTERM)
                elif kind == "TERM2":
                    proc.send_signal(signal.SIGTERM)
                    time.sleep(0.05)
                    if proc.poll() is None:
                        proc.send_signal(signal.SIGTERM)
            else:
                run.signal_plan += " (finished first)"
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.violation("hang", run=run.label, argv=run.argv)
            proc.kill()
            proc.wait()
        run.rc = proc.returncode
        run.seconds = round(time.monotonic() - started, 2)
        self.judge(run)

    def judge(self, run: Run) -> None:
        err = Path(run.stderr_tail).read_text(errors="replace")
        out = Path(run.stderr_tail[:-4] + ".out").read_text(errors="replace")
        rc = run.rc
        killed = run.signal_plan.startswith("KILL") and "finished first" not in run.signal_plan
        if rc == -9 and killed:
            pass
        elif rc == -15 and run.signal_plan.startswith("TERM2"):
            # README: "A second signal stops at once"; its exit code is not said. Counted apart.
            self.notes.append({"what": "second-sigterm-default-death", "run": run.label})
        elif (
            rc == -15
            and run.signal_plan.startswith("TERM")
            and "finished first" not in run.signal_plan
        ):
            done = any(w in err for w in (" done: ", "to submit", "pruned"))
            self.violation(
                "sigterm-default-death",
                run=run.label,
                rc=rc,
                plan=run.signal_plan,
                seconds=run.seconds,
                after_final_line=done,
                stderr=err[-300:],
            )
        elif rc not in DEFINED:
            self.violation(
                "undefined-exit-code", run=run.label, rc=rc, argv=run.argv, stderr=err[-2000:]
            )
        elif rc in SUSPECT and "no such results file" in err:
            pass  # the first submit was stopped before it wrote the file: status has nothing
        elif rc in SUSPECT:
            self.violation(
                "exit-2-after-chaos", run=run.label, rc=rc, argv=run.argv, stderr=err[-2000:]
            )
        if "Traceback (most recent call last)" in err:
            self.violation("traceback", run=run.label, rc=rc, argv=run.argv, stderr=err[-3000:])
        if SK in err or SK in out:
            self.violation("secret-in-output", run=run.label)
        signalled = run.signal_plan != "none" and "finished first" not in run.signal_plan
        if run.argv[0] == "submit" and not signalled and rc == 0:
            self.judge_counts(run)

    def judge_counts(self, run: Run) -> None:
        path = Path(run.argv[run.argv.index("--summary") + 1])
        try:
            summary = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            self.violation("no-summary-after-exit-0", run=run.label, error=repr(exc))
            return
        counts = summary["counts"]
        videos = len(self.listed)
        added = sum(counts[k] for k in ("submitted", "skipped", "failed", "unknown", "deferred"))
        if added != videos:
            self.violation("counts-do-not-add-up", run=run.label, counts=counts, videos=videos)
        if (
            "--follow" not in run.argv
            and counts["deferred"] == 0
            and not counts["failed"]
            and not counts["unknown"]
        ):
            missing = self.missing()
            if missing:
                self.violation(
                    "exit-0-but-video-without-row",
                    run=run.label,
                    missing=missing[:5],
                    counts=counts,
                )

    def one(self, label: str, argv: list[str], plan: str = "none") -> Run:
        run, proc, started = self.launch(label, argv, plan)
        self.finish(run, proc, started)
        return run

    def two(self, a: tuple[str, list[str], str], b: tuple[str, list[str], str]) -> None:
        first = self.launch(*a)
        time.sleep(self.rng.uniform(0, 0.6))
        second = self.launch(*b)
        import threading

        threads = [threading.Thread(target=self.finish, args=item) for item in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def plan(self) -> str:
        r = self.rng.random()
        delay = round(0.4 + self.rng.expovariate(1 / 0.5), 2)  # startup is ~0.4 s
        if r < 0.3:
            return "none"
        if r < 0.65:
            return f"KILL@{delay}"
        if r < 0.92:
            return f"TERM@{delay}"
        return f"TERM2@{delay}"

    def violation(self, what: str, **detail: Any) -> None:
        self.violations.append({"what": what, **detail})

    # -- one iteration ------------------------------------------------------------------------

    def play(self) -> None:
        self.start_emulator()
        try:
            self.write_manifest()
            nights = self.rng.randint(1, 3)
            for night in range(nights):
                if night:
                    self.grow(self.rng.randint(0, 8))
                steps = ["status", "prune", "submit"] if night else ["submit"]
                if self.rng.random() < 0.15:
                    steps.insert(self.rng.randrange(len(steps) + 1), "reconcile")
                for step in steps:
                    argv = {
                        "status": self.status_argv,
                        "prune": self.prune_argv,
                        "submit": self.submit_argv,
                        "reconcile": self.reconcile_argv,
                    }[step]()
                    if self.rng.random() < 0.2:
                        other = self.rng.choice(["status", "prune", "submit"])
                        o_argv = {
                            "status": self.status_argv,
                            "prune": self.prune_argv,
                            "submit": self.submit_argv,
                        }[other]()
                        self.two(
                            (f"n{night}-{step}", argv, self.plan()),
                            (f"n{night}-{other}*", o_argv, self.plan()),
                        )
                    else:
                        self.one(f"n{night}-{step}", argv, self.plan())
            self.final()
            self.check()
        finally:
            self.stop_emulator()

    def final(self) -> None:
        """Run to completion: submit until every video has its row, status until final, prune."""
        done = False
        for round_ in range(10):
            run = self.one(f"final{round_}-submit", self.submit_argv(final=True))
            status = self.one(f"final{round_}-status", self.status_argv(deadline="20s"))
            self.one(
                f"final{round_}-prune",
                self.prune_argv()
                if self.options["quota"]
                else ["prune", str(self.results), *self.common(), "--older-than", "0"],
            )
            if run.rc == 0 and status.rc in (0, 1) and not self.missing():
                done = True
                break
        if not done:
            self.violation(
                "no-clean-finish",
                missing=self.missing()[:5],
                last=[(r.label, r.rc) for r in self.log[-3:]],
            )

    def rows(self) -> list[dict[str, str]]:
        import csv

        if not self.results.exists():
            return []
        if self.jsonl:
            return [
                json.loads(line)
                for line in self.results.read_text(encoding="utf-8").splitlines()
                if line.strip()
            ]
        with self.results.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))

    def missing(self) -> list[str]:
        submitted = {row["source"] for row in self.rows() if row["status"] == "submitted"}
        return [
            f"obs://in-bucket/{k}" for k in self.listed if f"obs://in-bucket/{k}" not in submitted
        ]

    def check(self) -> None:
        truth = self.truth()
        jobs = truth["jobs"]
        rows = self.rows()
        ids_in_rows = {row["job_id"] for row in rows if row["job_id"]}
        # A job "deleted by someone else" (--p-vanish) before any lookup could list it, after
        # its create's answer was lost, is one the tool cannot know of: excused, counted.
        # Only when no job of its video that the tool recorded came before it: one made after
        # a job the tool knew of would be a second create, vanished or not.
        excused = set()
        for job_id, job in jobs.items():
            if job["gone"] == "vanished" and job_id not in ids_in_rows:
                earlier = [
                    other
                    for other_id, other in jobs.items()
                    if other_id != job_id
                    and other["seq"] < job["seq"]
                    and other_id in ids_in_rows
                    and set(other["inputs"]) & set(job["inputs"])
                ]
                if not earlier:
                    excused.add(job_id)
        self.excused = len(excused)
        jobs = {job_id: job for job_id, job in jobs.items() if job_id not in excused}
        by_input: dict[str, list[str]] = {}
        for job_id, job in jobs.items():
            for source in job["inputs"]:
                by_input.setdefault(source, []).append(job_id)
        for source, ids in by_input.items():
            if len(ids) > 1:
                self.violation(
                    "two-jobs-for-one-video", source=source, jobs={i: jobs[i] for i in ids}
                )
        for job_id, job in jobs.items():
            if job_id not in ids_in_rows:
                self.violation("created-job-without-row", job_id=job_id, job=job)
        for row in rows:
            if row["status"] == "submitted" and row["job_id"] and row["job_id"] in jobs:
                if row["source"] not in jobs[row["job_id"]]["inputs"]:
                    self.violation("row-names-another-videos-job", row=row)
            elif row["status"] == "submitted" and row["job_id"] not in truth["jobs"]:
                self.violation("row-names-no-created-job", row=row)
        for source in self.missing():
            self.violation("video-without-submitted-row", source=source)
        for bad in truth["delete_violations"]:
            self.violation("deleted-before-recorded", **bad)
        for path in self.root.rglob("*"):
            if (
                path.is_file()
                and not path.name.startswith(("cmd", "emulator"))
                and SK.encode() in path.read_bytes()
            ):
                self.violation("secret-in-file", path=str(path))
        self.deletes = truth["deletes"]
        self.created = truth["created_total"]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/batchsubmit-chaos"))
    parser.add_argument("--keep", action="store_true", help="keep every iteration's folder")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    out = args.workdir / "violations.jsonl"
    total = bad = 0
    for seed in args.seeds:
        for number in range(args.start, args.start + args.iterations):
            root = args.workdir / f"s{seed}-i{number}"
            if root.exists():
                subprocess.run(["rm", "-rf", str(root)], check=True)
            root.mkdir()
            it = Iteration(seed, number, root, random.Random(f"{seed}-{number}"))
            started = time.monotonic()
            try:
                it.play()
            except Exception as exc:
                it.violation("harness-error", error=repr(exc))
            total += 1
            summary = {
                "seed": seed,
                "iteration": number,
                "seconds": round(time.monotonic() - started, 1),
                "faults": " ".join(it.faults),
                "options": it.options,
                "created": getattr(it, "created", None),
                "deletes": getattr(it, "deletes", None),
                "excused": getattr(it, "excused", None),
                "violations": len(it.violations),
                "notes": len(it.notes),
                "signals_landed": sum(
                    1
                    for r in it.log
                    if r.signal_plan != "none" and "finished first" not in r.signal_plan
                ),
                "commands": len(it.log),
            }
            print(json.dumps(summary), flush=True)
            if it.violations:
                bad += 1
                with out.open("a") as handle:
                    for v in it.violations:
                        record = {
                            "seed": seed,
                            "iteration": number,
                            **v,
                            "faults": it.faults,
                            "commands": [
                                (r.label, shlex.join(r.argv), r.signal_plan, r.rc, r.seconds)
                                for r in it.log
                            ],
                        }
                        handle.write(json.dumps(record) + "\n")
                        print(
                            "VIOLATION",
                            json.dumps({k: record[k] for k in record if k != "commands"})[:1500],
                            flush=True,
                        )
            elif not args.keep:
                subprocess.run(["rm", "-rf", str(root)], check=True)
    print(f"iterations {total}, with violations {bad}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
