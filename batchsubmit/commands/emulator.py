"""``batchsubmit emulator``: the VAS emulator standalone (and behind options a fake IAM and
ECS metadata) until SIGINT or SIGTERM."""

from __future__ import annotations

import signal
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..engine.loop import run as run_loop
from ..engine.loop import signals_received
from ..errors import UsageError
from ..progress import Log
from .common import Env

if TYPE_CHECKING:
    from ..emulator import Faults
    from ..emulator_iam import IamUser


@dataclass(frozen=True, kw_only=True)
class EmulatorOptions:
    """``batchsubmit emulator``: where it listens (port 0 picks a free one); its faults (shares
    of calls, seconds, calls per second per operation, 0 = none; quota 0 = unlimited; seed
    None = random); how its jobs live (emulated seconds per real second, fate shares); the
    fake IAM users, token and temporary-credential lifetimes, ECS metadata with or without an
    agency, the region's project name; and whether each request is logged."""

    host: str = "127.0.0.1"
    port: int = 8080
    p503: float = 0.0
    rate_limit: float = 0.0
    latency: float = 0.0
    lost: float = 0.0
    error_after_create: float = 0.0
    slow: float = 0.0
    slow_seconds: float = 30.0
    list_lag: float = 0.0
    retry_after: float | None = None
    quota: int = 5000
    seed: int | None = None
    time_scale: float = 1.0
    p_failed: float = 0.0
    p_create_failed: float = 0.0
    p_start_failed: float = 0.0
    p_unknown_state: float = 0.0
    p_vanish: float = 0.0
    p_hosting_late: float = 0.0
    p_hosting_too_large: float = 0.0
    p_frozen: float = 0.0
    log_requests: bool = False
    iam_users: tuple[IamUser, ...] = ()
    token_ttl: float = 86400.0  # IAM's 24 h
    metadata: bool = False
    credential_ttl: float = 3600.0
    agency: bool = True
    iam_outage: int = 0
    region: str = "cn-north-4"


@dataclass(frozen=True)
class EmulatorResult:
    """What the emulator did while it ran (the IAM counts only when it served identity)."""

    jobs: int
    identity: bool
    tokens_issued: int = 0
    credentials_issued: int = 0
    refused_expired: int = 0


def faults(options: EmulatorOptions) -> Faults:
    """The emulator's faults and job lives from its options (ValueError if they conflict)."""
    from ..emulator import Faults, Lifecycle

    return Faults(
        p503=options.p503,
        rate_limit=options.rate_limit,
        latency=options.latency,
        p_lost=options.lost,
        p_5xx_after_create=options.error_after_create,
        p_slow=options.slow,
        slow_seconds=options.slow_seconds,
        list_lag=options.list_lag,
        retry_after=options.retry_after,
        quota=options.quota,
        seed=options.seed,
        jobs=Lifecycle(
            time_scale=options.time_scale,
            p_failed=options.p_failed,
            p_create_failed=options.p_create_failed,
            p_start_failed=options.p_start_failed,
            p_unknown_state=options.p_unknown_state,
            p_vanish=options.p_vanish,
            p_hosting_late=options.p_hosting_late,
            p_hosting_too_large=options.p_hosting_too_large,
            p_frozen=options.p_frozen,
        ),
    )


def run(options: EmulatorOptions, log: Log, env: Env) -> EmulatorResult:
    from ..emulator import (
        EMULATOR_AK,
        EMULATOR_PROJECT_ID,
        EMULATOR_SK,
        Emulator,
        RequestRecord,
    )
    from ..emulator_iam import IdentityOptions

    try:
        chosen = faults(options)
    except ValueError as exc:  # e.g. fate shares that add up to more than 1
        raise UsageError(f"emulator: {exc}") from None
    identity = IdentityOptions(
        users=options.iam_users,
        projects_api=True,  # GET /v3/projects?name=REGION: project id discovery, as the SDK does
        token_ttl=options.token_ttl,
        metadata=options.metadata,
        agency=options.agency,
        credential_ttl=options.credential_ttl,
        outage=options.iam_outage,
        region=options.region,
    )

    def log_request(record: RequestRecord) -> None:
        log.line(
            "info",
            f"request {record}",
            method=record.method,
            path=record.path,
            status=record.status,
            error_code=record.error_code,
            request_id=record.request_id,
        )

    def announce(url: str) -> None:
        """Where it listens, and the lines that point a run at it."""
        log.line(
            "info",
            f"VAS emulator listening on {url} (project {EMULATOR_PROJECT_ID}, quota "
            f"{options.quota or 'unlimited'}); Ctrl-C stops it. Point a run at it with the "
            "lines on stdout (the SK is a documented throwaway that opens only this emulator)",
        )
        lines = [
            f"export HUAWEICLOUD_SDK_AK={EMULATOR_AK} HUAWEICLOUD_SDK_SK={EMULATOR_SK} "
            f"HUAWEICLOUD_SDK_PROJECT_ID={EMULATOR_PROJECT_ID}",
            f"# then: batchsubmit submit MANIFEST --endpoint {url}",
        ]
        for user in identity.users:
            lines.append(
                f"# IAM login instead of AK/SK: export HUAWEICLOUD_SDK_IAM_ENDPOINT={url} "
                f"BATCHSUBMIT_IAM_USER={user.name} BATCHSUBMIT_IAM_DOMAIN={user.domain} "
                "BATCHSUBMIT_IAM_PASSWORD=<the password given to --iam-user>"
            )
        if identity.metadata:
            lines.append(
                f"# ECS metadata instead of AK/SK: export BATCHSUBMIT_METADATA_URL={url} "
                f"HUAWEICLOUD_SDK_IAM_ENDPOINT={url}"
            )
        env.print("\n".join(lines))

    async def serve() -> EmulatorResult:
        emulator = Emulator(
            chosen,
            identity=identity,
            request_log=log_request if options.log_requests else None,
        )
        async with AsyncExitStack() as stack:
            try:
                url = await stack.enter_async_context(emulator.serve(options.host, options.port))
            except OSError as exc:  # in use, not this machine's address, a name that resolves not
                raise UsageError(
                    f"emulator: cannot listen on {options.host} port {options.port}: "
                    f"{exc.strerror or exc}"
                ) from None
            # The receiver first: a signal once the lines are out (a script read them and
            # stops it) is always "emulator stopped", exit 0, never the CLI's 143.
            with signals_received(signal.SIGINT, signal.SIGTERM) as received:
                announce(url)
                async for _signum in received:
                    break
        issued = emulator.identity
        return EmulatorResult(
            jobs=len(emulator.tasks),
            identity=bool(identity.users or identity.metadata),
            tokens_issued=issued.tokens_issued,
            credentials_issued=issued.credentials_issued,
            refused_expired=issued.refused_expired,
        )

    result: EmulatorResult = run_loop(serve)
    return result
