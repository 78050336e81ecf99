"""The Post API sandbox: every rule it enforces, every fault it injects, its JSON endpoints and its CLI."""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import signal
import socket
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import pytest
import structlog
from pydantic import ValidationError

from bridge.postapi.methods import EVENTS, METHODS, Method
from bridge.postapi.rules import MAX_ROWS_PER_REQUEST
from bridge.sandbox import Faults, Keys, Sandbox, SandboxOptions
from bridge.sandbox.cli import register
from bridge.sandbox.faults import FaultInjector
from devtools.testkit.bridge_child import bridge_command

KEY = "sandbox-test-key"
APP = 1111
OTHER_APP = 2222
OTHER_KEY = "other-app-key"
ROOT = Path(__file__).resolve().parents[1]


def row(seq: int = 0, **changes: str) -> dict[str, str]:
    """A valid CSV row (application_id left to the query) with ``changes``; ``""`` leaves a cell empty."""
    base = {
        "profile_id": f"user-{seq}",
        "event_name": "purchase",
        "event_timestamp": str(int(time.time()) - 60),
        "event_json": json.dumps({"seq": seq}),
    }
    return base | changes


def csv_body(rows: list[dict[str, str]], columns: list[str] | None = None) -> bytes:
    columns = columns or list(dict.fromkeys(name for r in rows for name in r))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    writer.writerows([r.get(name, "") for name in columns] for r in rows)
    return out.getvalue().encode()


class Answer(NamedTuple):
    status: int
    text: str
    headers: Mapping[str, str]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(SandboxOptions(keys=Keys(post_api_key=KEY, application_id=APP))) as running:
        yield running


async def post(http: aiohttp.ClientSession, url: str, query: Mapping[str, object], body: bytes = b"") -> Answer:
    async with http.post(url, params={name: str(value) for name, value in query.items()}, data=body) as response:
        return Answer(response.status, await response.text(), response.headers)


async def post_csv(
    http: aiohttp.ClientSession,
    sandbox: Sandbox,
    body: bytes,
    key: str = KEY,
    **query: str | int,
) -> Answer:
    return await post(http, sandbox.url + EVENTS.csv_path, {"post_api_key": key, **query}, body)


async def post_query(http: aiohttp.ClientSession, sandbox: Sandbox, key: str = KEY, **params: str | int) -> Answer:
    return await post(http, sandbox.url + EVENTS.path, {"post_api_key": key, **params})


async def get_json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def post_json(http: aiohttp.ClientSession, url: str, payload: Any) -> tuple[int, str]:
    async with http.post(url, json=payload) as response:
        return response.status, await response.text()


# The query form ----------------------------------------------------------------------------------------


async def test_query_form_event_is_stored_as_received(http: aiohttp.ClientSession, sandbox: Sandbox) -> None:
    params = {"application_id": str(APP), **row(1), "session_type": "foreground", "os_name": ""}
    answer = await post_query(http, sandbox, **params)
    assert answer.status == 200, answer
    del params["os_name"]
    assert sandbox.state.events == [params]
    assert sandbox.state.rows_accepted == 1


async def test_query_form_refuses_a_body(http: aiohttp.ClientSession, sandbox: Sandbox) -> None:
    query = {"post_api_key": KEY, "application_id": APP, **row()}
    answer = await post(http, sandbox.url + EVENTS.path, query, b"x")
    assert answer.status == 400
    assert "empty body" in answer.text


async def test_query_form_refuses_a_repeated_parameter(http: aiohttp.ClientSession, sandbox: Sandbox) -> None:
    url = f"{sandbox.url}{EVENTS.path}?post_api_key={KEY}&application_id={APP}&event_name=a&event_name=b"
    async with http.post(url) as response:
        assert response.status == 400
        assert await response.text() == "parameter 'event_name' is given more than once"


async def test_query_form_names_the_broken_rule(http: aiohttp.ClientSession, sandbox: Sandbox) -> None:
    answer = await post_query(http, sandbox, application_id=APP, **row(event_timestamp="1700000000000"))
    assert (answer.status, answer.text) == (
        400,
        "event_timestamp 1700000000000 looks like milliseconds; the Post API takes seconds",
    )
    answer = await post_query(http, sandbox, application_id=APP, colour="red", **row())
    assert (answer.status, answer.text) == (400, "unknown parameter 'colour'")
    assert sandbox.state.events == []


# The CSV form -----------------------------------------------------------------------------------------


