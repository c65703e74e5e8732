"""A local VAS (Video Analysis Service), strict like the real one, with fault injection.

Two uses: the test double of the whole project (run in-process, observed through ``tasks``,
``calls`` and the arrival times), and the embedded default a new user tries first
(``batchsubmit submit --emulator``). It checks what the real service checks (SDK-HMAC-SHA256
signatures, the create body of the API reference, paging parameters) so that a client that works
here fails on the real service only for reasons the emulator cannot know.

Faults reproduce what makes bulk submission hard: throttling, 503s, and the ambiguous outcomes of
a create whose answer is lost (the job exists, the client cannot tell). One ``random.Random`` draws
every fault, so a seeded run is reproducible call for call (given the same call order).

Jobs then live (``Lifecycle``): PENDING, STARTING, RUNNING, then SUCCEEDED or FAILED over
(scaled) time, with shares of failures, unknown states, vanishing jobs, late and expiring
hosting results and FROZEN; stop, start and an asynchronous delete; a quota over every job not
yet gone. A life is drawn at its create and applied lazily when a call looks: no background task.

Each call passes, in order: injected latency, the per-operation rate limit (a throttled call does
nothing else), the signature, the project id, the service subscription, the 503 fault, then the
operation. A create is synchronous from validation to storage (no ``await`` in between), so a
cancelled handler or a dropped client either creates the whole job or nothing.

No printing, no environment, no exit: the CLI does those.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import hashlib
import heapq
import hmac
import itertools
import random
import re
import threading
import time
import uuid
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Final

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from batchsubmit import vas
from batchsubmit.auth import ALGORITHM, canonical_request, parse_authorization
from batchsubmit.emulator_iam import MAX_REQUEST_FIELD, Identity, IdentityOptions, Refusal
from batchsubmit.vas import PROJECT_ID, TASK_ID, TASK_ID_PATTERN, valid_bucket

__all__ = [
    "EMULATOR_AK",
    "EMULATOR_PROJECT_ID",
    "EMULATOR_SK",
    "Emulator",
    "Faults",
    "Lifecycle",
    "RequestRecord",
    "max_in_window",
]

EMULATOR_AK: Final = "BATCHSUBMITEMULATORAK0"
# A documented throwaway: it only ever opens this local emulator, so it is safe to publish.
EMULATOR_SK: Final = "batchsubmit-emulator-throwaway-sk-not-a-secret"
EMULATOR_PROJECT_ID: Final = "0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e"

STATES: Final = frozenset(
    {
        "PENDING", "RECOVERING", "STARTING", "UPGRADING", "CREATE_FAILED", "START_FAILED",
        "RUNNING", "STOPPING", "STOPPED", "ABNORMAL", "SUCCEEDED", "FAILED", "DELETING",
        "FREEZING", "FROZEN",
    }
)  # fmt: skip

_TASKS_PATH: Final = "/v2/{project_id}/services/{service_name}/tasks"
_ORDER_FIELDS: Final = frozenset({"name", "created_at", "updated_at"})
_HEX64: Final = re.compile(r"[0-9a-f]{64}")
_JSON: Final = "application/json"
_INT_RE: Final = re.compile(r"-?[0-9]{1,18}")

# An operation after the common checks: (request, body, (project id, service name), headers).
_Action = Callable[
    [web.Request, bytes, tuple[str, str], dict[str, str]], Awaitable[web.StreamResponse]
]


Span = tuple[float, float]
"""A duration in emulated seconds, drawn uniformly between the two bounds."""


@dataclass(frozen=True, kw_only=True)
class Lifecycle:
    """How a job lives after its create: phase durations and the shares of each fate.

    Durations are emulated seconds; ``time_scale`` emulated seconds pass per real second (1000:
    a 30 s run takes 30 ms), so tests see whole lives in milliseconds. Every timestamp the
    emulator reports is a real wall-clock moment: only durations are scaled. Shares are drawn
    per job at its create, from the seeded RNG.
    """

    time_scale: float = 1.0
    pending: Span = (1.0, 4.0)
    """PENDING: waiting for computing resources."""
    starting: Span = (1.0, 3.0)
    running: Span = (5.0, 20.0)
    stopping: float = 2.0
    """STOPPING before STOPPED, after a stop call."""
    deleting: float = 2.0
    """DELETING before the job is gone, after a delete call; it counts in the quota till then."""
    freezing: float = 2.0
    """FREEZING before FROZEN."""
    p_failed: float = 0.0
    """Share of jobs that end FAILED after running, with ``error`` set to ``failure``."""
    failure: tuple[str, str] = ("ALG.002", "The algorithm failed to analyse the video")
    p_create_failed: float = 0.0
    """Share that end CREATE_FAILED after PENDING (they never run)."""
    p_start_failed: float = 0.0
    """Share that end START_FAILED after STARTING."""
    p_unknown_state: float = 0.0
    """Share that pass through ``unknown_state`` (a name outside VAS's list) after PENDING."""
    unknown_state: str = "SCHEDULING"
    unknown: Span = (1.0, 3.0)
    p_vanish: float = 0.0
    """Share deleted by someone else at a moment drawn within their life (creation to final):
    show answers 404 IVA.0005, list leaves them out, the quota no longer counts them."""
    p_frozen: float = 0.0
    """Share that go FREEZING then FROZEN midway through RUNNING (``Emulator.freeze`` does it to
    the whole account)."""
    p_abnormal: float = 0.0
    """Share (of those that run to an outcome) that turn ABNORMAL midway through RUNNING for
    ``abnormal``, then RECOVERING for ``recovering``, then run on."""
    abnormal: Span = (30.0, 120.0)
    recovering: float = 5.0
    p_hosting_late: float = 0.0
    """Share of SUCCEEDED ``hosting`` jobs whose result stays NOT_GENERATED for ``hosting_late``;
    the others' result is AVAILABLE as they succeed."""
    hosting_late: Span = (10.0, 60.0)
    p_hosting_too_large: float = 0.0
    """Share of SUCCEEDED ``hosting`` jobs whose result is too large to host: EXCEED_IN_SIZE,
    with no data and no overdue date (a job is late or too large, not both)."""
    hosting_ttl: float = 48 * 3600.0
    """How long a hosting result stays AVAILABLE before it is OVERDUE (VAS: 48 h)."""

    def __post_init__(self) -> None:
        """Refuse settings no job could live by (ValueError names the field)."""
        if not self.time_scale > 0:
            raise ValueError(f"time_scale must be > 0, not {self.time_scale}")
        for name in ("pending", "starting", "running", "unknown", "hosting_late", "abnormal"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"{name} must be (low, high) with 0 <= low <= high")
        for name in ("stopping", "deleting", "freezing", "recovering", "hosting_ttl"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0")
        shares = ("p_failed", "p_create_failed", "p_start_failed", "p_frozen")
        others = ("p_unknown_state", "p_vanish", "p_hosting_late", "p_hosting_too_large")
        for name in (*shares, *others, "p_abnormal"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.p_hosting_late + self.p_hosting_too_large > 1:
            raise ValueError("p_hosting_late and p_hosting_too_large: their sum must be <= 1")
        if sum(getattr(self, name) for name in shares) > 1:
            raise ValueError(f"{', '.join(shares)} are shares of one fate: their sum must be <= 1")

    def real(self, seconds: float) -> float:
        """Real seconds of ``seconds`` emulated ones."""
        return seconds / self.time_scale


@dataclass(frozen=True, kw_only=True)
class Faults:
    """What goes wrong, and how often; replace ``Emulator.faults`` to change it mid-run."""

    p503: float = 0.0
    """Probability that any API call is answered 503 IVA.0010 (a create then creates nothing)."""
    rate_limit: float = 0.0
    """Calls let through per sliding 1-second window, per operation; beyond: 429. 0 = no limit."""
    rate_limit_hint: bool = True
    """Whether the 429 message states the limit, as the API gateway's usually does."""
    ratelimit_headers: bool = False
    """Send X-ratelimit, X-ratelimit-used, X-ratelimit-window while ``rate_limit`` is set."""
    retry_after: float | None = None
    """If set, 429 and 503 answers carry ``Retry-After`` (the real gateway is not known to)."""
    latency: float = 0.0
    """Seconds added before every call is handled."""
    p_lost: float = 0.0
    """Create only: the job is created, then the connection is dropped without an answer."""
    p_5xx_after_create: float = 0.0
    """Create only: the job is created, then answered 500 IVA.0006, 502 or 504."""
    p_slow: float = 0.0
    """Create only: the job is created, then the 201 is delayed by ``slow_seconds``."""
    slow_seconds: float = 30.0
    list_lag: float = 0.0
    """Seconds after its create before a job shows in lists (show finds it at once): an index
    that lags, as a service that "lists new jobs late" does (what --settle waits out)."""
    quota: int = 5000
    """Saved jobs allowed (VAS keeps at most 5000); beyond: 400 IVA.0012. 0 = unlimited."""
    seed: int | None = None
    """Seed of the one RNG that draws every fault (read when the Emulator is built); job lives
    are drawn from a second RNG derived from it, so they do not shift the faults' draws."""
    jobs: Lifecycle = Lifecycle()
    """How jobs live after their create (read at each create: a job keeps the life it was
    given)."""


_NO_FAULTS: Final = Faults()


def max_in_window(times: Sequence[float], window: float = 1.0) -> int:
    """The most ``times`` that fit in any half-open window ``[t, t + window)``.

    For tests of client-side rate limiting: a sliding window, not fixed buckets, so that a burst
    straddling a second boundary is not hidden.
    """
    ordered = sorted(times)
    best = start = 0
    for end, t in enumerate(ordered):
        while t - ordered[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


class _Reject(Refusal):
    """An error answer; raised anywhere in a call's checks, rendered by the dispatcher."""


def _invalid(msg: str) -> _Reject:
    return _Reject(400, "IVA.0004", f"Invalid parameter: {msg}")


class _Scope:
    """The jobs of one project and service, in creation order, with the indexes list needs.

    The name index groups names by length: a ``name_like`` query can only match names at least
    as long, and among names of exactly its length only itself. Job names of one run usually
    share a length, so the lookup after a lost create is a dict access, not a scan of the store.
    ``ids``/``created`` (creation order, created_ms never decreasing along it) answer a
    ``created_since``/``created_until`` window by bisection; ``by_updated`` keeps the jobs in
    the order of their last state change. Pages of large stores then cost the page, not the
    store.
    """

    __slots__ = ("by_length", "by_updated", "created", "ids", "tasks")

    def __init__(self) -> None:
        self.tasks: dict[str, dict[str, Any]] = {}
        self.by_length: dict[int, dict[str, list[str]]] = {}
        self.ids: list[str] = []
        self.created: list[int] = []
        self.by_updated: dict[str, None] = {}

    def add(self, task: dict[str, Any], created_ms: int) -> None:
        name: str = task["name"]
        task_id: str = task["id"]
        self.tasks[task_id] = task
        self.by_length.setdefault(len(name), {}).setdefault(name, []).append(task_id)
        self.ids.append(task_id)
        self.created.append(created_ms)
        self.by_updated[task_id] = None

    def remove(self, task_id: str, created_ms: int) -> None:
        name: str = self.tasks.pop(task_id)["name"]
        names = self.by_length[len(name)]
        names[name].remove(task_id)
        if not names[name]:
            del names[name]
        low = bisect.bisect_left(self.created, created_ms)
        where = self.ids.index(task_id, low, bisect.bisect_right(self.created, created_ms))
        del self.ids[where]
        del self.created[where]
        del self.by_updated[task_id]

    def touch(self, task_id: str) -> None:
        """The job's state just changed: it is now the last updated."""
        del self.by_updated[task_id]
        self.by_updated[task_id] = None

    def window(self, since: int, until: int) -> tuple[int, int]:
        """The slice of ``ids`` created within [since, until] (a negative bound: none)."""
        low = bisect.bisect_left(self.created, since) if since >= 0 else 0
        high = bisect.bisect_right(self.created, until) if until >= 0 else len(self.ids)
        return low, max(low, high)

    def named_like(self, fragment: str) -> list[dict[str, Any]]:
        """Jobs whose name contains ``fragment``, in creation order."""
        ids: list[str] = []
        for length, names in self.by_length.items():
            if length == len(fragment):
                ids.extend(names.get(fragment, ()))
            elif length > len(fragment):
                for name, name_ids in names.items():
                    if fragment in name:
                        ids.extend(name_ids)
        if len(ids) > 1:
            position = {task_id: i for i, task_id in enumerate(self.tasks)}
            ids.sort(key=position.__getitem__)
        return [self.tasks[task_id] for task_id in ids]


FINAL_STATES: Final = frozenset({"SUCCEEDED", "FAILED", "CREATE_FAILED", "START_FAILED"})
"""States a job of an obs-file input never leaves by itself."""
# A stop call moves these to STOPPING; any state outside VAS's list counts as stoppable too.
_STOPPABLE: Final = frozenset({"PENDING", "STARTING", "RUNNING", "RECOVERING", "ABNORMAL"})
# A start call moves these to STARTING (a restart); already started ones answer 202 unchanged.
_STARTABLE: Final = frozenset({"STOPPED", "FROZEN", "FAILED", "START_FAILED", "SUCCEEDED"})
_STARTED: Final = frozenset({"PENDING", "STARTING", "RUNNING", "RECOVERING", "UPGRADING"})
_PENDING_STATUS: Final = "Waiting for available computing resource."
# The codes of jobs that never ran are not published: these say plainly they are the emulator's.
_CREATE_FAILURE: Final = ("EMU.0001", "The job could not be created (emulated CREATE_FAILED)")
_START_FAILURE: Final = ("EMU.0002", "The job could not be started (emulated START_FAILED)")
TOO_LARGE: Final = "EXCEED_IN_SIZE"  # a hosting result too large for VAS to keep
_DRAWS: Final = 10  # uniform draws per life: a fixed number, so one share never shifts another
_LATER_DRAWS: Final = 2  # from a stream of their own: options added later shift no earlier draw


@dataclass(frozen=True, slots=True)
class _Step:
    """One change of a job's timeline, at a real monotonic time."""

    at: float
    state: str | None = None  # None: the state stays
    error: tuple[str, str] | None = None
    hosting: str | None = None  # a new hosting_result status
    gone: bool = False  # deleted (or vanished): the job leaves the store


class _Life:
    """What a job's TaskDetails does not show: its place in time, its hosting result, its
    course (the steps to come; only the next one is queued), and the generation that
    invalidates the queued step when a call changes that course."""

    __slots__ = (
        "created_ms", "generation", "hosting", "next", "overdue_ms", "plan", "ttl", "updated",
    )  # fmt: skip

    def __init__(self, created: float, hosting: bool, ttl: float) -> None:
        self.created_ms = int(created) * 1000  # what created_at shows, to the second
        self.updated = created
        self.ttl = ttl  # real seconds a hosting result stays AVAILABLE
        self.generation = 0
        self.plan: tuple[_Step, ...] = ()
        self.next = 0  # index in plan of the next step to apply
        self.hosting: str | None = "NOT_GENERATED" if hosting else None
        self.overdue_ms: int | None = None


def _stamp(wall: float) -> str:
    """TaskDetails' time form, "2018-06-12T13:00:01Z"."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall))


def _span(life: Lifecycle, bounds: Span, u: float) -> float:
    return life.real(bounds[0] + (bounds[1] - bounds[0]) * u)


def _plan(
    life: Lifecycle, start: float, u: Sequence[float], *, hosting: bool, restart: bool
) -> list[_Step]:
    """The steps of one run from ``start`` (a create, or a restart already in STARTING)."""
    cut = life.p_create_failed
    fate = (
        "CREATE_FAILED" if u[0] < cut
        else "START_FAILED" if u[0] < (cut := cut + life.p_start_failed)
        else "FAILED" if u[0] < (cut := cut + life.p_failed)
        else "FROZEN" if u[0] < cut + life.p_frozen
        else "SUCCEEDED"
    )  # fmt: skip
    steps: list[_Step] = []
    t = start
    if not restart:
        t += _span(life, life.pending, u[1])
        if fate == "CREATE_FAILED":
            return [_Step(t, "CREATE_FAILED", _CREATE_FAILURE)]
        if u[2] < life.p_unknown_state:
            steps.append(_Step(t, life.unknown_state))
            t += _span(life, life.unknown, u[3])
        steps.append(_Step(t, "STARTING"))
    t += _span(life, life.starting, u[4])
    if fate == "START_FAILED":
        return [*steps, _Step(t, "START_FAILED", _START_FAILURE)]
    steps.append(_Step(t, "RUNNING"))
    run = _span(life, life.running, u[5])
    if fate == "FROZEN":
        t += run / 2
        steps.append(_Step(t, "FREEZING"))
        return [*steps, _Step(t + life.real(life.freezing), "FROZEN")]
    if u[10] < life.p_abnormal:
        t += run / 2
        steps.append(_Step(t, "ABNORMAL"))
        t += _span(life, life.abnormal, u[11])
        steps.append(_Step(t, "RECOVERING"))
        t += life.real(life.recovering)
        steps.append(_Step(t, "RUNNING"))
        run /= 2
    t += run
    if fate == "FAILED" or fate == "CREATE_FAILED":  # a restart cannot fail to be created
        return [*steps, _Step(t, "FAILED", life.failure)]
    if not hosting:
        return [*steps, _Step(t, "SUCCEEDED")]
    if u[6] < life.p_hosting_late:
        steps.append(_Step(t, "SUCCEEDED"))
        t += _span(life, life.hosting_late, u[7])
        steps.append(_Step(t, hosting="AVAILABLE"))
    elif u[6] < life.p_hosting_late + life.p_hosting_too_large:  # the same draw: one or other
        return [*steps, _Step(t, "SUCCEEDED", hosting=TOO_LARGE)]
    else:
        steps.append(_Step(t, "SUCCEEDED", hosting="AVAILABLE"))
    return [*steps, _Step(t + life.real(life.hosting_ttl), hosting="OVERDUE")]


def _vanishing(
    life: Lifecycle, start: float, u: Sequence[float], steps: list[_Step]
) -> list[_Step]:
    """``steps`` cut by a vanish at a moment drawn between ``start`` and the final state."""
    if u[8] >= life.p_vanish:
        return steps
    end = max((step.at for step in steps if step.state is not None), default=start)
    moment = start + (end - start) * u[9]
    return [*(step for step in steps if step.at < moment), _Step(moment, gone=True)]


def _hosting_result(task: dict[str, Any], life: _Life) -> dict[str, Any]:
    """show's ``hosting_result``: ``data`` is result.json's content, as the SDK's model says."""
    status = life.hosting or "NOT_GENERATED"
    result: dict[str, Any] = {"status": status}
    if life.overdue_ms is not None:
        result["overdue_date"] = _stamp(life.overdue_ms / 1000)
    if status == "AVAILABLE":
        content = {
            "task_id": task["id"],
            "name": task["name"],
            "input": task["input"],
            "results": [{"frame": 0, "objects": []}],
        }
        data = orjson.dumps(content).decode()
        result["data"] = data
        result["file_size"] = str(len(data.encode()))
    return result


@lru_cache(maxsize=256)
def _sdk_date_epoch(value: str) -> float | None:
    """Seconds since the epoch of an ``X-Sdk-Date`` (``%Y%m%dT%H%M%SZ``), None if malformed.

    Cached: concurrent calls share the same few dates, and strptime is slow.
    """
    digits = value[:8] + value[9:15]
    if len(value) != 16 or value[8] != "T" or value[15] != "Z" or not _is_ascii_digits(digits):
        return None
    try:
        moment = datetime(
            int(value[0:4]), int(value[4:6]), int(value[6:8]),
            int(value[9:11]), int(value[11:13]), int(value[13:15]), tzinfo=UTC,
        )  # fmt: skip
    except ValueError:
        return None
    return moment.timestamp()


def _is_ascii_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


class Emulator:
    """A VAS endpoint in memory: serve it, point a client at it, then inspect what happened."""

    def __init__(
        self,
        faults: Faults = _NO_FAULTS,
        *,
        credentials: Mapping[str, str] | None = None,
        security_tokens: Mapping[str, str] | None = None,
        services: Collection[str] | None = None,
        verify_signatures: bool = True,
        clock_skew: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
        project_id: str = EMULATOR_PROJECT_ID,
        identity: IdentityOptions | None = None,
        request_log: Callable[[RequestRecord], None] | None = None,
    ) -> None:
        """``credentials`` maps AK to SK (default: the emulator's throwaway pair);
        ``security_tokens`` maps an AK to the ``X-Security-Token`` it requires (temporary
        credentials); ``services`` are the subscribed service names (None: any well-formed name);
        ``clock`` (monotonic seconds) times job lives: a test can pass one it advances by hand.
        Every credential belongs to ``project_id``: another well-formed project id is refused
        400 IVA.0002, as VAS does (not checked when signatures are not verified). ``identity``
        turns on the fake IAM and metadata (``batchsubmit.emulator_iam``); ``request_log``
        receives one :class:`RequestRecord` per request, with no secret in it.
        """
        self.faults = faults
        keys = credentials if credentials is not None else {EMULATOR_AK: EMULATOR_SK}
        self._keys = {ak: sk.encode() for ak, sk in keys.items()}
        self._tokens = {ak: token.encode() for ak, token in (security_tokens or {}).items()}
        self._services = frozenset(services) if services is not None else None
        self._verify = verify_signatures
        self._clock_skew = clock_skew
        self.project_id = project_id
        self.identity = Identity(identity or IdentityOptions(), project_id=project_id)
        self._request_log = request_log
        self._rng = random.Random(faults.seed)
        self._windows: dict[str, collections.deque[float]] = collections.defaultdict(
            collections.deque
        )
        self._scopes: dict[tuple[str, str], _Scope] = {}
        # What tests and the CLI summary read. Arrival times are time.monotonic() taken after the
        # injected latency, the instant the rate limiter judges, so that max_in_window() over
        # accepted_create_times never exceeds rate_limit.
        self.tasks: dict[str, dict[str, Any]] = {}  # id -> TaskDetails of jobs not yet gone
        self.create_times: list[float] = []  # every create call, throttled or not
        self.accepted_create_times: list[float] = []  # create calls the rate limit let through
        self.calls: collections.Counter[tuple[str, int]] = collections.Counter()  # 0: no answer
        # Job lives: steps queued by time, applied lazily when a call (or refresh()) looks. The
        # lock lets a test thread look (state(), set_state()...) while the server thread serves.
        self._lock = threading.RLock()
        self._clock = clock
        self._mono0 = clock()
        self._wall0 = time.time()
        self._life_rng = random.Random(None if faults.seed is None else f"jobs-{faults.seed}")
        self._later_rng = random.Random(None if faults.seed is None else f"later-{faults.seed}")
        self._lives: dict[str, _Life] = {}
        self._listed_from: dict[str, float] = {}  # job id -> when lists show it (list_lag)
        self._steps: list[tuple[float, int, str, int]] = []  # heap: (at, seq, id, generation)
        self._step_seq = 0
        self.created_total = 0  # every job ever created (gone ones included)
        self.deleted: dict[str, str] = {}  # job id -> its state when a DELETE first reached it
        self.vanished: list[str] = []  # jobs deleted "by someone else" (p_vanish, vanish())
        self.gone: dict[str, str] = {}  # job id -> "deleted" or "vanished", once it left
        self.sources_of: dict[str, list[str]] = {}  # every job ever created -> its inputs

    # -- observation -------------------------------------------------------------------------

    def jobs_by_source(self, *, gone: bool = False) -> dict[str, list[str]]:
        """Input (``obs://bucket/path`` or the URL) to the ids of jobs made from it; with
        ``gone``, jobs since deleted or vanished count too (every job ever created).

        More than one id for an input means a job was submitted twice (exactly-once broken).
        """
        found: dict[str, list[str]] = {}
        for task_id, keys in self.sources_of.items():
            if gone or task_id in self.tasks:
                for key in keys:
                    found.setdefault(key, []).append(task_id)
        return found

    def throttled(self) -> int:
        """How many calls were answered 429."""
        return sum(n for (_, status), n in self.calls.items() if status == 429)

    def clear(self) -> None:
        """Forget every job and call (between benchmark measurements); the options stay."""
        with self._lock:
            self._scopes.clear()
            self.tasks.clear()
            self._lives.clear()
            self._steps.clear()
            self.sources_of.clear()
            self.deleted.clear()
            self.vanished.clear()
            self.gone.clear()
            self.created_total = 0
            self.calls.clear()
            self.create_times.clear()
            self.accepted_create_times.clear()

    # -- job lives ------------------------------------------------------------------------------
    # Safe from any thread; read tasks, deleted, gone... directly only when no call is served.

    def refresh(self) -> None:
        """Apply every step of every job's life due by now (each call does this first)."""
        with self._lock:
            now = self._clock()
            steps = self._steps
            while steps and steps[0][0] <= now:
                # One step a pop, so steps apply in time order across jobs (by_updated's order).
                _, _, task_id, generation = heapq.heappop(steps)
                life = self._lives.get(task_id)
                if life is not None and life.generation == generation:
                    self._apply(task_id, life.plan[life.next])
                    life.next += 1
                    if task_id in self.tasks and life.next < len(life.plan):
                        self._queue(task_id, life, life.plan[life.next].at)

    def state(self, task_id: str) -> str | None:
        """The job's state now; None once it is gone."""
        with self._lock:
            self.refresh()
            task = self.tasks.get(task_id)
            return None if task is None else str(task["state"])

    def hosting_status(self, task_id: str) -> str | None:
        """The job's hosting_result status now (None: gone, or no hosting output)."""
        with self._lock:
            self.refresh()
            life = self._lives.get(task_id)
            return life.hosting if life is not None and task_id in self.tasks else None

    def set_state(
        self,
        task_id: str,
        state: str,
        *,
        error: tuple[str, str] | None = None,
        hosting: str | None = None,
    ) -> None:
        """Force a job into ``state`` (any name, VAS's or not) now, where it then stays;
        ``hosting`` sets its hosting_result status too. FAILED without ``error`` gets the
        lifecycle's ``failure``."""
        with self._lock:
            self.refresh()
            if task_id not in self.tasks:
                raise KeyError(task_id)
            if error is None and state == "FAILED":
                error = self.faults.jobs.failure
            self._redirect(task_id, [_Step(self._clock(), state, error, hosting)])

    def vanish(self, task_id: str) -> None:
        """Delete a job as someone else would: it is gone at once (show 404, not listed)."""
        with self._lock:
            self.refresh()
            self._apply(task_id, _Step(self._clock(), gone=True))

    def freeze(self) -> list[str]:
        """The account falls into arrears: every job not final, stopped or deleting goes
        FREEZING, then FROZEN. Returns the ids it froze."""
        with self._lock:
            self.refresh()
            now = self._clock()
            later = now + self.faults.jobs.real(self.faults.jobs.freezing)
            frozen = []
            for task_id, task in self.tasks.items():
                if task["state"] not in FINAL_STATES | {"STOPPED", "DELETING", "FROZEN"}:
                    frozen.append(task_id)
            for task_id in frozen:
                self._redirect(task_id, [_Step(now, "FREEZING"), _Step(later, "FROZEN")])
            return frozen

    def _redirect(self, task_id: str, steps: Sequence[_Step]) -> None:
        """Give the job a new course: drop the queued step, apply what is due, queue the next."""
        life = self._lives[task_id]
        life.generation += 1
        life.plan = tuple(steps)
        life.next = 0
        self._advance(task_id, life, self._clock())

    def _advance(self, task_id: str, life: _Life, now: float) -> None:
        """Apply the job's steps due by ``now``; queue its next one."""
        plan = life.plan
        while life.next < len(plan):
            step = plan[life.next]
            if step.at > now:
                self._queue(task_id, life, step.at)
                return
            life.next += 1
            self._apply(task_id, step)
            if task_id not in self.tasks:
                return

    def _draws(self) -> list[float]:
        """One life's uniform draws (``_plan`` reads them by position)."""
        first = [self._life_rng.random() for _ in range(_DRAWS)]
        return first + [self._later_rng.random() for _ in range(_LATER_DRAWS)]

    def _queue(self, task_id: str, life: _Life, at: float) -> None:
        self._step_seq += 1
        heapq.heappush(self._steps, (at, self._step_seq, task_id, life.generation))

    def _wall(self, at: float) -> float:
        return self._wall0 + (at - self._mono0)

    def _apply(self, task_id: str, step: _Step) -> None:
        task = self.tasks.get(task_id)
        if task is None:
            return
        life = self._lives[task_id]
        if step.gone:
            if task["state"] != "DELETING":
                self.vanished.append(task_id)
            self.gone[task_id] = "deleted" if task["state"] == "DELETING" else "vanished"
            self._scopes[task["project_id"], task["service_name"]].remove(task_id, life.created_ms)
            del self.tasks[task_id]
            del self._lives[task_id]
            return
        wall = self._wall(step.at)
        if step.state is not None:
            task["state"] = step.state
            task["status"] = _PENDING_STATUS if step.state == "PENDING" else None
            task["error"] = (
                None if step.error is None else {"code": step.error[0], "message": step.error[1]}
            )
            task["updated_at"] = _stamp(wall)
            life.updated = wall
            self._scopes[task["project_id"], task["service_name"]].touch(task_id)
        if step.hosting is not None and life.hosting is not None:
            life.hosting = step.hosting
            hosting = task["output"]["hosting"]
            if step.hosting == "NOT_GENERATED":
                life.overdue_ms = None
                hosting.pop("result_json_overdue_at", None)
            elif step.hosting == "AVAILABLE":
                life.overdue_ms = int((wall + life.ttl) * 1000)
                hosting["result_json_overdue_at"] = life.overdue_ms
            elif step.hosting == "OVERDUE" and life.overdue_ms is None:  # forced: expired now
                life.overdue_ms = int(wall * 1000)
                hosting["result_json_overdue_at"] = life.overdue_ms

    # -- serving -----------------------------------------------------------------------------

    def app(self) -> web.Application:
        """A fresh aiohttp application over this emulator's state (one per event loop)."""
        app = web.Application()
        if self._request_log is not None:
            app.middlewares.append(_request_logger(self._request_log))
        app[_CLOSING] = asyncio.Event()
        app.on_shutdown.append(_wake_sleepers)
        router = app.router
        router.add_routes(self.identity.routes(self._check_signature if self._verify else None))
        router.add_post(_TASKS_PATH, self._operation("create", self._create))
        router.add_get(_TASKS_PATH, self._operation("list", self._list), allow_head=False)
        item = _TASKS_PATH + "/{task_id}"
        router.add_get(item, self._operation("show", self._show), allow_head=False)
        router.add_delete(item, self._operation("delete", self._delete))
        router.add_post(item + "/stop", self._operation("stop", self._stop))
        router.add_post(item + "/start", self._operation("start", self._start))
        router.add_put(item, self._operation("update", _not_emulated))
        router.add_route("*", "/{tail:.*}", _not_found)
        return app

    @asynccontextmanager
    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        """Listen on ``host:port`` (0: a free port) and yield the base URL; stop on exit.

        Slow or sleeping calls still pending at exit lose their answer instead of holding
        the shutdown.
        """
        runner = web.AppRunner(
            self.app(),
            access_log=None,
            handle_signals=False,
            shutdown_timeout=1.0,
            max_field_size=MAX_REQUEST_FIELD,  # an X-Auth-Token is longer than aiohttp's 8190
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port, backlog=1024)
            await site.start()
            bound = runner.addresses[0][1]
            shown = f"[{host}]" if ":" in host else host
            yield f"http://{shown}:{bound}"
        finally:
            await runner.cleanup()

    # -- the pipeline every call goes through -------------------------------------------------

    def _operation(
        self, op: str, action: _Action
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._dispatch(request, op, action)

        return handle

    async def _dispatch(self, request: web.Request, op: str, action: _Action) -> web.StreamResponse:
        faults = self.faults
        if faults.latency > 0 and not await _sleep(request, faults.latency):
            return self._drop(request, op)
        now = time.monotonic()
        if op == "create":
            self.create_times.append(now)
        request_id = uuid.uuid4().hex
        headers = {"X-Request-Id": request_id, "Content-Type": _JSON}
        if faults.rate_limit > 0:
            window = self._windows[op]
            cutoff = now - 1.0
            while window and window[0] <= cutoff:
                window.popleft()
            throttled = len(window) >= faults.rate_limit
            if not throttled:
                window.append(now)
            if faults.ratelimit_headers:
                headers["X-ratelimit"] = f"{faults.rate_limit:g}"
                headers["X-ratelimit-used"] = str(len(window))
                headers["X-ratelimit-window"] = "1 second"
            if throttled:
                if faults.rate_limit_hint:
                    msg = f"policy user over ratelimit, limit:{faults.rate_limit:g}, time:1 second"
                else:
                    msg = "The throttling threshold has been reached"
                _retry_after(headers, faults)
                return self._error(op, headers, _Reject(429, "APIG.0308", msg))
        if op == "create":
            self.accepted_create_times.append(now)
        try:
            try:
                body = await request.read()
            except ConnectionResetError:
                # The client went away mid-request (killed, timed out): nothing was created.
                return web.Response(status=499)
            if self._verify:
                self._authenticate(request, body)
            project = request.match_info["project_id"]
            service = request.match_info["service_name"]
            self._check_target(request, project, service)
            _check_task_id(request)
            if faults.p503 > 0 and self._rng.random() < faults.p503:
                _retry_after(headers, faults)
                raise _Reject(503, "IVA.0010", "Dependent service is unavailable")
            return await action(request, body, (project, service), headers)
        except Refusal as reject:
            return self._error(op, headers, reject)
        except web.HTTPRequestEntityTooLarge:
            return self._error(op, headers, _invalid("the request body is too large"))

    def _authenticate(self, request: web.Request, body: bytes) -> None:
        """An ``X-Auth-Token`` the fake IAM issued, else an AK/SK signature."""
        token = request.headers.get("X-Auth-Token")
        if token is not None:
            self.identity.check_token(token)  # scoped to self.project_id: _check_target binds
        else:
            self._check_signature(request, body)

    def _check_signature(self, request: web.Request, body: bytes) -> None:
        """Verify SDK-HMAC-SHA256 the way the API gateway does, echoing no secret.

        A security token is accepted only with the AK it was issued or configured for:
        temporary credentials from the metadata service until they expire (then 401 IVA.0001),
        a configured ``security_tokens`` pair always; a permanent AK takes none.
        """
        authorization = request.headers.get("Authorization")
        if authorization is None:
            raise _auth_error("the Authorization header is missing")
        parts = parse_authorization(authorization)
        if parts is None:
            raise _auth_error(
                f"the Authorization header is not {ALGORITHM} Access=..., "
                "SignedHeaders=..., Signature=..."
            )
        ak = parts["Access"]
        key = self._keys.get(ak)
        temporary = self.identity.temporary(ak) if key is None else None
        if temporary is not None:
            key = temporary.sk.encode()
        if key is None:
            raise _auth_error("ak not found")
        declared = parts["SignedHeaders"]
        names = declared.split(";")
        if declared != ";".join(sorted({name.lower() for name in names})):
            # the gateway builds its canonical request from the list as declared: a signer
            # that did not sort, lower-case and de-duplicate it signed something else
            raise _auth_error(f"SignedHeaders {declared!r} is not lower-case, sorted and unique")
        if "host" not in names or "x-sdk-date" not in names:
            raise _auth_error("SignedHeaders must include host and x-sdk-date")
        if not _HEX64.fullmatch(parts["Signature"]):
            raise _auth_error("the Signature is not 64 hexadecimal digits")
        date = request.headers.get("X-Sdk-Date", "")
        epoch = _sdk_date_epoch(date)
        if epoch is None:
            raise _Reject(
                401,
                "APIGW.0303",
                f"Incorrect IAM authentication information: "
                f"X-Sdk-Date {date!r} is not in the format YYYYMMDDTHHMMSSZ",
            )
        if abs(time.time() - epoch) > self._clock_skew:
            raise _Reject(
                401,
                "APIGW.0303",
                f"Incorrect IAM authentication information: "
                f"request expired, X-Sdk-Date {date} is more than "
                f"{self._clock_skew:g} s away from the server time",
            )
        signed: dict[str, str] = {}
        for name in names:
            value = request.headers.get(name)
            if value is None:
                raise _auth_error(f"signed header {name!r} is missing from the request")
            if not _is_utf8(value):  # aiohttp hands undecodable bytes on as surrogates
                raise _auth_error(f"signed header {name!r} is not valid UTF-8")
            signed[name] = value
        if "x-security-token" not in signed and "X-Security-Token" in request.headers:
            raise _auth_error("X-Security-Token must be signed (listed in SignedHeaders)")
        query = list(request.query.items())  # every pair: a repeated key is signed each time
        canonical, _ = canonical_request(
            request.method, request.rel_url.raw_path, query, signed, body
        )
        to_sign = f"{ALGORITHM}\n{date}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), parts["Signature"].encode()):
            token_sent = signed.get("x-security-token", "").strip()
            if token_sent:  # a credential too: never echo it
                canonical = canonical.replace(token_sent, "<hidden>")
            raise _auth_error(f"verify aksk signature fail, the canonical request is:\n{canonical}")
        sent = signed.get("x-security-token")
        if temporary is not None:
            self.identity.check_temporary(temporary, sent or "")
            return
        token = self._tokens.get(ak)
        if token is not None:
            if not hmac.compare_digest((sent or "").encode(), token):
                raise _auth_error("X-Security-Token is missing or does not match the AK")
        elif sent is not None:
            self.identity.refused_unknown += 1
            raise _auth_error("X-Security-Token was not issued for this AK (a permanent key)")

    def _check_target(self, request: web.Request, project: str, service: str) -> None:
        """A well-formed project id that agrees with X-Project-Id, and a subscribed service."""
        if not PROJECT_ID.fullmatch(project):
            raise _Reject(
                400, "IVA.0002", f"Invalid project id {project!r}: expected 32 hex digits"
            )
        header = request.headers.get("X-Project-Id")
        if header is None:
            # VAS-API.md (signing, step 1): the SDK adds X-Project-Id to every call, and VAS's
            # answer without it is not documented. Refused as a bad project id (400, nothing
            # created), the answer that is safe for a client: never a 201 VAS might not give.
            raise _Reject(
                400,
                "IVA.0002",
                f"The X-Project-Id header is missing: send X-Project-Id: {project} "
                "(the project id of the path), as the official SDK does",
            )
        if header != project:
            raise _Reject(
                400,
                "IVA.0002",
                f"X-Project-Id {header!r} does not match the project id {project!r} of the path",
            )
        if self._verify and project != self.project_id:
            raise _Reject(
                400,
                "IVA.0002",
                f"Invalid project id {project!r}: not a project of these credentials "
                "(the AK/SK or token belongs to another project)",
            )
        if self._services is None:
            subscribed = vas.SERVICE_NAME.fullmatch(service) is not None
        else:
            subscribed = service in self._services
        if not subscribed:
            raise _Reject(403, "IVA.0007", f"The service {service!r} is not subscribed")

    def _error(self, op: str, headers: dict[str, str], reject: Refusal) -> web.Response:
        self.calls[op, reject.status] += 1
        body = {"error_code": reject.code, "error_msg": reject.msg,
                "request_id": headers["X-Request-Id"]}  # fmt: skip
        return web.Response(status=reject.status, body=orjson.dumps(body), headers=headers)

    def _answer(self, op: str, status: int, headers: dict[str, str], doc: object) -> web.Response:
        self.calls[op, status] += 1
        return web.Response(status=status, body=orjson.dumps(doc), headers=headers)

    def _drop(self, request: web.Request, op: str) -> web.Response:
        """Close the connection without a byte of answer; aiohttp then cannot send ours."""
        self.calls[op, 0] += 1
        if request.transport is not None:
            request.transport.abort()
        return web.Response()

    # -- operations ----------------------------------------------------------------------------

    async def _create(
        self, request: web.Request, body: bytes, scope: tuple[str, str], headers: dict[str, str]
    ) -> web.StreamResponse:
        _check_json_body(request)
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise _Reject(400, "IVA.0003", "The request body is not valid JSON") from None
        if not isinstance(doc, dict):
            raise _Reject(400, "IVA.0003", "The request body must be a JSON object")
        _validate_create(doc)
        faults = self.faults
        with self._lock:
            self.refresh()
            if faults.quota and len(self.tasks) >= faults.quota:
                raise _Reject(
                    400,
                    "IVA.0012",
                    f"The number of saved tasks exceeds max quota {faults.quota} "
                    "(across services); delete finished jobs first",
                )
            task_id = self._store(doc, scope)
        rng = self._rng
        if faults.p_lost > 0 and rng.random() < faults.p_lost:
            return self._drop(request, "create")
        if faults.p_5xx_after_create > 0 and rng.random() < faults.p_5xx_after_create:
            status = rng.choice((500, 502, 504))
            return self._error("create", headers, _AFTER_CREATE[status])
        if faults.p_slow > 0 and rng.random() < faults.p_slow:
            if not await _sleep(request, faults.slow_seconds):
                return self._drop(request, "create")
            if request.transport is None or request.transport.is_closing():
                self.calls["create", 0] += 1  # the client gave up waiting: nobody hears the 201
                return web.Response()
        return self._answer("create", 201, headers, [{"id": task_id}])

    def _store(self, doc: dict[str, Any], scope: tuple[str, str]) -> str:
        task_id = uuid.uuid4().hex
        now = self._clock()
        wall = self._wall(now)
        stamp = _stamp(wall)
        output = doc["output"]
        task: dict[str, Any] = {
            "id": task_id,
            "name": doc["name"],
            "creator": "emulator",
            "project_id": scope[0],
            "description": doc.get("description", ""),
            "service_name": scope[1],
            "service_version": doc["service_version"],
            "created_at": stamp,
            "updated_at": stamp,
            "state": "PENDING",
            "status": _PENDING_STATUS,
            "error": None,
            "input": doc["input"],
            "output": output,
            "service_config": doc.get("service_config"),
            "timing": doc.get("timing"),
        }
        for optional in ("resource_order_id", "edge_pool_id"):
            if optional in doc:
                task[optional] = doc[optional]
        self.tasks[task_id] = task
        if self.faults.list_lag > 0:
            self._listed_from[task_id] = now + self.faults.list_lag
        store = self._scopes.get(scope)
        if store is None:
            store = self._scopes[scope] = _Scope()
        store.add(task, int(wall) * 1000)
        source = doc["input"]
        self.sources_of[task_id] = [
            f"obs://{item['bucket']}/{item['path']}" if source["type"] == "obs" else item["url"]
            for item in source["data"]
        ]
        self.created_total += 1
        lifecycle = self.faults.jobs
        hosting = "hosting" in output
        self._lives[task_id] = _Life(wall, hosting, lifecycle.real(lifecycle.hosting_ttl))
        u = self._draws()
        steps = _plan(lifecycle, now, u, hosting=hosting, restart=False)
        self._redirect(task_id, _vanishing(lifecycle, now, u, steps))
        return task_id

    async def _list(
        self, request: web.Request, body: bytes, scope: tuple[str, str], headers: dict[str, str]
    ) -> web.StreamResponse:
        """VAS's filters, order and paging. ``offset`` counts the jobs skipped (0: the first
        page; VAS documents 1 to 100000 and is unclear on the first page). Without ``limit``
        at most 1000 jobs are answered, as VAS does without paging parameters."""
        query = request.query
        offset = _int_param(query, "offset", 0, 0, 100000)
        limit = _int_param(query, "limit", 1000, 1, 100) if "limit" in query else 1000
        field, _, direction = query.get("order", "created_at:DESC").partition(":")
        if field not in _ORDER_FIELDS or direction not in ("ASC", "DESC"):
            raise _invalid("order must be name, created_at or updated_at, then :ASC or :DESC")
        state = query.get("state")
        if state is not None and state not in STATES:
            raise _invalid(f"state {state!r} is not a job state")
        since = _int_param(query, "created_since", -1, 0, None)
        until = _int_param(query, "created_until", -1, 0, None)
        with self._lock:
            count, page = self._select(scope, query, offset, limit, field, direction, since, until)
        return self._answer("list", 200, headers, {"count": count, "tasks": page})

    def _unlisted(self) -> frozenset[str]:
        """Jobs ``list_lag`` still hides (the ones whose lag is over are forgotten): a lagging
        index leaves them out of ``count`` and of the paging too, not only of the page."""
        if not self._listed_from:
            return frozenset()
        now = self._clock()
        for task_id in [i for i, at in self._listed_from.items() if at <= now]:
            del self._listed_from[task_id]
        return frozenset(self._listed_from)

    def _select(
        self,
        scope: tuple[str, str],
        query: Mapping[str, str],
        offset: int,
        limit: int,
        field: str,
        direction: str,
        since: int,
        until: int,
    ) -> tuple[int, list[dict[str, Any]]]:
        """The list's matches (how many, and the page), under the lock. Without filters other
        than the created window, pages in created or updated order cost the page."""
        self.refresh()
        store = self._scopes.get(scope) or _Scope()
        tasks, lives = store.tasks, self._lives
        descending = direction == "DESC"
        low, high = store.window(since, until)
        windowed = (low, high) != (0, len(store.ids))
        keep: list[Callable[[dict[str, Any]], bool]] = []
        if (version := query.get("service_version")) is not None:
            keep.append(lambda task: task["service_version"] == version)
        if (state := query.get("state")) is not None:
            keep.append(lambda task: task["state"] == state)
        if id_like := query.get("id_like"):
            keep.append(lambda task: id_like in task["id"])
        if hidden := self._unlisted():
            keep.append(lambda task: task["id"] not in hidden)
        name_like = query.get("name_like")
        if not keep and not name_like and field != "name":
            # Only the created window (if any) filters: count it by bisection, page directly.
            if field == "created_at":
                first = high - offset - limit if descending else low + offset
                ids = store.ids[max(low, first) : max(low, min(high, first + limit))]
                if descending:
                    ids.reverse()
                return high - low, [tasks[task_id] for task_id in ids]
            ordered: Iterable[str] = (
                reversed(store.by_updated) if descending else iter(store.by_updated)
            )
            if windowed:
                ordered = (i for i in ordered if since <= lives[i].created_ms and (
                    until < 0 or lives[i].created_ms <= until))  # fmt: skip
            ids = list(itertools.islice(ordered, offset, offset + limit))
            return high - low, [tasks[task_id] for task_id in ids]
        if windowed:
            keep.append(lambda task: since <= lives[task["id"]].created_ms and (
                until < 0 or lives[task["id"]].created_ms <= until))  # fmt: skip
        candidates: Iterable[dict[str, Any]]
        if name_like:
            candidates = store.named_like(name_like)  # creation order
            if field == "updated_at":
                position = {task_id: i for i, task_id in enumerate(store.by_updated)}
                candidates.sort(key=lambda task: position[task["id"]])
        elif field == "updated_at":
            candidates = (tasks[task_id] for task_id in store.by_updated)
        elif windowed:
            candidates = (tasks[task_id] for task_id in store.ids[low:high])
            keep.pop()  # the slice is the window
        else:
            candidates = tasks.values()  # creation order
        if len(keep) == 1:
            found = list(filter(keep[0], candidates))
        else:
            found = [task for task in candidates if all(test(task) for test in keep)]
        # Ties (names) are broken by creation order, in the direction of the sort.
        if descending:
            found.reverse()
        if field == "name":
            found.sort(key=lambda task: task["name"], reverse=descending)
        return len(found), found[offset : offset + limit]

    async def _show(
        self, request: web.Request, body: bytes, scope: tuple[str, str], headers: dict[str, str]
    ) -> web.StreamResponse:
        with self._lock:
            self.refresh()
            task = self._find(request, scope)
            life = self._lives[task["id"]]
            if life.hosting is not None:
                task = {**task, "hosting_result": _hosting_result(task, life)}
        return self._answer("show", 200, headers, task)

    async def _delete(
        self, request: web.Request, body: bytes, scope: tuple[str, str], headers: dict[str, str]
    ) -> web.StreamResponse:
        """202, then DELETING for ``Lifecycle.deleting``, then gone (the quota counts it till
        then). A second delete while DELETING is 202 again and changes nothing."""
        with self._lock:
            self.refresh()
            task = self._find(request, scope)
            task_id = task["id"]
            if task["state"] != "DELETING":
                self.deleted[task_id] = task["state"]
                now = self._clock()
                later = now + self.faults.jobs.real(self.faults.jobs.deleting)
                self._redirect(task_id, [_Step(now, "DELETING"), _Step(later, gone=True)])
        return self._accepted("delete", headers)

    async def _stop(
        self, request: web.Request, body: bytes, scope: tuple[str, str], headers: dict[str, str]
    ) -> web.StreamResponse:
        """A pending, starting or running job (or one in a state outside VAS's list) goes
        STOPPING, then STOPPED; a stopping or stopped one is left as it is; others are 400."""
        with self._lock:
            self.refresh()
            task = self._find(request, scope)
            state = task["state"]
            if state in _STOPPABLE or state not in STATES:
                now = self._clock()
                later = now + self.faults.jobs.real(self.faults.jobs.stopping)
                self._redirect(task["id"], [_Step(now, "STOPPING"), _Step(later, "STOPPED")])
            elif state not in ("STOPPING", "STOPPED"):
                raise _invalid(f"the job is {state}: only a pending or running job can be stopped")
        return self._accepted("stop", headers)

    async def _start(
        self, request: web.Request, body: bytes, scope: tuple[str, str], headers: dict[str, str]
    ) -> web.StreamResponse:
        """A stopped, frozen or finished job runs again: STARTING, RUNNING, then an outcome
        drawn afresh (a hosting result is generated anew); a started one is left as it is."""
        with self._lock:
            self.refresh()
            task = self._find(request, scope)
            state = task["state"]
            if state in _STARTABLE:
                task_id = task["id"]
                now = self._clock()
                lifecycle = self.faults.jobs
                u = self._draws()
                hosting = self._lives[task_id].hosting is not None
                steps = _plan(lifecycle, now, u, hosting=hosting, restart=True)
                first = _Step(now, "STARTING", hosting="NOT_GENERATED" if hosting else None)
                self._redirect(task_id, [first, *steps])
            elif state not in _STARTED:
                raise _invalid(f"the job is {state}: it cannot be started")
        return self._accepted("start", headers)

    def _accepted(self, op: str, headers: dict[str, str]) -> web.Response:
        self.calls[op, 202] += 1
        del headers["Content-Type"]  # 202 has no body
        return web.Response(status=202, headers=headers)

    def _find(self, request: web.Request, scope: tuple[str, str]) -> dict[str, Any]:
        task_id = request.match_info["task_id"]
        store = self._scopes.get(scope)
        task = store.tasks.get(task_id) if store is not None else None
        if task is None:
            raise _Reject(404, "IVA.0005", f"The job {task_id!r} does not exist")
        return task


_CLOSING: Final = web.AppKey("batchsubmit_emulator_closing", asyncio.Event)

_AFTER_CREATE: Final = {
    500: _Reject(500, "IVA.0006", "Internal error"),
    502: _Reject(502, "APIG.0202", "Backend unavailable."),
    504: _Reject(504, "APIG.0201", "Backend timeout."),
}


def _auth_error(detail: str) -> _Reject:
    return _Reject(401, "APIGW.0301", f"Incorrect IAM authentication information: {detail}")


def _retry_after(headers: dict[str, str], faults: Faults) -> None:
    if faults.retry_after is not None:
        headers["Retry-After"] = f"{faults.retry_after:g}"


def _int_param(
    query: Mapping[str, str], name: str, default: int, low: int, high: int | None
) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
    if not _INT_RE.fullmatch(raw):
        raise _invalid(f"{name} must be an integer {bounds}, not {raw!r}")
    value = int(raw)
    if value < low or (high is not None and value > high):
        raise _invalid(f"{name} must be {bounds}, not {value}")
    return value


async def _sleep(request: web.Request, seconds: float) -> bool:
    """Sleep, unless the server shuts down first (then False: the caller drops the call)."""
    closing = request.app[_CLOSING]
    try:
        async with asyncio.timeout(seconds):
            await closing.wait()
    except TimeoutError:
        return True
    return False


async def _wake_sleepers(app: web.Application) -> None:
    app[_CLOSING].set()


async def _not_found(request: web.Request) -> web.Response:
    request_id = uuid.uuid4().hex
    body = {
        "error_code": "APIG.0101",
        "error_msg": "The API does not exist or has not been published in the environment",
        "request_id": request_id,
    }
    return web.Response(
        status=404,
        body=orjson.dumps(body),
        headers={"X-Request-Id": request_id},
        content_type=_JSON,
    )


async def _not_emulated(
    request: web.Request, body: bytes, scope: tuple[str, str], headers: dict[str, str]
) -> web.StreamResponse:
    """update: after the common checks, a plain 'not emulated' in VAS's error format (501:
    it is the emulator that lacks it, not the request that is wrong)."""
    raise _Reject(
        501,
        "EMU.0501",
        "Not emulated: the batchsubmit emulator does not emulate update "
        "(PUT /v2/{project_id}/services/{service_name}/tasks/{task_id}); the real VAS does",
    )


# VAS's pattern for task ids, as its 400 answers quote it.


def _check_task_id(request: web.Request) -> None:
    """A malformed task id is 400 IVA.0004 quoting the pattern (VAS's answer), not 404."""
    task_id = request.match_info.get("task_id")
    if task_id is not None and not TASK_ID.fullmatch(task_id):
        raise _invalid(f"task_id {task_id!r} does not match {TASK_ID_PATTERN}")


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request as ``--log-requests`` shows it. Never a header or a body: no secret."""

    method: str
    path: str
    """The path and query string, as sent."""
    status: int
    """0: the connection was dropped without an answer."""
    error_code: str
    """The answer's ``error_code``; empty on success."""
    request_id: str

    def __str__(self) -> str:
        status = str(self.status) if self.status else "dropped"
        return (
            f"{self.method} {self.path} {status} {self.error_code or '-'} {self.request_id or '-'}"
        )


def _request_logger(sink: Callable[[RequestRecord], None]) -> Middleware:
    @web.middleware
    async def log(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            sink(_record(request, exc))
            raise
        sink(_record(request, response))
        return response

    return log


def _record(request: web.Request, response: web.StreamResponse) -> RequestRecord:
    transport = request.transport
    status = 0 if transport is None or transport.is_closing() else response.status
    code = ""
    body = response.body if isinstance(response, web.Response) else None
    if status >= 400 and isinstance(body, bytes) and body.startswith(b"{"):
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            doc = None
        if isinstance(doc, dict):
            code = str(doc.get("error_code") or "")
    return RequestRecord(
        method=request.method,
        path=request.raw_path,
        status=status,
        error_code=code,
        request_id=response.headers.get("X-Request-Id", ""),
    )


# -- the create body, as the API reference describes it ------------------------------------------


def _check_json_body(request: web.Request) -> None:
    """A create's body declared JSON (``application/json``, parameters allowed), as every
    official SDK call and the signing test vectors send it. What VAS answers to another or no
    Content-Type is not documented: 400 IVA.0003 (the body is not JSON), an answer that is
    clearly not a create, is the safe one for a client. (aiohttp's ``content_type`` would
    default a missing header to application/octet-stream: the raw header is read.)"""
    declared = request.headers.get("Content-Type")
    if declared is None:
        raise _Reject(
            400,
            "IVA.0003",
            "The Content-Type header is missing: send Content-Type: application/json",
        )
    if declared.partition(";")[0].strip().lower() != _JSON:
        shown = declared if declared.isprintable() and len(declared) <= 100 else "..."
        raise _Reject(
            400,
            "IVA.0003",
            f"Content-Type {shown!r} is not JSON: send Content-Type: application/json",
        )


def _validate_create(doc: dict[str, Any]) -> None:
    """Raise 400 IVA.0004 naming the first wrong field of a create body."""
    problem = vas.body_problem(doc)  # every field VAS's models have, of its type; no other
    if problem is not None:
        raise _invalid(f"{problem[0]} {problem[1]}")
    name = doc.get("name")
    if not isinstance(name, str) or not vas.JOB_NAME_SERVED.fullmatch(name):
        raise _invalid("name must be 1 to 100 letters, digits, '-', '_' or Chinese characters")
    version = doc.get("service_version")
    if not isinstance(version, str) or not vas.SERVICE_VERSION.fullmatch(version):
        raise _invalid("service_version must be two integers 0-999 joined by a dot, e.g. '1.0'")
    if "description" in doc:
        description = doc["description"]
        if not isinstance(description, str) or len(description) > 500:
            raise _invalid("description must be a string of at most 500 characters")
    _validate_input(doc.get("input"))
    if "timing" in doc and doc["input"]["type"] == "obs":
        raise _invalid("timing is not allowed with an obs input")
    _validate_output(doc.get("output"))


def _validate_input(value: object) -> None:
    if not isinstance(value, dict):
        raise _invalid("input is required: {'type': 'obs', 'data': [{'bucket': ..., 'path': ...}]}")
    kind = value.get("type")
    if kind not in ("obs", "url"):
        raise _invalid(f"input.type must be 'obs' or 'url' (the emulator's), not {kind!r}")
    data = value.get("data")
    if not isinstance(data, list) or not data:
        raise _invalid("input.data must be a non-empty list")
    for i, item in enumerate(data):
        where = f"input.data[{i}]"
        if not isinstance(item, dict):
            raise _invalid(f"{where} must be an object")
        if kind == "obs":
            _check_bucket(item.get("bucket"), f"{where}.bucket")
            _check_text(item.get("path"), f"{where}.path")
            if len(item["path"].encode()) > vas.OBS_KEY_MAX_BYTES:
                raise _invalid(f"{where}.path is longer than an OBS key (1,024 bytes)")
        else:
            _check_url(item.get("url"), f"{where}.url")


def _validate_output(value: object) -> None:
    if not isinstance(value, dict) or not value:
        raise _invalid(
            "output is required, with at least one of obs, dis, webhook, hosting, localpath"
        )
    for kind, target in value.items():
        where = f"output.{kind}"
        if not isinstance(target, dict):
            raise _invalid(f"{where} must be an object")
        if kind == "obs":
            _check_bucket(target.get("bucket"), f"{where}.bucket")
            _check_text(target.get("path"), f"{where}.path")
        elif kind == "dis":
            _check_text(target.get("stream_name"), f"{where}.stream_name")
        elif kind == "webhook":
            _check_url(target.get("url"), f"{where}.url")
            _check_webhook_headers(target.get("headers"), f"{where}.headers")
        elif kind == "localpath":
            _check_text(target.get("mount_source_path"), f"{where}.mount_source_path")
        elif kind != "hosting":
            raise _invalid(
                f"unknown output type {kind!r}; allowed: obs, dis, webhook, hosting, localpath"
            )


def _check_webhook_headers(value: object, where: str) -> None:
    """VAS requires 1 to 10 headers on a webhook output, names and values strings."""
    if not isinstance(value, dict) or not 1 <= len(value) <= 10:
        raise _invalid(f"{where} is required: an object of 1 to 10 header names and values")
    for name, header in value.items():
        if not name or not isinstance(header, str):
            raise _invalid(f"{where}.{name} must be a string (a header value)")


def _is_utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _check_text(value: object, where: str) -> None:
    if not isinstance(value, str) or not value:
        raise _invalid(f"{where} must be a non-empty string")


def _check_bucket(value: object, where: str) -> None:
    if not isinstance(value, str) or not valid_bucket(value):
        raise _invalid(
            f"{where} must be an OBS bucket name: 3 to 63 lowercase letters, digits, "
            f"'-' or '.', not {value!r}"
        )


def _check_url(value: object, where: str) -> None:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise _invalid(f"{where} must be an http:// or https:// URL")
    if len(value) > 1000:
        raise _invalid(f"{where} must be at most 1000 characters")
