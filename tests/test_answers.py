"""Classifying VAS answers: what each status and error code means for the job and for the run."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping

import orjson
import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from batchsubmit.answers import (
    ERROR_CAP,
    MAX_HEADER_FIELD,
    MESSAGE_CAP,
    Answer,
    Kind,
    classify,
    exception_text,
    manifest_key_for,
    mask,
    parse_error,
    parse_rate_hint,
    retry_after_seconds,
    shorten,
    tidy,
)

JOB_ID = "f18320e61e4c4dc685aa2dfc22a28dc5"
RID = "req-0123456789"


def error_body(code: str, msg: str = "something", **extra: str) -> bytes:
    return orjson.dumps({"error_code": code, "error_msg": msg, **extra})


# -- success ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        orjson.dumps([{"id": JOB_ID}]),
        b'[  {      "id": "f18320e61e4c4dc685aa2dfc22a28dc5"   }\n]',
        orjson.dumps({"id": JOB_ID}),
        orjson.dumps([{"id": JOB_ID, "extra": 1}, {"id": "other"}]),
    ],
)
def test_created(body: bytes) -> None:
    """201 with the seed document's array body (or a bare object) is CREATED with the job id."""
    answer = classify(201, {"X-Request-Id": RID}, body, create=True)
    assert answer.kind is Kind.CREATED
    assert answer.job_id == JOB_ID
    assert answer.status == 201
    assert answer.request_id == RID


@pytest.mark.parametrize(
    "body",
    [b"", b"[]", b"[{}]", b"{}", b'[{"id": 5}]', b'[{"id": null}]', b'[""]', b"not json", b"[{"],
)
def test_created_without_id_is_ambiguous(body: bytes) -> None:
    """A 2xx to a create without a readable job id is AMBIGUOUS (look the job up), not CREATED."""
    answer = classify(201, {"X-Request-Id": RID}, body, create=True)
    assert answer.kind is Kind.AMBIGUOUS
    assert answer.job_id == ""
    assert "no usable job id" in answer.error_msg
    assert answer.request_id == RID


@pytest.mark.parametrize(
    "job_id",
    [
        "../../../v3/evil",
        "a/b",
        "..",
        ".",
        "a b",
        " " + JOB_ID,
        JOB_ID + "\n",
        "a\x1b[31m",
        "a%2F",
        "x" * 65,
        "é" * 8,
        "a?b",
        "a#b",
    ],
)
def test_created_with_an_id_that_cannot_be_one_is_ambiguous(job_id: str) -> None:
    """A 201 whose id could not be a job id (it would climb out of the path status and prune
    build from it): the job probably exists, so it is AMBIGUOUS and looked up by name, never
    recorded under that id."""
    answer = classify(201, {}, orjson.dumps([{"id": job_id}]), create=True)
    assert answer.kind is Kind.AMBIGUOUS
    assert answer.job_id == ""
    assert "no usable job id" in answer.error_msg


@pytest.mark.parametrize("job_id", [JOB_ID, "taskABCD_123", "Task-1", "x" * 64, "0"])
def test_created_ids_outside_the_documented_pattern_are_taken(job_id: str) -> None:
    """Real ids might differ from VAS's documented pattern: anything that can be one is kept."""
    answer = classify(201, {}, orjson.dumps([{"id": job_id}]), create=True)
    assert (answer.kind, answer.job_id) == (Kind.CREATED, job_id)


def test_read_ok_keeps_data() -> None:
    """A 200 to a read is OK and carries the decoded body."""
    data = {"count": 1, "tasks": [{"id": JOB_ID, "name": "a"}]}
    answer = classify(200, {"X-Request-Id": RID}, orjson.dumps(data), create=False)
    assert answer.kind is Kind.OK
    assert answer.data == data
    assert answer.request_id == RID


@pytest.mark.parametrize("body", [b"", b"<html>oops</html>"])
def test_read_unreadable_is_unavailable(body: bytes) -> None:
    """A 200 to a read whose body is not JSON is retried as UNAVAILABLE, never trusted."""
    answer = classify(200, {}, body, create=False)
    assert answer.kind is Kind.UNAVAILABLE
    assert answer.error_msg == "unreadable answer body"


