"""Credential sources (environment, IAM password, profile file, ECS metadata), their order,
refreshing tokens and temporary credentials before they expire, and secrets kept out of sight."""

from __future__ import annotations

import dataclasses
import io
import os
import pwd
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from aiohttp import web

from batchsubmit.auth import Credentials, Token
from batchsubmit.cli import main
from batchsubmit.client import Endpoint, VasClient, open_session
from batchsubmit.credentials import (
    MARGIN_CAP,
    Choice,
    CredentialProvider,
    EnvKeys,
    IamPassword,
    Issued,
    Metadata,
    Profile,
    Route,
    find_source,
    open_provider,
    refresh_margin,
    region_of,
)
from batchsubmit.emulator import EMULATOR_AK, EMULATOR_PROJECT_ID, EMULATOR_SK, Emulator, Faults
from batchsubmit.emulator_iam import IamUser, IdentityOptions
from batchsubmit.engine.gate import Gate
from batchsubmit.errors import CredentialError, CredentialsUnavailable
from batchsubmit.pool import PoolSettings, RunStats, new_gate
from batchsubmit.retry import RetryPolicy

from .helpers import (
    FAST_RETRY,
    ServerThread,
    config_for,
    header_of,
    rows,
    run_submit,
    serve_app,
    serve_raw,
    video_keys,
    write_manifest,
)

