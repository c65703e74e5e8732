"""``batchsubmit check``: credentials, endpoint, subscription, quota and buckets; no create."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

import anyio

from ..client import open_session
from ..credentials import Choice, find_source, region_of
from ..errors import CredentialError
from ..manifest import load_manifest
from ..progress import Log
from ..results import format_for
from .common import Env, check_endpoint, default_results, real, warner


@dataclass(frozen=True)
class CheckResult:
    """Every check's result, in order; ``failed`` are those with status FAIL."""

    found: tuple[Any, ...]

    @property
    def failed(self) -> list[Any]:
        return [r for r in self.found if r.status == "FAIL"]


def run(args: argparse.Namespace, log: Log, env: Env) -> CheckResult:
    from ..check import CheckPlan, run_checks

    manifest = load_manifest(args.manifest)
    base = check_endpoint(args.endpoint) if args.endpoint else manifest.service.endpoint
    obs = (
        check_endpoint(args.obs_endpoint, "--obs-endpoint")
        if args.obs_endpoint
        else manifest.service.obs_endpoint
    )
    fmt = format_for(args.results, args.format) if args.results else (args.format or "csv")
    results = real(args.results or default_results(manifest.path, False, fmt))
    region = region_of(manifest.service.endpoint)
    choice: Choice | CredentialError
    try:
        choice = find_source(
            env.environ,
            home=env.home(),
            warn=warner(log),
            project_id=manifest.service.project_id,
            region=region,
        )
    except CredentialError as exc:
        choice = exc
    plan = CheckPlan(
        manifest=manifest,
        base_url=base,
        obs_endpoint=obs,
        choice=choice,
        region=region,
        results=results,
        format=fmt,
        proxy=env.proxy_for(base),
        timeout=args.timeout,
        quota=args.quota,
    )

    async def checks() -> list[Any]:
        async with open_session(4) as session:
            return await run_checks(plan, session, warner(log))

    return CheckResult(tuple(anyio.run(checks)))