async def test_csv_rows_are_stored_as_received(http: aiohttp.ClientSession, sandbox: Sandbox) -> None:
    rows = [
        row(1, event_json='{"text": "comma, \\"quotes\\" and\\nnewline", "ключ": [1, 2.5, null]}'),
        row(2, event_json="", profile_id="", appmetrica_device_id=str(2**70)),
        row(3, device_model='Pixel "8", pro\r\nline two', session_type="background"),
    ]
    answer = await post_csv(http, sandbox, csv_body(rows), application_id=APP)
    assert answer.status == 200, answer
    expected = [{name: value for name, value in r.items() if value} | {"application_id": str(APP)} for r in rows]
    assert sandbox.state.events == expected
    assert sandbox.state.rows_accepted == 3


async def test_csv_application_id_may_be_a_column(http: aiohttp.ClientSession, sandbox: Sandbox) -> None:
    answer = await post_csv(http, sandbox, csv_body([row(1, application_id=str(APP))]))
    assert answer.status == 200, answer
    assert sandbox.state.events[0]["application_id"] == str(APP)


async def test_csv_application_id_in_query_and_column_must_agree(http: aiohttp.ClientSession, sandbox: Sandbox) -> None:
    body = csv_body([row(1, application_id=str(APP)), row(2, application_id="3333")])
    answer = await post_csv(http, sandbox, body, application_id=APP)
    assert (answer.status, answer.text) == (
        400,
        "row 2: application_id '3333' disagrees with the query's application_id '1111'",
    )
    assert sandbox.state.events == []


async def test_csv_without_application_id_anywhere(http: aiohttp.ClientSession, sandbox: Sandbox) -> None:
    answer = await post_csv(http, sandbox, csv_body([row(1)]))
    assert (answer.status, answer.text) == (400, "row 1: application_id is missing")


@pytest.mark.parametrize(
    ("changes", "detail"),
    [
        ({"event_name": ""}, "event_name is missing"),
        ({"event_timestamp": ""}, "event_timestamp is missing"),
        ({"appmetrica_device_id": "42"}, "both profile_id and appmetrica_device_id are set"),
        ({"profile_id": ""}, "neither profile_id nor appmetrica_device_id is set"),
        ({"profile_id": "", "appmetrica_device_id": "-42"}, "appmetrica_device_id '-42' is not a non-negative"),
        ({"event_timestamp": "1700000000000"}, "event_timestamp 1700000000000 looks like milliseconds"),
        ({"event_timestamp": "12.5"}, "event_timestamp '12.5' is not a non-negative integer"),
        (
            {"event_timestamp": str(int(time.time()) - 15 * 86400)},
            "days) old; the Post API takes events at most 1209600 s",
        ),
        ({"event_json": "[1]"}, "event_json must be a JSON object, got list"),
        ({"event_json": "{oops"}, "event_json is not valid JSON"),
        ({"session_type": "idle"}, "session_type 'idle' is not one of background, foreground"),
        ({"mcc": "25O"}, "mcc '25O' is not a non-negative integer"),
        ({"mnc": "-1"}, "mnc '-1' is not a non-negative integer"),
        ({"application_id": "app"}, "application_id 'app' is not a positive integer"),
    ],
)
async def test_csv_rule_violation_names_row_and_column_and_refuses_the_batch(
    http: aiohttp.ClientSession, sandbox: Sandbox, changes: dict[str, str], detail: str
) -> None:
    rows = [row(1, application_id=str(APP)), row(2, application_id=str(APP)) | changes, row(3)]
    columns = [*dict.fromkeys(name for r in rows for name in r)]
    answer = await post_csv(http, sandbox, csv_body(rows, columns))
    assert answer.status == 400
    assert answer.text.startswith("row 2: "), answer.text
    assert detail in answer.text
    assert sandbox.state.events == []
    assert sandbox.state.rows_accepted == 0


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"", "the body is empty; events.csv takes a header line and one row per record"),
        (b"event_name,event_timestamp,profile_id\r\n", "the body has a header line but no rows"),
        (b"\r\nx,1,p\r\n", "the header line is empty"),
        (b"event_name,colour,profile_id\r\nx,red,p\r\n", "unknown column 'colour' in the header"),
        (b"event_name,post_api_key\r\nx,k\r\n", "unknown column 'post_api_key' in the header"),
        (b"event_name,profile_id,event_name\r\nx,p,y\r\n", "column 'event_name' appears more than once in the header"),
        (b"event_name,event_timestamp\r\nx,1\r\ny,2,3\r\n", "row 2 has 3 cells; the header names 2 columns"),
        (b"event_name,event_timestamp\r\nx,1\r\n\r\ny,2\r\n", "row 2 has 0 cells; the header names 2 columns"),
        (b'event_name,event_timestamp\r\n"x"y,1\r\n', "line 2: malformed CSV: "),
        (b"event_name,profile_id\r\n\xff,p\r\n", "the body is not UTF-8: invalid start byte at byte 23"),
    ],
)
async def test_csv_structure_errors(http: aiohttp.ClientSession, sandbox: Sandbox, body: bytes, detail: str) -> None:
    answer = await post_csv(http, sandbox, body, application_id=APP)
    assert answer.status == 400
    assert answer.text.startswith(detail), answer.text