def test_success_carries_the_header_rate_hint() -> None:
    """X-ratelimit headers on a success become the rate hint (calls per second)."""
    headers = {"X-ratelimit": "120", "X-ratelimit-window": "1 minute"}
    created = classify(201, headers, orjson.dumps([{"id": JOB_ID}]), create=True)
    read = classify(200, headers, b"{}", create=False)
    assert created.rate_hint == pytest.approx(2.0)
    assert read.rate_hint == pytest.approx(2.0)
    assert classify(201, {}, orjson.dumps([{"id": JOB_ID}]), create=True).rate_hint is None


# -- throttling ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "message", "hint"),
    [
        (
            "APIG.0308",
            "The throttling threshold has been reached: "
            "policy user over ratelimit,limit:120,time:1 minute",
            2.0,
        ),
        ("APIGW.0308", "policy user over ratelimit, limit:20, time:1 second", 20.0),
        ("APIG.0308", "policy ip over ratelimit,limit:7200,time:1 hour", 2.0),
        ("APIG.0308", "policy user over ratelimit,limit:30,time:10 second", 3.0),
        ("APIG.0308", "limit:5, time: minute", 5 / 60),
        ("APIG.0308", "The throttling threshold has been reached", None),
        ("APIG.0308", "limit:0,time:1 minute", None),
    ],
)
def test_throttled_with_message_hint(code: str, message: str, hint: float | None) -> None:
    """429 is THROTTLED; the gateway's 'limit:N, time:1 unit' becomes calls per second."""
    answer = classify(429, {"X-Request-Id": RID}, error_body(code, message), create=True)
    assert answer.kind is Kind.THROTTLED
    assert answer.error_code == code
    assert answer.error_msg == message
    assert answer.request_id == RID
    if hint is None:
        assert answer.rate_hint is None
    else:
        assert answer.rate_hint == pytest.approx(hint)


@pytest.mark.parametrize(
    ("headers", "hint"),
    [
        ({"X-ratelimit": "50"}, 50.0),
        ({"X-ratelimit": "50", "X-ratelimit-window": "1"}, 50.0),
        ({"X-ratelimit": "120", "X-ratelimit-window": "60"}, 2.0),
        ({"X-ratelimit": "120", "X-ratelimit-window": "60s"}, 2.0),
        ({"X-ratelimit": "120", "X-ratelimit-window": "1 minute"}, 2.0),
        ({"X-ratelimit": "120", "X-ratelimit-window": "2m"}, 1.0),
        ({"X-ratelimit": "3600", "X-ratelimit-window": "1h"}, 1.0),
        ({"X-ratelimit": "10", "X-ratelimit-window": "Seconds"}, 10.0),
        ({"X-RateLimit-Limit": "8"}, 8.0),
        ({"X-ratelimit": "12.5", "X-ratelimit-used": "12"}, 12.5),
    ],
)
def test_throttled_with_header_hint(headers: dict[str, str], hint: float) -> None:
    """X-ratelimit (and its window) gives the hint, and wins over the message."""
    body = error_body("APIG.0308", "policy user over ratelimit,limit:999,time:1 second")
    answer = classify(429, headers, body, create=True)
    assert answer.kind is Kind.THROTTLED
    assert answer.rate_hint == pytest.approx(hint)


@pytest.mark.parametrize(
    "headers",
    [
        {"X-ratelimit": "abc"},
        {"X-ratelimit": "0"},
        {"X-ratelimit": "-5"},
        {"X-ratelimit": "10", "X-ratelimit-window": "1 fortnight"},
        {"X-ratelimit": "10", "X-ratelimit-window": "0"},
    ],
)
def test_unusable_headers_fall_back_to_the_message(headers: dict[str, str]) -> None:
    """Unreadable X-ratelimit headers are ignored in favour of the message's limit."""
    body = error_body("APIG.0308", "policy user over ratelimit,limit:4,time:1 second")
    assert classify(429, headers, body, create=True).rate_hint == pytest.approx(4.0)


def test_headers_are_case_insensitive_as_aiohttp_gives_them() -> None:
    """With aiohttp's case-insensitive headers, lower-case names are found too."""
    raw: CIMultiDict[str] = CIMultiDict(
        {"x-request-id": RID, "retry-after": "3", "x-ratelimit": "5"}
    )
    headers: Mapping[str, str] = CIMultiDictProxy(raw)
    answer = classify(429, headers, error_body("APIG.0308"), create=True)
    assert answer.request_id == RID
    assert answer.retry_after == 3.0
    assert answer.rate_hint == 5.0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("3", 3.0),
        ("0", 0.0),
        ("2.5", 2.5),
        (" 7 ", 7.0),
        ("-1", None),
        ("", None),
        (None, None),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", None),
    ],
)
def test_retry_after_seconds(value: str | None, seconds: float | None) -> None:
    """Retry-After in seconds is read; negative, empty and HTTP-date forms are ignored."""
    assert retry_after_seconds(value) == seconds


