"""The spellings of a secret that an echoed URL, form or JSON answer can carry, and which of them leaked."""

from __future__ import annotations

import json
from urllib.parse import quote, quote_plus

import yarl


def spellings(secret: str) -> list[str]:
    """The ways a secret comes back in an echoed URL, form or JSON answer."""
    once = quote(secret, safe="")
    return [
        secret,
        once,
        once.lower(),
        quote_plus(secret, safe=""),
        quote(secret),
        yarl.URL("http://h/p").with_query({"post_api_key": secret}).raw_query_string.split("=", 1)[1],
        quote(once, safe=""),
        json.dumps(secret)[1:-1],
    ]


def leaked(secret: str, text: str) -> list[str]:
    return [form for form in spellings(secret) if form in text]
