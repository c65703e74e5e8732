"""What an answer from VAS means for the job and for the run: a pure classification.

The client turns every HTTP exchange (or failure to have one) into an :class:`Answer`;
the pool decides what to do from ``Answer.kind`` alone. No aiohttp here.
"""

from __future__ import annotations

import ast
import functools
import html
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

import orjson

from .vas import usable_task_id

__all__ = [
    "ERROR_CAP",
    "MAX_HEADER_FIELD",
    "MESSAGE_CAP",
    "QUOTA",
    "READ_CAP",
    "SHOW_CAP",
    "UNREACHABLE",
    "Answer",
    "Kind",
    "classify",
    "credentials_failed",
    "exception_text",
    "longest_written",
    "manifest_key_for",
    "mask",
    "one_line",
    "parse_error",
    "parse_rate_hint",
    "shorten",
    "tidy",
]

# Bounded answers: a 64 MiB HTML 502 page or a 4 MiB error message is never read whole, and
# what reaches a results row, a log line or the summary is one short line.
READ_CAP = 1 << 20  # bytes of a success answer read at most (a page of 100 tasks is ~100 KiB)
SHOW_CAP = 8 << 20  # bytes of a show's answer: its hosting_result.data is result.json itself
ERROR_CAP = 16 << 10  # bytes of an error answer read at most: its code and its message's start
# Bytes an answer's header line may hold. aiohttp's default (8190) refused an IAM login whose
# X-Subject-Token was longer, and Huawei documents tokens of up to 32,768 characters.
MAX_HEADER_FIELD = 1 << 16
MESSAGE_CAP = 500  # characters of an error message kept
CODE_CAP = 64  # characters of an error code or request id kept
HIDDEN = "<hidden>"
# A call that never reached the service because the endpoint cannot be reached at all: on the
# run's first call this stops the run (every call would fail the same way).
UNREACHABLE = frozenset({"CONNECT", "DNS", "TLS"})
QUOTA = "IVA.0012"  # the account's saved-job quota is full


class Kind(Enum):
    CREATED = "created"  # 201 with a job id
    OK = "ok"  # a successful read (list, show)
    THROTTLED = "throttled"  # 429: slow down, retry; not a failure of the job
    UNAVAILABLE = "unavailable"  # 503 (or a read's 5xx): retry with backoff
    NOT_SENT = "not_sent"  # the request never left (connect failed): safe to retry
    AMBIGUOUS = "ambiguous"  # a create may or may not have happened: look it up
    FAILED = "failed"  # this job is wrong (4xx): record it, go on with the others
    FATAL = "fatal"  # every job would fail the same way: stop the run


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    kind: Kind
    status: int = 0
    job_id: str = ""
    error_code: str = ""
    error_msg: str = ""
    request_id: str = ""
    retry_after: float | None = None
    rate_hint: float | None = None  # the gateway's limit in calls per second, when it says
    data: Any = None
    advice: str = ""


_LIMIT_IN_MESSAGE = re.compile(
    r"limit:\s*(\d+(?:\.\d+)?)\s*,\s*time:\s*(\d+)?\s*(second|minute|hour)"
)
_UNIT_SECONDS = {"second": 1.0, "minute": 60.0, "hour": 3600.0}
_WINDOW = re.compile(r"(\d+(?:\.\d+)?)?\s*([a-z]*)")
_WINDOW_UNITS = {
    "": 1.0,
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
}

_AUTH_ADVICE = (
    "check HUAWEICLOUD_SDK_AK and HUAWEICLOUD_SDK_SK (and HUAWEICLOUD_SDK_SECURITY_TOKEN for "
    "temporary credentials) and that this machine's clock is right"
)
_FORBIDDEN_ADVICE = "the account may not be subscribed to this service or may lack permission (IAM)"
_FATAL_400 = {
    "IVA.0002": "check service.project_id (or HUAWEICLOUD_SDK_PROJECT_ID) for this region",
    "IVA.0012": "the account's job quota is used up: delete finished jobs or ask for more quota",
}


