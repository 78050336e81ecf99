"""Helpers shared by more than one test module."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

KEY = "config-checks-post-api-key"


ENV = {"BRIDGE_POST_API_KEY": KEY}


JSON_ONLY = """
kafka:
  bootstrap_servers: "127.0.0.1:9092"
  dead_letter_topic: game.events.dlq
post_api:
  application_id: 3713842
routes:
  - topics: [game.events]
    method: events
    format: json
    mapping:
      profile_id: user
      event_name: type
      event_timestamp: {path: ts, unit: s}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bridge.yaml"
    path.write_text(text)
    return path


def cli(*args: str, env: dict[str, str | None] | None = None) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it; `env` adds variables to the test key, or unsets one with None."""
    variables = {"PATH": "/usr/bin", **ENV, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        capture_output=True,
        text=True,
        env={name: value for name, value in variables.items() if value is not None},
        timeout=60,
    )


def check_config(
    tmp_path: Path, text: str, env: dict[str, str | None] | None = None
) -> subprocess.CompletedProcess[str]:
    return cli("check-config", "--config", str(write(tmp_path, text)), env=env)


def problems(result: subprocess.CompletedProcess[str]) -> list[str]:
    prefix = "appmetrica-bridge: configuration error: "
    lines = result.stderr.splitlines()
    assert all(line.startswith(prefix) for line in lines), result.stderr
    return [line.removeprefix(prefix) for line in lines]
