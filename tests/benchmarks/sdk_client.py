"""The alternative users have: Huawei's official SDK (``huaweicloudsdkvas``) from a thread pool.

    python -m tests.benchmarks.sdk_client URL --jobs N [--threads 64] [--pool threads|default|N]

A synchronous ``VasClient`` built the documented way (``BasicCredentials(ak, sk, project_id)``,
``with_endpoint``), shared by a ``ThreadPoolExecutor`` of ``--threads`` threads, each calling
``create_tasks`` with a ``CreateTasksRequest`` built from the SDK's models (the same body as
the other clients, see :mod:`workload`). ``--pool threads`` (the default) sizes the SDK's
connection pool to the threads (``HttpConfig(pool_maxsize=...)``), as a tuned user would;
``--pool default`` keeps ``HttpConfig.get_default_config()`` (10 connections: the other
threads open and drop connections, with a urllib3 warning each). Prints one JSON line, as
``bare_client`` does.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import SdkException
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkvas.v2 import (
    CreateTasksRequest,
    CreateTasksRequestBody,
    TaskInput,
    TaskInputData,
    TaskOutput,
    TaskOutputObs,
    VasClient,
)

from tests.benchmarks import workload


def request_for(i: int) -> Any:
    """Job ``i``'s create request, from the SDK's models."""
    fields = workload.body_fields(i)
    data = fields["input"]["data"][0]
    body = CreateTasksRequestBody(
        name=fields["name"],
        description=fields["description"],
        service_version=fields["service_version"],
        input=TaskInput(type="obs", data=[TaskInputData(bucket=data["bucket"], path=data["path"])]),
        output=TaskOutput(obs=TaskOutputObs(bucket=workload.OUT_BUCKET, path=workload.OUT_PATH)),
    )
    return CreateTasksRequest(service_name=workload.SERVICE, body=body)


def build_client(base_url: str, pool: int | None) -> Any:
    config = HttpConfig.get_default_config()
    config.ignore_ssl_verification = True  # plain http here; what a local test would set
    config.timeout = (10, 60)
    if pool is not None:
        config.pool_connections = pool
        config.pool_maxsize = pool
    credentials = BasicCredentials(workload.AK, workload.SK, workload.PROJECT_ID)
    return (
        VasClient.new_builder()
        .with_http_config(config)
        .with_credentials(credentials)
        .with_endpoint(base_url)
        .build()
    )


def _run(base_url: str, jobs: int, threads: int, pool: int | None) -> dict[str, Any]:
    client = build_client(base_url, pool)
    errors: dict[str, int] = {}
    lock = threading.Lock()

    def failed(key: str) -> bool:
        with lock:
            errors[key] = errors.get(key, 0) + 1
        return False

    def create(i: int) -> bool:
        try:
            response = client.create_tasks(request_for(i))
        except SdkException as exc:
            return failed(f"{getattr(exc, 'status_code', '?')} {getattr(exc, 'error_code', '')}")
        except Exception as exc:  # a transport error: counted, and the run is then invalid
            return failed(type(exc).__name__)
        return response.status_code == 201 and bool(response.body and response.body[0].id)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as executor:
        created = sum(executor.map(create, range(jobs), chunksize=16))
    elapsed = time.perf_counter() - started
    return {"created": created, "errors": errors, "elapsed": elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the server's base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument(
        "--pool",
        default="threads",
        help="connection pool size: a number, 'threads' (as many as threads, the default) "
        "or 'default' (the SDK's own, 10)",
    )
    args = parser.parse_args()
    pool: int | None
    if args.pool == "default":
        pool = None
    elif args.pool == "threads":
        pool = args.threads
    else:
        pool = int(args.pool)
    # urllib3 warns once per dropped connection when the pool is smaller than the threads.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    report = _run(args.url.rstrip("/"), args.jobs, args.threads, pool)
    sys.stdout.write(orjson.dumps(report).decode() + "\n")


if __name__ == "__main__":
    main()
