"""Submit Huawei Cloud VAS video analysis jobs in bulk: streaming, rate-limited, exactly once.

The data flows one way: ``manifest`` → ``sources`` → ``jobs`` → ``pool`` (with ``client`` and
``throttle``) → ``results``; ``cli`` builds everything and is the only module that reads the
environment, prints or exits.
"""

from .errors import (
    ApiError,
    BatchSubmitError,
    CredentialError,
    FatalApiError,
    LockedError,
    ManifestError,
    UsageError,
)

# The one place the version is written (pyproject reads it from here): importlib.metadata
# would cost every start-up ~25 ms of imports and a scan of the installed distributions.
__version__ = "0.1.0"

__all__ = [
    "ApiError",
    "BatchSubmitError",
    "CredentialError",
    "FatalApiError",
    "LockedError",
    "ManifestError",
    "UsageError",
    "__version__",
]
