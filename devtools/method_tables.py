"""The README's table of each method's contract, printed from the declaration: `python -m devtools.method_tables`.

tests/test_methods.py checks that the README holds these tables as printed, so the docs follow the rules.
"""

from __future__ import annotations

import json
from typing import Any

from bridge.postapi.methods import METHODS, Method, Text


def _avro(kind: Any) -> str:
    if isinstance(kind, list):
        return " \\| ".join(_avro(k) for k in kind)
    if isinstance(kind, dict):
        logical = kind.get("logicalType")
        if kind["type"] == "array":
            return f"array of {_avro(kind['items'])}"
        if logical == "decimal":
            return f"`bytes`, `decimal({kind['precision']}, {kind['scale']})`"
        if logical is not None:
            return f"`{kind['type']}`, `{logical}`"
        return f"`{json.dumps(kind)}`"
    return f"`{kind}`"


def table(method: Method) -> str:
    """One method's contract as a Markdown table: field, Avro type, whether required, the rule checked."""
    lines = [
        f"`{method.name}` — [`schemas/{method.contract_file}`](schemas/{method.contract_file}) "
        f"(`appmetrica.postapi.{method.record}`), posted to `{method.csv_path}`:",
        "",
        "| field | Avro type | required | checked before upload |",
        "|---|---|---|---|",
    ]
    types = {field["name"]: field["type"] for field in method.schema()["fields"]}
    plain: list[str] = []
    """A run of optional text fields, shown as one row."""

    def flush() -> None:
        if len(plain) >= 3:
            names = ", ".join(f"`{name}`" for name in plain)
            lines.append(f"| {names} | `null` \\| `string` each |  | as is |")
        else:
            lines.extend(f"| `{name}` | `null` \\| `string` |  | as is |" for name in plain)
        plain.clear()

    for column in method.columns:
        if isinstance(column.kind, Text) and not column.required and column.name != "profile_id":
            plain.append(column.name)
            continue
        flush()
        if column.filled:
            required = "yes; null → `post_api.application_id`"
        elif column.required:
            required = "yes"
        elif column.name in ("profile_id", "appmetrica_device_id") and method.identity == "one":
            required = "exactly one of `profile_id`, `appmetrica_device_id`"
        else:
            required = ""
        lines.append(f"| `{column.name}` | {_avro(types[column.name])} | {required} | {column.kind.describe()} |")
    flush()
    return "\n".join(lines)


def main() -> None:
    for method in METHODS.values():
        if method.name != "events":
            print(table(method), end="\n\n")


if __name__ == "__main__":
    main()
