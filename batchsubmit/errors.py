"""One exception tree; the CLI maps each branch to a documented exit code.

    BatchSubmitError                 base; never raised itself
    ├── UsageError                   exit 2: bad command line or environment
    │   ├── ManifestError            exit 2: the manifest or a listing file is wrong
    │   └── CredentialError          exit 2: credentials missing or malformed
    │       └── CredentialsUnavailable  exit 3: IAM or ECS metadata did not answer (retried)
    ├── LockedError                  exit 75: another run holds the results file
    ├── FatalApiError                exit 3: every further call would fail the same way
    ├── StorageError                 exit 3: the results, journal or an output cannot be written
    └── ApiError                     one job's call failed; becomes a results row

Messages never contain secrets: nothing here is ever given an SK or a token.
"""

from __future__ import annotations

__all__ = [
    "ApiError",
    "BatchSubmitError",
    "CredentialError",
    "CredentialsUnavailable",
    "FatalApiError",
    "LockedError",
    "ManifestError",
    "StorageError",
    "UsageError",
    "innermost",
]


class BatchSubmitError(Exception):
    """Base of every error batchsubmit raises on purpose."""

    exit_code = 1


class UsageError(BatchSubmitError):
    """The command line, an option or the environment is wrong; nothing was sent."""

    exit_code = 2


class ManifestError(UsageError):
    """A manifest or listing problem, located by file and line or key path."""

    def __init__(self, where: str, what: str) -> None:
        super().__init__(f"{where}: {what}")
        self.where = where
        self.what = what


class CredentialError(UsageError):
    """Credentials are missing or unusable."""


class CredentialsUnavailable(CredentialError):
    """IAM or the ECS metadata service answered 429 or 5xx, or stopped answering once
    connected: worth trying again, and the gate does (:meth:`~batchsubmit.engine.gate.Gate.other`,
    the run's retry policy). Raised out of the retries it means the service, not the
    configuration: exit 3, like any other outage that stops a run before it creates."""

    exit_code = 3

    def __init__(self, message: str, *, throttled: bool = False, retry_after: float | None = None):
        super().__init__(message)
        self.throttled = throttled
        self.retry_after = retry_after


class LockedError(BatchSubmitError):
    """Another run holds the lock on the same results file."""

    exit_code = 75


class StorageError(BatchSubmitError):
    """Writing the results file or the journal failed mid-run, or the summary, metrics or
    report at its end (disk full, permissions): after requests, so never a usage error."""

    exit_code = 3


class ApiError(BatchSubmitError):
    """An answer from the service that is not a success, with what support will ask for."""

    def __init__(
        self,
        status: int,
        error_code: str,
        error_msg: str,
        request_id: str = "",
    ) -> None:
        super().__init__(f"HTTP {status} {error_code}: {error_msg}".strip())
        self.status = status
        self.error_code = error_code
        self.error_msg = error_msg
        self.request_id = request_id


class FatalApiError(BatchSubmitError):
    """The service refused in a way that will repeat for every job: stop the run."""

    exit_code = 3

    def __init__(self, error: ApiError, advice: str) -> None:
        super().__init__(f"{error}; {advice}" + _request_suffix(error))
        self.error = error
        self.advice = advice


def _request_suffix(error: ApiError) -> str:
    return f" (request id {error.request_id})" if error.request_id else ""


def innermost(exc: BaseException) -> BaseException:
    """The error itself inside nested task-group exception groups: what a message names."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc
