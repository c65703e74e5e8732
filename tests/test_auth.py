"""SDK-HMAC-SHA256 signing: the official test vectors, the official signer as an oracle, secrets."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer

from batchsubmit.auth import (
    ALGORITHM,
    Credentials,
    RequestSigner,
    Token,
    TokenHeaders,
    canonical_query,
    canonical_request,
    canonical_uri,
    parse_authorization,
    request_signer,
    sdk_date,
    secrets_of,
    sign,
)

AK = "AKTESTEXAMPLE0000000"
SK = "SKTESTEXAMPLE0000000000000000000000000000"
PROJECT = "0123456789abcdef0123456789abcdef"
HOST = "iva.cn-north-4.myhuaweicloud.com"
DATE = "20240101T000000Z"
TASKS = f"/v2/{PROJECT}/services/c-video-analysis/tasks"
BODY = (
    b'{"name":"job-0001","service_version":"1.0","input":{"type":"obs","data":'
    b'[{"bucket":"my-bucket","path":"videos/a.mp4"}]},"output":{"obs":'
    b'{"bucket":"out-bucket","path":"results/"}}}'
)
CREDENTIALS = Credentials(AK, SK)
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def base_headers(**extra: str) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "X-Sdk-Date": DATE, "Host": HOST}
    headers.update({name.replace("_", "-"): value for name, value in extra.items()})
    return headers


VECTORS: list[Any] = [
    pytest.param(
        "POST",
        TASKS,
        None,
        base_headers(),
        BODY,
        "content-type;host;x-sdk-date",
        "282de683dabb6b8d58d50feb21d2e341e1770cb08c42b05ffdf9366e1df8829e",
        id="create",
    ),
    pytest.param(
        "POST",
        TASKS,
        None,
        base_headers(X_Project_Id=PROJECT),
        BODY,
        "content-type;host;x-project-id;x-sdk-date",
        "8706338030466941a3627ff5ec6dec9e4a8eafb7f3212e87d515805f375aef8c",
        id="create-with-project",
    ),
    pytest.param(
        "GET",
        TASKS,
        {"name_like": "job 1", "limit": 100, "offset": 0},
        base_headers(X_Project_Id=PROJECT),
        b"",
        "content-type;host;x-project-id;x-sdk-date",
        "2dffd35ae4ea31d7e05fb7fa0caefe89bf4b49231167111407f00bb773f2fddd",
        id="list-with-query",
    ),
    pytest.param(
        "DELETE",
        TASKS + "/task-123",
        None,
        base_headers(X_Project_Id=PROJECT, X_Security_Token="STSTOKENEXAMPLE"),
        b"",
        "content-type;host;x-project-id;x-sdk-date;x-security-token",
        "2cfe32d2aade73d24a1b52257a8fd5ae8a8cd65d5b5c731578806be0a49b368e",
        id="delete-with-token",
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "query", "headers", "body", "signed", "signature"), VECTORS
)
def test_official_vectors(
    method: str,
    path: str,
    query: dict[str, str | int] | None,
    headers: dict[str, str],
    body: bytes,
    signed: str,
    signature: str,
) -> None:
    """Each of VAS-API.md's four official test vectors gives exactly the published header."""
    expected = f"{ALGORITHM} Access={AK}, SignedHeaders={signed}, Signature={signature}"
    assert sign(CREDENTIALS, method, path, query, headers, body) == expected


def test_vector_body_hash() -> None:
    """The vectors' body is the one VAS-API.md gives (its sha256 is published)."""
    assert hashlib.sha256(BODY).hexdigest() == (
        "c71492b067d4e1cd079841143d2d93d47d4d73126e3202e5c118e9c202316c20"
    )


