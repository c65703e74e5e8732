"""``batchsubmit expand``: the manifest's job specs as JSONL on stdout; no network."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..manifest import load_manifest
from ..progress import Log
from ..render import spec_lines
from ..runner import ExpandSummary, plan
from ..sources import ExpandStats
from .common import Env, warner


@dataclass(frozen=True, kw_only=True)
class ExpandOptions:
    """``batchsubmit expand``: the manifest whose job specs are printed."""

    manifest: Path


def run(options: ExpandOptions, log: Log, env: Env) -> ExpandStats:
    """Write the specs as they are planned (a long listing streams) and return the counts."""
    manifest = load_manifest(options.manifest)
    summary = ExpandSummary(ExpandStats())
    env.write(spec_lines(plan(manifest, None, (), summary, warner(log)), None))
    return summary.expand
