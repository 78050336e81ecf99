"""Log lines: JSON a log tool can parse, with every known secret redacted wherever it appears."""

from __future__ import annotations

import json

import pytest
import structlog

from bridge import logs


def test_secrets_are_redacted_inside_strings_lists_and_mappings(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("info")
    logs.REDACTOR.add(["s3cr3t-key-value"])
    structlog.get_logger("t").info(
        "upload",
        url="https://api/logs?post_api_key=s3cr3t-key-value&application_id=1",
        topics=["a", "s3cr3t-key-value"],
        by_reason={"expired": 1, "nested": {"k": "s3cr3t-key-value"}},
        rows=10,
        error=ValueError("bad key s3cr3t-key-value"),
    )
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "s3cr3t-key-value" not in json.dumps(line)
    assert line["topics"] == ["a", logs.REDACTED], "lists stay JSON lists"
    assert line["by_reason"] == {"expired": 1, "nested": {"k": logs.REDACTED}}
    assert line["rows"] == 10
    assert line["url"].endswith(f"post_api_key={logs.REDACTED}&application_id=1")
