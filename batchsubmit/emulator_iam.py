"""Fake IAM and ECS metadata for the emulator: tokens and temporary credentials, only as issued.

The credentials of a real account come from three places besides a long-term AK/SK: an IAM
password login (a token sent as ``X-Auth-Token``), and an ECS server's metadata service
(temporary AK/SK plus a security token, for a server with an agency). Each expires. The emulator
accepts them exactly as VAS does: only what it issued, for its one project, until ``expires_at``;
an expired one is refused 401 IVA.0001 "The token must be updated" and counted, so a test can
prove a client never sent one.

Served on the emulator's own port (the paths do not collide with VAS's):

- ``POST /v3/auth/tokens``: password method, project scope by id (or by name, the region);
  201 with ``X-Subject-Token`` and ``{"token": {"expires_at": "...Z", ...}}``.
- ``GET /v3/projects?name={region}``: AK/SK signed or with ``X-Auth-Token``;
  ``{"projects": [{"id", "name", ...}]}``.
- ``PUT /meta-data/latest/api/token`` (``X-Metadata-Token-Ttl-Seconds``): a session token.
- ``GET /openstack/latest/securitykey`` (``X-Metadata-Token``):
  ``{"credential": {"access", "secret", "securitytoken", "expires_at"}}``.

Times follow IAM's format, ``2026-12-01T17:00:00.123000Z`` (the official SDK parses exactly
``%Y-%m-%dT%H:%M:%S.%fZ``). The clock is an attribute (``Identity.clock``) so tests can move it.
"""

from __future__ import annotations

import secrets
import string
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from aiohttp import web

__all__ = [
    "IAM_PROJECTS_PATH",
    "IAM_TOKEN_PATH",
    "MAX_REQUEST_FIELD",
    "METADATA_SECURITYKEY_PATH",
    "METADATA_TOKEN_PATH",
    "NO_AGENCY_MESSAGE",
    "TOKEN_BYTES",
    "IamUser",
    "Identity",
    "IdentityOptions",
    "Refusal",
    "Temporary",
    "iam_time",
]

IAM_TOKEN_PATH: Final = "/v3/auth/tokens"
IAM_PROJECTS_PATH: Final = "/v3/projects"
METADATA_TOKEN_PATH: Final = "/meta-data/latest/api/token"
METADATA_SECURITYKEY_PATH: Final = "/openstack/latest/securitykey"
# What the ECS metadata service says without an agency; the official SDK looks for this text.
NO_AGENCY_MESSAGE: Final = "Please configure Cloud Service Agency first"
TOKEN_EXPIRED: Final = "The token must be updated"
TOKEN_BYTES: Final = 7_000  # random bytes of a token: about 9,300 characters of base64
MAX_REQUEST_FIELD: Final = 32_768  # bytes of a request header line the gateway takes
_METADATA_TTL_MAX: Final = 21600  # seconds, as ECS and the SDK's 6 h default
_JSON: Final = "application/json"

# Checks that need the emulator's AK/SK signature verification (raises Refusal).
Verify = Callable[[web.Request, bytes], None]


class Refusal(Exception):
    """A VAS error answer (status, error_code, error_msg), rendered by the emulator."""

    def __init__(self, status: int, code: str, msg: str) -> None:
        super().__init__(msg)
        self.status = status
        self.code = code
        self.msg = msg


@dataclass(frozen=True)
class IamUser:
    """An IAM user who may log in with a password (the password never shows in ``repr``)."""

    name: str
    domain: str
    password: str = field(repr=False)

    @classmethod
    def parse(cls, spec: str) -> IamUser:
        """``NAME:DOMAIN:PASSWORD`` (the password may contain ``:``); ValueError if not."""
        name, _, rest = spec.partition(":")
        domain, colon, password = rest.partition(":")
        if not (name and domain and colon and password):
            raise ValueError("expected NAME:DOMAIN:PASSWORD, each part non-empty")
        return cls(name, domain, password)