@pytest.mark.parametrize(
    ("status", "create"), [(429, True), (429, False), (503, True), (503, False)]
)
def test_retry_after_is_kept(status: int, create: bool) -> None:
    """Retry-After on a 429 or 503 reaches the Answer."""
    answer = classify(status, {"Retry-After": "4"}, error_body("X"), create=create)
    assert answer.retry_after == 4.0


# -- server errors ------------------------------------------------------------------------------


@pytest.mark.parametrize("create", [True, False])
def test_503_is_unavailable(create: bool) -> None:
    """503 (IVA.0010) is UNAVAILABLE for creates and reads alike: nothing was created."""
    answer = classify(503, {"X-Request-Id": RID}, error_body("IVA.0010"), create=create)
    assert answer.kind is Kind.UNAVAILABLE
    assert answer.error_code == "IVA.0010"


@pytest.mark.parametrize("status", [500, 502, 504, 408, 599])
def test_server_error_on_create_is_ambiguous(status: int) -> None:
    """500/502/504 to a create may have created the job: AMBIGUOUS, never retried blindly."""
    answer = classify(status, {"X-Request-Id": RID}, error_body("IVA.0006"), create=True)
    assert answer.kind is Kind.AMBIGUOUS
    assert answer.status == status
    assert answer.request_id == RID


@pytest.mark.parametrize("status", [500, 502, 504, 408])
def test_server_error_on_read_is_unavailable(status: int) -> None:
    """The same statuses on a read are merely UNAVAILABLE: a read is safe to repeat."""
    answer = classify(status, {"Retry-After": "2"}, error_body("IVA.0006"), create=False)
    assert answer.kind is Kind.UNAVAILABLE
    assert answer.retry_after == 2.0


# -- client errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "create", "kind", "advice"),
    [
        (401, "APIGW.0301", True, Kind.FATAL, "HUAWEICLOUD_SDK_AK"),
        (401, "APIGW.0303", True, Kind.FATAL, "clock"),
        (401, "IVA.0001", False, Kind.FATAL, "HUAWEICLOUD_SDK_SK"),
        (403, "IVA.0007", True, Kind.FATAL, "subscribed"),
        (403, "IVA.0009", False, Kind.FATAL, "permission"),
        (403, "IVA.0015", True, Kind.FATAL, "IAM"),
        (400, "IVA.0012", True, Kind.FATAL, "quota"),
        (400, "IVA.0002", True, Kind.FATAL, "project_id"),
        (404, "IVA.0005", True, Kind.FATAL, "service.name"),
        (302, "", True, Kind.FATAL, "redirect"),
        (400, "IVA.0004", True, Kind.FAILED, ""),
        (400, "IVA.0003", True, Kind.FAILED, ""),
        (400, "IVA.0011", True, Kind.FAILED, ""),
        (404, "IVA.0005", False, Kind.FAILED, ""),
        (409, "", True, Kind.FAILED, ""),
        (422, "", True, Kind.FAILED, ""),
    ],
)
def test_client_errors(status: int, code: str, create: bool, kind: Kind, advice: str) -> None:
    """Auth, subscription, quota and project errors stop the run; a bad job only fails itself."""
    answer = classify(status, {"X-Request-Id": RID}, error_body(code, "msg"), create=create)
    assert answer.kind is kind
    assert answer.status == status
    assert answer.error_code == code
    assert answer.error_msg == "msg"
    assert answer.request_id == RID
    if advice:
        assert advice in answer.advice
    else:
        assert answer.advice == ""


def test_signature_error_keeps_the_server_message() -> None:
    """APIGW.0301's message (it echoes the canonical request) is kept for the user to compare,
    on one line as rows and logs show it."""
    message = (
        "Incorrect IAM authentication information: verify aksk signature fail, "
        "canonicalRequest: POST\n/v2/x/"
    )
    answer = classify(401, {}, error_body("APIGW.0301", message), create=True)
    assert answer.kind is Kind.FATAL
    assert answer.error_msg == " ".join(message.split())