PASSWORD = "pw-DISTINCTIVE-7f3a9c"  # distinctive values: searched for in every output
SECRET_SK = "sk-DISTINCTIVE-0b5e11d2c4"
USER = IamUser("nightly", "acme", PASSWORD)


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No real credential source, proxy or home directory reaches a test; metadata is a closed
    local port, never 169.254.169.254."""
    for name in list(os.environ):
        if name.startswith(("BATCHSUBMIT_", "HUAWEICLOUD_")) or name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("BATCHSUBMIT_METADATA_URL", f"http://127.0.0.1:{closed_port()}")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def choose(env: dict[str, str], home: Path, **kw: Any) -> Choice:
    warnings: list[str] = []
    choice = find_source(env, home=home, warn=warnings.append, **kw)
    return choice


# -- pure parts -----------------------------------------------------------------------------


def test_margin_is_forty_minutes_or_a_tenth_of_the_lifetime() -> None:
    """Refresh 40 minutes early for day-long tokens, a tenth early for short-lived ones."""
    assert refresh_margin(86400) == MARGIN_CAP == 2400
    assert refresh_margin(3600) == 360
    assert refresh_margin(5) == pytest.approx(0.5)
    assert Issued(Token("t"), expires_at=105.0, issued_at=100.0).refresh_at == pytest.approx(104.5)
    assert Issued(Token("t")).refresh_at is None


def test_sources_are_tried_in_the_sdks_order(tmp_path: Path) -> None:
    """Environment keys, then IAM password, then the profile file, then metadata. (Keys and
    a login both named is refused: the next test.)"""
    profile = tmp_path / ".huaweicloud" / "credentials"
    profile.parent.mkdir()
    profile.write_text("[basic]\nak = PROFILEAK\nsk = profile-sk\n")
    profile.chmod(0o600)
    keys = {"HUAWEICLOUD_SDK_AK": "ENVAK", "HUAWEICLOUD_SDK_SK": "env-sk"}
    assert isinstance(choose(keys, tmp_path).source, EnvKeys)
    login = {
        "BATCHSUBMIT_IAM_USER": "u",
        "BATCHSUBMIT_IAM_DOMAIN": "d",
        "BATCHSUBMIT_IAM_PASSWORD": "p",
    }
    assert isinstance(choose(login, tmp_path).source, IamPassword)
    env: dict[str, str] = {}
    found = choose(env, tmp_path).source
    assert isinstance(found, Profile)
    assert found.credentials.ak == "PROFILEAK"
    profile.unlink()
    last = choose({"BATCHSUBMIT_METADATA_URL": "http://127.0.0.1:9"}, tmp_path)
    assert last.source == Metadata("http://127.0.0.1:9")
    starts = ("environment:", "IAM password:", "profile file ")
    assert len(last.tried) == 3
    assert all(t.startswith(s) for t, s in zip(last.tried, starts, strict=True)), last.tried
    assert choose({}, tmp_path).source == Metadata("http://169.254.169.254")


@pytest.mark.parametrize(
    "names",
    [
        ("HUAWEICLOUD_SDK_AK/SK", "BATCHSUBMIT_IAM_USER/DOMAIN/PASSWORD"),
        ("HUAWEICLOUD_SDK_AK/SK", "HUAWEICLOUD_SDK_CREDENTIALS_FILE"),
        ("BATCHSUBMIT_IAM_USER/DOMAIN/PASSWORD", "HUAWEICLOUD_SDK_CREDENTIALS_FILE"),
    ],
)
def test_two_sources_given_by_name_are_refused_naming_both(
    names: tuple[str, str], tmp_path: Path
) -> None:
    """Keys in the environment, an IAM login and a profile file named by its variable: the
    SDK's order would use the first without a word, and which account was meant cannot be
    known. Refused (exit 2) before any request, naming both; no secret in the message."""
    named = tmp_path / "named-credentials"
    named.write_text("[basic]\nak = PROFILEAK\nsk = profile-sk\n")
    named.chmod(0o600)
    given = {
        "HUAWEICLOUD_SDK_AK/SK": {"HUAWEICLOUD_SDK_AK": "ENVAK", "HUAWEICLOUD_SDK_SK": SECRET_SK},
        "BATCHSUBMIT_IAM_USER/DOMAIN/PASSWORD": {"BATCHSUBMIT_IAM_PASSWORD": PASSWORD},
        "HUAWEICLOUD_SDK_CREDENTIALS_FILE": {"HUAWEICLOUD_SDK_CREDENTIALS_FILE": str(named)},
    }
    env = {**given[names[0]], **given[names[1]]}
    with pytest.raises(CredentialError) as caught:
        choose(env, tmp_path)
    assert caught.value.exit_code == 2
    message = str(caught.value)
    assert all(name in message for name in names), message
    assert SECRET_SK not in message
    assert PASSWORD not in message


def test_keys_beside_the_default_profile_file_are_not_a_conflict(tmp_path: Path) -> None:
    """The default profile file (not named) is where keys are looked for when none is given:
    environment keys beside it are used, as the SDK does."""
    profile = tmp_path / ".huaweicloud" / "credentials"
    profile.parent.mkdir()
    profile.write_text("[basic]\nak = PROFILEAK\nsk = profile-sk\n")
    profile.chmod(0o600)
    env = {"HUAWEICLOUD_SDK_AK": "ENVAK", "HUAWEICLOUD_SDK_SK": "env-sk"}
    found = choose(env, tmp_path).source
    assert isinstance(found, EnvKeys)
    assert found.credentials.ak == "ENVAK"


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({"HUAWEICLOUD_SDK_AK": "AK"}, ["HUAWEICLOUD_SDK_SK"]),
        ({"HUAWEICLOUD_SDK_SK": SECRET_SK}, ["HUAWEICLOUD_SDK_AK"]),
        ({"HUAWEICLOUD_SDK_SECURITY_TOKEN": "tok"}, ["HUAWEICLOUD_SDK_AK", "HUAWEICLOUD_SDK_SK"]),
        ({"BATCHSUBMIT_IAM_USER": "u"}, ["BATCHSUBMIT_IAM_DOMAIN", "BATCHSUBMIT_IAM_PASSWORD"]),
        ({"BATCHSUBMIT_IAM_PASSWORD": PASSWORD}, ["BATCHSUBMIT_IAM_USER"]),
    ],
)
def test_a_half_given_set_names_what_is_missing(
    env: dict[str, str], missing: list[str], tmp_path: Path
) -> None:
    """An AK without SK, a user without password: an error naming the missing part, exit 2."""
    with pytest.raises(CredentialError) as caught:
        choose(env, tmp_path)
    for name in missing:
        assert name in str(caught.value)
    assert caught.value.exit_code == 2
    assert SECRET_SK not in str(caught.value)
    assert PASSWORD not in str(caught.value)


def test_values_are_stripped_and_the_project_id_checked(tmp_path: Path) -> None:
    """A trailing CR or space (a file saved on Windows) is stripped; a malformed project id
    is an error before any request."""
    env = {
        "HUAWEICLOUD_SDK_AK": " AK123\r",
        "HUAWEICLOUD_SDK_SK": "sk\r\n",
        "HUAWEICLOUD_SDK_PROJECT_ID": EMULATOR_PROJECT_ID + "\r",
    }
    choice = choose(env, tmp_path)
    assert choice.source == EnvKeys(Credentials("AK123", "sk"))
    assert choice.project_id == EMULATOR_PROJECT_ID
    env["HUAWEICLOUD_SDK_PROJECT_ID"] = "0e0e-not-hex"
    with pytest.raises(CredentialError, match=r"HUAWEICLOUD_SDK_PROJECT_ID.*not a project id"):
        choose(env, tmp_path)


def test_a_profile_project_other_than_the_environments_is_refused(tmp_path: Path) -> None:
    """The profile's keys with HUAWEICLOUD_SDK_PROJECT_ID's project, silently: the SDK pairs
    them with the profile's own project_id. Two answers to one question: refused, naming both
    (the manifest's service.project_id still settles it)."""
    path = tmp_path / "credentials"
    path.write_text(f"[basic]\nak = PAK0\nsk = {SECRET_SK}\nproject_id = {'1' * 32}\n")
    path.chmod(0o600)
    env = {"HUAWEICLOUD_SDK_CREDENTIALS_FILE": str(path), "HUAWEICLOUD_SDK_PROJECT_ID": "0e" * 16}
    with pytest.raises(CredentialError, match="differ") as caught:
        choose(env, tmp_path)
    assert "1" * 32 in str(caught.value)
    assert "0e" * 16 in str(caught.value)
    assert choose(env, tmp_path, project_id="2" * 32).project_id == "2" * 32
    same = {**env, "HUAWEICLOUD_SDK_PROJECT_ID": "1" * 32}
    assert choose(same, tmp_path).project_id == "1" * 32


@pytest.mark.parametrize(
    ("text", "line", "why"),
    [
        (f"[basic]\nak = PAK0\nsk = {SECRET_SK}   ; from My Credentials\n", 3, "inline comment"),
        (f"[basic]\nak = PAK0\nsk = {SECRET_SK}\n  project_id = {'0e' * 16}\n", 3, "indented"),
        (f"[basic]\nak = PAK0\nsk = s\nproject_id = {'0e' * 16}  # optional\n", 4, "inline"),
        ("[basic]\nak = PAK0\nsk = s\nsecurity_token = st0 ; temporary\n", 4, "inline"),
        (f"[basic]\nak = PAK0\nsk {SECRET_SK}\n", 3, "not an INI file"),
        # a comment holding U+2028 is one line, as the SDK reads the file, not two
        (f"# keys\u2028from the console\n[basic]\nak = PAK0\nsk = {SECRET_SK} ; x\n", 4, "inline"),
    ],
)
def test_a_comment_or_indented_line_read_into_a_value_is_named(
    tmp_path: Path, text: str, line: int, why: str
) -> None:
    """configparser reads an inline comment (the README's sample wrote ``; optional``) or an
    indented next line into the value: the SK went out with it, and the user was told the SK
    "does not belong to the AK"; a line without '=' was named without its line."""
    path = tmp_path / "credentials"
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    with pytest.raises(CredentialError, match=why) as caught:
        choose({"HUAWEICLOUD_SDK_CREDENTIALS_FILE": str(path)}, tmp_path)
    assert f"{path}:{line}:" in str(caught.value)
    assert SECRET_SK not in str(caught.value)


def test_a_crlf_profile_with_bom_reads_clean(tmp_path: Path) -> None:
    """A profile file written on Windows: BOM, CRLF, spaces around values."""
    path = tmp_path / "creds.ini"
    path.write_bytes(
        b"\xef\xbb\xbf[basic]\r\nak = PAK0 \r\nsk = " + SECRET_SK.encode() + b"\r\n"
        b"security_token = st0\r\nproject_id = " + EMULATOR_PROJECT_ID.encode() + b"\r\n"
    )
    path.chmod(0o600)
    choice = choose({"HUAWEICLOUD_SDK_CREDENTIALS_FILE": str(path)}, tmp_path)
    assert choice.source == Profile(
        path, Credentials("PAK0", SECRET_SK, "st0"), EMULATOR_PROJECT_ID
    )
    assert choice.project_id == EMULATOR_PROJECT_ID
    assert SECRET_SK not in repr(choice)


def test_profile_problems_are_named(tmp_path: Path) -> None:
    """A profile readable by others warns; a named file that is missing, or has no sk, is an
    error naming the file."""
    path = tmp_path / "creds.ini"
    path.write_text("[basic]\nak = PAK0\nsk = s\n")
    path.chmod(0o644)
    warnings: list[str] = []
    find_source(
        {"HUAWEICLOUD_SDK_CREDENTIALS_FILE": str(path)}, home=tmp_path, warn=warnings.append
    )
    assert warnings
    assert "chmod 600" in warnings[0]
    path.write_text("[basic]\nak = PAK0\n")
    with pytest.raises(CredentialError, match=r"creds\.ini: \[basic\] has no sk"):
        choose({"HUAWEICLOUD_SDK_CREDENTIALS_FILE": str(path)}, tmp_path)
    with pytest.raises(CredentialError, match="no such file"):
        choose({"HUAWEICLOUD_SDK_CREDENTIALS_FILE": str(tmp_path / "nope")}, tmp_path)


@pytest.mark.parametrize(
    ("variable", "env"),
    [
        ("HUAWEICLOUD_SDK_CREDENTIALS_FILE", {}),
        ("BATCHSUBMIT_IAM_TOKEN_CACHE",
         {"BATCHSUBMIT_IAM_USER": "u", "BATCHSUBMIT_IAM_DOMAIN": "d",
          "BATCHSUBMIT_IAM_PASSWORD": "p"}),
    ],
)  # fmt: skip
def test_a_path_for_a_user_that_does_not_exist_is_named(
    tmp_path: Path, variable: str, env: dict[str, str]
) -> None:
    """``~nosuchuser/...`` in a path variable: an error naming the variable (exit 2); it was
    a RuntimeError traceback from Path.expanduser."""
    env = {**env, variable: "~nosuchuser-4c1e/creds"}
    with pytest.raises(CredentialError, match=f"{variable}.*~nosuchuser-4c1e"):
        choose(env, tmp_path)


@pytest.mark.parametrize(
    ("given", "relative"),
    [
        ("~/creds.ini", "creds.ini"),
        ("~//creds.ini", "creds.ini"),
        ("~/a/../creds.ini", "a/../creds.ini"),
    ],
)
def test_a_path_from_home_is_under_the_given_home_not_home_variable(
    tmp_path: Path, given: str, relative: str
) -> None:
    """``~`` and ``~/...`` in a path variable are the ``home`` find_source is given (the CLI
    passes it; only the CLI reads the environment), never $HOME, which the autouse fixture
    sets to another directory. ``~//x`` is still under the home, not the root."""
    home = tmp_path / "given-home"
    (home / "a").mkdir(parents=True)
    profile = home / "creds.ini"
    profile.write_text("[basic]\nak = PROFILEAK\nsk = profile-sk\n")
    profile.chmod(0o600)
    assert Path(os.environ["HOME"]) != home
    choice = choose({"HUAWEICLOUD_SDK_CREDENTIALS_FILE": given}, home)
    assert isinstance(choice.source, Profile)
    assert choice.source.path == home / relative
    login = {"BATCHSUBMIT_IAM_USER": "u", "BATCHSUBMIT_IAM_DOMAIN": "d",
             "BATCHSUBMIT_IAM_PASSWORD": "p"}  # fmt: skip
    for cache, expected in (("~", home), ("~/tokens/t.json", home / "tokens" / "t.json")):
        chosen = choose({**login, "BATCHSUBMIT_IAM_TOKEN_CACHE": cache}, home)
        assert isinstance(chosen.source, IamPassword)
        assert chosen.source.cache == expected


def test_a_path_from_a_named_users_home_is_that_accounts_home(tmp_path: Path) -> None:
    """``~user/...`` names an account: its home comes from the user database, not from the
    ``home`` given (which is this process's) nor $HOME; the missing file is named in full."""
    account = pwd.getpwuid(os.getuid())
    given = f"~{account.pw_name}/no-such-dir-5e1f/creds.ini"
    expected = Path(account.pw_dir) / "no-such-dir-5e1f" / "creds.ini"
    with pytest.raises(CredentialError, match=f"{re.escape(str(expected))}.*no such file"):
        choose({"HUAWEICLOUD_SDK_CREDENTIALS_FILE": given}, tmp_path / "given-home")


@pytest.mark.parametrize(
    ("variable", "env"),
    [
        ("HUAWEICLOUD_SDK_SK", {"HUAWEICLOUD_SDK_AK": "AKX"}),
        *((name, {"BATCHSUBMIT_IAM_USER": "u", "BATCHSUBMIT_IAM_DOMAIN": "d",
                  "BATCHSUBMIT_IAM_PASSWORD": "p"})
          for name in ("BATCHSUBMIT_IAM_PASSWORD", "BATCHSUBMIT_IAM_USER",
                       "BATCHSUBMIT_IAM_DOMAIN")),
    ],
)  # fmt: skip
def test_a_secret_that_is_not_utf8_in_the_environment_is_named_not_a_traceback(
    tmp_path: Path, variable: str, env: dict[str, str]
) -> None:
    """An SK or IAM login typed in another encoding (Python hands the bytes on as surrogates):
    an error naming the variable, nothing of the value shown; signing was a
    UnicodeEncodeError traceback quoting a character of the SK, the login a TypeError."""
    env = {**env, variable: "s\udce4cret"}
    with pytest.raises(CredentialError, match=f"{variable} is not UTF-8") as raised:
        choose(env, tmp_path)
    assert "\udce4" not in str(raised.value)
    assert "cret" not in str(raised.value)


@pytest.mark.parametrize("url", ["http://[::1", "http://iam.example:99999", "http://iam:x"])
@pytest.mark.parametrize("variable", ["HUAWEICLOUD_SDK_IAM_ENDPOINT", "BATCHSUBMIT_METADATA_URL"])
def test_an_iam_or_metadata_url_that_does_not_parse_is_named(
    tmp_path: Path, variable: str, url: str
) -> None:
    """A port out of range or not a number, an IPv6 bracket left open: an error naming the
    variable before any call; the IAM login was a ValueError traceback, the metadata service
    ten tries of "did not answer" (exit 3) over an address that can never be asked."""
    env = {variable: url}
    if variable == "HUAWEICLOUD_SDK_IAM_ENDPOINT":
        env.update({"BATCHSUBMIT_IAM_USER": "u", "BATCHSUBMIT_IAM_DOMAIN": "d",
                    "BATCHSUBMIT_IAM_PASSWORD": "p"})  # fmt: skip
    with pytest.raises(CredentialError, match=variable):
        choose(env, tmp_path)


@pytest.mark.parametrize("token", ["TOK\nX", "TOK\x01EN", "TOK EN", "TOKé"])
def test_a_security_token_a_header_cannot_carry_is_refused_where_it_is_read(
    tmp_path: Path, token: str
) -> None:
    """A pasted control character (or a space, or non-ASCII) in a security token: an error
    naming where it came from, before any request, without the token. (It was a crash inside
    aiohttp once the first call was signed, after the run had started.)"""
    env = {
        "HUAWEICLOUD_SDK_AK": "AK0",
        "HUAWEICLOUD_SDK_SK": "sk",
        "HUAWEICLOUD_SDK_SECURITY_TOKEN": token,
    }
    with pytest.raises(CredentialError, match="HUAWEICLOUD_SDK_SECURITY_TOKEN holds") as raised:
        choose(env, tmp_path)
    assert token not in str(raised.value)
    path = tmp_path / "creds.ini"
    path.write_text(f"[basic]\nak = PAK0\nsk = s\nsecurity_token = {token}\n")
    path.chmod(0o600)
    if token.strip() != token or "\n" in token:
        return  # the INI format itself ends the value at a line break
    with pytest.raises(CredentialError, match=r"\[basic\] security_token holds"):
        choose({"HUAWEICLOUD_SDK_CREDENTIALS_FILE": str(path)}, tmp_path)


@pytest.mark.parametrize("name", ["HUAWEICLOUD_SDK_IAM_ENDPOINT", "BATCHSUBMIT_METADATA_URL"])
@pytest.mark.parametrize("path", ["/x", ""])
def test_an_iam_or_metadata_url_with_a_password_is_refused_without_showing_it(
    tmp_path: Path, name: str, path: str
) -> None:
    """The error quoted the whole URL, password included; one without a path was taken, and
    the IAM endpoint is named in every IAM error."""
    url = f"http://bob:PW-DISTINCTIVE@127.0.0.1:9{path}"
    with pytest.raises(CredentialError, match="without a path or user name") as raised:
        choose({name: url}, tmp_path)
    assert f"{name} 'http://bob:***@127.0.0.1:9{path}'" in str(raised.value)
    assert "DISTINCTIVE" not in str(raised.value)


@pytest.mark.parametrize("path", ["/x", ""])
def test_a_profiles_iam_endpoint_with_a_password_is_refused_without_showing_it(
    tmp_path: Path, path: str
) -> None:
    """A profile file's iam_endpoint was used unchecked: one with a user part crashed `check`
    with a traceback (aiohttp refuses credentials in a URL beside our own header)."""
    profile = tmp_path / "credentials"
    profile.write_text(
        f"[basic]\nak = AK\nsk = SK\niam_endpoint = http://bob:PW-DISTINCTIVE@127.0.0.1:9{path}\n"
    )
    profile.chmod(0o600)
    with pytest.raises(CredentialError, match="without a path or user name") as raised:
        choose({"HUAWEICLOUD_SDK_CREDENTIALS_FILE": str(profile)}, tmp_path)
    assert f"[basic] iam_endpoint 'http://bob:***@127.0.0.1:9{path}'" in str(raised.value)
    assert "DISTINCTIVE" not in str(raised.value)


def test_region_of_regional_endpoints() -> None:
    assert region_of("https://iva.cn-north-4.myhuaweicloud.com") == "cn-north-4"
    assert region_of("https://IVA.ap-southeast-1.myhuaweicloud.com:443") == "ap-southeast-1"
    assert region_of("http://127.0.0.1:8080") is None


def test_secrets_stay_out_of_reprs() -> None:
    """repr() of every value holding a secret hides it."""
    values: list[object] = [
        Credentials("AK", SECRET_SK, "st-DISTINCTIVE"),
        Token("tok-DISTINCTIVE"),
        IamPassword("u", "d", PASSWORD),
        Issued(Token("tok-DISTINCTIVE")),
        CredentialProvider("x", Issued(Credentials("AK", SECRET_SK))),
    ]
    for value in values:
        text = repr(value)
        assert "DISTINCTIVE" not in text, text


# -- the provider: refresh timing and one refresh at a time ---------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def counting_fetch(clock: FakeClock, lifetime: float, delay: float = 0.0) -> tuple[Any, list[int]]:
    calls: list[int] = []

    async def fetch(_session: object) -> Issued:
        calls.append(1)
        await anyio.sleep(delay)
        return Issued(Token(f"t{len(calls)}"), clock.now + lifetime, clock.now)

    return fetch, calls


@pytest.mark.anyio
async def test_refreshed_before_the_margin_once_for_many_waiters() -> None:
    """Before the margin the same token; after it, fifty callers share one refresh and none
    gets the old token."""
    clock = FakeClock()
    fetch, calls = counting_fetch(clock, 100.0, delay=0.05)
    provider = CredentialProvider(
        "test", Issued(Token("t0"), clock.now + 100, clock.now), fetch, clock=clock
    )
    clock.now += 89.0  # margin 10 s: not yet
    assert provider.fresh() == Token("t0")
    clock.now += 2.0
    assert provider.fresh() is None
    got: list[object] = []

    async def ask() -> None:
        got.append(await provider.current())

    async with anyio.create_task_group() as group:
        for _ in range(50):
            group.start_soon(ask)
    assert len(calls) == 1
    assert got == [Token("t1")] * 50


@pytest.mark.anyio
async def test_a_rejected_token_is_replaced_once() -> None:
    """A 401 for the current token fetches one new token for all who saw it refused."""
    clock = FakeClock()
    fetch, calls = counting_fetch(clock, 1000.0, delay=0.02)
    provider = CredentialProvider(
        "test", Issued(Token("t0"), clock.now + 1000, clock.now), fetch, clock=clock
    )
    got: list[object] = []

    async def refused() -> None:
        got.append(await provider.rejected(Token("t0")))

    async with anyio.create_task_group() as group:
        for _ in range(10):
            group.start_soon(refused)
    assert len(calls) == 1
    assert got == [Token("t1")] * 10
    static = CredentialProvider("static", Issued(Credentials("AK", "SK")))
    assert await static.rejected(Credentials("AK", "SK")) is None


@pytest.mark.anyio
async def test_a_failed_refresh_keeps_valid_credentials_then_stops() -> None:
    """A refresh that fails while the old token has time left keeps it (retried later); once
    too close to expiry it is an error, never a call with expired credentials."""
    clock = FakeClock()
    failing = True

    async def fetch(_session: object) -> Issued:
        if failing:
            raise CredentialError("IAM said no")
        return Issued(Token("t1"), clock.now + 100, clock.now)

    warnings: list[str] = []
    provider = CredentialProvider(
        "test",
        Issued(Token("t0"), clock.now + 100, clock.now),
        fetch,
        clock=clock,
        warn=warnings.append,
    )
    clock.now += 91.0
    assert await provider.current() == Token("t0")
    assert warnings
    clock.now += 5.0  # 4 s left, under half the 10 s margin
    with pytest.raises(CredentialError, match="expired and could not be refreshed"):
        await provider.current()
    failing = False
    assert await provider.current() == Token("t1")


@pytest.mark.anyio
async def test_callers_queued_behind_a_failed_refresh_share_its_failure() -> None:
    """Eight calls find the token expired while IAM is down: one refresh is tried, and the
    seven that waited for it get its failure at once (each trying its own, with the gate's
    retries in each, would hold the run for eight rounds before it could stop). A call after
    that tries afresh."""
    clock = FakeClock()
    fetches: list[int] = []
    failing = True

    async def fetch(_session: object) -> Issued:
        fetches.append(1)
        await anyio.sleep(0.05)
        if failing:
            raise CredentialError("IAM login: HTTP 503: busy")
        return Issued(Token("t1"), clock.now + 100, clock.now)

    provider = CredentialProvider("test", Issued(Token("t0"), clock.now + 10, clock.now), fetch,
                                  clock=clock)  # fmt: skip
    clock.now += 20.0  # expired
    failures: list[str] = []

    async def call() -> None:
        try:
            await provider.current()
        except CredentialError as exc:
            failures.append(str(exc))

    async with anyio.create_task_group() as group:
        for _ in range(8):
            group.start_soon(call)
    assert len(fetches) == 1
    assert len(failures) == 8
    assert all("HTTP 503" in text for text in failures), failures
    failing = False
    assert await provider.current() == Token("t1")
    assert len(fetches) == 2


# -- end to end against the emulator's IAM and metadata -------------------------------------


def keys(count: int) -> list[str]:
    return video_keys(count)


async def open_for(
    env: dict[str, str], url: str, *, route: Route | None = None, **kw: Any
) -> CredentialProvider:
    env = {"HUAWEICLOUD_SDK_IAM_ENDPOINT": url, **env}
    choice = find_source(env, home=Path("/nonexistent"), warn=lambda _m: None, **kw)
    async with open_session(2) as session:
        if route is None:
            return await open_provider(choice, session, region="cn-north-4", warn=lambda _m: None)
        return await open_provider(
            choice, session, region="cn-north-4", warn=lambda _m: None, route=route
        )


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("url", "refused"),
    [("http://iam.example.invalid", True), ("http://192.0.2.1:8080", True),
     ("http://127.0.0.2:9", False), ("http://localhost:9", False), ("http://[::1]:9", False)],
)  # fmt: skip
async def test_an_iam_password_is_never_sent_over_plain_http_across_a_network(
    url: str, refused: bool
) -> None:
    """The password travels in the login's body: an http:// IAM endpoint that is not this
    machine is refused before anything is sent (exit 2); loopback (the emulator) is taken."""
    if refused:
        with pytest.raises(CredentialError, match=r"plain http: .*password unencrypted"):
            await open_for(iam_env(), url, project_id="0" * 32)
    else:  # taken: the login is tried, and nothing listens there
        with pytest.raises(CredentialError, match="cannot connect") as caught:
            await open_for(iam_env(), url, project_id="0" * 32)
        assert "plain http" not in str(caught.value)


def opening_gate(retry: RetryPolicy = FAST_RETRY, logs: list[str] | None = None) -> Gate:
    """A gate like the CLI's for the first credentials (fast retries for the tests)."""
    seen = logs if logs is not None else []
    settings = PoolSettings(concurrency=2, rate=0.0, retry=retry)
    return new_gate(settings, RunStats(), lambda level, message: seen.append(f"{level}: {message}"))


def iam_env() -> dict[str, str]:
    return {
        "BATCHSUBMIT_IAM_USER": USER.name,
        "BATCHSUBMIT_IAM_DOMAIN": USER.domain,
        "BATCHSUBMIT_IAM_PASSWORD": PASSWORD,
    }


async def timed_run(
    tmp_path: Path, url: str, provider: CredentialProvider, count: int, rate: float
) -> Any:
    manifest = write_manifest(tmp_path, keys(count))
    config = config_for(manifest, url, tmp_path / "out.csv", concurrency=4, rate=rate)
    config = dataclasses.replace(config, credentials=provider)
    stats, log = await run_submit(config)
    return stats, log, tmp_path / "out.csv"


@pytest.mark.anyio
async def test_short_lived_iam_tokens_refresh_and_never_fail_a_call(tmp_path: Path) -> None:
    """A 2-second token over a 4-second run: refreshed before expiry, no call refused."""
    emulator = Emulator(identity=IdentityOptions(users=(USER,), token_ttl=2.0))
    async with emulator.serve() as url:
        provider = await open_for(iam_env(), url)
        assert provider.project_id == EMULATOR_PROJECT_ID  # scoped by the region's name
        assert provider.source_name.startswith("IAM password")
        stats, log, results = await timed_run(tmp_path, url, provider, 40, rate=10.0)
    assert stats.submitted == 40, log
    assert stats.failed == 0, log
    identity = emulator.identity
    assert identity.refused_expired == 0
    assert identity.refused_unknown == 0
    assert identity.tokens_issued >= 2
    assert provider.refreshes >= 1
    assert PASSWORD not in results.read_text()
    assert PASSWORD not in log


