"""``batchsubmit check``: credentials, endpoint, subscription, quota and buckets; no create."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..client import open_session
from ..credentials import Choice, find_source, region_of
from ..engine.loop import run as run_loop
from ..errors import CredentialError
from ..manifest import load_manifest
from ..progress import Log
from ..results import Format, format_for
from .common import Env, check_endpoint, default_results, real, warner

DEFAULT_TIMEOUT = 5.0  # seconds each network step may take
DEFAULT_QUOTA = 5000  # saved jobs: VAS's quota


@dataclass(frozen=True, kw_only=True)
class CheckOptions:
    """``batchsubmit check``: the manifest, the endpoints to use instead of the manifest's
    (None: the manifest's), the results file whose ledger is counted (None: beside the
    manifest) and its format, the seconds each step may take, and the account's quota."""

    manifest: Path
    endpoint: str | None = None
    obs_endpoint: str | None = None
    results: Path | None = None
    format: Format | None = None
    timeout: float = DEFAULT_TIMEOUT
    quota: int = DEFAULT_QUOTA


@dataclass(frozen=True)
class CheckResult:
    """Every check's result, in order; ``failed`` are those with status FAIL."""

    found: tuple[Any, ...]

    @property
    def failed(self) -> list[Any]:
        return [r for r in self.found if r.status == "FAIL"]


def run(options: CheckOptions, log: Log, env: Env) -> CheckResult:
    from ..check import PREFIXES_AT_ONCE, CheckPlan, run_checks

    manifest = load_manifest(options.manifest)
    base = check_endpoint(options.endpoint) if options.endpoint else manifest.service.endpoint
    obs = (
        check_endpoint(options.obs_endpoint, "--obs-endpoint")
        if options.obs_endpoint
        else manifest.service.obs_endpoint
    )
    fmt: Format = (
        format_for(options.results, options.format)
        if options.results
        else (options.format or "csv")
    )
    results = real(options.results or default_results(manifest.path, False, fmt), "--results")
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
        timeout=options.timeout,
        quota=options.quota,
    )

    async def checks() -> list[Any]:
        # a connection for each prefix checked side by side, else they queue for one
        async with open_session(PREFIXES_AT_ONCE) as session:
            return await run_checks(plan, session, warner(log))

    return CheckResult(tuple(run_loop(checks)))
