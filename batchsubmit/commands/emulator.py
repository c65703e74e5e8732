"""``batchsubmit emulator``: the VAS emulator standalone (and behind options a fake IAM and
ECS metadata) until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from ..errors import UsageError
from ..progress import Log
from .common import Env

if TYPE_CHECKING:
    from ..emulator import Faults


@dataclass(frozen=True)
class EmulatorResult:
    """What the emulator did while it ran (the IAM counts only when it served identity)."""

    jobs: int
    identity: bool
    tokens_issued: int = 0
    credentials_issued: int = 0
    refused_expired: int = 0


def faults(args: argparse.Namespace) -> Faults:
    """The emulator's faults and job lives from its options (ValueError if they conflict)."""
    from ..emulator import Faults, Lifecycle

    return Faults(
        p503=args.p503,
        rate_limit=args.rate_limit,
        latency=args.latency,
        p_lost=args.lost,
        p_5xx_after_create=args.error_after_create,
        p_slow=args.slow,
        slow_seconds=args.slow_seconds,
        retry_after=args.retry_after,
        quota=args.quota,
        seed=args.seed,
        jobs=Lifecycle(
            time_scale=args.time_scale,
            p_failed=args.p_failed,
            p_create_failed=args.p_create_failed,
            p_start_failed=args.p_start_failed,
            p_unknown_state=args.p_unknown_state,
            p_vanish=args.p_vanish,
            p_hosting_late=args.p_hosting_late,
            p_frozen=args.p_frozen,
        ),
    )


def run(args: argparse.Namespace, log: Log, env: Env) -> EmulatorResult:
    from ..emulator import (
        EMULATOR_AK,
        EMULATOR_PROJECT_ID,
        EMULATOR_SK,
        Emulator,
        RequestRecord,
    )
    from ..emulator_iam import IdentityOptions

    try:
        chosen = faults(args)
    except ValueError as exc:  # e.g. fate shares that add up to more than 1
        raise UsageError(f"emulator: {exc}") from None
    identity = IdentityOptions(
        users=tuple(args.iam_user),
        projects_api=True,  # GET /v3/projects?name=REGION: project id discovery, as the SDK does
        token_ttl=args.token_ttl,
        metadata=args.metadata,
        agency=not args.no_agency,
        credential_ttl=args.credential_ttl,
        region=args.region,
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

    async def serve() -> EmulatorResult:
        emulator = Emulator(
            chosen,
            identity=identity,
            request_log=log_request if args.log_requests else None,
        )
        async with emulator.serve(args.host, args.port) as url:
            log.line(
                "info",
                f"VAS emulator listening on {url} (project {EMULATOR_PROJECT_ID}, quota "
                f"{args.quota or 'unlimited'}); Ctrl-C stops it. Point a run at it with the "
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
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
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

    result: EmulatorResult = anyio.run(serve)
    return result