# -- error bodies -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"error_code": "IVA.0004", "error_msg": "bad name"}', ("IVA.0004", "bad name", "")),
        (b'{"error_code": "IVA.0004", "error_message": "bad name"}', ("IVA.0004", "bad name", "")),
        (
            b'{"error_code": "IVA.0004", "error_msg": "m", "request_id": "r1"}',
            ("IVA.0004", "m", "r1"),
        ),
        (b'{"code": "APIG.0308", "message": "slow"}', ("APIG.0308", "slow", "")),
        (
            b'{"error": {"code": "APIG.0308", "message": "slow"}, "request_id": "r2"}',
            ("APIG.0308", "slow", "r2"),
        ),
        (b'{"error_code": 42, "error_msg": null}', ("42", "", "")),
        (b"{}", ("", "", "")),
        (b"", ("", "", "")),
        (
            b"<html><body>502 Bad Gateway</body></html>",
            ("", "<html><body>502 Bad Gateway</body></html>", ""),
        ),
        (b"  plain text error \n", ("", "plain text error", "")),
        (b'["not", "an", "object"]', ("", '["not", "an", "object"]', "")),
        (b'"just a string"', ("", '"just a string"', "")),
        (b"\xff\xfe bad bytes", ("", "\ufffd\ufffd bad bytes", "")),
    ],
)
def test_parse_error(body: bytes, expected: tuple[str, str, str]) -> None:
    """Every error body form VAS and the gateway use is read; anything else becomes the message."""
    assert parse_error(body) == expected


def test_long_messages_are_cut_after_secrets_are_masked() -> None:
    """A long error message is cut to MESSAGE_CAP characters, and a secret is masked before the
    cut: a token straddling the cut leaves none of its characters behind."""
    secret = "TOKEN-" + "s" * 60
    for where in range(MESSAGE_CAP - 70, MESSAGE_CAP + 5):
        body = b"x" * where + secret.encode() + b"y" * 10_000
        for payload in (body, error_body("IVA.0004", body.decode())):
            answer = classify(400, {}, payload, create=True, secrets=[secret])
            assert len(answer.error_msg) <= MESSAGE_CAP
            assert "TOKEN" not in answer.error_msg
            assert "ssssss" not in answer.error_msg


def test_secrets_are_masked_as_json_writes_them_too() -> None:
    """A password with '"' echoed inside a JSON message reads PW\\"..., and a JSON error over
    ERROR_CAP is read without decoding its escapes: a token with '/' written '\\/' (PHP, many
    Java encoders) went into rows and the summary as it was."""
    password, token = 'PW"SECRET\\x9', "gQ/STSECRETzz9+a=é"
    request = orjson.dumps({"password": password}).decode()  # the body the server quotes
    echoed = orjson.dumps({"error_msg": f"cannot parse {request}"})
    assert "SECRET" not in classify(401, {}, echoed, create=True, secrets=[password]).error_msg
    quoted = orjson.dumps(
        {"error_code": "APIGW.0301", "error_msg": f"token {token}", "x": "x" * ERROR_CAP}
    )
    for written in (quoted.replace(b"/", b"\\/"), json.dumps(orjson.loads(quoted)).encode()):
        answer = classify(401, {}, written[:ERROR_CAP], create=True, secrets=[token])
        assert answer.error_msg == "token <hidden>", written[:80]


def test_a_json_error_cut_by_the_read_cap_keeps_its_code() -> None:
    """A 4 MiB JSON error read only to its first ERROR_CAP bytes still gives code and message."""
    body = error_body("IVA.0004", "m" * (4 << 20), request_id="r9")[:ERROR_CAP]
    answer = classify(400, {}, body, create=True)
    assert (answer.kind, answer.error_code) == (Kind.FAILED, "IVA.0004")
    assert answer.error_msg.startswith("mmm")
    assert len(answer.error_msg) <= MESSAGE_CAP


def test_parse_error_never_raises() -> None:
    """Random bytes and JSON fragments never make parse_error raise."""
    rng = random.Random(3)
    pieces = [
        b"{",
        b"}",
        b"[",
        b"]",
        b'"error"',
        b":",
        b",",
        b"null",
        b"1",
        b'"x"',
        b"\xff",
        b"\x00",
    ]
    for _ in range(2000):
        body = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        code, message, rid = parse_error(body)
        assert isinstance(code, str)
        assert isinstance(message, str)
        assert isinstance(rid, str)


