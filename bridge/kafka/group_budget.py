"""One requests-a-second budget for the whole consumer group (`upload.rate_scope: group`).

Each member sends at most `upload.requests_per_second` divided by the group's current member count. The count is
Kafka's own description of the group (AdminClient.describe_consumer_groups), read again after every rebalance this
member sees and every `REFRESH_S` seconds, since a member that joins or leaves does not rebalance every other one
under the cooperative protocol at the same moment. A member that does not find itself in the description (it is
still joining) counts itself in, so a newcomer never starts above its share.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid

import structlog
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from bridge.config.model import KafkaConfig
from bridge.kafka.clients import client_properties
from bridge.kafka.logs import client_conf
from bridge.ops.metrics import Metrics
from bridge.postapi.uploader import RateLimit

log = structlog.get_logger("bridge.group_budget")

REFRESH_S = 5.0
SETTLE_S = 1.0
"""After a rebalance, the description is read again this much later: the group may still be settling."""
_TIMEOUT_S = 5.0
"""Short: a shutdown waits for a description under way."""


class GroupBudget:
    """Keeps `rate` at this member's share of `budget` requests a second."""

    def __init__(self, kafka: KafkaConfig, budget: float, rate: RateLimit, metrics: Metrics) -> None:
        self._group = kafka.group_id
        self._budget = budget
        self._rate = rate
        self._metrics = metrics
        self.client_id = str(kafka.properties.get("client.id") or _unique_client_id())
        """How this member is told apart in the group's description. An operator's `client.id` is kept (quotas may
        name it); replicas that share one cannot tell whether they are listed yet, and may run one member's share
        over while joining."""
        self._admin = AdminClient(
            {**client_properties(kafka.properties), **client_conf(), "bootstrap.servers": kafka.bootstrap_servers}
        )
        self._changed = asyncio.Event()
        self.members = 0

    def membership_changed(self) -> None:
        """A rebalance happened: read the membership again now."""
        self._changed.set()

    async def run(self) -> None:
        """Until cancelled: read the membership on every change and every REFRESH_S, and set the share."""
        await self._refresh()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), REFRESH_S)
            if self._changed.is_set():
                self._changed.clear()
                await self._refresh()
                await asyncio.sleep(SETTLE_S)
            await self._refresh()

    async def _refresh(self) -> None:
        try:
            members = await asyncio.to_thread(self._describe)
        except (KafkaException, TimeoutError) as exc:
            log.warning("cannot read the group's membership; keeping the current share", error=str(exc) or "timeout")
            return
        if members != self.members:
            self.members = members
            share = self._budget / members
            self._rate.rate = share
            self._metrics.rate_limit.set(share)
            log.info("group rate share", members=members, requests_per_second=round(share, 3), budget=self._budget)

    def _describe(self) -> int:
        description = self._admin.describe_consumer_groups([self._group], request_timeout=_TIMEOUT_S)[self._group]
        found = description.result(timeout=_TIMEOUT_S).members or []
        mine = any(member.client_id == self.client_id for member in found)
        return len(found) + (0 if mine else 1)

    def named(self, kafka: KafkaConfig) -> KafkaConfig:
        """`kafka` with this member's `client_id`, by which it finds itself in the group's description."""
        return kafka.model_copy(update={"properties": {**kafka.properties, "client.id": self.client_id}})


def _unique_client_id() -> str:
    return f"appmetrica-bridge-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
