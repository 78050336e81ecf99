"""Every declared rule of every method, enforced by both the bridge (before upload) and the sandbox (on receipt).

The cases are generated from the declaration itself: a valid record per method, then one record per rule that
breaks only that rule. A kind added to the declaration without samples here fails `test_every_kind_has_samples`,
so no rule can be declared and go untested.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import MultiDict

from bridge.config.model import BridgeConfig, PostApiKeys, Settings
from bridge.deadletters.records import DeadLetter
from bridge.deadletters.show import Judge
from bridge.decoding.avro import contract_schema, parse
from bridge.postapi import csv_body as csvbody
from bridge.postapi.methods import (
    EXCLUDED_CURRENCIES,
    METHODS,
    Amount,
    ArrayOf,
    Attributes,
    Choice,
    Currency,
    DeviceId,
    Integer,
    JsonObject,
    Kind,
    Method,
    Text,
    Timestamp,
    Window,
    amount_bytes,
    amount_text,
)
from bridge.postapi.rows import RowMaker
from bridge.postapi.rules import Violation
from bridge.sandbox.intake import BadRequestError, read_csv_batch, read_query_batch
from devtools import method_tables
from devtools.testkit.golden import BRIDGE_STRICTER
from devtools.testkit.records import raw_avro

ROOT = Path(__file__).resolve().parents[1]
NOW = 1_800_000_000.0
NOW_MS = int(NOW * 1000)
WINDOW = Window(NOW, 3600.0)
APP = 1111


class Samples(NamedTuple):
    """Decoded (contract) values of a kind: one valid, and each bad one with words its reason must hold."""

    valid: Any
    bad: list[tuple[Any, str]]


def samples(kind: Kind) -> Samples:
    """Decoded values for `kind`, as its Avro contract hands them to the row maker."""
    match kind:
        case Timestamp():
            return Samples(
                NOW_MS - 60_000,
                [
                    (NOW_MS - 15 * 86_400_000, "days) old"),
                    (NOW_MS + 7_200_000, "in the future"),
                    (-5000, "is not a non-negative integer"),
                ],
            )
        case Integer(minimum=1):
            return Samples(APP, [(0, "is not a positive integer")])
        case Integer():
            return Samples(3, [(-1, "is not a non-negative integer")])
        case DeviceId():
            return Samples("18446744073709551617", [("12a", "is not a non-negative decimal integer")])
        case Amount(signed=True):
            return Samples(amount_bytes("-4.99"), [(amount_bytes("12345678901"), "is not a decimal(10.8)")])
        case Amount():
            return Samples(
                amount_bytes("0.00000001"),
                [(amount_bytes("-1"), "is not a non-negative decimal(10.8)"), (amount_bytes("1e10"), "decimal(10.8)")],
            )
        case Currency():
            bad = sorted(EXCLUDED_CURRENCIES)[0]
            return Samples("usd", [("ZZZ", "ISO 4217"), (bad, "ISO 4217"), ("US", "ISO 4217")])
        case Choice():
            return Samples(sorted(kind.values)[0], [("not-a-choice", "is not one of")])
        case JsonObject():
            return Samples('{"a": {"b": [1, 2]}}', [("[1]", "must be a JSON object"), ("{bad", "is not valid JSON")])
        case Attributes():
            return Samples(
                '{"name": "x", "level": 3, "paid": true, "counter": -1}',
                [
                    ('{"nested": {"a": 1}}', "'nested' is dict"),
                    ('{"none": null}', "'none' is null"),
                    ('["a"]', "must be a JSON object"),
                ],
            )
        case ArrayOf(item=Amount() as item):
            valid_item = samples(item).valid
            return Samples([valid_item, valid_item], [([amount_bytes("-1")], "decimal(10.8)")])
        case ArrayOf():
            return Samples(["code_1", "code-2"], [(["a,b"], "no array cell can"), ([""], "no array cell can")])
        case Text():
            return Samples('some text, "quoted"\nand a new line', [])
    raise AssertionError(f"no samples for {type(kind).__name__}: add them, or its rule goes untested")


def valid_record(method: Method) -> dict[str, Any]:
    """Every parameter filled with a valid value, but one identity: what the contract decodes to."""
    record = {column.name: samples(column.kind).valid for column in method.columns}
    if method.identity == "one":
        record["appmetrica_device_id"] = None
    return record


class Case(NamedTuple):
    method: Method
    column: str
    """The parameter whose rule is broken; the reason names it."""
    record: dict[str, Any]
    words: str
    """What else the reason must say."""
    encodable: bool = True
    """False where the decoded value cannot become a cell: only the bridge sees it."""


def rule_cases() -> Iterator[Case]:
    """One record per declared rule of each method, breaking that rule alone."""
    for method in METHODS.values():
        base = valid_record(method)
        for column in method.columns:
            name = column.name
            if column.required and not column.filled:
                yield Case(method, name, {**base, name: None}, "is missing")
            # The device id is the other identity: breaking it goes with no profile_id, or two identities would be.
            other = {"profile_id": None} if name == "appmetrica_device_id" else {}
            for value, words in samples(column.kind).bad:
                bad = {**base, **other, name: value}
                yield Case(method, name, bad, words, column.kind.unencodable(value) is None)
        if method.identity == "one":
            yield Case(method, "profile_id", {**base, "appmetrica_device_id": "123"}, "both profile_id and")
            yield Case(method, "profile_id", {**base, "profile_id": None}, "neither profile_id nor")


CASES = list(rule_cases())


def case_id(case: Case) -> str:
    return f"{case.method.name}:{case.column}:{case.words[:30]}"


def cells(method: Method, record: dict[str, Any]) -> dict[str, str]:
    """The row's cells as the bridge writes them, through each kind's one conversion; empty ones left out."""
    out = {}
    for column in method.columns:
        (cell,) = column.kind.cells([record[column.name]])
        if cell:
            out[column.name] = cell
    return out


def csv_of(rows: list[dict[str, str]], names: tuple[str, ...]) -> bytes:
    header = [name for name in names if any(name in row for row in rows)]
    out = io.StringIO()
    writer = csv.DictWriter(out, header, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def sandbox_refusal(method: Method, rows: list[dict[str, str]]) -> str | None:
    """The sandbox's 400 text for these rows as one CSV request, None if it takes them."""
    try:
        batch = read_csv_batch(method, MultiDict(post_api_key="k"), csv_of(rows, method.names))
        batch.check(WINDOW, ())
    except BadRequestError as exc:
        return str(exc)
    return None


