"""``batchsubmit emulator`` exactly as the CLI runs it, plus an observer for the chaos test.

Usage: python tests/chaos/observed_emulator.py [batchsubmit emulator options...]

Environment:
  CHAOS_FOLLOW   the follow record (<results>.follow.jsonl) to judge every DELETE against
  CHAOS_COLLECT  the --collect folder (may be empty: nothing is collected)

What it adds, without changing the emulator's behaviour:
  GET /_chaos/truth  (unsigned, test-only) JSON: every job ever created with its inputs, name,
                     state now, what is gone and why, and the delete violations seen so far.
  On every DELETE that reaches a live job (not already DELETING), the follow record on disk at
  that instant is read: the job must be recorded final in a real final state, and the
  service's own state must be final; a job whose hosting result is AVAILABLE must be recorded
  COLLECTED with its file saved. A breach is kept in the truth's ``delete_violations``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from batchsubmit import emulator as emu
from batchsubmit.cli import main

REAL_FINAL = {"SUCCEEDED", "FAILED", "CREATE_FAILED", "START_FAILED"}
VIOLATIONS: list[dict[str, Any]] = []
DELETES: list[dict[str, Any]] = []


def _record_lines(path: Path) -> list[dict[str, Any]]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    out = []
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # a torn last line
        if isinstance(doc, dict):
            out.append(doc)
    return out


def _judge_delete(self: emu.Emulator, task_id: str) -> None:
    task = self.tasks.get(task_id)
    if task is None or task["state"] == "DELETING":
        return
    life = self._lives.get(task_id)
    hosting = life.hosting if life is not None else None
    follow = os.environ.get("CHAOS_FOLLOW", "")
    collect = os.environ.get("CHAOS_COLLECT", "")
    lines = [d for d in _record_lines(Path(follow)) if d.get("job_id") == task_id] if follow else []
    problems = []
    if task["state"] not in REAL_FINAL:
        problems.append(f"service state {task['state']} is not final")
    if not any(d.get("final") is True and d.get("state") in REAL_FINAL for d in lines):
        problems.append("no final state recorded in the follow record before the delete")
    if task["state"] == "SUCCEEDED" and hosting == "NOT_GENERATED":
        problems.append("SUCCEEDED with its hosting result NOT_GENERATED is not final")
    if hosting == "AVAILABLE":
        if not any(d.get("hosting_status") == "COLLECTED" for d in lines):
            problems.append("hosting result AVAILABLE but not recorded COLLECTED")
        saved = Path(collect) / f"{task['name']}.{task_id}.json" if collect else None
        if saved is None or not saved.exists():
            problems.append(f"hosting result AVAILABLE but no file {saved}")
    entry = {
        "job_id": task_id,
        "name": task["name"],
        "state": task["state"],
        "hosting": hosting,
        "at": time.time(),
        "recorded": [(d.get("state"), d.get("final"), d.get("hosting_status")) for d in lines],
    }
    DELETES.append(entry)
    if problems:
        VIOLATIONS.append({**entry, "problems": problems})


NAMES: dict[str, str] = {}
ORDER: dict[str, int] = {}  # creation order
_original_store = emu.Emulator._store


def _store(self: emu.Emulator, doc: dict[str, Any], scope: tuple[str, str]) -> str:
    task_id = _original_store(self, doc, scope)
    NAMES[task_id] = str(doc.get("name"))
    ORDER[task_id] = len(ORDER)
    return task_id


_original_delete = emu.Emulator._delete
_original_app = emu.Emulator.app


async def _delete(
    self: emu.Emulator,
    request: web.Request,
    body: bytes,
    scope: tuple[str, str],
    headers: dict[str, str],
) -> web.StreamResponse:
    with self._lock:
        self.refresh()
        _judge_delete(self, request.match_info.get("task_id", ""))
    return await _original_delete(self, request, body, scope, headers)


def _truth(self: emu.Emulator) -> dict[str, Any]:
    with self._lock:
        self.refresh()
        jobs = {}
        for task_id, inputs in self.sources_of.items():
            task = self.tasks.get(task_id)
            jobs[task_id] = {
                "seq": ORDER.get(task_id, -1),
                "inputs": inputs,
                "state": None if task is None else task["state"],
                "name": NAMES.get(task_id),
                "gone": self.gone.get(task_id),
                "deleted_in": self.deleted.get(task_id),
            }
        return {
            "jobs": jobs,
            "created_total": self.created_total,
            "delete_violations": VIOLATIONS,
            "deletes": len(DELETES),
        }


def _app(self: emu.Emulator) -> web.Application:
    app = _original_app(self)

    @web.middleware
    async def truth(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == "/_chaos/truth":
            return web.Response(body=orjson.dumps(_truth(self)), content_type="application/json")
        result: web.StreamResponse = await handler(request)
        return result

    app.middlewares.insert(0, truth)
    return app


emu.Emulator._store = _store  # type: ignore[method-assign]
emu.Emulator._delete = _delete  # type: ignore[method-assign]
emu.Emulator.app = _app  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main(["emulator", *sys.argv[1:]]))