@dataclass(frozen=True, kw_only=True)
class IdentityOptions:
    """What the fake IAM and metadata serve. Default: neither (VAS with AK/SK only)."""

    users: tuple[IamUser, ...] = ()
    """IAM users allowed to log in; none: ``/v3/auth/tokens`` is not served."""
    token_ttl: float = 86400.0
    """Seconds an IAM token lives (IAM's: 24 h)."""
    projects_api: bool = False
    """Serve ``GET /v3/projects`` (on whenever ``users`` or ``metadata`` is set)."""
    metadata: bool = False
    """Serve the ECS metadata token and securitykey paths."""
    agency: bool = True
    """False: the server has no agency; securitykey answers 401 naming Cloud Service Agency."""
    credential_ttl: float = 3600.0
    """Seconds temporary credentials from metadata live."""
    region: str = "cn-north-4"
    """The region, which is the project's name in IAM (``GET /v3/projects?name=``)."""
    outage: int = 0
    """A fault: the first ``outage`` calls to IAM and the metadata service answer 503 (an
    outage that ends, so a client that retries succeeds)."""

    @property
    def serves_iam(self) -> bool:
        return bool(self.users) or self.projects_api or self.metadata


@dataclass(frozen=True)
class Temporary:
    """Temporary credentials as the metadata service issued them."""

    ak: str
    sk: str = field(repr=False)
    security_token: str = field(repr=False)
    expires_at: float


@dataclass(frozen=True)
class _Token:
    project_id: str
    expires_at: float
    user: str