@pytest.mark.anyio
async def test_refreshes_during_a_run_are_calls_through_its_gate(tmp_path: Path) -> None:
    """Each IAM login made while the run goes is one of the run's gated calls (counted, paced
    by the same rate controller), made before the call that needs it takes its slot."""
    emulator = Emulator(identity=IdentityOptions(users=(USER,), token_ttl=1.0))
    async with emulator.serve() as url:
        provider = await open_for(iam_env(), url)
        issued_before = emulator.identity.tokens_issued
        stats, log, _results = await timed_run(tmp_path, url, provider, 20, rate=20.0)
    assert stats.submitted == 20, log
    refreshes = emulator.identity.tokens_issued - issued_before
    assert refreshes >= 1
    assert provider.refreshes == refreshes
    assert stats.calls == 20 + refreshes
    assert emulator.identity.refused_expired == 0


@pytest.mark.anyio
async def test_a_renewal_that_keeps_failing_mid_run_stops_after_one_round(tmp_path: Path) -> None:
    """IAM goes down mid-run and stays down; the token falls due. One round of retries (the
    policy's three tries) and the run stops as fatal, naming IAM: the call waiting for the
    renewal is not sent and does not try a second round of its own. Nothing is lost: every
    video is submitted or deferred, none unknown, and no password shows."""
    emulator = Emulator(identity=IdentityOptions(users=(USER,)))
    # the provider's clock: after 10 creates its token looks long expired (VAS still takes it)
    clock = lambda: time.time() + (0.0 if len(emulator.tasks) < 10 else 10**5)  # noqa: E731
    async with emulator.serve() as url:
        env = {"HUAWEICLOUD_SDK_IAM_ENDPOINT": url, **iam_env()}
        choice = find_source(env, home=Path("/nonexistent"), warn=lambda _m: None)
        async with open_session(2) as session:
            provider = await open_provider(
                choice, session, region="cn-north-4", warn=lambda _m: None, clock=clock
            )
        manifest = write_manifest(tmp_path, keys(30))
        config = config_for(manifest, url, tmp_path / "out.csv", concurrency=2, rate=20.0,
                            retry=RetryPolicy(attempts=3, base=0.01, cap=0.01))  # fmt: skip
        config = dataclasses.replace(config, credentials=provider)
        # every IAM call from now on answers 503
        emulator.identity.options = dataclasses.replace(emulator.identity.options, outage=10**6)
        stats, log = await run_submit(config)
    assert emulator.identity.unavailable == 3, log
    assert stats.fatal is not None
    assert "HTTP 503" in stats.fatal, log
    assert 0 < stats.submitted < 30
    assert stats.submitted + stats.deferred == 30, log
    assert (stats.unknown, stats.failed) == (0, 0), log
    assert PASSWORD not in log + (tmp_path / "out.csv").read_text()


@pytest.mark.anyio
async def test_a_renewal_the_stop_prevents_leaves_the_call_unsent() -> None:
    """Credentials due while the run is stopping: no renewal starts, and the call answers
    NOT_SENT (its job is deferred to the next run, not recorded unknown); nothing is sent."""
    from batchsubmit.engine.gate import Gate
    from batchsubmit.engine.stats import RunStats
    from batchsubmit.retry import DEFAULT_RETRY
    from batchsubmit.throttle import ControllerSettings

    clock = FakeClock()
    fetch, calls = counting_fetch(clock, 100.0)
    provider = CredentialProvider(
        "test", Issued(Token("t0"), clock.now + 100, clock.now), fetch, clock=clock
    )
    gate = Gate(RunStats(), lambda _level, _message: None, concurrency=2, rate=0.0,
                retry=DEFAULT_RETRY, controller=ControllerSettings(),
                refused=lambda _answer: None, clock=time.monotonic)  # fmt: skip
    provider.route(gate.other)
    emulator = Emulator()
    async with emulator.serve() as url, open_session(2) as session:
        endpoint = Endpoint(base_url=url, project_id=EMULATOR_PROJECT_ID, service_name="video")
        client = VasClient(session, endpoint, provider)
        clock.now += 95.0  # due for renewal (margin 10 s)
        gate.stop("the operator asked")
        answer = await client.create(b'{"name": "x"}')
    assert (answer.kind.name, answer.error_code) == ("NOT_SENT", "STOPPED")
    assert calls == []
    assert emulator.tasks == {}


@pytest.mark.anyio
async def test_metadata_credentials_expiring_every_second_never_sign_a_call(
    tmp_path: Path,
) -> None:
    """Temporary credentials living 1.5 s over a 3.5 s run (several expiries): every call is
    signed with unexpired ones, and the project id is discovered from the region."""
    emulator = Emulator(identity=IdentityOptions(metadata=True, credential_ttl=1.5))
    async with emulator.serve() as url:
        provider = await open_for({"BATCHSUBMIT_METADATA_URL": url}, url)
        assert provider.project_id == EMULATOR_PROJECT_ID
        assert provider.source_name == f"ECS metadata ({url})"
        stats, log, _ = await timed_run(tmp_path, url, provider, 35, rate=10.0)
    assert stats.submitted == 35, log
    assert stats.failed == 0, log
    identity = emulator.identity
    assert identity.refused_expired == 0
    assert identity.refused_unknown == 0
    assert identity.credentials_issued >= 3


@pytest.mark.anyio
async def test_a_token_refused_as_expired_is_renewed_once_then_the_run_stops(
    tmp_path: Path,
) -> None:
    """401 "The token must be updated": one new token and the call again; when the new one is
    refused too, the run stops (exit 3), and no password or token shows."""
    emulator = Emulator(identity=IdentityOptions(users=(USER,), token_ttl=3600.0))
    async with emulator.serve() as url:
        provider = await open_for(iam_env(), url, project_id=EMULATOR_PROJECT_ID)
        manifest = write_manifest(tmp_path, keys(3))
        config = config_for(manifest, url, tmp_path / "out.csv", concurrency=1)
        config = dataclasses.replace(config, credentials=provider)
        emulator.identity.clock = lambda: time.time() + 7200  # every issued token has expired
        emulator.identity.options = dataclasses.replace(
            emulator.identity.options, token_ttl=10800.0
        )
        stats, log = await run_submit(config)
        assert stats.submitted == 3, log
        assert emulator.identity.refused_expired_tokens == 1
        assert provider.refreshes == 1
        emulator.identity.options = dataclasses.replace(emulator.identity.options, token_ttl=0.0)
        emulator.identity.clock = lambda: time.time() + 100000
        more = write_manifest(tmp_path, keys(6))
        config = dataclasses.replace(
            config_for(more, url, tmp_path / "out.csv", concurrency=1), credentials=provider
        )
        stats, log = await run_submit(config)
    assert stats.fatal is not None
    assert "IVA.0001" in stats.fatal
    assert stats.submitted == 0
    text = log + (tmp_path / "out.csv").read_text()
    assert PASSWORD not in text
    assert all(token not in text for token in provider.secrets())


@pytest.mark.anyio
async def test_credentials_that_expired_before_they_arrived_stop_at_once() -> None:
    """A metadata service whose clock is two hours behind hands out keys that "expired" an
    hour ago: refused when received, naming the clock, instead of signing with them and
    fetching again before every call (41 fetches for 20 creates)."""
    emulator = Emulator(identity=IdentityOptions(metadata=True, credential_ttl=3600.0))
    emulator.identity.clock = lambda: time.time() - 7200
    async with emulator.serve() as url:
        with pytest.raises(CredentialError, match="expired before they arrived") as raised:
            await open_for({"BATCHSUBMIT_METADATA_URL": url}, url, project_id=EMULATOR_PROJECT_ID)
    assert "clock" in str(raised.value)
    assert emulator.identity.credentials_issued == 1


@pytest.mark.anyio
async def test_a_wrong_password_is_refused_without_showing_it() -> None:
    """IAM refuses the login: exit 2 before any VAS call, the password nowhere."""
    emulator = Emulator(identity=IdentityOptions(users=(USER,)))
    async with emulator.serve() as url:
        env = {**iam_env(), "BATCHSUBMIT_IAM_PASSWORD": "wrong-" + PASSWORD}
        with pytest.raises(CredentialError) as caught:
            await open_for(env, url, project_id=EMULATOR_PROJECT_ID)
    text = str(caught.value) + repr(caught.value)
    assert "HTTP 401" in text
    assert "BATCHSUBMIT_IAM_PASSWORD" in text
    assert PASSWORD not in text
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None or caught.value.__suppress_context__


@pytest.mark.anyio
async def test_a_password_quoted_by_an_answer_aiohttp_cannot_parse_is_hidden() -> None:
    """An IAM answer with a header line without a colon holding the password it was sent:
    aiohttp's error quotes the line, and it reached check's output and submit's errors."""

    def echo(_head: str, body: bytes) -> bytes:
        password = orjson.loads(body)["auth"]["identity"]["password"]["user"]["password"]
        return f"HTTP/1.1 401 Unauthorized\r\nEcho {password}\r\n\r\n".encode()

    async with serve_raw(echo) as url:
        with pytest.raises(CredentialError) as caught:
            await open_for(iam_env(), url, project_id=EMULATOR_PROJECT_ID)
    assert "Echo <hidden>" in str(caught.value)
    assert PASSWORD[:8] not in str(caught.value)


@pytest.mark.parametrize(
    "password", ["p\u00e4ssw\u00f6rd-DISTINCTIVE-1", "pw'quote\"DISTINCTIVE-2"]
)
@pytest.mark.anyio
async def test_a_password_aiohttp_quotes_as_escaped_bytes_is_hidden(password: str) -> None:
    """aiohttp quotes the line it cannot parse as a bytes literal inside the repr of its
    message: a non-ASCII password showed as ``p\\xc3\\xa4ssw...``, one with both quote
    characters as ``pw\\\'quote"...``; neither form matched the mask."""

    def echo(_head: str, body: bytes) -> bytes:
        sent: str = orjson.loads(body)["auth"]["identity"]["password"]["user"]["password"]
        return b"HTTP/1.1 401 Unauthorized\r\nEcho " + sent.encode() + b"\r\n\r\n"

    env = {**iam_env(), "BATCHSUBMIT_IAM_PASSWORD": password}
    async with serve_raw(echo) as url:
        with pytest.raises(CredentialError) as caught:
            await open_for(env, url, project_id=EMULATOR_PROJECT_ID)
    assert "Echo <hidden>" in str(caught.value)
    assert "DISTINCTIVE" not in str(caught.value) + repr(caught.value)


