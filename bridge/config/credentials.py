"""What in a configuration is a secret: credential properties by their names, and user info in any URL.

One rule for check-config's masking, the log redactor's list and the environment's reading of values as text.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import unquote

from bridge.ops.logs import REDACTED

_SECRET_WORDS: Final = ("password", "passphrase", "secret", "credential", "token", "jaas", "oauthbearer.config")
_SECRET_SEGMENTS: Final = frozenset({"key", "pem", "keystore", "truststore"})
"""Name segments that say the value is key material (`ssl.key.pem`, `…private.key`), not merely about a key."""
_PATH_SEGMENTS: Final = frozenset({"location", "file"})
"""A name ending in one of these holds a file's path (`ssl.key.location`): shown, so an operator can check it."""
_EMBEDDED_SECRET: Final = re.compile(
    r"""[\w.-]*(?:password|passphrase|secret|token|credential)[\w.-]*\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s;,"']+))""",
    re.IGNORECASE,
)
"""A `name=value` pair whose name says it is a secret, inside a property such as sasl.oauthbearer.config
("clientId=bridge clientSecret=…") or sasl.jaas.config ('… password="…";')."""
_USER_INFO: Final = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<info>[^/?#\s,]+)@")
"""The `user:password@` of a URL, up to its last `@` as URL parsers read it; several URLs may share one value
(comma-separated registry URLs)."""


def secret_property(name: str) -> bool:
    """Whether a Kafka or registry client property carries a credential (sasl.password, ssl.key.password,
    ssl.key.pem, sasl.oauthbearer.client.secret, …private.key.passphrase, the OAuth and JAAS configs, …)."""
    lowered = name.lower()
    segments = re.split(r"[._-]", lowered)
    if segments[-1] in _PATH_SEGMENTS:
        return False
    return any(word in lowered for word in _SECRET_WORDS) or bool(_SECRET_SEGMENTS.intersection(segments))


def property_secrets(value: str) -> list[str]:
    """What the log must never show of a secret property: its whole value and each secret embedded in it."""
    embedded = ["".join(match.groups(default="")) for match in _EMBEDDED_SECRET.finditer(value)]
    return [value, *embedded]


def mask_user_info(text: str) -> str:
    """`text` with the user info of every URL in it masked: `https://[REDACTED]@host`."""
    return _USER_INFO.sub(lambda match: f"{match['scheme']}{REDACTED}@", text)


def user_info_secrets(text: str) -> list[str]:
    """The user info of every URL in `text`, whole, decoded, and its password alone, for the log redactor."""
    found = []
    for match in _USER_INFO.finditer(text):
        info = match["info"]
        password = info.partition(":")[2]
        found += [info, unquote(info), password, unquote(password)]
    return [secret for secret in found if secret]