async def test_csv_refuses_other_query_parameters(http: aiohttp.ClientSession, sandbox: Sandbox) -> None:
    answer = await post_csv(http, sandbox, csv_body([row()]), application_id=APP, event_name="x")
    assert (answer.status, answer.text) == (
        400,
        "query parameter 'event_name' is not taken with a CSV body; send it as a column",
    )


async def test_csv_row_limit(http: aiohttp.ClientSession, sandbox: Sandbox) -> None:
    ts = int(time.time())
    header = b"profile_id,event_name,event_timestamp\r\n"
    line = f"p,e,{ts}\r\n".encode()
    answer = await post_csv(http, sandbox, header + line * MAX_ROWS_PER_REQUEST, application_id=APP)
    assert answer.status == 200, answer
    assert sandbox.state.rows_accepted == MAX_ROWS_PER_REQUEST
    answer = await post_csv(http, sandbox, header + line * (MAX_ROWS_PER_REQUEST + 1), application_id=APP)
    assert (answer.status, answer.text) == (
        400,
        "more than 100000 rows; the Post API takes at most 100000 per request",
    )
    assert sandbox.state.rows_accepted == MAX_ROWS_PER_REQUEST


async def test_future_limit_when_configured(http: aiohttp.ClientSession) -> None:
    async with Sandbox(SandboxOptions(max_future_s=60)) as sandbox:
        ahead = row(event_timestamp=str(int(time.time()) + 3600))
        answer = await post_csv(http, sandbox, csv_body([ahead]), application_id=APP)
        assert answer.status == 400
        assert "s in the future; at most 60 s is allowed" in answer.text


async def test_ten_thousand_rows_are_accepted_quickly(http: aiohttp.ClientSession, sandbox: Sandbox) -> None:
    rows = [row(i, session_type="foreground", os_name="android", app_version_name="1.2.3") for i in range(10_000)]
    body = csv_body(rows)
    answer = await post_csv(http, sandbox, body, application_id=APP)
    assert answer.status == 200, answer
    assert len(sandbox.state.events) == 10_000
    record = sandbox.state.requests[-1]
    elapsed = record.answered - record.arrived
    # The aim is well under 100 ms; the bound leaves room for a loaded test machine.
    assert elapsed < 0.5, f"{elapsed * 1000:.0f} ms"


# Keys -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "detail"), [("", "post_api_key is missing"), ("wrong", "post_api_key is not valid")])
async def test_missing_or_wrong_key_is_403_in_both_forms(
    http: aiohttp.ClientSession, sandbox: Sandbox, key: str, detail: str
) -> None:
    for answer in (
        await post_query(http, sandbox, key=key, application_id=APP, **row()),
        await post_csv(http, sandbox, csv_body([row()]), key=key, application_id=APP),
    ):
        assert (answer.status, answer.text) == (403, detail)
    async with http.post(sandbox.url + EVENTS.csv_path, data=csv_body([row()])) as response:
        assert response.status == 403
    assert sandbox.state.events == []


async def test_key_of_another_application_is_403(http: aiohttp.ClientSession) -> None:
    keys = Keys(apps={APP: KEY, OTHER_APP: OTHER_KEY})
    async with Sandbox(SandboxOptions(keys=keys)) as sandbox:
        assert (await post_csv(http, sandbox, csv_body([row()]), application_id=APP)).status == 200
        assert (await post_csv(http, sandbox, csv_body([row()]), OTHER_KEY, application_id=OTHER_APP)).status == 200
        answer = await post_csv(http, sandbox, csv_body([row()]), OTHER_KEY, application_id=APP)
        assert (answer.status, answer.text) == (403, f"post_api_key is not valid for application {APP}")
        mixed = csv_body([row(1, application_id=str(APP)), row(2, application_id=str(OTHER_APP))])
        assert (await post_csv(http, sandbox, mixed)).status == 403
        unknown_app = await post_query(http, sandbox, application_id=4444, **row())
        assert (unknown_app.status, unknown_app.text) == (403, "post_api_key is not valid for application 4444")
        assert len(sandbox.state.events) == 2