def iam_time(epoch: float) -> str:
    """IAM's timestamp form, microseconds and ``Z``: ``2026-12-01T17:00:00.123000Z``."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Identity:
    """Issued tokens and temporary credentials, and counters a test reads.

    ``check_*`` raise :class:`Refusal` as VAS answers: unknown -> 401 APIGW.0301, expired ->
    401 IVA.0001 "The token must be updated" (counted in ``refused_expired_*``).
    """

    def __init__(
        self,
        options: IdentityOptions,
        *,
        project_id: str,
        domain_id: str = "d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.options = options
        self.project_id = project_id
        self.domain_id = domain_id
        self.clock = clock
        self._tokens: dict[str, _Token] = {}
        self._temporary: dict[str, Temporary] = {}
        self._sessions: dict[str, float] = {}  # metadata session token -> expiry
        self.tokens_issued = 0
        self.credentials_issued = 0
        self.metadata_tokens_issued = 0
        self.refused_expired_tokens = 0
        self.refused_expired_credentials = 0
        self.refused_unknown = 0
        """Calls with a token or security token the emulator never issued."""
        self.unavailable = 0
        """Calls answered 503 by the ``outage`` fault."""

    @property
    def refused_expired(self) -> int:
        """Calls refused because their token or temporary credentials had expired."""
        return self.refused_expired_tokens + self.refused_expired_credentials

    # -- what VAS calls are checked against ---------------------------------------------------

    def temporary(self, ak: str) -> Temporary | None:
        """The temporary credentials issued under ``ak``, expired or not."""
        return self._temporary.get(ak)

    def check_temporary(self, issued: Temporary, sent_token: str) -> None:
        """A call signed with temporary credentials: their own security token, not expired."""
        if not secrets.compare_digest(sent_token.encode(), issued.security_token.encode()):
            self.refused_unknown += 1
            raise _unauthorized("X-Security-Token is missing or was not issued with this AK")
        if self.clock() >= issued.expires_at:
            self.refused_expired_credentials += 1
            raise Refusal(401, "IVA.0001", f"{TOKEN_EXPIRED}: the temporary AK/SK have expired")

    def check_token(self, token: str) -> str:
        """An ``X-Auth-Token`` this IAM issued and not expired; returns its project id."""
        issued = self._tokens.get(token)
        if issued is None:
            self.refused_unknown += 1
            raise _unauthorized("the X-Auth-Token was not issued by this IAM")
        if self.clock() >= issued.expires_at:
            self.refused_expired_tokens += 1
            raise Refusal(401, "IVA.0001", TOKEN_EXPIRED)
        return issued.project_id

    # -- issuing ------------------------------------------------------------------------------

    def issue_token(self, user: str) -> tuple[str, float]:
        """A new project-scoped token and its expiry (epoch seconds)."""
        # As long as real ones (CMS blobs, several KiB; Huawei documents up to 32,768
        # characters): a client with aiohttp's default 8,190-byte header line cannot log in.
        token = "MII" + secrets.token_urlsafe(TOKEN_BYTES)
        expires = self.clock() + self.options.token_ttl
        self._tokens[token] = _Token(self.project_id, expires, user)
        self.tokens_issued += 1
        return token, expires

    def issue_temporary(self) -> Temporary:
        """New temporary credentials (what the metadata service hands an agency's server)."""
        alphabet = string.ascii_uppercase + string.digits
        ak = "TMP" + "".join(secrets.choice(alphabet) for _ in range(17))
        issued = Temporary(
            ak=ak,
            sk=secrets.token_urlsafe(30),
            security_token="gQ" + secrets.token_urlsafe(120),
            expires_at=self.clock() + self.options.credential_ttl,
        )
        self._temporary[ak] = issued
        self.credentials_issued += 1
        return issued

    # -- serving ------------------------------------------------------------------------------

    def routes(self, verify: Verify | None) -> list[web.RouteDef]:
        """The IAM and metadata routes the options enable; ``verify`` checks AK/SK signatures
        (None: signatures are not checked)."""
        options = self.options
        faulty = self._faulty
        found: list[web.RouteDef] = []
        if options.users:
            found.append(web.post(IAM_TOKEN_PATH, faulty(self._login)))
        if options.serves_iam:
            projects = faulty(self._projects(verify))
            found.append(web.get(IAM_PROJECTS_PATH, projects, allow_head=False))
        if options.metadata:
            found.append(web.put(METADATA_TOKEN_PATH, faulty(self._metadata_token)))
            securitykey = faulty(self._securitykey)
            found.append(web.get(METADATA_SECURITYKEY_PATH, securitykey, allow_head=False))
        return found

    def _faulty(self, handler: _Handler) -> _Handler:
        """``handler`` behind the ``outage`` fault: its first calls answer 503."""

        async def handle(request: web.Request) -> web.Response:
            if self.unavailable < self.options.outage:
                self.unavailable += 1
                await request.read()
                doc = {"error": {"code": 503, "title": "Service Unavailable", "message": _BUSY}}
                return _json(503, doc)
            return await handler(request)

        return handle

    async def _login(self, request: web.Request) -> web.Response:
        try:
            doc = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _iam_error(400, "Bad Request", "The request body is not valid JSON")
        login = _password_login(doc)
        if isinstance(login, str):
            return _iam_error(400, "Bad Request", login)
        name, domain, password, scope = login
        user = next((u for u in self.options.users if (u.name, u.domain) == (name, domain)), None)
        if user is None or not secrets.compare_digest(user.password.encode(), password.encode()):
            return _iam_error(401, "Unauthorized", "The username or password is wrong.")
        if scope not in (("id", self.project_id), ("name", self.options.region)):
            return _iam_error(
                401, "Unauthorized", f"The project {scope[1]!r} does not exist in domain {domain!r}"
            )
        now = self.clock()
        token, expires = self.issue_token(name)
        body = {
            "token": {
                "expires_at": iam_time(expires),
                "issued_at": iam_time(now),
                "methods": ["password"],
                "project": self._project_doc(),
                "user": {
                    "id": uuid.uuid5(uuid.NAMESPACE_OID, f"{domain}/{name}").hex,
                    "name": name,
                    "domain": {"id": self.domain_id, "name": domain},
                },
                "roles": [{"id": "0", "name": "op_user"}],
                "catalog": [],
            }
        }
        return _json(201, body, {"X-Subject-Token": token})

    def _projects(self, verify: Verify | None) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            try:
                token = request.headers.get("X-Auth-Token")
                if token is not None:
                    self.check_token(token)
                elif verify is not None:
                    verify(request, body)
            except Refusal as refusal:
                return _iam_error(refusal.status, "Unauthorized", refusal.msg, code=refusal.code)
            name = request.query.get("name")
            projects = [] if name not in (None, self.options.region) else [self._project_doc()]
            return _json(200, {"projects": projects, "links": {"self": str(request.url)}})

        return handle

    async def _metadata_token(self, request: web.Request) -> web.Response:
        raw = request.headers.get("X-Metadata-Token-Ttl-Seconds", "")
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 6) or not (
            1 <= int(raw) <= _METADATA_TTL_MAX
        ):
            return _text(
                400,
                f"X-Metadata-Token-Ttl-Seconds must be an integer from 1 to {_METADATA_TTL_MAX}",
            )
        token = secrets.token_urlsafe(32)
        self._sessions[token] = self.clock() + int(raw)
        self.metadata_tokens_issued += 1
        return _text(200, token)

    async def _securitykey(self, request: web.Request) -> web.Response:
        session = request.headers.get("X-Metadata-Token", "")
        expires = self._sessions.get(session)
        if expires is None or self.clock() >= expires:
            return _text(401, "Unauthorized: X-Metadata-Token is missing, unknown or expired")
        if not self.options.agency:
            return _json(401, {"error_code": "ECS.0401", "error_msg": NO_AGENCY_MESSAGE})
        issued = self.issue_temporary()
        credential = {
            "access": issued.ak,
            "secret": issued.sk,
            "securitytoken": issued.security_token,
            "expires_at": iam_time(issued.expires_at),
        }
        return _json(200, {"credential": credential})

    def _project_doc(self) -> dict[str, Any]:
        return {
            "id": self.project_id,
            "name": self.options.region,
            "domain_id": self.domain_id,
            "domain": {"id": self.domain_id},
            "enabled": True,
            "is_domain": False,
        }


def _password_login(doc: object) -> tuple[str, str, str, tuple[str, str]] | str:
    """(user, domain, password, (\"id\" or \"name\", project)) of a password login, or what is
    wrong with it."""
    auth = _get(doc, "auth")
    identity = _get(auth, "identity")
    problem = _methods_problem(identity)
    if problem:
        return problem
    user = _get(_get(identity, "password"), "user")
    name, password = _get(user, "name"), _get(user, "password")
    domain = _get(_get(user, "domain"), "name")
    for value, where in ((name, "name"), (password, "password"), (domain, "domain.name")):
        if not isinstance(value, str) or not value:
            return f"auth.identity.password.user.{where} is required"
    project = _get(_get(auth, "scope"), "project")
    for key in ("id", "name"):
        value = _get(project, key)
        if isinstance(value, str) and value:
            return str(name), str(domain), str(password), (key, value)
    return "auth.scope.project.id is required (the emulator issues project-scoped tokens)"


def _methods_problem(identity: object) -> str:
    """What is wrong with ``auth.identity.methods`` ("" when it is ``["password"]``): IAM
    authenticates by every method listed, each with its own block beside ``methods``, and
    answers 400 to one it does not know; the emulator knows only ``password``, so a list with
    anything else (even a method real IAM has) is refused rather than half-honoured."""
    methods = _get(identity, "methods")
    if methods == ["password"]:
        return ""
    if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
        return 'auth.identity.methods must be a list of method names: ["password"]'
    if len(set(methods)) != len(methods):
        return 'auth.identity.methods names a method twice: give ["password"]'
    for method in methods:
        if method != "password":
            shown = method if method.isprintable() and len(method) <= 40 else "..."
            if _get(identity, method) is None:
                return (
                    f"auth.identity.methods lists {shown!r} with no auth.identity.{shown} "
                    'block: give ["password"] only'
                )
            return f'auth.identity.methods: {shown!r} is not emulated: give ["password"] only'
    return 'auth.identity.methods must be ["password"] (the only method emulated)'


def _get(doc: object, key: str) -> object:
    return doc.get(key) if isinstance(doc, dict) else None


_Handler = Callable[[web.Request], Awaitable[web.Response]]
_BUSY = "The service is temporarily unavailable. Try again later."


def _unauthorized(detail: str) -> Refusal:
    return Refusal(401, "APIGW.0301", f"Incorrect IAM authentication information: {detail}")


def _headers(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    return {"X-Request-Id": uuid.uuid4().hex, **(extra or {})}


def _json(status: int, doc: object, extra: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(doc), headers=_headers(extra), content_type=_JSON
    )


def _text(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text, headers=_headers())


def _iam_error(status: int, title: str, message: str, *, code: str = "") -> web.Response:
    """Keystone's error shape, as IAM's token API answers; ``error_code`` when VAS-like."""
    doc: dict[str, Any] = {"error": {"code": status, "title": title, "message": message}}
    if code:
        doc["error_code"] = code
        doc["error_msg"] = message
    return _json(status, doc)
