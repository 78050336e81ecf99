"""What the sandbox is told: the keys it accepts and the faults it injects. Validated, immutable."""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class Faults(BaseModel):
    """Misbehaviour the sandbox adds to its answers; fractions are per request."""

    model_config = _FROZEN

    fault_429: float = Field(0.0, ge=0, le=1)
    retry_after: int = Field(1, ge=0)
    """Seconds sent in Retry-After with the fault_429 answers."""
    fault_5xx: float = Field(0.0, ge=0, le=1)
    fault_drop: float = Field(0.0, ge=0, le=1)
    """Fraction of requests whose connection is closed without an answer."""
    latency_ms: float = Field(0.0, ge=0)
    max_rps: int | None = Field(None, ge=1)
    """Requests admitted per second; those above it get 429 with Retry-After."""
    refuse_event_names: frozenset[str] = frozenset()
    """Batches holding these names get 400, like rows the real API refuses for its own reasons: an events row by
    its event_name, another method's by its label column (`Method.label`)."""

    @model_validator(mode="after")
    def _fractions_fit(self) -> Self:
        # One draw decides among the faults, so their fractions share the unit interval.
        if self.fault_429 + self.fault_5xx + self.fault_drop > 1:
            raise ValueError("fault_429 + fault_5xx + fault_drop must not exceed 1")
        return self


class Keys(BaseModel):
    """The Post API keys the sandbox accepts; none configured means any non-empty key."""

    model_config = _FROZEN

    post_api_key: str | None = Field(None, min_length=1)
    application_id: int | None = Field(None, gt=0)
    """Restricts post_api_key to this application; without it the key serves every application."""
    apps: dict[int, str] = {}
    """Application id -> its key, for several applications."""

    @model_validator(mode="after")
    def _application_needs_key(self) -> Self:
        if self.application_id is not None and self.post_api_key is None:
            raise ValueError("application_id needs post_api_key")
        if any(not key for key in self.apps.values()):
            raise ValueError("apps must map each application id to a non-empty key")
        return self

    def refusal(self, key: str, application_ids: Iterable[str]) -> str | None:
        """Why ``key`` may not upload for these applications (ids as received), or None if it may.

        Ids that are not integers are skipped: the row check answers them with 400.
        """
        if not key:
            return "post_api_key is missing"
        if self.post_api_key is None and not self.apps:
            return None
        apps = sorted({int(app) for app in application_ids if _looks_like_id(app)})
        if not apps:
            valid = any(_same(key, known) for known in self._all_keys())
            return None if valid else "post_api_key is not valid"
        for app in apps:
            expected = self.apps.get(app, self.post_api_key if self.application_id in (None, app) else None)
            if expected is None or not _same(key, expected):
                return f"post_api_key is not valid for application {app}"
        return None

    def _all_keys(self) -> list[str]:
        return [*self.apps.values(), *([self.post_api_key] if self.post_api_key else [])]


def _looks_like_id(value: str) -> bool:
    return value.isascii() and value.isdigit() and len(value) < 20


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def explain(exc: ValidationError) -> str:
    """A validation failure on one line, each problem led by its setting when it has one."""
    problems = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        where = ".".join(map(str, error["loc"]))
        problems.append(f"{where}: {message}" if where else message)
    return "; ".join(problems)