async def test_single_key_is_bound_to_its_application(http: aiohttp.ClientSession, sandbox: Sandbox) -> None:
    answer = await post_query(http, sandbox, application_id=OTHER_APP, **row())
    assert (answer.status, answer.text) == (403, f"post_api_key is not valid for application {OTHER_APP}")


async def test_key_without_application_serves_every_application(http: aiohttp.ClientSession) -> None:
    async with Sandbox(SandboxOptions(keys=Keys(post_api_key=KEY))) as sandbox:
        assert (await post_query(http, sandbox, application_id=APP, **row())).status == 200
        assert (await post_query(http, sandbox, application_id=OTHER_APP, **row())).status == 200
        assert (await post_query(http, sandbox, "nope", application_id=APP, **row())).status == 403


async def test_without_configured_keys_any_non_empty_key_is_accepted(http: aiohttp.ClientSession) -> None:
    async with Sandbox() as sandbox:
        assert (await post_query(http, sandbox, "whatever", application_id=APP, **row())).status == 200
        assert (await post_query(http, sandbox, "", application_id=APP, **row())).status == 403


async def test_key_can_be_swapped_at_runtime(http: aiohttp.ClientSession, sandbox: Sandbox) -> None:
    assert (await post_query(http, sandbox, application_id=APP, **row())).status == 200
    sandbox.set_keys(post_api_key="rotated")
    assert (await post_query(http, sandbox, application_id=APP, **row())).status == 403
    assert (await post_query(http, sandbox, "rotated", application_id=APP, **row())).status == 200
    status, text = await post_json(http, sandbox.url + "/sandbox/control", {"post_api_key": KEY})
    assert status == 200
    assert "rotated" not in text
    assert KEY not in text
    assert json.loads(text)["keys"] == {"post_api_key_set": True, "application_id": APP, "apps": []}
    assert (await post_query(http, sandbox, application_id=APP, **row())).status == 200


async def test_key_never_reaches_answers_or_logs(http: aiohttp.ClientSession, sandbox: Sandbox) -> None:
    with structlog.testing.capture_logs() as logs:
        answers = [
            await post_query(http, sandbox, application_id=APP, **row()),
            await post_query(http, sandbox, application_id=OTHER_APP, **row()),
            await post_csv(http, sandbox, csv_body([row(event_name="")]), application_id=APP),
            await post_csv(http, sandbox, csv_body([row()]), key=KEY + "x", application_id=APP),
        ]
    assert [a.status for a in answers] == [200, 403, 400, 403]
    assert len(logs) == 4
    assert all(KEY not in repr(entry) for entry in logs), logs
    assert all(KEY not in a.text for a in answers)
    assert [entry["status"] for entry in logs] == [200, 403, 400, 403]


def test_keys_validation() -> None:
    with pytest.raises(ValidationError, match="application_id needs post_api_key"):
        Keys(application_id=APP)
    with pytest.raises(ValidationError):
        Keys(post_api_key="")
    with pytest.raises(ValidationError, match="non-empty key"):
        Keys(apps={APP: ""})


# Faults -----------------------------------------------------------------------------------------------


async def test_fault_429_carries_retry_after(http: aiohttp.ClientSession, sandbox: Sandbox) -> None:
    sandbox.set_faults(fault_429=1.0, retry_after=7)
    answer = await post_csv(http, sandbox, csv_body([row()]), application_id=APP)
    assert answer.status == 429
    assert answer.headers["Retry-After"] == "7"
    assert sandbox.state.events == []
    record = sandbox.state.requests[-1]
    assert (record.status, record.retry_after, record.rows) == (429, 7, 0)


async def test_fault_5xx(http: aiohttp.ClientSession, sandbox: Sandbox) -> None:
    sandbox.set_faults(fault_5xx=1.0)
    statuses = {(await post_query(http, sandbox, application_id=APP, **row())).status for _ in range(30)}
    assert statuses == {500, 502, 503}
    assert sandbox.state.events == []


async def test_fault_drop_closes_the_connection_unanswered(http: aiohttp.ClientSession, sandbox: Sandbox) -> None:
    sandbox.set_faults(fault_drop=1.0)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await post_csv(http, sandbox, csv_body([row()]), application_id=APP)
    assert sandbox.state.dropped == 1
    assert sandbox.state.requests[-1].status is None
    assert sandbox.state.events == []
    sandbox.set_faults(fault_drop=0.0)
    assert (await post_csv(http, sandbox, csv_body([row()]), application_id=APP)).status == 200


async def test_latency(http: aiohttp.ClientSession, sandbox: Sandbox) -> None:
    sandbox.set_faults(latency_ms=150)
    started = time.perf_counter()
    assert (await post_query(http, sandbox, application_id=APP, **row())).status == 200
    assert time.perf_counter() - started >= 0.15


