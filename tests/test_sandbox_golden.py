"""The sandbox answers the Post API pages' own sample requests (tests/golden) exactly as the pages say.

The expected answers come from the pages (tests/golden/cases.yaml), never from ``bridge.postapi.methods``: a misread of
the
documentation in the bridge's declaration or in the sandbox's own reading makes a case fail.
"""

from __future__ import annotations

import csv
import io
import time
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from multidict import MultiDict

from bridge.postapi.methods import METHODS, Window
from bridge.sandbox import Sandbox, SandboxOptions
from devtools.testkit.golden import BRIDGE_STRICTER

GOLDEN = Path(__file__).parent / "golden"
CASES: list[dict[str, Any]] = yaml.safe_load((GOLDEN / "cases.yaml").read_text())
SHIFTED_TO = int(time.time()) - 3600


@dataclass(frozen=True)
class Sample:
    """A sample request: where it posts, its query parameters in order, and its body."""

    path: str
    query: list[tuple[str, str]]
    body: str

    @property
    def method(self) -> str:
        return self.path.rsplit("/", 1)[1].removesuffix(".csv")

    def rows(self) -> list[dict[str, str]]:
        """The rows the request carries, empty cells left out, as the sandbox keeps them."""
        if not self.body:
            return [{name: value for name, value in self.query if value and name != "post_api_key"}]
        header, *rows = csv.reader(io.StringIO(self.body))
        return [{name: cell for name, cell in zip(header, row, strict=True) if cell} for row in rows if row]


def parse(text: str) -> Sample:
    """A request as the pages print it: request line, headers, a blank line, the body."""
    head, _, body = text.partition("\n\n")
    method, target, _version = head.splitlines()[0].split(" ")
    assert method == "POST"
    path, _, query = target.partition("?")
    return Sample(path, urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=True), body)


def _csv(rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def changed(sample: Sample, shift: bool, drop: list[str], values: dict[str, str] | None = None) -> Sample:
    """The sample with its timestamps (if any) moved to an hour ago, keeping their spacing, ``drop`` removed and
    ``values`` set in every row (added where the sample lacks them)."""
    values = values or {}
    if not sample.body:
        query = [
            (name, values.get(name, str(SHIFTED_TO) if shift and name == "event_timestamp" else value))
            for name, value in sample.query
            if name not in drop
        ]
        query += [(name, value) for name, value in values.items() if name not in dict(sample.query)]
        return replace(sample, query=query)
    if not (shift or drop or values):
        return sample
    table = list(csv.reader(io.StringIO(sample.body)))
    assert _csv(table) == sample.body, "the sample must survive a CSV round trip for its edits to be the only change"
    header = table[0]
    if shift and "event_timestamp" in header:
        at = header.index("event_timestamp")
        first = min(int(row[at]) for row in table[1:])
        for row in table[1:]:
            row[at] = str(int(row[at]) - first + SHIFTED_TO)
    for name, value in values.items():
        if name not in header:
            header.append(name)
            for row in table[1:]:
                row.append("")
        for row in table[1:]:
            row[header.index(name)] = value
    kept = [index for index, name in enumerate(header) if name not in drop]
    return replace(sample, body=_csv([[row[index] for index in kept] for row in table]))


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(SandboxOptions()) as running:
        yield running


def _name(case: dict[str, Any]) -> str:
    extras = [key for key in ("shift", "bom", "blank_lines") if case.get(key)]
    extras += [f"without-{name}" for name in case.get("drop", [])]
    extras += [f"{name}={value}" for name, value in case.get("set", {}).items()]
    return "-".join([case["request"].removesuffix(".http"), *extras, str(case["status"])])


@pytest.mark.parametrize("case", CASES, ids=[_name(case) for case in CASES])
async def test_the_sandbox_answers_each_sample_as_the_pages_say(sandbox: Sandbox, case: dict[str, Any]) -> None:
    sample = changed(
        parse((GOLDEN / case["request"]).read_text()), case.get("shift", False), case.get("drop", []), case.get("set")
    )
    body = sample.body.encode()
    if case.get("bom"):
        body = "\ufeff".encode() + body
    body += b"\n" * case.get("blank_lines", 0)
    async with (
        aiohttp.ClientSession() as http,
        http.post(sandbox.url + sample.path, params=MultiDict(sample.query), data=body) as response,
    ):
        text = await response.text()
        assert (response.status, case["because"]) == (case["status"], case["because"]), text
        assert case.get("says", "") in text
        async with http.get(f"{sandbox.url}/sandbox/rows/{sample.method}") as listed:
            kept = (await listed.json())["rows"]
    # Accepted means kept exactly as sent, every cell; refused means nothing kept.
    assert kept == (sample.rows() if case["status"] == 200 else [])


# Where the bridge's declaration is deliberately stricter than the pages (README, "Where the docs disagree"): a
# sample row the bridge would dead-letter instead of sending, with the parameter its rule names.


def _accepted_samples() -> list[tuple[str, dict[str, str]]]:
    rows = []
    for case in CASES:
        if case["status"] == 200 and not case.get("bom"):
            sample = changed(parse((GOLDEN / case["request"]).read_text()), True, case.get("drop", []), case.get("set"))
            rows += [(f"{_name(case)}[{number}]", row) for number, row in enumerate(sample.rows(), 1)]
    return rows


@pytest.mark.parametrize(("name", "row"), _accepted_samples(), ids=[name for name, _ in _accepted_samples()])
def test_the_bridge_takes_every_accepted_sample_row_but_the_known_stricter_ones(name: str, row: dict[str, str]) -> None:
    method = METHODS[name.split(".")[0]]  # type: ignore[index]
    violation = method.verdict(row, Window(time.time()))
    if violation is None:
        return
    stricter = [parameter for (of, parameter) in BRIDGE_STRICTER if of == method.name and parameter in row]
    assert stricter, f"the bridge refuses a row the pages accept: {violation.detail}"
    assert any(parameter in violation.detail for parameter in stricter), violation.detail
