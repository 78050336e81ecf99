"""Why the bridge cannot move events now: what `/readyz` and the progress line report."""

from __future__ import annotations

from collections.abc import Sequence

from confluent_kafka import KafkaError

from bridge.kafka import logs as kafka_logs
from bridge.postapi.uploader import Uploader
from bridge.runtime.clock import Clock
from bridge.runtime.deliveries import Deliveries
from bridge.runtime.ledger import Ledger
from bridge.runtime.schema_wait import SchemaWait
from bridge.runtime.transforms import TransformPool


class Readiness:
    def __init__(
        self,
        topics: Sequence[str],
        ledger: Ledger,
        pool: TransformPool,
        deliveries: Deliveries,
        schema_wait: SchemaWait,
        uploader: Uploader,
        clock: Clock,
    ) -> None:
        self._topics = list(topics)
        self._ledger = ledger
        self._pool = pool
        self._deliveries = deliveries
        self._schema_wait = schema_wait
        self._uploader = uploader
        self._clock = clock
        self.draining = False
        self.kafka_up = True
        self.heartbeat = clock.now()
        """The owner loop's last turn (monotonic), for `/healthz`."""

    async def kafka_error(self, error: KafkaError) -> None:
        """The consumer's error callback; confluent-kafka's asyncio client awaits it on the event loop."""
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            self.kafka_up = False
        kafka_logs.kafka_error(error)

    def kafka_answers(self) -> None:
        """Records came, or the cluster answered: Kafka is up, and its error condition (if any) is over."""
        self.kafka_up = True
        kafka_logs.kafka_answers()

    def reasons(self) -> list[str]:
        """Empty when the bridge can move events."""
        reasons = []
        if self.draining:
            reasons.append("draining for shutdown")
        if self._deliveries.failed is not None:
            reasons.append(f"a delivery failed: {self._deliveries.failed!r}")
        if self._pool.late:
            reasons.append(f"a transform worker has not answered for {self._pool.silent_s():.0f} s")
        if not self.kafka_up:
            reasons.append("Kafka is unreachable")
        if not self._ledger.partitions:
            reasons.append(f"no partitions assigned (topics {', '.join(self._topics)})")
        if (registry := self._schema_wait.problem()) is not None:
            reasons.append(registry)
        refused = sorted(self._uploader.refused_applications)
        if refused:
            reasons.append(f"the Post API refuses the key of application(s) {', '.join(map(str, refused))}")
        return reasons