@pytest.mark.parametrize(
    "body",
    [b"<html>busy</html>", b"", b"\x00\x01\x02", b"{not json"],
)
@pytest.mark.parametrize(
    ("status", "kind"), [(429, Kind.THROTTLED), (400, Kind.FAILED), (503, Kind.UNAVAILABLE)]
)
def test_non_json_error_bodies_are_classified(body: bytes, status: int, kind: Kind) -> None:
    """A non-JSON error body never crashes classify; the status alone decides."""
    answer = classify(status, {}, body, create=True)
    assert answer.kind is kind
    assert answer.error_code == ""


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        ({"X-Request-Id": "hdr"}, error_body("IVA.0004", request_id="body"), "hdr"),
        ({}, error_body("IVA.0004", request_id="body"), "body"),
        ({}, error_body("IVA.0004"), ""),
        ({"X-Request-Id": ""}, error_body("IVA.0004", request_id="body"), "body"),
    ],
)
def test_request_id_from_header_or_body(
    headers: dict[str, str], body: bytes, expected: str
) -> None:
    """The X-Request-Id header is kept; the body's request_id fills in when the header is absent."""
    assert classify(400, headers, body, create=True).request_id == expected


@pytest.mark.parametrize(
    ("message", "headers", "hint"),
    [
        ("", {}, None),
        ("limit:10,time:1 second", {}, 10.0),
        ("limit: 2.5 , time: 1 second", {}, 2.5),
        ("", {"X-ratelimit": "6", "X-ratelimit-window": "3 seconds"}, 2.0),
        ("limit:10,time:1 second", {"X-ratelimit": "6"}, 6.0),
    ],
)
def test_parse_rate_hint(message: str, headers: dict[str, str], hint: float | None) -> None:
    """parse_rate_hint reads headers first, then the message, in calls per second."""
    result = parse_rate_hint(message, headers)
    if hint is None:
        assert result is None
    else:
        assert result == pytest.approx(hint)


@pytest.mark.parametrize(
    ("code", "message", "key"),
    [
        ("IVA.0004", "Invalid parameter: timing is not allowed with an obs input", "job.body"),
        ("IVA.0004", "service_config.common is required", "job.body"),
        ("IVA.0003", "The request body is not a valid JSON", "job.body"),
        ("IVA.0004", "Invalid parameter: service_version 9.9 does not exist", "service.version"),
        ("IVA.0004", "the service name is not valid", "service.name"),
        ("IVA.0004", "output.webhook.headers must have 1 to 10 entries", "job.body.output"),
        ("IVA.0004", "output.obs.bucket does not exist", "job.output"),
        ("IVA.0004", "description is longer than 500 characters", "job.description"),
        ("IVA.0004", "Invalid parameter: name", "job.name"),
        ("IVA.0004", "Invalid parameter", "job.body"),
        ("", "", "job.body"),
    ],
)
def test_manifest_key_for_a_failure_every_job_shares(code: str, message: str, key: str) -> None:
    """The key named when every job fails alike: a guess from the message, job.body by default."""
    assert manifest_key_for(code, message) == key


def test_a_huge_error_code_and_request_id_are_cut() -> None:
    """A hostile or broken gateway's 4 KiB error code or request id is cut short too."""
    body = error_body("C" * 4096, "m", request_id="r" * 4096)
    answer = classify(400, {}, body, create=True)
    assert len(answer.error_code) <= 64
    assert len(answer.request_id) <= 64


# -- control characters -------------------------------------------------------------------------

ESCAPES = "\x1b]0;pwned\x07 \x1b[31mRED\x85\x9b2J\x7f\x00\u202e"


def _controls(text: str) -> list[str]:
    """The C0, DEL and C1 characters (and bidi overrides) in ``text``."""
    return [c for c in text if ord(c) < 32 or 0x7F <= ord(c) <= 0x9F or c == "\u202e"]