def parse_error(body: bytes) -> tuple[str, str, str]:
    """Error code, message and request id from any of VAS's error bodies; never raises."""
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        inner = data.get("error")
        if isinstance(inner, dict):
            data = {**data, **inner}
        code = data.get("error_code") or data.get("code") or ""
        msg = data.get("error_msg") or data.get("error_message") or data.get("message") or ""
        return str(code), str(msg), str(data.get("request_id") or "")
    text = body.decode("utf-8", "replace").strip()
    if text.startswith("{"):  # JSON cut short by the read cap: take what can be read
        code = _JSON_FIELD["code"].search(text)
        msg = _JSON_FIELD["msg"].search(text)
        rid = _JSON_FIELD["request_id"].search(text)
        if code or msg:
            return _group(code), _group(msg), _group(rid)
    return "", text, ""


def _group(found: re.Match[str] | None) -> str:
    return found.group(1) if found else ""


_JSON_FIELD = {
    "code": re.compile(r'"(?:error_code|code)"\s*:\s*"([^"\\]{0,64})"'),
    "msg": re.compile(r'"(?:error_msg|error_message|message)"\s*:\s*"((?:[^"\\]|\\.)*)'),
    "request_id": re.compile(r'"request_id"\s*:\s*"([^"\\]{0,128})"'),
}