async def test_rps_ceiling_answers_429_with_retry_after(http: aiohttp.ClientSession, sandbox: Sandbox) -> None:
    sandbox.set_faults(max_rps=3)
    answers = [await post_query(http, sandbox, application_id=APP, **row()) for _ in range(5)]
    assert [a.status for a in answers] == [200, 200, 200, 429, 429]
    assert answers[3].headers["Retry-After"] == "1"
    assert len(sandbox.state.events) == 3


def test_rps_ceiling_is_a_sliding_second() -> None:
    injector = FaultInjector(Faults(max_rps=2))
    assert [injector.decide(t) for t in (0.0, 0.5, 0.9)][:2] == [None, None]
    refused = injector.decide(0.95)
    assert refused is not None
    assert (refused.status, refused.retry_after) == (429, 1)
    assert injector.decide(1.0) is None  # the request at 0.0 has left the window
    assert injector.decide(1.2) is not None


def test_fault_fractions_are_honoured_and_seeded() -> None:
    faults = Faults(fault_429=0.2, fault_5xx=0.1, fault_drop=0.05)
    first = FaultInjector(faults, seed=7)
    decisions = [first.decide(0.0) for _ in range(10_000)]
    statuses = [d.status if d else 200 for d in decisions]
    assert 1700 < statuses.count(429) < 2300
    assert 800 < sum(1 for s in statuses if s is not None and s >= 500) < 1200
    assert 350 < statuses.count(None) < 650
    again = FaultInjector(faults, seed=7)
    assert [d.status if d else 200 for d in (again.decide(0.0) for _ in range(10_000))] == statuses


def test_fault_fractions_must_fit_in_one() -> None:
    with pytest.raises(ValidationError, match="must not exceed 1"):
        Faults(fault_429=0.6, fault_5xx=0.6)
    with pytest.raises(ValidationError):
        Faults(fault_drop=1.5)


async def test_faults_come_before_the_key_check(http: aiohttp.ClientSession, sandbox: Sandbox) -> None:
    sandbox.set_faults(fault_429=1.0)
    assert (await post_query(http, sandbox, "wrong", application_id=APP, **row())).status == 429


async def test_refused_event_names(http: aiohttp.ClientSession, sandbox: Sandbox) -> None:
    sandbox.set_faults(refuse_event_names={"poison"})
    answer = await post_csv(http, sandbox, csv_body([row(1), row(2, event_name="poison")]), application_id=APP)
    assert (answer.status, answer.text) == (400, "row 2: event_name 'poison' is refused by this sandbox")
    answer = await post_query(http, sandbox, application_id=APP, **row(event_name="poison"))
    assert (answer.status, answer.text) == (400, "event_name 'poison' is refused by this sandbox")
    assert (await post_csv(http, sandbox, csv_body([row(1)]), application_id=APP)).status == 200
    assert len(sandbox.state.events) == 1


async def test_a_seeded_sandbox_replays_its_faults(http: aiohttp.ClientSession) -> None:
    async def statuses(seed: int) -> list[int]:
        options = SandboxOptions(faults=Faults(fault_429=0.3, fault_5xx=0.3), seed=seed)
        async with Sandbox(options) as sandbox:
            return [(await post_query(http, sandbox, "k", application_id=APP, **row())).status for _ in range(20)]

    first = await statuses(3)
    assert first == await statuses(3)
    assert len(set(first)) > 1


# The JSON endpoints -----------------------------------------------------------------------------------


async def test_stats_and_peak_concurrency(http: aiohttp.ClientSession, sandbox: Sandbox) -> None:
    sandbox.set_faults(latency_ms=200)
    answers = await asyncio.gather(*(post_query(http, sandbox, application_id=APP, **row(i)) for i in range(5)))
    assert [a.status for a in answers] == [200] * 5
    sandbox.set_faults(latency_ms=0)
    await post_query(http, sandbox, "wrong", application_id=APP, **row())
    stats = await get_json(http, sandbox.url + "/sandbox/stats")
    assert stats == {
        "requests": 6,
        "by_status": {"200": 5, "403": 1},
        "dropped": 0,
        "rows_accepted": 5,
        "rows_by_method": {"events": 5, "revenue": 0, "adrevenue": 0, "ecommerce": 0, "profiles": 0},
        "events_kept": 5,
        "kept_by_method": {"events": 5, "revenue": 0, "adrevenue": 0, "ecommerce": 0, "profiles": 0},
        "in_flight": 0,
        "peak_concurrency": 5,
    }