def maker(method: Method) -> RowMaker:
    return RowMaker(method, None, lambda _: True, WINDOW.max_future_s or 0)


def test_every_kind_has_samples() -> None:
    for method in METHODS.values():
        for column in method.columns:
            samples(column.kind)


@pytest.mark.parametrize("method", METHODS.values(), ids=lambda m: m.name)
def test_a_valid_record_of_every_method_passes_the_bridge_and_the_sandbox(method: Method) -> None:
    record = valid_record(method)
    table = maker(method).table([record, record], NOW)
    assert table.violations == {}
    assert table.applications == [APP, APP]
    row = cells(method, record)
    assert {n: c[0] for n, c in zip(method.names, table.columns, strict=True) if c[0]} == row
    assert sandbox_refusal(method, [row, row]) is None
    query = MultiDict({"post_api_key": "k", **row})
    read_query_batch(method, query, b"").check(WINDOW, ())


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_each_declared_rule_is_enforced_by_the_bridge_and_the_sandbox(case: Case) -> None:
    method, record = case.method, case.record
    good = valid_record(method)
    table = maker(method).table([good, record, good], NOW)
    assert list(table.violations) == [1], case.words
    violation = table.violations[1]
    assert violation.detail.startswith(case.column) or case.column == "profile_id", violation.detail
    assert case.words in violation.detail
    assert table.applications == [APP, None, APP]
    if not case.encodable:
        return
    row = cells(method, record)
    assert method.verdict(row, WINDOW) == violation
    # The sandbox judges by its own reading of the docs (bridge.sandbox.documented), in its own words: it refuses the
    # same row, except where the bridge is stricter than the pages on purpose.
    refusal = sandbox_refusal(method, [cells(method, good), row])
    if (method.name, case.column) in BRIDGE_STRICTER:
        return
    assert refusal is not None and refusal.startswith("row 2: "), refusal


def test_every_rule_kind_is_broken_by_some_case() -> None:
    """No declared rule is left without a case that breaks it, in every method that declares it."""
    for method in METHODS.values():
        broken = {case.column for case in CASES if case.method is method}
        judged = {c.name for c in method.columns if not isinstance(c.kind, Text) or (c.required and not c.filled)}
        assert judged <= broken, sorted(judged - broken)