def mask(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced by ``<hidden>``, also as JSON writes it (a server
    quoting a request body inside its JSON message, or a JSON error cut short and read
    without decoding, shows ``PW\\"x`` for ``PW"x`` and ``a\\/b`` for ``a/b``) and as XML or
    HTML escapes it (an OBS or gateway error page: ``a&amp;b``). Not percent-encoded: no
    answer was seen quoting one so, and every form makes a cut answer drop more of its end
    (:func:`longest_written`)."""
    for secret in secrets:
        for form in _written(secret):
            if form in text:
                text = text.replace(form, HIDDEN)
    return text


# A Python bytes literal as aiohttp quotes a line of an answer it could not parse.
_BYTES_LITERAL = re.compile(r"""(?<!\w)b(?:'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")""")


# aiohttp's refusal of an answer's header line too long to read quotes that line: an IAM
# login's X-Subject-Token, a token not known yet, so not masked. Only the refusal is kept.
_TOO_LONG = re.compile(r"(Got more than \d+ bytes when reading)\b.*", re.S)
_TOO_LONG_SAID = r"\1 a header line of the answer (not shown: it may hold a token)"


def _decoded(found: re.Match[str]) -> str:
    try:
        value = ast.literal_eval(found.group(0))
    except (ValueError, SyntaxError):
        return found.group(0)
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else found.group(0)


def exception_text(exc: BaseException) -> str:
    """``str(exc)``, with the bytes aiohttp quotes from an answer it could not parse
    (``b'Echo p\\xc3\\xa4ss'``, inside the repr of its message) decoded back to text: a
    secret a server echoed there is then the text :func:`mask` finds, not an escaped form of
    it (a non-ASCII password, one holding both quote characters)."""
    message, status = getattr(exc, "message", None), getattr(exc, "status", None)
    if isinstance(message, str) and isinstance(status, int):  # aiohttp's ClientResponseError
        message = _TOO_LONG.sub(_TOO_LONG_SAID, message)
        text = f"{status}, message='{_BYTES_LITERAL.sub(_decoded, message)}'"
        url = getattr(getattr(exc, "request_info", None), "real_url", None)
        return text + (f", url='{url}'" if url is not None else "")
    return _BYTES_LITERAL.sub(_decoded, _TOO_LONG.sub(_TOO_LONG_SAID, str(exc)))


def longest_written(secrets: Iterable[str]) -> int:
    """The length of the longest form :func:`mask` hides: what a cut must drop at its end so
    that no secret straddling it leaves its start."""
    return max((len(form) for secret in secrets for form in _written(secret)), default=0)


_UPPER_HEX = re.compile(r"(?<=\\u)[0-9a-f]{4}")


@functools.lru_cache(maxsize=64)
def _written(secret: str) -> tuple[str, ...]:
    """``secret`` and its JSON-escaped forms (non-ASCII kept or ``\\u``-escaped, ``/`` kept
    or ``\\/``) and XML/HTML-escaped forms, longest first; none for "".
    Cached: mask() runs for every error answer."""
    if not secret:
        return ()
    escaped = {json.dumps(secret, ensure_ascii=flag)[1:-1] for flag in (True, False)}
    escaped |= {_UPPER_HEX.sub(lambda m: m.group(0).upper(), form) for form in escaped}  # Java
    forms = {secret} | escaped | {form.replace("/", "\\/") for form in escaped}
    markup = html.escape(secret)  # &amp; &lt; &gt; &quot; &#x27;
    forms |= {markup, markup.replace("&#x27;", "&apos;"), markup.replace("&#x27;", "&#39;")}
    forms |= {html.escape(secret, quote=False)}
    return tuple(sorted(forms, key=len, reverse=True))


def one_line(text: str) -> str:
    """``text`` as one line a terminal shows as it is: every unprintable character (C0 and
    C1 controls such as ESC, BEL, NEL, DEL, line breaks, bidi overrides) becomes a space, each
    run of white space one: no escape sequence from a server reaches a log, a row or a report."""
    if text.isprintable():
        return text
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def shorten(text: str, cap: int = MESSAGE_CAP) -> str:
    """One printable line (:func:`one_line`) of at most ``cap`` characters. Mask secrets
    first: a cut may split one."""
    text = one_line(text)
    return text if len(text) <= cap else text[: cap - 3] + "..."


def tidy(answer: Answer, secrets: Sequence[str] = ()) -> Answer:
    """The answer as rows and logs may carry it: secrets masked, then its texts made one
    printable line and cut short (in that order, so no cut leaves the first characters of a
    secret). Without a message (a create's 201) it costs a substring check per secret: a code
    or request id the server set may still be one (a gateway echoing the security token)."""
    msg, code, rid = answer.error_msg, answer.error_code, answer.request_id
    plain = code.isprintable() and rid.isprintable() and max(len(code), len(rid)) <= CODE_CAP
    if not msg and plain and not any(s and (s in code or s in rid) for s in secrets):
        return answer
    new_msg = shorten(mask(msg, secrets))
    new_code = shorten(mask(code, secrets), CODE_CAP)
    new_rid = shorten(mask(rid, secrets), CODE_CAP)
    if (new_msg, new_code, new_rid) == (msg, code, rid):
        return answer
    return replace(answer, error_msg=new_msg, error_code=new_code, request_id=new_rid)


def credentials_failed(source: str, error: Exception) -> Answer:
    """The answer for a call that could not get valid credentials (a renewal failed after its
    retries): nothing was sent, and every further call would fail alike."""
    return Answer(
        kind=Kind.FATAL,
        error_code="CREDENTIALS",
        error_msg=str(error),
        advice=f"credentials from {source} could not be renewed",
    )


def parse_rate_hint(message: str, headers: Mapping[str, str]) -> float | None:
    """The gateway's limit in calls per second, from the 429 message or X-ratelimit headers."""
    limit = headers.get("X-ratelimit") or headers.get("X-RateLimit-Limit")
    if limit:
        window = _window_seconds(headers.get("X-ratelimit-window", "1"))
        try:
            value = float(limit)
        except ValueError:
            value = 0.0
        if value > 0 and window:
            return value / window
    found = _LIMIT_IN_MESSAGE.search(message)
    if found:
        count = float(found.group(1))
        span = float(found.group(2) or 1) * _UNIT_SECONDS[found.group(3)]
        return count / span if count > 0 else None
    return None


def _window_seconds(text: str) -> float | None:
    found = _WINDOW.fullmatch(text.strip().lower())
    if not found or found.group(2) not in _WINDOW_UNITS:
        return None
    span = float(found.group(1) or 1) * _WINDOW_UNITS[found.group(2)]
    return span if span > 0 else None


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` in seconds (the HTTP-date form is ignored: the gateway sends seconds)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def classify(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    create: bool,
    secrets: Sequence[str] = (),
) -> Answer:
    """Turn one HTTP answer into an Answer; ``create`` says whether the call may create a job.
    Its message never holds one of ``secrets`` and is at most ``MESSAGE_CAP`` characters."""
    return tidy(_classify(status, headers, body, create=create), secrets)


def _classify(status: int, headers: Mapping[str, str], body: bytes, *, create: bool) -> Answer:
    request_id = headers.get("X-Request-Id", "")
    if 200 <= status < 300:
        try:
            data = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            data = None
        if not create:
            if data is None:
                return Answer(
                    kind=Kind.UNAVAILABLE,
                    status=status,
                    request_id=request_id,
                    error_msg="unreadable answer body",
                )
            return Answer(
                kind=Kind.OK,
                status=status,
                request_id=request_id,
                data=data,
                rate_hint=_header_hint(headers),
            )
        job_id = _created_id(data)
        if job_id:
            return Answer(
                kind=Kind.CREATED,
                status=status,
                job_id=job_id,
                request_id=request_id,
                rate_hint=_header_hint(headers),
            )
        return Answer(
            kind=Kind.AMBIGUOUS,
            status=status,
            request_id=request_id,
            error_msg=f"HTTP {status} with no usable job id (the job may exist; it is looked "
            f"up by name): {body[:ERROR_CAP]!r}",
        )
    code, msg, body_request_id = parse_error(body)
    request_id = request_id or body_request_id
    common: dict[str, Any] = {
        "status": status,
        "error_code": code,
        "error_msg": msg,
        "request_id": request_id,
    }
    retry_after = retry_after_seconds(headers.get("Retry-After"))
    if status == 429:
        return Answer(
            kind=Kind.THROTTLED,
            retry_after=retry_after,
            rate_hint=parse_rate_hint(msg, headers),
            **common,
        )
    if status == 503:
        return Answer(kind=Kind.UNAVAILABLE, retry_after=retry_after, **common)
    if status >= 500 or status in (408,):
        if create:
            return Answer(kind=Kind.AMBIGUOUS, **common)
        return Answer(kind=Kind.UNAVAILABLE, retry_after=retry_after, **common)
    if status == 401:
        return Answer(kind=Kind.FATAL, advice=_AUTH_ADVICE, **common)
    if status == 403:
        return Answer(kind=Kind.FATAL, advice=_FORBIDDEN_ADVICE, **common)
    if status == 404 and create:
        return Answer(
            kind=Kind.FATAL, advice="check service.name and the endpoint or region", **common
        )
    if code in _FATAL_400:
        return Answer(kind=Kind.FATAL, advice=_FATAL_400[code], **common)
    if 300 <= status < 400:
        return Answer(kind=Kind.FATAL, advice="unexpected redirect: check the endpoint", **common)
    return Answer(kind=Kind.FAILED, **common)


# Words in an error message and the manifest key they point to, first match wins.
_KEY_HINTS = (
    (re.compile(r"timing|service_config|resource_order|edge_pool|\binput\b"), "job.body"),
    (re.compile(r"service[_ ]version|\bversion\b"), "service.version"),
    (re.compile(r"service[_ ]name|\bservice\b.*\b(not (exist|found)|unknown)"), "service.name"),
    # webhook, dis, hosting and localpath outputs come from [job.body.output]; obs from job.output
    (re.compile(r"\b(webhook|dis|hosting|localpath)\b"), "job.body.output"),
    (re.compile(r"\boutput\b"), "job.output"),
    (re.compile(r"\bdescription\b"), "job.description"),
    (re.compile(r"\bname\b"), "job.name"),
)


def manifest_key_for(code: str, message: str) -> str:
    """The manifest key a failure that every job shares most likely comes from: a guess from
    the message's words for the run's last line; ``job.body`` when nothing points elsewhere."""
    if code == "IVA.0003":  # the body is not valid JSON
        return "job.body"
    text = message.lower()
    for pattern, key in _KEY_HINTS:
        if pattern.search(text):
            return key
    return "job.body"


def _header_hint(headers: Mapping[str, str]) -> float | None:
    if "X-ratelimit" not in headers and "X-RateLimit-Limit" not in headers:
        return None
    return parse_rate_hint("", headers)


def _created_id(data: Any) -> str:
    """The created job's id; "" when there is none that could be one (:func:`usable_task_id`):
    the job probably exists, and is looked up by name rather than recorded under a bad id."""
    if isinstance(data, list) and data and isinstance(data[0], dict):
        data = data[0]
    if isinstance(data, dict) and usable_task_id(data.get("id")):
        return str(data["id"])
    return ""