@pytest.mark.anyio
async def test_a_secret_past_the_first_300_bytes_of_an_iam_page_is_hidden_whole() -> None:
    """An indented plain-text 401 (or 403 to the project lookup) quoting the password (or
    the security token) from byte 290 on: the text was cut to 300 bytes, then masked, then
    its blanks collapsed, and showed all of the secret but its last characters."""
    token = "st-DISTINCTIVE-5d1e"

    def straddling(secret: str) -> str:
        return "IAM refused, you sent" + " " * 269 + secret + " tail"

    async def login(request: web.Request) -> web.Response:
        sent = (await request.json())["auth"]["identity"]["password"]["user"]["password"]
        return web.Response(status=401, text=straddling(sent))

    async def projects(request: web.Request) -> web.Response:
        return web.Response(status=403, text=straddling(request.headers["X-Security-Token"]))

    app = web.Application()
    app.router.add_post("/v3/auth/tokens", login)
    app.router.add_get("/v3/projects", projects)
    keys = {"HUAWEICLOUD_SDK_AK": "AK0", "HUAWEICLOUD_SDK_SK": "sk0"}
    async with serve_app(app) as url:
        with pytest.raises(CredentialError) as by_password:
            await open_for(iam_env(), url, project_id=EMULATOR_PROJECT_ID)
        with pytest.raises(CredentialError) as by_token:
            await open_for({**keys, "HUAWEICLOUD_SDK_SECURITY_TOKEN": token}, url)
    assert "you sent <hidden> tail" in str(by_password.value)
    assert "you sent <hidden> tail" in str(by_token.value)
    assert "DISTINCTIVE" not in str(by_password.value) + str(by_token.value)


@pytest.mark.parametrize("tail", [b"\x80", b"\x01", b" x"])
@pytest.mark.anyio
async def test_an_iam_token_a_header_cannot_carry_is_refused_where_it_is_read(
    tail: bytes,
) -> None:
    """An X-Subject-Token with a byte 0x80 was taken and sent as it was (only a cached token was
    checked); echoed back, it no longer matched the stored form, so it went unmasked."""

    def issued(_head: str, _body: bytes) -> bytes:
        day = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 86400))
        body = orjson.dumps({"token": {"expires_at": day, "project": {"id": EMULATOR_PROJECT_ID}}})
        head = b"HTTP/1.1 201 Created\r\nX-Subject-Token: TOK-DISTINCTIVE" + tail
        return head + f"\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body

    async with serve_raw(issued) as url:
        with pytest.raises(CredentialError, match="X-Subject-Token is not one IAM issues") as got:
            await open_for(iam_env(), url, project_id=EMULATOR_PROJECT_ID)
    assert "DISTINCTIVE" not in str(got.value)


@pytest.mark.anyio
async def test_a_metadata_session_token_quoted_by_an_unparsable_answer_is_hidden() -> None:
    """The securitykey answer has a header line without a colon holding the session token it
    was sent: aiohttp's error quotes the line, and the token went out unmasked."""
    session_token = "SESSION-DISTINCTIVE-7c2f"

    def metadata(head: str, _body: bytes) -> bytes:
        if head.startswith("PUT "):
            body = session_token.encode()
            return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        echoed = header_of(head, "X-Metadata-Token")
        return f"HTTP/1.1 401 Unauthorized\r\nEcho {echoed}\r\n\r\n".encode()

    async with serve_raw(metadata) as url:
        with pytest.raises(CredentialError) as caught:
            await open_for({"BATCHSUBMIT_METADATA_URL": url}, url)
    assert "Echo <hidden>" in str(caught.value)
    assert "DISTINCTIVE" not in str(caught.value) + repr(caught.value)


def _securitykey_answer() -> bytes:
    day = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(time.time() + 3600))
    doc = {"access": "TMPAK0", "secret": "tmp-sk", "securitytoken": "tmp-st", "expires_at": day}
    body = orjson.dumps({"credential": doc})
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


@pytest.mark.parametrize("status", [404, 405])
@pytest.mark.anyio
async def test_a_metadata_service_without_the_token_api_is_asked_without_a_token(
    status: int,
) -> None:
    """The session token is optional on ECS: a PUT answered 404/405 made the official SDK ask
    for securitykey without one, and batchsubmit give up ("session token: HTTP 404")."""
    seen: list[str] = []

    def metadata(head: str, _body: bytes) -> bytes:
        seen.append(head)
        if head.startswith("PUT "):
            return b"HTTP/1.1 %d Nope\r\nContent-Length: 0\r\n\r\n" % status
        return _securitykey_answer()

    async with serve_raw(metadata) as url:
        provider = await open_for(
            {"BATCHSUBMIT_METADATA_URL": url}, url, project_id=EMULATOR_PROJECT_ID
        )
    assert provider.fresh() == Credentials("TMPAK0", "tmp-sk", "tmp-st")
    assert "X-Metadata-Token:" not in seen[-1]


@pytest.mark.parametrize("token", [b"SESSION\r\nX-Injected: 1", b"SESSION TOKEN", b"\xc3\xa4"])
@pytest.mark.anyio
async def test_a_session_token_a_header_cannot_carry_is_an_error_not_a_traceback(
    token: bytes,
) -> None:
    """A session token with a CR/LF went out as X-Metadata-Token: aiohttp's ValueError
    ("header injection") was a traceback in check and submit, exit 1."""

    def metadata(head: str, _body: bytes) -> bytes:
        if head.startswith("PUT "):
            return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(token), token)
        return _securitykey_answer()

    async with serve_raw(metadata) as url:
        with pytest.raises(CredentialError, match="is not a token") as caught:
            await open_for({"BATCHSUBMIT_METADATA_URL": url}, url)
    assert "SESSION" not in str(caught.value)


@pytest.mark.anyio
async def test_an_expiry_without_a_time_zone_is_refused_not_read_as_local_time() -> None:
    """``expires_at`` without ``Z`` was read in this machine's time zone: under UTC+8 keys of
    an hour were "expired before they arrived" (blaming the clock), under UTC-5 they lived 6 h."""
    naive = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + 3600))

    def metadata(head: str, _body: bytes) -> bytes:
        if head.startswith("PUT "):
            return b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntok"
        doc = {"access": "TMPAK0", "secret": "s", "securitytoken": "t", "expires_at": naive}
        body = orjson.dumps({"credential": doc})
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)

    async with serve_raw(metadata) as url:
        with pytest.raises(CredentialError, match="has no time zone"):
            await open_for({"BATCHSUBMIT_METADATA_URL": url}, url, project_id=EMULATOR_PROJECT_ID)


@pytest.mark.anyio
async def test_no_metadata_fails_fast_listing_every_source() -> None:
    """No credentials anywhere and nothing at the metadata address: a fast error naming each
    source tried."""
    started = time.monotonic()
    with pytest.raises(CredentialError) as caught:
        await open_for({"BATCHSUBMIT_METADATA_URL": f"http://127.0.0.1:{closed_port()}"}, "")
    assert time.monotonic() - started < 3
    message = str(caught.value)
    for part in ("environment", "IAM password", "profile file", "ECS metadata", "connect"):
        assert part in message, message


@pytest.mark.anyio
async def test_a_server_without_agency_is_told_so() -> None:
    emulator = Emulator(identity=IdentityOptions(metadata=True, agency=False))
    async with emulator.serve() as url:
        with pytest.raises(CredentialError, match="no agency"):
            await open_for({"BATCHSUBMIT_METADATA_URL": url}, url)


@pytest.mark.anyio
async def test_temporary_keys_sign_list_show_and_delete(tmp_path: Path) -> None:
    """Every VAS operation, not only creates, goes out with valid temporary credentials."""
    emulator = Emulator(identity=IdentityOptions(metadata=True, credential_ttl=60.0))
    async with emulator.serve() as url:
        provider = await open_for({"BATCHSUBMIT_METADATA_URL": url}, url)
        endpoint = Endpoint(
            base_url=url, project_id=provider.project_id, service_name="video-analyze"
        )
        async with open_session(2) as session:
            client = VasClient(session, endpoint, provider)
            listed = await client.list_tasks({"limit": 1, "offset": 0})
            shown = await client.show("0" * 32)
    assert listed.status == 200, listed
    assert shown.status == 404, shown
    assert shown.error_code == "IVA.0005", shown


# -- IAM and the metadata service through the gate ---------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("source", ["iam", "metadata"])
async def test_an_outage_at_the_start_is_waited_out_through_the_gate(source: str) -> None:
    """IAM (or the metadata service) answering 503 for a moment when the run opens: each try
    is one of the gate's counted calls, retried with its backoff, and the run gets its
    credentials. Without the gate's retries, the same outage is an error that says so."""
    if source == "iam":
        identity = IdentityOptions(users=(USER,), outage=2)
        env = iam_env()
    else:
        identity = IdentityOptions(metadata=True, outage=2)
        env = {}
    emulator = Emulator(identity=identity)
    async with emulator.serve() as url:
        if source == "metadata":
            env = {"BATCHSUBMIT_METADATA_URL": url}
        logs: list[str] = []
        gate = opening_gate(logs=logs)
        provider = await open_for(env, url, route=gate.other)
        assert len(logs) == 2, logs  # each retry says why the run waits
        assert all(line.startswith("warning: ") and "HTTP 503" in line for line in logs), logs
        assert provider.project_id == EMULATOR_PROJECT_ID
        assert emulator.identity.unavailable == 2
        issued = emulator.identity.tokens_issued + emulator.identity.credentials_issued
        assert issued == 1
        # the metadata source discovers the project id: one more call, through the gate too
        assert (gate.stats.calls, gate.stats.retries) == (3 if source == "iam" else 4, 2)
        emulator.identity.unavailable = 0
        with pytest.raises(CredentialsUnavailable, match="HTTP 503") as caught:
            await open_for(env, url)
    assert caught.value.exit_code == 3