async def test_events_endpoint_pages(http: aiohttp.ClientSession, sandbox: Sandbox) -> None:
    await post_csv(http, sandbox, csv_body([row(i) for i in range(5)]), application_id=APP)
    page = await get_json(http, sandbox.url + "/sandbox/events?offset=1&limit=2")
    assert page["total"] == 5
    assert page["offset"] == 1
    assert [json.loads(e["event_json"])["seq"] for e in page["events"]] == [1, 2]
    everything = await get_json(http, sandbox.url + "/sandbox/events")
    assert everything["events"] == sandbox.state.events
    for bad in ("offset=-1", "limit=x"):
        async with http.get(f"{sandbox.url}/sandbox/events?{bad}") as response:
            assert response.status == 400


async def test_request_log(http: aiohttp.ClientSession, sandbox: Sandbox) -> None:
    before = time.monotonic()
    await post_csv(http, sandbox, csv_body([row(1), row(2)]), application_id=APP)
    sandbox.set_faults(fault_429=1.0, retry_after=2)
    await post_csv(http, sandbox, csv_body([row(3)]), application_id=APP)
    log = sandbox.state.requests
    assert [(r.path, r.rows, r.status, r.retry_after) for r in log] == [
        (EVENTS.csv_path, 2, 200, None),
        (EVENTS.csv_path, 0, 429, 2),
    ]
    assert before <= log[0].arrived <= log[1].arrived <= time.monotonic()
    listed = await get_json(http, sandbox.url + "/sandbox/requests?offset=1")
    assert listed["total"] == 2
    assert [(r["status"], r["retry_after"]) for r in listed["requests"]] == [(429, 2)]


async def test_control_endpoint(http: aiohttp.ClientSession, sandbox: Sandbox) -> None:
    control = sandbox.url + "/sandbox/control"
    status, text = await post_json(http, control, {"fault_429": 1, "retry_after": 3, "refuse_event_names": ["x"]})
    assert status == 200, text
    assert json.loads(text)["faults"]["retry_after"] == 3
    assert sandbox.faults == Faults(fault_429=1.0, retry_after=3, refuse_event_names=frozenset({"x"}))
    assert (await post_json(http, control, {"fault_429": 2}))[0] == 400
    assert (await post_json(http, control, {"fault_429": 0.5, "fault_5xx": 0.6}))[0] == 400
    assert await post_json(http, control, {"colour": 1}) == (400, "unknown setting 'colour'")
    assert (await post_json(http, control, [1]))[0] == 400
    async with http.post(control, data=b"{not json") as response:
        assert response.status == 400
    assert sandbox.faults.retry_after == 3  # refused changes change nothing


async def test_reset_endpoint(http: aiohttp.ClientSession, sandbox: Sandbox) -> None:
    await post_csv(http, sandbox, csv_body([row(1)]), application_id=APP)
    status, _ = await post_json(http, sandbox.url + "/sandbox/reset", {})
    assert status == 200
    assert sandbox.state.events == []
    assert sandbox.state.requests == []
    assert (await get_json(http, sandbox.url + "/sandbox/stats"))["requests"] == 0
    assert (await post_csv(http, sandbox, csv_body([row(2)]), application_id=APP)).status == 200


async def test_counters_only_without_keeping_events(http: aiohttp.ClientSession) -> None:
    async with Sandbox(SandboxOptions(keep_events=False)) as sandbox:
        assert (await post_csv(http, sandbox, csv_body([row(1), row(2)]), "k", application_id=APP)).status == 200
        assert sandbox.state.events == []
        assert sandbox.state.rows_accepted == 2


async def test_restart_on_the_same_port_keeps_state(http: aiohttp.ClientSession, sandbox: Sandbox) -> None:
    """Tests simulate an outage by stopping the sandbox and starting it again where it was."""
    url = sandbox.url
    assert (await post_query(http, sandbox, application_id=APP, **row(1))).status == 200
    await sandbox.stop()
    with pytest.raises(aiohttp.ClientConnectionError):
        await post(http, url + EVENTS.path, {"post_api_key": KEY, "application_id": APP, **row(2)})
    assert await sandbox.start(port=int(url.rsplit(":", 1)[1])) == url
    assert (await post_query(http, sandbox, application_id=APP, **row(3))).status == 200
    assert [event["profile_id"] for event in sandbox.state.events] == ["user-1", "user-3"]


async def test_start_twice_and_url_before_start() -> None:
    sandbox = Sandbox()
    with pytest.raises(RuntimeError, match="not started"):
        _ = sandbox.url
    url = await sandbox.start()
    try:
        assert url.startswith("http://127.0.0.1:")
        with pytest.raises(RuntimeError, match="already started"):
            await sandbox.start()
    finally:
        await sandbox.stop()