@pytest.mark.parametrize("create", [True, False])
def test_no_terminal_escape_from_the_server_reaches_an_answer(create: bool) -> None:
    """The review's case: an error_msg of ESC ] 0 ; pwned BEL ... printed raw in the log line
    naming the first errors set the terminal's title and colours. Every text of an answer
    (message, code, request id) comes out one printable line: controls become spaces."""
    body = error_body("IVA.0004\x1b[0m", f"bad {ESCAPES} input", request_id="r\x1b[2J1")
    answer = classify(400, {}, body, create=create)
    for text in (answer.error_msg, answer.error_code, answer.request_id):
        assert _controls(text) == [], repr(text)
    assert answer.error_msg == "bad ]0;pwned [31mRED 2J input"
    assert (answer.error_code, answer.request_id) == ("IVA.0004 [0m", "r [2J1")


def test_an_answer_with_only_a_code_or_request_id_is_tidied_too() -> None:
    """No message is no shortcut past the cleaning: a code or request id alone is cleaned."""
    answer = tidy(Answer(kind=Kind.FAILED, error_code="X\x1b[31m", request_id="\x9bq"))
    assert (answer.error_code, answer.request_id) == ("X [31m", "q")


def test_shorten_leaves_printable_text_as_it_is() -> None:
    """Printable text (CJK, accents, double spaces) is untouched; line breaks make one line."""
    assert shorten("视频 é  x") == "视频 é  x"
    assert shorten("a\r\n\tb") == "a b"


def test_a_secret_escaped_by_another_json_encoder_is_masked_too() -> None:
    """Python writes \\u00e9, Java's encoders \\u00E9: both forms of a secret are hidden."""
    secret = "pw\u00e9-DISTINCTIVE"
    for text in ('{"msg": "pw\\u00e9-DISTINCTIVE"}', '{"msg": "pw\\u00E9-DISTINCTIVE"}'):
        assert "DISTINCTIVE" not in mask(text, [secret]), text


def test_exception_text_decodes_the_bytes_any_exception_quotes() -> None:
    """Not only aiohttp's ClientResponseError: a parser error quoting an answer's line as a
    bytes literal shows a non-ASCII secret escaped, which mask() would not find."""
    from batchsubmit.answers import exception_text

    secret = "p\u00e4ss-DISTINCTIVE"
    exc = ValueError(f"Invalid header line: {secret.encode()!r}")
    text = exception_text(exc)
    assert secret in text
    assert mask(text, [secret]).count(secret) == 0


@pytest.mark.parametrize(
    ("secret", "echoed"),
    [
        ("sk&SECRET<9>", "<Message>sk&amp;SECRET&lt;9&gt;</Message>"),  # OBS, a gateway page
        ("pw'SECRET\"9", "value=&quot;pw&#x27;SECRET&quot;9&quot;"),
        ("pw'SECRET9", "pw&apos;SECRET9 (XML 1.0's own escape)"),
    ],
)
def test_a_secret_escaped_as_markup_writes_it_is_masked_too(secret: str, echoed: str) -> None:
    """An error page or an OBS XML error quoting a request, raw, shows ``&amp;`` for ``&``:
    that form was not hidden."""
    assert "SECRET" not in mask(echoed, [secret]), echoed
    answer = classify(403, {}, echoed.encode(), create=True, secrets=[secret])
    assert "SECRET" not in answer.error_msg


@pytest.mark.anyio
async def test_a_header_line_too_long_to_read_is_not_quoted_in_the_error() -> None:
    """aiohttp quotes the header line it refused: an IAM login's X-Subject-Token longer than
    the client reads (a token not known yet, so not masked) reached the error and the log.
    Tokens Huawei documents (up to 32,768 characters) are read whole."""
    from aiohttp import ClientSession, web

    token = "MII" + "S3cr3t" * 12_000

    async def answer(request: web.Request) -> web.Response:
        size = int(request.query["size"])
        return web.Response(status=201, text="{}", headers={"X-Subject-Token": token[:size]})

    app = web.Application()
    app.router.add_post("/v3/auth/tokens", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/v3/auth/tokens"
    try:
        async with ClientSession(max_field_size=MAX_HEADER_FIELD) as session:
            async with session.post(url, params={"size": 32_768}) as response:
                assert len(response.headers["X-Subject-Token"]) == 32_768
            with pytest.raises(Exception) as caught:  # noqa: PT011 (aiohttp's own type)
                async with session.post(url, params={"size": len(token)}):
                    pass
    finally:
        await runner.cleanup()
    assert "S3cr3t" in str(caught.value)  # aiohttp's own text quotes it
    text = exception_text(caught.value)
    assert "S3cr3t" not in text
    assert "Got more than" in text
