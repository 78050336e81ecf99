"""Where replays keep their progress: one consumer group per choice of records, named after that choice.

The name holds the filters in plain text (`<kafka.group_id>.dead-letter-replay.<topic>:reason=invalid`), so a
replay can read back every earlier one's choice and progress and leave alone what an earlier replay with other
filters already sent: `replay --reason invalid --send` followed by `replay --send` sends each record once.
"""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from bridge.config.model import KafkaConfig
from bridge.deadletters.clients import client_properties
from bridge.deadletters.records import DeadLetter, Filters

MARK = ".dead-letter-replay."
FORCE = "+force"
_TIMEOUT_S = 30.0


def group_name(config: KafkaConfig, topic: str, filters: Filters, force: bool) -> str:
    return f"{config.group_id}{MARK}{topic}:{filters.describe()}{FORCE if force else ''}"


@dataclass(frozen=True, slots=True)
class EarlierReplay:
    group: str
    filters: Filters
    force: bool
    progress: dict[int, int]
    """Per dead-letter partition, the first offset it has not got past."""

    def sent(self, letter: DeadLetter) -> bool:
        """Whether this replay sent `letter` (it got past it, and its choice took it)."""
        if self.progress.get(letter.partition, -1) <= letter.offset:
            return False
        return self.filters.matches(letter) and (self.force or not letter.replayed_before)


def earlier_replays(config: KafkaConfig, topic: str, partitions: list[int], own: str) -> list[EarlierReplay]:
    """Every other replay of `topic` this bridge's group has run, with how far it got."""
    admin = AdminClient(client_properties(config))
    prefix = f"{config.group_id}{MARK}{topic}:"
    try:
        listing = admin.list_consumer_groups(request_timeout=_TIMEOUT_S).result()
    except KafkaException as exc:
        raise ProgressError(f"cannot list the consumer groups of earlier replays: {exc}") from None
    found = []
    for group in sorted(g.group_id for g in listing.valid if g.group_id.startswith(prefix) and g.group_id != own):
        choice = group.removeprefix(prefix)
        force = choice.endswith(FORCE)
        try:
            filters = Filters.parse(choice.removesuffix(FORCE))
        except ValueError:
            continue
        asked = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in partitions])
        try:
            answer = admin.list_consumer_group_offsets([asked], request_timeout=_TIMEOUT_S)[group].result()
        except KafkaException as exc:
            raise ProgressError(f"cannot read the progress of earlier replay {group}: {exc}") from None
        progress = {tp.partition: tp.offset for tp in answer.topic_partitions or [] if tp.offset >= 0}
        found.append(EarlierReplay(group, filters, force, progress))
    return found


class ProgressError(Exception):
    """The progress of earlier replays cannot be read, so the replay cannot know what they sent."""