# The CLI ----------------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="appmetrica-bridge")
    register(root.add_subparsers(dest="command", required=True))
    return root


def test_cli_flags_become_options() -> None:
    args = parser().parse_args(
        [
            *("sandbox", "--port", "0", "--post-api-key", "K", "--application-id", "1111"),
            *("--app", "2222=K2", "--app", "3333=K3", "--fault-429", "0.1", "--retry-after", "4"),
            *("--fault-5xx", "0.2", "--fault-drop", "0.05", "--latency-ms", "12.5", "--max-rps", "30"),
            *("--refuse-event-name", "a", "--refuse-event-name", "b", "--seed", "9", "--max-future-s", "600"),
            "--no-keep-events",
        ]
    )
    assert (args.port, args.host, args.post_api_key, args.application_id) == (0, "127.0.0.1", "K", 1111)
    assert args.app == [(2222, "K2"), (3333, "K3")]
    assert (args.fault_429, args.retry_after, args.fault_5xx, args.fault_drop) == (0.1, 4, 0.2, 0.05)
    assert (args.latency_ms, args.max_rps, args.seed, args.max_future_s) == (12.5, 30, 9, 600.0)
    assert args.refuse_event_name == ["a", "b"]
    assert args.keep_events is False
    assert callable(args.func)
    registry = parser().parse_args(["registry", "--port", "0"])
    assert (registry.port, callable(registry.func)) == (0, True)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--fault-429", "1.5"], "argument --fault-429: must be a fraction between 0 and 1, got 1.5"),
        (["--fault-5xx", "-0.1"], "argument --fault-5xx: must be a fraction between 0 and 1, got -0.1"),
        (["--fault-drop", "nan"], "argument --fault-drop: must be a finite number, got 'nan'"),
        (["--fault-429", "lots"], "argument --fault-429: must be a number, got 'lots'"),
        (["--retry-after", "-1"], "argument --retry-after: must not be negative, got -1"),
        (["--latency-ms", "-5"], "argument --latency-ms: must not be negative, got -5"),
        (["--max-rps", "0"], "argument --max-rps: must be a positive integer, got 0"),
        (["--port", "70000"], "argument --port: must be a port number 0-65535, got 70000"),
        (["--application-id", "x"], "argument --application-id: must be an integer, got 'x'"),
        (["--app", "1111"], "argument --app: must be ID=KEY with a non-empty KEY"),
        (["--app", "0=secret"], "argument --app: must be a positive integer, got 0"),
    ],
)
def test_cli_rejects_bad_flags(flags: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parser().parse_args(["sandbox", *flags])
    assert exited.value.code == 2
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert last_line == f"appmetrica-bridge sandbox: error: {message}"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--application-id", "1111"], "--application-id needs --post-api-key"),
        (["--fault-429", "0.7", "--fault-5xx", "0.7"], "--fault-429 + --fault-5xx + --fault-drop must not exceed 1"),
    ],
)
def test_cli_rejects_flags_that_disagree(flags: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = parser().parse_args(["sandbox", "--port", "0", *flags])
    assert args.func(args) == 2
    assert capsys.readouterr().err == f"appmetrica-bridge sandbox: error: {message}\n"


def test_cli_reports_a_busy_port(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        args = parser().parse_args(["sandbox", "--port", str(busy.getsockname()[1])])
        assert args.func(args) == 1
    assert "cannot listen on 127.0.0.1:" in capsys.readouterr().err


async def test_cli_serves_until_sigterm(http: aiohttp.ClientSession) -> None:
    async with bridge_command("sandbox", "--port", "0", "--post-api-key", KEY, "--application-id", str(APP)) as process:
        assert process.stdout is not None
        first = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        second = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        assert first.startswith("Post API sandbox listening on http://127.0.0.1:"), first
        url = first.split()[-1]
        assert second.strip() == f"stats: {url}/sandbox/stats"
        query = {"post_api_key": KEY, "application_id": APP, **row()}
        assert (await post(http, url + EVENTS.path, query)).status == 200
        assert (await get_json(http, url + "/sandbox/stats"))["rows_accepted"] == 1
        process.send_signal(signal.SIGTERM)
        rest, errors = await asyncio.wait_for(process.communicate(), 20)
        assert process.returncode == 0, errors
        assert b"postapi_request" in rest
        assert KEY.encode() not in rest + errors


def test_every_event_column_is_accepted_as_a_csv_header() -> None:
    """The sandbox reads the bridge's full header (every documented parameter) without complaint."""
    from multidict import MultiDict

    from bridge.sandbox.intake import read_csv_form

    values = {name: "" for name in EVENTS.names} | row() | {"application_id": str(APP)}
    events = read_csv_form(EVENTS, MultiDict(post_api_key=KEY), csv_body([values], list(EVENTS.names)))
    assert events == [{name: value for name, value in values.items() if value}]


# Every method ---------------------------------------------------------------------------------------------------


def method_row(method: Method, seq: int) -> dict[str, str]:
    """A valid row of ``method`` (application_id left to the query), labelled by ``seq``."""
    stamp = {"event_timestamp": str(int(time.time()) - 60)}
    rows: dict[str, dict[str, str]] = {
        "events": row(seq),
        "revenue": {"profile_id": "u", "revenue_event_type": "refund", "price": "-4.99", "currency": "usd"} | stamp,
        "adrevenue": {"profile_id": "u", "revenue": "0.00012345", "currency": "EUR", "ad_type": "banner"} | stamp,
        "ecommerce": {
            "appmetrica_device_id": "18446744073709551617",
            "ecom_event_type": "PURCHASE",
            "order_id": "o-1",
            "product_name": "p",
            "cart_item_quantity": "2",
            "original_price_currency": "rub",
            "original_price_value": "1.05",
            "product_promo_codes": "[promo_code_1,promo_code_2]",
        }
        | stamp,
        "profiles": {"attributes": json.dumps({"level": seq, "vip": True, "name": "x"})},
    }
    return rows[method.name] | {method.label: f"label-{seq}"}


@pytest.mark.parametrize("method", METHODS.values(), ids=lambda m: m.name)
async def test_every_method_takes_both_forms_and_counts_its_rows(
    http: aiohttp.ClientSession, sandbox: Sandbox, method: Method
) -> None:
    url = sandbox.url + method.path
    rows = [method_row(method, seq) for seq in range(3)]
    assert (await post(http, url + ".csv", {"post_api_key": KEY, "application_id": APP}, csv_body(rows))).status == 200
    answer = await post(http, url, {"post_api_key": KEY, "application_id": APP, **method_row(method, 3)})
    assert answer.status == 200, answer.text
    stats = await get_json(http, sandbox.url + "/sandbox/stats")
    assert stats["rows_by_method"] == {name: 4 if name == method.name else 0 for name in METHODS}
    page = await get_json(http, f"{sandbox.url}/sandbox/rows/{method.name}?offset=1&limit=2")
    assert page["total"] == 4
    assert [r[method.label] for r in page["rows"]] == ["label-1", "label-2"]
    assert all(r["application_id"] == str(APP) for r in page["rows"])


@pytest.mark.parametrize("method", METHODS.values(), ids=lambda m: m.name)
async def test_every_method_refuses_with_the_broken_rule_and_honours_keys_refusals_and_faults(
    http: aiohttp.ClientSession, sandbox: Sandbox, method: Method
) -> None:
    url = sandbox.url + method.csv_path
    query = {"post_api_key": KEY, "application_id": APP}
    required = next(c.name for c in method.columns if c.required and not c.filled and c.name != "profile_id")
    missing = method_row(method, 1) | {required: ""}
    answer = await post(http, url, query, csv_body([method_row(method, 0), missing]))
    assert (answer.status, answer.text) == (400, f"row 2: {required} is missing")
    assert (await post(http, url, {**query, "post_api_key": "wrong"}, csv_body([method_row(method, 0)]))).status == 403
    wrong_app = await post(http, url, {**query, "application_id": OTHER_APP}, csv_body([method_row(method, 0)]))
    assert wrong_app.status == 403
    sandbox.set_faults(refuse_event_names={"label-1"})
    refused = await post(http, url, query, csv_body([method_row(method, 0), method_row(method, 1)]))
    assert (refused.status, refused.text) == (400, f"row 2: {method.label} 'label-1' is refused by this sandbox")
    sandbox.set_faults(refuse_event_names=set(), fault_5xx=1.0)
    assert (await post(http, url, query, csv_body([method_row(method, 0)]))).status >= 500
    sandbox.set_faults(fault_5xx=0.0)
    assert (await post(http, url, query, csv_body([method_row(method, 0)]))).status == 200
    assert sandbox.state.accepted_by_method[method.name] == 1


async def test_an_unknown_method_has_no_rows_page(http: aiohttp.ClientSession, sandbox: Sandbox) -> None:
    async with http.get(sandbox.url + "/sandbox/rows/purchases") as response:
        assert response.status == 404
        assert "the methods are events, revenue, adrevenue, ecommerce, profiles" in await response.text()
