"""Huawei's own SDK (``huaweicloudsdkvas``) as the oracle of the emulator's job answers.

The SDK's models must parse what the emulator answers (create, list with a state filter, show
with a hosting result, stop, start, delete, and an error body), and its signatures must verify.
The SDK is synchronous: it talks to an emulator served from a background thread. Job lives are
time-scaled (1000x), so a whole life takes tens of milliseconds.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from batchsubmit.emulator import EMULATOR_AK, EMULATOR_PROJECT_ID, EMULATOR_SK, Faults, Lifecycle
from tests.helpers import LiveEmulator

vas = pytest.importorskip("huaweicloudsdkvas.v2")
credentials_module = pytest.importorskip("huaweicloudsdkcore.auth.credentials")
exceptions = pytest.importorskip("huaweicloudsdkcore.exceptions.exceptions")
http_config = pytest.importorskip("huaweicloudsdkcore.http.http_config")

SERVICE = "c-video-analysis"
# The SDK parses datetimes with python-dateutil, which it does not declare: without it, it warns
# and keeps the string; as_datetime() then checks the string is VAS's form instead.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Unable to convert string to datetime due to failure to import dateutil:ImportWarning"
)
LIFE = Lifecycle(
    time_scale=1000.0, pending=(5, 5), starting=(5, 5), running=(20, 20), stopping=5.0,
    deleting=5.0,
)  # fmt: skip


# The transitions a test reads right after its call (STOPPING, STARTING, DELETING) last 0.4 s
# of real time, not 5 ms: a loaded machine (a parallel test run) must not skip past them.
STEPS = replace(LIFE, starting=(400, 400), stopping=400.0, deleting=400.0)


def serving(life: Lifecycle) -> Iterator[LiveEmulator]:
    server = LiveEmulator(Faults(jobs=life, seed=3))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def live() -> Iterator[LiveEmulator]:
    yield from serving(LIFE)


@pytest.fixture
def stepping() -> Iterator[LiveEmulator]:
    yield from serving(STEPS)


def sdk_client(url: str) -> Any:
    """A VasClient built the documented way, against the emulator."""
    config = http_config.HttpConfig.get_default_config()
    config.timeout = (2, 5)
    credentials = credentials_module.BasicCredentials(EMULATOR_AK, EMULATOR_SK, EMULATOR_PROJECT_ID)
    return (
        vas.VasClient.new_builder()
        .with_http_config(config)
        .with_credentials(credentials)
        .with_endpoint(url)
        .build()
    )


def create(client: Any, name: str, output: Any) -> str:
    body = vas.CreateTasksRequestBody(
        name=name,
        service_version="1.0",
        input=vas.TaskInput(
            type="obs", data=[vas.TaskInputData(bucket="in-bucket", path=f"{name}.mp4")]
        ),
        output=output,
    )
    response = client.create_tasks(vas.CreateTasksRequest(service_name=SERVICE, body=body))
    assert response.status_code == 201
    [created] = response.body
    task_id: str = created.id
    return task_id


def show(client: Any, task_id: str) -> Any:
    return client.show_task(vas.ShowTaskRequest(service_name=SERVICE, task_id=task_id))


def as_datetime(value: object) -> datetime.datetime:
    """The SDK's datetime, or (without dateutil) the string it kept, which must be VAS's form."""
    if isinstance(value, str):
        parsed = datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")
        return parsed.replace(tzinfo=datetime.UTC)
    assert isinstance(value, datetime.datetime)
    return value


def wait_for(check: Callable[[], bool], seconds: float = 2.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "the emulated job did not get there in time"
        time.sleep(0.005)


def test_sdk_parses_create_list_and_show_with_hosting_result(live: LiveEmulator) -> None:
    """The SDK creates jobs, lists the SUCCEEDED ones by state and reads show's hosting result
    (status, content, size, overdue date as a datetime, result_json_overdue_at in epoch ms)."""
    client = sdk_client(live.url)
    hosted = create(client, "hosted", vas.TaskOutput(hosting=vas.TaskOutputHosting()))
    plain = create(
        client, "plain", vas.TaskOutput(obs=vas.TaskOutputObs(bucket="out-bucket", path="r/"))
    )
    waiting = create(client, "waiting", vas.TaskOutput(hosting=vas.TaskOutputHosting()))
    live.emulator.set_state(waiting, "RUNNING", hosting="NOT_GENERATED")  # held (no call runs)
    first = show(client, waiting)
    wait_for(lambda: show(client, hosted).hosting_result.status == "AVAILABLE")
    wait_for(lambda: show(client, plain).state == "SUCCEEDED")
    shown = show(client, hosted)
    listed = client.list_tasks_details(
        vas.ListTasksDetailsRequest(
            service_name=SERVICE, state="SUCCEEDED", order="name:ASC", offset=0, limit=100
        )
    )
    pending = client.list_tasks_details(
        vas.ListTasksDetailsRequest(service_name=SERVICE, state="PENDING", limit=1)
    )
    assert (first.state, first.hosting_result.status) == ("RUNNING", "NOT_GENERATED")
    assert first.hosting_result.data is None
    created = as_datetime(first.created_at)
    assert created.tzinfo is not None
    assert abs(created.timestamp() - time.time()) < 5
    assert shown.state == "SUCCEEDED"
    assert shown.error is None
    result = shown.hosting_result
    assert result.status == "AVAILABLE"
    assert hosted in result.data
    assert int(result.file_size) == len(result.data.encode())
    overdue_at = shown.output.hosting.result_json_overdue_at
    assert isinstance(overdue_at, int)
    assert int(as_datetime(result.overdue_date).timestamp()) == overdue_at // 1000
    assert (listed.count, [task.name for task in listed.tasks]) == (2, ["hosted", "plain"])
    assert {task.id for task in listed.tasks} == {hosted, plain}
    assert all(task.state == "SUCCEEDED" for task in listed.tasks)
    assert (pending.count, pending.tasks) == (0, [])


def test_sdk_stops_starts_and_deletes(stepping: LiveEmulator) -> None:
    """stop: 202, STOPPING then STOPPED; start: 202, runs to SUCCEEDED; delete: 202, DELETING,
    then the SDK raises the emulator's 404 IVA.0005 with its request id."""
    live = stepping
    client = sdk_client(live.url)
    output = vas.TaskOutput(obs=vas.TaskOutputObs(bucket="out-bucket", path="r/"))
    task_id = create(client, "stoppable", output)
    live.emulator.set_state(task_id, "RUNNING")  # held there (no call is being served now)
    stopped = client.stop_task(vas.StopTaskRequest(service_name=SERVICE, task_id=task_id))
    stopping = show(client, task_id).state
    wait_for(lambda: show(client, task_id).state == "STOPPED")
    started = client.start_task(vas.StartTaskRequest(service_name=SERVICE, task_id=task_id))
    starting = show(client, task_id).state
    wait_for(lambda: show(client, task_id).state == "SUCCEEDED")
    deleted = client.delete_task(vas.DeleteTaskRequest(service_name=SERVICE, task_id=task_id))
    deleting = show(client, task_id).state
    refused: list[Any] = []  # the SDK's ClientRequestException

    def gone() -> bool:
        try:
            show(client, task_id)
        except exceptions.ClientRequestException as exc:
            refused.append(exc)
            return True
        return False

    wait_for(gone)  # DELETING lasts 400 emulated seconds: 0.4 s
    assert (stopped.status_code, started.status_code, deleted.status_code) == (202, 202, 202)
    assert stopping == "STOPPING"
    assert starting in ("STARTING", "RUNNING")
    assert deleting == "DELETING"
    [error] = refused
    assert (error.status_code, error.error_code) == (404, "IVA.0005")
    assert error.request_id
    assert live.emulator.deleted == {task_id: "SUCCEEDED"}
    assert live.emulator.calls["stop", 202] == live.emulator.calls["start", 202] == 1


_SDK_TYPES = {"str": "string", "int": "integer", "bool": "boolean", "object": "object"}


def sdk_shape(type_name: str) -> Any:
    """A request model of the SDK as the shape batchsubmit.vas spells it."""
    if type_name in _SDK_TYPES:
        return _SDK_TYPES[type_name]
    if type_name.startswith("list[") and type_name.endswith("]"):
        return [sdk_shape(type_name[5:-1])]
    model = getattr(vas, type_name)
    return {field: sdk_shape(kind) for field, kind in model.openapi_types.items()}


def test_the_create_body_shape_is_the_sdks_request_model() -> None:
    """The fields (and their types) the emulator takes and the manifest allows in [job.body]
    are exactly those the SDK's CreateTasksRequestBody can send, nested models included."""
    from batchsubmit.vas import CREATE_BODY

    assert sdk_shape("CreateTasksRequestBody") == CREATE_BODY