@pytest.mark.parametrize("method", METHODS.values(), ids=lambda m: m.name)
def test_unknown_parameters_and_a_foreign_method_s_columns_are_refused(method: Method) -> None:
    row = cells(method, valid_record(method))
    verdict = method.verdict({**row, "no_such_parameter": "1"}, WINDOW)
    assert verdict is not None and "unknown parameter 'no_such_parameter'" in verdict.detail
    foreign = next(name for other in METHODS.values() for name in other.names if name not in method.names)
    with pytest.raises(BadRequestError, match=f"unknown column '{foreign}'"):
        read_csv_batch(method, MultiDict(post_api_key="k"), csv_of([{**row, foreign: "x"}], (*method.names, foreign)))


@pytest.mark.parametrize("method", METHODS.values(), ids=lambda m: m.name)
def test_every_contract_file_is_the_declaration(method: Method) -> None:
    for folder in (ROOT / "schemas", ROOT / "bridge" / "schemas"):
        assert json.loads((folder / method.contract_file).read_text()) == method.schema()
    schema = method.schema()
    assert schema["name"] == method.record and schema["namespace"] == "appmetrica.postapi"
    assert tuple(f["name"] for f in schema["fields"]) == method.names


def test_the_contracts_type_as_the_issue_says() -> None:
    def field(method: str, name: str) -> Any:
        return next(f["type"] for f in METHODS[method].schema()["fields"] if f["name"] == name)  # type: ignore[index]

    decimal = {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 8}
    assert field("revenue", "price") == decimal
    assert field("adrevenue", "revenue") == decimal
    assert field("ecommerce", "original_price_value") == decimal
    assert field("ecommerce", "cart_item_price_value") == ["null", decimal]
    assert field("revenue", "quantity") == ["null", "long"]
    assert field("revenue", "event_timestamp") == {"type": "long", "logicalType": "timestamp-millis"}
    assert field("profiles", "attributes") == "string"
    assert "event_timestamp" not in METHODS["profiles"].names
    assert "appmetrica_device_id" not in METHODS["profiles"].names


@given(st.decimals(min_value=Decimal("-9999999999.99999999"), max_value=Decimal("9999999999.99999999"), places=8))
def test_amounts_are_plain_text_exact_to_the_eighth_decimal(value: Decimal) -> None:
    text = amount_text(amount_bytes(str(value)))
    assert "e" not in text.lower()
    assert Decimal(text) == value
    assert Amount(signed=True).problem("price", text, WINDOW) is None


@given(st.integers(min_value=-(10**18) + 1, max_value=10**18 - 1))
def test_any_unscaled_value_in_precision_is_a_valid_signed_amount(unscaled: int) -> None:
    raw = unscaled.to_bytes(9, "big", signed=True)
    text = amount_text(raw)
    assert Amount(signed=True).problem("price", text, WINDOW) is None
    assert Decimal(text) == Decimal(unscaled).scaleb(-8)


def test_array_cells_are_written_as_the_docs_sample_writes_them() -> None:
    method = METHODS["ecommerce"]
    record = {**valid_record(method), "product_promo_codes": ["promo_code_1", "promo_code_2"]}
    table = maker(method).table([record], NOW)
    used, lines = csvbody.lines(table.columns)
    body = (csvbody.header(method.names, used) + b"".join(lines)).decode()
    parsed = next(csv.DictReader(io.StringIO(body, newline="")))
    assert parsed["product_promo_codes"] == "[promo_code_1,promo_code_2]"
    assert parsed["cart_item_price_internal_value"] == "[0.00000001,0.00000001]"


def _kinds() -> list[tuple[str, Kind]]:
    """Every distinct kind the declaration uses, by a column that has it."""
    seen: dict[str, tuple[str, Kind]] = {}
    for method in METHODS.values():
        for column in method.columns:
            kind = column.kind
            same = f"{type(kind).__name__}{sorted((k, str(v)) for k, v in vars(kind).items() if k != 'item')}"
            seen.setdefault(same, (f"{method.name}.{column.name}", kind))
    return list(seen.values())