@pytest.mark.anyio
async def test_an_outage_that_outlasts_the_retries_exits_3_naming_iam() -> None:
    """Every try refused with 503: the run's retry budget is spent, then the error names IAM,
    the answer and the tries; exit 3 (the service, not the configuration), no password."""
    emulator = Emulator(identity=IdentityOptions(users=(USER,), outage=1000))
    async with emulator.serve() as url:
        gate = opening_gate(RetryPolicy(attempts=3, base=0.01, cap=0.01))
        with pytest.raises(CredentialsUnavailable) as caught:
            await open_for(iam_env(), url, route=gate.other)
    message = str(caught.value)
    assert "IAM login" in message, message
    assert "HTTP 503" in message, message
    assert "tried 3 times" in message, message
    assert PASSWORD not in message + repr(caught.value)
    assert caught.value.exit_code == 3
    assert emulator.identity.unavailable == 3
    assert gate.stats.calls == 3


@pytest.mark.anyio
async def test_an_iam_that_cannot_be_reached_is_not_retried() -> None:
    """A login that never connected fails at once (like a run's first VAS call: the others
    would not connect either): one call, exit 2, the address named."""
    gate = opening_gate()
    with pytest.raises(CredentialError) as caught:
        await open_for(iam_env(), f"http://127.0.0.1:{closed_port()}", route=gate.other)
    assert not isinstance(caught.value, CredentialsUnavailable)
    assert "cannot connect" in str(caught.value)
    assert (gate.stats.calls, gate.stats.retries) == (1, 0)


@pytest.mark.anyio
async def test_a_renewal_refused_503_is_retried_and_honours_retry_after() -> None:
    """A token the service refused (401) mid-run, and IAM busy for a moment when it is
    renewed: the renewal is retried by the gate (a 429's Retry-After waited out) instead of
    stopping the run; a renewal that keeps failing is the caller's to report."""
    tries: list[float] = []
    refusals = [
        CredentialsUnavailable("IAM login: HTTP 429: slow down", throttled=True, retry_after=0.2),
        CredentialsUnavailable("IAM login: HTTP 503: busy"),
    ]

    async def fetch(_session: object) -> Issued:
        tries.append(time.monotonic())
        if refusals:
            raise refusals.pop(0)
        return Issued(Token("t1"), time.time() + 3600, time.time())

    provider = CredentialProvider("IAM password", Issued(Token("t0"), time.time() + 3600), fetch)
    gate = opening_gate()
    provider.route(gate.other)
    renewed = await provider.rejected(Token("t0"))
    assert renewed == Token("t1")
    assert len(tries) == 3
    assert tries[1] - tries[0] >= 0.2  # the 429's Retry-After, not the 10 ms backoff
    assert (gate.stats.calls, gate.stats.retries) == (3, 2)
    refusals.extend(CredentialsUnavailable("IAM login: HTTP 503: busy") for _ in range(20))
    provider.route(opening_gate(RetryPolicy(attempts=2, base=0.01, cap=0.01)).other)
    with pytest.raises(CredentialError, match=r"could not be refreshed.*HTTP 503"):
        await provider.rejected(Token("t1"))


# -- through the command line ---------------------------------------------------------------


@pytest.fixture
def iam_emulator() -> Iterator[tuple[Emulator, str]]:
    emulator = Emulator(
        Faults(),
        credentials={EMULATOR_AK: EMULATOR_SK, "PROFILEAK": SECRET_SK},
        identity=IdentityOptions(users=(USER,), metadata=True),
    )
    server = ServerThread(emulator.serve)
    try:
        yield emulator, server.url
    finally:
        server.close()


def run_main(*args: str) -> tuple[int, str]:
    err = io.StringIO()
    with redirect_stderr(err):
        code = main(list(args))
    return code, err.getvalue()


def test_cli_discovers_the_project_from_a_crlf_profile(
    iam_emulator: tuple[Emulator, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CRLF profile without project id: the project is looked up in IAM, jobs are made, the
    summary names the source, and the SK is nowhere."""
    emulator, url = iam_emulator
    path = tmp_path / "home" / ".huaweicloud" / "credentials"
    path.parent.mkdir()
    path.write_bytes(b"[basic]\r\nak = PROFILEAK\r\nsk = " + SECRET_SK.encode() + b"\r\n")
    path.chmod(0o600)
    monkeypatch.setenv("HUAWEICLOUD_SDK_IAM_ENDPOINT", url)
    manifest = write_manifest(tmp_path, keys(5))
    results = tmp_path / "out.csv"
    summary = tmp_path / "summary.json"
    code, err = run_main(
        "submit", str(manifest), "--endpoint", url, "--results", str(results),
        "--summary", str(summary),
    )  # fmt: skip
    assert code == 0, err
    assert len(emulator.tasks) == 5
    assert [r[2] for r in rows(results)] == ["submitted"] * 5
    assert all(EMULATOR_PROJECT_ID in r[3] for r in rows(results))
    for text in (err, results.read_text(), summary.read_text()):
        assert SECRET_SK not in text


def test_cli_iam_password_source(
    iam_emulator: tuple[Emulator, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BATCHSUBMIT_IAM_* through the command line: jobs made with a token."""
    emulator, url = iam_emulator
    for name, value in iam_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HUAWEICLOUD_SDK_IAM_ENDPOINT", url)
    manifest = write_manifest(tmp_path, keys(3))
    results = tmp_path / "o.csv"
    code, err = run_main("submit", str(manifest), "--endpoint", url, "--results", str(results))
    assert code == 0, err
    assert len(emulator.tasks) == 3
    assert emulator.identity.tokens_issued == 1
    assert PASSWORD not in err
    # status and prune log in too; their summaries count that call apart from the VAS calls
    for job_id in emulator.tasks:
        emulator.set_state(job_id, "SUCCEEDED")
    summary = tmp_path / "s.json"
    for command in (["status", str(results)], ["prune", str(results), "--older-than", "0"]):
        code, err = run_main(*command, "--summary", str(summary))
        assert code == 0, err
        done = orjson.loads(summary.read_bytes())
        assert done["opening_calls"] == 1, (command, done)
        assert done["calls"] == (3 if command[0] == "prune" else 2), done  # 3 deletes; 2 lists
    assert emulator.identity.tokens_issued == 3
    assert done["counts"]["deleted"] == 3  # status recorded them final first


def test_cli_waits_out_an_iam_outage_at_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command line opens its credentials through a gate with the run's retry policy: an
    IAM answering 503 once is retried, and the run goes on."""
    emulator = Emulator(Faults(), identity=IdentityOptions(users=(USER,), outage=1))
    server = ServerThread(emulator.serve)
    try:
        for name, value in iam_env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("HUAWEICLOUD_SDK_IAM_ENDPOINT", server.url)
        manifest = write_manifest(tmp_path, keys(2))
        summary = tmp_path / "s.json"
        code, err = run_main(
            "submit", str(manifest), "--endpoint", server.url, "--results", str(tmp_path / "o.csv"),
            "--summary", str(summary),
        )  # fmt: skip
    finally:
        server.close()
    assert code == 0, err
    assert len(emulator.tasks) == 2
    assert (emulator.identity.unavailable, emulator.identity.tokens_issued) == (1, 1)
    # the summary counts the calls before the first create apart: the refused login, the login
    done = orjson.loads(summary.read_bytes())
    assert (done["opening_calls"], done["calls"]) == (2, 2), done
    assert "HTTP 503" in err, err  # the log says why the run waited
    assert "trying again" in err, err
    assert PASSWORD not in err


def test_cli_wrong_sk_in_profile_stops_without_showing_it(
    iam_emulator: tuple[Emulator, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong SK: the run stops (exit 3) and the SK shows in no output."""
    emulator, url = iam_emulator
    path = tmp_path / "p.ini"
    path.write_text(
        f"[basic]\nak = PROFILEAK\nsk = wrong-{SECRET_SK}\nproject_id = {EMULATOR_PROJECT_ID}\n"
    )
    path.chmod(0o600)
    monkeypatch.setenv("HUAWEICLOUD_SDK_CREDENTIALS_FILE", str(path))
    manifest = write_manifest(tmp_path, keys(3))
    results = tmp_path / "o.csv"
    summary = tmp_path / "s.json"
    metrics = tmp_path / "m.prom"
    code, err = run_main(
        "submit", str(manifest), "--endpoint", url, "--results", str(results),
        "--summary", str(summary), "--metrics", str(metrics),
    )  # fmt: skip
    assert code == 3, err
    assert "APIGW.0301" in err
    assert not emulator.tasks
    for text in (err, results.read_text(), summary.read_text(), metrics.read_text()):
        assert SECRET_SK not in text


@pytest.mark.anyio
async def test_echoed_tokens_are_masked_before_and_after_a_refresh() -> None:
    """A service that echoes the token in its error: the token shows in no answer, neither the
    first one nor the one fetched later."""

    async def echo(request: web.Request) -> web.Response:
        sent = request.headers.get("X-Auth-Token", "")
        body = {"error_code": "IVA.0004", "error_msg": f"Invalid parameter near {sent}!"}
        return web.json_response(body, status=400)

    app = web.Application()
    app.router.add_get("/v2/{project}/services/{service}/tasks", echo)
    clock = FakeClock()
    fetch, _calls = counting_fetch(clock, 100.0)
    first = Token("tok-DISTINCTIVE-first")
    provider = CredentialProvider(
        "test", Issued(first, clock.now + 100, clock.now), fetch, clock=clock
    )
    async with serve_app(app) as url, open_session(2) as session:
        endpoint = Endpoint(base_url=url, project_id=EMULATOR_PROJECT_ID, service_name="s")
        client = VasClient(session, endpoint, provider)
        before = await client.list_tasks({"limit": 1})
        clock.now += 95.0  # due: the next call fetches token t1
        after = await client.list_tasks({"limit": 1})
    assert before.error_code == "IVA.0004"
    assert "DISTINCTIVE" not in before.error_msg
    assert "<hidden>" in before.error_msg
    assert provider.refreshes == 1
    assert "t1!" not in after.error_msg
    assert "<hidden>" in after.error_msg


def test_cli_strips_a_crlf_project_id_and_refuses_a_bad_one(
    iam_emulator: tuple[Emulator, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A project id with a trailing CR works; a malformed one exits 2 before any request and
    leaves no journal behind."""
    emulator, url = iam_emulator
    monkeypatch.setenv("HUAWEICLOUD_SDK_AK", EMULATOR_AK + "\r")
    monkeypatch.setenv("HUAWEICLOUD_SDK_SK", EMULATOR_SK + "\r\n")
    monkeypatch.setenv("HUAWEICLOUD_SDK_PROJECT_ID", EMULATOR_PROJECT_ID + "\r")
    manifest = write_manifest(tmp_path, keys(2))
    results = tmp_path / "o.csv"
    code, err = run_main("submit", str(manifest), "--endpoint", url, "--results", str(results))
    assert code == 0, err
    assert "%0D" not in results.read_text()
    monkeypatch.setenv("HUAWEICLOUD_SDK_PROJECT_ID", "0e0e\r")
    other = tmp_path / "p.csv"
    code, err = run_main("submit", str(manifest), "--endpoint", url, "--results", str(other))
    assert code == 2
    assert "HUAWEICLOUD_SDK_PROJECT_ID" in err
    assert "not a project id" in err
    assert "Traceback" not in err
    assert not list(tmp_path.glob("p.csv*"))
    assert len(emulator.tasks) == 2


def test_cli_custom_endpoint_without_project_id_exits_2(
    iam_emulator: tuple[Emulator, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No project id and no region to look it up by: exit 2 naming the fix, nothing sent."""
    emulator, url = iam_emulator
    monkeypatch.setenv("HUAWEICLOUD_SDK_AK", EMULATOR_AK)
    monkeypatch.setenv("HUAWEICLOUD_SDK_SK", EMULATOR_SK)
    manifest = write_manifest(tmp_path, keys(2))
    text = manifest.read_text().replace('region = "cn-north-4"', f'endpoint = "{url}"')
    manifest.write_text(text)
    code, err = run_main("submit", str(manifest), "--results", str(tmp_path / "o.csv"))
    assert code == 2, err
    assert "no project id" in err
    assert "service.project_id" in err
    assert not emulator.calls


def test_cli_iam_token_cache_is_private_and_reused(
    iam_emulator: tuple[Emulator, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BATCHSUBMIT_IAM_TOKEN_CACHE: the second run reuses the token (one login for two runs),
    the file is 0600, and a cache others could read is not trusted."""
    emulator, url = iam_emulator
    for name, value in iam_env().items():
        monkeypatch.setenv(name, value)
    cache = tmp_path / "cache" / "iam-token.json"
    monkeypatch.setenv("HUAWEICLOUD_SDK_IAM_ENDPOINT", url)
    monkeypatch.setenv("BATCHSUBMIT_IAM_TOKEN_CACHE", str(cache))
    manifest = write_manifest(tmp_path, keys(2))
    args = ("submit", str(manifest), "--endpoint", url, "--results", str(tmp_path / "o.csv"))
    code, first = run_main(*args)
    assert code == 0, first
    assert cache.stat().st_mode & 0o777 == 0o600
    code, second = run_main(*args, "--resubmit")
    assert code == 0, second
    assert emulator.identity.tokens_issued == 1
    cache.chmod(0o644)
    code, third = run_main(*args, "--resubmit")
    assert code == 0, third
    assert "other users can read it" in third
    assert emulator.identity.tokens_issued == 2
    assert cache.stat().st_mode & 0o777 == 0o600
    token = orjson.loads(cache.read_bytes())["token"]
    for text in (first, second, third, (tmp_path / "o.csv").read_text()):
        assert token not in text
        assert PASSWORD not in text


def test_a_token_cache_that_cannot_be_written_is_a_warning_not_a_traceback(
    iam_emulator: tuple[Emulator, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cache path under a regular file (a typo, or a file where a folder was meant): the
    run goes on with a warning naming the file; cleaning up the temporary file that was
    never made raised NotADirectoryError, a traceback after the login."""
    emulator, url = iam_emulator
    for name, value in iam_env().items():
        monkeypatch.setenv(name, value)
    (tmp_path / "cache").write_text("a file, not a folder\n")
    cache = tmp_path / "cache" / "iam-token.json"
    monkeypatch.setenv("HUAWEICLOUD_SDK_IAM_ENDPOINT", url)
    monkeypatch.setenv("BATCHSUBMIT_IAM_TOKEN_CACHE", str(cache))
    manifest = write_manifest(tmp_path, keys(2))
    code, err = run_main("submit", str(manifest), "--endpoint", url,
                         "--results", str(tmp_path / "o.csv"))  # fmt: skip
    assert code == 0, err
    assert f"{cache}: cannot write the token cache" in err
    assert len(emulator.tasks) == 2


def test_a_token_cache_path_naming_another_file_does_not_replace_it(
    iam_emulator: tuple[Emulator, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BATCHSUBMIT_IAM_TOKEN_CACHE naming a file that is no token cache (the manifest, a
    results file, a profile, by mistake): the run goes on, the file is kept as it was and a
    warning names it; it was replaced by the token's JSON (a manifest lost, a token left in
    its place)."""
    emulator, url = iam_emulator
    for name, value in iam_env().items():
        monkeypatch.setenv(name, value)
    manifest = write_manifest(tmp_path, keys(2))
    kept = manifest.read_bytes()
    monkeypatch.setenv("HUAWEICLOUD_SDK_IAM_ENDPOINT", url)
    monkeypatch.setenv("BATCHSUBMIT_IAM_TOKEN_CACHE", str(manifest))
    code, err = run_main("submit", str(manifest), "--endpoint", url,
                         "--results", str(tmp_path / "o.csv"))  # fmt: skip
    assert code == 0, err
    assert len(emulator.tasks) == 2
    assert manifest.read_bytes() == kept
    assert f"{manifest}: token cache not written: it is not a token cache" in err


def read_token_cache(
    cache: Path, key: str, now: float, warn: Callable[[str], None]
) -> tuple[Issued, str] | None:
    """A login's lookup in the token cache at ``cache``."""
    from batchsubmit.credentials import _cached_token, _read_cache_file

    return _cached_token(_read_cache_file(cache), key, now, warn)


@pytest.mark.anyio
async def test_a_login_reads_its_token_cache_once(
    iam_emulator: tuple[Emulator, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A login read the cache file twice: for a cached token, then after the login again to
    tell whether the file is a cache it may replace. One read serves both, at the first
    login, a renewal, and a run that finds its token there."""
    emulator, url = iam_emulator
    cache = tmp_path / "token.json"
    cache.write_bytes(orjson.dumps({"key": "another login", "token": "MIIother"}))
    cache.chmod(0o600)
    reads: list[str] = []
    real_open = os.open

    def counting_open(path: Any, flags: int, *args: Any, **kw: Any) -> int:
        if Path(path) == cache and not flags & (os.O_WRONLY | os.O_RDWR):
            reads.append(str(path))
        return real_open(path, flags, *args, **kw)

    monkeypatch.setattr(os, "open", counting_open)
    env = {**iam_env(), "BATCHSUBMIT_IAM_TOKEN_CACHE": str(cache)}
    provider = await open_for(env, url, project_id=EMULATOR_PROJECT_ID)
    assert (len(reads), emulator.identity.tokens_issued) == (1, 1)
    first = await provider.current()
    assert isinstance(first, Token)
    assert orjson.loads(cache.read_bytes())["token"] == first.value
    assert await provider.rejected(first) not in (None, first)
    assert (len(reads), emulator.identity.tokens_issued) == (2, 2)
    await open_for(env, url, project_id=EMULATOR_PROJECT_ID)
    assert (len(reads), emulator.identity.tokens_issued) == (3, 2)  # the cached token


@pytest.mark.parametrize("there", ["nothing", "an empty file", "a token cache", "a symlink"])
def test_a_token_cache_replaces_only_a_cache(tmp_path: Path, there: str) -> None:
    """What the token cache may replace: nothing yet, an empty file (touched and chmod 600
    beforehand), an earlier cache, or a symbolic link (the link, never its target)."""
    from batchsubmit.credentials import _read_cache_file, _write_token_cache

    cache = tmp_path / "token.json"
    target = tmp_path / "target.txt"
    target.write_text("not to be touched\n")
    if there == "an empty file":
        cache.touch(mode=0o600)
    elif there == "a token cache":
        cache.write_bytes(orjson.dumps({"key": "old", "token": "MIIold"}))
    elif there == "a symlink":
        cache.symlink_to(target)
    warnings: list[str] = []
    now = time.time()
    issued = Issued(Token("MIInew"), now + 86400, now)
    _write_token_cache(_read_cache_file(cache), "k", issued, EMULATOR_PROJECT_ID, warnings.append)
    assert warnings == []
    found = read_token_cache(cache, "k", now, warnings.append)
    assert found is not None
    assert found[0].secret == Token("MIInew")
    assert target.read_text() == "not to be touched\n"


@pytest.mark.parametrize("damage", ["a directory", "a token with a line break"])
def test_a_token_cache_that_cannot_be_used_is_set_aside(tmp_path: Path, damage: str) -> None:
    """A cache path that is a directory, or a 0600 cache holding a token no header can carry
    (a planted "abc\\r\\nX-Evil: 1"): not used, with a warning, and the login goes on; both
    were tracebacks (IsADirectoryError; aiohttp's ValueError once a call was signed)."""
    cache = tmp_path / "token.json"
    if damage == "a directory":
        cache.mkdir(mode=0o700)
    else:
        doc = {"key": "k", "token": "abc\r\nX-Evil: 1", "expires_at": time.time() + 86400,
               "issued_at": time.time(), "project_id": EMULATOR_PROJECT_ID}  # fmt: skip
        cache.write_bytes(orjson.dumps(doc))
        cache.chmod(0o600)
    warnings: list[str] = []
    assert read_token_cache(cache, "k", time.time(), warnings.append) is None
    assert len(warnings) == 1
    assert "token cache not used" in warnings[0]
    assert "X-Evil" not in warnings[0]


def test_a_token_cache_that_is_a_fifo_is_set_aside_not_waited_on(tmp_path: Path) -> None:
    """A named pipe at the cache path, nobody writing to it: not used, with a warning; the
    open waited for a writer for ever, so the run hung before its first call."""
    cache = tmp_path / "token.json"
    os.mkfifo(cache, 0o600)
    warnings: list[str] = []
    reader = threading.Thread(
        target=read_token_cache, args=(cache, "k", time.time(), warnings.append), daemon=True
    )
    reader.start()
    reader.join(5)
    hung = reader.is_alive()
    if hung:  # let the stuck open return, so the thread ends
        os.close(os.open(cache, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(5)
    assert not hung
    assert len(warnings) == 1
    assert "not a regular file" in warnings[0]


@pytest.mark.parametrize(
    "content",
    [b'{"key": "k", "token": "MIIsecret', b"\x00" * 64, b"[1, 2]",
     b'{"key": "k", "token": "MIIsecret"}',
     b'{"key": "k", "token": "MIIsecret", "expires_at": "x", "issued_at": 1, "project_id": 1}'],
)  # fmt: skip
def test_a_damaged_token_cache_is_named_not_passed_over_in_silence(
    tmp_path: Path, content: bytes
) -> None:
    """A cut, zeroed or foreign cache file: not used, and a warning names it (without its
    content); it was set aside without a word, so nobody learned why every run logged in."""
    cache = tmp_path / "token.json"
    cache.write_bytes(content)
    cache.chmod(0o600)
    warnings: list[str] = []
    assert read_token_cache(cache, "k", time.time(), warnings.append) is None
    assert len(warnings) == 1
    assert str(cache) in warnings[0]
    assert "damaged" in warnings[0]
    assert "MIIsecret" not in warnings[0]


def test_a_token_cache_of_another_login_is_replaced_without_a_word(tmp_path: Path) -> None:
    """A cache written for another user or project (its key differs) is not damage."""
    cache = tmp_path / "token.json"
    cache.write_bytes(orjson.dumps({"key": "other", "token": "MIIx"}))
    cache.chmod(0o600)
    warnings: list[str] = []
    assert read_token_cache(cache, "k", time.time(), warnings.append) is None
    assert warnings == []


@pytest.mark.parametrize("expires_at", ["nan", "inf", "-inf"])
def test_a_token_cache_time_that_is_no_time_is_not_believed(
    tmp_path: Path, expires_at: str
) -> None:
    """A damaged expiry ("nan" never falls due) kept a token past its end: a fresh login."""
    cache = tmp_path / "token.json"
    doc = {"key": "k", "token": "abc", "expires_at": expires_at, "issued_at": time.time(),
           "project_id": EMULATOR_PROJECT_ID}  # fmt: skip
    cache.write_bytes(orjson.dumps(doc))
    cache.chmod(0o600)
    assert read_token_cache(cache, "k", time.time(), lambda _m: None) is None
    doc["expires_at"] = time.time() + 86400  # the same cache with a time in it is used
    cache.write_bytes(orjson.dumps(doc))
    assert read_token_cache(cache, "k", time.time(), lambda _m: None) is not None


@pytest.mark.parametrize("projects", ["5", "true", '{"a": 1}', '"x"'])
@pytest.mark.anyio
async def test_an_iam_project_list_of_another_shape_is_an_error_not_a_traceback(
    projects: str,
) -> None:
    """GET /v3/projects answering {"projects": 5}: "IAM lists no project named ...", exit 2
    (it was TypeError: 'int' object is not iterable)."""

    async def odd(_request: web.Request) -> web.Response:
        return web.Response(text=f'{{"projects": {projects}}}', content_type="application/json")

    app = web.Application()
    app.router.add_get("/v3/projects", odd)
    server = ServerThread(lambda: serve_app(app))
    try:
        env = {"HUAWEICLOUD_SDK_AK": "AK0", "HUAWEICLOUD_SDK_SK": "sk"}
        with pytest.raises(CredentialError, match="IAM lists no project named cn-north-4"):
            await open_for({**env, "HUAWEICLOUD_SDK_IAM_ENDPOINT": server.url}, server.url)
    finally:
        server.close()


@pytest.mark.anyio
async def test_credentials_due_when_issued_are_not_fetched_for_every_call() -> None:
    """A skewed clock makes new credentials look nearly expired: one fetch a second at most,
    with a warning, not one per call."""
    clock = FakeClock()
    calls: list[int] = []

    async def fetch(_session: object) -> Issued:
        calls.append(1)
        return Issued(Token(f"t{len(calls)}"), clock.now + 5.0)  # issued_at unknown: 0

    warnings: list[str] = []
    provider = CredentialProvider(
        "test", Issued(Token("t0"), clock.now - 1), fetch, clock=clock, warn=warnings.append
    )
    for _ in range(20):
        await provider.current()
    assert len(calls) == 1
    assert "clock" in warnings[0]
    clock.now += 1.5
    await provider.current()
    assert len(calls) == 2


@pytest.mark.parametrize("status", [403, 500])
@pytest.mark.anyio
async def test_a_refusal_from_metadata_that_holds_credentials_does_not_show_them(
    status: int,
) -> None:
    """A metadata service answering an error status with a credential in the body (a broken
    or hostile one): the error names the status; it echoed the body, SK and security token
    in it, into the message and the log."""

    async def token(_request: web.Request) -> web.Response:
        return web.Response(text="session")

    async def securitykey(_request: web.Request) -> web.Response:
        credential = {"access": "TMPAK00000000000000", "secret": SECRET_SK,
                      "securitytoken": "gQ-DISTINCTIVE-token",
                      "expires_at": "2030-01-01T00:00:00Z"}  # fmt: skip
        return web.json_response({"credential": credential}, status=status)

    app = web.Application()
    app.router.add_put("/meta-data/latest/api/token", token)
    app.router.add_get("/openstack/latest/securitykey", securitykey)
    async with serve_app(app) as url:
        with pytest.raises(CredentialError) as raised:
            await open_for({"BATCHSUBMIT_METADATA_URL": url}, url, project_id=EMULATOR_PROJECT_ID)
    text = str(raised.value)
    assert f"HTTP {status}" in text
    assert SECRET_SK not in text
    assert "gQ-DISTINCTIVE-token" not in text


@pytest.mark.parametrize(
    ("expires_at", "issued_at"),
    [
        ("0001-01-01T00:00:00Z", None),  # year 1
        ("2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"),  # before it was issued
        ("9999-12-31T00:00:00Z", None),  # centuries ahead
        ("2026-01-03T00:00:00Z", "2026-01-01T00:00:00Z"),  # two days: no token lives so long
        ("2026-01-01T01:00:00Z", "0001-01-01T00:00:00Z"),  # issued in year 1
    ],
)
def test_a_credential_lifetime_no_service_gives_is_refused_naming_its_source(
    expires_at: str, issued_at: str | None
) -> None:
    """An IAM token or metadata keys expiring in year 1, before they were issued, or
    centuries ahead: refused when received (CredentialError naming the source and the
    clock), never used past their real life nor fetched again in a loop."""
    from batchsubmit.credentials import _local_expiry

    doc = {"expires_at": expires_at}
    if issued_at is not None:
        doc["issued_at"] = issued_at
    started = datetime.fromisoformat("2026-01-01T00:00:00+00:00").timestamp()
    if issued_at is None and expires_at.startswith("9999"):
        started = time.time()
    with pytest.raises(CredentialError, match=r"^securitykey: ") as raised:
        _local_expiry(doc, started, "securitykey")
    assert "clock" in str(raised.value)
    # a day, as IAM gives, is accepted
    day = {"expires_at": "2026-01-02T00:00:00Z", "issued_at": "2026-01-01T00:00:00Z"}
    assert _local_expiry(day, 1000.0, "securitykey") == 1000.0 + 86400


@pytest.mark.anyio
async def test_metadata_keys_that_live_for_years_are_refused() -> None:
    """The metadata service handing out keys for ten years: exit-2 CredentialError naming the
    source, one fetch, nothing signed with them."""
    emulator = Emulator(identity=IdentityOptions(metadata=True, credential_ttl=10 * 365 * 86400))
    async with emulator.serve() as url:
        with pytest.raises(CredentialError, match=r"securitykey: .*after they arrived"):
            await open_for({"BATCHSUBMIT_METADATA_URL": url}, url, project_id=EMULATOR_PROJECT_ID)
    assert emulator.identity.credentials_issued == 1


def _cache_doc(key: str, issued_at: float, expires_at: float) -> dict[str, Any]:
    return {"key": key, "token": "MIIcached", "issued_at": issued_at, "expires_at": expires_at,
            "project_id": EMULATOR_PROJECT_ID}  # fmt: skip


def test_a_cached_token_from_a_clock_ahead_is_not_used_past_its_life(tmp_path: Path) -> None:
    """A token cached by a machine whose clock was two hours ahead: it was kept two hours past
    its real expiry (until a 401). Read here, it has no more life left than its whole
    lifetime from now, and a cache with a lifetime no token has is not used."""
    cache = tmp_path / "token.json"
    now = time.time()
    ahead = now + 7200
    cache.write_bytes(orjson.dumps(_cache_doc("k", ahead, ahead + 86400)))
    cache.chmod(0o600)
    found = read_token_cache(cache, "k", now, lambda _m: None)
    assert found is not None
    assert found[0].expires_at is not None
    assert found[0].expires_at <= now + 86400
    warnings: list[str] = []
    for issued, expires in ((now, now + 100 * 365 * 86400), (now + 10, now), (-6e10, now + 60)):
        cache.write_bytes(orjson.dumps(_cache_doc("k", issued, expires)))
        assert read_token_cache(cache, "k", now, warnings.append) is None
    assert len(warnings) == 3, warnings
    assert all("token cache not used" in w for w in warnings), warnings


@pytest.mark.anyio
async def test_a_changed_password_never_reuses_a_cached_token(tmp_path: Path) -> None:
    """The password changed (or was mistyped): the cached token of the old one was used, and
    the run went on as if the login were right. The cache key holds a salted, slow hash of
    the password (never the password): another password means a login, and IAM's verdict."""
    cache = tmp_path / "token.json"
    emulator = Emulator(identity=IdentityOptions(users=(USER,)))
    async with emulator.serve() as url:
        env = {**iam_env(), "BATCHSUBMIT_IAM_TOKEN_CACHE": str(cache)}
        await open_for(env, url, project_id=EMULATOR_PROJECT_ID)
        await open_for(env, url, project_id=EMULATOR_PROJECT_ID)
        assert emulator.identity.tokens_issued == 1  # the cache is used
        wrong = {**env, "BATCHSUBMIT_IAM_PASSWORD": "not-the-password"}
        with pytest.raises(CredentialError, match="HTTP 401"):
            await open_for(wrong, url, project_id=EMULATOR_PROJECT_ID)
    text = cache.read_text()
    assert PASSWORD not in text
    assert "not-the-password" not in text