def test_canonical_request_of_list_vector() -> None:
    """The canonical request is laid out line by line exactly as the official signer builds it."""
    headers = base_headers(X_Project_Id=PROJECT)
    query: dict[str, str | int] = {"name_like": "job 1", "limit": 100, "offset": 0}
    request, signed = canonical_request("get", TASKS, query, headers, b"")
    assert signed == "content-type;host;x-project-id;x-sdk-date"
    assert request == "\n".join(
        [
            "GET",
            TASKS + "/",
            "limit=100&name_like=job%201&offset=0",
            "content-type:application/json",
            f"host:{HOST}",
            f"x-project-id:{PROJECT}",
            f"x-sdk-date:{DATE}",
            "",
            signed,
            EMPTY_SHA256,
        ]
    )


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v2/p/tasks", "/v2/p/tasks/"),
        ("/v2/p/tasks/", "/v2/p/tasks/"),
        ("/", "/"),
        ("/a b/c", "/a%20b/c/"),
        ("/a%20b/c", "/a%20b/c/"),  # already encoded: not encoded twice
        ("/a+b/~x", "/a%2Bb/~x/"),
        ("/视频/x", "/%E8%A7%86%E9%A2%91/x/"),
        ("/a//b", "/a//b/"),
    ],
)
def test_canonical_uri(path: str, expected: str) -> None:
    """Path segments are percent-encoded once, '/' kept, and a trailing '/' always added."""
    assert canonical_uri(path) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (None, ""),
        ({}, ""),
        ({"b": "2", "a": "1"}, "a=1&b=2"),
        ({"name_like": "job 1", "limit": 100}, "limit=100&name_like=job%201"),
        ({"q": "a/b&c=d+e~"}, "q=a%2Fb%26c%3Dd%2Be~"),
        ({"名": "视频"}, "%E5%90%8D=%E8%A7%86%E9%A2%91"),
    ],
)
def test_canonical_query(query: dict[str, str | int] | None, expected: str) -> None:
    """Query pairs are sorted by key and both sides encoded with only '~' safe."""
    assert canonical_query(query) == expected


def test_underscore_headers_are_not_signed() -> None:
    """Headers whose name holds '_' are left out of SignedHeaders, as the official signer does."""
    headers = {**base_headers(), "X_Custom": "v"}
    _request, signed = canonical_request("GET", "/", None, headers, b"")
    assert signed == "content-type;host;x-sdk-date"


def test_sign_needs_sdk_date() -> None:
    """Signing without X-Sdk-Date is refused rather than giving a signature the gateway rejects."""
    with pytest.raises(ValueError, match="X-Sdk-Date"):
        sign(CREDENTIALS, "GET", "/", None, {"Host": HOST}, b"")


def test_sign_accepts_lowercase_date_header() -> None:
    """A lower-case x-sdk-date header is found and signed like the canonical spelling."""
    upper = sign(CREDENTIALS, "GET", TASKS, None, {"Host": HOST, "X-Sdk-Date": DATE}, b"")
    lower = sign(CREDENTIALS, "GET", TASKS, None, {"host": HOST, "x-sdk-date": DATE}, b"")
    assert upper == lower


@pytest.mark.parametrize(
    ("epoch", "expected"),
    [
        (0, "19700101T000000Z"),
        (1704067200, DATE),
        (1704067200.999, DATE),
        (4102444799, "20991231T235959Z"),
    ],
)
def test_sdk_date(epoch: float, expected: str) -> None:
    """X-Sdk-Date is the UTC time in the basic ISO form the gateway expects."""
    assert sdk_date(epoch) == expected


def test_sdk_date_now_has_the_format() -> None:
    """Without an argument sdk_date gives the current time in the same format."""
    value = sdk_date()
    assert len(value) == 16
    assert value[8] == "T"
    assert value.endswith("Z")


