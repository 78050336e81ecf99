"""Log lines: JSON a log tool can parse, with every known secret redacted wherever it appears."""

from __future__ import annotations

import json

from structlog.processors import JSONRenderer

from bridge.ops.logs import REDACTED, Redactor


def test_secrets_are_redacted_inside_strings_lists_and_mappings() -> None:
    redactor = Redactor(["s3cr3t-key-value"])
    event = redactor(
        None,
        "info",
        {
            "event": "upload",
            "url": "https://api/logs?post_api_key=s3cr3t-key-value&application_id=1",
            "topics": ["a", "s3cr3t-key-value"],
            "by_reason": {"expired": 1, "nested": {"k": "s3cr3t-key-value"}},
            "rows": 10,
            "error": ValueError("bad key s3cr3t-key-value"),
        },
    )
    line = json.loads(JSONRenderer()(None, "info", event))
    assert "s3cr3t-key-value" not in json.dumps(line)
    assert line["topics"] == ["a", REDACTED], "lists stay JSON lists"
    assert line["by_reason"] == {"expired": 1, "nested": {"k": REDACTED}}
    assert line["rows"] == 10
    assert line["url"].endswith(f"post_api_key={REDACTED}&application_id=1")
    assert line["error"] == f"bad key {REDACTED}"