_digits = st.lists(st.integers(min_value=0, max_value=10**25).map(str), min_size=9, max_size=30)
"""Columns of numbers, many distinct, some past a signed 64-bit integer: where column tests take shortcuts."""
_cells = _digits | st.lists(
    st.one_of(
        st.text(max_size=12),
        st.sampled_from(["", "0", "1", "-1", "007", "1.5", "-0.5", "12345678901", "1e5", "usd", "VES", "[a,b]", "[]"]),
        st.integers(min_value=-(10**20), max_value=10**20).map(str),
        st.integers(min_value=0, max_value=3 * 10**9).map(str),
    ),
    max_size=20,
)


@pytest.mark.parametrize(("where", "kind"), _kinds(), ids=[where for where, _ in _kinds()])
@given(cells=_cells)
def test_a_column_test_never_clears_a_cell_its_rule_refuses(where: str, kind: Kind, cells: list[str]) -> None:
    """The fast column tests (bridge and sandbox alike) are sound: clearing means every cell passes the rule."""
    if kind.clear(cells, WINDOW):
        assert [kind.problem(where, cell, WINDOW) for cell in cells if cell] == [None] * sum(map(bool, cells))


def test_the_readme_shows_each_method_s_table_as_declared() -> None:
    readme = (ROOT / "README.md").read_text()
    for method in METHODS.values():
        if method.name != "events":
            assert method_tables.table(method) in readme, (
                f"README's {method.name} table; python -m devtools.method_tables"
            )
    events = {line.split("`")[1] for line in readme.splitlines() if line.startswith("| `") and "` | `null`" in line}
    assert set(METHODS["events"].names) <= events | {"event_name", "event_timestamp"}


def _records(method: Method) -> st.SearchStrategy[list[dict[str, Any]]]:
    """Records of `method` valid but for at most two fields, each absent or one of its kind's bad values.

    Few broken fields a record, so that a column test clearing what it should not is not hidden behind another
    broken field that sends the record to the verdict anyway.
    """
    base = valid_record(method)
    changes = {
        column.name: st.sampled_from([None, *(value for value, _ in samples(column.kind).bad)])
        for column in method.columns
    }
    record = st.lists(st.sampled_from(method.names), max_size=2).flatmap(
        lambda names: st.fixed_dictionaries({name: changes[name] for name in names})
    )
    return st.lists(record.map(lambda changed: {**base, **changed}), min_size=1, max_size=12)


@pytest.mark.parametrize("method", METHODS.values(), ids=lambda m: m.name)
@given(data=st.data())
def test_the_row_maker_judges_every_record_as_its_verdict_does(method: Method, data: st.DataObject) -> None:
    """Column tests and verdict agree on every record of every method: cleared ones obey every rule."""
    records = data.draw(_records(method))
    table = maker(method).table(records, NOW)
    for position, record in enumerate(records):
        lossy = [c.kind.unencodable(record[c.name]) for c in method.columns if c.kind.lossy]
        if any(lossy):
            assert position in table.violations
            continue
        row = {n: c[position] for n, c in zip(method.names, table.columns, strict=True)}
        expected = (
            Violation("invalid", "application_id is missing and post_api.application_id is not set")
            if record["application_id"] is None
            else method.verdict(row, WINDOW)
        )
        assert table.violations.get(position) == expected, (position, record)
        assert (table.applications[position] is None) == (expected is not None)


def test_dead_letters_show_reads_each_letter_into_its_source_topic_s_method() -> None:
    config = BridgeConfig.model_validate(
        {
            "kafka": {"bootstrap_servers": "127.0.0.1:1", "topics": ["app.events"]},
            "routes": [{"topics": ["shop.purchases"], "method": "revenue"}],
            "avro": {"format": "raw", "schema_file": str(ROOT / "schemas" / "appmetrica_event.avsc")},
            "post_api": {"application_id": APP},
        }
    )
    revenue = {**valid_record(METHODS["revenue"]), "event_timestamp": int(time.time() * 1000)}
    value = raw_avro(revenue, parse(contract_schema("revenue")))
    letters = [
        DeadLetter("dlq", 0, offset, 0, None, value, [], "invalid", "", topic, 0, offset)
        for offset, topic in enumerate(["shop.purchases", "app.events"])
    ]
    (shown, foreign) = Judge(Settings(config, PostApiKeys(None, {}))).judge_all(letters)
    assert (
        shown.row is not None
        and shown.row["price"] == "-4.99"
        and shown.row["revenue_event_type"] == revenue["revenue_event_type"]
    )
    assert foreign.row is None and foreign.problem.startswith("not decoded")