@pytest.mark.parametrize(
    "change",
    ["method", "path", "query", "header", "body", "date", "sk"],
)
def test_every_part_is_covered_by_the_signature(change: str) -> None:
    """Changing any signed part of a request changes its signature."""
    method, path, body = "POST", TASKS, BODY
    query: dict[str, str | int] = {"a": "1"}
    headers = base_headers(X_Project_Id=PROJECT)
    credentials = CREDENTIALS
    before = sign(credentials, method, path, query, headers, body)
    if change == "method":
        method = "PUT"
    elif change == "path":
        path = TASKS + "x"
    elif change == "query":
        query = {"a": "2"}
    elif change == "header":
        headers["X-Project-Id"] = "other"
    elif change == "body":
        body = body + b" "
    elif change == "date":
        headers["X-Sdk-Date"] = "20240101T000001Z"
    else:
        credentials = Credentials(AK, SK + "x")
    after = sign(credentials, method, path, query, headers, body)
    assert parse_authorization(before) is not None
    assert parse_authorization(after) is not None
    assert before != after


# -- the official signer as an oracle -----------------------------------------------------------

_PATH_CHARS = "abcXYZ019-_.~ !$&'()*+,;=:@%视频éü#[]"
_QUERY_CHARS = "abc XYZ 019-_.~!$&'()*+,;=:@/?%视频éü"


def _text(rng: random.Random, alphabet: str, low: int, high: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(low, high)))


def _random_request(
    rng: random.Random,
) -> tuple[str, str, dict[str, str | int], dict[str, str], bytes, bool]:
    method = rng.choice(["GET", "POST", "PUT", "DELETE", "post", "get"])
    segments = [_text(rng, _PATH_CHARS, 0, 12) for _ in range(rng.randint(1, 6))]
    path = "/" + "/".join(segments)
    if rng.random() < 0.3:
        path += "/"
    query: dict[str, str | int] = {}
    for _ in range(rng.randint(0, 5)):
        key = _text(rng, _QUERY_CHARS, 1, 8)
        query[key] = (
            rng.randint(0, 10_000) if rng.random() < 0.3 else _text(rng, _QUERY_CHARS, 0, 15)
        )
    headers = {"X-Sdk-Date": sdk_date(rng.randint(0, 4_000_000_000)), "Host": HOST}
    if rng.random() < 0.8:
        headers["Content-Type"] = "application/json"
    if rng.random() < 0.7:
        headers["X-Project-Id"] = _text(rng, "0123456789abcdef", 32, 32)
    temporary = rng.random() < 0.4
    if temporary:
        headers["X-Security-Token"] = _text(rng, "ABCxyz0123456789+/=", 20, 200)
    if rng.random() < 0.3:
        headers["X-Note"] = "  " + _text(rng, _QUERY_CHARS, 0, 20) + " "
    if rng.random() < 0.2:
        headers["X_Unsigned"] = "x"
    body = b""
    if rng.random() < 0.6:
        body = _text(rng, _QUERY_CHARS + '{}":[]\n', 1, 300).encode()
    return method, path, query, headers, body, temporary


def _official(
    method: str, path: str, query: dict[str, str | int], headers: dict[str, str], body: bytes
) -> str:
    request = SdkRequest(
        method=method,
        schema="https",
        host=HOST,
        resource_path=path,
        query_params=list(query.items()),
        header_params=dict(headers),
        body=body,
    )
    signed = Signer(BasicCredentials(AK, SK)).sign(request)
    return str(signed.header_params["Authorization"])


@pytest.mark.parametrize("seed", range(8))
def test_agrees_with_the_official_signer(seed: int) -> None:
    """Over many generated requests (odd paths, unicode queries, bodies, tokens) both agree."""
    rng = random.Random(seed)
    for _ in range(50):
        method, path, query, headers, body, temporary = _random_request(rng)
        token = headers.get("X-Security-Token") if temporary else None
        credentials = Credentials(AK, SK, token)
        ours = sign(credentials, method, path, query, headers, body)
        assert ours == _official(method, path, query, headers, body), (method, path, query)


# -- secrets ------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "STSTOKENEXAMPLE-SECRET"])
def test_credentials_repr_hides_secrets(token: str | None) -> None:
    """Neither the SK nor the security token appears in any printed form of Credentials."""
    credentials = Credentials(AK, SK, token)
    shown = [repr(credentials), str(credentials), f"{credentials}", repr([credentials])]
    shown.append(repr({"c": credentials}))
    for text in shown:
        assert SK not in text
        assert "SKTEST" not in text
        assert AK in text
        if token:
            assert token not in text
            assert "temporary" in text


def test_credentials_are_frozen() -> None:
    """Credentials cannot be changed after creation (they are shared by every call)."""
    credentials = Credentials(AK, SK)
    with pytest.raises(AttributeError):
        credentials.sk = "other"  # type: ignore[misc]


# -- parse_authorization ------------------------------------------------------------------------


def test_parse_authorization_round_trip() -> None:
    """An Authorization header we signed splits back into its three parts."""
    value = sign(CREDENTIALS, "GET", TASKS, None, base_headers(X_Project_Id=PROJECT), b"")
    parts = parse_authorization(value)
    assert parts is not None
    assert parts["Access"] == AK
    assert parts["SignedHeaders"] == "content-type;host;x-project-id;x-sdk-date"
    assert len(parts["Signature"]) == 64
    assert value.endswith(parts["Signature"])


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Bearer abc",
        "SDK-HMAC-SM3 Access=a, SignedHeaders=b, Signature=c",
        "SDK-HMAC-SHA256",
        "SDK-HMAC-SHA256 Access=a, SignedHeaders=b",
        "SDK-HMAC-SHA256 Access=a, SignedHeaders=b, Signature",
        "SDK-HMAC-SHA256 Access=a SignedHeaders=b Signature=c",
        "sdk-hmac-sha256 Access=a, SignedHeaders=b, Signature=c",
    ],
)
def test_parse_authorization_rejects_malformed(value: str) -> None:
    """Anything but a complete SDK-HMAC-SHA256 header parses to None, never raises."""
    assert parse_authorization(value) is None


def test_parse_authorization_tolerates_spacing() -> None:
    """Spaces around the comma-separated parts do not matter."""
    parts = parse_authorization("SDK-HMAC-SHA256 Access=a,SignedHeaders=b;c ,  Signature=d")
    assert parts == {"Access": "a", "SignedHeaders": "b;c", "Signature": "d"}


def test_temporary_credentials_sign_their_security_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """request_signer() for temporary keys signs X-Security-Token in: the official DELETE
    vector, header for header."""
    monkeypatch.setattr("batchsubmit.auth.time.time", lambda: 1704067200.0)  # 20240101T000000Z
    fixed = {"Content-Type": "application/json", "Host": HOST, "X-Project-Id": PROJECT}
    signer = request_signer(Credentials(AK, SK, "STSTOKENEXAMPLE"), fixed)
    assert isinstance(signer, RequestSigner)
    headers = signer.headers("DELETE", TASKS + "/task-123", None, b"")
    assert headers["X-Security-Token"] == "STSTOKENEXAMPLE"
    assert headers["X-Sdk-Date"] == DATE
    assert headers["Authorization"] == (
        f"{ALGORITHM} Access={AK}, SignedHeaders=content-type;host;x-project-id;x-sdk-date;"
        "x-security-token, Signature="
        "2cfe32d2aade73d24a1b52257a8fd5ae8a8cd65d5b5c731578806be0a49b368e"
    )


def test_an_iam_token_is_sent_not_signed() -> None:
    """An IAM token goes in X-Auth-Token; no signature, no SK involved; never in repr()."""
    token = Token("MIITOKEN-DISTINCTIVE")
    signer = request_signer(token, {"Host": HOST, "X-Project-Id": PROJECT}, {"Accept": "x"})
    assert isinstance(signer, TokenHeaders)
    headers = signer.headers("GET", TASKS, {"limit": 1}, b"")
    assert headers == {
        "Accept": "x",
        "Host": HOST,
        "X-Project-Id": PROJECT,
        "X-Auth-Token": "MIITOKEN-DISTINCTIVE",
    }
    assert "DISTINCTIVE" not in repr(token)
    assert secrets_of(token) == ("MIITOKEN-DISTINCTIVE",)
    assert secrets_of(Credentials(AK, SK, "ST")) == ("ST", SK)
