"""Submit Huawei Cloud VAS video analysis jobs in bulk: streaming, rate-limited, exactly once.

The data flows one way: ``manifest`` → ``sources`` → ``jobs`` → ``pool`` (with ``client`` and
``throttle``) → ``results``; ``cli`` builds everything and is the only module that reads the
environment, prints or exits.
"""

from importlib.metadata import PackageNotFoundError, version

from .errors import (
    ApiError,
    BatchSubmitError,
    CredentialError,
    FatalApiError,
    LockedError,
    ManifestError,
    UsageError,
)

try:
    __version__ = version("batchsubmit")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"

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
