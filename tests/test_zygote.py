"""The tests' fork server (tests/zygote.py) runs a command as ``python -m batchsubmit`` would."""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

from tests.helpers import cli, cli_env, real_cli, video_keys, write_manifest, zygote_socket

TIME = re.compile(r"^\S+Z ", re.MULTILINE)  # a log line's time


def _both(args: list[str], cwd: Path, env: dict[str, str]) -> list[tuple[int, str, str]]:
    """The exit code, stdout and stderr (log times taken out) of the forked and the real."""
    done = [
        subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=60)
        for command in (cli(*args), real_cli(*args))
    ]
    return [(d.returncode, d.stdout, TIME.sub("", d.stderr)) for d in done]


def test_a_forked_command_answers_as_the_real_one(tmp_path: Path) -> None:
    """Same exit code, stdout and stderr: arguments, working directory (a relative path),
    environment (HOME, where no profile file is) and non-UTF-8 bytes all reach it."""
    assert zygote_socket(), "the fork server did not come up: every test would pay the imports"
    write_manifest(tmp_path, video_keys(3))
    env = {**cli_env(), "HOME": str(tmp_path)}
    for args in (["expand", "nightly.toml"], ["expand", "missing\udcff.toml"], ["--version"]):
        forked, real = _both(args, tmp_path, env)
        assert forked == real
        assert forked[1] or forked[2]
    assert "batchsubmit" in forked[1] + forked[2]


def test_a_signal_to_the_client_is_the_commands() -> None:
    """SIGTERM to the client reaches the command, whose own exit code is the client's: the
    same as the real process gives. For `batchsubmit emulator` once it has said where it
    listens, that is 0 ("emulator stopped"): it said so before its signal receiver was in
    place, and a script stopping it on that line got 143 about one time in three."""
    codes = []
    for command in (cli("emulator", "--port", "0"), real_cli("emulator", "--port", "0")):
        process = subprocess.Popen(command, env=cli_env(), stderr=subprocess.PIPE, text=True)
        assert process.stderr is not None
        process.stderr.readline()  # the emulator says where it listens: the command runs
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
        codes.append(process.returncode)
    assert codes == [0, 0], codes
