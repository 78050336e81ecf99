"""Records wait here until the schema registry has answered for every writer schema they name.

A registry that does not answer is not a reason to dead-letter anything: the records wait, their partitions pause
(the owner loop asks `blocked`), and the registry is asked again every `REGISTRY_RETRY_S`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import structlog

from bridge.decoding.lanes import Lane
from bridge.decoding.registry import RegistryUnavailableError
from bridge.kafka.consumer import PartitionKey
from bridge.runtime.clock import Clock
from bridge.runtime.ledger import Held

log = structlog.get_logger("bridge.schema_wait")

REGISTRY_RETRY_S = 2.0


class SchemaWait:
    def __init__(self, lanes: dict[str, Lane], clock: Clock) -> None:
        self._lanes = lanes
        self._decoders = list({id(d): d for lane in lanes.values() if (d := lane.decoder) is not None}.values())
        self._clock = clock
        self._waiting: list[Held] = []
        self._retry_at = 0.0

    def add(self, held: Sequence[Held]) -> None:
        self._waiting.extend(held)

    @property
    def blocked(self) -> bool:
        """Records wait for a registry that did not answer."""
        return bool(self._waiting) and self._clock.now() < self._retry_at

    def problem(self) -> str | None:
        """Why the registry cannot serve now, if a decoder knows."""
        for decoder in self._decoders:
            if (problem := decoder.problem()) is not None:
                return problem
        return None

    async def ready(self) -> list[Held]:
        """The waiting records once the registry has every schema they name; nothing while it does not answer."""
        if not self._waiting or self._clock.now() < self._retry_at:
            return []
        waiting, lanes = self._waiting, self._lanes
        try:
            for decoder in self._decoders:
                await decoder.prepare(item.value for item in waiting if lanes[item.state.topic].decoder is decoder)
        except RegistryUnavailableError as exc:
            self._retry_at = self._clock.now() + REGISTRY_RETRY_S
            log.warning("schema registry unavailable; records wait", error=str(exc), records=len(waiting))
            return []
        self._waiting = []
        return waiting

    def drop(self, keys: Collection[PartitionKey]) -> list[Held]:
        """Take out the waiting records of these partitions (revoked or lost)."""
        kept: list[Held] = []
        dropped: list[Held] = []
        for item in self._waiting:
            (dropped if item.state.key in keys else kept).append(item)
        self._waiting = kept
        return dropped

    def clear(self) -> list[Held]:
        waiting, self._waiting = self._waiting, []
        return waiting
